"""The fused CPU path (adaptiveblur.native.render.render_samples) against the torch path.

``render_samples`` turns decoded integer samples into integer samples in one native call
per band of rows; it must give the samples of ``blur_image`` with the native backend
(``method="exact"``, ``device="cpu"``), byte for byte, followed by the rounding saving
does (:func:`adaptiveblur.io.quantise`). Beside that: accuracy against the float64
references of ``tests/oracle.py``, independence from the band split and the thread
count, properties, errors and progress. Images are small and of odd sizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from adaptiveblur import io as abio
from adaptiveblur.native import library
from adaptiveblur.native.render import render_samples, unavailable_reason
from adaptiveblur.render import blur_image, sigma_map_for
from adaptiveblur.settings import BlurSettings
from tests.oracle import loop_blur, luma, scipy_blur

UNAVAILABLE = unavailable_reason()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"native kernel: {UNAVAILABLE}")

CHANNEL_COUNT = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
MODES = list(CHANNEL_COUNT)
# Odd sizes: single pixels, rows and columns, tall narrow ones (done transposed: width
# below the SIMD lanes, height at least that) and their wide counterparts.
SHAPES = [(1, 1), (7, 13), (1, 17), (17, 1), (40, 3), (3, 40), (23, 31)]
LARGE = (257, 131)

# Settings combinations of the byte-equality tests (max_sigma and truncate drawn per test).
COMBOS = {
    "default": {},
    "linear": {"linear": True},
    "curve": {"gamma": 1.7, "invert": True, "min_sigma": 0.4},
    "mean": {"channel": "mean"},
    "green": {"channel": "green"},
    "alpha": {"channel": "alpha"},
    "replicate": {"border": "replicate"},
    "constant": {"border": "constant"},
}
COMBO_CASES = [
    pytest.param(mode, name, id=f"{mode}-{name}")
    for mode in MODES
    for name in COMBOS
    if name != "alpha" or abio.has_alpha(mode)
]


# ---- helpers ----------------------------------------------------------------------------


def settings_of(**options: Any) -> BlurSettings:
    """Settings for both paths: the torch path on the CPU with the native exact backend."""
    options.setdefault("max_sigma", 2.0)
    settings = BlurSettings(device="cpu", method="exact", backend="native", **options)
    settings.check()
    return settings


def random_image(
    rng: np.random.Generator, height: int, width: int, mode: str, bit_depth: int
) -> abio.Image:
    """Random integer samples; alpha images get fully transparent and opaque pixels, and
    a transparent block (where the blurred alpha is 0 and the colour is kept)."""
    top = abio.MAX_VALUE[bit_depth]
    samples = rng.integers(0, top + 1, (height, width, CHANNEL_COUNT[mode]))
    if abio.has_alpha(mode):
        alpha = samples[..., -1]
        pick = rng.random((height, width))
        alpha[pick < 0.25] = 0
        alpha[pick > 0.75] = top
        alpha[: height // 2, : width // 2] = 0
    return abio.Image(
        pixels=samples.astype(abio.SAMPLE_TYPES[bit_depth]), mode=mode, bit_depth=bit_depth
    )


def random_settings(rng: np.random.Generator, **options: Any) -> BlurSettings:
    options.setdefault("max_sigma", float(rng.uniform(0.5, 4.0)))
    options.setdefault("truncate", float(rng.choice([2.0, 2.5, 3.0])))
    return settings_of(**options)


def torch_samples(
    image: abio.Image, sigma: torch.Tensor | None, settings: BlurSettings, bit_depth: int
) -> np.ndarray:
    """What the torch path saves: ``blur_image``'s uint8 samples, or its float pixels
    (16-bit input) rounded to ``bit_depth`` by ``quantise``."""
    out = blur_image(image, sigma, settings)
    if image.bit_depth == 8:
        assert bit_depth == 8, "8-bit input gives 8-bit samples on the torch path"
        assert out.pixels.dtype == np.uint8
        return out.pixels
    assert out.pixels.dtype == np.float32
    return abio.quantise(out.pixels, bit_depth).astype(abio.SAMPLE_TYPES[bit_depth])


def fused(image: abio.Image, settings: BlurSettings, bit_depth: int, **options: Any) -> np.ndarray:
    samples, sigma = render_samples(image, settings, bit_depth=bit_depth, **options)
    assert sigma is None
    return samples


def assert_same_samples(got: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """Byte equality; on failure, the first differing (y, x, c) with both values."""
    assert got.dtype == expected.dtype, what
    assert got.shape == expected.shape, what
    if not np.array_equal(got, expected):
        where = np.argwhere(got != expected)
        y, x, c = (int(i) for i in where[0])
        raise AssertionError(
            f"{what}: {len(where)} samples differ; first at (y={y}, x={x}, c={c}): "
            f"fused {int(got[y, x, c])}, torch {int(expected[y, x, c])}"
        )


def check_against_torch(
    image: abio.Image, settings: BlurSettings, sigma: torch.Tensor | None = None, **options: Any
) -> None:
    """Every output depth the torch path has for ``image``: 8-bit in, 8 out; 16-bit in, 16 and 8."""
    for bit_depth in (8,) if image.bit_depth == 8 else (16, 8):
        shape = image.pixels.shape[:2]
        what = f"{image.mode} {image.bit_depth}-bit {shape} -> {bit_depth}-bit, {settings}"
        got = fused(image, settings, bit_depth, **options)
        assert_same_samples(got, torch_samples(image, sigma, settings, bit_depth), what)


# ---- 1. byte equality with the torch path -----------------------------------------------


@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize(("mode", "combo"), COMBO_CASES)
def test_equals_the_torch_path(rng, mode, combo, bit_depth):
    for height, width in SHAPES:
        image = random_image(rng, height, width, mode, bit_depth)
        check_against_torch(image, random_settings(rng, **COMBOS[combo]))


@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize(("mode", "combo"), COMBO_CASES)
def test_radius_larger_than_the_image_equals_the_torch_path(rng, mode, combo, bit_depth):
    """max_sigma 9.7 on 7 x 13: windows of radius up to 29 fold over the image many times."""
    image = random_image(rng, 7, 13, mode, bit_depth)
    check_against_torch(image, settings_of(max_sigma=9.7, **COMBOS[combo]))


@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("combo", ["default", "linear"])
def test_larger_odd_image_equals_the_torch_path(rng, mode, bit_depth, combo):
    image = random_image(rng, *LARGE, mode, bit_depth)
    check_against_torch(image, random_settings(rng, max_sigma=3.0, **COMBOS[combo]))


@pytest.mark.parametrize("case", range(4))
def test_random_settings_equal_the_torch_path(rng, case):
    """Everything drawn at once: mode, depths, size, mapping, truncate, border, driver."""
    for _ in range(15):
        mode = str(rng.choice(MODES))
        bit_depth = int(rng.choice([8, 16]))
        height, width = (int(rng.choice([1, 2, 15, 16, 17, rng.integers(1, 48)])) for _ in "hw")
        channels = ["luminance", "mean", "red", "green", "blue"]
        channels += ["alpha"] if abio.has_alpha(mode) else []
        max_sigma = float(rng.choice([0.3, rng.uniform(0.0, 5.0), 9.7]))
        settings = settings_of(
            max_sigma=max_sigma,
            min_sigma=float(rng.choice([0.0, max_sigma, rng.uniform(0.0, max_sigma)])),
            gamma=float(rng.choice([1.0, rng.uniform(0.2, 4.0)])),
            invert=bool(rng.integers(2)),
            channel=str(rng.choice(channels)),
            truncate=float(rng.choice([1.0, 3.0, rng.uniform(0.3, 5.0)])),
            border=str(rng.choice(["reflect", "replicate", "constant"])),
            linear=bool(rng.integers(2)),
        )
        image = random_image(rng, height, width, mode, bit_depth)
        if rng.integers(2):
            driver_mode = "LA" if settings.channel == "alpha" else str(rng.choice(MODES))
            driver = random_image(rng, height, width, driver_mode, int(rng.choice([8, 16])))
            check_against_torch(image, settings, sigma_map_for(driver, settings), driver=driver)
        else:
            check_against_torch(image, settings)


def test_tiled_torch_path_without_narrow_tiles_equals(rng):
    """A small budget tiles the torch path (32 x 32 tiles here); none is narrow."""
    image = random_image(rng, 64, 96, "RGBA", 16)
    check_against_torch(image, settings_of(max_sigma=4.0, max_memory=1 << 12))


def test_tiled_torch_path_with_narrow_tiles_equals(rng):
    image = random_image(rng, 95, 47, "RGBA", 16)
    check_against_torch(image, settings_of(max_sigma=4.0, max_memory=1 << 12))


def test_small_budget_fused_path_equals_the_untiled_torch_path(rng):
    """The tiled torch path joins a narrow last column of tiles to the one before it, so
    both paths give the untiled samples."""
    image = random_image(rng, 95, 47, "RGBA", 16)
    got = fused(image, settings_of(max_sigma=4.0, max_memory=1 << 12), 16)
    assert_same_samples(got, torch_samples(image, None, settings_of(max_sigma=4.0), 16))


def test_the_transposed_shapes_are_transposed():
    """The shapes above do cover the transposed branch (width < lanes <= height)."""
    kernels = library.kernels()
    assert not isinstance(kernels, str)
    lanes = kernels.lanes["float32"]
    transposed = [(h, w) for h, w in SHAPES if w < lanes <= h]
    assert (40, 3) in transposed and (17, 1) in transposed
    assert (3, 40) not in transposed and (7, 13) not in transposed


# ---- 2. a separate driver and a given sigma map -----------------------------------------


@pytest.mark.parametrize(
    ("mode", "bit_depth", "map_mode", "map_depth"),
    [("RGB", 8, "L", 8), ("RGBA", 8, "L", 16), ("LA", 16, "RGB", 8), ("L", 8, "RGBA", 16)],
)
@pytest.mark.parametrize("combo", ["default", "curve", "mean", "linear"])
def test_map_driver_equals_the_torch_path(rng, mode, bit_depth, map_mode, map_depth, combo):
    for height, width in [(7, 13), (40, 3), (3, 40), (29, 37)]:
        image = random_image(rng, height, width, mode, bit_depth)
        driver = random_image(rng, height, width, map_mode, map_depth)
        settings = random_settings(rng, **COMBOS[combo])
        sigma = sigma_map_for(driver, settings)
        check_against_torch(image, settings, sigma, driver=driver)
        # The map, not the image, drives the blur: the image's own sigma gives other samples.
        if bit_depth == 8 and height * width > 100:
            own = torch_samples(image, None, settings, 8)
            assert not np.array_equal(fused(image, settings, 8, driver=driver), own)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bit_depth", [8, 16])
def test_sigma_map_equals_the_torch_path(rng, mode, bit_depth):
    for height, width in SHAPES:
        image = random_image(rng, height, width, mode, bit_depth)
        settings = random_settings(rng)
        sigma = rng.uniform(0.0, settings.max_sigma, (height, width)).astype(np.float32)
        sigma[rng.random((height, width)) < 0.2] = 0.0
        check_against_torch(image, settings, torch.from_numpy(sigma), sigma_map=sigma)


def test_sigma_map_may_be_strided(rng):
    image = random_image(rng, 23, 31, "RGB", 8)
    settings = random_settings(rng)
    wide = rng.uniform(0.0, settings.max_sigma, (31, 46)).astype(np.float32)
    sigma = wide.T[::2]  # (23, 31), not contiguous
    assert not sigma.flags.c_contiguous
    expected = torch_samples(image, torch.from_numpy(np.ascontiguousarray(sigma)), settings, 8)
    assert_same_samples(fused(image, settings, 8, sigma_map=sigma), expected)


# ---- 3. keep_sigma ----------------------------------------------------------------------


@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize(("mode", "combo"), COMBO_CASES)
def test_kept_sigma_is_the_sigma_map(rng, mode, combo, bit_depth):
    for height, width in SHAPES:
        image = random_image(rng, height, width, mode, bit_depth)
        settings = random_settings(rng, **COMBOS[combo])
        samples, sigma = render_samples(image, settings, bit_depth=bit_depth, keep_sigma=True)
        expected = sigma_map_for(image, settings).numpy()
        assert sigma is not None
        assert sigma.dtype == np.float32
        assert sigma.shape == (height, width)
        np.testing.assert_array_equal(sigma, expected)
        again, none = render_samples(image, settings, bit_depth=bit_depth)
        assert none is None
        assert np.array_equal(again, samples)


@pytest.mark.parametrize(("map_mode", "map_depth"), [("L", 8), ("L", 16), ("RGBA", 16)])
def test_kept_sigma_of_a_driver_is_its_sigma_map(rng, map_mode, map_depth):
    for height, width in [(7, 13), (40, 3), (17, 1)]:
        image = random_image(rng, height, width, "RGB", 8)
        driver = random_image(rng, height, width, map_mode, map_depth)
        settings = random_settings(rng, gamma=0.6, min_sigma=0.3)
        _, sigma = render_samples(image, settings, bit_depth=8, driver=driver, keep_sigma=True)
        assert sigma is not None
        np.testing.assert_array_equal(sigma, sigma_map_for(driver, settings).numpy())
        assert not np.array_equal(sigma, sigma_map_for(image, settings).numpy())


def test_kept_sigma_of_a_given_map_is_that_map(rng):
    image = random_image(rng, 40, 3, "LA", 16)
    given = rng.uniform(0.0, 3.0, (40, 3)).astype(np.float32)
    _, sigma = render_samples(
        image, settings_of(max_sigma=3.0), bit_depth=16, sigma_map=given, keep_sigma=True
    )
    assert sigma is not None
    np.testing.assert_array_equal(sigma, given)


# ---- 4. independence from the band split and the thread count ---------------------------


def bands_of(
    image: abio.Image, settings: BlurSettings, **options: Any
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(samples, sigma, number of bands)`` of one fused run."""
    calls: list[tuple[int, int]] = []
    samples, sigma = render_samples(
        image,
        settings,
        bit_depth=image.bit_depth,
        keep_sigma=True,
        progress=lambda done, total: calls.append((done, total)),
        **options,
    )
    assert sigma is not None
    return samples, sigma, calls[-1][1]


