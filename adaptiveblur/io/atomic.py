"""Atomic writes: complete or not at all, for files, standard output and streams.

A file is encoded into a temporary beside it (``.<name>.<random hex>.tmp``), synced and
renamed onto it only once complete, so on any failure (Ctrl-C included) the target is
untouched and no temporary is left; a killed process may leave one, which
:func:`stale_temporaries` finds. A stream only receives fully encoded bytes, and so does a
URL (``s3://...``: :func:`adaptiveblur.io.remote.write_bytes` says how a store gets them).

An existing destination that is not a regular file (a device such as ``/dev/null``, a
FIFO) is written in place, never renamed over: that would replace the device by a file.
Every write, flush and close is checked; a pipe whose reader has gone raises
:class:`~adaptiveblur.errors.BrokenPipeOutputError`, every other failure
:class:`~adaptiveblur.errors.OutputImageError`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import stat
import sys
import zlib
from collections.abc import Callable
from typing import BinaryIO

from adaptiveblur.errors import (
    AdaptiveBlurError,
    BrokenPipeOutputError,
    OutputImageError,
    os_reason,
)
from adaptiveblur.io import remote
from adaptiveblur.io.image import STDIO

STDOUT_NAME = "<stdout>"  # how messages name standard output


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file (a report) atomically, like the images: complete or not at all.

    ``path`` may be ``"-"`` for standard output.

    Raises:
        BrokenPipeOutputError: standard output is a pipe whose reader has gone.
        OutputImageError: the file cannot be written.
    """
    data = text.encode("utf-8")

    def encode(stream: BinaryIO) -> None:
        stream.write(data)

    if isinstance(path, str) and path == STDIO:
        write_stdout(encode)
    else:
        write_file_atomically(os.fspath(path), encode, True)


def write_stdout(encode: Callable[[BinaryIO], None]) -> None:
    """Encode fully into memory, then write to standard output and flush it.

    Raises:
        BrokenPipeOutputError: standard output is a pipe whose reader has gone.
        OutputImageError: standard output is closed, or the encode or the write failed.
    """
    if sys.stdout is None:  # the process was started with its standard output closed
        raise OutputImageError(f"cannot write to {STDOUT_NAME}: it is closed")
    write_stream(sys.stdout.buffer, encode, STDOUT_NAME)


def write_stream(stream: BinaryIO, encode: Callable[[BinaryIO], None], name: str) -> None:
    """Encode fully into memory, then write and flush, so a failed encode writes nothing.

    Raises:
        BrokenPipeOutputError: ``stream`` is a pipe whose reader has gone.
        OutputImageError: the encode, the write or the flush failed.
    """
    buffer = io.BytesIO()
    _run_encoder(encode, buffer, name)
    try:
        _write_all(stream.write, buffer.getbuffer())
        stream.flush()
    except OSError as exc:
        raise _write_failure(f"to {name}", exc) from exc


def _write_all(write: Callable[[memoryview], int | None], data: memoryview) -> None:
    """Call ``write`` until it has taken all of ``data``.

    A buffered stream may take less than it is given without raising (a pipe whose
    reader leaves mid-write); the next call then raises the error. A ``write`` that
    returns ``None`` is taken to have written everything (file-likes that do not count).

    Raises:
        OSError: from ``write``, or ``EIO`` when it takes nothing.
    """
    view = memoryview(data)
    while view:
        count = write(view)
        if count is None:
            return
        if count <= 0:
            raise OSError(errno.EIO, "the stream took no bytes")
        view = view[count:]


def _write_failure(where: str, exc: OSError) -> OutputImageError:
    """The error for a failed write ``where`` (``"'out.png'"``, ``"to <stdout>"``)."""
    if isinstance(exc, BrokenPipeError):
        return BrokenPipeOutputError(f"cannot write {where}: the reader closed the pipe")
    return OutputImageError(f"cannot write {where}: {os_reason(exc)}")


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
    """Encode into a temporary file beside ``path``, fsync it and rename it onto ``path``.

    An existing ``path`` that is neither a regular file nor a folder (``/dev/null``,
    ``/dev/stdout``, a FIFO) is written in place by :func:`_write_in_place`. A URL is
    encoded into memory and handed to :func:`adaptiveblur.io.remote.write_bytes`.

    Raises:
        BrokenPipeOutputError: ``path`` is a FIFO whose reader has gone.
        OutputImageError: ``path`` cannot be written (the reason is in the message).
    """
    if remote.is_url(path):
        buffer = io.BytesIO()
        _run_encoder(encode, buffer, path)
        remote.write_bytes(path, buffer.getvalue(), overwrite)
        return
    mode = _existing_mode(path)
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        if not overwrite:
            raise OutputImageError(f"cannot write '{path}': it already exists")
        _write_in_place(path, encode, fifo=stat.S_ISFIFO(mode))
        return
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


def _existing_mode(path: str) -> int | None:
    """The ``st_mode`` of what ``path`` names (links followed), ``None`` if nothing is there."""
    try:
        return os.stat(path).st_mode
    except (OSError, ValueError):
        return None


def _write_in_place(path: str, encode: Callable[[BinaryIO], None], *, fifo: bool) -> None:
    """Encode fully into memory, then write the bytes into the existing ``path`` and close it.

    Nothing is created, renamed or synced: ``path`` is a device or a FIFO that stays what
    it is. A FIFO nobody reads fails at once instead of waiting for a reader.
    """
    buffer = io.BytesIO()
    _run_encoder(encode, buffer, path)
    descriptor = _open_in_place(path, fifo)
    closed = False
    try:
        _write_all(lambda chunk: os.write(descriptor, chunk), buffer.getbuffer())
        closed = True  # a failed close still releases the descriptor
        os.close(descriptor)
    except OSError as exc:
        raise _write_failure(f"'{path}'", exc) from exc
    finally:
        if not closed:
            with contextlib.suppress(OSError):
                os.close(descriptor)


def _open_in_place(path: str, fifo: bool) -> int:
    """Open the existing ``path`` for writing, without creating or truncating it.

    It is opened non-blocking, so that a FIFO without a reader fails (``ENXIO``) rather
    than blocking the open forever, then switched back to blocking writes.
    """
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    flags = os.O_WRONLY | nonblocking | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        if fifo and exc.errno == errno.ENXIO:
            reason = "it is a FIFO and no process is reading it"
            raise OutputImageError(f"cannot write '{path}': {reason}") from exc
        raise OutputImageError(f"cannot write '{path}': {os_reason(exc)}") from exc
    if nonblocking:
        try:
            os.set_blocking(descriptor, True)
        except OSError as exc:
            os.close(descriptor)
            raise OutputImageError(f"cannot write '{path}': {os_reason(exc)}") from exc
    return descriptor


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
