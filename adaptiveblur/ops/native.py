"""The native backend: the fused exact CPU kernel of :mod:`adaptiveblur.native`, one tile at a time.

Each output pixel sums only its own window (a SIMD group of neighbouring pixels in a
row loops over the group's largest radius, with per-lane weights that are zero past
each pixel's own radius), so cost follows the sigma map, not its maximum. float32
images are summed in float32 with weights computed in float64; float64 images entirely
in float64. Both are exact: float32 within its rounding of the float64 result, float64
within a few ulp. Output rows are split into bands over ``torch.get_num_threads()``
threads (no more than :func:`~adaptiveblur.cpus.usable_cpus`); a tile of little work runs
on the calling thread.

Under autograd the tile's backward pass is native too (``_backward.c``): the gradient to
sigma and to the padded input, each a gather over windows, so no atomics and the same
bits on every run; torch carries the input's gradient back through the border.
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
    """Temporaries per output pixel: the result, contiguous sigma and radius copies, and
    the backward pass's weight table (``halo + 1`` doubles) and normalisation.

    Besides these the forward kernel only keeps, per thread, a weight table and the
    folded rows of one chunk (``4 * halo * (256 + 2 * halo)`` values).
    """
    halo = (window - 1) // 2
    return batch * (channels * element + element + 8) + 8 * (halo + 2)


def blur_tile(tile: TileInput) -> torch.Tensor:
    """Blur one tile on the CPU; ``tile.budget`` is unused (see :func:`bytes_per_pixel`).

    Returns:
        ``(B, C, h, w)`` in the tile's dtype (summed in float32 unless it is float64).

    Raises:
        DeviceUnavailableError: the kernel could not be built here.
        ValueError: a radius is outside ``[0, halo]``.
    """
    kernels = _kernels()
    padded, sigma, radius, halo = tile.padded, tile.sigma, tile.radius, tile.halo
    dtype = torch.float64 if padded.dtype == torch.float64 else torch.float32
    name = _name(dtype)
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
    if torch.is_grad_enabled() and (source.requires_grad or sigma.requires_grad):
        out = _TileBlur.apply(source, sigma, radius, halo)
    else:
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


class _TileBlur(torch.autograd.Function):
    """The native blur of one contiguous tile, with its native backward pass."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        source: torch.Tensor,
        sigma: torch.Tensor,
        radius: torch.Tensor,
        halo: int,
    ) -> torch.Tensor:
        kernels = _kernels()
        batch, channels, height, width = (*source.shape[:2], *sigma.shape[-2:])
        out = torch.empty((batch, channels, height, width), dtype=source.dtype)
        run_tile(kernels.by_dtype[_name(source.dtype)], source, sigma, radius, out, halo)
        ctx.save_for_backward(source, sigma, radius)
        ctx.halo = halo  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        source, sigma, radius = ctx.saved_tensors  # type: ignore[attr-defined]
        wants_input, wants_sigma = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        halo: int = ctx.halo  # type: ignore[attr-defined]
        grad_input, grad_sigma = backward_tile(
            source, sigma, radius, grad.to(source.dtype).contiguous(), halo, wants_input
        )
        return grad_input, grad_sigma if wants_sigma else None, None, None


def backward_tile(
    source: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    grad: torch.Tensor,
    halo: int,
    wants_input: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Gradients of the tile's blur: to the padded ``source`` (when ``wants_input``) and
    to ``sigma``, given the output's gradient ``grad``; all contiguous, on the CPU.

    Raises:
        ValueError: the kernel reported a bad radius.
    """
    kernels = _kernels()
    name = _name(source.dtype)
    batch, channels, padded_height, pitch = source.shape
    height, width = sigma.shape[-2:]
    table = torch.empty((height * width, halo + 1), dtype=torch.float64)
    inverse = torch.empty((height * width,), dtype=torch.float64)
    grad_sigma = torch.empty(sigma.shape, dtype=source.dtype)
    grad_input = torch.empty(source.shape, dtype=source.dtype) if wants_input else None
    workers = max(1, min(torch.get_num_threads(), usable_cpus()))
    in_item, out_item, map_item = source[0].numel(), grad[0].numel(), height * width

    def pointer(tensor: torch.Tensor, item: int, size: int) -> int:
        return tensor.data_ptr() + item * size * tensor.element_size()

    for item in range(batch):  # the tables are one item's: items go one after another

        def sigma_rows(row0: int, row1: int, item: int = item) -> int:
            return int(
                kernels.backward_sigma[name](
                    pointer(source, item, in_item),
                    pointer(sigma, item, map_item),
                    pointer(radius, item, map_item),
                    pointer(grad, item, out_item),
                    table.data_ptr(),
                    inverse.data_ptr(),
                    pointer(grad_sigma, item, map_item),
                    channels,
                    height,
                    width,
                    halo,
                    row0,
                    row1,
                )
            )

        _run_rows(workers, sigma_rows, height)
        if grad_input is None:
            continue

        def input_rows(row0: int, row1: int, item: int = item) -> int:
            assert grad_input is not None
            return int(
                kernels.backward_input[name](
                    pointer(radius, item, map_item),
                    pointer(grad, item, out_item),
                    table.data_ptr(),
                    inverse.data_ptr(),
                    pointer(grad_input, item, in_item),
                    channels,
                    height,
                    width,
                    halo,
                    row0,
                    row1,
                )
            )

        _run_rows(workers, input_rows, padded_height)
    return grad_input, grad_sigma


def _run_rows(workers: int, rows: Callable[[int, int], int], count: int) -> None:
    """``rows(row0, row1)`` over ``[0, count)`` in about BANDS_PER_WORKER bands a worker."""
    step = max(1, -(-count // (workers * BANDS_PER_WORKER)))
    jobs = [(row0, min(row0 + step, count)) for row0 in range(0, count, step)]
    message = library.failure(library.run_jobs(workers, rows, jobs))
    if message is not None:
        raise ValueError(f"native blur backward failed: {message}")


def _kernels() -> library.Kernels:
    kernels = library.kernels()
    if isinstance(kernels, str):
        raise DeviceUnavailableError(f"backend 'native' is not available: {kernels}")
    return kernels


def _name(dtype: torch.dtype) -> str:
    """The kernels' key for ``dtype`` (``"float32"``)."""
    return str(dtype).removeprefix("torch.")
