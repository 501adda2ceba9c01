"""adaptiveblur.io.png: the 16-bit colour reader against an independent encoder, and the writer.

The 16-bit PNG reader is checked against PNGs built here by a plain per-byte filter encoder
(one Python loop, no vectorisation), and those PNGs are first checked against pillow's
8-bit reduction, so the reference does not depend on the code under test.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from adaptiveblur.errors import InputImageError
from adaptiveblur.io import Image, load_image, png, save_image
from tests.helpers import (
    exif_bytes,
    image_from_values,
    orientation_of,
    pillow_reduction,
    random_values,
    srgb_profile,
    values_of,
)
from tests.oracle import png_chunk

MODES = ["L", "LA", "RGB", "RGBA"]
CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
PNG_COLOUR_TYPE = {"LA": 4, "RGB": 2, "RGBA": 6}
ADAM7 = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
]


# ---- an independent 16-bit PNG encoder (plain loops) -----------------------------------


def paeth_reference(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filter_reference(data: np.ndarray, bpp: int, kinds: list[int]) -> bytes:
    """PNG-filter uint8 rows ``(h, n)`` byte by byte, row ``y`` with filter ``kinds[y]``."""
    out = bytearray()
    previous = [0] * data.shape[1]
    for row_array, kind in zip(data, kinds, strict=False):
        row = row_array.tolist()
        out.append(kind)
        for i, value in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            predicted = [0, a, b, (a + b) // 2, paeth_reference(a, b, c)][kind]
            out.append((value - predicted) % 256)
        previous = row
    return bytes(out)


def png16_reference(
    values: np.ndarray,
    colour_type: int,
    kinds_for: object,
    *,
    interlace: bool = False,
    extra: bytes = b"",
) -> bytes:
    """A 16-bit PNG of ``values`` ``(h, w, c)``; ``kinds_for(h)`` gives each row's filter."""
    h, w, c = values.shape
    bpp = 2 * c
    big_endian = values.astype(">u2").view(np.uint8).reshape(h, w, bpp)
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    stream = b""
    for x0, y0, dx, dy in passes:
        sub = big_endian[y0::dy, x0::dx]
        if sub.size:
            rows = sub.reshape(sub.shape[0], -1)
            stream += filter_reference(rows, bpp, kinds_for(rows.shape[0]))  # type: ignore[operator]
    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, int(interlace))
    compressed = zlib.compress(stream)
    half = len(compressed) // 2  # two IDAT chunks, to exercise concatenation
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + extra
        + png_chunk(b"IDAT", compressed[:half])
        + png_chunk(b"IDAT", compressed[half:])
        + png_chunk(b"IEND", b"")
    )


# ---- the 16-bit PNG reader against the reference encoder --------------------------------


def check_png16(data: bytes, values: np.ndarray, mode: str) -> None:
    """Pillow (8-bit) and our reader (16-bit) both decode ``data`` to ``values``."""
    with PILImage.open(io.BytesIO(data)) as picture:
        reduced = pillow_reduction(picture, mode)
    np.testing.assert_array_equal(reduced, values >> 8)  # the reference encoder is right
    loaded = load_image(io.BytesIO(data))
    assert (loaded.mode, loaded.bit_depth) == (mode, 16)
    np.testing.assert_array_equal(values_of(loaded), values)


@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("mode", ["LA", "RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (1, 6), (6, 1), (17, 31)])
def test_png16_reader_each_filter(
    rng: np.random.Generator, kind: int, mode: str, size: tuple[int, int]
) -> None:
    values = random_values(rng, *size, CHANNELS[mode], 16)
    data = png16_reference(values, PNG_COLOUR_TYPE[mode], lambda h: [kind] * h)
    check_png16(data, values, mode)


@pytest.mark.parametrize("band", [3, 512])
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_png16_reader_mixed_filters(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, band: int, mode: str
) -> None:
    """Random filter per row; small bands put simple and wavefront bands side by side."""
    monkeypatch.setattr(png, "_WAVEFRONT_ROWS", band)
    values = random_values(rng, 29, 11, CHANNELS[mode], 16)
    kinds = rng.integers(0, 5, size=29).tolist()
    kinds[6:12] = [0, 1, 2, 2, 1, 0]  # one band of rows that need no wavefront
    data = png16_reference(values, PNG_COLOUR_TYPE[mode], lambda h: kinds[:h])
    check_png16(data, values, mode)


def test_png16_reader_smooth_image(rng: np.random.Generator) -> None:
    """Smooth content gives small residuals, where Paeth ties and Average carries matter."""
    y, x = np.mgrid[0:23, 0:19]
    base = (y * 700 + x * 300 + rng.integers(0, 4, (23, 19))).astype(np.int64)
    values = np.stack([base, base[::-1] + 5, 65535 - base], axis=2) % 65536
    for kind in (3, 4):
        data = png16_reference(values, 2, lambda h, kind=kind: [kind] * h)
        check_png16(data, values, "RGB")


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (17, 23)])
def test_png16_reader_interlaced(rng: np.random.Generator, size: tuple[int, int]) -> None:
    values = random_values(rng, *size, 4, 16)
    data = png16_reference(values, 6, lambda h: rng.integers(0, 5, size=h).tolist(), interlace=True)
    check_png16(data, values, "RGBA")


