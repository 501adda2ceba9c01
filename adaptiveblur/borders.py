"""Border handling: where a window reaches past the image edge.

``reflect`` mirrors about the edge pixel without repeating it (``d c b | a b c d | c b a``,
torch's ``reflect`` and scipy's ``mirror``), for any distance, even a radius larger
than the image. ``replicate`` repeats the edge pixel (scipy ``nearest``).
``constant`` reads zeros outside the image (scipy ``constant`` with ``cval=0``).
torch is imported by the functions that take tensors only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adaptiveblur.errors import InvalidParameterError

if TYPE_CHECKING:
    import torch

BORDER_MODES = frozenset({"reflect", "replicate", "constant"})
DEFAULT_BORDER = "reflect"


def check_border(border: str) -> None:
    """Raise :class:`InvalidParameterError` unless ``border`` is one of :data:`BORDER_MODES`."""
    if border not in BORDER_MODES:
        raise InvalidParameterError(
            f"expected border to be one of {', '.join(sorted(BORDER_MODES))}, got {border!r}"
        )


def border_index(
    index: torch.Tensor, size: int, mode: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Map integer positions (possibly outside ``[0, size)``) to source positions.

    Returns:
        ``(source, valid)``: in-range positions to read, and for ``constant`` a boolean
        mask of positions that were inside the image (``None`` for the other modes).
    """
    import torch

    if mode == "reflect":
        if size == 1:
            return torch.zeros_like(index), None
        period = 2 * (size - 1)
        folded = torch.remainder(index, period)
        return torch.where(folded < size, folded, period - folded), None
    clamped = index.clamp(0, size - 1)
    if mode == "replicate":
        return clamped, None
    return clamped, (index >= 0) & (index < size)


def read_window(image: torch.Tensor, y0: int, y1: int, x0: int, x1: int, mode: str) -> torch.Tensor:
    """Rows ``[y0, y1)`` and columns ``[x0, x1)`` of ``image (..., H, W)``, borders filled by ``mode``.

    The bounds may lie outside the image by any amount. Only the requested
    rectangle is materialised, never a padded copy of the whole image. Under autograd
    the backward pass folds the window's gradient back onto the image as a fixed
    sequence of slice additions (no atomics), so two backward passes give the same bits
    on every device.
    """
    import torch

    # Under torch.compile the plain reads are traced (the compiler derives their backward).
    if torch.is_grad_enabled() and image.requires_grad and not torch.compiler.is_compiling():
        return _window_function().apply(image, y0, y1, x0, x1, mode)
    return _read_window(image, y0, y1, x0, x1, mode)


def _read_window(
    image: torch.Tensor, y0: int, y1: int, x0: int, x1: int, mode: str
) -> torch.Tensor:
    """The window as one ``torch.nn.functional.pad`` of the part inside the image where
    that pad can read it (:func:`_pad_amounts`), else one copy per pair of row and column
    runs (:func:`source_runs`)."""
    height, width = image.shape[-2:]
    amounts = _pad_amounts(image.dim(), height, width, y0, y1, x0, x1, mode)
    if amounts is not None:
        import torch.nn.functional as F

        inside = image[..., max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)]
        return F.pad(inside, amounts, mode=mode)  # torch's names for the three modes
    rows = source_runs(y0, y1, height, mode)
    cols = source_runs(x0, x1, width, mode)
    shape = (*image.shape[:-2], y1 - y0, x1 - x0)
    read = sum(run[1] for run in rows) * sum(run[1] for run in cols)
    # Positions in no run read zeros (``constant``).
    window = image.new_empty(shape) if read == shape[-2] * shape[-1] else image.new_zeros(shape)
    for row in rows:
        band = _run_source(image, row, -2)
        for col in cols:
            window[..., row[0] : row[0] + row[1], col[0] : col[0] + col[1]] = _run_source(
                band, col, -1
            )
    return window


def _pad_amounts(
    dims: int, height: int, width: int, y0: int, y1: int, x0: int, x1: int, mode: str
) -> tuple[int, int, int, int] | None:
    """``(left, right, top, bottom)`` for ``F.pad`` of the window's part inside the image,
    or ``None`` where one pad cannot give the window: no part of it inside, ``reflect``
    reaching farther than the part is wide (the pad then needs pixels it does not hold),
    or a shape torch pads only by the ``constant`` mode (it pads the last two dims of 3-
    and 4-D tensors otherwise)."""
    top, bottom = max(0, -y0), max(0, y1 - height)
    left, right = max(0, -x0), max(0, x1 - width)
    rows = min(y1, height) - max(y0, 0)
    cols = min(x1, width) - max(x0, 0)
    if rows <= 0 or cols <= 0:
        return None
    if mode != "constant" and dims not in (3, 4):
        return None
    if mode == "reflect" and (max(top, bottom) >= rows or max(left, right) >= cols):
        return None
    return left, right, top, bottom


