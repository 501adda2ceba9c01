"""The ``adaptiveblur`` command: results, options, exit codes, messages, stdin/stdout, Ctrl-C.

Most tests call :func:`adaptiveblur.cli.main` in-process (fast); a few run a subprocess
where only a real process will do: pipes, ``python -m``, SIGINT, what gets imported,
and the traceback that ``--traceback`` lets through. Images are tiny and made fresh.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from adaptiveblur import io as abio
from adaptiveblur._version import __version__
from adaptiveblur.cli import main
from adaptiveblur.errors import InputImageError
from adaptiveblur.render import sigma_map_for
from adaptiveblur.settings import BlurSettings
from tests.helpers import (
    HEIGHT,
    PREFIX,
    SUBPROCESS_TIMEOUT,
    WIDTH,
    assert_clean_error,
    assert_interrupted,
    cli,
    pixels_of,
    run_subprocess,
    snapshot,
    subprocess_env,
)
from tests.oracle import loop_blur, luma

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---- helpers ----------------------------------------------------------------------------


def read_sigma(path: Path) -> np.ndarray:
    """A saved sigma map: checked to be a 16-bit gray PNG, returned as int64 values."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR" and data[24] == 16 and data[25] == 0  # 16-bit, gray
    return pixels_of(path).astype(np.int64)


def expected_output(values: np.ndarray, sigma: np.ndarray, **options: object) -> np.ndarray:
    """8-bit result of the float64 oracle for an image without alpha."""
    planes = values.reshape(HEIGHT, WIDTH, -1).transpose(2, 0, 1) / 255.0
    blurred = loop_blur(planes, sigma, **options)  # type: ignore[arg-type]
    return np.rint(np.clip(blurred, 0, 1) * 255).transpose(1, 2, 0).reshape(values.shape)


def library_sigma(values: np.ndarray, mode: str, **settings: object) -> np.ndarray:
    """The sigma map the library computes (itself checked against formulas in test_render)."""
    pixels = (values.reshape(HEIGHT, WIDTH, -1) / 255.0).astype(np.float32)
    image = abio.Image(pixels=pixels, mode=mode, bit_depth=8)
    return sigma_map_for(image, BlurSettings(**settings)).numpy()  # type: ignore[arg-type]


# ---- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def rgb(work: Path, rng: np.random.Generator) -> np.ndarray:
    """``in.png``: 23x17 RGB noise, a quarter of it black (sigma 0 there)."""
    values = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    values[rng.random((HEIGHT, WIDTH)) < 0.25] = 0
    PILImage.fromarray(values).save(work / "in.png")
    return values


@pytest.fixture
def rgba(work: Path, rng: np.random.Generator) -> np.ndarray:
    """``rgba.png``: 23x17 RGBA noise."""
    values = rng.integers(0, 256, (HEIGHT, WIDTH, 4), dtype=np.uint8)
    PILImage.fromarray(values).save(work / "rgba.png")
    return values


@pytest.fixture
def bad_inputs(work: Path, rgb: np.ndarray) -> Path:
    """Broken inputs beside ``in.png``."""
    good = (work / "in.png").read_bytes()
    (work / "folder").mkdir()
    (work / "empty.png").write_bytes(b"")
    (work / "text.png").write_text("this is not an image\n")
    (work / "truncated.png").write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    idat = corrupt.index(b"IDAT")
    for offset in range(idat + 8, idat + 16):
        corrupt[offset] ^= 0x5A
    (work / "corrupt.png").write_bytes(bytes(corrupt))
    png16 = abio.Image(pixels=rgb / np.float32(255), mode="RGB", bit_depth=16)
    abio.save_image(png16, work / "in16.png")
    data16 = (work / "in16.png").read_bytes()
    (work / "truncated16.png").write_bytes(data16[: len(data16) - 40])
    return work


