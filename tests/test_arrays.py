"""``adaptiveblur.arrays``: arrays and PIL images give the pixels ``adaptiveblur run`` writes, and
the batch callable keeps each container and dtype."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from adaptiveblur import BlurBatch, blur_array, blur_pil
from adaptiveblur.errors import InvalidParameterError
from tests.helpers import cli, pixels_of
from tests.oracle import loop_blur

TORCH_ROUTE = ["--backend", "reference", "--device", "cpu"]


def saved(path, values, mode=None):
    PILImage.fromarray(values, mode).save(path)
    return str(path)


def run_pixels(capsys, work, values, *options, map_values=None):
    """What ``adaptiveblur run`` writes to PNG for ``values``."""
    saved(work / "in.png", values)
    extra = [] if map_values is None else ["--map", saved(work / "map.png", map_values)]
    code, _, err = cli(capsys, "run", "in.png", "out.png", "--quiet", *extra, *options)
    assert code == 0, err
    return pixels_of(work / "out.png")


@pytest.mark.parametrize("route", [[], TORCH_ROUTE])
@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((1, 1, 3), np.uint8), ((7, 13), np.uint8), ((17, 31, 4), np.uint8), ((12, 9), np.uint16)],
)
def test_an_array_gives_what_run_writes(capsys, work, rng, route, shape, dtype):
    top = np.iinfo(dtype).max
    values = rng.integers(0, top + 1, shape, dtype=dtype)
    expected = run_pixels(capsys, work, values, "--max-sigma", "3", *route)
    settings = {"max_sigma": 3}
    if route:
        settings |= {"backend": "reference", "device": "cpu"}
    got = blur_array(values, **settings)
    assert got.dtype == values.dtype and got.shape == values.shape
    assert np.array_equal(got, expected)


def test_a_map_array_and_a_focus(capsys, work, rng):
    values = rng.integers(0, 256, (15, 21, 3), dtype=np.uint8)
    depth = rng.integers(0, 256, (15, 21), dtype=np.uint8)
    options = ["--max-sigma", "4", "--focus", "0.5", "--focus-range", "0.2", "--gamma", "1.5"]
    expected = run_pixels(capsys, work, values, *options, map_values=depth)
    got = blur_array(values, depth, max_sigma=4, focus=0.5, focus_range=0.2, gamma=1.5)
    assert np.array_equal(got, expected)
    wide = rng.integers(0, 65536, (15, 21), dtype=np.uint16)  # a 16-bit gray image
    saved(work / "in16.png", wide)
    code, _, err = cli(capsys, "run", "in16.png", "o16.png", "--max-sigma", "2", "--quiet")
    assert code == 0, err
    assert np.array_equal(blur_array(wide, max_sigma=2), pixels_of(work / "o16.png"))


def test_a_float_array_is_the_exact_blur(rng):
    values = rng.random((9, 11, 3)).astype(np.float32)
    got = blur_array(values, max_sigma=2.5)
    luma = values @ np.array([0.2126, 0.7152, 0.0722])
    expected = loop_blur(values.transpose(2, 0, 1), 2.5 * luma).transpose(1, 2, 0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_the_batch_callable_keeps_containers_and_dtypes(rng):
    blur = BlurBatch(max_sigma=2)
    stacked = rng.integers(0, 256, (3, 8, 10, 3), dtype=np.uint8)
    out = blur({"image": stacked, "path": ["a", "b", "c"]})
    assert out["path"] == ["a", "b", "c"]
    assert out["image"].shape == stacked.shape and out["image"].dtype == np.uint8
    for number in range(3):
        assert np.array_equal(out["image"][number], blur_array(stacked[number], max_sigma=2))
    sizes = [(5, 7, 3), (9, 4, 3), (1, 1, 3)]
    ragged = np.empty(3, dtype=object)
    ragged[:] = [rng.integers(0, 256, size, dtype=np.uint8) for size in sizes]
    out = blur({"image": ragged})["image"]
    assert out.dtype == object and [item.shape for item in out] == sizes
    assert all(
        np.array_equal(a, blur_array(b, max_sigma=2)) for a, b in zip(out, ragged, strict=True)
    )
    pictures = [PILImage.fromarray(item) for item in ragged]
    out = blur({"image": pictures})["image"]
    assert isinstance(out, list) and all(picture.mode == "RGB" for picture in out)
    assert all(
        np.array_equal(np.asarray(a), blur_array(b, max_sigma=2))
        for a, b in zip(out, ragged, strict=True)
    )


def test_maps_per_row_and_one_map_for_all(rng):
    images = rng.integers(0, 256, (2, 6, 8), dtype=np.uint8)
    maps = rng.integers(0, 256, (2, 6, 8), dtype=np.uint8)
    per_row = BlurBatch(max_sigma=3, map_column="depth")({"image": images, "depth": maps})
    for number in range(2):
        expected = blur_array(images[number], maps[number], max_sigma=3)
        assert np.array_equal(per_row["image"][number], expected)
    shared = BlurBatch(max_sigma=3, map_array=maps[0])({"image": images})
    assert np.array_equal(shared["image"][1], blur_array(images[1], maps[0], max_sigma=3))


def test_a_pil_image_comes_back_in_its_mode(rng):
    picture = PILImage.fromarray(rng.integers(0, 256, (6, 9, 4), dtype=np.uint8), "RGBA")
    out = blur_pil(picture, max_sigma=2)
    assert out.mode == "RGBA" and out.size == picture.size


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"pixels": np.zeros((4, 5, 6), np.uint8)}, "C in 1..4"),
        ({"pixels": np.zeros((4, 5), np.int32)}, "uint8, uint16 or float"),
        ({"pixels": np.full((4, 5), 2.0)}, r"\[0, 1\]"),
        ({"pixels": np.zeros((4, 5), np.uint8), "colour": 3}, "unknown setting"),
        ({"pixels": np.zeros((4, 5), np.uint8), "max_sigma": -1}, "max_sigma >= 0"),
    ],
)
def test_bad_arrays_and_settings(arguments, message):
    arguments = {"max_sigma": 2} | arguments
    pixels = arguments.pop("pixels")
    with pytest.raises(InvalidParameterError, match=message):
        blur_array(pixels, **arguments)
