"""Depth of field (``adaptiveblur.focus``, ``--focus``, ``--feather``, ``--preview``): the focal
band's mapping against a scalar loop, sharp pixels unchanged, blurred ones against the float64
oracle, feathering against scipy, the automatic focus, the preview's panels, and bad values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from adaptiveblur import io as abio
from adaptiveblur.errors import EXIT_OUTPUT, EXIT_USAGE, InvalidParameterError
from adaptiveblur.focus import FOCUS_REGION, feathered, focal_sigma, focus_at, sigma_for
from adaptiveblur.preview import COLOURS, PANEL, preview_image
from adaptiveblur.settings import BlurSettings
from tests.helpers import assert_clean_error, cli, files_under, pixels_of
from tests.oracle import loop_blur

scipy_ndimage = pytest.importorskip("scipy.ndimage")

ROUTES = {"native": [], "torch": ["--backend", "reference", "--device", "cpu"]}


def scalar_sigma(v, focus, width, near, far, low_sigma, gamma, invert):
    """The focal band's sigma of one value, written out as the README states it."""
    if invert:
        v, focus = 1.0 - v, 1.0 - focus
    below, above = focus - width / 2, focus + width / 2
    longest = max(below, 1.0 - above)  # the same rate on both sides
    if v < below:
        return low_sigma + (near - low_sigma) * ((below - v) / longest) ** gamma
    if v > above:
        return low_sigma + (far - low_sigma) * ((v - above) / longest) ** gamma
    return low_sigma


def save(path: Path, values: np.ndarray, mode: str) -> Path:
    PILImage.fromarray(values[..., 0] if mode == "L" else values, mode).save(path)
    return path


@pytest.mark.parametrize("trial", range(6))
def test_the_focal_mapping_matches_a_scalar_loop(rng, trial):
    values = rng.random((7, 13)).astype(np.float32)
    values[0, :4] = [0.0, 1.0, 0.5, 0.25]
    focus = float(rng.random())
    width = float(rng.choice([0.0, rng.random() * 0.5, 1.5]))
    low_sigma = float(rng.choice([0.0, 0.5]))
    near, far = (float(low_sigma + rng.random() * 6) for _ in range(2))
    top = max(near, far)
    gamma = float(rng.choice([1.0, 0.5, 2.2]))
    invert = bool(trial % 2)
    settings = BlurSettings(
        max_sigma=top,
        min_sigma=low_sigma,
        gamma=gamma,
        invert=invert,
        focus=focus,
        focus_range=width,
        near_sigma=near,
        far_sigma=far,
    )
    settings.check()
    got = focal_sigma(values, focus, settings)
    expected = np.vectorize(
        lambda v: scalar_sigma(float(v), focus, width, near, far, low_sigma, gamma, invert)
    )(values)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == values.shape


def test_near_and_far_sigmas_apply_on_their_own_sides():
    values = np.array([[0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0]], dtype=np.float32)
    settings = BlurSettings(max_sigma=6, focus=0.4, focus_range=0.2, near_sigma=2, far_sigma=6)
    got = focal_sigma(values, 0.4, settings)
    # Band [0.3, 0.5]; the far side is the longer (0.5): both sides rise 1/0.5 per unit of
    # value, the near side towards 2, the far side towards 6, which it reaches at 1.
    np.testing.assert_allclose(got[0], [1.2, 0.8, 0.4, 0, 0, 1.2, 3.6, 6.0], atol=1e-6)
    inverted = focal_sigma(values, 0.4, BlurSettings(**{**settings.__dict__, "invert": True}))
    # Now the larger values are near: band [0.3, 0.5] still, v 1.0 is 0.5 into the near side.
    np.testing.assert_allclose(inverted[0], [3.6, 2.4, 1.2, 0, 0, 0.4, 1.2, 2.0], atol=1e-6)


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_pixels_in_the_band_are_unchanged_and_the_rest_is_the_exact_blur(
    capsys, work, rng, route, mode
):
    height, width = 17, 23
    image = rng.integers(0, 256, (height, width, len(mode)), dtype=np.uint8)
    if mode == "RGBA":
        image[..., 3] = 255  # opaque: the premultiplied blur is then the plain one
    depth = rng.integers(0, 256, (height, width, 1), dtype=np.uint8)
    depth[:5, :7] = 130  # a region inside the band
    save(work / "in.png", image, mode)
    save(work / "depth.png", depth, "L")
    code, _, err = cli(
        capsys,
        *["run", "in.png", "out.png", "--map", "depth.png", "--max-sigma", "3"],
        *["--focus", "0.5", "--focus-range", "0.1", "--near-sigma", "1.5"],
        *["--save-sigma", "sigma.tiff", "--quiet", *ROUTES[route]],
    )
    assert code == 0, err
    out = pixels_of(work / "out.png").reshape(image.shape)
    v = depth[..., 0] / 255.0
    sigma = np.vectorize(lambda x: scalar_sigma(x, 0.5, 0.1, 1.5, 3.0, 0.0, 1.0, False))(v)
    sharp = sigma == 0
    assert sharp[:5, :7].all() and (~sharp).sum() > 100
    assert np.array_equal(out[sharp], image[sharp])  # byte-equal
    expected = loop_blur(image.transpose(2, 0, 1) / 255.0, sigma).transpose(1, 2, 0)
    difference = np.abs(out.astype(int) - np.round(expected * 255).astype(int))
    assert difference.max() <= 1 and (difference == 0).mean() > 0.98


