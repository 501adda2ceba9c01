"""``adaptiveblur batch`` and ``run -o DIR``: discovery, mirroring, resume, failures, shards, lists.

Mirrors :mod:`adaptiveblur.batch` (planning, the runner, ``blur_files``) and ``batch`` in :mod:`adaptiveblur.cli`.
Most tests call :func:`adaptiveblur.cli.main` in-process; a subprocess is used only where a
real process is needed (a list on a real stdin pipe, SIGINT). Images are tiny (9x7 to
23x17), made fresh with the ``rng`` fixture; the SIGINT test forces the reference backend
so that it stays slow enough to be interrupted whatever fast backends exist.
"""

from __future__ import annotations

import io as stdio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from adaptiveblur.batch import plan as planning
from adaptiveblur.errors import InputImageError, InvalidParameterError
from tests.helpers import (
    FAILED,
    PREFIX,
    SUBPROCESS_TIMEOUT,
    assert_clean_error,
    assert_interrupted,
    cli,
    files_under,
    pixels_of,
    snapshot,
    subprocess_env,
    temporaries,
)

SUMMARY = re.compile(
    r"^(\d+) done, (\d+) skipped, (\d+) failed in \d+\.\d s \(\d+\.\d\d images/s\)$"
)
REPORT_KEYS = {"done", "skipped", "failed", "seconds", "images_per_second", "files"}
FILE_KEYS = {"input", "output", "status", "seconds"}
PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".bmp": "BMP"}
OLD_NS = 1_000_000_000 * 10**9  # an mtime in 2001: a redone output is newer than this
SIGMA = ["--max-sigma", "2"]

# The tree most tests use: inputs (relative names) and what must never be picked up.
TOP = ["a.png", "b.jpg"]
NESTED = ["sub/c.png", "sub/deeper/d.webp"]
HIDDEN = [".hidden.png", ".cache/e.png", "sub/.f.png"]


# ---- helpers ----------------------------------------------------------------------------


def make_image(
    path: Path,
    rng: np.random.Generator,
    mode: str = "RGB",
    size: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """Save random noise of ``size`` (``(width, height)``, else random in 9x7..23x17) at
    ``path`` in the format its extension names; returns the size."""
    width, height = size or (int(rng.integers(9, 24)), int(rng.integers(7, 18)))
    values = rng.integers(0, 256, (height, width, len(mode)), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = PILImage.fromarray(values[..., 0] if mode == "L" else values, mode)
    picture.save(path, format=PIL_FORMATS[path.suffix.lower()])
    return width, height


def decoded(path: Path) -> tuple[str, tuple[int, int]]:
    """``(format, size)`` of an image file, after decoding every pixel."""
    with PILImage.open(path) as picture:
        picture.load()
        return str(picture.format), picture.size


def summary_of(err: str) -> tuple[int, int, int]:
    """``(done, skipped, failed)`` from the summary, which must be stderr's last line."""
    lines = err.strip().splitlines()
    assert lines, "no summary line on stderr"
    match = SUMMARY.match(lines[-1])
    assert match, f"last stderr line is not a summary: {lines[-1]!r}"
    return int(match[1]), int(match[2]), int(match[3])


def failure_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(FAILED)]


def read_report(path: Path) -> dict:
    """A ``--report`` file, checked for its shape and inner consistency."""
    report = json.loads(path.read_text(encoding="utf-8"))
    assert set(report) == REPORT_KEYS
    files = report["files"]
    for entry in files:
        assert entry["status"] in ("done", "skipped", "failed")
        expected_keys = FILE_KEYS | ({"error"} if entry["status"] == "failed" else set())
        # Where it was blurred: every done file, and a failed one that failed after its blur.
        if entry["status"] == "done" or (entry["status"] == "failed" and "device" in entry):
            expected_keys |= {"device"}
        assert set(entry) == expected_keys, entry
        assert entry["seconds"] >= 0
        if entry["status"] == "failed":
            assert entry["error"] and "\n" not in entry["error"]
    for status in ("done", "skipped", "failed"):
        assert report[status] == sum(entry["status"] == status for entry in files)
    assert report["seconds"] >= 0
    if report["done"] and report["seconds"] > 0.001:  # both rounded to 3 decimals
        low = report["done"] / (report["seconds"] + 0.0005) - 0.0005
        high = report["done"] / (report["seconds"] - 0.0005) + 0.0005
        assert low <= report["images_per_second"] <= high
    return report


def statuses(report: dict, root: str = "out") -> dict[str, str]:
    """Output name (relative to ``root``) to status, from a report."""
    return {
        Path(entry["output"]).relative_to(root).as_posix(): entry["status"]
        for entry in report["files"]
    }


def age(root: Path) -> None:
    """Give every file below ``root`` an old mtime, so redone outputs are easy to tell."""
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(OLD_NS, OLD_NS))


# ---- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def tree(work: Path, rng: np.random.Generator) -> dict[str, tuple[int, int]]:
    """``in/``: images at the top and nested, hidden images, a text file; name -> size."""
    sizes = {name: make_image(work / "in" / name, rng) for name in TOP + NESTED + HIDDEN}
    (work / "in" / "notes.txt").write_text("not an image, and not named like one\n")
    return sizes


