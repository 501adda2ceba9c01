"""The native backend: a fused exact CPU kernel in C, compiled at first use.

Each output pixel sums only its own window (a SIMD group of neighbouring pixels in a
row loops over the group's largest radius, with per-lane weights that are zero past
each pixel's own radius), so cost follows the sigma map, not its maximum. float32
images are summed in float32 with weights computed in float64; float64 images entirely
in float64. Both are exact: float32 within its rounding of the float64 result, float64
within a few ulp. :mod:`.build` compiles and caches ``_native.c``; :mod:`.run` calls it.
"""

from __future__ import annotations

import torch

from adaptiveblur.errors import DeviceUnavailableError
from adaptiveblur.ops.native import build, run
from adaptiveblur.ops.tile import TileInput

__all__ = ["available", "blur_tile", "build", "bytes_per_pixel", "run"]


def available(device: torch.device) -> str | None:
    """``None`` when the kernel runs on ``device``, else why not (compiles it on first call)."""
    if device.type != "cpu":
        return f"it runs on cpu, not {device.type}"
    kernels = run.kernels()
    return kernels if isinstance(kernels, str) else None


def bytes_per_pixel(batch: int, channels: int, window: int, element: int) -> int:
    """Temporaries per output pixel: the result, contiguous sigma and radius copies.

    Independent of ``window``: besides these the kernel only keeps, per thread, a weight
    table and the folded rows of one chunk (``4 * halo * (256 + 2 * halo)`` values).
    """
    return batch * (channels * element + element + 8)


def blur_tile(tile: TileInput) -> torch.Tensor:
    """Blur one tile on the CPU; ``tile.budget`` is unused (see :func:`bytes_per_pixel`).

    Returns:
        ``(B, C, h, w)`` in the tile's dtype (summed in float32 unless it is float64).

    Raises:
        DeviceUnavailableError: the kernel could not be built here.
        ValueError: a radius is outside ``[0, halo]``.
    """
    kernels = run.kernels()
    if isinstance(kernels, str):
        raise DeviceUnavailableError(f"backend 'native' is not available: {kernels}")
    padded, sigma, radius, halo = tile.padded, tile.sigma, tile.radius, tile.halo
    dtype = torch.float64 if padded.dtype == torch.float64 else torch.float32
    batch, channels = padded.shape[:2]
    height, width = tile.height, tile.width
    # The vector kernel needs rows at least one SIMD group wide; the blur is symmetric in
    # x and y, so a tall narrow tile is done transposed instead of pixel by pixel.
    transposed = width < kernels.lanes[dtype] <= height
    if transposed:
        padded, sigma, radius = (t.transpose(-2, -1) for t in (padded, sigma, radius))
        height, width = width, height
    source = padded.to(device="cpu", dtype=dtype).contiguous()
    sigma = sigma.to(device="cpu", dtype=dtype).contiguous()
    radius = radius.to(device="cpu", dtype=torch.int64).contiguous()
    out = torch.empty((batch, channels, height, width), dtype=dtype)
    run.run(kernels.by_dtype[dtype], source, sigma, radius, out, halo)
    if transposed:
        out = out.transpose(-2, -1).contiguous()
    return out if padded.dtype == dtype else out.to(padded.dtype)