def _run_source(image: torch.Tensor, run: tuple[int, int, int, int], dim: int) -> torch.Tensor:
    """What one run reads along ``dim``, in window order."""
    read = image.narrow(dim, *_run_target(run))
    count, step = run[1], run[3]
    if step == 0:
        shape = list(read.shape)
        shape[dim] = count
        return read.expand(shape)
    return read if step == 1 else read.flip(dim)


def source_runs(start: int, stop: int, size: int, mode: str) -> list[tuple[int, int, int, int]]:
    """Positions ``[start, stop)`` of one axis as runs ``(first, count, source, step)``.

    Window positions ``first .. first + count - 1`` (counted from ``start``) read source
    positions ``source, source + step, ...``; ``step`` is 1, -1 (a mirrored stretch) or 0
    (an edge pixel repeated). Positions that read zeros (``constant``) are in no run, and
    within a run no source position repeats unless ``step`` is 0. The runs are found
    stretch by stretch (a handful for a halo narrower than the image), not position by
    position.
    """
    runs: list[tuple[int, int, int, int]] = []
    position = start
    while position < stop:
        if mode == "reflect" and size > 1:
            period = 2 * (size - 1)
            folded = position % period
            if folded < size - 1:  # rising: sources folded .. size - 1
                source, step, count = folded, 1, size - folded
            else:  # falling: sources period - folded .. 1 (source 0 starts the next rise)
                source, step, count = period - folded, -1, period - folded
        elif mode == "reflect" or position >= size:  # a one-pixel axis, or past the end
            source, step, count = min(size - 1, max(position, 0)), 0, stop - position
        elif position < 0:
            source, step, count = 0, 0, -position
        else:
            source, step, count = position, 1, size - position
        count = min(count, stop - position)
        if not (mode == "constant" and step == 0):
            runs.append((position - start, count, source, step))
        position += count
    return runs


def fold_window(
    grad: torch.Tensor,
    rows: list[tuple[int, int, int, int]],
    cols: list[tuple[int, int, int, int]],
    size: tuple[int, int],
) -> torch.Tensor:
    """The gradient of a window read by ``rows`` x ``cols`` runs, summed onto ``size``.

    One pass over the pairs of runs, in a fixed order (so two runs give the same bits),
    with no intermediate as large as the window.
    """
    import torch

    # A pair of runs that reads the whole image once, in order, starts the sum (a copy
    # instead of zeros plus an addition); the other pairs are added in their fixed order.
    row_whole = next((row for row in rows if row[1:] == (size[0], 0, 1)), None)
    col_whole = next((col for col in cols if col[1:] == (size[1], 0, 1)), None)
    if row_whole is not None and col_whole is not None:
        part = grad.narrow(-2, row_whole[0], size[0]).narrow(-1, col_whole[0], size[1])
        folded = part.clone(memory_format=torch.contiguous_format)  # never grad's storage
    else:
        folded = torch.zeros((*grad.shape[:-2], *size), dtype=grad.dtype, device=grad.device)
    for row in rows:
        band = _run_part(grad, row, -2)
        for col in cols:
            if row is row_whole and col is col_whole:
                continue
            part = _run_part(band, col, -1)
            folded.narrow(-2, *_run_target(row)).narrow(-1, *_run_target(col)).add_(part)
    return folded


def _run_part(grad: torch.Tensor, run: tuple[int, int, int, int], dim: int) -> torch.Tensor:
    """The window positions of one run along ``dim``, in source order (summed if repeated)."""
    first, count, _, step = run
    part = grad.narrow(dim, first, count)
    if step == 0:
        return part.sum(dim, keepdim=True)
    return part if step == 1 else part.flip(dim)


def _run_target(run: tuple[int, int, int, int]) -> tuple[int, int]:
    """``(start, length)`` of the source positions one run reads."""
    _, count, source, step = run
    if step == 0:
        return source, 1
    return (source, count) if step == 1 else (source - count + 1, count)


_WINDOW_FUNCTION = None


def _window_function():  # noqa: ANN202 - an autograd Function, made when torch is first needed
    global _WINDOW_FUNCTION
    if _WINDOW_FUNCTION is None:
        import torch

        class ReadWindow(torch.autograd.Function):
            """:func:`read_window` with a deterministic backward pass."""

            @staticmethod
            def forward(ctx, image, y0, y1, x0, x1, mode):  # noqa: ANN001, ANN205
                height, width = image.shape[-2:]
                ctx.rows = source_runs(y0, y1, height, mode)
                ctx.cols = source_runs(x0, x1, width, mode)
                ctx.size = (height, width)
                return _read_window(image, y0, y1, x0, x1, mode)

            @staticmethod
            def backward(ctx, grad):  # noqa: ANN001, ANN205
                folded = fold_window(grad, ctx.rows, ctx.cols, ctx.size)
                return folded, None, None, None, None, None

        _WINDOW_FUNCTION = ReadWindow
    return _WINDOW_FUNCTION