# ---- discovery, mirroring, options ------------------------------------------------------


def test_recursive_batch_mirrors_the_tree(capsys, work, tree, rng):
    make_image(work / "in" / "UPPER.PNG", rng)  # extensions match whatever their case
    code, out, err = cli(capsys, "batch", "in", "out", "--recursive", *SIGMA)
    assert code == 0, err
    assert out == ""
    assert summary_of(err) == (5, 0, 0)
    assert len(err.strip().splitlines()) == 1
    assert files_under(work / "out") == set(TOP + NESTED + ["UPPER.PNG"])
    for name in TOP + NESTED:
        fmt, size = decoded(work / "out" / name)
        assert fmt == PIL_FORMATS[Path(name).suffix]
        assert size == tree[name]
    for name in ("a.png", "sub/c.png"):  # lossless: the pixels must have moved
        assert not np.array_equal(pixels_of(work / "out" / name), pixels_of(work / "in" / name))


def test_without_recursive_only_the_top_folder(capsys, work, tree):
    code, _, err = cli(capsys, "batch", "in", "out", *SIGMA)
    assert code == 0, err
    assert summary_of(err) == (2, 0, 0)
    assert files_under(work / "out") == set(TOP)
    assert not (work / "out" / "sub").exists()


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["*.png"], ["a.png", "sub/c.png"]),
        (["*.jpg", "*.webp"], ["b.jpg", "sub/deeper/d.webp"]),
        (["sub/*.png"], ["sub/c.png"]),  # a pattern may name the relative path
        (["c.*", "a.png", "zzz*"], ["a.png", "sub/c.png"]),
        (["*.gif"], []),
    ],
    ids=["one", "several", "relative-path", "names", "none"],
)
def test_pattern_selects_files(capsys, work, tree, patterns, expected):
    flags = [item for pattern in patterns for item in ("--pattern", pattern)]
    code, _, err = cli(capsys, "batch", "in", "out", "-r", *flags, *SIGMA)
    assert code == 0, err
    assert summary_of(err) == (len(expected), 0, 0)
    assert files_under(work / "out") == set(expected)  # hidden files stay ignored


def test_suffix_goes_before_the_extension(capsys, work, tree):
    code, _, err = cli(capsys, "batch", "in", "out", "-r", "--suffix", "-soft", *SIGMA)
    assert code == 0, err
    assert files_under(work / "out") == {
        "a-soft.png",
        "b-soft.jpg",
        "sub/c-soft.png",
        "sub/deeper/d-soft.webp",
    }


@pytest.mark.parametrize(
    ("fmt", "extension", "suffix"),
    [("webp", ".webp", ""), ("png", ".png", ""), ("JPEG", ".jpg", "-s")],
)
def test_format_converts_and_changes_the_extension(capsys, work, tree, fmt, extension, suffix):
    args = ["batch", "in", "out", "-r", "--format", fmt, "--suffix", suffix, *SIGMA]
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    stems = ["a", "b", "sub/c", "sub/deeper/d"]
    assert files_under(work / "out") == {stem + suffix + extension for stem in stems}
    for stem, source in zip(stems, TOP + NESTED, strict=True):
        fmt_written, size = decoded(work / "out" / (stem + suffix + extension))
        assert fmt_written == PIL_FORMATS[extension]
        assert size == tree[source]


@pytest.mark.parametrize(
    "options",
    [[], ["--invert", "--gamma", "2"], ["--min-sigma", "0.5", "--border", "constant"]],
    ids=["default", "invert-gamma", "min-sigma-border"],
)
def test_batch_output_equals_run_output(capsys, work, tree, options):
    assert cli(capsys, "batch", "in", "out", "-r", "--pattern", "*.png", *SIGMA, *options)[0] == 0
    for name in ("a.png", "sub/c.png"):
        code, _, err = cli(capsys, "run", f"in/{name}", "single.png", *SIGMA, *options)
        assert code == 0, err
        assert (work / "out" / name).read_bytes() == (work / "single.png").read_bytes()


def test_jobs_do_not_change_the_results(capsys, work, tree):
    assert cli(capsys, "batch", "in", "one", "-r", "--jobs", "1", *SIGMA)[0] == 0
    assert cli(capsys, "batch", "in", "three", "-r", "-j", "3", *SIGMA)[0] == 0
    assert snapshot(work / "one", manifests=False) == snapshot(work / "three", manifests=False)


def test_worker_processes_do_not_change_the_results(capsys, work, tree):
    (work / "in" / "bad.png").write_text("text with an image's name\n")
    code, _, err = cli(capsys, "batch", "in", "one", "-r", "--jobs", "1", *SIGMA)
    assert code == 6, err
    code, _, err = cli(
        capsys,
        "batch",
        "in",
        "two",
        "-r",
        "-j",
        "3",
        "--processes",
        "2",
        "--report",
        "r.json",
        *SIGMA,
    )
    assert code == 6, err
    assert summary_of(err) == (len(TOP + NESTED), 0, 1)
    assert [line for line in failure_lines(err) if "bad.png" in line] == failure_lines(err)
    assert snapshot(work / "one", manifests=False) == snapshot(work / "two", manifests=False)
    report = read_report(work / "r.json")
    assert statuses(report, "two") == {name: "done" for name in TOP + NESTED} | {
        "bad.png": "failed"
    }


