"""Inputs that are not ordinary 8- or 16-bit image files: pipes, sockets, dangling links, float TIFFs.

Mirrors the regular-file rule of :mod:`adaptiveblur.io.decode` (``run``, ``--map``) and of
:meth:`adaptiveblur.run.FileBlur.blur` (a batch's files), and the 32-bit float path through
io (decode, formats, encode), :func:`adaptiveblur.sigma.normalised_by_range`, render and
run. A command that could wait on a pipe runs in a subprocess with a time limit, and a
library call on one runs in a thread that the test releases (by opening the pipe's
writing end), so a regression fails instead of hanging the suite. Images are 17x23.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from adaptiveblur import io as abio
from adaptiveblur.errors import InputImageError, InvalidParameterError, OutputImageError
from adaptiveblur.sigma import normalised_by_range
from tests.helpers import (
    EXACT,
    FAILED,
    HEIGHT,
    WIDTH,
    assert_clean_error,
    chw,
    cli,
    files_under,
    image_from_values,
    pixels_of,
    random_values,
    run_subprocess,
)
from tests.oracle import loop_blur, scipy_blur
from tests.test_batch import read_report, statuses, summary_of

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
PIPE_HINT = "not a regular file (to read a pipe, use - and redirect it)"
BLOCKED_SECONDS = 10  # a call on a pipe that has not returned by then is waiting on it


# ---- helpers ----------------------------------------------------------------------------


def rgb_png(path: Path, rng: np.random.Generator) -> Path:
    """Random 8-bit RGB noise, 17x23, written as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    abio.save_image(image_from_values(random_values(rng, HEIGHT, WIDTH, 3, 8), "RGB", 8), path)
    return path


def float_tiff(path: Path, values: np.ndarray) -> Path:
    """``(H, W)`` values written as a 32-bit float TIFF (pillow's mode ``F``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.asarray(values, dtype=np.float32)).save(path, format="TIFF")
    return path


def read_float_tiff(path: Path) -> np.ndarray:
    """The float64 values of a float TIFF, which must be one (mode ``F``)."""
    with PILImage.open(path) as picture:
        assert (picture.format, picture.mode) == ("TIFF", "F")
        return np.asarray(picture, dtype=np.float64)


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Within :data:`EXACT` of the float64 reference, relative to its largest magnitude."""
    scale = max(1.0, float(np.abs(expected).max()))
    error = float(np.abs(np.asarray(actual, np.float64) - expected).max())
    assert error <= EXACT * scale, f"max error {error:g} for values up to {scale:g}"


def outputs(folder: Path) -> set[str]:
    """The images written below ``folder`` (hidden bookkeeping files left out)."""
    return {name for name in files_under(folder) if not Path(name).name.startswith(".")}


def make_fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def make_socket(path: Path) -> Path:
    """A Unix socket file at ``path`` (relative to the current folder: the length limit)."""
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no Unix sockets here")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(os.fspath(path))
    return path


def without_blocking(call: Callable[[], object], pipe: Path) -> object:
    """``call()``'s result (or the exception it raised) if it returns promptly; if it waits
    on ``pipe``, a writer is opened to let it go and the test fails."""
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(BLOCKED_SECONDS)
    if thread.is_alive():
        descriptor = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)  # the waiting reader gets EOF
        os.close(descriptor)
        thread.join(BLOCKED_SECONDS)
        pytest.fail(f"the call waited on the pipe {pipe}")
    return outcome[0]


# ---- regular files only -----------------------------------------------------------------


@needs_fifo
def test_load_image_refuses_a_pipe_without_waiting(tmp_path: Path) -> None:
    pipe = make_fifo(tmp_path / "p.png")
    raised = without_blocking(lambda: abio.load_image(pipe), pipe)
    assert isinstance(raised, InputImageError)
    assert str(raised) == f"cannot read '{pipe}': {PIPE_HINT}"
    assert without_blocking(lambda: abio.image_size(str(pipe)), pipe) is None


