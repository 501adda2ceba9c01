"""The fast method: exact small windows, and a stack of exact levels interpolated in sigma.

``method="fast"``: an approximation of the exact operator whose cost grows only with
``log(sigma)``, within :data:`ERROR_BOUND` of it (proven for ``truncate=3``). Pixels
whose radius is at most :data:`EXACT_RADIUS` are computed exactly
(:mod:`adaptiveblur.ops.small_exact`). For the others, ``F(s)``, the exact blur of the
tile at one constant sigma ``s``, is computed by FFT at a few nodes ``s_k`` spaced
:data:`LEVELS_PER_OCTAVE` per octave below the tile's largest sigma, and each pixel
takes cubic Lagrange interpolation in ``log(sigma)`` over the four nodes around its
own sigma. Plain torch (``torch.fft``), so it runs on CPU and CUDA in the tile's dtype.
Not differentiable (in-place arithmetic). Each tile picks its own top node, so
different tilings agree within the bound, not bit for bit.

Derivation, error bound, measurements and timings: ``docs/fast_method.md``.

Example:
    >>> import torch
    >>> from adaptiveblur.kernels import radius_map
    >>> from adaptiveblur.ops.tile import TileInput
    >>> sigma = torch.full((1, 1, 8, 8), 2.0)  # radius 6: the exact path
    >>> out = blur_tile(TileInput(torch.ones(1, 3, 20, 20), sigma, radius_map(sigma), 6))
    >>> out.shape, bool(torch.allclose(out, torch.ones(1, 3, 8, 8)))
    (torch.Size([1, 3, 8, 8]), True)
"""

from __future__ import annotations

import dataclasses
import math

import torch

from adaptiveblur.ops.small_exact import blur_exact_small
from adaptiveblur.ops.tile import TileInput

EXACT_RADIUS = 9  # windows up to this radius are computed exactly (sigma < 3.17 at truncate 3)
LEVELS_PER_OCTAVE = 5  # sigma nodes per doubling: 4 gives a 0.97 LSB bound, 5 gives 0.88
ERROR_BOUND = 0.9 / 255  # proven max |fast - exact| for inputs in [0, 1] at truncate 3

_STENCIL = 4  # cubic Lagrange interpolation in log(sigma)
_MIN_SUBTILE = 32  # sub-tiles never get smaller than this (the halo would dominate)
_FFT_PRIMES = (2, 3, 5, 7)  # FFT lengths made of these primes are fast


def available(device: torch.device) -> str | None:
    """Always available (``None``).

    The levels are plain torch (``torch.fft``) on any device, and the small windows fall
    back to torch where no fused exact kernel runs.
    """
    return None


def bytes_per_pixel(batch: int, channels: int, window: int, element: int) -> int:
    """Temporaries per output pixel, for the engine's tile size: independent of ``window``.

    The whole-tile arrays (output, exact-path buffers, stencil weights) and the FFT
    arrays with room for a halo as wide as the tile. :func:`blur_tile` cuts sub-tiles
    that keep the FFT arrays inside what is left of the budget, whatever the halo.
    """
    del window  # nothing here grows with the window: that is the point
    tile = _tile_bytes_per_pixel(batch, channels, element)
    return tile + 2 * _fft_bytes_per_pixel(batch, channels, element)


