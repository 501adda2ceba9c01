"""adaptiveblur.pipeline: sigma maps, blur_image semantics (alpha, 16 bits, linear light), run_file.

References are written here independently of the library: Rec. 709 luma and the sRGB
transfer functions from their formulas, 16-bit PNGs built byte by byte, and the float64
``loop_blur`` oracle. Images are tiny (the blur backend in use is slow).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps

from adaptiveblur import io as abio
from adaptiveblur.errors import InputImageError, InvalidParameterError, OutputImageError
from adaptiveblur.ops import adaptive_blur
from adaptiveblur.pipeline import BlurSettings, blur_image, run_file, sigma_image, sigma_map_for
from tests.oracle import loop_blur

HEIGHT, WIDTH = 17, 23
ORIENTATION = 0x0112
LUMA = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709, written out here on purpose
EXACT = 1e-5  # float32 against the float64 oracle


# ---- independent references -------------------------------------------------------------


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 decoding, float64."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 encoding, float64."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * values ** (1 / 2.4) - 0.055)


def luma(pixels: np.ndarray) -> np.ndarray:
    """Rec. 709 luma of ``(H, W, 3+)`` float pixels, float64, clipped to [0, 1]."""
    return np.clip(np.asarray(pixels[..., :3], dtype=np.float64) @ LUMA, 0.0, 1.0)


def png16_bytes(values: np.ndarray) -> bytes:
    """A 16-bit PNG of uint16 ``(H, W, 3)`` RGB samples, filter type 0 on every row."""
    height, width, _ = values.shape
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def chw(pixels: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` → ``(C, H, W)`` float64."""
    return np.asarray(pixels, dtype=np.float64).transpose(2, 0, 1)


def make_image(pixels: np.ndarray, mode: str, bit_depth: int = 8) -> abio.Image:
    return abio.Image(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32), mode=mode, bit_depth=bit_depth
    )


def random_rgb(rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """8-bit representable float RGB pixels ``(H, W, 3)``."""
    return (rng.integers(0, 256, (height, width, 3)) / 255.0).astype(np.float32)


def temporaries(directory: Path) -> list[str]:
    return [path.name for path in directory.rglob(".*.tmp")]


# ---- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_sigma": -1.0}, "max_sigma"),
        ({"max_sigma": float("nan")}, "finite"),
        ({"max_sigma": float("inf")}, "finite"),
        ({"min_sigma": -0.5}, "min_sigma"),
        ({"min_sigma": 3.0}, "min_sigma"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": float("nan")}, "finite"),
        ({"truncate": 0.0}, "truncate"),
        ({"border": "wrap"}, "border"),
        ({"max_memory": 0}, "max_memory"),
    ],
)
def test_settings_check_rejects_bad_values(changes, message):
    settings = BlurSettings(**{"max_sigma": 2.0, **changes})
    with pytest.raises(InvalidParameterError, match=message):
        settings.check()


def test_settings_check_accepts_defaults_and_zero_sigma():
    BlurSettings(max_sigma=2.0).check()
    BlurSettings(max_sigma=0.0).check()
    BlurSettings(max_sigma=1.0, min_sigma=1.0, gamma=0.5, border="constant", max_memory=1).check()


# ---- sigma maps -------------------------------------------------------------------------


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
    image = make_image(random_rgb(rng), "RGB")
    gray = rng.random((HEIGHT, WIDTH, 1)).astype(np.float32)
    sigma = sigma_map_for(image, BlurSettings(max_sigma=2.0), make_image(gray, "L"))
    np.testing.assert_allclose(sigma.numpy(), 2.0 * gray[..., 0], atol=1e-6)