@pytest.mark.parametrize(("mode", "bit_depth"), [("RGBA", 8), ("RGB", 16), ("L", 8)])
@pytest.mark.parametrize(("height", "width"), [LARGE, (61, 5)])
def test_band_split_does_not_change_the_result(rng, mode, bit_depth, height, width):
    image = random_image(rng, height, width, mode, bit_depth)
    options = {"max_sigma": float(rng.uniform(1.0, 3.0)), "linear": bool(rng.integers(2))}
    try:
        library.set_worker_count(2)  # else many workers already cut the rows into short bands
        whole, whole_sigma, whole_bands = bands_of(image, settings_of(**options))
        tiny, tiny_sigma, tiny_bands = bands_of(image, settings_of(max_memory=1 << 12, **options))
    finally:
        library.set_worker_count(None)
    if height > 100:  # (61, 5) is done transposed: 5 rows, one band each either way
        assert tiny_bands > whole_bands  # the budget did split the rows differently
    assert np.array_equal(tiny, whole)
    assert np.array_equal(tiny_sigma, whole_sigma)
    sigma = rng.uniform(0.0, 3.0, (height, width)).astype(np.float32)
    assert np.array_equal(
        bands_of(image, settings_of(max_memory=1 << 12, **options), sigma_map=sigma)[0],
        bands_of(image, settings_of(**options), sigma_map=sigma)[0],
    )