def blur_tile(tile: TileInput) -> torch.Tensor:
    """Blur one tile within :data:`ERROR_BOUND` of the exact blur.

    The level FFTs run on sub-tiles that fit ``tile.budget`` (never smaller than 32 x 32
    plus the halo); node radii use ``tile.truncate``.

    Returns:
        ``(B, C, h, w)`` in the tile's dtype. Pixels with radius 0 are copied unchanged.
    """
    padded, sigma, radius, halo = tile.padded, tile.sigma, tile.radius, tile.halo
    batch, channels = padded.shape[:2]
    height, width = tile.height, tile.width
    small = radius <= EXACT_RADIUS
    large = ~small
    exact_radius = torch.where(small, radius, 0)
    # Each number read back from a GPU waits for its queue to drain, and the GPU then
    # idles while the next kernels are launched: the decisions are read in two looks
    # (here and in the sub-tile plan), both before any heavy work is queued.
    reach, lowest, highest = torch.stack(
        [
            exact_radius.amax().to(torch.float64),
            torch.where(large, sigma, math.inf).amin().to(torch.float64),
            sigma.amax().to(torch.float64),
        ]
    ).tolist()
    output = tile.around(0).clone()  # radius 0: as is
    plan: list[tuple[int, int, int, int, range]] = []
    if lowest < math.inf:  # some pixels are left to the levels
        nodes = level_sigmas(lowest, highest)
        # min(): the top node is the largest sigma, whose radius the halo holds; a float
        # slip in truncate * node must still never reach past it.
        radii = [min(math.floor(tile.truncate * node + 0.5), halo) for node in nodes]
        start, weights = stencil_weights(sigma, nodes)
        element = padded.element_size()
        committed = height * width * _tile_bytes_per_pixel(batch, channels, element)
        side = _subtile_side(tile.budget - committed, halo, batch, channels, element)
        plan = _plan_subtiles(large, start, len(nodes), side)
    if reach > 0:
        blur_exact_small(dataclasses.replace(tile, radius=exact_radius), int(reach), output)
    for y0, y1, x0, x1, levels in plan:
        blurred = _blur_levels(
            tile.around(halo, rows=(y0, y1), cols=(x0, x1)),
            halo,
            nodes,
            radii,
            levels,
            start[..., y0:y1, x0:x1],
            weights[..., y0:y1, x0:x1],
        )
        part = output[..., y0:y1, x0:x1]
        part.copy_(torch.where(large[..., y0:y1, x0:x1], blurred, part))
    return output


def _plan_subtiles(
    large: torch.Tensor, start: torch.Tensor, count: int, side: int
) -> list[tuple[int, int, int, int, range]]:
    """``(y0, y1, x0, x1, levels)`` of each sub-tile of ``side`` with pixels left to the levels.

    ``levels`` are the nodes those pixels' stencils lean on (not those of exact pixels);
    all sub-tiles are read back from the device at once.
    """
    height, width = large.shape[-2:]
    corners = [(y0, x0) for y0 in range(0, height, side) for x0 in range(0, width, side)]
    bounds = []
    for y0, x0 in corners:
        region = large[..., y0 : y0 + side, x0 : x0 + side]
        part_start = start[..., y0 : y0 + side, x0 : x0 + side]
        bounds.append(torch.where(region, part_start, count).amin())
        bounds.append(torch.where(region, part_start, -1).amax())
    values = torch.stack(bounds).tolist()
    plan = []
    for (y0, x0), first, last in zip(corners, values[0::2], values[1::2], strict=True):
        if last >= 0:  # the sub-tile has pixels left to the levels
            y1, x1 = min(y0 + side, height), min(x0 + side, width)
            plan.append((y0, y1, x0, x1, range(first, last + _STENCIL)))
    return plan


