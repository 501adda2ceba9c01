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
MIN_TILE_PIXELS = 32 * 32  # below this, split the window into row chunks instead


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
    so the budget still holds) and never larger than the image needs.
    """
    pixels = max(max_memory // max(bytes_per_pixel, 1), MIN_TILE_PIXELS)
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


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``[start, stop)`` pairs covering ``range(total)`` in steps of ``size``."""
    for start in range(0, total, max(size, 1)):
        yield start, min(start + size, total)
