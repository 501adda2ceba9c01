"""Batch planning: which files to blur, where each result goes, and which shard does it.

Pure path logic (no torch, no pixels): discover inputs in a folder or read them from a
list, mirror their layout under the output folder, split the work into shards. Folders and
files may be URLs (``s3://bucket/photos``, see :mod:`adaptiveblur.io.remote`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from adaptiveblur.errors import InputImageError, InvalidParameterError, OutputImageError
from adaptiveblur.io import remote

FORMAT_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp"}


@dataclass(frozen=True)
class Task:
    """One file to blur: its path, its path relative to the input root, and its output path."""

    source: str
    relative: str
    dest: str


def discover(
    root: str, patterns: Sequence[str] | None, recursive: bool, extensions: Iterable[str]
) -> list[str]:
    """Image files under ``root`` (sorted, relative to it), by glob ``patterns`` or by extension.

    Hidden files and folders (names starting with ``.``) are skipped: they are where
    half-written outputs and tool metadata live. Files are chosen by name alone and not
    opened: one that is not a regular file (a named pipe, a socket, a device, a link to a
    missing file) stays in the list, so the batch reports it as failed with the reason
    (:meth:`adaptiveblur.run.FileBlur.blur` refuses it unopened) instead of leaving it out
    unseen; folders are never listed. A URL ``root`` is listed by its store, the names
    ``/``-separated.

    Raises:
        InputImageError: ``root`` is not a readable folder.
    """
    wanted = frozenset(extension.lower() for extension in extensions)
    if remote.is_url(root):
        listed = remote.list_files(root, recursive)
        return [
            relative
            for relative in listed
            if not any(part.startswith(".") for part in relative.split("/"))
            and _selected(relative.rsplit("/", 1)[-1], relative, patterns, wanted)
        ]
    if not os.path.isdir(root):
        raise InputImageError(f"cannot read folder {root!r}: it is not a folder")
    found: list[str] = []
    try:
        walker = os.walk(root, onerror=_raise)
        for folder, subfolders, files in walker:
            subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
            if not recursive:
                subfolders[:] = []
            for name in files:
                if name.startswith("."):
                    continue
                relative = os.path.relpath(os.path.join(folder, name), root)
                if _selected(name, relative, patterns, wanted):
                    found.append(relative)
    except OSError as error:
        raise InputImageError(f"cannot read folder {root!r}: {error.strerror or error}") from error
    return sorted(found)


def read_list_file(source: str) -> list[str]:
    """Paths listed in the file ``source`` (a path, a URL, or ``"-"`` for standard input);
    see :func:`read_list`.

    Raises:
        InputImageError: the list cannot be read.
    """
    if source == "-":
        return read_list(sys.stdin.buffer.read())
    if remote.is_url(source):
        return read_list(remote.read_bytes(source))
    try:
        with open(source, "rb") as handle:
            return read_list(handle.read())
    except OSError as error:
        raise InputImageError(
            f"cannot read the list {source!r}: {error.strerror or error}"
        ) from error


def check_output_folder(folder: str) -> None:
    """Fail early when ``folder`` exists and is not a folder (it is created when missing).

    Raises:
        OutputImageError: it is a file (or, for a URL, its store cannot be reached).
    """
    if remote.is_url(folder):
        remote.check_output_folder(folder)
        return
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputImageError(f"cannot write into {folder!r}: it is a file, not a folder")


def read_list(text: bytes) -> list[str]:
    """Paths from a list: NUL-separated when the text contains a NUL, else one per line."""
    names = text.split(b"\x00") if b"\x00" in text else text.replace(b"\r\n", b"\n").split(b"\n")
    return [os.fsdecode(name) for name in names if name]


def relative_names(paths: Sequence[str]) -> list[str]:
    """Each path relative to the deepest folder that holds them all (so the tree is mirrored).

    Raises:
        InvalidParameterError: URLs and local paths mixed, or URLs of several protocols.
    """
    if not paths:
        return []
    urls = sum(remote.is_url(path) for path in paths)
    if urls == len(paths):
        return remote.relative_names(paths)
    if urls:
        raise InvalidParameterError("expected either URLs or local paths in the list, not both")
    absolute = [os.path.abspath(path) for path in paths]
    common = os.path.commonpath([os.path.dirname(path) for path in absolute])
    return [os.path.relpath(path, common) for path in absolute]


def plan(
    sources: Sequence[str],
    relatives: Sequence[str],
    out_dir: str,
    *,
    suffix: str = "",
    output_format: str | None = None,
) -> list[Task]:
    """Output paths under ``out_dir`` mirroring ``relatives``, with ``suffix`` before the extension
    and the extension of ``output_format`` when converting.

    Raises:
        InvalidParameterError: two inputs would write the same output.
    """
    tasks = []
    seen: dict[str, str] = {}
    for source, relative in zip(sources, relatives, strict=True):
        stem, extension = os.path.splitext(relative)
        if output_format is not None:
            extension = FORMAT_EXTENSIONS[output_format]
        dest = join(out_dir, stem + suffix + extension)
        key = _key(dest)
        if key in seen:
            raise InvalidParameterError(
                f"{seen[key]!r} and {source!r} would both be written to {dest!r}"
            )
        seen[key] = source
        tasks.append(Task(source, relative, dest))
    # A file that is another task's output (an earlier run's result, when OUT_DIR is inside
    # IN_DIR or equal to it with a suffix) is not an input.
    owner = {_key(task.dest): task for task in tasks}
    return [task for task in tasks if owner.get(_key(task.source), task) is task]


def join(folder: str, relative: str) -> str:
    """``relative`` below ``folder``, a local folder or a URL."""
    return (
        remote.join(folder, relative) if remote.is_url(folder) else os.path.join(folder, relative)
    )


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (1 <= K <= N) to ``(K, N)``.

    Example:
        >>> parse_shard("2/8")
        (2, 8)
    """
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise InvalidParameterError(
            f"expected a shard K/N such as 1/4, got {text!r}", parameter="shard"
        ) from None
    check_shard(index, count)
    return index, count


def check_shard(index: int, count: int) -> None:
    """Raise :class:`InvalidParameterError` unless ``1 <= index <= count``."""
    if count < 1 or not 1 <= index <= count:
        raise InvalidParameterError(
            f"expected a shard K/N with 1 <= K <= N, got {index}/{count}", parameter="shard"
        )


def in_shard(relative: str, index: int, count: int) -> bool:
    """Whether shard ``index`` of ``count`` owns this file.

    Decided by a hash of the relative path alone, so every shard agrees without talking to
    the others, and a file keeps its shard when files are added or removed.
    """
    digest = hashlib.sha256(
        relative.replace(os.sep, "/").encode("utf-8", "surrogateescape")
    ).digest()
    return int.from_bytes(digest[:8], "big") % count == index - 1


def _selected(
    name: str, relative: str, patterns: Sequence[str] | None, extensions: frozenset[str]
) -> bool:
    if patterns:
        return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(relative, p) for p in patterns)
    return os.path.splitext(name)[1].lower() in extensions


def _key(path: str) -> str:
    return path if remote.is_url(path) else os.path.normcase(os.path.abspath(path))


def _raise(error: OSError) -> None:
    raise error