def test_feathering_equals_scipy_on_odd_sizes(rng):
    cases = [((1, 1), 2.0), ((7, 13), 1.3), ((5, 4), 9.0), ((61, 37), 2.5), ((3, 4), 700.0)]
    for shape, sigma in cases:
        values = rng.random(shape).astype(np.float32)
        expected = scipy_ndimage.gaussian_filter(
            values.astype(np.float64), sigma, mode="mirror", truncate=3.0
        )
        np.testing.assert_allclose(feathered(values, sigma, 3.0), expected, atol=1e-6)


def test_feathering_smooths_a_hard_mask_edge_before_the_mapping(rng):
    mask = np.zeros((9, 40, 1), dtype=np.uint8)
    mask[:, 20:] = 255
    driver = abio.Image(pixels=mask, mode="L", bit_depth=8)
    settings = BlurSettings(max_sigma=5, feather=3)
    got = sigma_for(driver, settings)
    smooth = scipy_ndimage.gaussian_filter(mask[..., 0] / 255.0, 3, mode="mirror", truncate=3)
    np.testing.assert_allclose(got, 5 * smooth, atol=2e-5)
    assert 0 < got[0, 19] < got[0, 20] < 5  # no step at the edge


def test_auto_focus_is_the_median_around_the_point(rng):
    values = rng.random((120, 200)).astype(np.float32)
    values[40:80, 20:60] = 0.3  # a subject at x 20-60, y 40-80
    assert focus_at(values, "40,60") == pytest.approx(0.3)
    assert focus_at(values, "20%,50%") == pytest.approx(0.3)
    half = int(FOCUS_REGION * 120) // 2
    centre = values[60 - half : 60 + half + 1, 100 - half : 100 + half + 1]
    assert focus_at(values, None) == pytest.approx(float(np.median(centre)))
    with pytest.raises(InvalidParameterError, match="outside"):
        focus_at(values, "250,10")


def test_auto_focus_keeps_the_subject_sharp(capsys, work, rng):
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    depth = np.full((30, 40, 1), 220, dtype=np.uint8)
    depth[10:20, 5:15] = 60  # the subject, near; the rest far
    save(work / "in.png", image, "RGB")
    save(work / "depth.png", depth, "L")
    code, _, err = cli(
        capsys,
        *["run", "in.png", "out.png", "--map", "depth.png", "--max-sigma", "4"],
        *["--focus", "auto", "--focus-at", "10,15", "--quiet"],
    )
    assert code == 0, err
    out = pixels_of(work / "out.png").reshape(image.shape)
    assert np.array_equal(out[10:20, 5:15], image[10:20, 5:15])
    assert not np.array_equal(out[:8], image[:8])