def test_quiet_prints_nothing_but_failures(capsys, work, tree):
    assert cli(capsys, "batch", "in", "out", "-q", *SIGMA) == (0, "", "")
    (work / "in" / "z.png").write_bytes(b"")
    code, out, err = cli(capsys, "batch", "in", "out2", "--quiet", *SIGMA)
    assert (code, out) == (6, "")
    assert len(err.strip().splitlines()) == 1
    assert failure_lines(err) and "z.png" in err


# ---- summary and report -----------------------------------------------------------------


def test_summary_line_and_report(capsys, work, tree):
    (work / "in" / "bad.png").write_text("text with an image's name\n")
    code, out, err = cli(capsys, "batch", "in", "out", "-r", "--report", "report.json", *SIGMA)
    assert (code, out) == (6, "")
    assert summary_of(err) == (4, 0, 1)
    report = read_report(work / "report.json")
    assert (report["done"], report["skipped"], report["failed"]) == (4, 0, 1)
    assert {entry["input"] for entry in report["files"]} == {
        os.path.join("in", name) for name in [*TOP, *NESTED, "bad.png"]
    }
    assert statuses(report) == {**dict.fromkeys(TOP + NESTED, "done"), "bad.png": "failed"}
    (failure,) = [entry for entry in report["files"] if entry["status"] == "failed"]
    assert "not an image" in failure["error"]
    # Where the default device (auto) blurs a few small files: the CPU, even on a GPU host
    # (starting a GPU would take longer than their blurs).
    blurred_on = {entry.get("device") for entry in report["files"]} - {None}
    assert blurred_on == {"cpu"}
    assert temporaries(work) == []

    # Second run: the good ones are skipped, the bad one is tried again (it has no output).
    code, _, err = cli(capsys, "batch", "in", "out", "-r", "--report", "report.json", *SIGMA)
    assert code == 6
    assert summary_of(err) == (0, 4, 1)
    report = read_report(work / "report.json")
    assert statuses(report) == {**dict.fromkeys(TOP + NESTED, "skipped"), "bad.png": "failed"}
    assert report["images_per_second"] == 0


# ---- bad files --------------------------------------------------------------------------


def bad_files(folder: Path, rng: np.random.Generator) -> dict[str, str]:
    """Broken files in ``folder``; name -> a fragment of the expected reason."""
    make_image(folder / "good.png", rng)
    good = (folder / "good.png").read_bytes()
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image\n")
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    idat = corrupt.index(b"IDAT")
    for offset in range(idat + 8, idat + 16):
        corrupt[offset] ^= 0x5A
    (folder / "corrupt.png").write_bytes(bytes(corrupt))
    (folder / "folder.png").mkdir()  # a folder named like an image is not a file: not listed
    return {
        "empty.png": "empty",
        "text.png": "not an image",
        "truncated.png": "truncated",
        "corrupt.png": "corrupt",
    }


def test_bad_files_fail_alone(capsys, work, rng):
    broken = bad_files(work / "in", rng)
    make_image(work / "in" / "other.jpg", rng)
    before = snapshot(work / "in")
    code, out, err = cli(capsys, "batch", "in", "out", "--report", "r.json", *SIGMA)
    assert (code, out) == (6, "")
    assert summary_of(err) == (2, 0, len(broken))
    lines = failure_lines(err)
    assert len(lines) == len(broken)
    assert len(err.strip().splitlines()) == len(broken) + 1  # one line each, then the summary
    for name, reason in broken.items():
        (line,) = [line for line in lines if os.path.join("in", name) in line]
        assert reason in line
    assert "Traceback" not in err
    assert files_under(work / "out") == {"good.png", "other.jpg"}
    assert statuses(read_report(work / "r.json")) == {
        "good.png": "done",
        "other.jpg": "done",
        **dict.fromkeys(broken, "failed"),
    }
    assert snapshot(work / "in") == before
    assert temporaries(work) == []


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever the mode"
)
def test_unreadable_file_fails_alone(capsys, work, rng):
    make_image(work / "in" / "good.png", rng)
    make_image(work / "in" / "locked.png", rng)
    (work / "in" / "locked.png").chmod(0)
    try:
        code, _, err = cli(capsys, "batch", "in", "out", *SIGMA)
    finally:
        (work / "in" / "locked.png").chmod(0o644)
    assert code == 6
    assert summary_of(err) == (1, 0, 1)
    (line,) = failure_lines(err)
    assert "locked.png" in line and "permission" in line.lower()
    assert files_under(work / "out") == {"good.png"}


def test_files_over_max_pixels_fail_alone(capsys, work, rng):
    make_image(work / "in" / "small.png", rng, size=(9, 7))
    make_image(work / "in" / "large.png", rng, size=(23, 17))
    code, _, err = cli(capsys, "batch", "in", "out", "--max-pixels", "100", *SIGMA)
    assert code == 6
    (line,) = failure_lines(err)
    assert "large.png" in line and "--max-pixels" in line
    assert files_under(work / "out") == {"small.png"}


