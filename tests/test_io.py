"""adaptiveblur.io: decoding every mode, round trips through every format, EXIF and ICC,
rounding, input errors and output formats (the PNG codec: test_png.py; writes: test_atomic.py).
"""

from __future__ import annotations

import io
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageOps, features

from adaptiveblur import io as abio
from adaptiveblur.errors import InputImageError, InvalidParameterError, OutputImageError
from adaptiveblur.io import (
    Image,
    check_output_format,
    decode,
    format_for_path,
    load_image,
    output_bit_depth,
    png,
    save_image,
)
from adaptiveblur.io.decode import image_from_pillow
from tests.helpers import (
    ORIENTATION,
    exif_bytes,
    image_from_values,
    orientation_of,
    random_values,
    srgb_profile,
    values_of,
    write,
)

SIZES = [(1, 1), (7, 13), (31, 17)]
MODES = ["L", "LA", "RGB", "RGBA"]
CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
PNG_COLOUR_TYPE = {"LA": 4, "RGB": 2, "RGBA": 6}


# ---- helpers ----------------------------------------------------------------------------


def pillow_bytes(picture: PILImage.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **options)
    return buffer.getvalue()


# ---- the Image record -------------------------------------------------------------------


def test_image_properties() -> None:
    for mode, alpha, colours in [
        ("L", False, 1),
        ("LA", True, 1),
        ("RGB", False, 3),
        ("RGBA", True, 3),
    ]:
        image = Image(np.zeros((2, 3, CHANNELS[mode]), np.float32), mode, 8)
        assert image.has_alpha is alpha
        assert image.color_channels == colours


@pytest.mark.parametrize(
    ("shape", "mode", "depth"),
    [((2, 3), "L", 8), ((2, 3, 3), "L", 8), ((2, 3, 1), "P", 8), ((2, 3, 1), "L", 12)],
)
def test_image_rejects_bad_layout(shape: tuple[int, ...], mode: str, depth: int) -> None:
    with pytest.raises(InvalidParameterError):
        Image(np.zeros(shape, np.float32), mode, depth)


