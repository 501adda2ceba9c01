"""``adaptive_blur``: validate, choose the device, plan tiles, run the backend, stitch."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from adaptiveblur.borders import DEFAULT_BORDER, check_border, read_window
from adaptiveblur.devices import resolve_device
from adaptiveblur.errors import InvalidParameterError
from adaptiveblur.kernels import DEFAULT_TRUNCATE, check_truncate, radius_for, radius_map
from adaptiveblur.ops import custom_ops
from adaptiveblur.ops.registry import DEFAULT_METHOD, choose_backend
from adaptiveblur.ops.tile import TileInput
from adaptiveblur.tiling import (
    DEFAULT_MAX_MEMORY,
    MIN_TILE_SIDE,
    Tile,
    check_max_memory,
    check_window,
    plan_tiles,
    tile_side,
)

ProgressCallback = Callable[[int, int], None]

# No tile is narrower than this unless the image is: the native kernel blurs a tile
# narrower than its SIMD group (up to 16 floats) transposed, summing in another order,
# and the tiled result should be the untiled one (the fused command path never cuts
# columns, so the two give the same samples).
NARROWEST_TILE = 16


def adaptive_blur(
    image: torch.Tensor,
    sigma: torch.Tensor | float,
    *,
    truncate: float = DEFAULT_TRUNCATE,
    border: str = DEFAULT_BORDER,
    device: str | torch.device | None = None,
    method: str = DEFAULT_METHOD,
    backend: str | None = None,
    max_memory: int | None = None,
    progress: ProgressCallback | None = None,
    sigma_bound: float | None = None,
) -> torch.Tensor:
    """Blur every pixel with its own Gaussian (gather model).

    ``out(p) = sum_q G_s(p)(q - p) I(q) / sum_q G_s(p)(q - p)`` over the square window of
    radius ``floor(truncate * s(p) + 0.5)`` around ``p``. A pixel whose sigma is 0 (or
    small enough that its radius is 0) is returned unchanged. With a constant sigma
    this equals ``scipy.ndimage.gaussian_filter(image, s, mode='mirror', truncate=truncate)``.

    Args:
        image: ``(B, C, H, W)`` or ``(C, H, W)`` floating tensor.
        sigma: per-pixel sigma in pixels, ``(B, 1, H, W)``, ``(1, 1, H, W)``, ``(1, H, W)``
            or ``(H, W)`` (broadcast over batch and channels), or one number.
        truncate: window radius in sigmas (``> 0``).
        border: ``"reflect"`` (mirror, default), ``"replicate"`` or ``"constant"`` (zeros).
        device: where to compute (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"``);
            default: the image's device. The result comes back on the image's device.
        method: ``"exact"`` (default), ``"fast"`` (approximate, cost independent of
            sigma, documented error bound) or ``"auto"`` (exact when a fused exact
            backend runs on the device, else fast).
        backend: force one implementation by name (see ``registry.BACKEND_NAMES``);
            default: the fastest available for the method, device and dtype. When
            gradients are needed (the image or sigma requires grad), a differentiable
            backend runs: the fused one of the device (native on the CPU, Triton on CUDA),
            whose backward pass is fused too and keeps only each tile's input, else the
            reference, checkpointed per tile so its backward pass is tiled too.
        max_memory: bytes the temporaries may take at once (default 1 GiB). Tiles
            and window chunks are sized to fit, for any image size and sigma.
        progress: called as ``progress(tiles_done, tiles_total)`` after each tile.
        sigma_bound: a number no sigma exceeds, when the caller knows one (the pipeline
            knows ``max_sigma``). Then nothing is read back from the sigma map: on a
            GPU the whole call is queued without waiting for it (so it can be recorded
            in a CUDA graph), and every tile gets this bound's window as its halo. The
            map is trusted: not checked for NaN, infinity or negative values, and a
            pixel above the bound gets the bound's window (its own sigma's weights).

    Under ``torch.compile`` (without ``device`` or ``progress``) the call is the custom op
    ``adaptiveblur::adaptive_blur`` (:mod:`adaptiveblur.ops.custom_ops`), so a model
    compiles with ``fullgraph=True``; its results and gradients are this function's.

    Returns:
        Tensor of the image's shape, dtype and device. Computed in float32
        (float64 when the image is float64).

    Raises:
        InvalidParameterError: bad shapes, dtypes, sigma (negative, NaN, inf) or options.
        DeviceUnavailableError: the requested device is not available.

    Example:
        >>> import torch
        >>> image = torch.rand(3, 8, 8)
        >>> out = adaptive_blur(image, torch.zeros(8, 8))  # sigma 0: unchanged
        >>> torch.equal(out, image)
        True
    """
    if torch.compiler.is_compiling() and device is None and progress is None:
        # One opaque op in the compiled graph; it runs this function when the graph runs.
        if not isinstance(sigma, torch.Tensor):
            sigma = image.new_full(image.shape[-2:], float(sigma))
        options = (truncate, border, method, backend, max_memory, sigma_bound)
        return custom_ops.blur_op(image, sigma, *options)
    batched = _check_image(image)
    sigma_map = _check_sigma(sigma, batched, checked_values=sigma_bound is None)
    check_blur_options(truncate, border, max_memory)
    if sigma_bound is not None and not (
        isinstance(sigma_bound, (int, float))
        and not isinstance(sigma_bound, bool)
        and math.isfinite(sigma_bound)
        and sigma_bound >= 0
    ):
        raise InvalidParameterError(f"expected sigma_bound >= 0, got {sigma_bound!r}")
    target = resolve_device(device, fallback=image.device)
    compute_dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    differentiable = torch.is_grad_enabled() and (image.requires_grad or sigma_map.requires_grad)
    chosen = choose_backend(method, backend, target, dtype=compute_dtype, needs_grad=differentiable)
    # A fused backend's backward pass keeps only the tile's input, sigma and radius. Any
    # other is checkpointed per tile: the backward pass recomputes one tile at a time, so
    # no K^2-sized activation is ever kept for the whole image.
    checkpointed = differentiable and not chosen.backend.fused

    source = batched.to(device=target, dtype=compute_dtype)
    sigma_map = sigma_map.to(device=target, dtype=compute_dtype)
    batch, channels, height, width = source.shape
    sigma_map = sigma_map.expand(batch, 1, height, width)

    budget = DEFAULT_MAX_MEMORY if max_memory is None else max_memory
    largest = float(sigma_map.detach().max()) if sigma_bound is None else sigma_bound
    halo = None if sigma_bound is None else radius_for(sigma_bound, truncate)
    widest = 2 * radius_for(largest, truncate) + 1
    # The smallest tile is MIN_TILE_SIDE square; its halo must fit, however the image is cut.
    check_window(
        min(height, MIN_TILE_SIDE),
        min(width, MIN_TILE_SIDE),
        channels,
        source.element_size(),
        (widest - 1) // 2 if halo is None else halo,
        budget,
        truncate=truncate,
    )
    per_pixel = chosen.bytes_per_pixel(batch, channels, widest, source.element_size())
    side = tile_side(per_pixel, budget, height, width)
    tiles = plan_tiles(height, width, side, min_width=NARROWEST_TILE)
    output = torch.empty_like(source) if len(tiles) > 1 else source
    for done, tile in enumerate(tiles, start=1):
        arguments = (source, sigma_map, tile, truncate, border, chosen.blur_tile, budget, halo)
        if checkpointed:
            blurred = checkpoint(_blur_one_tile, *arguments, use_reentrant=False)
        else:
            blurred = _blur_one_tile(*arguments)
        if len(tiles) == 1:
            output = blurred  # one tile is the whole image: no copy
        else:
            output[..., tile.y0 : tile.y1, tile.x0 : tile.x1] = blurred
        if progress is not None:
            progress(done, len(tiles))

    result = output.to(device=image.device, dtype=image.dtype)
    return result if image.dim() == 4 else result[0]


def _blur_one_tile(
    source: torch.Tensor,
    sigma_map: torch.Tensor,
    tile: Tile,
    truncate: float,
    border: str,
    blur_tile: Callable[[TileInput], torch.Tensor],
    budget: int,
    halo: int | None,
) -> torch.Tensor:
    """Read ``tile`` with a halo and blur it.

    The halo is the largest radius in the tile (read back) unless ``halo`` is given; then
    no radius exceeds it.
    """
    tile_sigma = sigma_map[..., tile.y0 : tile.y1, tile.x0 : tile.x1]
    tile_radius = radius_map(tile_sigma.detach(), truncate)
    if halo is None:
        halo = int(tile_radius.max())
    else:
        tile_radius = tile_radius.clamp_(0, halo)
    window = (tile.y0 - halo, tile.y1 + halo, tile.x0 - halo, tile.x1 + halo)
    padded = read_window(source, *window, border)
    reread = _Reread(source, window, border)
    return blur_tile(TileInput(padded, tile_sigma, tile_radius, halo, truncate, budget, reread))


class _Reread:
    """Reads a tile's padded window of ``source`` again, without autograd.

    A fused backward pass keeps this rather than the window, so the window's memory is
    free while the input's gradient is made. It refuses once ``source`` has been changed
    in place, as torch does for a tensor saved for a backward pass.
    """

    def __init__(self, source: torch.Tensor, window: tuple[int, int, int, int], border: str):
        self.source, self.window, self.border = source, window, border
        self.version = source._version

    def __call__(self) -> torch.Tensor:
        if self.source._version != self.version:
            raise RuntimeError(
                "the image given to adaptive_blur was modified in place after the blur; "
                "its gradient needs the original values"
            )
        with torch.no_grad():
            return read_window(self.source.detach(), *self.window, self.border)


def _check_image(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise InvalidParameterError(
            f"expected image to be a torch.Tensor, got {type(image).__name__}"
        )
    if image.dim() not in (3, 4):
        raise InvalidParameterError(
            f"expected image of shape (C, H, W) or (B, C, H, W), got {tuple(image.shape)}"
        )
    if not image.is_floating_point():
        raise InvalidParameterError(f"expected a floating-point image, got {image.dtype}")
    if image.numel() == 0:
        raise InvalidParameterError(f"expected a non-empty image, got shape {tuple(image.shape)}")
    return image if image.dim() == 4 else image.unsqueeze(0)


def _check_sigma(
    sigma: torch.Tensor | float, image: torch.Tensor, *, checked_values: bool = True
) -> torch.Tensor:
    batch, _, height, width = image.shape
    if not isinstance(sigma, torch.Tensor):
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise InvalidParameterError(f"expected sigma to be a tensor or a number, got {sigma!r}")
        sigma = torch.full((1, 1, height, width), float(sigma), dtype=torch.float64)
    if sigma.dim() == 2:
        sigma = sigma[None, None]
    elif sigma.dim() == 3:
        sigma = sigma.unsqueeze(0)
    if (
        sigma.dim() != 4
        or sigma.shape[1] != 1
        or sigma.shape[0] not in (1, batch)
        or tuple(sigma.shape[-2:]) != (height, width)
    ):
        raise InvalidParameterError(
            f"expected sigma of shape ({batch}, 1, {height}, {width}) or ({height}, {width}), "
            f"got {tuple(sigma.shape)}"
        )
    if not sigma.is_floating_point():
        sigma = sigma.to(torch.float32)
    if not checked_values:  # the caller vouches for them (see adaptive_blur's sigma_bound)
        return sigma
    finite = torch.isfinite(sigma.detach())
    if not bool(finite.all()):
        raise InvalidParameterError("expected finite sigma values, got NaN or infinity")
    low = float(sigma.detach().min())
    if low < 0:
        raise InvalidParameterError(f"expected sigma >= 0 everywhere, got a minimum of {low:g}")
    return sigma


def check_blur_options(truncate: float, border: str, max_memory: int | None) -> None:
    """Raise :class:`InvalidParameterError` for a bad truncate, border or memory budget."""
    check_truncate(truncate)
    check_border(border)
    check_max_memory(max_memory)
