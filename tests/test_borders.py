"""adaptiveblur.borders: positions and windows outside the image, against numpy's pad modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptiveblur.borders import border_index, read_window
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