@needs_fifo
def test_check_regular_file_says_why(work: Path) -> None:
    make_fifo(work / "p.png")
    make_socket(Path("s.png"))
    os.symlink("nowhere.png", work / "gone.png")
    (work / "folder.png").mkdir()
    (work / "real.png").write_bytes(b"not read here")
    os.symlink("real.png", work / "link.png")
    reasons = {
        "p.png": "not a regular file",
        "s.png": "not a regular file",
        "gone.png": "a link to a missing file",
        "folder.png": "it is a directory",
        "missing.png": "no such file",
    }
    for name, reason in reasons.items():
        with pytest.raises(InputImageError) as raised:
            abio.check_regular_file(name)
        assert str(raised.value) == f"cannot read '{name}': {reason}"
    abio.check_regular_file("real.png")
    abio.check_regular_file("link.png")  # a link to a regular file is one


@needs_fifo
@pytest.mark.parametrize("where", ["input", "map"])
def test_run_on_a_pipe_is_an_input_error(work: Path, rng: np.random.Generator, where: str) -> None:
    rgb_png(work / "in.png", rng)
    make_fifo(work / "p.png")
    args = ["in.png", "out.png", "--map", "p.png"] if where == "map" else ["p.png", "out.png"]
    done = run_subprocess(["-m", "adaptiveblur", "run", *args, "--max-sigma", "2"], work)
    err = done.stderr.decode(errors="replace")
    assert_clean_error(done.returncode, done.stdout.decode(), err, 3, f"'p.png': {PIPE_HINT}")
    assert not (work / "out.png").exists()


