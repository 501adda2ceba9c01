"""Outputs that fail or go away: full devices, closed pipes, FIFOs, ``/dev/null``, ``--report -``.

Most tests run the command as a real process, since what is checked (exit codes, stdout's
flush at exit, SIGPIPE, what the interpreter prints when it shuts down) only exists there.
Device outputs are private copies of ``/dev/full`` and ``/dev/null`` made with mknod where
that works, so a regression cannot replace the system's own.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adaptiveblur import io as abio
from adaptiveblur.cli import main
from adaptiveblur.errors import EXIT_OUTPUT, BrokenPipeOutputError, OutputImageError
from adaptiveblur.io import atomic
from tests.helpers import (
    PREFIX,
    SUBPROCESS_TIMEOUT,
    make_image,
    random_rgb,
    run_subprocess,
    subprocess_env,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN = ["-m", "adaptiveblur", "run", "in.png"]
BLUR = ["--format", "png", "--max-sigma", "1"]
# An image whose PNG is far larger than a pipe's buffer (64 KiB), so a reader that stops
# early is seen mid-write; noise does not compress and sigma 0 keeps it noise.
LARGE = 512


def assert_one_error_line(done: subprocess.CompletedProcess[bytes], fragment: str) -> None:
    """Exit 4, nothing on stdout, one error line naming ``fragment``, no traceback."""
    err = done.stderr.decode()
    assert done.returncode == 4, err
    assert done.stdout in (b"", None)  # None: stdout went elsewhere
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(PREFIX)
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err and "Exception ignored" not in err


def device_like(tmp_path: Path, name: str) -> Path:
    """A character device that behaves as ``/dev/<name>``: a private node where mknod and
    the file system allow it, else the system's own (skipped where it is missing)."""
    system = Path("/dev") / name
    if not system.exists() or not stat.S_ISCHR(system.stat().st_mode):
        pytest.skip(f"{system} is not a character device here")
    private = tmp_path / f"dev-{name}"
    try:
        os.mknod(private, stat.S_IFCHR | 0o666, system.stat().st_rdev)
        os.chmod(private, 0o666)
        with open(private, "wb", buffering=0):  # a nodev mount refuses to open it
            pass
    except OSError:
        private.unlink(missing_ok=True)
        return system
    return private


def assert_still_the_device(path: Path, name: str) -> None:
    """``path`` is still the character device it was, not a file put in its place."""
    mode = path.stat().st_mode
    assert stat.S_ISCHR(mode), f"{path} was replaced by a file"
    assert path.stat().st_rdev == (Path("/dev") / name).stat().st_rdev


