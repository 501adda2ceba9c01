"""Paths with a scheme (``s3://``, ``gs://``, ``memory://``, any fsspec protocol): read, list
and write them through fsspec.

:func:`is_url` decides from the text alone (``PROTOCOL://``, or a chain such as
``simplecache::s3://``), so local paths never import fsspec; fsspec and the protocol's own
package (s3fs, gcsfs, adlfs, ...) are imported with the first URL. Every failure of a store
(its package missing, a missing object, no permission, the network) becomes
:class:`~adaptiveblur.errors.InputImageError` when reading and
:class:`~adaptiveblur.errors.OutputImageError` when writing, with the store's reason in one
line. ``file://`` URLs are refused: a local path gets the local rules (regular files only,
:mod:`adaptiveblur.io.atomic`'s writes), so it is given as a path.

An output is written whole or not at all, from bytes already encoded in memory:

* to an object store (:data:`ONE_PUT_PROTOCOLS`: S3, Google Cloud Storage, Azure Blob
  Storage, OCI, OSS, and fsspec's ``memory``), as one upload of the whole object, which the
  store makes visible whole or not at all (a multipart upload only once it is completed);
* to any other file system (SFTP, FTP, SMB, WebHDFS, ...), into a temporary
  ``.NAME.HEX.tmp`` beside the target, then moved onto it with the file system's rename.

Without ``overwrite`` an existing output is refused: by the upload itself where the store
implements fsspec's ``mode="create"``, else by a check just before the write.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import secrets
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO, TypeGuard

from adaptiveblur.errors import (
    AdaptiveBlurError,
    InputImageError,
    InvalidParameterError,
    OutputImageError,
    os_reason,
)

# Stores where one put of a whole object is atomic and there is no rename to lean on.
ONE_PUT_PROTOCOLS = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oci", "oss", "memory"}
)
_LOCAL_PROTOCOLS = frozenset({"file", "local"})
# Two letters or more, so that a Windows drive (``C://x``) is not a protocol.
_URL = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]+::)*[A-Za-z][A-Za-z0-9+.-]+://")
# Enough of an image for pillow to read its size from the header.
_HEADER_BLOCK = 1 << 16


def is_url(path: object) -> TypeGuard[str]:
    """Whether ``path`` is a string that starts with ``PROTOCOL://`` (a URL for fsspec).

    Example:
        >>> is_url("s3://bucket/a.jpg"), is_url("photos/a.jpg"), is_url("C://a.jpg")
        (True, False, False)
    """
    return isinstance(path, str) and _URL.match(path) is not None


def split_url(url: str) -> tuple[str, str]:
    """``(protocol part, path part)``: ``"s3://b/a.jpg"`` -> ``("s3://", "b/a.jpg")``."""
    match = _URL.match(url)
    if match is None:
        raise InvalidParameterError(f"expected a URL such as s3://bucket/key, got {url!r}")
    return url[: match.end()], url[match.end() :]


def join(folder: str, relative: str) -> str:
    """``relative`` (``/`` or the OS's separator) below the URL ``folder``.

    Example:
        >>> join("s3://bucket/out", "sub/a.png"), join("memory://", "a.png")
        ('s3://bucket/out/sub/a.png', 'memory://a.png')
    """
    relative = relative.replace(os.sep, "/")
    return folder + relative if folder.endswith("/") else f"{folder}/{relative}"


def read_bytes(url: str) -> bytes:
    """The whole object at ``url``.

    Raises:
        InputImageError: it cannot be read (the store's reason: "no such file", "it is a
            directory", "permission denied", the package to install, ...).
    """
    with _failures(url, InputImageError, f"cannot read '{url}'"):
        store, path = _store(url)
        try:
            data = store.cat_file(path)
        except FileNotFoundError:
            if _quietly(store.isdir, path):
                raise IsADirectoryError(path) from None
            raise
        return bytes(data)


def open_header(url: str) -> BinaryIO:
    """``url`` opened for reading in small blocks (for a header: the image's size).

    Raises:
        InputImageError: it cannot be opened.
    """
    with _failures(url, InputImageError, f"cannot read '{url}'"):
        store, path = _store(url)
        return store.open(path, "rb", block_size=_HEADER_BLOCK)


def list_files(url: str, recursive: bool, *, missing_ok: bool = False) -> list[str]:
    """The files in the folder ``url`` (and below, with ``recursive``), as ``/``-separated
    names relative to it, sorted. Hidden names are listed too: the caller chooses.

    Raises:
        InputImageError: ``url`` is not a folder (unless ``missing_ok``: then none), or the
            store cannot be listed.
    """
    with _failures(url, InputImageError, f"cannot read folder {url!r}"):
        store, root = _store(url)
        if not store.isdir(root):
            if missing_ok and not store.exists(root):
                return []
            raise InputImageError(f"cannot read folder {url!r}: it is not a folder")
        if recursive:
            entries = store.find(root, detail=True)
        else:
            entries = {entry["name"]: entry for entry in store.ls(root, detail=True)}
        prefix = root.rstrip("/") + "/"
        names = []
        for name, info in entries.items():
            name = str(name)
            if info.get("type") == "file" and name.startswith(prefix):
                names.append(name[len(prefix) :])
        return sorted(names)


def output_exists(path: str) -> bool:
    """Whether something is at the output ``path``: a URL asks its store, a local path is
    :func:`os.path.lexists`.

    Raises:
        OutputImageError: the store cannot be asked.
    """
    if not is_url(path):
        return os.path.lexists(path)
    with _failures(path, OutputImageError, f"cannot write '{path}'"):
        store, key = _store(path)
        return bool(store.exists(key))


def check_output(url: str) -> None:
    """Fail early when ``url`` cannot be an output: its store cannot be reached (a missing
    package, say) or it is a folder.

    Raises:
        OutputImageError: why.
    """
    with _failures(url, OutputImageError, f"cannot write '{url}'"):
        store, path = _store(url)
        if store.isdir(path):
            raise OutputImageError(f"cannot write '{url}': it is a directory")


def check_output_folder(url: str) -> None:
    """Fail early when the output folder ``url`` cannot be written into: its store cannot be
    reached, or it is a file.

    Raises:
        OutputImageError: why.
    """
    with _failures(url, OutputImageError, f"cannot write into {url!r}"):
        store, path = _store(url)
        if store.isfile(path):
            raise OutputImageError(f"cannot write into {url!r}: it is a file, not a folder")


def make_parent(url: str) -> None:
    """Create ``url``'s folder where folders exist (not on object stores, which have none).

    Raises:
        OutputImageError: it cannot be created.
    """
    with _failures(url, OutputImageError, f"cannot write '{url}'"):
        store, path = _store(url)
        if not _one_put(store):
            store.makedirs(posixpath.dirname(path), exist_ok=True)


def write_bytes(url: str, data: bytes, overwrite: bool = True) -> None:
    """Write ``data`` as the object ``url``, whole or not at all (see the module's notes).

    Raises:
        OutputImageError: it exists and not ``overwrite``, or the store refused the write.
    """
    with _failures(url, OutputImageError, f"cannot write '{url}'"):
        store, path = _store(url)
        if _one_put(store):
            if overwrite:
                store.pipe_file(path, data)
            else:
                store.pipe_file(path, data, mode="create")
            return
        folder, name = posixpath.split(path)
        temporary = posixpath.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            store.pipe_file(temporary, data)
            if not overwrite and store.exists(path):
                raise FileExistsError(path)
            store.mv(temporary, path)
        except BaseException:
            with contextlib.suppress(Exception):
                store.rm_file(temporary)
            raise


def remove(url: str) -> None:
    """Remove the object ``url`` if it is there (best effort: failures are ignored)."""
    with contextlib.suppress(Exception):
        store, path = _store(url)
        store.rm_file(path)


def same_object(a: str, b: str) -> bool:
    """Whether two URLs name one object (``memory://a`` and ``memory:///a`` do); a URL and a
    local path never do."""
    if not (is_url(a) and is_url(b)):
        return False
    try:
        return _canonical(a) == _canonical(b)
    except Exception:  # noqa: BLE001 - a store that cannot be reached: its error comes later
        return a == b


def relative_names(urls: Sequence[str]) -> list[str]:
    """Each URL relative to the deepest folder that holds them all.

    Raises:
        InvalidParameterError: the URLs are of more than one protocol.

    Example:
        >>> relative_names(["s3://b/in/a.png", "s3://b/in/sub/c.png"])
        ['a.png', 'sub/c.png']
    """
    split = [split_url(url) for url in urls]
    protocols = sorted({protocol for protocol, _ in split})
    if len(protocols) > 1:
        raise InvalidParameterError(
            f"expected URLs of one protocol, got {protocols[0]!r} and {protocols[1]!r}"
        )
    parts = [rest.split("/") for _, rest in split]
    common = parts[0][:-1]
    for names in parts[1:]:
        folders = names[:-1]
        while folders[: len(common)] != common:
            common = common[:-1]
    return ["/".join(names[len(common) :]) for names in parts]


def _store(url: str) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path within it (fsspec imported here)."""
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise ImportError("install fsspec to use URLs") from None
    store, path = url_to_fs(url)
    if _protocols(store) & _LOCAL_PROTOCOLS:
        raise ValueError("a file:// URL names a local file: give its path instead")
    return store, path


def _protocols(store: Any) -> frozenset[str]:
    protocol = store.protocol
    return frozenset([protocol] if isinstance(protocol, str) else protocol)


def _one_put(store: Any) -> bool:
    return bool(_protocols(store) & ONE_PUT_PROTOCOLS)


def _canonical(url: str) -> tuple[str, str]:
    store, path = _store(url)
    return type(store).__qualname__, str(store.unstrip_protocol(path))


def _quietly(check: Any, path: str) -> bool:
    """``check(path)``, ``False`` if asking fails."""
    try:
        return bool(check(path))
    except Exception:  # noqa: BLE001 - only refines a message
        return False


@contextlib.contextmanager
def _failures(url: str, kind: type[AdaptiveBlurError], what: str) -> Iterator[None]:
    """Turn whatever the store raises into ``kind("WHAT: reason")``; the library's own
    errors pass unchanged."""
    try:
        yield
    except AdaptiveBlurError:
        raise
    except Exception as error:  # noqa: BLE001 - each store raises types of its own
        raise kind(f"{what}: {_reason(error)}") from error


def _reason(error: BaseException) -> str:
    """One line saying why a store failed ("no such file", "install s3fs to access S3")."""
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, FileExistsError):
        return "it already exists"
    if isinstance(error, IsADirectoryError):
        return "it is a directory"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, OSError) and error.errno is not None:
        return os_reason(error)
    lines = str(error).strip().splitlines()
    text = lines[0].strip() if lines else type(error).__name__
    # "Install s3fs ..." reads as a reason in lower case; "HTTPFileSystem requires ..." keeps its name.
    return text[:1].lower() + text[1:] if text[:2].istitle() else text