def test_the_preview_holds_the_three_panels(rng):
    height, width = 30, 40  # enlarged 4 times (nearest), so every panel pixel is exact
    before = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    after = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    sigma = (rng.random((height, width)) * 5).astype(np.float32)
    picture = preview_image(
        abio.Image(pixels=before, mode="RGB", bit_depth=8),
        sigma,
        abio.Image(pixels=after, mode="RGB", bit_depth=8),
        max_sigma=5,
    )
    assert picture.mode == "RGB" and picture.bit_depth == 8
    pixels = picture.pixels
    factor = 4
    panels = []
    expected_sigma = COLOURS[np.round(sigma / 5 * 255).astype(int)]
    for content in (before, expected_sigma, after):
        enlarged = np.repeat(np.repeat(content, factor, 0), factor, 1)
        panels.append(_find(pixels, enlarged))
    assert panels[0][1] < panels[1][1] < panels[2][1]  # side by side, left to right
    assert len({top for top, _ in panels}) == 1
    assert pixels.shape[1] < 3 * width * factor + 100


def test_a_large_image_is_shrunk_to_the_panel_size(rng):
    image = abio.Image(
        pixels=rng.integers(0, 256, (700, 1500, 1), dtype=np.uint8), mode="L", bit_depth=8
    )
    picture = preview_image(image, np.zeros((700, 1500), np.float32), image, max_sigma=2)
    height, width = picture.pixels.shape[:2]
    assert 3 * PANEL < width < 3 * PANEL + 100
    assert round(700 * PANEL / 1500) < height < round(700 * PANEL / 1500) + 120


def test_the_colour_map_rises_evenly_in_lightness():
    srgb = COLOURS / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    lms = linear @ np.array(
        [
            [0.4122214708, 0.2119034982, 0.0883024619],
            [0.5363325363, 0.6806995451, 0.2817188376],
            [0.0514459929, 0.1073969566, 0.6299787005],
        ]
    )
    lightness = np.cbrt(lms) @ np.array([0.2104542553, 0.7936177850, -0.0040720468])
    # Oklab lightness of the 8-bit colours: never falling, and on an even ramp to within
    # the rounding to 8 bits.
    assert np.diff(lightness).min() >= 0
    ramp = np.linspace(lightness[0], lightness[-1], len(COLOURS))
    assert np.abs(lightness - ramp).max() < 0.005
    assert lightness[-1] - lightness[0] > 0.6
    assert len({tuple(colour) for colour in COLOURS}) > 0.97 * len(COLOURS)


def _find(pixels: np.ndarray, block: np.ndarray) -> tuple[int, int]:
    """Where ``block`` sits in ``pixels`` (searched at its first row's first pixel)."""
    height, width = block.shape[:2]
    candidates = np.argwhere(np.all(pixels == block[0, 0], axis=-1))
    for top, left in candidates:
        window = pixels[top : top + height, left : left + width]
        if window.shape == block.shape and np.array_equal(window, block):
            return int(top), int(left)
    raise AssertionError("panel not found")


