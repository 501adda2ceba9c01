"""URLs (``memory://``, ``s3://``, any fsspec protocol) for ``run``, ``--map``, ``batch`` and
``--from-list``: the same bytes as local paths, one-line errors, whole outputs or none.

fsspec's ``memory://`` store lives in this process, so every command here runs in-process
(:func:`tests.helpers.cli`). Each test gets a folder of its own in the store, removed after.
The local outputs the URLs are compared with come from the same commands on local paths.
"""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path

import fsspec  # installed with torch
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from PIL import Image as PILImage

from adaptiveblur import io as abio
from adaptiveblur.io import remote
from tests.helpers import assert_clean_error, cli, files_under

SIGMA = ["--max-sigma", "4", "--quiet"]
TREE = {"a.png": (17, 23), "sub/b.jpg": (21, 9), "sub/deeper/c.png": (7, 31)}
HIDDEN = [".hidden.png", "sub/.cache/d.png"]


@pytest.fixture
def store():
    """A fresh folder in the process's memory store: ``(url, memory file system)``."""
    root = f"memory://test-{uuid.uuid4().hex}"
    memory = fsspec.filesystem("memory")
    yield root, memory
    if memory.exists(root):
        memory.rm(root, recursive=True)


@pytest.fixture
def tree(work: Path, rng: np.random.Generator) -> Path:
    """``in/``: RGB noise of odd sizes, in a subfolder too, and hidden files to be left out."""
    for name in [*TREE, *HIDDEN]:
        height, width = TREE.get(name, (5, 6))
        path = work / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return work / "in"


def upload(memory: MemoryFileSystem, folder: Path, url: str) -> None:
    """Copy every file below ``folder`` to the store below ``url``."""
    for path in folder.rglob("*"):
        if path.is_file():
            memory.pipe_file(
                remote.join(url, path.relative_to(folder).as_posix()), path.read_bytes()
            )


def stored(memory: MemoryFileSystem, url: str) -> dict[str, bytes]:
    """Every object below ``url`` (hidden ones included), as the store lists it: relative name
    to bytes."""
    root = memory._strip_protocol(url).rstrip("/") + "/"
    return {path[len(root) :]: memory.cat_file(path) for path in memory.find(root)}


def local(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in files_under(folder)}


def ok(capsys, *args: str) -> str:
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    assert out == ""
    return err


# ---- run ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("read_url", "write_url"), [(True, True), (True, False), (False, True)])
def test_run_with_urls_writes_the_local_bytes(capsys, work, tree, store, read_url, write_url):
    root, memory = store
    upload(memory, tree, f"{root}/in")
    ok(capsys, "run", "in/a.png", "a.png", "--save-sigma", "sigma.png", *SIGMA)
    source = f"{root}/in/a.png" if read_url else "in/a.png"
    dest, sigma = (
        (f"{root}/out/a.png", f"{root}/out/sigma.png") if write_url else ("o.png", "s.png")
    )
    ok(capsys, "run", source, dest, "--save-sigma", sigma, *SIGMA)
    read = memory.cat_file if write_url else (lambda path: Path(path).read_bytes())
    assert read(dest) == (work / "a.png").read_bytes()
    assert read(sigma) == (work / "sigma.png").read_bytes()


def test_a_map_and_a_preview_by_url(capsys, work, tree, store, rng):
    root, memory = store
    depth = rng.integers(0, 256, (17, 23), dtype=np.uint8)
    PILImage.fromarray(depth).save(work / "depth.png")
    memory.pipe_file(f"{root}/depth.png", (work / "depth.png").read_bytes())
    options = ["--max-sigma", "6", "--focus", "0.4", "--quiet"]
    ok(capsys, "run", "in/a.png", "a.png", "--map", "depth.png", "--preview", "p.png", *options)
    ok(
        capsys,
        "run",
        "in/a.png",
        f"{root}/a.png",
        "--map",
        f"{root}/depth.png",
        "--preview",
        f"{root}/p.png",
        *options,
    )
    assert memory.cat_file(f"{root}/a.png") == (work / "a.png").read_bytes()
    assert memory.cat_file(f"{root}/p.png") == (work / "p.png").read_bytes()
    # The map matters: without it the output differs.
    ok(capsys, "run", "in/a.png", "plain.png", *options)
    assert (work / "plain.png").read_bytes() != (work / "a.png").read_bytes()


def test_the_input_is_not_replaced_under_another_spelling(capsys, tree, store):
    root, memory = store
    upload(memory, tree, f"{root}/in")
    before = memory.cat_file(f"{root}/in/a.png")
    same = f"memory:///{root.removeprefix('memory://')}/in/a.png"  # memory:///x is memory://x
    code, out, err = cli(capsys, "run", f"{root}/in/a.png", same, *SIGMA)
    assert_clean_error(code, out, err, 4, "refusing to overwrite the input")
    assert memory.cat_file(f"{root}/in/a.png") == before


