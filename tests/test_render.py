"""adaptiveblur.render: sigma maps, and blur_image's semantics (alpha, 16 bits, linear light, rounding).

References are written independently of the library (tests/oracle.py: Rec. 709 luma, the
sRGB transfer functions, the float64 ``loop_blur``). Images are tiny.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptiveblur import io as abio
from adaptiveblur.ops import adaptive_blur
from adaptiveblur.render import blur_image, sigma_map_for
from adaptiveblur.settings import BlurSettings
from tests.helpers import EXACT, HEIGHT, WIDTH, chw, make_image, random_rgb
from tests.oracle import linear_to_srgb, loop_blur, luma, srgb_to_linear


@pytest.mark.parametrize(
    ("options", "curve"),
    [
        ({}, lambda v: 2.0 * v),
        ({"min_sigma": 0.5}, lambda v: 0.5 + 1.5 * v),
        ({"gamma": 2.5}, lambda v: 2.0 * v**2.5),
        ({"invert": True}, lambda v: 2.0 * (1.0 - v)),
        (
            {"invert": True, "gamma": 0.5, "min_sigma": 0.25},
            lambda v: 0.25 + 1.75 * (1.0 - v) ** 0.5,
        ),
    ],
)
def test_sigma_map_follows_the_luminance_curve(rng, options, curve):
    pixels = random_rgb(rng)
    sigma = sigma_map_for(make_image(pixels, "RGB"), BlurSettings(max_sigma=2.0, **options))
    assert sigma.shape == (HEIGHT, WIDTH)
    assert sigma.dtype == torch.float32
    np.testing.assert_allclose(sigma.double().numpy(), curve(luma(pixels)), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("channel", "reference"),
    [
        ("mean", lambda p: p[..., :3].mean(axis=-1)),
        ("red", lambda p: p[..., 0]),
        ("green", lambda p: p[..., 1]),
        ("blue", lambda p: p[..., 2]),
        ("alpha", lambda p: p[..., 3]),
    ],
)
def test_sigma_map_channels(rng, channel, reference):
    pixels = rng.random((HEIGHT, WIDTH, 4)).astype(np.float32)
    sigma = sigma_map_for(make_image(pixels, "RGBA"), BlurSettings(max_sigma=1.5, channel=channel))
    np.testing.assert_allclose(
        sigma.double().numpy(), 1.5 * reference(pixels.astype(np.float64)), atol=1e-5
    )


def test_sigma_map_from_a_separate_source(rng):
    gray = rng.random((HEIGHT, WIDTH, 1)).astype(np.float32)
    sigma = sigma_map_for(make_image(gray, "L"), BlurSettings(max_sigma=2.0))
    np.testing.assert_allclose(sigma.numpy(), 2.0 * gray[..., 0], atol=1e-6)


# ---- blur_image -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("border", ["reflect", "replicate", "constant"])
def test_blur_image_equals_the_oracle(rng, mode, border):
    channels = 1 if mode == "L" else 3
    pixels = rng.random((HEIGHT, WIDTH, channels)).astype(np.float32)
    sigma = torch.from_numpy(rng.uniform(0.0, 2.0, (HEIGHT, WIDTH))).float()
    settings = BlurSettings(max_sigma=2.0, border=border, truncate=2.5)
    out = blur_image(make_image(pixels, mode), sigma, settings)
    assert out.mode == mode
    assert out.pixels.shape == pixels.shape
    assert out.pixels.dtype == np.float32
    expected = loop_blur(chw(pixels), sigma.numpy(), truncate=2.5, border=border)
    np.testing.assert_allclose(chw(out.pixels), expected, atol=EXACT, rtol=0)


def test_blur_image_keeps_metadata_and_does_not_touch_its_input(rng):
    pixels = random_rgb(rng)
    image = abio.Image(
        pixels=pixels.copy(),
        mode="RGB",
        bit_depth=16,
        icc_profile=b"icc",
        exif=b"Exif\x00\x00x",
        source_format="PNG",
    )
    out = blur_image(image, torch.full((HEIGHT, WIDTH), 1.5), BlurSettings(max_sigma=1.5))
    assert (out.bit_depth, out.icc_profile, out.exif, out.source_format) == (
        16,
        b"icc",
        b"Exif\x00\x00x",
        "PNG",
    )
    assert np.array_equal(image.pixels, pixels)
    assert not np.array_equal(out.pixels, pixels)


def red_square(background: tuple[float, float, float]) -> np.ndarray:
    """An opaque pure red 7x7 square on a fully transparent background of any colour."""
    pixels = np.zeros((HEIGHT, WIDTH, 4), dtype=np.float32)
    pixels[..., :3] = background
    pixels[5:12, 8:15] = (1.0, 0.0, 0.0, 1.0)
    return pixels


@pytest.mark.parametrize("background", [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.0, 1.0, 0.0)])
def test_premultiplied_alpha_leaves_no_halo(background):
    pixels = red_square(background)
    sigma = torch.full((HEIGHT, WIDTH), 1.5)
    out = blur_image(make_image(pixels, "RGBA"), sigma, BlurSettings(max_sigma=1.5)).pixels
    alpha = out[..., 3]
    visible = alpha > 0.5 / 255  # what has alpha > 0 once written with 8 bits
    fringe = visible & (alpha < 1.0 - 1.0 / 255)
    assert fringe.sum() > 20  # the blur spread alpha over the edge: there is a fringe to check
    np.testing.assert_allclose(
        out[visible][:, :3], np.tile([1.0, 0.0, 0.0], (int(visible.sum()), 1)), atol=1 / 255
    )
    # alpha itself is blurred as a plain channel
    np.testing.assert_allclose(alpha, loop_blur(pixels[None, ..., 3], sigma.numpy())[0], atol=EXACT)

    # The naive straight-alpha blur mixes in the transparent pixels' colour: a halo.
    naive = adaptive_blur(torch.from_numpy(chw(pixels)).float(), sigma).numpy().transpose(1, 2, 0)
    naive_error = np.abs(naive[fringe][:, :3] - [1.0, 0.0, 0.0]).max()
    assert naive_error > 0.3


def test_premultiplied_alpha_gray(rng):
    pixels = np.zeros((HEIGHT, WIDTH, 2), dtype=np.float32)
    pixels[..., 0] = rng.random((HEIGHT, WIDTH))  # colour of transparent pixels: noise
    pixels[4:13, 6:16] = (0.6, 1.0)
    out = blur_image(
        make_image(pixels, "LA"), torch.full((HEIGHT, WIDTH), 2.0), BlurSettings(max_sigma=2.0)
    )
    visible = out.pixels[..., 1] > 0.5 / 255
    assert visible.sum() > 9 * 10
    np.testing.assert_allclose(out.pixels[visible][:, 0], 0.6, atol=1e-5)


def test_fully_transparent_pixels_keep_their_colour_without_nan(rng):
    pixels = rng.random((HEIGHT, WIDTH, 4)).astype(np.float32)
    pixels[..., 3] = 0.0
    out = blur_image(
        make_image(pixels, "RGBA"), torch.full((HEIGHT, WIDTH), 2.0), BlurSettings(max_sigma=2.0)
    )
    assert np.isfinite(out.pixels).all()
    assert np.array_equal(out.pixels[..., 3], np.zeros((HEIGHT, WIDTH), dtype=np.float32))
    np.testing.assert_allclose(out.pixels[..., :3], pixels[..., :3], atol=1e-6)


def test_straight_alpha_reference(rng):
    """Partial alpha everywhere: colour = blur(colour * alpha) / blur(alpha)."""
    pixels = rng.random((HEIGHT, WIDTH, 4)).astype(np.float32)
    sigma = torch.from_numpy(rng.uniform(0.0, 2.0, (HEIGHT, WIDTH))).float()
    out = blur_image(make_image(pixels, "RGBA"), sigma, BlurSettings(max_sigma=2.0)).pixels
    alpha = pixels[..., 3:].astype(np.float64)
    blurred = loop_blur(
        chw(np.concatenate([pixels[..., :3] * alpha, alpha], axis=2)), sigma.numpy()
    )
    expected_colour = blurred[:3] / blurred[3]
    np.testing.assert_allclose(chw(out[..., :3]), np.clip(expected_colour, 0, 1), atol=1e-4)
    np.testing.assert_allclose(chw(out[..., 3:]), blurred[3:], atol=EXACT)


def test_linear_light_equals_decode_blur_encode(rng):
    pixels = random_rgb(rng)
    sigma = torch.from_numpy(rng.uniform(0.0, 2.0, (HEIGHT, WIDTH))).float()
    image = make_image(pixels, "RGB")
    out = blur_image(image, sigma, BlurSettings(max_sigma=2.0, linear=True)).pixels
    expected = linear_to_srgb(loop_blur(chw(srgb_to_linear(pixels)), sigma.numpy()))
    np.testing.assert_allclose(chw(out), expected, atol=1e-4, rtol=0)
    # and it is not the same as blurring the stored values
    plain = blur_image(image, sigma, BlurSettings(max_sigma=2.0)).pixels
    assert np.abs(plain - out).max() > 0.02


def test_linear_light_with_alpha(rng):
    pixels = rng.random((HEIGHT, WIDTH, 4)).astype(np.float32)
    pixels[..., 3] = np.where(rng.random((HEIGHT, WIDTH)) < 0.3, 0.0, pixels[..., 3])
    sigma = torch.from_numpy(rng.uniform(0.5, 2.0, (HEIGHT, WIDTH))).float()
    out = blur_image(
        make_image(pixels, "RGBA"), sigma, BlurSettings(max_sigma=2.0, linear=True)
    ).pixels
    alpha = pixels[..., 3:].astype(np.float64)
    blurred = loop_blur(
        chw(np.concatenate([srgb_to_linear(pixels[..., :3]) * alpha, alpha], axis=2)), sigma.numpy()
    )
    visible = blurred[3] > 1e-3
    expected = linear_to_srgb(blurred[:3] / np.where(visible, blurred[3], 1.0))
    np.testing.assert_allclose(chw(out[..., :3])[:, visible], expected[:, visible], atol=2e-4)


def test_zero_sigma_map_is_the_identity(rng):
    pixels = rng.random((HEIGHT, WIDTH, 4)).astype(np.float32)
    pixels[..., 3] = np.maximum(pixels[..., 3], 0.05)
    out = blur_image(
        make_image(pixels, "RGBA"), torch.zeros(HEIGHT, WIDTH), BlurSettings(max_sigma=0.0)
    )
    np.testing.assert_allclose(out.pixels, pixels, atol=1e-6)


@pytest.mark.parametrize("mode", ["L", "RGB", "LA", "RGBA"])
def test_blur_image_of_8_bit_samples_is_the_float_blur_rounded(rng, mode, device):
    channels = len(mode)
    samples = rng.integers(0, 256, (HEIGHT, WIDTH, channels), dtype=np.uint8)
    if mode.endswith("A"):
        samples[..., -1][rng.random((HEIGHT, WIDTH)) < 0.3] = 0  # transparent pixels too
    floats = samples.astype(np.float32) / np.float32(255)
    settings = BlurSettings(max_sigma=2.5, device=device)
    sigma = torch.from_numpy(rng.uniform(0.0, 2.5, (HEIGHT, WIDTH))).float()
    as_samples = abio.Image(pixels=samples, mode=mode, bit_depth=8)
    from_samples = blur_image(as_samples, sigma, settings).pixels
    from_floats = blur_image(make_image(floats, mode), sigma, settings).pixels
    assert from_samples.dtype == np.uint8
    expected = np.rint(np.clip(from_floats, 0, 1) * np.float32(255)).astype(np.uint8)
    # Same float32 arithmetic on the same device: the same codes.
    np.testing.assert_array_equal(from_samples, expected)
    # And saved, it is what saving the float result gives.
    np.testing.assert_array_equal(from_samples, abio.quantise(from_floats, 8).astype(np.uint8))