@pytest.mark.parametrize(("mode", "bit_depth"), [("RGBA", 16), ("LA", 8)])
def test_thread_count_does_not_change_the_result(rng, mode, bit_depth):
    image = random_image(rng, *LARGE, mode, bit_depth)
    settings = settings_of(max_sigma=float(rng.uniform(1.0, 3.0)))
    try:
        library.set_worker_count(1)
        serial, serial_sigma, serial_bands = bands_of(image, settings)
        library.set_worker_count(3)
        parallel, parallel_sigma, parallel_bands = bands_of(image, settings)
    finally:
        library.set_worker_count(None)
    assert parallel_bands > serial_bands  # more workers, more (shorter) bands
    assert np.array_equal(serial, parallel)
    assert np.array_equal(serial_sigma, parallel_sigma)


# ---- 5. accuracy against the float64 references -----------------------------------------


@pytest.mark.parametrize("border", ["reflect", "replicate", "constant"])
def test_luminance_driven_blur_is_within_one_lsb_of_the_loop(rng, border):
    height, width, max_sigma, truncate = 21, 27, 2.5, 3.0
    image = random_image(rng, height, width, "RGB", 8)
    values = image.pixels.astype(np.float64) / 255.0
    sigma = max_sigma * luma(values)
    expected = loop_blur(values.transpose(2, 0, 1), sigma, truncate=truncate, border=border)
    reference = np.rint(255.0 * expected).transpose(1, 2, 0)
    got = fused(image, settings_of(max_sigma=max_sigma, truncate=truncate, border=border), 8)
    error = np.abs(got.astype(np.float64) - reference)
    assert error.max() <= 1, f"{error.max()} LSB at {np.unravel_index(error.argmax(), error.shape)}"
    assert np.abs(got.astype(np.float64) - image.pixels).max() > 10  # it did blur