# ---- lossless round trips ---------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("depth", [8, 16])
def test_png_round_trip(
    tmp_path: Path, rng: np.random.Generator, size: tuple[int, int], mode: str, depth: int
) -> None:
    values = random_values(rng, *size, CHANNELS[mode], depth)
    path = tmp_path / "out.png"
    save_image(image_from_values(values, mode, depth), path)
    loaded = load_image(path)
    assert (loaded.mode, loaded.bit_depth, loaded.source_format) == (mode, depth, "PNG")
    assert loaded.pixels.dtype == np.float32
    assert loaded.pixels.shape == values.shape
    np.testing.assert_array_equal(values_of(loaded), values)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_integer_samples_are_the_float_pixels_unscaled(
    tmp_path: Path, rng: np.random.Generator, mode: str, depth: int, ext: str
) -> None:
    values = random_values(rng, 7, 13, CHANNELS[mode], depth)
    path = tmp_path / f"in{ext}"
    save_image(image_from_values(values, mode, depth), path)
    floats, samples = load_image(path), load_image(path, integers=True)
    assert (samples.mode, samples.bit_depth) == (floats.mode, floats.bit_depth)
    assert samples.pixels.dtype == (np.uint16 if floats.bit_depth == 16 else np.uint8)
    assert samples.pixels.flags.writeable and samples.pixels.flags.c_contiguous
    np.testing.assert_array_equal(samples.float_pixels(), floats.pixels)
    np.testing.assert_array_equal(samples.pixels, values_of(floats))
    # Saved again they give the same file as the float pixels do.
    save_image(samples, tmp_path / "a.png")
    save_image(floats, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_integer_samples_follow_the_orientation(tmp_path: Path, orientation: int) -> None:
    values = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(5, 3, 3) * 5
    picture = PILImage.fromarray(values, "RGB")
    path = write(
        tmp_path / "o.jpg", pillow_bytes(picture, "JPEG", quality=100, exif=exif_bytes(orientation))
    )
    floats, samples = load_image(path), load_image(path, integers=True)
    np.testing.assert_array_equal(samples.float_pixels(), floats.pixels)


def test_integer_samples_must_match_the_bit_depth() -> None:
    with pytest.raises(InvalidParameterError, match="uint16 samples for bit_depth 16"):
        Image(pixels=np.zeros((2, 2, 1), dtype=np.uint8), mode="L", bit_depth=16)
    with pytest.raises(InvalidParameterError, match="uint8 samples for bit_depth 8"):
        Image(pixels=np.zeros((2, 2, 3), dtype=np.int32), mode="RGB", bit_depth=8)


def test_16_bit_samples_saved_at_8_bits_round_like_floats(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    values = random_values(rng, 9, 11, 3, 16)
    samples = Image(pixels=values.astype(np.uint16), mode="RGB", bit_depth=16)
    floats = image_from_values(values, "RGB", 16)
    save_image(samples, tmp_path / "a.bmp")  # BMP holds 8 bits
    save_image(floats, tmp_path / "b.bmp")
    assert (tmp_path / "a.bmp").read_bytes() == (tmp_path / "b.bmp").read_bytes()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ext", [".tif", ".tiff"])
def test_tiff_round_trip_8_bit(
    tmp_path: Path, rng: np.random.Generator, mode: str, ext: str
) -> None:
    values = random_values(rng, 7, 13, CHANNELS[mode], 8)
    path = tmp_path / f"out{ext}"
    save_image(image_from_values(values, mode, 8), path)
    loaded = load_image(path)
    assert (loaded.mode, loaded.bit_depth, loaded.source_format) == (mode, 8, "TIFF")
    np.testing.assert_array_equal(values_of(loaded), values)


def test_tiff_keeps_16_bit_grey(tmp_path: Path, rng: np.random.Generator) -> None:
    values = random_values(rng, 31, 17, 1, 16)
    save_image(image_from_values(values, "L", 16), tmp_path / "out.tif")
    loaded = load_image(tmp_path / "out.tif")
    assert (loaded.mode, loaded.bit_depth) == ("L", 16)
    np.testing.assert_array_equal(values_of(loaded), values)


@pytest.mark.parametrize("mode", ["LA", "RGB", "RGBA"])
def test_tiff_16_bit_colour_is_rounded_to_8_bits(
    tmp_path: Path, rng: np.random.Generator, mode: str
) -> None:
    values = random_values(rng, 7, 13, CHANNELS[mode], 16)
    assert output_bit_depth(mode, 16, "tiff") == 8
    save_image(image_from_values(values, mode, 16), tmp_path / "out.tif")
    loaded = load_image(tmp_path / "out.tif")
    assert (loaded.mode, loaded.bit_depth) == (mode, 8)
    np.testing.assert_array_equal(values_of(loaded), np.rint(values / 65535 * 255))


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("depth", [8, 16])
def test_bmp_round_trip(tmp_path: Path, rng: np.random.Generator, mode: str, depth: int) -> None:
    values = random_values(rng, 7, 13, CHANNELS[mode], depth)
    save_image(image_from_values(values, mode, depth), tmp_path / "out.bmp")
    loaded = load_image(tmp_path / "out.bmp")
    assert (loaded.mode, loaded.bit_depth, loaded.source_format) == (mode, 8, "BMP")
    expected = values if depth == 8 else np.rint(values / 65535 * 255)
    np.testing.assert_array_equal(values_of(loaded), expected)


@pytest.mark.skipif(not features.check("webp"), reason="pillow built without WebP")
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_webp_quality_100_is_lossless(tmp_path: Path, rng: np.random.Generator, mode: str) -> None:
    values = random_values(rng, 31, 17, CHANNELS[mode], 8)
    values[..., -1] = 0 if mode == "RGBA" else values[..., -1]  # colour under alpha 0 kept too
    save_image(image_from_values(values, mode, 8), tmp_path / "out.webp", quality=100)
    loaded = load_image(tmp_path / "out.webp")
    assert (loaded.mode, loaded.source_format) == (mode, "WEBP")
    np.testing.assert_array_equal(values_of(loaded), values)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_is_close(tmp_path: Path, mode: str) -> None:
    ramp = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64, 1)
    pixels = np.repeat(ramp, CHANNELS[mode], axis=2)
    save_image(Image(pixels, mode, 8), tmp_path / "out.jpg", quality=95)
    loaded = load_image(tmp_path / "out.jpg")
    assert (loaded.mode, loaded.bit_depth, loaded.source_format) == (mode, 8, "JPEG")
    assert np.abs(loaded.pixels - pixels).mean() < 2 / 255


def test_jpeg_quality_matters(tmp_path: Path, rng: np.random.Generator) -> None:
    image = Image(rng.random((32, 32, 3)).astype(np.float32), "RGB", 8)
    save_image(image, tmp_path / "low.jpg", quality=10)
    save_image(image, tmp_path / "high.jpg", quality=95)
    assert (tmp_path / "low.jpg").stat().st_size < (tmp_path / "high.jpg").stat().st_size


def test_load_and_save_streams(rng: np.random.Generator) -> None:
    values = random_values(rng, 7, 13, 3, 16)
    buffer = io.BytesIO()
    save_image(image_from_values(values, "RGB", 16), buffer, format="PNG")
    buffer.seek(0)
    np.testing.assert_array_equal(values_of(load_image(buffer)), values)


# ---- rounding ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_quantisation_rounds_and_clips(tmp_path: Path, depth: int, mode: str) -> None:
    top = 2**depth - 1
    eps = 1e-3 / top
    row = np.array([0.5 / top + eps, 0.5 / top - eps, 1.5 / top + eps, -0.3, 1.7, 1 - 0.4 / top])
    pixels = np.repeat(row.reshape(1, -1, 1), CHANNELS[mode], axis=2).astype(np.float32)
    save_image(Image(pixels, mode, depth), tmp_path / "out.png")
    loaded = values_of(load_image(tmp_path / "out.png"))
    np.testing.assert_array_equal(loaded[0, :, 0], [1, 0, 2, 0, top, top])


@pytest.mark.parametrize("depth", [8, 16])
def test_quantise_gives_the_same_integers_on_numpy_and_torch(
    rng: np.random.Generator, depth: int
) -> None:
    """One rounding rule for the file writer (numpy) and the renderer (torch)."""
    top = 2**depth - 1
    halves = (np.arange(0, top + 1, dtype=np.float64) + 0.5) / top  # ties after scaling
    values = np.concatenate(
        [rng.uniform(-0.2, 1.2, 5000), halves, [-1.0, 0.0, 1.0, 2.0, 0.5 / top, 1.5 / top]]
    ).astype(np.float32)
    from_numpy = abio.quantise(values, depth)
    from_torch = abio.quantise(torch.from_numpy(values.copy()), depth)
    assert from_numpy.dtype == np.float32 and from_torch.dtype == torch.float32
    np.testing.assert_array_equal(from_torch.numpy(), from_numpy)
    samples = from_numpy.astype(np.uint16)
    np.testing.assert_array_equal(from_torch.to(torch.int32).numpy(), samples)
    expected = np.rint(np.clip(values, 0, 1) * np.float32(top))  # half to even
    np.testing.assert_array_equal(from_numpy, expected)
    assert from_numpy.min() == 0 and from_numpy.max() == top


def test_quantise_leaves_its_input_alone() -> None:
    values = np.array([-0.5, 0.25, 1.5], np.float32)
    abio.quantise(values, 8)
    tensor = torch.tensor([-0.5, 0.25, 1.5])
    abio.quantise(tensor, 8)
    np.testing.assert_array_equal(values, [-0.5, 0.25, 1.5])
    assert tensor.tolist() == [-0.5, 0.25, 1.5]


def test_has_alpha() -> None:
    assert [abio.has_alpha(mode) for mode in MODES] == [False, True, False, True]
    assert {mode for mode in MODES if abio.has_alpha(mode)} == abio.ALPHA_MODES


def test_nan_pixels_are_refused(tmp_path: Path) -> None:
    pixels = np.full((2, 2, 1), np.nan, np.float32)
    with pytest.raises(InvalidParameterError, match="NaN"):
        save_image(Image(pixels, "L", 8), tmp_path / "out.png")
    assert not list(tmp_path.iterdir())


# ---- modes pillow decodes --------------------------------------------------------------


def test_palette_without_transparency(tmp_path: Path, rng: np.random.Generator) -> None:
    indices = rng.integers(0, 4, (7, 13), dtype=np.uint8)
    palette = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    picture = PILImage.new("P", (13, 7))
    picture.putdata(indices.ravel().tolist())
    picture.putpalette(palette.ravel().tolist())
    loaded = load_image(write(tmp_path / "p.png", pillow_bytes(picture, "PNG")))
    assert (loaded.mode, loaded.bit_depth) == ("RGB", 8)
    np.testing.assert_array_equal(values_of(loaded), palette[indices])


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency(tmp_path: Path, rng: np.random.Generator, fmt: str) -> None:
    indices = rng.integers(0, 4, (7, 13), dtype=np.uint8)
    indices[0, 0] = 2
    palette = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    picture = PILImage.new("P", (13, 7))
    picture.putdata(indices.ravel().tolist())
    picture.putpalette(palette.ravel().tolist())
    loaded = load_image(
        write(tmp_path / f"p.{fmt.lower()}", pillow_bytes(picture, fmt, transparency=2))
    )
    assert loaded.mode == "RGBA"
    result = values_of(loaded)
    np.testing.assert_array_equal(result[:, :, 3], np.where(indices == 2, 0, 255))
    opaque = indices != 2
    np.testing.assert_array_equal(result[:, :, :3][opaque], palette[indices][opaque])


def test_bilevel_becomes_grey(tmp_path: Path, rng: np.random.Generator) -> None:
    bits = rng.integers(0, 2, (7, 13)).astype(bool)
    loaded = load_image(write(tmp_path / "b.png", pillow_bytes(PILImage.fromarray(bits), "PNG")))
    assert (loaded.mode, loaded.bit_depth) == ("L", 8)
    np.testing.assert_array_equal(values_of(loaded)[:, :, 0], bits * 255)


def test_grey_with_transparent_key_gets_alpha(tmp_path: Path, rng: np.random.Generator) -> None:
    grey = rng.integers(0, 256, (7, 13), dtype=np.uint8)
    grey[3, 3] = 9
    data = pillow_bytes(PILImage.fromarray(grey), "PNG", transparency=9)
    loaded = load_image(write(tmp_path / "t.png", data))
    assert loaded.mode == "LA"
    np.testing.assert_array_equal(values_of(loaded)[:, :, 1], np.where(grey == 9, 0, 255))


def test_32_bit_integer_grey(tmp_path: Path, rng: np.random.Generator) -> None:
    values = rng.integers(0, 65536, (7, 13)).astype(np.int32)
    picture = PILImage.fromarray(values)
    assert picture.mode == "I"
    loaded = load_image(write(tmp_path / "i.tif", pillow_bytes(picture, "TIFF")))
    assert (loaded.mode, loaded.bit_depth) == ("L", 16)
    np.testing.assert_array_equal(values_of(loaded)[:, :, 0], values)
    too_big = PILImage.fromarray(values + 70000)
    with pytest.raises(
        InputImageError, match="big.tif': 32-bit integer images with values outside"
    ):
        load_image(write(tmp_path / "big.tif", pillow_bytes(too_big, "TIFF")))


def test_cmyk_becomes_rgb_without_profile(tmp_path: Path) -> None:
    picture = PILImage.new("CMYK", (5, 4), (0, 255, 255, 0))  # red
    data = pillow_bytes(picture, "JPEG", quality=100, icc_profile=b"not an RGB profile")
    loaded = load_image(write(tmp_path / "c.jpg", data))
    assert loaded.mode == "RGB"
    assert loaded.icc_profile is None
    np.testing.assert_allclose(loaded.pixels[2, 2], [1, 0, 0], atol=3 / 255)


def test_rgbx_and_ycbcr_become_rgb(tmp_path: Path) -> None:
    for mode, colour in [("RGBX", (10, 20, 30, 0)), ("YCbCr", (128, 128, 128))]:
        picture = PILImage.new(mode, (3, 2), colour)
        data = pillow_bytes(picture, "TIFF")
        try:  # some pillow versions (12.3) write a YCbCr TIFF they cannot read back
            PILImage.open(io.BytesIO(data)).load()
        except OSError as error:
            pytest.skip(f"pillow {PILImage.__version__} cannot read its own {mode} TIFF: {error}")
        loaded = load_image(write(tmp_path / f"{mode}.tif", data))
        assert loaded.mode == "RGB"
        expected = np.asarray(picture.convert("RGB"))
        np.testing.assert_allclose(values_of(loaded), expected, atol=1)


def test_lab_becomes_srgb(tmp_path: Path) -> None:
    picture = PILImage.new("LAB", (3, 2), (255, 128, 128))  # L* = 100, a* = b* = 0: white
    loaded = load_image(write(tmp_path / "lab.tif", pillow_bytes(picture, "TIFF")))
    assert (loaded.mode, loaded.icc_profile) == ("RGB", None)
    np.testing.assert_allclose(loaded.pixels, 1, atol=2 / 255)


@pytest.mark.parametrize(
    ("mode", "colour", "expected_mode", "expected"),
    [
        ("HSV", (0, 255, 255), "RGB", [255, 0, 0]),
        ("PA", (1, 7), "RGBA", None),
        ("La", (50, 255), "LA", [50, 255]),
        ("RGBa", (10, 20, 30, 255), "RGBA", [10, 20, 30, 255]),
        ("1", 1, "L", [255]),
    ],
)
def test_in_memory_modes(mode: str, colour: object, expected_mode: str, expected: object) -> None:
    """Modes no file format here writes; the conversion is the same for decoded files."""
    image = image_from_pillow(PILImage.new(mode, (3, 2), colour), "x")  # type: ignore[arg-type]
    assert (image.mode, image.bit_depth) == (expected_mode, 8)
    if expected is not None:
        np.testing.assert_array_equal(values_of(image)[1, 2], expected)


def test_big_endian_16_bit_grey() -> None:
    values = np.arange(6).reshape(2, 3) * 10000
    picture = PILImage.frombytes("I;16B", (3, 2), values.astype(">u2").tobytes())
    image = image_from_pillow(picture, "x")
    assert (image.mode, image.bit_depth) == ("L", 16)
    np.testing.assert_array_equal(values_of(image)[:, :, 0], values)


# ---- EXIF orientation and ICC -----------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(
    tmp_path: Path, rng: np.random.Generator, orientation: int
) -> None:
    values = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    picture = PILImage.fromarray(values)
    exif = exif_bytes(orientation, _010F="Maker")
    path = write(tmp_path / "o.png", pillow_bytes(picture, "PNG", exif=exif))
    loaded = load_image(path)
    with PILImage.open(path) as source:
        expected = np.asarray(ImageOps.exif_transpose(source))
    np.testing.assert_array_equal(values_of(loaded), expected)
    if orientation in (5, 6, 7, 8):
        assert loaded.pixels.shape[:2] == (5, 3)
    assert orientation_of(loaded.exif) == 1
    assert loaded.exif is not None and loaded.exif.startswith(b"Exif\x00\x00")
    assert b"Maker" in loaded.exif


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tif"])
def test_saved_exif_has_orientation_1(tmp_path: Path, rng: np.random.Generator, fmt: str) -> None:
    if fmt == "webp" and not features.check("webp"):
        pytest.skip("pillow built without WebP")
    picture = PILImage.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8))
    source = write(
        tmp_path / "in.jpg",
        pillow_bytes(picture, "JPEG", exif=b"Exif\x00\x00" + exif_bytes(6, _010F="Maker")),
    )
    loaded = load_image(source)
    assert loaded.pixels.shape == (6, 4, 3)
    save_image(loaded, tmp_path / f"out.{fmt}")
    with PILImage.open(tmp_path / f"out.{fmt}") as written:
        written.load()
        exif = written.getexif()
        assert exif.get(ORIENTATION, 1) == 1
        assert exif[0x010F] == "Maker"
        assert written.size == (4, 6)


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("png", "RGB"),
        ("png", "RGBA"),
        ("jpg", "RGB"),
        ("webp", "RGB"),
        ("tif", "RGB"),
        ("png", "L"),
    ],
)
@pytest.mark.parametrize("depth", [8, 16])
def test_icc_profile_is_kept(
    tmp_path: Path, rng: np.random.Generator, fmt: str, mode: str, depth: int
) -> None:
    if fmt == "webp" and not features.check("webp"):
        pytest.skip("pillow built without WebP")
    profile = srgb_profile()
    image = image_from_values(
        random_values(rng, 5, 7, CHANNELS[mode], depth), mode, depth, icc_profile=profile
    )
    save_image(image, tmp_path / f"out.{fmt}")
    with PILImage.open(tmp_path / f"out.{fmt}") as written:
        written.load()
        assert written.info.get("icc_profile") == profile
    assert load_image(tmp_path / f"out.{fmt}").icc_profile == profile