def test_image_size_reads_a_url_header(tree, store):
    root, memory = store
    upload(memory, tree, f"{root}/in")
    assert abio.image_size(f"{root}/in/sub/b.jpg") == (9, 21)
    assert abio.image_size(f"{root}/in/missing.png") is None


# ---- batch and lists ------------------------------------------------------------------------


def test_batch_between_urls_writes_the_local_bytes(capsys, work, tree, store):
    root, memory = store
    upload(memory, tree, f"{root}/in")
    ok(capsys, "batch", "in", "local", "-r", *SIGMA)
    expected = local(work / "local")
    assert set(expected) == set(TREE)
    ok(capsys, "batch", f"{root}/in", f"{root}/out", "-r", "--report", f"{root}/r.json", *SIGMA)
    assert stored(memory, f"{root}/out") == expected  # no manifest, no temporaries
    report = json.loads(memory.cat_file(f"{root}/r.json"))
    assert report["done"] == len(TREE) and report["failed"] == 0
    # A URL folder keeps no manifest: a re-run keeps what is there, and says why.
    code, _, err = cli(capsys, "batch", f"{root}/in", f"{root}/out", "-r", "--max-sigma", "4")
    assert code == 0
    assert "kept 3 existing outputs" in err and "a URL OUT_DIR keeps no manifest" in err
    memory.pipe_file(f"{root}/out/a.png", b"stale")
    ok(capsys, "batch", f"{root}/in", f"{root}/out", "-r", "--overwrite", *SIGMA)
    assert stored(memory, f"{root}/out") == expected
    # Into a local folder: the local run's bytes, and its manifest.
    ok(capsys, "batch", f"{root}/in", "mixed", "-r", *SIGMA)
    assert local(work / "mixed") == expected
    assert any(
        name.startswith(".adaptiveblur-manifest")
        for name in files_under(work / "mixed", manifests=True)
    )


def test_a_dry_run_into_a_url_lists_what_exists(capsys, tree, store):
    root, memory = store
    upload(memory, tree, f"{root}/in")
    ok(capsys, "batch", f"{root}/in", f"{root}/out", *SIGMA)
    code, out, err = cli(capsys, "batch", f"{root}/in", f"{root}/out", "-r", "--dry-run", *SIGMA)
    assert code == 0, err
    lines = out.splitlines()  # in path order
    assert lines[0] == (
        f"skip   {root}/in/a.png -> {root}/out/a.png  "
        "(exists, a URL OUT_DIR keeps no record of settings; --overwrite redoes it)"
    )
    assert [line.split()[0] for line in lines[1:]] == ["do", "do"]
    assert set(stored(memory, f"{root}/out")) == {"a.png"}  # the dry run wrote nothing


def test_a_map_by_url_counts_by_its_bytes_in_the_manifest(capsys, work, tree, store, rng):
    root, memory = store
    PILImage.fromarray(rng.integers(0, 256, (17, 23), dtype=np.uint8)).save(work / "depth.png")
    memory.pipe_file(f"{root}/depth.png", (work / "depth.png").read_bytes())
    ok(capsys, "batch", "in", "out", "--map", "depth.png", "--resize-map", *SIGMA)
    made = local(work / "out")
    ok(capsys, "batch", "in", "by-url", "--map", f"{root}/depth.png", "--resize-map", *SIGMA)
    assert local(work / "by-url") == made
    # The same bytes under a URL are the same settings: nothing is redone.
    code, out, _ = cli(
        capsys,
        "batch",
        "in",
        "out",
        "--map",
        f"{root}/depth.png",
        "--resize-map",
        "--dry-run",
        *SIGMA,
    )
    assert code == 0 and out.split()[0] == "skip" and "made with these settings" in out


def test_batch_without_recursive_and_with_a_pattern(capsys, work, tree, store):
    root, memory = store
    upload(memory, tree, f"{root}/in")
    ok(capsys, "batch", f"{root}/in", f"{root}/top", *SIGMA)
    assert set(stored(memory, f"{root}/top")) == {"a.png"}
    ok(capsys, "batch", f"{root}/in", f"{root}/jpegs", "-r", "--pattern", "*.jpg", *SIGMA)
    assert set(stored(memory, f"{root}/jpegs")) == {"sub/b.jpg"}


