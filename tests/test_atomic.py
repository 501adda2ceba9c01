"""adaptiveblur.io.atomic through save_image: stdout gets only whole images, files are written
atomically (complete or untouched, no temporary left), and output errors are clear."""

from __future__ import annotations

import io
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from adaptiveblur.errors import OutputImageError
from adaptiveblur.io import Image, atomic, load_image, png, save_image
from tests.helpers import image_from_values, random_values, temporaries, values_of, write
from tests.oracle import png_chunk

# ---- stdout -----------------------------------------------------------------------------


def test_stdout_needs_a_format(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = types.SimpleNamespace(buffer=io.BytesIO())
    monkeypatch.setattr(sys, "stdout", stdout)
    image = Image(np.zeros((2, 2, 3), np.float32), "RGB", 8)
    with pytest.raises(OutputImageError, match="writing to stdout needs a format"):
        save_image(image, "-")
    assert stdout.buffer.getvalue() == b""


def test_stdout_gets_only_the_image(
    monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator
) -> None:
    stdout = types.SimpleNamespace(buffer=io.BytesIO())
    monkeypatch.setattr(sys, "stdout", stdout)
    values = random_values(rng, 7, 13, 4, 16)
    save_image(image_from_values(values, "RGBA", 16), "-", format="png")
    data = stdout.buffer.getvalue()
    assert data.startswith(b"\x89PNG") and data.endswith(png_chunk(b"IEND", b""))
    np.testing.assert_array_equal(values_of(load_image(io.BytesIO(data))), values)


def test_stdout_untouched_when_encoding_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = types.SimpleNamespace(buffer=io.BytesIO())
    monkeypatch.setattr(sys, "stdout", stdout)

    def half_then_fail(
        self: PILImage.Image, fp: io.BytesIO, *args: object, **kwargs: object
    ) -> None:
        fp.write(b"partial")
        raise OSError("encoder exploded")

    monkeypatch.setattr(PILImage.Image, "save", half_then_fail)
    with pytest.raises(OutputImageError, match="encoder exploded"):
        save_image(Image(np.zeros((2, 2, 3), np.float32), "RGB", 8), "-", format="jpeg")
    assert stdout.buffer.getvalue() == b""


# ---- output errors and atomic writes ------------------------------------------------------


def test_missing_directory(tmp_path: Path) -> None:
    image = Image(np.zeros((2, 2, 3), np.float32), "RGB", 8)
    with pytest.raises(OutputImageError, match="does not exist"):
        save_image(image, tmp_path / "no" / "such" / "out.png")


def test_destination_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d.png").mkdir()
    image = Image(np.zeros((2, 2, 3), np.float32), "RGB", 8)
    with pytest.raises(OutputImageError, match="is a directory"):
        save_image(image, tmp_path / "d.png")
    assert temporaries(tmp_path) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputImageError, match="permission denied"):
            save_image(Image(np.zeros((2, 2, 3), np.float32), "RGB", 8), locked / "out.png")
    finally:
        locked.chmod(0o700)


def test_temporary_file_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The message mapping behind test_unwritable_directory, which root cannot run."""

    def denied(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(OutputImageError, match=r"cannot write '.*out\.png': permission denied"):
        save_image(Image(np.zeros((2, 2, 3), np.float32), "RGB", 8), tmp_path / "out.png")


def test_no_overwrite(tmp_path: Path) -> None:
    dest = write(tmp_path / "out.png", b"precious")
    image = Image(np.zeros((2, 2, 3), np.float32), "RGB", 8)
    with pytest.raises(OutputImageError, match="already exists"):
        save_image(image, dest, overwrite=False)
    assert dest.read_bytes() == b"precious"
    save_image(image, tmp_path / "new.png", overwrite=False)
    assert load_image(tmp_path / "new.png").pixels.shape == (2, 2, 3)
    assert temporaries(tmp_path) == []


def test_overwrite_replaces_and_leaves_no_temporary(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    dest = write(tmp_path / "out.png", b"old")
    dest.chmod(0o640)
    values = random_values(rng, 3, 4, 3, 8)
    save_image(image_from_values(values, "RGB", 8), dest)
    np.testing.assert_array_equal(values_of(load_image(dest)), values)
    assert temporaries(tmp_path) == []
    assert dest.stat().st_mode & 0o777 == 0o640


def test_write_through_symlink(tmp_path: Path) -> None:
    target = write(tmp_path / "target.png", b"old")
    link = tmp_path / "link.png"
    link.symlink_to(target)
    save_image(Image(np.ones((2, 2, 1), np.float32), "L", 8), link)
    assert link.is_symlink()
    assert load_image(target).pixels.min() == 1


@pytest.mark.parametrize(("name", "encoder"), [("out.tif", "pillow"), ("out.png", "png")])
@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError, ValueError])
def test_failed_save_leaves_destination_untouched(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    encoder: str,
    failure: type[BaseException],
) -> None:
    dest = write(tmp_path / name, b"original bytes")

    if encoder == "pillow":

        def broken(
            self: PILImage.Image, fp: io.BufferedWriter, *args: object, **kwargs: object
        ) -> None:
            fp.write(b"half an image")
            raise failure("boom")

        monkeypatch.setattr(PILImage.Image, "save", broken)
    else:

        def broken_png(*args: object) -> bytes:
            raise failure("boom")

        monkeypatch.setattr(png, "encode", broken_png)
    image = Image(np.zeros((3, 3, 3), np.float32), "RGB", 8)
    expected = KeyboardInterrupt if failure is KeyboardInterrupt else OutputImageError
    with pytest.raises(expected):
        save_image(image, dest)
    assert dest.read_bytes() == b"original bytes"
    assert temporaries(tmp_path) == []


def test_failed_rename_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_rename(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OutputImageError, match="permission denied"):
        save_image(Image(np.zeros((3, 3, 3), np.float32), "RGB", 8), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_are_found_by_output_name(tmp_path: Path) -> None:
    write(tmp_path / ".a.png.0f0f0f0f.tmp", b"killed while writing a.png")
    write(tmp_path / ".a.png.12ab.tmp", b"and again")
    write(tmp_path / ".b.c.png.abc123.tmp", b"a name with dots")
    write(tmp_path / "a.png", b"not a temporary")
    write(tmp_path / ".hidden", b"not a temporary")
    write(tmp_path / ".x.png.NOTHEX.tmp", b"not ours")
    found = atomic.stale_temporaries(tmp_path)
    assert {name: sorted(paths) for name, paths in found.items()} == {
        "a.png": sorted(str(tmp_path / n) for n in (".a.png.0f0f0f0f.tmp", ".a.png.12ab.tmp")),
        "b.c.png": [str(tmp_path / ".b.c.png.abc123.tmp")],
    }
    assert atomic.stale_temporaries(tmp_path / "missing") == {}


def test_a_killed_write_leaves_a_temporary_stale_temporaries_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The naming the writer uses is the naming the finder parses."""

    def killed(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "unlink", lambda path: None)  # as if killed before the clean-up
    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_text_atomically(tmp_path / "report.json", "{}")
    monkeypatch.undo()
    (left,) = temporaries(tmp_path)
    assert atomic.stale_temporaries(tmp_path) == {"report.json": [str(tmp_path / left)]}


def test_write_text_atomically(tmp_path: Path) -> None:
    atomic.write_text_atomically(tmp_path / "report.txt", "first")
    atomic.write_text_atomically(tmp_path / "report.txt", "second ✓")
    assert (tmp_path / "report.txt").read_text(encoding="utf-8") == "second ✓"
    assert temporaries(tmp_path) == []