def into_a_closed_pipe(args: list[str], work: Path) -> subprocess.CompletedProcess[bytes]:
    """``python ARGS`` with stdout a pipe whose reader has already gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, *args],
            cwd=work,
            env=subprocess_env(),
            stdout=write,
            stderr=subprocess.PIPE,
            timeout=SUBPROCESS_TIMEOUT,
        )
    finally:
        os.close(write)


@pytest.fixture
def small(work: Path, rng: np.random.Generator) -> Path:
    """``in.png``: a small RGB image (its PNG fits in stdout's buffer)."""
    abio.save_image(make_image(random_rgb(rng), "RGB"), work / "in.png")
    return work / "in.png"


@pytest.fixture
def large(work: Path, rng: np.random.Generator) -> Path:
    """``in.png``: RGB noise whose PNG is several pipe buffers long."""
    abio.save_image(make_image(random_rgb(rng, LARGE, LARGE), "RGB"), work / "in.png")
    assert (work / "in.png").stat().st_size > 8 * 65536
    return work / "in.png"


# ---- devices as OUT ---------------------------------------------------------------------


def test_full_device_as_out_is_an_output_error(work, small):
    full = device_like(work, "full")
    done = run_subprocess([*RUN, str(full), *BLUR], work)
    assert_one_error_line(done, "no space left on the device")
    assert_still_the_device(full, "full")
    assert [path.name for path in work.iterdir() if path.name.endswith(".tmp")] == []


def test_null_device_as_out_succeeds(work, small):
    null = device_like(work, "null")
    done = run_subprocess([*RUN, str(null), *BLUR], work)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    assert_still_the_device(null, "null")


@pytest.mark.parametrize("image", ["small", "large"])
def test_stdout_redirected_to_a_full_device_is_an_output_error(work, image, request):
    # small: the bytes wait in stdout's buffer and the flush fails; large: the write does.
    request.getfixturevalue(image)
    full = device_like(work, "full")
    with open(full, "wb") as stdout:
        done = subprocess.run(
            [sys.executable, *RUN, "-", *BLUR, "--max-sigma", "0"],
            cwd=work,
            env=subprocess_env(),
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=SUBPROCESS_TIMEOUT,
        )
    assert_one_error_line(done, "cannot write to <stdout>: no space left on the device")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), 4),
        (BrokenPipeError(errno.EPIPE, "x"), 141),
    ],
    ids=["no-space", "broken-pipe"],
)
def test_a_failed_final_flush_of_stdout_is_not_a_success(
    capsys, monkeypatch, small, error, expected
):
    class Unflushable(io.StringIO):
        def flush(self) -> None:
            raise error

    monkeypatch.setattr(sys, "stdout", Unflushable())
    code = main(["run", "in.png", "out.png", "--max-sigma", "1"])
    err = capsys.readouterr().err
    assert code == expected, err
    if expected == 141:
        assert err == ""
    else:
        assert err == f"{PREFIX} cannot write to <stdout>: no space left on the device\n"


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs sh")
def test_closed_stdout_is_an_output_error(work, small):
    done = subprocess.run(
        ["sh", "-c", '"$0" "$@" >&-', sys.executable, *RUN, "-", *BLUR],
        cwd=work,
        env=subprocess_env(),
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert_one_error_line(done, "cannot write to <stdout>: it is closed")


# ---- pipes ------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("head") is None, reason="needs head")
def test_a_reader_that_stops_early_ends_the_command_quietly(work, large):
    read, write = os.pipe()
    head = subprocess.Popen(["head", "-c", "100"], stdin=read, stdout=subprocess.PIPE)
    os.close(read)
    blur = subprocess.Popen(
        [sys.executable, *RUN, "-", *BLUR, "--max-sigma", "0"],
        cwd=work,
        env=subprocess_env(),
        stdout=write,
        stderr=subprocess.PIPE,
    )
    os.close(write)
    try:
        _, err = blur.communicate(timeout=SUBPROCESS_TIMEOUT)
        taken, _ = head.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        for process in (blur, head):
            if process.poll() is None:
                process.kill()
    assert taken.startswith(PNG_SIGNATURE) and len(taken) == 100
    assert (blur.returncode, err.decode()) == (141, "")


def test_a_pipe_closed_before_the_write_ends_the_command_quietly(work, small):
    done = into_a_closed_pipe([*RUN, "-", *BLUR], work)
    assert (done.returncode, done.stderr.decode()) == (141, "")


def test_fifo_without_a_reader_fails_at_once(work, small):
    fifo = work / "out.fifo"
    os.mkfifo(fifo)
    done = run_subprocess([*RUN, "out.fifo", *BLUR], work)  # a hang fails on the time limit
    assert_one_error_line(done, "no process is reading it")
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_fifo_with_a_reader_gets_the_image(work, small):
    fifo = work / "out.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader is there before the write
    try:
        done = run_subprocess([*RUN, "out.fifo", *BLUR], work)
        received = b""
        while chunk := os.read(reader, 1 << 20):  # the small PNG fits in the FIFO's buffer
            received += chunk
    finally:
        os.close(reader)
    assert (done.returncode, done.stderr) == (0, b"")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert run_subprocess([*RUN, "file.png", *BLUR], work).returncode == 0
    assert received == (work / "file.png").read_bytes()


# ---- the library: streams that take less than they are given ----------------------------


class _Trickle(io.BytesIO):
    """A stream that takes at most ``limit`` bytes a call, then raises ``error`` once
    ``capacity`` bytes are in (like a buffered pipe whose reader left)."""

    def __init__(self, limit: int, capacity: int | None = None, error: OSError | None = None):
        super().__init__()
        self.limit, self.capacity, self.error = limit, capacity, error

    def write(self, data) -> int:
        if self.capacity is not None and self.tell() >= self.capacity:
            assert self.error is not None
            raise self.error
        return super().write(bytes(memoryview(data)[: self.limit]))


def test_a_stream_that_takes_little_at_a_time_gets_everything(rng):
    image = make_image(random_rgb(rng), "RGB")
    whole, trickle = io.BytesIO(), _Trickle(limit=7)
    abio.save_image(image, whole, format="png")
    abio.save_image(image, trickle, format="png")
    assert trickle.getvalue() == whole.getvalue()


@pytest.mark.parametrize(
    ("error", "kind"),
    [(BrokenPipeError(32, "Broken pipe"), BrokenPipeOutputError), (OSError(28, "full"), None)],
    ids=["broken-pipe", "no-space"],
)
def test_a_short_write_then_an_error_is_raised(rng, error, kind):
    stream = _Trickle(limit=100, capacity=100, error=error)
    with pytest.raises(OutputImageError) as raised:
        abio.save_image(make_image(random_rgb(rng), "RGB"), stream, format="png")
    assert isinstance(raised.value, BrokenPipeOutputError) == (kind is not None)
    assert isinstance(raised.value, BrokenPipeError) == (kind is not None)


def test_fifo_is_not_replaced_when_overwrite_is_off(tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputImageError, match="already exists"):
        atomic.write_file_atomically(str(fifo), lambda stream: None, overwrite=False)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


# ---- batch --report - -------------------------------------------------------------------


@pytest.fixture
def photos(work: Path, rng: np.random.Generator) -> list[str]:
    """Two small images in ``photos/``."""
    (work / "photos").mkdir()
    names = ["photos/a.png", "photos/b.png"]
    for name in names:
        abio.save_image(make_image(random_rgb(rng), "RGB"), work / name)
    return names


BATCH = ["-m", "adaptiveblur", "batch", "photos", "soft", "--max-sigma", "1", "-j", "1"]


def test_report_dash_goes_to_stdout(work, photos):
    done = run_subprocess([*BATCH, "--report", "-"], work)
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)  # the report alone: the summary line is on stderr
    assert sorted(entry["input"] for entry in report["files"]) == photos
    assert {entry["status"] for entry in report["files"]} == {"done"}
    assert "2 done" in done.stderr.decode()
    assert not (work / "-").exists()
    assert {"a.png", "b.png"} <= {path.name for path in (work / "soft").iterdir()}


