"""adaptiveblur.borders: positions and windows outside the image, against numpy's pad modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptiveblur.borders import border_index, read_window, source_runs
from tests.oracle import NUMPY_PAD


@pytest.mark.parametrize("border", ["reflect", "replicate", "constant"])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (7, 13), (2, 31)])
def test_read_window_equals_numpy_pad_far_outside(rng, border, height, width):
    """Windows may reach past the image by more than its size (radius wider than the image)."""
    image = rng.random((2, height, width))
    reach = 3 * max(height, width) + 2
    padded = np.pad(image, ((0, 0), (reach, reach), (reach, reach)), mode=NUMPY_PAD[border])
    for _ in range(20):
        y0, x0 = (int(v) for v in rng.integers(-reach, reach, 2))
        y1 = int(rng.integers(y0 + 1, min(y0 + height + 2 * reach, reach + height) + 1))
        x1 = int(rng.integers(x0 + 1, min(x0 + width + 2 * reach, reach + width) + 1))
        window = read_window(torch.from_numpy(image), y0, y1, x0, x1, border).numpy()
        expected = padded[:, y0 + reach : y1 + reach, x0 + reach : x1 + reach]
        np.testing.assert_array_equal(window, expected)


def test_reflect_is_periodic_with_period_two_sizes_less_two(rng):
    size = int(rng.integers(2, 20))
    index = torch.arange(-5 * size, 5 * size)
    source, valid = border_index(index, size, "reflect")
    assert valid is None
    shifted, _ = border_index(index + 2 * (size - 1), size, "reflect")
    assert torch.equal(source, shifted)
    assert int(source.min()) == 0 and int(source.max()) == size - 1


def test_constant_marks_the_positions_outside():
    source, valid = border_index(torch.arange(-2, 5), 3, "constant")
    assert valid is not None
    assert valid.tolist() == [False, False, True, True, True, False, False]
    assert source.tolist() == [0, 0, 0, 1, 2, 2, 2]


@pytest.mark.parametrize("border", ["reflect", "replicate", "constant"])
def test_source_runs_read_what_border_index_maps(rng, border):
    for _ in range(200):
        size = int(rng.integers(1, 12))
        start = int(rng.integers(-4 * size - 3, size + 3))
        stop = start + int(rng.integers(1, 9 * size + 6))
        source, valid = border_index(torch.arange(start, stop), size, border)
        expected = {
            offset: int(source[offset])
            for offset in range(stop - start)
            if valid is None or bool(valid[offset])
        }
        read: dict[int, int] = {}
        for first, count, origin, step in source_runs(start, stop, size, border):
            assert step in (-1, 0, 1) and count >= 1
            for k in range(count):
                assert first + k not in read  # every position in at most one run
                read[first + k] = origin + k * step
        assert read == expected


@pytest.mark.parametrize("border", ["reflect", "replicate", "constant"])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (2, 2), (7, 13)])
def test_read_window_gradient_is_the_sum_over_the_positions_read(rng, border, height, width):
    # Against an independent fold: every window position adds its gradient to the pixel it
    # read, one by one, in float64.
    image = torch.from_numpy(rng.random((2, height, width))).requires_grad_()
    reach = 2 * max(height, width) + 1
    y0, x0 = (int(v) for v in rng.integers(-reach, 1, 2))
    y1, x1 = height + int(rng.integers(0, reach)), width + int(rng.integers(0, reach))
    grad = torch.from_numpy(rng.standard_normal((2, y1 - y0, x1 - x0)))
    (got,) = torch.autograd.grad(read_window(image, y0, y1, x0, x1, border), image, grad)
    rows, row_ok = border_index(torch.arange(y0, y1), height, border)
    cols, col_ok = border_index(torch.arange(x0, x1), width, border)
    expected = np.zeros((2, height, width))
    for i, y in enumerate(rows.tolist()):
        for j, x in enumerate(cols.tolist()):
            if (row_ok is None or bool(row_ok[i])) and (col_ok is None or bool(col_ok[j])):
                expected[:, y, x] += grad[:, i, j].numpy()
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12, rtol=0)
    (again,) = torch.autograd.grad(read_window(image, y0, y1, x0, x1, border), image, grad)
    assert torch.equal(got, again)


@pytest.mark.parametrize("border", ["reflect", "replicate", "constant"])
def test_tile_windows_with_halos_narrower_than_the_image_equal_numpy_pad(rng, border):
    # The common case (a tile and a halo narrower than the image) is one pad of the part
    # inside; it must read what the run-by-run copy reads, at every edge and corner.
    height, width = int(rng.integers(9, 40)), int(rng.integers(9, 40))
    image = rng.random((1, 2, height, width))
    for _ in range(20):
        halo = int(rng.integers(0, 8))
        ty0, tx0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        ty1, tx1 = int(rng.integers(ty0 + 1, height + 1)), int(rng.integers(tx0 + 1, width + 1))
        y0, y1, x0, x1 = ty0 - halo, ty1 + halo, tx0 - halo, tx1 + halo
        padded = np.pad(image, ((0, 0), (0, 0), (halo, halo), (halo, halo)), NUMPY_PAD[border])
        window = read_window(torch.from_numpy(image), y0, y1, x0, x1, border).numpy()
        expected = padded[..., y0 + halo : y1 + halo, x0 + halo : x1 + halo]
        np.testing.assert_array_equal(window, expected)
