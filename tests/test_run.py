"""adaptiveblur.run: one file to one file, with checks before the slow part and nothing left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps

from adaptiveblur import io as abio
from adaptiveblur.errors import InputImageError, InvalidParameterError, OutputImageError
from adaptiveblur.ops import adaptive_blur
from adaptiveblur.render import sigma_map_for
from adaptiveblur.run import check_map_size, run_file, sigma_image
from adaptiveblur.settings import BlurSettings, FileOptions
from tests.helpers import HEIGHT, WIDTH, chw, make_image, random_rgb, temporaries
from tests.oracle import loop_blur, luma, png16_bytes

ORIENTATION = 0x0112


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
    with pytest.raises(InputImageError, match="sigma map is"):
        run_file(
            str(source),
            str(tmp_path / "out.png"),
            BlurSettings(max_sigma=2.0),
            FileOptions(map_path=str(tmp_path / "map.png")),
        )
    assert not (tmp_path / "out.png").exists()
    run_file(
        str(source),
        str(tmp_path / "out.png"),
        BlurSettings(max_sigma=2.0),
        FileOptions(map_path=str(tmp_path / "map.png"), resize_map=True),
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
        with pytest.raises(OutputImageError, match="overwrite the input") as caught:
            run_file(str(source), str(dest), BlurSettings(max_sigma=1.0))
        assert caught.value.parameter == "overwrite"
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
            FileOptions(map_path=str(tmp_path / "m.png")),
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
            FileOptions(overwrite=True),
            save_sigma=str(source),
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
        run_file(
            missing,
            str(tmp_path / "out.jpg"),
            BlurSettings(max_sigma=1.0),
            FileOptions(quality=101),
        )
    with pytest.raises(OutputImageError, match="a format"):
        run_file(missing, "-", BlurSettings(max_sigma=1.0))
    with pytest.raises(OutputImageError, match="format"):
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


def test_sigma_map_of_another_size_is_refused(rng):
    image = make_image(random_rgb(rng), "RGB")
    other = make_image(np.zeros((HEIGHT + 1, WIDTH, 1)), "L")
    with pytest.raises(InputImageError) as caught:
        check_map_size(other, image)
    assert caught.value.parameter == "resize_map"
    assert f"{WIDTH}x{HEIGHT + 1}" in str(caught.value)
    assert f"{WIDTH}x{HEIGHT}" in str(caught.value)


def test_sigma_image_is_16_bit_gray_scaled_to_max_sigma():
    sigma = np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32)
    image = sigma_image(sigma, 2.0)
    assert (image.mode, image.bit_depth) == ("L", 16)
    np.testing.assert_allclose(image.pixels[..., 0], [[0.0, 0.5], [1.0, 1.0]])
    zero = sigma_image(np.zeros((2, 3), dtype=np.float32), 0.0)  # max sigma 0: black, not NaN
    assert np.array_equal(zero.pixels, np.zeros((2, 3, 1), dtype=np.float32))