@pytest.mark.parametrize(("height", "width"), [(7, 13), (40, 3), (33, 47)])
def test_constant_sigma_map_is_within_one_lsb_of_scipy(rng, height, width):
    image = random_image(rng, height, width, "RGB", 8)
    value = np.float32(rng.uniform(0.5, 4.0))
    sigma = np.full((height, width), value, dtype=np.float32)
    got = fused(image, settings_of(max_sigma=4.0, truncate=3.0), 8, sigma_map=sigma)
    planes = image.pixels.astype(np.float64).transpose(2, 0, 1) / 255.0
    expected = np.rint(255.0 * scipy_blur(planes, float(value), 3.0, "reflect")).transpose(1, 2, 0)
    assert np.abs(got.astype(np.float64) - expected).max() <= 1


# ---- 6. properties ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("linear", [False, True])
def test_zero_sigma_keeps_8_bit_samples(rng, mode, linear):
    for height, width in SHAPES:
        image = random_image(rng, height, width, mode, 8)
        got = fused(image, settings_of(max_sigma=0.0, linear=linear), 8)
        assert_same_samples(got, image.pixels, f"{mode} {height}x{width}")


@pytest.mark.parametrize("mode", MODES)
def test_zero_sigma_keeps_16_bit_samples(rng, mode):
    image = random_image(rng, 23, 31, mode, 16)
    settings = settings_of(max_sigma=0.0)
    assert_same_samples(fused(image, settings, 16), image.pixels)
    eight = abio.quantise(image.pixels.astype(np.float32) / np.float32(65535), 8).astype(np.uint8)
    assert_same_samples(fused(image, settings, 8), eight)


