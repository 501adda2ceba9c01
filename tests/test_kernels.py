"""adaptiveblur.kernels: the radius rule (scipy's) and the Gaussian taps, against plain formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adaptiveblur.kernels import SIGMA_FLOOR, gaussian_taps, radius_for, radius_map


@pytest.mark.parametrize("truncate", [1.0, 2.5, 3.0, 4.0])
def test_radius_for_is_scipys_rule(rng, truncate):
    for sigma in [0.0, 1e-4, 0.1, 1 / 6, 0.5, 1.5, 2.0, 9.7, *rng.uniform(0, 20, 50)]:
        assert radius_for(sigma, truncate) == int(truncate * float(sigma) + 0.5)


def test_radius_map_agrees_with_radius_for_on_ties_and_random_values(rng):
    # truncate * sigma + 0.5 lands on an integer for sigma = (k - 0.5) / 3: the float64 rule.
    ties = (np.arange(1, 40) - 0.5) / 3.0
    sigma = np.concatenate([ties, rng.uniform(0, 12, 200)]).astype(np.float32)
    radii = radius_map(torch.from_numpy(sigma)).numpy()
    assert radii.dtype == np.int64
    assert radii.tolist() == [radius_for(float(s)) for s in sigma]


def test_gaussian_taps_are_the_formula_inside_each_window(rng):
    sigma = torch.from_numpy(rng.uniform(0.0, 3.0, (5, 7)))
    sigma[0, 0] = 0.0
    radius = radius_map(sigma)
    offsets = torch.arange(-9, 10)
    taps = gaussian_taps(sigma, radius, offsets).numpy()
    for (y, x), s in np.ndenumerate(sigma.numpy()):
        r = radius_for(float(s))
        expected = [
            math.exp(-(d * d) / (2 * max(s, SIGMA_FLOOR) ** 2)) if abs(d) <= r else 0.0
            for d in range(-9, 10)
        ]
        np.testing.assert_allclose(taps[y, x], expected, rtol=1e-12, atol=0)


def test_zero_sigma_has_one_finite_tap():
    taps = gaussian_taps(torch.zeros(1), torch.zeros(1, dtype=torch.int64), torch.arange(-2, 3))
    assert taps.tolist() == [[0.0, 0.0, 1.0, 0.0, 0.0]]