def test_standard_input_still_reads_a_pipe(capsys, work: Path, rng: np.random.Generator) -> None:
    data = rgb_png(work / "in.png", rng).read_bytes()
    code, _, err = cli(capsys, "run", "in.png", "ref.png", "--max-sigma", "2")
    assert code == 0, err
    done = run_subprocess(
        ["-m", "adaptiveblur", "run", "-", "out.png", "--max-sigma", "2"], work, input=data
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert (work / "out.png").read_bytes() == (work / "ref.png").read_bytes()


@needs_fifo
def test_batch_reports_what_is_not_a_regular_file_and_does_the_rest(
    work: Path, rng: np.random.Generator
) -> None:
    for name in ("a.png", "b.png"):
        rgb_png(work / "in" / name, rng)
    make_fifo(work / "in" / "p.png")
    make_socket(Path("in/s.png"))
    os.symlink("nowhere.png", work / "in" / "gone.png")
    expected = {
        "p.png": "not a regular file",
        "s.png": "not a regular file",
        "gone.png": "a link to a missing file",
    }
    done = run_subprocess(
        ["-m", "adaptiveblur", "batch", "in", "out", "--max-sigma", "2", "--report", "r.json"],
        work,
    )
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 6, err  # some files failed: the others were done
    assert summary_of(err) == (2, 0, 3)
    assert "Traceback" not in err
    failures = [line for line in err.splitlines() if line.startswith(FAILED)]
    assert len(failures) == 3, err
    for name, reason in expected.items():
        (line,) = [line for line in failures if os.path.join("in", name) in line]
        assert line.endswith(f"'{os.path.join('in', name)}': {reason}"), line
    assert outputs(work / "out") == {"a.png", "b.png"}
    report = read_report(work / "r.json")
    assert statuses(report) == {
        "a.png": "done",
        "b.png": "done",
        **dict.fromkeys(expected, "failed"),
    }
    errors = {Path(entry["input"]).name: entry.get("error") for entry in report["files"]}
    for name, reason in expected.items():
        assert errors[name] is not None and errors[name].endswith(reason)


@needs_fifo
def test_list_naming_a_pipe_reports_it_and_does_the_rest(
    work: Path, rng: np.random.Generator
) -> None:
    rgb_png(work / "in" / "a.png", rng)
    make_fifo(work / "in" / "p.png")
    (work / "list.txt").write_text("in/p.png\nin/a.png\n")
    done = run_subprocess(
        ["-m", "adaptiveblur", "batch", "--from-list", "list.txt", "out", "--max-sigma", "2"], work
    )
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 6, err
    assert summary_of(err) == (1, 0, 1)
    (line,) = [line for line in err.splitlines() if line.startswith(FAILED)]
    assert line.endswith(f"'{os.path.join('in', 'p.png')}': not a regular file"), line
    assert outputs(work / "out") == {"a.png"}


# ---- 32-bit float maps ------------------------------------------------------------------


def steps_map(rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Random 16-bit steps ``k`` (0 and 65535 both present), as int64 ``(H, W)``."""
    steps = rng.integers(0, 65536, (height, width))
    steps.flat[rng.choice(steps.size, 2, replace=False)] = (0, 65535)
    return steps


def metres(steps: np.ndarray) -> np.ndarray:
    """A depth map in metres whose range normalisation is ``steps / 65535`` in float32 exactly:
    ``0.5 + k / 1024`` and its differences are exact, so only the final division rounds."""
    return (0.5 + steps / 1024.0).astype(np.float32)


def gray16_png(path: Path, steps: np.ndarray) -> Path:
    samples = np.ascontiguousarray(steps.astype(np.uint16)[..., None])
    abio.save_image(abio.Image(pixels=samples, mode="L", bit_depth=16), path)
    return path


@pytest.mark.parametrize(
    "options",
    [[], ["--invert", "--gamma", "1.7"], ["--resize-map"]],
    ids=["plain", "invert-gamma", "resized"],
)
def test_float_map_is_normalised_by_its_range(
    capsys, work: Path, rng: np.random.Generator, options: list[str]
) -> None:
    rgb_png(work / "in.png", rng)
    size = (11, 13) if "--resize-map" in options else (HEIGHT, WIDTH)
    steps = steps_map(rng, *size)
    float_tiff(work / "depth.tif", metres(steps))
    gray16_png(work / "depth.png", steps)  # the normalised values, as a 16-bit map holds them
    sigma = ["--min-sigma", "0.5", "--max-sigma", "3", *options]
    for name in ("depth.tif", "depth.png"):
        code, _, err = cli(capsys, "run", "in.png", f"{name}.out.png", "--map", name, *sigma)
        assert code == 0, err
    assert (work / "depth.tif.out.png").read_bytes() == (work / "depth.png.out.png").read_bytes()


def test_float_map_sigma_matches_the_oracle(capsys, work: Path, rng: np.random.Generator) -> None:
    image = rgb_png(work / "in.png", rng)
    depth = rng.uniform(-40.0, 900.0, (HEIGHT, WIDTH))  # any units, negative ones included
    float_tiff(work / "d.tif", depth)
    depth = depth.astype(np.float32).astype(np.float64)
    sigma = 0.5 + 2.5 * (depth - depth.min()) / (depth.max() - depth.min())
    code, _, err = cli(
        capsys, "run", "in.png", "out.png", "--map", "d.tif", "--min-sigma", "0.5",
        "--max-sigma", "3",
    )  # fmt: skip
    assert code == 0, err
    expected = loop_blur(chw(pixels_of(image) / 255.0), sigma).transpose(1, 2, 0)
    difference = pixels_of(work / "out.png").astype(np.float64) - expected * 255.0
    assert np.abs(difference).max() <= 0.5 + EXACT * 255.0  # rounded to the nearest code


def test_constant_float_map_gives_min_sigma_everywhere(
    capsys, work: Path, rng: np.random.Generator
) -> None:
    values = rng.normal(20.0, 30.0, (HEIGHT, WIDTH))
    float_tiff(work / "in.tif", values)
    float_tiff(work / "flat.tif", np.full((HEIGHT, WIDTH), 7.25))
    code, _, err = cli(
        capsys, "run", "in.tif", "out.tif", "--map", "flat.tif", "--min-sigma", "1.3",
        "--max-sigma", "4",
    )  # fmt: skip
    assert code == 0, err
    assert_close(read_float_tiff(work / "out.tif"), scipy_blur(values.astype(np.float32), 1.3))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_map_with_nan_or_infinity_is_an_input_error(
    capsys, work: Path, rng: np.random.Generator, bad: float
) -> None:
    rgb_png(work / "in.png", rng)
    depth = rng.uniform(0.0, 10.0, (HEIGHT, WIDTH))
    depth[int(rng.integers(HEIGHT)), int(rng.integers(WIDTH))] = bad
    float_tiff(work / "d.tif", depth)
    code, out, err = cli(capsys, "run", "in.png", "out.png", "--map", "d.tif", "--max-sigma", "2")
    assert_clean_error(code, out, err, 3, "map 'd.tif' has NaN or infinite values")
    assert not (work / "out.png").exists()


# ---- 32-bit float images ----------------------------------------------------------------


def test_float_tiff_loads_as_stored(tmp_path: Path, rng: np.random.Generator) -> None:
    values = rng.normal(0.0, 1000.0, (HEIGHT, WIDTH)).astype(np.float32)
    path = float_tiff(tmp_path / "f.tif", values)
    for integers in (False, True):
        image = abio.load_image(path, integers=integers)
        assert (image.mode, image.bit_depth, image.pixels.dtype) == ("L", 32, np.float32)
        np.testing.assert_array_equal(image.pixels[..., 0], values)
        np.testing.assert_array_equal(image.float_pixels(), image.pixels)


def test_float_image_round_trips_through_a_float_tiff(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    values = rng.normal(0.0, 1000.0, (HEIGHT, WIDTH, 1)).astype(np.float32)
    image = abio.Image(pixels=values, mode="L", bit_depth=abio.FLOAT_DEPTH)
    abio.save_image(image, tmp_path / "f.tif")
    np.testing.assert_array_equal(read_float_tiff(tmp_path / "f.tif"), values[..., 0])
    with pytest.raises(OutputImageError, match="PNG cannot store float values outside"):
        abio.save_image(image, tmp_path / "f.png")
    assert not (tmp_path / "f.png").exists()


def test_float_image_layouts_are_checked() -> None:
    with pytest.raises(InvalidParameterError, match="expected mode L for bit_depth 32"):
        abio.Image(pixels=np.zeros((3, 5, 3), np.float32), mode="RGB", bit_depth=32)
    with pytest.raises(InvalidParameterError, match="expected float samples for bit_depth 32"):
        abio.Image(pixels=np.zeros((3, 5, 1), np.uint16), mode="L", bit_depth=32)


def test_normalised_by_range_of_a_constant_is_zero() -> None:
    assert torch.equal(normalised_by_range(torch.full((3, 5), 2.5)), torch.zeros(3, 5))
    ramp = normalised_by_range(torch.tensor([-3.0, 1.0, 5.0]))
    assert ramp.tolist() == [0.0, 0.5, 1.0]


def test_float_image_with_constant_sigma_matches_scipy(
    capsys, work: Path, rng: np.random.Generator
) -> None:
    values = rng.normal(40.0, 25.0, (HEIGHT, WIDTH)).astype(np.float32)  # not in [0, 1]
    float_tiff(work / "in.tif", values)
    code, _, err = cli(
        capsys, "run", "in.tif", "out.tif", "--min-sigma", "1.7", "--max-sigma", "1.7"
    )
    assert code == 0, err
    assert_close(read_float_tiff(work / "out.tif"), scipy_blur(values, 1.7))


@pytest.mark.parametrize(
    ("options", "curve"),
    [
        ([], lambda v: v),
        (["--invert", "--gamma", "2"], lambda v: (1.0 - v) ** 2),
        (["--linear"], lambda v: v),  # float values are blurred as they are: no sRGB curve
    ],
    ids=["plain", "invert-gamma", "linear"],
)
def test_float_image_sigma_from_its_own_range_matches_the_oracle(
    capsys,
    work: Path,
    rng: np.random.Generator,
    options: list[str],
    curve: Callable[[np.ndarray], np.ndarray],
) -> None:
    values = rng.uniform(-5.0, 250.0, (HEIGHT, WIDTH)).astype(np.float32)
    float_tiff(work / "in.tif", values)
    wide = values.astype(np.float64)
    sigma = 0.4 + 2.2 * curve((wide - wide.min()) / (wide.max() - wide.min()))
    code, _, err = cli(
        capsys, "run", "in.tif", "out.tif", "--min-sigma", "0.4", "--max-sigma", "2.6", *options,
        "--save-sigma", "sigma.png",
    )  # fmt: skip
    assert code == 0, err
    assert_close(read_float_tiff(work / "out.tif"), loop_blur(wide[None], sigma)[0])
    saved = pixels_of(work / "sigma.png").astype(np.float64)  # 16-bit gray, white = max sigma
    assert np.abs(saved - sigma / 2.6 * 65535.0).max() <= 0.5 + EXACT * 65535.0


def test_float_image_with_a_float_map_matches_the_oracle(
    capsys, work: Path, rng: np.random.Generator
) -> None:
    values = rng.normal(0.0, 3.0, (HEIGHT, WIDTH)).astype(np.float32)
    depth = rng.uniform(1.0, 30.0, (HEIGHT, WIDTH))
    float_tiff(work / "in.tif", values)
    float_tiff(work / "d.tif", depth)
    depth = depth.astype(np.float32).astype(np.float64)
    sigma = 3.0 * (depth - depth.min()) / (depth.max() - depth.min())
    code, _, err = cli(capsys, "run", "in.tif", "out.tif", "--map", "d.tif", "--max-sigma", "3")
    assert code == 0, err
    assert_close(read_float_tiff(work / "out.tif"), loop_blur(values[None], sigma)[0])


def test_float_image_to_png(capsys, work: Path, rng: np.random.Generator) -> None:
    inside = rng.uniform(0.0, 1.0, (HEIGHT, WIDTH)).astype(np.float32)
    float_tiff(work / "unit.tif", inside)
    float_tiff(work / "wide.tif", inside * 4.0 - 1.0)
    code, out, err = cli(capsys, "run", "wide.tif", "out.png", "--max-sigma", "2")
    assert_clean_error(code, out, err, 4, "write TIFF instead")
    assert not (work / "out.png").exists()
    code, _, err = cli(capsys, "run", "unit.tif", "out.png", "--max-sigma", "2")
    assert code == 0, err  # values in [0, 1]: quantised at 16 bits, as any float pixels
    samples = pixels_of(work / "out.png")
    assert samples.dtype == np.uint16
    wide = inside.astype(np.float64)
    expected = loop_blur(wide[None], 2.0 * (wide - wide.min()) / (wide.max() - wide.min()))[0]
    assert np.abs(samples - expected * 65535.0).max() <= 0.5 + EXACT * 65535.0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_image_with_nan_or_infinity_is_an_input_error(
    capsys, work: Path, rng: np.random.Generator, bad: float
) -> None:
    values = rng.uniform(0.0, 10.0, (HEIGHT, WIDTH))
    values[int(rng.integers(HEIGHT)), int(rng.integers(WIDTH))] = bad
    float_tiff(work / "f.tif", values)
    code, out, err = cli(capsys, "run", "f.tif", "out.tif", "--max-sigma", "2")
    assert_clean_error(code, out, err, 3, "'f.tif' has NaN or infinite values")
    assert not (work / "out.tif").exists()


def test_float_file_in_a_batch_takes_torch_and_matches_run(
    capsys, work: Path, rng: np.random.Generator
) -> None:
    rgb_png(work / "in" / "a.png", rng)
    float_tiff(work / "in" / "f.tif", rng.normal(5.0, 9.0, (HEIGHT, WIDTH)))
    code, _, err = cli(capsys, "batch", "in", "out", "--max-sigma", "2", "--device", "cpu")
    assert code == 0, err
    assert outputs(work / "out") == {"a.png", "f.tif"}
    code, _, err = cli(capsys, "run", "in/f.tif", "f.tif", "--max-sigma", "2")
    assert code == 0, err
    np.testing.assert_array_equal(
        read_float_tiff(work / "out" / "f.tif"), read_float_tiff(work / "f.tif")
    )


def test_float_results_stay_within_the_input_range(capsys, work: Path) -> None:
    """Weighted means of ones and a few zeros lie in [0, 1]: float32 rounding (1.0000002,
    seen for some placements of the zeros) must not push them out, where PNG could not
    store them. Fixed placements, replayable; exact and fast, two borders."""
    placements = np.random.default_rng(0)
    for _ in range(8):
        values = np.ones((64, 64), dtype=np.float32)
        rows, cols = placements.integers(0, 64, (2, 5))
        values[rows, cols] = 0.0
        float_tiff(work / "ones.tif", values)
        for extra in ([], ["--method", "fast"], ["--border", "replicate"]):
            blur = ["--max-sigma", "11", "--min-sigma", "9.9", "-q", "--overwrite", *extra]
            for out in ("o.png", "o.tif"):
                code, _, err = cli(capsys, "run", "ones.tif", out, *blur)
                assert code == 0, err
            blurred = read_float_tiff(work / "o.tif")
            assert blurred.min() >= 0.0 and blurred.max() <= 1.0, extra