def test_icc_profile_is_read(tmp_path: Path, rng: np.random.Generator) -> None:
    profile = srgb_profile()
    picture = PILImage.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8))
    loaded = load_image(
        write(tmp_path / "in.jpg", pillow_bytes(picture, "JPEG", icc_profile=profile))
    )
    assert loaded.icc_profile == profile
    assert loaded.exif is None


# ---- input errors -----------------------------------------------------------------------


def png_file(
    tmp_path: Path, rng: np.random.Generator, depth: int = 8, size: tuple[int, int] = (40, 50)
) -> Path:
    values = random_values(rng, *size, 3, depth)
    path = tmp_path / f"good{depth}.png"
    save_image(image_from_values(values, "RGB", depth), path)
    return path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputImageError, match=r"cannot read '.*nope\.png': no such file"):
        load_image(tmp_path / "nope.png")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputImageError, match="is a directory"):
        load_image(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(InputImageError, match="file is empty"):
        load_image(write(tmp_path / "empty.png", b""))


def test_text_file(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.png", b"these are notes, not pixels\n" * 20)
    with pytest.raises(InputImageError, match="notes.png.*not an image"):
        load_image(path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path: Path, rng: np.random.Generator) -> None:
    path = png_file(tmp_path, rng)
    path.chmod(0)
    with pytest.raises(InputImageError, match="permission denied"):
        load_image(path)


def test_permission_denied_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The message mapping behind test_unreadable_file, which root cannot run."""

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(decode, "open", denied, raising=False)
    with pytest.raises(InputImageError, match=r"cannot read '.*x\.png': permission denied"):
        load_image(write(tmp_path / "x.png", b"an existing file: only opening it fails"))


@pytest.mark.parametrize("depth", [8, 16])
def test_truncated_png(tmp_path: Path, rng: np.random.Generator, depth: int) -> None:
    data = png_file(tmp_path, rng, depth).read_bytes()
    path = write(tmp_path / "cut.png", data[: len(data) // 2])
    with pytest.raises(InputImageError, match="cut.png': file is truncated"):
        load_image(path)


def test_truncated_jpeg(tmp_path: Path, rng: np.random.Generator) -> None:
    picture = PILImage.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    data = pillow_bytes(picture, "JPEG")
    with pytest.raises(InputImageError, match="file is truncated"):
        load_image(write(tmp_path / "cut.jpg", data[: len(data) // 2]))


@pytest.mark.parametrize("depth", [8, 16])
def test_corrupt_png(tmp_path: Path, rng: np.random.Generator, depth: int) -> None:
    data = bytearray(png_file(tmp_path, rng, depth).read_bytes())
    start = data.find(b"IDAT") + 4
    data[start + 10 : start + 30] = bytes(b ^ 0xA5 for b in data[start + 10 : start + 30])
    with pytest.raises(InputImageError, match="bad.png': file is corrupt"):
        load_image(write(tmp_path / "bad.png", bytes(data)))


@pytest.mark.parametrize("depth", [8, 16])
def test_decompression_bomb_checked_before_decoding(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, depth: int
) -> None:
    path = png_file(tmp_path, rng, depth)

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded before the size check")

    monkeypatch.setattr(PILImage.Image, "load", no_decoding)
    monkeypatch.setattr(png, "_png16_samples", no_decoding)
    with pytest.raises(
        InputImageError,
        match=r"has 2,000 pixels, more than max_pixels \(1,999\)",
    ):
        load_image(path, max_pixels=1999)


def test_pixel_limit_at_the_boundary_and_unlimited(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    path = png_file(tmp_path, rng)
    for limit in (2000, None, 0):
        assert load_image(path, max_pixels=limit).pixels.shape == (40, 50, 3)
    with pytest.raises(InvalidParameterError):
        load_image(path, max_pixels=-1)


def test_our_limit_overrides_pillows(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow would warn (an error under our pytest settings) and refuse; our limit decides."""
    path = png_file(tmp_path, rng)  # 2,000 pixels
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)
    for limit in (2000, None):
        assert load_image(path, max_pixels=limit).pixels.shape == (40, 50, 3)
    for limit in (150, 1999):  # below and above pillow's error threshold of 200
        with pytest.raises(
            InputImageError, match=rf"has 2,000 pixels, more than max_pixels \({limit:,}\)"
        ):
            load_image(path, max_pixels=limit)
    assert PILImage.MAX_IMAGE_PIXELS == 100


def test_default_limit_is_pillows_error_threshold() -> None:
    assert PILImage.MAX_IMAGE_PIXELS is not None
    assert abio.DEFAULT_MAX_PIXELS == 2 * PILImage.MAX_IMAGE_PIXELS


def test_stdin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rng: np.random.Generator) -> None:
    data = png_file(tmp_path, rng, 16).read_bytes()
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(data)))
    loaded = load_image("-")
    assert (loaded.mode, loaded.bit_depth) == ("RGB", 16)
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(b"")))
    with pytest.raises(InputImageError, match="'<stdin>': file is empty"):
        load_image("-")