# ---- success ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"border": "replicate", "truncate": 2.0},
        {"border": "constant", "truncate": 3.5},
    ],
)
def test_run_matches_the_oracle(capsys, work, rgb, options):
    flags = [item for key, value in options.items() for item in (f"--{key}", str(value))]
    code, out, err = cli(capsys, "run", "in.png", "out.png", "--max-sigma", "2", *flags)
    assert (code, out, err) == (0, "", "")
    with PILImage.open(work / "out.png") as written:
        assert (written.format, written.mode, written.size) == ("PNG", "RGB", (WIDTH, HEIGHT))
    result = pixels_of(work / "out.png").astype(np.int64)

    sigma = library_sigma(rgb, "RGB", max_sigma=2.0)
    np.testing.assert_allclose(sigma, 2.0 * luma(rgb / 255.0), atol=1e-5)
    expected = expected_output(rgb, sigma, **options)
    assert np.abs(result - expected).max() <= 1

    still = sigma == 0  # black pixels: radius 0, untouched
    assert still.sum() > 0
    assert np.array_equal(result[still], rgb[still])
    blurred = sigma >= 1.0
    assert (result[blurred] != rgb[blurred]).any(axis=-1).mean() > 0.8
    assert [p.name for p in work.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_mode_and_size_are_kept(capsys, work, rng, mode):
    channels = len(mode)
    values = rng.integers(0, 256, (HEIGHT, WIDTH, channels), dtype=np.uint8)
    PILImage.fromarray(values[..., 0] if channels == 1 else values, mode).save(work / "in.png")
    assert cli(capsys, "run", "in.png", "out.png", "--max-sigma", "1.5")[0] == 0
    with PILImage.open(work / "out.png") as written:
        assert (written.mode, written.size) == (mode, (WIDTH, HEIGHT))
    assert not np.array_equal(pixels_of(work / "out.png"), pixels_of(work / "in.png"))


@pytest.mark.parametrize("source", ["in.png", "rgba.png"])
def test_max_sigma_zero_is_the_identity(capsys, work, rgb, rgba, source):
    assert (
        cli(capsys, "run", source, "out.png", "--max-sigma", "0", "--save-sigma", "sigma.png")[0]
        == 0
    )
    assert np.array_equal(pixels_of(work / "out.png"), pixels_of(work / source))
    assert (read_sigma(work / "sigma.png") == 0).all()


@pytest.mark.parametrize(
    ("flags", "curve"),
    [
        ([], lambda v: v),
        (["--min-sigma", "0.5"], lambda v: (0.5 + 1.5 * v) / 2.0),
        (["--gamma", "2.5"], lambda v: v**2.5),
        (["--gamma", "0.4"], lambda v: v**0.4),
        (["--invert"], lambda v: 1.0 - v),
        (["--invert", "--gamma", "2", "--min-sigma", "1"], lambda v: (1.0 + (1.0 - v) ** 2) / 2.0),
    ],
    ids=["default", "min-sigma", "gamma>1", "gamma<1", "invert", "combined"],
)
def test_saved_sigma_map_follows_the_options(capsys, work, rgb, flags, curve):
    code, _, err = cli(
        capsys, "run", "in.png", "out.png", "--max-sigma", "2", "--save-sigma", "sigma.png", *flags
    )
    assert code == 0, err
    saved = read_sigma(work / "sigma.png")
    assert saved.shape == (HEIGHT, WIDTH)
    expected = np.rint(curve(luma(rgb / 255.0)) * 65535)
    assert np.abs(saved - expected).max() <= 1


@pytest.mark.parametrize(
    ("channel", "intensity"),
    [
        ("luminance", lambda v: luma(v / 255.0)),
        ("mean", lambda v: v[..., :3].mean(axis=-1) / 255.0),
        ("red", lambda v: v[..., 0] / 255.0),
        ("green", lambda v: v[..., 1] / 255.0),
        ("blue", lambda v: v[..., 2] / 255.0),
        ("alpha", lambda v: v[..., 3] / 255.0),
    ],
)
def test_channel_option(capsys, work, rgba, channel, intensity):
    code, _, err = cli(
        capsys,
        "run",
        "rgba.png",
        "out.png",
        "--max-sigma",
        "1.5",
        "--channel",
        channel,
        "--save-sigma",
        "sigma.png",
    )
    assert code == 0, err
    expected = np.rint(intensity(rgba.astype(np.float64)) * 65535)
    assert np.abs(read_sigma(work / "sigma.png") - expected).max() <= 1


def test_linear_option(capsys, work, rgb):
    assert cli(capsys, "run", "in.png", "lin.png", "--max-sigma", "2", "--linear")[0] == 0
    assert cli(capsys, "run", "in.png", "plain.png", "--max-sigma", "2")[0] == 0
    result = pixels_of(work / "lin.png").astype(np.int64)

    def to_linear(v: np.ndarray) -> np.ndarray:
        return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)

    def to_srgb(v: np.ndarray) -> np.ndarray:
        v = np.clip(v, 0.0, 1.0)
        return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)

    sigma = library_sigma(rgb, "RGB", max_sigma=2.0)  # from the stored values, not linear ones
    blurred = loop_blur(to_linear(rgb.transpose(2, 0, 1) / 255.0), sigma)
    expected = np.rint(to_srgb(blurred) * 255).transpose(1, 2, 0)
    assert np.abs(result - expected).max() <= 1
    assert np.abs(result - pixels_of(work / "plain.png").astype(np.int64)).max() >= 3


