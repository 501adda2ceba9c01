"""Atomic writes: complete or not at all, for files, standard output and streams.

A file is encoded into a temporary beside it (``.<name>.<random hex>.tmp``), synced and
renamed onto it only once complete, so on any failure (Ctrl-C included) the target is
untouched and no temporary is left; a killed process may leave one, which
:func:`stale_temporaries` finds. A stream only receives fully encoded bytes.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import stat
import zlib
from collections.abc import Callable
from typing import BinaryIO

from adaptiveblur.errors import AdaptiveBlurError, OutputImageError, os_reason


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file (a report) atomically, like the images: complete or not at all.

    Raises:
        OutputImageError: the file cannot be written.
    """
    data = text.encode("utf-8")

    def encode(stream: BinaryIO) -> None:
        stream.write(data)

    write_file_atomically(os.fspath(path), encode, True)


def write_stream(stream: BinaryIO, encode: Callable[[BinaryIO], None], name: str) -> None:
    """Encode fully into memory, then write, so a failed encode writes nothing."""
    buffer = io.BytesIO()
    _run_encoder(encode, buffer, name)
    try:
        stream.write(buffer.getbuffer())
        stream.flush()
    except OSError as exc:
        raise OutputImageError(f"cannot write to {name}: {os_reason(exc)}") from exc


def _run_encoder(encode: Callable[[BinaryIO], None], stream: BinaryIO, name: str) -> None:
    """Call ``encode``, turning encoder and OS failures into :class:`OutputImageError`."""
    try:
        encode(stream)
    except AdaptiveBlurError:
        raise
    except OSError as exc:
        reason = os_reason(exc) if exc.errno is not None else str(exc)
        raise OutputImageError(f"cannot write '{name}': {reason}") from exc
    except (ValueError, zlib.error) as exc:
        raise OutputImageError(f"cannot encode '{name}': {exc}") from exc


def write_file_atomically(path: str, encode: Callable[[BinaryIO], None], overwrite: bool) -> None:
    """Encode into a temporary file beside ``path``, fsync it and rename it onto ``path``."""
    target = os.path.realpath(path) if os.path.islink(path) else path
    _check_destination(path, target, overwrite)
    directory = os.path.dirname(target) or "."
    descriptor, temporary = _create_temporary(directory, os.path.basename(target), path)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            _run_encoder(encode, handle, path)
            handle.flush()
            os.fsync(handle.fileno())
        _copy_permissions(target, temporary)
        _commit(temporary, target, overwrite, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError) and not isinstance(exc, AdaptiveBlurError):
            raise OutputImageError(f"cannot write '{path}': {os_reason(exc)}") from exc
        raise
    _sync_directory(directory)


def _check_destination(path: str, target: str, overwrite: bool) -> None:
    """Fail early on destinations that cannot work."""
    if os.path.isdir(target):
        raise OutputImageError(f"cannot write '{path}': it is a directory")
    directory = os.path.dirname(target) or "."
    if not os.path.isdir(directory):
        raise OutputImageError(f"cannot write '{path}': directory '{directory}' does not exist")
    if not overwrite and os.path.lexists(path):
        raise OutputImageError(f"cannot write '{path}': it already exists")


def _create_temporary(directory: str, basename: str, path: str) -> tuple[int, str]:
    """Create ``.<basename>.<random>.tmp`` in ``directory``; mode 0o666 minus the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temporary = os.path.join(directory, f".{basename}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputImageError(f"cannot write '{path}': {os_reason(exc)}") from exc
    raise OutputImageError(f"cannot write '{path}': no free temporary file name")


_TEMPORARY = re.compile(r"\.(.+)\.[0-9a-f]+\.tmp", re.DOTALL)  # what _create_temporary names


def stale_temporaries(folder: str) -> dict[str, list[str]]:
    """Output name to the paths of its temporaries in ``folder`` (none if it is missing)."""
    found: dict[str, list[str]] = {}
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMPORARY.fullmatch(entry.name)
            if match:
                found.setdefault(match.group(1), []).append(entry.path)
    return found


def _copy_permissions(target: str, temporary: str) -> None:
    """Give the new file the permissions of the one it replaces, if any."""
    with contextlib.suppress(OSError):
        os.chmod(temporary, stat.S_IMODE(os.stat(target).st_mode))


def _commit(temporary: str, target: str, overwrite: bool, path: str) -> None:
    """Move the finished temporary file onto ``target``."""
    if overwrite:
        os.replace(temporary, target)
        return
    try:  # a hard link fails if target appeared meanwhile, unlike rename
        os.link(temporary, target)
    except FileExistsError as exc:
        raise OutputImageError(f"cannot write '{path}': it already exists") from exc
    except OSError:  # file system without hard links
        if os.path.lexists(target):
            raise OutputImageError(f"cannot write '{path}': it already exists") from None
        os.replace(temporary, target)
        return
    os.unlink(temporary)


def _sync_directory(directory: str) -> None:
    """Make the rename durable; best effort (not every platform can open a directory)."""
    with contextlib.suppress(OSError, AttributeError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