def test_transparent_pixels_keep_their_colour(rng):
    """Where the whole window is transparent, the blurred alpha is 0 and the colour stays."""
    height, width, max_sigma, truncate = 31, 37, 2.0, 3.0  # radius at most 6
    image = random_image(rng, height, width, "RGBA", 8)
    image.pixels[..., 3] = rng.integers(1, 256, (height, width))
    image.pixels[5:26, 4:33, 3] = 0  # a transparent block, 21 x 29
    sigma = np.full((height, width), max_sigma, dtype=np.float32)
    got = fused(image, settings_of(max_sigma=max_sigma, truncate=truncate), 8, sigma_map=sigma)
    inside = (slice(11, 20), slice(10, 27))  # farther than the radius from any opaque pixel
    np.testing.assert_array_equal(got[inside], image.pixels[inside])
    assert (got[0, 0, 3] > 0) and not np.array_equal(got[:3, :3], image.pixels[:3, :3])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("border", ["reflect", "replicate"])
def test_constant_image_stays_constant(rng, mode, bit_depth, border):
    height, width = 29, 35
    top = abio.MAX_VALUE[bit_depth]
    value = rng.integers(0, top + 1, CHANNEL_COUNT[mode])
    if abio.has_alpha(mode):
        value[-1] = rng.integers(1, top + 1)
    pixels = np.broadcast_to(value, (height, width, len(value))).astype(
        abio.SAMPLE_TYPES[bit_depth]
    )
    image = abio.Image(pixels=pixels, mode=mode, bit_depth=bit_depth)
    sigma = rng.uniform(0.0, 6.0, (height, width)).astype(np.float32)  # radii wider than the image
    got = fused(image, settings_of(max_sigma=6.0, border=border), bit_depth, sigma_map=sigma)
    assert_same_samples(got, image.pixels, f"{mode} {bit_depth}-bit {value}")


# ---- 7. errors --------------------------------------------------------------------------


def test_float_pixels_are_refused(rng):
    pixels = rng.random((7, 13, 3)).astype(np.float32)
    image = abio.Image(pixels=pixels, mode="RGB", bit_depth=8)
    with pytest.raises(ValueError, match="samples"):
        render_samples(image, settings_of(), bit_depth=8)
    driver = abio.Image(pixels=pixels[..., :1].copy(), mode="L", bit_depth=8)
    with pytest.raises(ValueError, match="samples"):
        render_samples(
            random_image(rng, 7, 13, "RGB", 8), settings_of(), bit_depth=8, driver=driver
        )


@pytest.mark.parametrize("size", [(7, 12), (8, 13), (13, 7)])
def test_a_driver_of_another_size_is_refused(rng, size):
    image = random_image(rng, 7, 13, "RGB", 8)
    driver = random_image(rng, *size, "L", 8)
    with pytest.raises(ValueError, match="size"):
        render_samples(image, settings_of(), bit_depth=8, driver=driver)
    sigma = np.ones(size, dtype=np.float32)
    with pytest.raises(ValueError, match="size"):
        render_samples(image, settings_of(), bit_depth=8, sigma_map=sigma)


# ---- 8. progress ------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(97, 41), (61, 5), (1, 1)])
def test_progress_counts_every_band(rng, height, width):
    image = random_image(rng, height, width, "RGB", 8)
    calls: list[tuple[int, int]] = []
    settings = settings_of(max_sigma=1.0, max_memory=1 << 12)
    render_samples(image, settings, bit_depth=8, progress=lambda *call: calls.append(call))
    assert calls, "progress was never called"
    total = calls[-1][1]
    assert calls == [(done, total) for done in range(1, total + 1)]
    if height > 1:
        assert total > 1