def test_transparent_surroundings_lend_no_colour(capsys, work):
    values = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
    values[..., 1] = 255  # transparent green all around: must not leak into the red
    values[5:12, 8:15] = (255, 0, 0, 255)
    PILImage.fromarray(values).save(work / "sticker.png")
    code, _, err = cli(
        capsys,
        "run",
        "sticker.png",
        "out.png",
        "--max-sigma",
        "2",
        "--channel",
        "alpha",
        "--invert",
    )
    assert code == 0, err
    result = pixels_of(work / "out.png").astype(np.int64)
    visible = result[..., 3] > 0
    fringe = visible & (result[..., 3] < 255)
    assert fringe.sum() > 20
    assert np.abs(result[visible][:, :3] - [255, 0, 0]).max() <= 1
    assert np.array_equal(result[5:12, 8:15], values[5:12, 8:15])  # sigma 0 inside


def test_format_option_overrides_the_extension(capsys, work, rgb):
    assert cli(capsys, "run", "in.png", "out.data", "--max-sigma", "1", "--format", "png")[0] == 0
    assert (work / "out.data").read_bytes().startswith(PNG_SIGNATURE)
    assert cli(capsys, "run", "in.png", "out.img", "--max-sigma", "1", "--format", "JPEG")[0] == 0
    assert (work / "out.img").read_bytes().startswith(b"\xff\xd8")


def test_quality_option(capsys, work, rgb):
    assert cli(capsys, "run", "in.png", "low.jpg", "--max-sigma", "1", "--quality", "5")[0] == 0
    assert cli(capsys, "run", "in.png", "high.jpg", "--max-sigma", "1", "--quality", "100")[0] == 0
    assert (work / "low.jpg").stat().st_size < (work / "high.jpg").stat().st_size


def test_max_memory_and_quiet_do_not_change_the_result(capsys, work, rgb):
    assert cli(capsys, "run", "in.png", "a.png", "--max-sigma", "2") == (0, "", "")
    assert cli(
        capsys, "run", "in.png", "b.png", "--max-sigma", "2", "--max-memory", "1K", "--quiet"
    ) == (0, "", "")
    assert cli(
        capsys, "run", "in.png", "c.png", "--max-sigma", "2", "-q", "--max-memory", "2GiB"
    ) == (0, "", "")
    assert cli(capsys, "run", "in.png", "d.png", "--max-sigma", "2", "--device", "cpu") == (
        0,
        "",
        "",
    )
    reference = pixels_of(work / "a.png").astype(np.int64)
    for name in ("b.png", "c.png", "d.png"):  # equal but for float rounding at a half
        difference = pixels_of(work / name) - reference
        assert np.abs(difference).max() <= 1
        assert (difference != 0).mean() < 0.01


