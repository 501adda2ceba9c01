"""Tile plans: which output rectangles to compute at a time, and with what halo.

Pure integers, no tensors. A tile is an output rectangle; the engine reads the
tile plus a halo of the tile's largest window radius around it (mirrored or
clamped at the image border), so each tile is independent and peak memory is
set by the tile size, not the image size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from adaptiveblur.errors import InvalidParameterError

DEFAULT_MAX_MEMORY = 1 << 30  # bytes the engine may use for temporaries at once
MIN_TILE_SIDE = 32  # the smallest tile side; below it the window is split into row chunks
MIN_TILE_PIXELS = MIN_TILE_SIDE * MIN_TILE_SIDE


@dataclass(frozen=True)
class Tile:
    """An output rectangle ``[y0, y1) x [x0, x1)``."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def check_max_memory(max_memory: int | None) -> None:
    """Raise :class:`InvalidParameterError` unless ``max_memory`` is ``None`` or a positive int."""
    if max_memory is not None and (
        isinstance(max_memory, bool) or not isinstance(max_memory, int) or max_memory <= 0
    ):
        raise InvalidParameterError(
            f"expected max_memory to be a positive integer, got {max_memory!r}"
        )


def tile_side(bytes_per_pixel: int, max_memory: int, height: int, width: int) -> int:
    """Side of square tiles whose temporaries fit in ``max_memory``.

    Never smaller than ``sqrt(MIN_TILE_PIXELS)`` (the caller then chunks the window
    so the budget still holds) and never larger than the image needs. An image whose
    temporaries fit is one tile, square or not: a cut costs halos and launches.
    """
    pixels = max(max_memory // max(bytes_per_pixel, 1), MIN_TILE_PIXELS)
    if height * width <= pixels:
        return max(1, height, width)
    return max(1, min(math.isqrt(pixels), max(height, width)))


def plan_tiles(height: int, width: int, side: int, min_width: int = 1) -> list[Tile]:
    """Cover ``height x width`` with tiles of at most ``side x side``, row-major.

    With ``min_width``, a last column of tiles narrower than that is joined to the one
    before it (those tiles are then up to ``side + min_width - 1`` wide).

    Example:
        >>> [(t.y0, t.y1, t.x0, t.x1) for t in plan_tiles(3, 5, 3)]
        [(0, 3, 0, 3), (0, 3, 3, 5)]
        >>> [(t.x0, t.x1) for t in plan_tiles(1, 7, 3, min_width=2)]
        [(0, 3), (3, 7)]
    """
    if height < 1 or width < 1 or side < 1:
        raise ValueError(f"expected positive sizes, got {height}x{width} with side {side}")
    starts = list(range(0, width, side))
    if len(starts) > 1 and width - starts[-1] < min_width:
        starts.pop()
    ends = [*starts[1:], width]
    return [
        Tile(y0, min(y0 + side, height), x0, x1)
        for y0 in range(0, height, side)
        for x0, x1 in zip(starts, ends, strict=True)
    ]


def padded_bytes(rows: int, cols: int, halo: int, planes: int, element: int) -> int:
    """Bytes of ``planes`` planes of ``rows x cols`` pixels read with a halo of ``halo``."""
    return planes * element * (rows + 2 * halo) * (cols + 2 * halo)


def check_window(
    rows: int,
    cols: int,
    planes: int,
    element: int,
    halo: int,
    max_memory: int,
    *,
    truncate: float,
) -> None:
    """Raise unless the smallest piece an engine holds at once fits in memory.

    An engine reads each piece of the image (``rows x cols`` output pixels: a row band, a
    tile) with a halo of the largest window radius around it. The halo does not shrink
    with the piece, so a window far wider than the image needs more memory than any
    tiling saves. A budget is what tiles aim for; the smallest piece is never cut
    further, so it may take more than a small budget. The limit here is the larger of
    ``max_memory`` and :data:`DEFAULT_MAX_MEMORY`: a piece above it is refused, and the
    error says which ``max_sigma`` would fit.

    Args:
        rows, cols: the smallest piece the engine can blur at a time.
        planes: planes read per piece and image (its channels: a batch of images is a
            tiling choice, not a limit).
        element: bytes per sample the engine reads (4 for float32).
        halo: the radius of the widest window.
        max_memory: the budget, in bytes.
        truncate: the window radius per sigma, for the message.

    Raises:
        InvalidParameterError: the piece does not fit (``parameter`` is ``"max_memory"``).
    """
    limit = max(max_memory, DEFAULT_MAX_MEMORY)
    needed = padded_bytes(rows, cols, halo, planes, element)
    if needed <= limit:
        return
    low, high = 0, halo  # the widest halo that fits lies in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        if padded_bytes(rows, cols, middle, planes, element) <= limit:
            low = middle
        else:
            high = middle
    fits = padded_bytes(rows, cols, low, planes, element) <= limit
    largest = 0.0
    if fits:  # the largest tenth of a pixel whose radius, floor(truncate * s + 0.5), is low
        largest = math.floor((low + 0.5) / truncate * 10) / 10
        while largest > 0 and math.floor(truncate * largest + 0.5) > low:
            largest = round(largest - 0.1, 1)
    raise InvalidParameterError(
        f"a window of radius {halo} needs {_size(needed)} for each {rows}x{cols} piece "
        f"of the image, more than max_memory allows ({_size(limit)}); at that budget the "
        f"largest sigma is {largest:g}",
        parameter="max_memory",
    )


def _size(count: int) -> str:
    """``1536`` to ``"1.5 KiB"``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``[start, stop)`` pairs covering ``range(total)`` in steps of ``size``."""
    for start in range(0, total, max(size, 1)):
        yield start, min(start + size, total)