def test_transparency_to_jpeg_fails_alone(capsys, work, rng):
    make_image(work / "in" / "opaque.png", rng)
    make_image(work / "in" / "clear.png", rng, mode="RGBA")
    code, _, err = cli(capsys, "batch", "in", "out", "--format", "jpeg", *SIGMA)
    assert code == 6
    (line,) = failure_lines(err)
    assert "clear.png" in line and "transparency" in line
    assert files_under(work / "out") == {"opaque.jpg"}


# ---- resume, overwrite, interruption -----------------------------------------------------


def test_rerun_redoes_only_missing_outputs(capsys, work, tree):
    assert cli(capsys, "batch", "in", "out", "-r", *SIGMA)[0] == 0
    age(work / "out")
    kept = snapshot(work / "out", manifests=False)
    for name in ("b.jpg", "sub/c.png"):
        (work / "out" / name).unlink()
    code, _, err = cli(capsys, "batch", "in", "out", "-r", "--report", "r.json", *SIGMA)
    assert code == 0, err
    assert summary_of(err) == (2, 2, 0)
    assert statuses(read_report(work / "r.json")) == {
        "a.png": "skipped",
        "b.jpg": "done",
        "sub/c.png": "done",
        "sub/deeper/d.webp": "skipped",
    }
    for name in ("a.png", "sub/deeper/d.webp"):
        assert (work / "out" / name).stat().st_mtime_ns == OLD_NS
    for name in ("b.jpg", "sub/c.png"):
        assert (work / "out" / name).stat().st_mtime_ns > OLD_NS
    assert snapshot(work / "out", manifests=False) == kept  # the same results, byte for byte


def test_existing_outputs_are_skipped_whatever_they_hold(capsys, work, tree):
    (work / "out").mkdir()
    (work / "out" / "a.png").write_bytes(b"someone else's file")
    code, _, err = cli(capsys, "batch", "in", "out", *SIGMA)
    assert code == 0, err
    assert summary_of(err) == (1, 1, 0)
    assert (work / "out" / "a.png").read_bytes() == b"someone else's file"


def test_overwrite_redoes_everything(capsys, work, tree):
    assert cli(capsys, "batch", "in", "out", "-r", *SIGMA)[0] == 0
    age(work / "out")
    (work / "out" / "a.png").write_bytes(b"stale")
    code, _, err = cli(
        capsys, "batch", "in", "out", "-r", "--overwrite", "--report", "r.json", *SIGMA
    )
    assert code == 0, err
    assert summary_of(err) == (4, 0, 0)
    assert set(statuses(read_report(work / "r.json")).values()) == {"done"}
    for name in TOP + NESTED:
        assert (work / "out" / name).stat().st_mtime_ns > OLD_NS
    assert decoded(work / "out" / "a.png")[1] == tree["a.png"]


def test_stale_temporary_of_an_interrupted_run_is_removed(capsys, work, tree):
    assert cli(capsys, "batch", "in", "out", "-r", *SIGMA)[0] == 0
    (work / "out" / "sub" / "c.png").unlink()  # as if killed while writing it
    (work / "out" / "sub" / ".c.png.abc123.tmp").write_bytes(b"\x89PNG half")
    (work / "out" / ".a.png.0f0f0f0f.tmp").write_bytes(b"killed while overwriting a.png")
    (work / "out" / ".mine.tmp").write_bytes(b"not ours: no output of this batch is named so")
    code, _, err = cli(capsys, "batch", "in", "out", "-r", *SIGMA)
    assert code == 0, err
    assert summary_of(err) == (1, 3, 0)
    assert decoded(work / "out" / "sub" / "c.png")[1] == tree["sub/c.png"]
    assert temporaries(work / "out") == [".mine.tmp"]
    assert files_under(work / "out") == set(TOP + NESTED) | {".mine.tmp"}