def test_png16_reader_transparent_key_colour(rng: np.random.Generator) -> None:
    values = random_values(rng, 5, 4, 3, 16)
    key = values[2, 1]
    trns = png_chunk(b"tRNS", key.astype(">u2").tobytes())
    loaded = load_image(io.BytesIO(png16_reference(values, 2, lambda h: [1] * h, extra=trns)))
    assert loaded.mode == "RGBA"
    alpha = values_of(loaded)[:, :, 3]
    np.testing.assert_array_equal(alpha == 0, (values == key).all(axis=2))
    np.testing.assert_array_equal(values_of(loaded)[:, :, :3], values)


def test_png16_reader_metadata(rng: np.random.Generator) -> None:
    profile = srgb_profile()
    values = random_values(rng, 3, 5, 3, 16)
    extra = png_chunk(b"iCCP", b"sRGB\x00\x00" + zlib.compress(profile)) + png_chunk(
        b"eXIf", exif_bytes(6, _010F="Maker")
    )
    loaded = load_image(io.BytesIO(png16_reference(values, 2, lambda h: [4] * h, extra=extra)))
    assert loaded.icc_profile == profile
    assert orientation_of(loaded.exif) == 1
    assert loaded.exif is not None and b"Maker" in loaded.exif
    np.testing.assert_array_equal(values_of(loaded), np.rot90(values, -1))  # orientation 6


def test_png16_writer_keeps_metadata(tmp_path: Path, rng: np.random.Generator) -> None:
    profile = srgb_profile()
    exif = b"Exif\x00\x00" + exif_bytes(1, _010F="Maker")
    image = image_from_values(
        random_values(rng, 4, 3, 4, 16), "RGBA", 16, icc_profile=profile, exif=exif
    )
    save_image(image, tmp_path / "out.png")
    with PILImage.open(tmp_path / "out.png") as picture:
        picture.load()
        assert picture.info["icc_profile"] == profile
        assert picture.getexif()[0x010F] == "Maker"
    loaded = load_image(tmp_path / "out.png")
    assert (loaded.icc_profile, loaded.exif) == (profile, exif)


# ---- the encoder and its parallel deflate ----------------------------------------------


@pytest.mark.parametrize("level", range(10))
@pytest.mark.parametrize("cpus", [1, 2, 5])
def test_parallel_deflate_is_one_valid_zlib_stream(
    monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator, level: int, cpus: int
) -> None:
    monkeypatch.setattr(png, "PARALLEL_DEFLATE_PIECE", 5000)  # many pieces from small data
    monkeypatch.setattr(png, "usable_cpus", lambda: cpus)
    # Compressible (repeats farther apart than a piece) and incompressible parts.
    motif = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    data = memoryview(motif * 7 + rng.integers(0, 256, 11_111, dtype=np.uint8).tobytes() + motif)
    stream = png.deflate(data, level)
    assert zlib.decompress(stream) == data.tobytes()  # checks the header and the Adler-32 too
    rows = np.frombuffer(data, dtype=np.uint8)[: 27 * 1000].reshape(27, 1000)  # as PNG rows
    assert zlib.decompress(png.deflate(rows.data, level)) == rows.tobytes()
    assert stream[:2] == zlib.compress(b"", level)[:2]  # the header zlib itself writes


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("depth", [8, 16])
def test_png_in_parallel_pieces_round_trips_and_pillow_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator, mode: str, depth: int
) -> None:
    monkeypatch.setattr(png, "PARALLEL_DEFLATE_PIECE", 2000)
    monkeypatch.setattr(png, "usable_cpus", lambda: 3)
    values = random_values(rng, 61, 37, CHANNELS[mode], depth)
    values[20:40] = values[0:20]  # something for the deflate to find across pieces
    path = tmp_path / "out.png"
    save_image(image_from_values(values, mode, depth), path)
    np.testing.assert_array_equal(values_of(load_image(path)), values)
    with PILImage.open(path) as picture:
        picture.load()
        if depth == 8:
            np.testing.assert_array_equal(np.asarray(picture).reshape(values.shape), values)


@pytest.mark.parametrize("mode", ["LA", "RGB", "RGBA"])
def test_png16_colour_matches_pillow_reduction(
    tmp_path: Path, rng: np.random.Generator, mode: str
) -> None:
    """Pillow reads our 16-bit colour PNGs too, keeping the high byte of each sample."""
    values = random_values(rng, 31, 17, CHANNELS[mode], 16)
    path = tmp_path / "out.png"
    save_image(image_from_values(values, mode, 16), path)
    with PILImage.open(path) as picture:
        np.testing.assert_array_equal(pillow_reduction(picture, mode), values >> 8)


def test_png16_grey_is_read_by_pillow_as_16_bit(tmp_path: Path, rng: np.random.Generator) -> None:
    """The sigma-map case: (H, W, 1) float, mode L, 16-bit, viewable with anything."""
    sigma_map = rng.random((13, 7, 1)).astype(np.float32)
    path = tmp_path / "sigma.png"
    save_image(Image(sigma_map, "L", 16), path)
    with PILImage.open(path) as picture:
        assert picture.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(picture), np.rint(sigma_map[:, :, 0] * 65535))


def test_corrupt_png16_data_with_valid_crc() -> None:
    row = bytes(4 * 6)  # four 16-bit RGB pixels
    stream = zlib.compress(b"\x07" + row + (b"\x00" + row) * 3)  # filter type 7 does not exist
    header = struct.pack(">IIBBBBB", 4, 4, 16, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", stream)
        + png_chunk(b"IEND", b"")
    )
    with pytest.raises(InputImageError, match="unknown filter type 7"):
        load_image(io.BytesIO(data))
