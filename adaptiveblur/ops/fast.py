"""The fast backend: exact small windows, and a stack of exact levels interpolated in sigma.

``method="fast"``: an approximation of the exact operator whose cost grows only with
``log(sigma)``, with a proven error bound. The levels are plain torch (``torch.fft`` and
elementwise operations), so it runs on CPU and CUDA, in float32 (float64 for float64
input); the small windows go to the fused exact backend where one runs.

How it works
------------
Write ``F(s)`` for the exact blur of the tile at one constant sigma ``s`` (square
window of radius ``floor(truncate * s + 0.5)``, normalised). The adaptive blur is
``out(p) = F(sigma(p))(p)``: each pixel needs ``F`` only at its own sigma.

* **Small windows are computed exactly.** A pixel whose radius is at most
  :data:`EXACT_RADIUS` (sigma < 3.17 at ``truncate=3``) gets the exact sum: from the
  fused exact backend where one runs for the tile (Triton on CUDA for float32, the
  native C kernel on CPU), else in torch. There, its separable weights
  ``b_i = exp(-i^2 / (2 sigma^2))`` are shared by the pixels at ``(+-i, +-j)``, so
  ``sum_{i,j} b_i b_j C_ij`` over the symmetric sums ``C_ij`` costs
  ``(r + 1)^2`` multiply-adds, not ``(2 r + 1)^2``. On CPU the tile is cut into
  32-pixel blocks that reach only their own largest radius; on GPUs row bands reach
  the tile's largest radius (gathering blocks costs more there than it saves).
  Interpolation would do worst here:
  ``F(s)`` jumps each time the radius grows by one (a ring of taps appears), by up to
  ``~4 g(r) / sum(g)`` of the ring's contrast, about 1 LSB at sigma 1 to 4.
* **Larger windows interpolate exact levels.** The nodes are the tile's largest sigma
  ``s_top``, then ``s_top * 2**(-(k + 1/2) / LEVELS_PER_OCTAVE)``, ``k = 0, 1, ...``,
  down past the smallest sigma left to them. Each node's level ``F(s_k)`` is the exact
  truncated blur, computed by FFT over the padded tile: the kernel is separable and
  symmetric, so its spectrum is a real outer product and a level costs one
  complex-by-real product and one inverse FFT, whatever its sigma. A pixel takes cubic
  Lagrange interpolation in ``log(sigma)`` over the four nodes around its sigma
  (one-sided in the top interval, which the half step makes half as wide). Levels
  are made, used and dropped one at a time.
* **Tiles.** Any pixel's window stays inside the padded tile (radius <= halo) and no
  node is wider than the halo, so FFT wrap-around never reaches an output pixel.
  Tiles too large for the budget are cut into sub-tiles that share the tile's nodes.

Cost per pixel and channel: at most ``2 (EXACT_RADIUS + 1)^2`` in-cache multiply-adds
where small windows are, one forward FFT, and per level one complex-by-real product,
one inverse FFT and one multiply-add. The level count grows with ``log(s_top)``: 5 at
``s_top = 4``, 10 at 8, 20 at 32, 25 at 64. Memory: whole-tile arrays of about
``4 C + 18`` values per pixel, plus FFT arrays of ``6 C + 4`` values per padded pixel,
cut into sub-tiles that fit the budget (so a budget that only allows tiles about as
small as the halo makes the FFTs mostly halo: correct, but slow). Not differentiable
(in-place arithmetic): the engine uses the reference backend under autograd.

Speed (``benchmarks/bench_fast.py``, a photo at 12 MP RGB, ``sigma = max_sigma * luma``):
on an H200, 0.03 s at ``max_sigma`` 4, 0.06 s at 32, 0.09 s at 128 (the fused Triton
exact kernel: 0.03 s at 32, 0.39 s at 128); on 16 CPU threads, 0.94 s at 4 and 2.6 s at
32 (the native exact backend: 0.12 s and 0.75 s). The fused exact backends are faster
up to ``max_sigma`` ~50-100; this one is for larger sigmas and for devices without them.
What grows is the level count, with the octaves the map spans above :data:`EXACT_RADIUS`'s
sigma (each level costs the same whatever its sigma): a constant sigma 32 costs what a
constant 4 does (about 0.02 s on the H200), a photo map from 0 to 32 about twice a map from 0 to 4
(``bench_fast.py --map``).

Error bound
-----------
For ``truncate=3``, every image with values in ``[0, 1]`` and every sigma map::

    |fast - exact| <= ERROR_BOUND = 0.9 / 255      (plus float32 rounding, ~1e-6)

so the 8-bit roundings of the two differ by at most one code. At a pixel, fast is
``sum_k w_k F(s_k)``: a linear filter whose kernel differs from the exact one by a
difference summing to 0, so the worst image in ``[0, 1]`` gives
``0.5 * || sum_k w_k K(s_k) - K(sigma) ||_1``. ``python benchmarks/bench_fast.py --bound``
computes it for pixel sigmas in ``[3.17, 64]`` and all positions of the node grid:
at most 0.88 LSB, reached just above the exact range (0.84 for sigma in [4, 6), 0.73
in [8, 12), 0.66 in [24, 32), 0.64 in [48, 64)). Pixels below sigma 3.17 are exact.
Measured errors are smaller (``--corpus``, against float64 exact): at most 0.70 LSB
on adversarial synthetics (checkerboards, concentric square rings, under jumping
sigma maps; PSNR >= 67 dB), 0.16 LSB on step edges and 0.14 on a 1-pixel line,
0.10-0.22 LSB on photos (PSNR 85-95 dB).

What limits it: between nodes the exact ``F(s)`` is a staircase in ``s`` (the radius
steps by one), which no smooth interpolation follows, and images with structure at
the radii where the window grows are the worst case. ``truncate`` sets the step size:
the same stack is within 0.09 LSB at ``truncate=4`` but only within 3.3 LSB at 2.5
(``--bound --truncate``), so below 3 use the exact method.

``truncate`` is not part of the tile interface: it is inferred from ``(sigma, radius)``
(the default 3 whenever it fits) unless passed. Each tile picks its own top node, so
different tilings agree within the bound, not bit for bit.

Example:
    >>> import torch
    >>> from adaptiveblur.kernels import radius_map
    >>> sigma = torch.full((1, 1, 8, 8), 2.0)  # radius 6: the exact path
    >>> padded = torch.ones(1, 3, 20, 20)
    >>> out = blur_tile(padded, sigma, radius_map(sigma), 6, 1 << 20)
    >>> out.shape, bool(torch.allclose(out, torch.ones(1, 3, 8, 8)))
    (torch.Size([1, 3, 8, 8]), True)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from adaptiveblur.kernels import DEFAULT_TRUNCATE
from adaptiveblur.ops import backends

EXACT_RADIUS = 9  # windows up to this radius are computed exactly (sigma < 3.17 at truncate 3)
LEVELS_PER_OCTAVE = 5  # sigma nodes per doubling: 4 gives a 0.97 LSB bound, 5 gives 0.88
ERROR_BOUND = 0.9 / 255  # proven max |fast - exact| for inputs in [0, 1] at truncate 3

_STENCIL = 4  # cubic Lagrange interpolation in log(sigma)
_MIN_SUBTILE = 32  # sub-tiles never get smaller than this (the halo would dominate)
_EXACT_BLOCK = 32  # block side of the exact path: each block reaches its own radius
_EXACT_CACHE_BYTES = 16 << 20  # CPU exact-path batches: in cache, few calls
_SIGMA_FLOOR = 1e-3  # keeps exp(-i^2 / (2 s^2)) finite at s = 0 (the radius is 0 there)
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


def blur_tile(
    padded: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    halo: int,
    budget: int,
    *,
    truncate: float | None = None,
) -> torch.Tensor:
    """Blur one tile whose input arrives with a halo, within :data:`ERROR_BOUND`.

    Args:
        padded: ``(B, C, h + 2*halo, w + 2*halo)`` input around the tile.
        sigma: ``(B, 1, h, w)`` per-pixel sigma of the tile's output pixels.
        radius: ``(B, 1, h, w)`` per-pixel window radius (int64), all ``<= halo``.
        halo: the largest radius in the tile.
        budget: bytes the temporaries may take; the level FFTs run on sub-tiles that
            fit (never smaller than 32 x 32 plus the halo).
        truncate: the window radius in sigmas that gave ``radius``; inferred from
            ``sigma`` and ``radius`` when ``None``.

    Returns:
        ``(B, C, h, w)`` blurred tile in ``padded``'s dtype. Pixels with radius 0 are
        copied unchanged.
    """
    batch, channels = padded.shape[:2]
    height, width = sigma.shape[-2:]
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
    output = padded[..., halo : halo + height, halo : halo + width].clone()  # radius 0: as is
    plan: list[tuple[int, int, int, int, range]] = []
    if lowest < math.inf:  # some pixels are left to the levels
        if truncate is None:
            truncate = infer_truncate(sigma, radius)
        nodes = level_sigmas(lowest, highest)
        # min(): a rounding slip in an inferred truncate must never reach past the halo.
        radii = [min(math.floor(truncate * node + 0.5), halo) for node in nodes]
        start, weights = stencil_weights(sigma, nodes)
        element = padded.element_size()
        committed = height * width * _tile_bytes_per_pixel(batch, channels, element)
        side = _subtile_side(budget - committed, halo, batch, channels, element)
        plan = _plan_subtiles(large, start, len(nodes), side)
    if reach > 0:
        _blur_exact_small(padded, sigma, exact_radius, int(reach), halo, budget, output)
    for y0, y1, x0, x1, levels in plan:
        blurred = _blur_levels(
            padded[..., y0 : y1 + 2 * halo, x0 : x1 + 2 * halo],
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


def infer_truncate(sigma: torch.Tensor, radius: torch.Tensor) -> float:
    """The truncate that gave ``radius = floor(truncate * sigma + 0.5)``.

    Each pixel with ``sigma > 0`` confines it to ``[(r - 0.5) / s, (r + 0.5) / s)``.
    Returns the default (3) when it lies in all of them, else the middle of their
    intersection.
    """
    s = sigma.to(torch.float64)
    r = radius.to(torch.float64)
    positive = s > 0
    s = torch.where(positive, s, 1.0)
    low, high = torch.stack(  # one read back; (-inf, inf) when no sigma is positive
        [
            torch.where(positive, (r - 0.5) / s, -math.inf).amax(),
            torch.where(positive, (r + 0.5) / s, math.inf).amin(),
        ]
    ).tolist()
    if low <= DEFAULT_TRUNCATE < high:
        return DEFAULT_TRUNCATE
    return 0.5 * (low + high) if high > low else max(low, 0.0)


def level_sigmas(lowest: float, highest: float) -> list[float]:
    """Ascending sigma nodes for pixel sigmas in ``[lowest, highest]``.

    ``highest`` itself (no level is wider than the halo), then
    ``highest * 2**(-(k + 1/2) / LEVELS_PER_OCTAVE)`` for ``k = 0, 1, ...`` down to the
    first node below ``lowest`` and one more, so that every interval has a node below
    it; at least four nodes. The half step puts a node close under the top, where the
    stencil is one-sided.
    """
    ratio = 2.0 ** (1.0 / LEVELS_PER_OCTAVE)
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


def _blur_exact_small(
    padded: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    reach: int,
    halo: int,
    budget: int,
    output: torch.Tensor,
) -> None:
    """Write the exact blur of every pixel with ``radius > 0`` into ``output``.

    ``radius`` is already 0 for the pixels left to the levels; ``reach`` is its largest
    value. Where a fused exact backend runs for this tile (Triton on CUDA for float32,
    the native C kernel on CPU) it does the sums; otherwise plain torch does: on CPU the
    tile is cut into blocks that reach only their own largest radius (cost follows the
    sigma map), on a GPU, where the gathering costs more than it saves, row bands of
    the whole tile reach the tile's largest radius.
    """
    height, width = sigma.shape[-2:]
    fused = _fused_exact(padded.device, padded.dtype)
    if fused is not None:
        window = padded[
            ..., halo - reach : halo + height + reach, halo - reach : halo + width + reach
        ]
        blurred = fused(window.contiguous(), sigma, radius, reach, budget)
        output.copy_(torch.where(radius > 0, blurred, output))
    elif padded.device.type == "cpu":
        _exact_by_blocks(padded, sigma, radius, halo, budget, output)
    else:
        _exact_by_rows(padded, sigma, radius, reach, halo, budget, output)


@functools.cache
def _fused_exact(device: torch.device, dtype: torch.dtype) -> Callable[..., torch.Tensor] | None:
    """The fused exact backend's ``blur_tile`` for tiles of ``dtype`` on ``device``, if one runs.

    Triton only for float32 (it hands float64 to the unfold reference); the native kernel
    for both float types.
    """
    wanted = {"cuda": "triton", "cpu": "native"}.get(device.type)
    if wanted == "triton" and dtype != torch.float32:
        return None
    for backend in backends.BACKENDS:
        if backend.name == wanted and backend.unavailable_reason(device) is None:
            return backend.load().blur_tile
    return None


def _exact_by_rows(
    padded: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    reach: int,
    halo: int,
    budget: int,
    output: torch.Tensor,
) -> None:
    """:func:`_blur_exact_small` by row bands that reach the tile's largest radius."""
    batch, channels = padded.shape[:2]
    height, width = sigma.shape[-2:]
    row_bytes = (reach + 4) * (channels + 1) * batch * (width + 2 * reach) * padded.element_size()
    rows = max(1, min(height, budget // row_bytes))
    for y0 in range(0, height, rows):
        y1 = min(y0 + rows, height)
        window = padded[
            ..., halo + y0 - reach : halo + y1 + reach, halo - reach : halo + width + reach
        ]
        band_radius = radius[..., y0:y1, :]
        band_sigma = sigma[..., y0:y1, :].clamp_min(_SIGMA_FLOOR)
        blurred = _exact_window_sum(window, band_sigma, band_radius, reach)
        part = output[..., y0:y1, :]
        part.copy_(torch.where(band_radius > 0, blurred, part))


def _exact_by_blocks(
    padded: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    halo: int,
    budget: int,
    output: torch.Tensor,
) -> None:
    """:func:`_blur_exact_small` by blocks: those of equal reach run as cache-sized batches."""
    batch, channels = padded.shape[:2]
    height, width = sigma.shape[-2:]
    side = _EXACT_BLOCK
    blocks_y, blocks_x = -(-height // side), -(-width // side)
    widen = (0, blocks_x * side - width, 0, blocks_y * side - height)  # to whole blocks

    def by_block(plane: torch.Tensor) -> torch.Tensor:
        # (B, K, blocks_y * side, blocks_x * side) -> (blocks_y, blocks_x, B, K, side, side)
        return (
            plane.unflatten(-1, (blocks_x, side))
            .unflatten(-3, (blocks_y, side))
            .permute(2, 4, 0, 1, 3, 5)
        )

    radius_blocks = by_block(F.pad(radius, widen))
    sigma_blocks = by_block(F.pad(sigma.clamp_min(_SIGMA_FLOOR), widen, value=1.0))
    block_reach = radius_blocks.amax(dim=(2, 3, 4, 5))  # (blocks_y, blocks_x)
    top = int(block_reach.max())
    # The input `top` around the tile; the zeros past it only feed discarded outputs.
    source = padded[..., halo - top : halo + height + top, halo - top : halo + width + top]
    source = F.pad(source, widen)
    exact = by_block(padded.new_zeros((batch, channels, blocks_y * side, blocks_x * side)))
    element = padded.element_size()
    for reach in torch.unique(block_reach).tolist():
        if reach <= 0:
            continue
        size = side + 2 * reach
        # Every block's window, as a view: (B, C, blocks_y, blocks_x, size, size).
        margin = top - reach
        windows = source[..., margin : margin + blocks_y * side + 2 * reach, margin:]
        windows = (
            windows[..., : blocks_x * side + 2 * reach].unfold(2, size, side).unfold(3, size, side)
        )
        chosen_y, chosen_x = torch.nonzero(block_reach == reach, as_tuple=True)
        block_bytes = (3 * channels + 1) * (reach + 1) * batch * size * size * element
        group = max(1, min(budget, _EXACT_CACHE_BYTES) // block_bytes)
        for first in range(0, chosen_y.numel(), group):
            iy, ix = chosen_y[first : first + group], chosen_x[first : first + group]
            count = iy.numel()
            blurred = _exact_window_sum(
                windows[:, :, iy, ix].movedim(2, 0).flatten(0, 1),
                sigma_blocks[iy, ix].flatten(0, 1),
                radius_blocks[iy, ix].flatten(0, 1),
                reach,
            )
            exact[iy, ix] = blurred.unflatten(0, (count, batch))
    exact_tile = exact.permute(2, 3, 0, 4, 1, 5).flatten(4, 5).flatten(2, 3)[..., :height, :width]
    output.copy_(torch.where(radius > 0, exact_tile, output))


def _exact_window_sum(
    window: torch.Tensor, sigma: torch.Tensor, radius: torch.Tensor, reach: int
) -> torch.Tensor:
    """Exact normalised blur of the interior of ``window``.

    Args:
        window: ``(N, C, h + 2 reach, w + 2 reach)``.
        sigma: ``(N, 1, h, w)``, all > 0.
        radius: ``(N, 1, h, w)``, all ``<= reach``.

    Returns:
        ``(N, C, h, w)``: ``sum_{i,j} b_i b_j C_ij / (b_0 + 2 sum_{i>0} b_i)^2``.
    """
    height, width = sigma.shape[-2:]
    distance = torch.arange(reach + 1, device=window.device, dtype=sigma.dtype).view(-1, 1, 1, 1, 1)
    # taps[i] = b_i, zero past the pixel's own radius: (reach + 1, N, 1, h, w).
    taps = torch.exp(-(distance * distance) / (2.0 * sigma * sigma)) * (distance <= radius)
    taps = taps.to(window.dtype)
    # pairs[i] = I(x + i) + I(x - i) on every row of the window; pairs[0] = I(x).
    pairs = window.new_empty((reach + 1,) + window.shape[:-1] + (width,))
    pairs[0].copy_(window[..., reach : reach + width])
    for i in range(1, reach + 1):
        torch.add(
            window[..., reach + i : reach + i + width],
            window[..., reach - i : reach - i + width],
            out=pairs[i],
        )
    # In-place multiply-adds only: on cache-sized blocks allocation costs more than arithmetic.
    total = window.new_zeros(window.shape[:2] + (height, width))
    inner = torch.empty_like(total)
    for j in range(reach + 1):
        torch.mul(pairs[0][..., reach + j : reach + j + height, :], taps[0], out=inner)
        if j > 0:
            inner.add_(pairs[0][..., reach - j : reach - j + height, :])
        for i in range(1, reach + 1):
            inner.addcmul_(taps[i], pairs[i][..., reach + j : reach + j + height, :])
            if j > 0:
                inner.addcmul_(taps[i], pairs[i][..., reach - j : reach - j + height, :])
        total.addcmul_(taps[j], inner)
    norm = 2.0 * taps.sum(0) - 1.0  # b_0 = 1 counted once, the other taps twice
    return total.div_(norm * norm)


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