# ---- output formats ---------------------------------------------------------------------


def test_format_for_path() -> None:
    cases = {
        "a.PNG": "PNG",
        "b.jpg": "JPEG",
        "c.jpeg": "JPEG",
        "d.tif": "TIFF",
        "e.TIFF": "TIFF",
        "f.bmp": "BMP",
        "g.xyz": None,
        "noext": None,
        "h.gif": None,
    }
    if features.check("webp"):
        cases["i.webp"] = "WEBP"
    for path, expected in cases.items():
        assert format_for_path(path) == expected, path
    assert format_for_path(Path("dir.png") / "x.jpg") == "JPEG"


def test_readable_extensions() -> None:
    assert {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"} <= abio.readable_extensions()
    assert all(ext.startswith(".") and ext == ext.lower() for ext in abio.readable_extensions())
    assert set(abio.SUPPORTED_OUTPUT_FORMATS) <= {"PNG", "JPEG", "TIFF", "WEBP", "BMP"}


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("png", "PNG"),
        ("JPG", "JPEG"),
        ("jpeg", "JPEG"),
        ("tif", "TIFF"),
        ("Tiff", "TIFF"),
        ("bmp", "BMP"),
        (".png", "PNG"),
    ],
)
def test_check_output_format_aliases(alias: str, name: str) -> None:
    assert check_output_format("RGB", alias) == name


