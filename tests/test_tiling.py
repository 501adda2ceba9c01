"""adaptiveblur.tiling: tile plans cover every pixel once and tiles fit the memory budget."""

from __future__ import annotations

import numpy as np
import pytest

from adaptiveblur.tiling import MIN_TILE_PIXELS, chunks, plan_tiles, tile_side


@pytest.mark.parametrize(("height", "width"), [(1, 1), (7, 13), (1023, 769), (5, 1)])
def test_plan_tiles_covers_each_pixel_once(rng, height, width):
    for side in (1, 2, int(rng.integers(3, 64)), max(height, width) + 5):
        covered = np.zeros((height, width), dtype=np.int64)
        tiles = plan_tiles(height, width, side)
        for tile in tiles:
            assert 1 <= tile.height <= side and 1 <= tile.width <= side
            covered[tile.y0 : tile.y1, tile.x0 : tile.x1] += 1
        assert (covered == 1).all()
        assert tiles == sorted(tiles, key=lambda t: (t.y0, t.x0))  # row-major


def test_plan_tiles_refuses_empty_sizes():
    with pytest.raises(ValueError, match="positive"):
        plan_tiles(0, 5, 3)


@pytest.mark.parametrize("bytes_per_pixel", [1, 12, 4096, 10**9])
def test_tile_side_fits_the_budget_and_the_image(bytes_per_pixel):
    budget = 1 << 20
    side = tile_side(bytes_per_pixel, budget, 3000, 2000)
    assert 1 <= side <= 3000
    if side * side > MIN_TILE_PIXELS:  # above the floor, the budget holds
        assert min(side, 3000) * min(side, 2000) * bytes_per_pixel <= budget
    assert tile_side(1, budget, 7, 13) == 13  # never larger than the image needs


def test_an_image_whose_temporaries_fit_is_one_tile_even_when_not_square():
    assert tile_side(1, 4000 * 300, 300, 4000) == 4000  # 1.2 M pixels fit, 1095^2 would too
    assert tile_side(1, 4000 * 300 - 1, 300, 4000) == 1095


def test_chunks_cover_the_range(rng):
    for total in (0, 1, 17, 100):
        size = int(rng.integers(1, 30))
        pieces = list(chunks(total, size))
        assert [i for start, stop in pieces for i in range(start, stop)] == list(range(total))
        assert all(stop - start <= size for start, stop in pieces)
