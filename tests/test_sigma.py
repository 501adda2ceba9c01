"""Intensity extraction and the intensity -> sigma mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptiveblur import InvalidParameterError
from adaptiveblur.sigma import intensity, sigma_from_intensity


def test_luminance_uses_rec709_weights(rng):
    pixels = torch.from_numpy(rng.random((3, 5, 7)))
    expected = 0.2126 * pixels[0] + 0.7152 * pixels[1] + 0.0722 * pixels[2]
    torch.testing.assert_close(intensity(pixels, "RGB"), expected)


@pytest.mark.parametrize(
    ("channel", "index"), [("red", 0), ("green", 1), ("blue", 2), ("alpha", 3)]
)
def test_single_channels(rng, channel, index):
    pixels = torch.from_numpy(rng.random((4, 3, 6)))
    torch.testing.assert_close(intensity(pixels, "RGBA", channel), pixels[index])


def test_mean_ignores_alpha(rng):
    pixels = torch.from_numpy(rng.random((4, 3, 6)))
    torch.testing.assert_close(intensity(pixels, "RGBA", "mean"), pixels[:3].mean(0))


def test_gray_reads_its_one_channel(rng):
    pixels = torch.from_numpy(rng.random((2, 4, 4)))
    for channel in ("luminance", "mean", "red"):
        torch.testing.assert_close(intensity(pixels, "LA", channel), pixels[0])


def test_alpha_needs_alpha():
    with pytest.raises(InvalidParameterError, match="no alpha"):
        intensity(torch.rand(3, 2, 2), "RGB", "alpha")


def test_unknown_channel():
    with pytest.raises(InvalidParameterError, match="channel"):
        intensity(torch.rand(3, 2, 2), "RGB", "cyan")


def test_mapping_endpoints_gamma_and_invert(rng):
    v = torch.from_numpy(rng.random((6, 5)))
    lo, hi, gamma = 0.5, 4.0, float(rng.uniform(0.3, 3.0))
    torch.testing.assert_close(
        sigma_from_intensity(v, min_sigma=lo, max_sigma=hi, gamma=gamma), lo + (hi - lo) * v**gamma
    )
    torch.testing.assert_close(
        sigma_from_intensity(v, min_sigma=lo, max_sigma=hi, gamma=gamma, invert=True),
        lo + (hi - lo) * (1 - v) ** gamma,
    )
    ends = sigma_from_intensity(torch.tensor([0.0, 1.0]), min_sigma=lo, max_sigma=hi)
    assert ends.tolist() == [lo, hi]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_sigma": -1.0, "max_sigma": 2.0}, "min_sigma >= 0"),
        ({"min_sigma": 3.0, "max_sigma": 2.0}, "max_sigma >= min_sigma"),
        ({"max_sigma": float("nan")}, "finite"),
        ({"max_sigma": 2.0, "gamma": 0.0}, "gamma > 0"),
    ],
)
def test_bad_mapping(kwargs, message):
    with pytest.raises(InvalidParameterError, match=message):
        sigma_from_intensity(torch.rand(2, 2), **kwargs)


def test_values_outside_unit_range_are_clamped():
    out = sigma_from_intensity(torch.tensor([-0.5, 1.5]), max_sigma=2.0)
    assert np.allclose(out.numpy(), [0.0, 2.0])