def test_existing_output_other_than_the_input_is_replaced(capsys, work, rgb):
    (work / "out.png").write_bytes(b"old")
    assert cli(capsys, "run", "in.png", "out.png", "--max-sigma", "1")[0] == 0
    assert (work / "out.png").read_bytes().startswith(PNG_SIGNATURE)


# ---- --map ------------------------------------------------------------------------------


def half_map(height: int, width: int) -> PILImage.Image:
    values = np.zeros((height, width), dtype=np.uint8)
    values[:, width // 2 :] = 255
    return PILImage.fromarray(values)


def test_map_drives_sigma(capsys, work, rgb):
    half_map(HEIGHT, WIDTH).save(work / "map.png")
    code, _, err = cli(
        capsys,
        "run",
        "in.png",
        "out.png",
        "--max-sigma",
        "2",
        "--map",
        "map.png",
        "--save-sigma",
        "s.png",
    )
    assert code == 0, err
    result = pixels_of(work / "out.png")
    left, right = slice(0, WIDTH // 2), slice(WIDTH // 2, WIDTH)
    assert np.array_equal(result[:, left], rgb[:, left])
    assert (result[:, right] != rgb[:, right]).any(axis=-1).mean() > 0.8
    sigma = read_sigma(work / "s.png")
    assert (sigma[:, left] == 0).all() and (sigma[:, right] == 65535).all()
    expected = expected_output(
        rgb, np.where(np.arange(WIDTH) < WIDTH // 2, 0.0, 2.0)[None].repeat(HEIGHT, 0)
    )
    assert np.abs(result.astype(np.int64) - expected).max() <= 1


def test_map_of_another_size(capsys, work, rgb):
    half_map(2 * HEIGHT, 2 * WIDTH + 1).save(work / "map.png")
    before = snapshot(work)
    code, out, err = cli(capsys, "run", "in.png", "out.png", "--max-sigma", "2", "--map", "map.png")
    assert_clean_error(code, out, err, 3, "--resize-map")
    assert snapshot(work) == before

    code, _, err = cli(
        capsys, "run", "in.png", "out.png", "--max-sigma", "2", "--map", "map.png", "--resize-map"
    )
    assert code == 0, err
    result = pixels_of(work / "out.png")
    assert np.array_equal(result[:, : WIDTH // 2 - 1], rgb[:, : WIDTH // 2 - 1])
    assert (result[:, WIDTH // 2 + 2 :] != rgb[:, WIDTH // 2 + 2 :]).any(axis=-1).mean() > 0.8


# ---- stdin / stdout ---------------------------------------------------------------------


def test_stdin_to_stdout(capsys, work, rgb):
    done = run_subprocess(
        ["-m", "adaptiveblur", "run", "-", "-", "--max-sigma", "1", "--format", "png"],
        work,
        input=(work / "in.png").read_bytes(),
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""  # no progress bar: stderr is not a terminal
    assert done.stdout.startswith(PNG_SIGNATURE)
    (work / "piped.png").write_bytes(done.stdout)
    assert pixels_of(work / "piped.png").shape == (HEIGHT, WIDTH, 3)
    assert cli(capsys, "run", "in.png", "file.png", "--max-sigma", "1")[0] == 0
    assert done.stdout == (work / "file.png").read_bytes()


def test_stdout_needs_a_format(capfd, work, rgb):
    before = snapshot(work)
    capfd.readouterr()
    code = main(["run", "in.png", "-", "--max-sigma", "1"])
    out, err = capfd.readouterr()
    assert_clean_error(code, out, err, 4, "--format")
    assert snapshot(work) == before


# ---- errors -----------------------------------------------------------------------------

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def case(
    name: str, args: list[str], code: int, fragment: str, *, sigma: bool = True, **kwargs: object
) -> object:
    """One error case of ``adaptiveblur run``; ``--max-sigma 1.5`` is added unless given or
    ``sigma`` is False."""
    if sigma and "--max-sigma" not in args:
        args = [*args, "--max-sigma", "1.5"]
    return pytest.param(["run", *args], code, fragment, id=name, **kwargs)


ERRORS = [
    # input errors: 3
    case("missing input", ["missing.png", "out.png"], 3, "no such file"),
    case("directory input", ["folder", "out.png"], 3, "directory"),
    case("empty input", ["empty.png", "out.png"], 3, "empty"),
    case("text input", ["text.png", "out.png"], 3, "not an image"),
    case("truncated png", ["truncated.png", "out.png"], 3, "truncated"),
    case("corrupt png", ["corrupt.png", "out.png"], 3, "corrupt"),
    case("truncated 16-bit png", ["truncated16.png", "out.png"], 3, "truncated"),
    case("decompression bomb", ["in.png", "out.png", "--max-pixels", "10"], 3, "--max-pixels"),
    case("missing map", ["in.png", "out.png", "--map", "nomap.png"], 3, "nomap.png"),
    case("text map", ["in.png", "out.png", "--map", "text.png"], 3, "not an image"),
    # bad option values: 2
    case("negative max-sigma", ["in.png", "out.png", "--max-sigma", "-1"], 2, "max_sigma"),
    case("nan max-sigma", ["in.png", "out.png", "--max-sigma", "nan"], 2, "finite"),
    case("inf max-sigma", ["in.png", "out.png", "--max-sigma", "inf"], 2, "finite"),
    case("text max-sigma", ["in.png", "out.png", "--max-sigma", "lots"], 2, "--max-sigma"),
    case("min above max", ["in.png", "out.png", "--min-sigma", "2"], 2, "min_sigma"),
    case("negative min-sigma", ["in.png", "out.png", "--min-sigma", "-0.5"], 2, "min_sigma"),
    case("zero gamma", ["in.png", "out.png", "--gamma", "0"], 2, "gamma"),
    case("negative gamma", ["in.png", "out.png", "--gamma", "-1"], 2, "gamma"),
    case("bad border", ["in.png", "out.png", "--border", "wrap"], 2, "border"),
    case("zero truncate", ["in.png", "out.png", "--truncate", "0"], 2, "truncate"),
    case("bad channel", ["in.png", "out.png", "--channel", "hue"], 2, "channel"),
    case("alpha channel on RGB", ["in.png", "out.png", "--channel", "alpha"], 2, "alpha"),
    case("bad device", ["in.png", "out.png", "--device", "tpu"], 2, "device"),
    case("quality 0", ["in.png", "out.jpg", "--quality", "0"], 2, "quality"),
    case("quality 101", ["in.png", "out.jpg", "--quality", "101"], 2, "quality"),
    case("bad max-memory", ["in.png", "out.png", "--max-memory", "plenty"], 2, "--max-memory"),
    case("zero max-memory", ["in.png", "out.png", "--max-memory", "0"], 2, "--max-memory"),
    case("negative max-pixels", ["in.png", "out.png", "--max-pixels", "-1"], 2, "max_pixels"),
    case("bad format", ["in.png", "out.png", "--format", "xyz"], 2, "xyz"),
    # usage errors: 2
    case("missing max-sigma", ["in.png", "out.png"], 2, "--max-sigma", sigma=False),
    case("unknown option", ["in.png", "out.png", "--bogus"], 2, "--bogus"),
    case("missing OUT", ["in.png"], 2, "OUT"),
    # device unavailable: 5
    case("cuda", ["in.png", "out.png", "--device", "cuda"], 5, "CUDA", marks=NO_CUDA),
    case("cuda:1", ["in.png", "out.png", "--device", "cuda:1"], 5, "CUDA", marks=NO_CUDA),
    # output errors: 4
    case("unknown extension", ["in.png", "out.xyz"], 4, "--format"),
    case("unwritable extension", ["in.png", "out.gif"], 4, "out.gif"),
    case("missing directory", ["in.png", "nowhere/out.png"], 4, "does not exist"),
    case("directory output", ["in.png", "folder"], 4, "folder"),
    case("output is the input", ["in.png", "in.png"], 4, "--overwrite"),
    case("output is the input via ..", ["in.png", "./folder/../in.png"], 4, "--overwrite"),
    case("output is the map", ["in.png", "out.png", "--map", "out.png"], 4, "out.png"),
    case("save-sigma is the input", ["in.png", "out.png", "--save-sigma", "in.png"], 4, "in.png"),
    case("save-sigma is the output", ["in.png", "o.png", "--save-sigma", "o.png"], 4, "o.png"),
    case("save-sigma has no format", ["in.png", "o.png", "--save-sigma", "s.xyz"], 4, "s.xyz"),
    case("alpha to jpeg", ["rgba.png", "out.jpg"], 4, "transparency"),
    case("stdout without format", ["in.png", "-"], 4, "--format"),
]


@pytest.mark.parametrize(("arguments", "expected_code", "fragment"), ERRORS)
def test_errors(capsys, bad_inputs, rgba, arguments, expected_code, fragment):
    work = bad_inputs
    before = snapshot(work)
    code, out, err = cli(capsys, *arguments)
    assert_clean_error(code, out, err, expected_code, fragment)
    assert snapshot(work) == before  # no output, no temporary file, inputs untouched


def test_unknown_command(capsys, work):
    code, out, err = cli(capsys, "sharpen", "in.png")
    assert_clean_error(code, out, err, 2, "sharpen")


def test_symlink_to_the_input_is_not_overwritten(capsys, work, rgb):
    (work / "link.png").symlink_to(work / "in.png")
    before = snapshot(work)
    code, out, err = cli(capsys, "run", "in.png", "link.png", "--max-sigma", "1")
    assert_clean_error(code, out, err, 4, "--overwrite")
    assert snapshot(work) == before
    assert (work / "link.png").is_symlink()


def test_overwrite_replaces_the_input(capsys, work, rgb):
    assert cli(capsys, "run", "in.png", "copy.png", "--max-sigma", "1.5")[0] == 0
    code, out, err = cli(capsys, "run", "in.png", "in.png", "--max-sigma", "1.5", "--overwrite")
    assert (code, out, err) == (0, "", "")
    assert (work / "in.png").read_bytes() == (work / "copy.png").read_bytes()
    assert not np.array_equal(pixels_of(work / "in.png"), rgb)
    assert sorted(p.name for p in work.iterdir()) == ["copy.png", "in.png"]


def test_overwrite_does_not_cover_save_sigma(capsys, work, rgb):
    before = (work / "in.png").read_bytes()
    code, _, _ = cli(
        capsys,
        "run",
        "in.png",
        "out.png",
        "--max-sigma",
        "1",
        "--save-sigma",
        "in.png",
        "--overwrite",
    )
    assert code == 4
    assert (work / "in.png").read_bytes() == before


def test_failed_output_leaves_no_sigma_file(capsys, work, rgb):
    before = snapshot(work)
    code, out, err = cli(
        capsys, "run", "in.png", "nowhere/out.png", "--max-sigma", "1", "--save-sigma", "s.png"
    )
    assert_clean_error(code, out, err, 4, "does not exist")
    assert snapshot(work) == before


def test_traceback_option_shows_the_traceback(work):
    done = run_subprocess(
        ["-m", "adaptiveblur", "--traceback", "run", "missing.png", "out.png", "--max-sigma", "1"],
        work,
    )
    stderr = done.stderr.decode()
    assert done.returncode != 0
    assert "Traceback" in stderr
    assert "InputImageError" in stderr and "no such file" in stderr
    assert not (work / "out.png").exists()


def test_traceback_option_keeps_the_exit_code(capsys, work):
    try:
        code = main(["--traceback", "run", "missing.png", "out.png", "--max-sigma", "1"])
    except InputImageError:
        pytest.fail("main re-raised the InputImageError: the process would exit 1, not 3")
    assert code == 3


def test_without_traceback_option_internal_errors_are_one_line(capsys, work, rgb, monkeypatch):
    import adaptiveblur.run

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(adaptiveblur.run, "run_file", broken)
    code, out, err = cli(capsys, "run", "in.png", "out.png", "--max-sigma", "1")
    assert_clean_error(code, out, err, 70, "ZeroDivisionError: boom")
    assert "--traceback" in err


# ---- Ctrl-C -----------------------------------------------------------------------------

# Imports the slow modules first and says so, so that the signal lands in the blur rather
# than in "import torch"; restores Python's default SIGINT handler in case the test runner
# was started with SIGINT ignored (which a child would inherit).
_INTERRUPTIBLE = """\
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import adaptiveblur.run
from adaptiveblur.cli import main
print("ready", file=sys.stderr, flush=True)
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_exits_130_and_leaves_nothing(work, rng):
    PILImage.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(work / "big.png")
    before = snapshot(work)
    process = subprocess.Popen(
        # The reference backend on the CPU keeps the blur slow enough to interrupt on any
        # machine (on a GPU it could end before the signal lands).
        [
            sys.executable,
            "-c",
            _INTERRUPTIBLE,
            "run",
            "big.png",
            "out.png",
            "--max-sigma",
            "12",
            "--backend",
            "reference",
            "--device",
            "cpu",
        ],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
    )
    try:
        assert process.stderr is not None
        ready, _, _ = select.select([process.stderr], [], [], SUBPROCESS_TIMEOUT)
        assert ready, "the command did not start within the timeout"
        line = process.stderr.readline()
        assert line == b"ready\n", line + process.stderr.read()
        time.sleep(1.5)  # well into the blur of 300x300 at sigma up to 12 (many seconds)
        if process.poll() is not None:
            pytest.fail(
                f"the command finished (exit {process.returncode}) before it could be interrupted; "
                "give it a larger image or sigma"
            )
        text = assert_interrupted(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert [line for line in text.splitlines() if line.strip()] == [f"{PREFIX} interrupted"]
    assert snapshot(work) == before  # no output, no temporary file


# ---- help and version -------------------------------------------------------------------


def test_run_help_shows_options_examples_and_exit_codes(capsys):
    code, out, err = cli(capsys, "run", "--help")
    assert (code, err) == (0, "")
    for text in (
        "--max-sigma",
        "--map",
        "--save-sigma",
        "--linear",
        "Examples:",
        "adaptiveblur run photo.jpg",
        "cat in.png | adaptiveblur run - - --max-sigma 3 --format png",
        "Exit codes:",
    ):
        assert text in out
    assert cli(capsys, "run", "-h")[1] == out


def test_help(capsys):
    code, out, err = cli(capsys, "--help")
    assert (code, err) == (0, "")
    assert "Usage: adaptiveblur" in out
    assert "run" in out and "--version" in out and "--traceback" in out


def test_help_shows_examples(capsys):
    out = cli(capsys, "--help")[1]
    assert "Examples:" in out and "adaptiveblur run photo.jpg" in out


@pytest.mark.parametrize("args", [[], ["run"]])
def test_no_arguments_shows_plain_help(capsys, args):
    code, out, err = cli(capsys, *args)
    assert code in (0, 2)
    assert "Usage: adaptiveblur" in out + err
    assert "error:" not in out + err
    assert "(see '" not in out + err


def test_help_does_not_import_torch(tmp_path):
    script = (
        "import sys; from adaptiveblur.cli import main; main(['--help']); "
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    done = run_subprocess(["-c", script], tmp_path)
    assert done.returncode == 0
    assert b"Usage: adaptiveblur" in done.stdout
    assert done.stderr.decode().strip() == "False"


def test_version(capsys):
    assert cli(capsys, "--version") == (0, f"adaptiveblur {__version__}\n", "")


def test_python_m_version(tmp_path):
    done = run_subprocess(["-m", "adaptiveblur", "--version"], tmp_path)
    assert (done.returncode, done.stdout.decode(), done.stderr) == (
        0,
        f"adaptiveblur {__version__}\n",
        b"",
    )


@pytest.mark.parametrize("command", ["run", "batch"])
def test_help_lists_every_exit_code_from_errors(capsys, command):
    from adaptiveblur.errors import EXIT_CODE_MEANINGS

    code, out, _ = cli(capsys, command, "--help")
    assert code == 0
    listed = " ".join(out.split())  # the paragraph is wrapped
    for exit_code, meaning in EXIT_CODE_MEANINGS.items():
        assert f"{exit_code} {meaning}" in listed