@pytest.mark.parametrize("fmt", ["jpg", "bmp"])
@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_is_refused_before_any_pixels(tmp_path: Path, fmt: str, mode: str) -> None:
    name = {"jpg": "JPEG", "bmp": "BMP"}[fmt]
    message = f"{name} cannot store transparency; write PNG, WebP or TIFF instead"
    with pytest.raises(OutputImageError, match=message):
        check_output_format(mode, fmt)
    with pytest.raises(OutputImageError, match=message):
        check_output_format(mode, None, tmp_path / f"out.{fmt}")
    with pytest.raises(OutputImageError, match=message):
        save_image(
            Image(np.zeros((2, 2, CHANNELS[mode]), np.float32), mode, 8), tmp_path / f"out.{fmt}"
        )
    assert not list(tmp_path.iterdir())


def test_unknown_extension_and_format(tmp_path: Path) -> None:
    image = Image(np.zeros((2, 2, 3), np.float32), "RGB", 8)
    with pytest.raises(OutputImageError, match=r"cannot tell the output format from '.*out\.xyz'"):
        save_image(image, tmp_path / "out.xyz")
    with pytest.raises(OutputImageError, match="not supported"):
        save_image(image, tmp_path / "out.gif")
    with pytest.raises(InvalidParameterError, match="unknown output format 'xyz'"):
        save_image(image, tmp_path / "out.png", format="xyz")
    save_image(image, tmp_path / "out.xyz", format="png")  # --format wins over the extension
    with PILImage.open(tmp_path / "out.xyz") as written:
        assert written.format == "PNG"


def test_bad_quality(tmp_path: Path) -> None:
    image = Image(np.zeros((2, 2, 3), np.float32), "RGB", 8)
    for quality in (0, 101):
        with pytest.raises(InvalidParameterError, match="quality"):
            save_image(image, tmp_path / "out.jpg", quality=quality)


def test_output_bit_depth() -> None:
    assert output_bit_depth("RGB", 16, "png") == 16
    assert output_bit_depth("L", 16, "TIFF") == 16
    assert output_bit_depth("RGB", 16, "jpeg") == 8
    assert output_bit_depth("L", 8, "png") == 8