def test_sigma_map_of_another_size_is_refused(rng):
    image = make_image(random_rgb(rng), "RGB")
    other = make_image(np.zeros((HEIGHT + 1, WIDTH, 1)), "L")
    with pytest.raises(InputImageError, match="--resize-map") as caught:
        sigma_map_for(image, BlurSettings(max_sigma=2.0), other)
    assert f"{WIDTH}x{HEIGHT + 1}" in str(caught.value)
    assert f"{WIDTH}x{HEIGHT}" in str(caught.value)


def test_sigma_image_is_16_bit_gray_scaled_to_max_sigma():
    sigma = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    image = sigma_image(sigma, 2.0)
    assert (image.mode, image.bit_depth) == ("L", 16)
    np.testing.assert_allclose(image.pixels[..., 0], [[0.0, 0.5], [1.0, 1.0]])
    zero = sigma_image(torch.zeros(2, 3), 0.0)  # max sigma 0: black, not NaN
    assert np.array_equal(zero.pixels, np.zeros((2, 3, 1), dtype=np.float32))


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


# ---- run_file ---------------------------------------------------------------------------


def gradient16(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A smooth 16-bit RGB gradient whose values are not 8-bit values times 257."""
    y, x = np.mgrid[0:height, 0:width]
    base = 9000 + 1733 * x + 977 * y
    return np.stack([base, 65535 - base, (base * 3) % 40000 + 20000], axis=2).astype(np.uint16)


def test_16_bit_colour_stays_16_bit(tmp_path):
    values = gradient16()
    source = tmp_path / "in16.png"
    source.write_bytes(png16_bytes(values))
    dest = tmp_path / "out16.png"
    settings = BlurSettings(max_sigma=2.0)
    run_file(str(source), str(dest), settings)

    data = dest.read_bytes()
    assert data[12:16] == b"IHDR" and data[24] == 16 and data[25] == 2  # 16-bit RGB on disk
    written = abio.load_image(dest)
    assert (written.mode, written.bit_depth, written.pixels.shape) == (
        "RGB",
        16,
        (HEIGHT, WIDTH, 3),
    )
    out = np.rint(written.pixels.astype(np.float64) * 65535).astype(np.int64)

    pixels = (values / 65535.0).astype(np.float32)
    sigma = sigma_map_for(make_image(pixels, "RGB", 16), settings)
    np.testing.assert_allclose(sigma.double().numpy(), 2.0 * luma(pixels), atol=1e-5)
    expected = adaptive_blur(
        torch.from_numpy(np.ascontiguousarray(chw(pixels))).float(), sigma
    ).numpy()
    expected = np.rint(np.clip(expected.transpose(1, 2, 0).astype(np.float64), 0, 1) * 65535)
    assert np.abs(out - expected).max() <= 1
    assert not np.array_equal(out, values)
    # more than 8 bits of precision survive
    assert (out % 257 != 0).mean() > 0.9
    assert np.abs(out - np.rint(out / 257) * 257).max() > 1


def test_16_bit_gray_stays_16_bit(tmp_path):
    values = gradient16()[..., 0]
    source = tmp_path / "gray16.png"
    PILImage.fromarray(values).save(source)  # pillow writes I;16 as a 16-bit gray PNG
    dest = tmp_path / "out.png"
    run_file(str(source), str(dest), BlurSettings(max_sigma=2.0))
    assert dest.read_bytes()[24:26] == bytes([16, 0])
    with PILImage.open(dest) as written:
        out = np.asarray(written).astype(np.int64)
    pixels = (values / 65535.0).astype(np.float64)
    sigma = (2.0 * pixels).astype(np.float32)
    expected = np.rint(loop_blur(pixels[None], sigma)[0] * 65535)
    assert np.abs(out - expected).max() <= 1
    assert (out % 257 != 0).mean() > 0.9


def oriented_jpeg(path: Path, values: np.ndarray, profile: bytes) -> None:
    exif = PILImage.Exif()
    exif[ORIENTATION] = 6
    exif[0x010F] = "Maker"
    PILImage.fromarray(values).save(
        path, "JPEG", quality=95, exif=exif.tobytes(), icc_profile=profile
    )


@pytest.fixture
def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_exif_orientation_and_icc_survive_run(tmp_path, rng, srgb_profile):
    source = tmp_path / "in.jpg"
    oriented_jpeg(source, rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), srgb_profile)

    run_file(str(source), str(tmp_path / "out.jpg"), BlurSettings(max_sigma=1.0))
    with PILImage.open(tmp_path / "out.jpg") as written:
        written.load()
        assert written.size == (HEIGHT, WIDTH)  # rotated: width and height swapped
        assert written.info.get("icc_profile") == srgb_profile
        exif = written.getexif()
        assert exif.get(ORIENTATION, 1) == 1  # applied to the pixels, so reset
        assert exif.get(0x010F) == "Maker"  # the rest of the EXIF rides along

    run_file(str(source), str(tmp_path / "same.png"), BlurSettings(max_sigma=0.0))
    with PILImage.open(source) as original, PILImage.open(tmp_path / "same.png") as written:
        expected = np.asarray(ImageOps.exif_transpose(original))
        assert written.info.get("icc_profile") == srgb_profile
        assert written.getexif().get(ORIENTATION, 1) == 1
        assert np.array_equal(np.asarray(written), expected)


def test_progress_is_reported_per_tile(tmp_path, rng):
    source = tmp_path / "wide.png"
    PILImage.fromarray(rng.integers(64, 256, (40, 70, 3), dtype=np.uint8)).save(source)
    calls: list[tuple[int, int]] = []
    settings = BlurSettings(max_sigma=1.0, max_memory=1)  # smallest tiles: several of them
    run_file(str(source), str(tmp_path / "out.png"), settings, progress=lambda *a: calls.append(a))
    total = calls[-1][1]
    assert total > 1
    assert calls == [(done, total) for done in range(1, total + 1)]
    # tiling does not change the result (beyond float rounding flipping an 8-bit value)
    run_file(str(source), str(tmp_path / "whole.png"), BlurSettings(max_sigma=1.0))
    with (
        PILImage.open(tmp_path / "out.png") as tiled,
        PILImage.open(tmp_path / "whole.png") as whole,
    ):
        difference = np.asarray(tiled).astype(np.int64) - np.asarray(whole)
    assert np.abs(difference).max() <= 1
    assert (difference != 0).mean() < 0.01


def test_resized_map(tmp_path, rng):
    source = tmp_path / "in.png"
    PILImage.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(source)
    big_map = np.zeros((2 * HEIGHT, 2 * WIDTH), dtype=np.uint8)
    big_map[:, WIDTH:] = 255
    PILImage.fromarray(big_map).save(tmp_path / "map.png")
    with pytest.raises(InputImageError, match="--resize-map"):
        run_file(
            str(source),
            str(tmp_path / "out.png"),
            BlurSettings(max_sigma=2.0),
            map_path=str(tmp_path / "map.png"),
        )
    assert not (tmp_path / "out.png").exists()
    run_file(
        str(source),
        str(tmp_path / "out.png"),
        BlurSettings(max_sigma=2.0),
        map_path=str(tmp_path / "map.png"),
        resize_map=True,
        save_sigma=str(tmp_path / "sigma.png"),
    )
    with PILImage.open(tmp_path / "sigma.png") as sigma:
        saved = np.asarray(sigma).astype(np.int64)
    assert saved.shape == (HEIGHT, WIDTH)
    assert (saved[:, : WIDTH // 2 - 1] == 0).all()
    assert (saved[:, WIDTH // 2 + 2 :] >= 65534).all()


def test_refuses_to_overwrite_its_input_before_reading(tmp_path, rng):
    source = tmp_path / "in.png"
    PILImage.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(source)
    before = source.read_bytes()
    link = tmp_path / "link.png"
    link.symlink_to(source)
    hard = tmp_path / "hard.png"
    hard.hardlink_to(source)
    for dest in (source, link, hard, tmp_path / "." / "in.png"):
        with pytest.raises(OutputImageError, match="--overwrite"):
            run_file(str(source), str(dest), BlurSettings(max_sigma=1.0))
    with pytest.raises(OutputImageError, match="sigma map over the input"):
        run_file(
            str(source),
            str(tmp_path / "out.png"),
            BlurSettings(max_sigma=1.0),
            save_sigma=str(source),
        )
    with pytest.raises(OutputImageError):
        run_file(
            str(source),
            str(tmp_path / "m.png"),
            BlurSettings(max_sigma=1.0),
            map_path=str(tmp_path / "m.png"),
        )
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.png", "in.png", "link.png"]


def test_overwrite_does_not_let_the_sigma_map_replace_the_input(tmp_path, rng):
    source = tmp_path / "in.png"
    PILImage.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(source)
    before = source.read_bytes()
    with pytest.raises(OutputImageError):
        run_file(
            str(source),
            str(tmp_path / "out.png"),
            BlurSettings(max_sigma=1.0),
            save_sigma=str(source),
            overwrite=True,
        )
    assert source.read_bytes() == before


def test_missing_output_directory_fails_before_the_blur(tmp_path, rng):
    source = tmp_path / "in.png"
    PILImage.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(source)
    calls: list[tuple[int, int]] = []
    with pytest.raises(OutputImageError, match="does not exist"):
        run_file(
            str(source),
            str(tmp_path / "missing" / "out.png"),
            BlurSettings(max_sigma=1.0),
            progress=lambda *a: calls.append(a),
        )
    assert calls == []


def test_failed_output_leaves_no_sigma_file(tmp_path, rng):
    source = tmp_path / "in.png"
    PILImage.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(source)
    with pytest.raises(OutputImageError):
        run_file(
            str(source),
            str(tmp_path / "missing" / "out.png"),
            BlurSettings(max_sigma=1.0),
            save_sigma=str(tmp_path / "sigma.png"),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_checks_come_before_reading_the_input(tmp_path):
    """Bad options and destinations fail even when the input does not exist."""
    missing = str(tmp_path / "missing.png")
    with pytest.raises(InvalidParameterError, match="gamma"):
        run_file(missing, str(tmp_path / "out.png"), BlurSettings(max_sigma=1.0, gamma=0.0))
    with pytest.raises(InvalidParameterError, match="quality"):
        run_file(missing, str(tmp_path / "out.jpg"), BlurSettings(max_sigma=1.0), quality=101)
    with pytest.raises(OutputImageError, match="--format"):
        run_file(missing, "-", BlurSettings(max_sigma=1.0))
    with pytest.raises(OutputImageError, match="--format"):
        run_file(missing, str(tmp_path / "out.xyz"), BlurSettings(max_sigma=1.0))
    with pytest.raises(OutputImageError):
        run_file(
            missing,
            str(tmp_path / "out.png"),
            BlurSettings(max_sigma=1.0),
            save_sigma=str(tmp_path / "s.xyz"),
        )
    with pytest.raises(InputImageError, match="no such file"):
        run_file(missing, str(tmp_path / "out.png"), BlurSettings(max_sigma=1.0))
    assert list(tmp_path.iterdir()) == []


def test_alpha_to_jpeg_fails_before_the_blur(tmp_path, rng):
    source = tmp_path / "in.png"
    PILImage.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 4), dtype=np.uint8)).save(source)
    calls: list[tuple[int, int]] = []
    with pytest.raises(OutputImageError, match="transparency"):
        run_file(
            str(source),
            str(tmp_path / "out.jpg"),
            BlurSettings(max_sigma=1.0),
            progress=lambda *a: calls.append(a),
        )
    assert calls == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]
    assert temporaries(tmp_path) == []


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
    assert np.array_equal(abio._quantise(from_samples, 8), abio._quantise(from_floats, 8))