def test_run_writes_a_preview(capsys, work, rng):
    save(work / "in.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), "RGB")
    code, _, err = cli(
        capsys, "run", "in.png", "out.png", "--max-sigma", "2", "--preview", "p.jpg", "--quiet"
    )
    assert code == 0, err
    with PILImage.open(work / "p.jpg") as picture:
        assert picture.format == "JPEG" and picture.mode == "RGB"
        assert picture.width > 3 * 30


def test_batch_writes_previews_of_the_files_it_blurs(capsys, work, rng):
    for name in ("a.png", "sub/b.jpg"):
        (work / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        save(work / "in" / name, rng.integers(0, 256, (12, 15, 3), dtype=np.uint8), "RGB")
    args = ["batch", "in", "out", "-r", "--max-sigma", "2", "--quiet", "--preview-dir", "prev"]
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    assert files_under(work / "prev") == {"a.png.png", "sub/b.jpg.png"}
    save(work / "in" / "sub" / "a.png.png", np.zeros((4, 5, 3), np.uint8), "RGB")
    before = {name: (work / "in" / name).read_bytes() for name in files_under(work / "in")}
    refusals = [
        (["in", "out", "--preview-dir", "out"], "folder of their own"),
        (["in", "o2", "--preview-dir", "in"], "folder of their own"),
        (["in", "o3", "-r", "--preview-dir", "in/sub"], "would replace"),  # in/sub/a.png.png
    ]
    for args, fragment in refusals:
        code, out, err = cli(capsys, "batch", *args, "--max-sigma", "2")
        assert_clean_error(code, out, err, EXIT_USAGE, fragment)
    assert {n: (work / "in" / n).read_bytes() for n in files_under(work / "in")} == before
    assert not (work / "o2").exists() and not (work / "o3").exists()


def test_changing_the_focus_redoes_a_batch(capsys, work, rng):
    (work / "in").mkdir()
    save(work / "in" / "a.png", rng.integers(0, 256, (9, 11, 3), dtype=np.uint8), "RGB")
    base = ["batch", "in", "out", "--max-sigma", "3", "--quiet", "--report", "r.json"]
    assert cli(capsys, *base)[0] == 0
    assert cli(capsys, *base, "--focus", "0.4")[0] == 0
    statuses = [entry["status"] for entry in json.loads((work / "r.json").read_text())["files"]]
    assert statuses == ["done"]
    assert cli(capsys, *base, "--focus", "0.4")[0] == 0
    statuses = [entry["status"] for entry in json.loads((work / "r.json").read_text())["files"]]
    assert statuses == ["skipped"]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--focus", "1.5"], "[0, 1]"),
        (["--focus", "near"], "auto"),
        (["--focus", "0.5", "--focus-range", "-0.1"], "focus_range >= 0"),
        (["--focus-range", "0.2"], "needs a focus"),
        (["--near-sigma", "2"], "needs a focus"),
        (["--focus", "0.5", "--far-sigma", "9"], "far_sigma in"),
        (["--focus", "0.5", "--focus-at", "3,4"], "focus 'auto'"),
        (["--focus", "auto", "--focus-at", "3;4"], "X,Y"),
        (["--feather", "-1"], "feather >= 0"),
        (["--focus", "auto", "--focus-at", "500,4"], "outside"),
    ],
)
def test_bad_focus_values_are_usage_errors(capsys, work, rng, options, fragment):
    save(work / "in.png", rng.integers(0, 256, (8, 9, 3), dtype=np.uint8), "RGB")
    code, out, err = cli(capsys, "run", "in.png", "out.png", "--max-sigma", "4", *options)
    assert_clean_error(code, out, err, EXIT_USAGE, fragment)
    assert not (work / "out.png").exists()


def test_a_float_depth_map_is_focused_on_its_own_range(capsys, work, rng):
    image = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    metres = np.linspace(1.0, 9.0, 12, dtype=np.float32)[None, :].repeat(10, 0)
    save(work / "in.png", image, "RGB")
    PILImage.fromarray(metres, mode="F").save(work / "depth.tif")
    code, _, err = cli(
        capsys,
        *["run", "in.png", "out.png", "--map", "depth.tif", "--max-sigma", "2"],
        *["--focus", "0", "--focus-range", "0.2", "--quiet", "--save-sigma", "s.png"],
    )
    assert code == 0, err
    out = pixels_of(work / "out.png").reshape(image.shape)
    assert np.array_equal(out[:, :2], image[:, :2])  # the nearest metres: values 0 and 1/11
    assert not math.isclose(float(np.abs(out[:, 8:] - image[:, 8:].astype(int)).mean()), 0)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--preview", "-"], "cannot go to standard output"),
        (["--preview", "x.png", "--save-sigma", "x.png"], "--save-sigma and --preview"),
        (["--preview", "out.png"], "the output and --preview"),
        (["--preview", "in.png"], "preview over the input"),
    ],
)
def test_a_preview_in_the_wrong_place_is_refused(capsys, work, rng, options, fragment):
    save(work / "in.png", rng.integers(0, 256, (8, 9, 3), dtype=np.uint8), "RGB")
    before = (work / "in.png").read_bytes()
    code, out, err = cli(capsys, "run", "in.png", "out.png", "--max-sigma", "2", *options)
    assert_clean_error(code, out, err, EXIT_OUTPUT, fragment)
    assert not (work / "out.png").exists() and (work / "in.png").read_bytes() == before


def test_the_default_focus_point_spelled_out_redoes_nothing(capsys, work, rng):
    (work / "in").mkdir()
    save(work / "in" / "a.png", rng.integers(0, 256, (9, 11, 3), dtype=np.uint8), "RGB")
    base = ["batch", "in", "out", "--max-sigma", "3", "--focus", "auto", "--report", "r.json"]
    assert cli(capsys, *base)[0] == 0
    assert cli(capsys, *base, "--focus-at", "50%,50%")[0] == 0
    statuses = [entry["status"] for entry in json.loads((work / "r.json").read_text())["files"]]
    assert statuses == ["skipped"]