def test_a_list_of_urls_is_mirrored_from_their_common_folder(capsys, work, tree, store):
    root, memory = store
    upload(memory, tree, f"{root}/in")
    ok(capsys, "batch", "in/sub", "local", "-r", *SIGMA)
    listed = [f"{root}/in/sub/b.jpg", f"{root}/in/sub/deeper/c.png"]
    memory.pipe_file(f"{root}/list.txt", "\n".join(listed).encode())
    ok(capsys, "batch", "--from-list", f"{root}/list.txt", "out", *SIGMA)
    assert local(work / "out") == local(work / "local")
    ok(capsys, "run", *listed, "-o", f"{root}/out", *SIGMA)
    assert stored(memory, f"{root}/out") == local(work / "local")
    (work / "mixed.txt").write_text(f"in/a.png\n{listed[0]}\n")
    code, out, err = cli(capsys, "batch", "--from-list", "mixed.txt", "o2", *SIGMA)
    assert_clean_error(code, out, err, 2, "either URLs or local paths")


# ---- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["run", "{root}/missing.png", "o.png"], 3, "'{root}/missing.png': no such file"),
        (["run", "{root}/in", "o.png"], 3, "it is a directory"),
        (["run", "in/a.png", "{root}/in", "--format", "png"], 4, "it is a directory"),
        (["run", "in/a.png", "o.png", "--map", "{root}/nope.png"], 3, "no such file"),
        (["run", "in/a.png", "unknownproto://b/o.png"], 4, "protocol not known: unknownproto"),
        (["run", "file:///{work}/in/a.png", "o.png"], 3, "give its path instead"),
        (["batch", "{root}/nothing", "out"], 3, "it is not a folder"),
        (["batch", "{root}/in", "{root}/in/a.png"], 4, "it is a file, not a folder"),
        (["batch", "--from-list", "{root}/no-list", "out"], 3, "no such file"),
        (["batch", "{root}/in", "{root}/o", "--preview-dir", "p"], 2, "local folders"),
    ],
)
def test_url_errors_are_one_line(capsys, work, tree, store, args, code, fragment):
    root, memory = store
    upload(memory, tree, f"{root}/in")
    fill = {"root": root, "work": str(work).lstrip("/")}
    result = cli(capsys, *[arg.format(**fill) for arg in args], *SIGMA)
    assert_clean_error(*result, code, fragment.format(**fill))
    assert not (work / "o.png").exists()


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_a_protocol_whose_package_is_missing_names_it(capsys, work, tree):
    assert_clean_error(*cli(capsys, "run", "s3://bucket/a.png", "o.png", *SIGMA), 3, "install s3fs")
    assert_clean_error(*cli(capsys, "run", "in/a.png", "s3://bucket/o.png", *SIGMA), 4, "s3fs")
    assert not (work / "o.png").exists()


def test_a_failed_put_leaves_no_object(capsys, tree, store, monkeypatch):
    root, memory = store

    def refuse(self, path, value, **kwargs):
        raise PermissionError(13, "Access Denied", path)

    with monkeypatch.context() as patch:
        patch.setattr(MemoryFileSystem, "pipe_file", refuse)
        result = cli(capsys, "run", "in/a.png", f"{root}/o.png", *SIGMA)
    assert_clean_error(*result, 4, f"cannot write '{root}/o.png': permission denied")
    assert not memory.exists(f"{root}/o.png")


# ---- stores with a rename: a temporary, then a move -------------------------------------------


class RenamingFileSystem(MemoryFileSystem):
    """A memory store of its own under another protocol, so outputs take the temporary-and-
    move route of file systems that are not object stores."""

    protocol = "renametest"
    store: dict = {}
    pseudo_dirs = [""]
    moves: list[tuple[str, str]] = []

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).replace("renametest://", "memory://", 1))

    def mv(self, path1, path2, **kwargs):
        self.moves.append((path1, path2))
        return super().mv(path1, path2, **kwargs)


@pytest.fixture
def renaming():
    fsspec.register_implementation("renametest", RenamingFileSystem, clobber=True)
    RenamingFileSystem.store.clear()
    RenamingFileSystem.moves.clear()
    yield fsspec.filesystem("renametest")
    RenamingFileSystem.store.clear()


def test_a_file_system_store_gets_a_temporary_then_a_move(capsys, work, tree, renaming):
    ok(capsys, "batch", "in", "local", "-r", *SIGMA)
    ok(capsys, "batch", "in", "renametest://out", "-r", *SIGMA)
    assert stored(renaming, "renametest://out") == local(work / "local")
    assert len(renaming.moves) == len(TREE)
    for temporary, final in renaming.moves:
        folder, name = final.rsplit("/", 1)
        assert temporary.startswith(f"{folder}/.{name}.") and temporary.endswith(".tmp")


def test_a_failed_move_leaves_neither_the_output_nor_the_temporary(
    capsys, tree, renaming, monkeypatch
):
    def refuse(self, path1, path2, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RenamingFileSystem, "mv", refuse)
    result = cli(capsys, "run", "in/a.png", "renametest://out/a.png", *SIGMA)
    assert_clean_error(*result, 4, "cannot write 'renametest://out/a.png': no space left")
    assert renaming.find("/") == []