def level_sigmas(lowest: float, highest: float, per_octave: int | None = None) -> list[float]:
    """Ascending sigma nodes for pixel sigmas in ``[lowest, highest]``.

    ``highest`` itself (no level is wider than the halo), then
    ``highest * 2**(-(k + 1/2) / per_octave)`` for ``k = 0, 1, ...`` down to the
    first node below ``lowest`` and one more, so that every interval has a node below
    it; at least four nodes. The half step puts a node close under the top, where the
    stencil is one-sided. ``per_octave`` defaults to :data:`LEVELS_PER_OCTAVE`.
    """
    ratio = 2.0 ** (1.0 / (LEVELS_PER_OCTAVE if per_octave is None else per_octave))
    nodes = [highest, highest / math.sqrt(ratio)]
    while nodes[-1] > lowest:
        nodes.append(nodes[-1] / ratio)
    for _ in range(_STENCIL // 2 - 1):
        nodes.append(nodes[-1] / ratio)
    while len(nodes) < _STENCIL:
        nodes.append(nodes[-1] / ratio)
    return nodes[::-1]


def stencil_weights(sigma: torch.Tensor, nodes: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's four nodes and weights: cubic Lagrange in ``log(sigma)``.

    Args:
        sigma: ``(B, 1, h, w)``; values outside ``[nodes[0], nodes[-1]]`` are clamped.
        nodes: ascending node sigmas (at least four).

    Returns:
        ``(start, weights)``: ``start (B, 1, h, w)`` int64 and ``weights (4, B, 1, h, w)``
        in ``sigma``'s dtype, the weights of nodes ``start .. start + 3``. A pixel in the
        interval ``[nodes[k], nodes[k+1])`` gets nodes ``k-1 .. k+2`` (shifted inside at
        the ends); the weights sum to one, and a sigma equal to a node gets weight 1
        there and exactly 0 on the others.
    """
    dtype, device = sigma.dtype, sigma.device
    count = len(nodes)
    # log() of numbers of sigma's dtype, as for the pixels: a pixel on a node hits it.
    log_nodes = torch.log(torch.tensor(nodes, dtype=dtype, device=device))
    u = torch.log(sigma.clamp(min=nodes[0], max=nodes[-1]))
    interval = torch.searchsorted(log_nodes, u.reshape(-1), right=True).reshape(u.shape) - 1
    start = (interval.clamp_(0, count - 2) - (_STENCIL // 2 - 1)).clamp_(0, count - _STENCIL)
    # For every possible start: the stencil's log-sigmas and 1 / prod_{j != i} (t_i - t_j).
    first = torch.arange(count - _STENCIL + 1, device=device)[:, None]
    table = log_nodes[first + torch.arange(_STENCIL, device=device)].to(torch.float64)
    gaps = table[:, :, None] - table[:, None, :]
    gaps += torch.eye(_STENCIL, dtype=torch.float64, device=device)
    inverse = (1.0 / gaps.prod(dim=2)).to(dtype)
    differences = [u - table.to(dtype)[:, offset][start] for offset in range(_STENCIL)]
    weights = []
    for i in range(_STENCIL):
        weight = inverse[:, i][start]
        for j in range(_STENCIL):
            if j != i:
                weight = weight * differences[j]
        weights.append(weight)
    return start, torch.stack(weights)


def level_weights(sigma: torch.Tensor, nodes: list[float]) -> torch.Tensor:
    """Every node's weight at every pixel, ``(len(nodes), B, 1, h, w)`` (for analysis and tests)."""
    start, weights = stencil_weights(sigma, nodes)
    dense = sigma.new_zeros((len(nodes),) + tuple(sigma.shape))
    for offset in range(_STENCIL):
        dense.scatter_(0, (start + offset).unsqueeze(0), weights[offset].unsqueeze(0))
    return dense


def _blur_levels(
    window: torch.Tensor,
    halo: int,
    nodes: list[float],
    radii: list[int],
    levels: range,
    start: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """``sum_k w_k * F(nodes[k])`` over ``levels`` on one (sub-)tile, one level at a time.

    ``window`` is ``(B, C, h + 2 halo, w + 2 halo)``; ``start (B, 1, h, w)`` and
    ``weights (4, B, 1, h, w)`` come from :func:`stencil_weights`. Returns
    ``(B, C, h, w)``.
    """
    height, width = start.shape[-2:]
    size_y = _fft_size(window.shape[-2])
    size_x = _fft_size(window.shape[-1])
    spectrum = torch.fft.rfft2(window, s=(size_y, size_x))  # zero-padded to a fast size
    product = torch.empty_like(spectrum)
    total = window.new_zeros(window.shape[:2] + (height, width))
    # All levels' 1-D kernel spectra in one batch, sent to the device in one copy: a copy
    # per level would stall a GPU's queue each time.
    chosen_nodes = [nodes[k] for k in levels]
    chosen_radii = [radii[k] for k in levels]
    columns = _kernel_spectra(chosen_nodes, chosen_radii, size_y, onesided=False)
    rows = _kernel_spectra(chosen_nodes, chosen_radii, size_x, onesided=True)
    columns = columns.to(window.device, window.dtype)
    rows = rows.to(window.device, window.dtype)
    # Zero weights on both sides of the stencil's four: a pixel whose stencil does not
    # hold the level has its offset clamped onto one of them.
    zero = torch.zeros_like(weights[:1])
    padded_weights = torch.cat([zero, weights, zero])
    # Every level reuses these buffers: on CPU each fresh large array is new memory that
    # the kernel zero-fills page by page on first touch (see adaptiveblur.allocator).
    offset = torch.empty_like(start)
    weight = torch.empty_like(weights[:1])
    transfer = columns.new_empty((size_y, rows.shape[-1]))
    on_cpu = window.device.type == "cpu"
    if on_cpu:
        inverse_y = torch.empty_like(product)
        level_image = window.new_empty(window.shape[:2] + (height, size_x))
    for index, level in enumerate(levels):
        torch.sub(start, level + 1, out=offset).neg_().clamp_(0, _STENCIL + 1)
        torch.gather(padded_weights, 0, offset.unsqueeze(0), out=weight)
        # The transfer function is the outer product of the two spectra (real: the
        # kernel is even).
        torch.outer(columns[index], rows[index], out=transfer)
        torch.mul(spectrum, transfer, out=product)
        if on_cpu:
            # Inverse along y, then along x for the output rows only (less work on CPU).
            torch.fft.ifft(product, dim=-2, out=inverse_y)
            rows_kept = inverse_y[..., halo : halo + height, :]
            torch.fft.irfft(rows_kept, n=size_x, dim=-1, out=level_image)
            blurred = level_image[..., halo : halo + width]
        else:  # one 2-D transform is faster on GPUs
            whole = torch.fft.irfft2(product, s=(size_y, size_x))
            blurred = whole[..., halo : halo + height, halo : halo + width]
        total.addcmul_(weight[0], blurred)
    return total


def _kernel_spectra(
    sigmas: list[float], radii: list[int], size: int, *, onesided: bool
) -> torch.Tensor:
    """DFTs of normalised truncated 1-D Gaussians, ``(len(sigmas), n)`` float64 and real.

    Row ``k`` is the kernel of ``sigmas[k]`` and ``radii[k]`` (the kernel is even, so its
    transform is real); its taps sit at ``d mod size`` for ``|d| <= radius``, and
    ``2 radius + 1 <= size``. ``n`` is ``size // 2 + 1`` when ``onesided``, else ``size``.
    """
    reach = max(radii)
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float64)
    scale = torch.tensor(sigmas, dtype=torch.float64)[:, None]
    inside = offsets.abs() <= torch.tensor(radii, dtype=torch.float64)[:, None]
    taps = torch.exp(-(offsets * offsets) / (2.0 * scale * scale)) * inside
    lines = torch.zeros(len(sigmas), size, dtype=torch.float64)
    lines.index_add_(1, torch.remainder(offsets.to(torch.int64), size), taps / taps.sum(1, True))
    transform = torch.fft.rfft(lines) if onesided else torch.fft.fft(lines)
    return transform.real


def _tile_bytes_per_pixel(batch: int, channels: int, element: int) -> int:
    # Whole-tile arrays: output, exact-path input copy, result and select (per channel);
    # about 18 sigma-sized planes (stencil start and weights, masks, temporaries).
    return batch * (4 * channels + 18) * element


def _fft_bytes_per_pixel(batch: int, channels: int, element: int) -> int:
    # Per padded sub-tile pixel and channel: spectrum, product, inverse along y, level
    # image, running sum, select; the transfer function, a level's weight and indices.
    return (batch * (6 * channels + 4) + 1) * element


def _subtile_side(budget: int, halo: int, batch: int, channels: int, element: int) -> int:
    """Largest square sub-tile whose padded FFT arrays fit in ``budget`` (at least 32)."""
    per_pixel = _fft_bytes_per_pixel(batch, channels, element)
    padded_side = math.isqrt(max(budget, 0) // per_pixel)
    return max(_MIN_SUBTILE, padded_side - 2 * halo)


def _fft_size(n: int) -> int:
    """The smallest ``m >= n`` whose prime factors are all in ``_FFT_PRIMES``."""
    m = n
    while True:
        rest = m
        for prime in _FFT_PRIMES:
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return m
        m += 1