# Restores Python's SIGINT handler (the runner may have been started with SIGINT ignored,
# which a child inherits), then runs the command as the console script would.
_INTERRUPTIBLE = """\
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from adaptiveblur.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("processes", ["1", "2"])
def test_ctrl_c_leaves_whole_outputs_and_a_rerun_finishes(capsys, work, rng, processes):
    count, side = 16, 40
    for index in range(count):
        make_image(work / "in" / f"{index:02d}.png", rng, size=(side, side))
    # The reference backend at sigma 6 on the CPU: a few tenths of a second per image, every
    # time (on a GPU the batch could end before the signal lands).
    options = ["--max-sigma", "6", "--backend", "reference", "--device", "cpu"]
    process = subprocess.Popen(
        [
            *[sys.executable, "-c", _INTERRUPTIBLE, "batch", "in", "out", "--jobs", "2"],
            *["--processes", processes, *options],
        ],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
    )
    try:
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if (work / "out").is_dir() and any(
                not path.name.startswith(".") for path in (work / "out").iterdir()
            ):
                break  # the batch is under way: the first output is there
            time.sleep(0.02)
        if process.poll() is not None:
            assert process.stderr is not None
            pytest.fail(
                f"the batch ended (exit {process.returncode}) before it could be interrupted: "
                + process.stderr.read().decode()
            )
        assert_interrupted(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert temporaries(work) == []
    written = files_under(work / "out")
    assert 1 <= len(written) < count, written
    for name in written:  # only whole files: each decodes to the end
        assert decoded(work / "out" / name) == ("PNG", (side, side))

    code, _, err = cli(capsys, "batch", "in", "out", "--report", "r.json", *options)
    assert code == 0, err
    report = statuses(read_report(work / "r.json"))
    assert {name for name, status in report.items() if status == "skipped"} == written
    assert {name for name, status in report.items() if status == "done"} == (
        {f"{index:02d}.png" for index in range(count)} - written
    )
    assert len(files_under(work / "out")) == count
    assert temporaries(work) == []


# ---- shards -----------------------------------------------------------------------------


def test_shards_are_disjoint_and_cover_everything(capsys, work, rng):
    names = [f"{index}.png" for index in range(7)] + [f"sub/{index}.png" for index in range(6)]
    for name in names:
        make_image(work / "in" / name, rng, size=(9, 7))
    for count in range(1, 6):
        owned: list[set[str]] = []
        for index in range(1, count + 1):
            report = work / f"r{count}-{index}.json"
            code, _, err = cli(
                capsys,
                "batch",
                "in",
                f"out{count}",
                "-r",
                "--shard",
                f"{index}/{count}",
                "--report",
                str(report),
                "--max-sigma",
                "0.5",
            )
            assert code == 0, err
            shard = statuses(read_report(report), f"out{count}")
            assert set(shard.values()) <= {"done"}
            owned.append(set(shard))
        for first in range(count):
            for second in range(first + 1, count):
                assert not owned[first] & owned[second], (count, first + 1, second + 1)
        assert set().union(*owned) == set(names)
        assert files_under(work / f"out{count}") == set(names)
    assert sum(1 for shard in owned if shard) >= 3  # spread by a hash, not all in one shard


def test_shard_membership_is_stable(capsys, work, rng):
    names = [f"{index}.png" for index in range(10)]
    for name in names:
        make_image(work / "in" / name, rng, size=(9, 7))
    args = ["-r", "--shard", "2/3", "--max-sigma", "0.5", "-q"]
    assert cli(capsys, "batch", "in", "first", *args, "--report", "1.json")[0] == 0
    assert cli(capsys, "batch", "./in/", "again", *args, "--report", "2.json")[0] == 0
    for index in range(10, 16):  # new files never move the old ones to another shard
        make_image(work / "in" / "more" / f"{index}.png", rng, size=(9, 7))
    assert cli(capsys, "batch", "in", "more", *args, "--report", "3.json")[0] == 0
    first = set(statuses(read_report(work / "1.json"), "first"))
    assert set(statuses(read_report(work / "2.json"), "again")) == first
    later = set(statuses(read_report(work / "3.json"), "more"))
    assert {name for name in later if not name.startswith("more/")} == first


@pytest.mark.parametrize("value", ["0/3", "4/3", "x", "1/0", "3", "1/3/5", "a/b", ""])
def test_bad_shard_is_a_usage_error(capsys, work, tree, value):
    before = snapshot(work)
    code, out, err = cli(capsys, "batch", "in", "out", "--shard", value, *SIGMA)
    assert_clean_error(code, out, err, 2, "--shard")
    assert snapshot(work) == before


def test_in_shard_partitions_by_relative_path():
    relatives = [f"dir{index % 3}/image {index}.png" for index in range(200)]
    for count in range(1, 6):
        owners = [
            [index for index in range(1, count + 1) if planning.in_shard(rel, index, count)]
            for rel in relatives
        ]
        assert all(len(owner) == 1 for owner in owners)
        if count > 1:  # a hash, not a single bucket
            assert len({owner[0] for owner in owners}) == count


@pytest.mark.parametrize(
    ("text", "expected"), [("1/1", (1, 1)), ("2/8", (2, 8)), ("8/8", (8, 8)), (" 3/4", (3, 4))]
)
def test_parse_shard(text, expected):
    assert planning.parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/3", "4/3", "x", "1/0", "-1/3", "1/-3", "2"])
def test_parse_shard_rejects(text):
    with pytest.raises(InvalidParameterError, match="shard K/N") as caught:
        planning.parse_shard(text)
    assert caught.value.parameter == "shard"


# ---- --from-list ------------------------------------------------------------------------

ODD_NAMES = [
    b"with space.png",
    "\u00fcn\u00efc\u00f8d\u00e9 \u2603.png".encode(),
    b"new\nline.png",
    b"-dash 'quote\" $x.png",
    b"latin1 \xe9.png",  # not UTF-8: still a valid file name here
    b"sub/tab\there.png",
]


def test_from_list_nul_separated_on_stdin(work, rng):
    for name in ODD_NAMES:
        make_image(Path(os.fsdecode(os.path.join(b"odd", name))), rng)
    listing = b"".join(os.path.join(b"odd", name) + b"\0" for name in ODD_NAMES)  # find -print0
    done = subprocess.run(
        [sys.executable, "-m", "adaptiveblur", "batch", "--from-list", "-", "out", *SIGMA],
        cwd=work,
        input=listing,
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT,
        env=subprocess_env(),
    )
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 0, err
    assert done.stdout == b""
    assert summary_of(err) == (len(ODD_NAMES), 0, 0)
    written = {os.fsencode(name) for name in files_under(work / "out")}
    assert written == set(ODD_NAMES)  # mirrored under the folder that holds them all
    for name in ODD_NAMES:
        source = Path(os.fsdecode(os.path.join(b"odd", name)))
        output = Path(os.fsdecode(os.path.join(b"out", name)))
        assert decoded(output) == decoded(source)


def test_from_list_newline_separated_file(capsys, work, rng):
    names = ["odd/with space.png", "odd/sub/x.png", "odd/\u00fcnicode \u2603.jpg", "y.png"]
    for name in names:
        make_image(work / name, rng)
    (work / "list.txt").write_bytes(
        b"odd/with space.png\nodd/sub/x.png\r\n\n"
        + "odd/\u00fcnicode \u2603.jpg\n".encode()
        + os.fsencode(work / "y.png")  # an absolute path, no final newline
    )
    code, _, err = cli(capsys, "batch", "--from-list", "list.txt", "out", *SIGMA)
    assert code == 0, err
    assert summary_of(err) == (4, 0, 0)
    assert files_under(work / "out") == set(names)


def test_from_list_newline_separated_on_stdin(capsys, work, rng, monkeypatch):
    for name in ("a.png", "b c.png"):
        make_image(work / "in" / name, rng)
    stdin = stdio.TextIOWrapper(stdio.BytesIO(b"in/a.png\nin/b c.png\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, _, err = cli(capsys, "batch", "--from-list", "-", "out", *SIGMA)
    assert code == 0, err
    assert files_under(work / "out") == {"a.png", "b c.png"}


def test_from_list_entry_that_does_not_exist(capsys, work, rng):
    for name in ("a.png", "b.png"):
        make_image(work / "in" / name, rng)
    (work / "list.txt").write_text("in/a.png\nin/missing.png\nin/b.png\n")
    code, out, err = cli(
        capsys, "batch", "--from-list", "list.txt", "out", "--report", "r.json", *SIGMA
    )
    assert (code, out) == (6, "")
    assert summary_of(err) == (2, 0, 1)
    (line,) = failure_lines(err)
    assert os.path.join("in", "missing.png") in line
    assert statuses(read_report(work / "r.json")) == {
        "a.png": "done",
        "b.png": "done",
        "missing.png": "failed",
    }
    assert files_under(work / "out") == {"a.png", "b.png"}


def test_read_list():
    assert planning.read_list(b"a.png\nb c.png\r\n\nd.png") == ["a.png", "b c.png", "d.png"]
    assert planning.read_list(b"a\nb.png\0c.png\0") == ["a\nb.png", "c.png"]
    assert planning.read_list(b"") == []
    assert planning.read_list(b"\xe9.png\n") == [os.fsdecode(b"\xe9.png")]


def test_relative_names_mirror_the_common_folder():
    assert planning.relative_names(["x/a/1.png", "x/b/2.png"]) == ["a/1.png", "b/2.png"]
    assert planning.relative_names(["x/a/1.png", "x/a/2.png"]) == ["1.png", "2.png"]
    assert planning.relative_names([]) == []


# ---- exit codes and usage ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected_code", "fragment"),
    [
        (["batch", "in", "out"], 2, "--max-sigma"),
        (["batch", "in", *SIGMA], 2, "IN_DIR OUT_DIR"),
        (["batch", "in", "out", "more", *SIGMA], 2, "IN_DIR OUT_DIR"),
        (["batch", "--from-list", "in/a.png", "in", "out", *SIGMA], 2, "--from-list"),
        (["batch", "in", "out", "--jobs", "0", *SIGMA], 2, "--jobs"),
        (["batch", "in", "out", "--processes", "0", *SIGMA], 2, "--processes"),
        (["batch", "in", "out", "--format", "xyz", *SIGMA], 2, "xyz"),
        (["batch", "in", "out", "--max-sigma", "-1"], 2, "max_sigma"),
        (["batch", "in", "out", "--quality", "0", *SIGMA], 2, "quality"),
        (["batch", "in", "out", "--bogus", *SIGMA], 2, "--bogus"),
        (["batch", "missing", "out", *SIGMA], 3, "missing"),
        (["batch", "in/a.png", "out", *SIGMA], 3, "not a folder"),
        (["batch", "--from-list", "nolist.txt", "out", *SIGMA], 3, "nolist.txt"),
        (["run", "in/a.png", "-o", "out", "--save-sigma", "s.png", *SIGMA], 2, "--save-sigma"),
    ],
    ids=[
        "no max-sigma",
        "one path",
        "three paths",
        "list and two paths",
        "jobs 0",
        "processes 0",
        "bad format",
        "negative sigma",
        "quality 0",
        "unknown option",
        "IN_DIR missing",
        "IN_DIR is a file",
        "list missing",
        "run -o with save-sigma",
    ],
)
def test_errors_before_any_work(capsys, work, tree, args, expected_code, fragment):
    before = snapshot(work)
    code, out, err = cli(capsys, *args)
    assert_clean_error(code, out, err, expected_code, fragment)
    assert snapshot(work) == before  # nothing written, not even OUT_DIR


def test_two_inputs_for_one_output_is_refused_before_any_work(capsys, work, rng):
    make_image(work / "in" / "a.png", rng)
    make_image(work / "in" / "a.jpg", rng)
    make_image(work / "in" / "b.png", rng)
    before = snapshot(work)
    code, out, err = cli(capsys, "batch", "in", "out", "--format", "png", *SIGMA)
    assert_clean_error(code, out, err, 2, "a.png")
    assert "a.jpg" in err and "both" in err
    assert snapshot(work) == before


def test_empty_folder_is_fine(capsys, work):
    (work / "in").mkdir()
    code, _, err = cli(capsys, "batch", "in", "out", *SIGMA)
    assert code == 0, err
    assert summary_of(err) == (0, 0, 0)


def test_discover_errors_and_hidden_entries(work, rng):
    for name in ["a.png", "A.JPG", ".b.png", ".dir/c.png", "sub/d.png", "sub/.e.png", "f.txt"]:
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    extensions = {".png", ".jpg"}
    assert planning.discover("./", None, False, extensions) == ["A.JPG", "a.png"]
    assert planning.discover(".", None, True, extensions) == ["A.JPG", "a.png", "sub/d.png"]
    assert planning.discover(".", ["*.txt", ".b*"], True, extensions) == ["f.txt"]
    with pytest.raises(InputImageError, match="not a folder"):
        planning.discover("a.png", None, True, extensions)


# ---- outputs that are inputs ------------------------------------------------------------


def test_same_folder_without_suffix_skips_then_refuses(capsys, work, tree):
    before = snapshot(work / "in")
    code, _, err = cli(capsys, "batch", "in", "in", "-r", *SIGMA)
    assert code == 0, err
    assert summary_of(err) == (0, 4, 0)  # every output exists: it is its input
    assert snapshot(work / "in") == before

    code, _, err = cli(capsys, "batch", "in", "in", "-r", "--overwrite", *SIGMA)
    assert code == 6
    assert summary_of(err) == (0, 0, 4)
    lines = failure_lines(err)
    assert len(lines) == 4 and all("refusing to overwrite the input" in line for line in lines)
    assert snapshot(work / "in") == before


def test_output_folder_linked_to_the_input_folder_is_refused(capsys, work, tree):
    (work / "out").symlink_to(work / "in", target_is_directory=True)
    before = snapshot(work / "in")
    code, _, err = cli(capsys, "batch", "in", "out", "--overwrite", *SIGMA)
    assert code == 6
    assert summary_of(err) == (0, 0, 2)
    assert snapshot(work / "in") == before


def test_rerun_in_the_input_folder_with_a_suffix_does_nothing_new(capsys, work, tree):
    assert cli(capsys, "batch", "in", "in", "--suffix", "-soft", *SIGMA)[0] == 0
    first = files_under(work / "in")
    code, _, err = cli(capsys, "batch", "in", "in", "--suffix", "-soft", *SIGMA)
    assert code == 0, err
    assert files_under(work / "in") == first
    assert summary_of(err) == (0, 2, 0)


def test_rerun_with_output_inside_input_does_nothing_new(capsys, work, tree):
    assert cli(capsys, "batch", "in", "in/soft", "-r", *SIGMA)[0] == 0
    first = files_under(work / "in")
    code, _, err = cli(capsys, "batch", "in", "in/soft", "-r", *SIGMA)
    assert code == 0, err
    assert files_under(work / "in") == first
    assert summary_of(err) == (0, 4, 0)


# ---- messages ---------------------------------------------------------------------------


def test_failure_line_shows_the_path_verbatim(capsys, work):
    (work / "in").mkdir()
    (work / "in" / "x:cat:.png").write_text("not an image\n")
    code, _, err = cli(capsys, "batch", "in", "out", *SIGMA)
    assert code == 6
    (line,) = failure_lines(err)
    assert os.path.join("in", "x:cat:.png") in line


def test_output_folder_that_is_a_file(capsys, work, tree):
    (work / "out").write_text("a file, not a folder\n")
    code, _, err = cli(capsys, "batch", "in", "out", *SIGMA)
    assert code in (4, 6), err
    lines = [line for line in err.splitlines() if line.startswith((FAILED, PREFIX))]
    assert lines and all("out" in line for line in lines), err  # name what is in the way
    assert (work / "out").read_text() == "a file, not a folder\n"


def test_report_in_a_missing_folder(capsys, work, tree):
    code, _, err = cli(capsys, "batch", "in", "out", "--report", "nowhere/r.json", *SIGMA)
    checked_first = code == 4 and not (work / "out").exists()
    written_anyway = code == 0 and (work / "nowhere" / "r.json").is_file()
    assert checked_first or written_anyway, (code, err)


# ---- run -o DIR -------------------------------------------------------------------------


def test_run_with_several_inputs_and_output_dir(capsys, work, rng):
    make_image(work / "a.png", rng)
    make_image(work / "b.jpg", rng)
    code, out, err = cli(capsys, "run", "a.png", "b.jpg", "-o", "outdir", *SIGMA)
    assert (code, out) == (0, "")
    assert summary_of(err) == (2, 0, 0)
    assert files_under(work / "outdir") == {"a.png", "b.jpg"}
    assert cli(capsys, "run", "a.png", "single.png", *SIGMA)[0] == 0
    assert (work / "outdir" / "a.png").read_bytes() == (work / "single.png").read_bytes()

    code, _, err = cli(capsys, "run", "a.png", "b.jpg", "--output-dir", "outdir", *SIGMA)
    assert code == 0, err
    assert summary_of(err) == (0, 2, 0)
    code, _, err = cli(capsys, "run", "a.png", "b.jpg", "-o", "outdir", "--overwrite", *SIGMA)
    assert code == 0, err
    assert summary_of(err) == (2, 0, 0)


def test_run_output_dir_mirrors_and_reports_failures(capsys, work, rng):
    make_image(work / "x" / "a.png", rng)
    make_image(work / "y" / "z" / "b.png", rng)
    code, _, err = cli(capsys, "run", "x/a.png", "y/z/b.png", "nope.png", "-o", "out", *SIGMA)
    assert code == 6
    assert summary_of(err) == (2, 0, 1)
    (line,) = failure_lines(err)
    assert "nope.png" in line
    assert files_under(work / "out") == {"x/a.png", "y/z/b.png"}


# ---- planning ---------------------------------------------------------------------------


def test_plan_paths():
    tasks = planning.plan(
        ["i/a.png", "i/s/b.jpg"], ["a.png", "s/b.jpg"], "o", suffix="-x", output_format="WEBP"
    )
    assert [task.dest for task in tasks] == [
        os.path.join("o", "a-x.webp"),
        os.path.join("o", "s", "b-x.webp"),
    ]
    with pytest.raises(InvalidParameterError, match="both"):
        planning.plan(["a.png", "a.jpg"], ["a.png", "a.jpg"], "o", output_format="PNG")


# ---- several GPUs -----------------------------------------------------------------------


@pytest.mark.cuda
def test_batch_spreads_files_over_every_gpu(capsys, work, rng):
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    count = 4 * torch.cuda.device_count()
    for index in range(count):
        make_image(work / "in" / f"img{index:02d}.png", rng, size=(301, 257))
    args = ["in", "--report", "report.json", "--jobs", str(2 * count), *SIGMA]
    code, _, err = cli(capsys, "batch", args[0], "gpus", *args[1:], "--device", "cuda")
    assert code == 0, err
    report = read_report(work / "report.json")
    used = {entry["device"] for entry in report["files"]}
    assert len(used) >= 2 and all(device.startswith("cuda:") for device in used), used
    code, _, err = cli(capsys, "batch", args[0], "cpu", *args[1:], "--device", "cpu")
    assert code == 0, err
    for index in range(count):
        name = f"img{index:02d}.png"
        on_gpu = np.asarray(PILImage.open(work / "gpus" / name), dtype=np.int16)
        on_cpu = np.asarray(PILImage.open(work / "cpu" / name), dtype=np.int16)
        assert np.abs(on_gpu - on_cpu).max() <= 1, name  # float32 rounding may flip a code
    code, _, err = cli(
        capsys, "batch", "in", "listed", "--devices", "1", "--report", "r1.json", *SIGMA
    )
    assert code == 0, err
    assert {entry["device"] for entry in read_report(work / "r1.json")["files"]} == {"cuda:1"}


@pytest.mark.cuda
@pytest.mark.parametrize("with_map", [False, True], ids=["own-sigma", "map-file"])
def test_gpu_batch_of_repeated_shapes_gives_what_run_gives(capsys, work, rng, with_map):
    """Repeated shapes replay a recorded CUDA graph (adaptiveblur.batch.graphs): same bytes."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    names = []
    for index in range(4):
        for mode, size in (("RGB", (31, 17)), ("RGBA", (12, 40)), ("L", (31, 17))):
            name = f"{mode}{index}.png"
            make_image(work / "in" / name, rng, mode=mode, size=size)
            names.append(name)
    options = ["--max-sigma", "5", "--device", "cuda"]
    if with_map:
        make_image(work / "map.png", rng, mode="L", size=(9, 7))
        options += ["--map", "map.png", "--resize-map"]
    code, _, err = cli(capsys, "batch", "in", "out", "--jobs", "3", *options)
    assert code == 0, err
    for name in names:
        assert cli(capsys, "run", f"in/{name}", "single.png", *options)[0] == 0
        assert (work / "out" / name).read_bytes() == (work / "single.png").read_bytes(), name


# ---- one sigma map file for every image -------------------------------------------------


def test_map_file_gives_what_run_gives_for_each_image(capsys, work, rng):
    make_image(work / "map.png", rng, mode="L", size=(21, 15))
    for name, size in (("a.png", (21, 15)), ("b.png", (21, 15)), ("odd.png", (13, 9))):
        make_image(work / "in" / name, rng, size=size)
    options = ["--map", "map.png", "--max-sigma", "3"]
    code, _, err = cli(capsys, "batch", "in", "out", *options)
    assert code == 6, err
    assert "odd.png" in err and "--resize-map" in err
    code, _, err = cli(capsys, "batch", "in", "resized", *options, "--resize-map")
    assert code == 0, err
    for name in ("a.png", "b.png", "odd.png"):
        extra = ["--resize-map"] if name == "odd.png" else []
        assert cli(capsys, "run", f"in/{name}", f"single-{name}", *options, *extra)[0] == 0
        single = (work / f"single-{name}").read_bytes()
        assert (work / "resized" / name).read_bytes() == single, name
        if name != "odd.png":
            assert (work / "out" / name).read_bytes() == single, name
