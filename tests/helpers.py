"""What many test files need: tiny images, the CLI run in-process or as a subprocess, snapshots
of folders, clean-error assertions and temporaries. The references live in ``oracle.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from adaptiveblur import io as abio
from adaptiveblur.batch.manifest import MANIFEST_PREFIX

HEIGHT, WIDTH = 17, 23  # a small image of odd sizes
EXACT = 1e-5  # float32 against the float64 oracle: the documented promise
PREFIX = "adaptiveblur: error:"  # how every error line starts
FAILED = "adaptiveblur: failed:"  # how a batch reports a file that failed
ORIENTATION = 0x0112  # the EXIF orientation tag
REPO = Path(__file__).resolve().parents[1]
SUBPROCESS_TIMEOUT = 120


# ---- images -----------------------------------------------------------------------------


def chw(pixels: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` → ``(C, H, W)`` float64."""
    return np.asarray(pixels, dtype=np.float64).transpose(2, 0, 1)


def make_image(pixels: np.ndarray, mode: str, bit_depth: int = 8) -> abio.Image:
    """An :class:`adaptiveblur.io.Image` of float32 ``pixels``."""
    return abio.Image(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32), mode=mode, bit_depth=bit_depth
    )


def random_rgb(rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """8-bit representable float RGB pixels ``(H, W, 3)``."""
    return (rng.integers(0, 256, (height, width, 3)) / 255.0).astype(np.float32)


def random_values(rng: np.random.Generator, h: int, w: int, c: int, bit_depth: int) -> np.ndarray:
    """Random integer samples ``(h, w, c)`` at ``bit_depth``."""
    return rng.integers(0, 2**bit_depth, size=(h, w, c), dtype=np.int64)


def image_from_values(values: np.ndarray, mode: str, bit_depth: int, **meta: object) -> abio.Image:
    """An :class:`adaptiveblur.io.Image` whose pixels are exactly ``values / maxval``."""
    pixels = (values / (2**bit_depth - 1)).astype(np.float32)
    return abio.Image(pixels=pixels, mode=mode, bit_depth=bit_depth, **meta)  # type: ignore[arg-type]


def values_of(image: abio.Image) -> np.ndarray:
    """The integer samples an image's float pixels stand for."""
    return np.rint(image.pixels.astype(np.float64) * (2**image.bit_depth - 1)).astype(np.int64)


def pillow_reduction(picture: PILImage.Image, mode: str) -> np.ndarray:
    """What pillow decodes a 16-bit colour PNG to: 8 bits, grey+alpha widened to RGBA."""
    values = np.asarray(picture)
    if mode == "LA":
        assert picture.mode == "RGBA"
        assert (values[..., 0] == values[..., 1]).all() and (values[..., 0] == values[..., 2]).all()
        return values[..., [0, 3]]
    assert picture.mode == mode
    return values


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def srgb_profile() -> bytes:
    ImageCms = pytest.importorskip("PIL.ImageCms")
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_bytes(orientation: int, **tags: object) -> bytes:
    """EXIF with ``orientation`` and ``_XXXX=value`` tags (hex tag numbers)."""
    exif = PILImage.Exif()
    exif[ORIENTATION] = orientation
    for tag, value in tags.items():
        exif[int(tag.lstrip("_"), 16)] = value
    data = exif.tobytes()
    assert data.startswith(b"Exif\x00\x00")
    return data[6:]  # the bare TIFF structure, as a PNG eXIf chunk holds it


def orientation_of(exif: bytes | None) -> int | None:
    assert exif is not None
    parsed = PILImage.Exif()
    parsed.load(exif)
    return parsed.get(ORIENTATION)


def pixels_of(path: Path) -> np.ndarray:
    """The samples of an image file, as pillow decodes them."""
    with PILImage.open(path) as picture:
        return np.asarray(picture).copy()


# ---- folders ----------------------------------------------------------------------------


def files_under(root: Path, *, manifests: bool = False) -> set[str]:
    """Every file below ``root`` (hidden ones included), as ``/``-separated relative names;
    a batch's manifest files only with ``manifests``."""
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if not p.is_dir() and (manifests or not is_manifest(p))
    }


def is_manifest(path: Path) -> bool:
    """Whether ``path`` is a manifest a batch keeps in its output folder (see
    :mod:`adaptiveblur.batch.manifest`)."""
    return path.name.startswith(MANIFEST_PREFIX)


def temporaries(root: Path) -> list[str]:
    """Temporary files left below ``root`` (relative names, sorted)."""
    return sorted(name for name in files_under(root) if name.endswith(".tmp"))


def snapshot(directory: Path, *, manifests: bool = True) -> dict[str, bytes | None]:
    """Every entry under ``directory``: files with their bytes, folders as ``None``; without
    ``manifests``, a batch's manifest files are left out (they record modification times)."""
    return {
        str(path.relative_to(directory)): None if path.is_dir() else path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if manifests or not is_manifest(path)
    }


# ---- the command line -------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command in-process: ``(exit code, stdout, stderr)``."""
    from adaptiveblur.cli import main

    capsys.readouterr()  # drop what fixtures printed (the random seed)
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_error(
    code: int, out: str, err: str, expected_code: int, fragment: str = ""
) -> None:
    """One error line on stderr (no traceback), nothing on stdout, the expected exit code."""
    assert code == expected_code, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(PREFIX)
    assert "Traceback" not in err
    assert fragment in lines[0], lines[0]


def subprocess_env() -> dict[str, str]:
    """This environment, with the checkout importable and no colour or warning settings."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for name in ("FORCE_COLOR", "PYTHONWARNINGS"):
        env.pop(name, None)
    return env


def run_subprocess(
    args: list[str], cwd: Path, **kwargs: object
) -> subprocess.CompletedProcess[bytes]:
    """``python ARGS`` in ``cwd`` with :func:`subprocess_env` (or ``env=``), captured, with a
    time limit (or ``timeout=``)."""
    kwargs.setdefault("env", subprocess_env())
    kwargs.setdefault("timeout", SUBPROCESS_TIMEOUT)
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        **kwargs,  # type: ignore[call-overload]
    )


def assert_interrupted(process: subprocess.Popen[bytes]) -> str:
    """Send Ctrl-C to a running command: it must exit 130 with one clean line; returns stderr."""
    try:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    text = err.decode()
    assert process.returncode == 130, text
    assert out == b""
    assert f"{PREFIX} interrupted" in text
    assert "Traceback" not in text
    return text


def slow_or_interrupted(task: str) -> str:
    """A batch worker for tests of stopping (importable by a worker process): ``"stop"``
    raises KeyboardInterrupt at once, any other task returns itself after 0.5 s."""
    if task == "stop":
        raise KeyboardInterrupt
    time.sleep(0.5)
    return task