def test_report_dash_to_a_closed_pipe_ends_quietly(work, photos):
    done = into_a_closed_pipe([*BATCH, "--quiet", "--report", "-"], work)
    assert (done.returncode, done.stderr.decode()) == (141, "")
    assert not (work / "-").exists()


def test_report_dash_to_a_full_device_is_an_output_error(work, photos):
    full = device_like(work, "full")
    with open(full, "wb") as stdout:
        done = subprocess.run(
            [sys.executable, *BATCH, "--quiet", "--report", "-"],
            cwd=work,
            env=subprocess_env(),
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=SUBPROCESS_TIMEOUT,
        )
    assert_one_error_line(done, "cannot write to <stdout>: no space left on the device")


@pytest.mark.parametrize("args", [["--version"], ["run", "--help"]])
def test_text_the_command_prints_to_a_full_stdout_is_an_output_error(work, args):
    with open(device_like(work, "full"), "wb") as full:
        done = subprocess.run(
            [sys.executable, "-m", "adaptiveblur", *args],
            cwd=work,
            env=subprocess_env(),
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=SUBPROCESS_TIMEOUT,
        )
    text = done.stderr.decode()
    assert done.returncode == EXIT_OUTPUT, text
    assert text.startswith(PREFIX) and len(text.splitlines()) == 1 and "Traceback" not in text
