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
    rectangle is materialised, never a padded copy of the whole image.
    """
    import torch

    height, width = image.shape[-2:]
    device = image.device
    rows, row_ok = border_index(torch.arange(y0, y1, device=device), height, mode)
    cols, col_ok = border_index(torch.arange(x0, x1, device=device), width, mode)
    rowed = image.index_select(-2, rows)  # whole rows: one contiguous copy each
    # index_select along the last dimension copies element by element (slow on the CPU),
    # so only the columns outside the image go through it; the inside is one slice copy.
    inside_from, inside_to = min(max(x0, 0), width), max(min(x1, width), 0)
    if inside_from < inside_to:
        window = rowed.new_empty((*rowed.shape[:-1], x1 - x0))
        window[..., inside_from - x0 : inside_to - x0] = rowed[..., inside_from:inside_to]
        if inside_from > x0:
            window[..., : inside_from - x0] = rowed.index_select(-1, cols[: inside_from - x0])
        if inside_to < x1:
            window[..., inside_to - x0 :] = rowed.index_select(-1, cols[inside_to - x0 :])
    else:
        window = rowed.index_select(-1, cols)
    if row_ok is not None and col_ok is not None:
        window = window * (row_ok[:, None] & col_ok[None, :]).to(window.dtype)
    return window
