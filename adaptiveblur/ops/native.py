"""The native backend: the fused exact CPU kernel of :mod:`adaptiveblur.native`, one tile at a time.

Each output pixel sums only its own window (a SIMD group of neighbouring pixels in a
row loops over the group's largest radius, with per-lane weights that are zero past
each pixel's own radius), so cost follows the sigma map, not its maximum. float32
images are summed in float32 with weights computed in float64; float64 images entirely
in float64. Both are exact: float32 within its rounding of the float64 result, float64
within a few ulp. Output rows are split into bands over ``torch.get_num_threads()``
threads (no more than :func:`~adaptiveblur.cpus.usable_cpus`); a tile of little work runs
on the calling thread.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from adaptiveblur.cpus import usable_cpus
from adaptiveblur.errors import DeviceUnavailableError
from adaptiveblur.native import library
from adaptiveblur.ops.tile import TileInput

# Below this many multiply-adds a tile is blurred on the calling thread (thread hand-off
# costs more than it saves); above it, each worker gets about BANDS_PER_WORKER bands so
# that uneven rows (sigma varies across the image) still balance.
_PARALLEL_WORK = 2_000_000
BANDS_PER_WORKER = 8


def available(device: torch.device) -> str | None:
    """``None`` when the kernel runs on ``device``, else why not (compiles it on first call)."""
    if device.type != "cpu":
        return f"it runs on cpu, not {device.type}"
    kernels = library.kernels()
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
    kernels = library.kernels()
    if isinstance(kernels, str):
        raise DeviceUnavailableError(f"backend 'native' is not available: {kernels}")
    padded, sigma, radius, halo = tile.padded, tile.sigma, tile.radius, tile.halo
    dtype = torch.float64 if padded.dtype == torch.float64 else torch.float32
    name = str(dtype).removeprefix("torch.")
    batch, channels = padded.shape[:2]
    height, width = tile.height, tile.width
    # The vector kernel needs rows at least one SIMD group wide; the blur is symmetric in
    # x and y, so a tall narrow tile is done transposed instead of pixel by pixel.
    transposed = width < kernels.lanes[name] <= height
    if transposed:
        padded, sigma, radius = (t.transpose(-2, -1) for t in (padded, sigma, radius))
        height, width = width, height
    source = padded.to(device="cpu", dtype=dtype).contiguous()
    sigma = sigma.to(device="cpu", dtype=dtype).contiguous()
    radius = radius.to(device="cpu", dtype=torch.int64).contiguous()
    out = torch.empty((batch, channels, height, width), dtype=dtype)
    run_tile(kernels.by_dtype[name], source, sigma, radius, out, halo)
    if transposed:
        out = out.transpose(-2, -1).contiguous()
    return out if padded.dtype == dtype else out.to(padded.dtype)


def run_tile(
    function: Callable[..., int],
    source: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    out: torch.Tensor,
    halo: int,
) -> None:
    """Blur contiguous ``source (B, C, h + 2 halo, w + 2 halo)`` into ``out (B, C, h, w)``.

    Raises:
        ValueError: the kernel reported a bad radius or could not allocate.
    """
    batch, channels, height, width = out.shape
    in_item = source[0].numel() * source.element_size()
    out_item = out[0].numel() * out.element_size()
    map_item = height * width

    def rows(item: int, row0: int, row1: int) -> int:
        return int(
            function(
                source.data_ptr() + item * in_item,
                sigma.data_ptr() + item * map_item * sigma.element_size(),
                radius.data_ptr() + item * map_item * 8,
                out.data_ptr() + item * out_item,
                channels,
                height,
                width,
                halo,
                row0,
                row1,
            )
        )

    workers = max(1, min(torch.get_num_threads(), usable_cpus()))
    work = batch * channels * height * width * (2 * halo + 1) ** 2
    if workers == 1 or work < _PARALLEL_WORK:
        jobs = [(item, 0, height) for item in range(batch)]
    else:
        per_item = max(1, -(-workers * BANDS_PER_WORKER // batch))
        step = max(1, -(-height // per_item))
        jobs = [
            (item, y, min(y + step, height))
            for item in range(batch)
            for y in range(0, height, step)
        ]
    message = library.failure(library.run_jobs(workers, rows, jobs))
    if message is not None:
        raise ValueError(f"native blur failed: {message}")
