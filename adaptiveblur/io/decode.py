"""Decode image files (paths, stdin, streams) into :class:`~adaptiveblur.io.image.Image`.

Every input mode pillow knows is mapped onto L/LA/RGB/RGBA (32-bit float images onto L
with their values as stored), EXIF orientation is applied to the pixels, and the ICC
profile and EXIF bytes ride along to the output. 16-bit colour PNGs, which pillow reduces
to 8 bits, go through :mod:`adaptiveblur.io.png`. The pixel limit is checked from the
header, before anything is decoded.

Only regular files are opened by path: opening a named pipe waits for a writer, a
device may never end, so anything else is refused after an ``os.stat`` (which never
blocks). Standard input (``"-"``) and file objects are read as streams, and a URL
(``s3://...``, :mod:`adaptiveblur.io.remote`) as the object's bytes.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
from PIL import Image as PILImage

from adaptiveblur.errors import InputImageError, InvalidParameterError, os_reason
from adaptiveblur.io import png, remote
from adaptiveblur.io.exif import apply_orientation, clean_exif, exif_orientation, pillow_orientation
from adaptiveblur.io.image import FLOAT_DEPTH, MAX_VALUE, STDIO, Image, to_float

DEFAULT_MAX_PIXELS: int = 2 * (PILImage.MAX_IMAGE_PIXELS or 89_478_485)

_PIPE_HINT = " (to read a pipe, use - and redirect it)"
# Opening by path never waits for a pipe's writer: a file swapped for a pipe after the
# stat is then refused by fstat instead of blocking (no effect on regular files).
_NON_BLOCKING = getattr(os, "O_NONBLOCK", 0)


def load_image(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    integers: bool = False,
) -> Image:
    """Decode an image file into float pixels (or its integer samples).

    Args:
        source: a path, a URL (``s3://bucket/a.jpg``: any fsspec protocol), ``"-"`` for
            standard input, or a binary file object (read from its current position to
            the end).
        max_pixels: refuse images with more pixels than this, checked from the header before
            anything is decoded; ``None`` or 0 means no limit.
        integers: keep the samples as stored (uint8, or uint16 for 16-bit images) in an
            array of the caller's own, instead of float32 in ``[0, 1]``: a quarter of the
            memory, and the conversion can run where the pixels go (a GPU). 32-bit
            float images (pillow's mode ``F``) are float32 either way, values as stored
            (NaN and infinities included: whether they can be used is the caller's call).

    Returns:
        The decoded :class:`Image`, EXIF orientation applied.

    Raises:
        InputImageError: the source is missing, a directory or anything else that is not
            a regular file (a pipe, a socket, a device: refused without being opened),
            unreadable, empty, not an image, corrupt, truncated, unsupported or larger
            than ``max_pixels``.
        InvalidParameterError: ``max_pixels`` is negative.
    """
    limit = _pixel_limit(max_pixels)
    name = source_name(source)
    with _input_stream(source, name) as stream:
        head = _read(stream, name, 32)
        if not head:
            raise InputImageError(f"cannot read '{name}': file is empty")
        stream.seek(0)
        if png.is_16_bit_colour(head):
            return _load_png16(_read(stream, name), name, limit, integers)
        return _load_with_pillow(stream, name, limit, integers)


def image_size(path: str) -> tuple[int, int] | None:
    """``(width, height)`` of the image file (or URL) at ``path`` from its header, or
    ``None`` when it cannot be read (the error comes when the file is loaded)."""
    if remote.is_url(path):
        return _remote_image_size(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
    except OSError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with _pillow_limit_lifted(), PILImage.open(path) as picture:
                return picture.size
        except Exception:  # noqa: BLE001 - any failure is reported by load_image later
            return None


def _remote_image_size(url: str) -> tuple[int, int] | None:
    """:func:`image_size` of a URL: the header alone is fetched."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with (
                remote.open_header(url) as handle,
                _pillow_limit_lifted(),
                PILImage.open(handle) as picture,
            ):
                return picture.size
        except Exception:  # noqa: BLE001 - any failure is reported by load_image later
            return None


def _pixel_limit(max_pixels: int | None) -> int | None:
    """Normalise ``max_pixels``: ``None`` for no limit, else a positive int."""
    if max_pixels is None or max_pixels == 0:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)):
        raise InvalidParameterError(f"expected max_pixels to be an int, got {max_pixels!r}")
    if max_pixels < 0:
        raise InvalidParameterError(f"expected max_pixels >= 0, got {max_pixels}")
    return int(max_pixels)


def source_name(source: object) -> str:
    """How to name the source in messages."""
    if isinstance(source, str) and source == STDIO:
        return "<stdin>"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<stream>"


def check_regular_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`InputImageError` unless ``path`` names a regular file (links followed).

    Only ``os.stat`` is used, which never blocks, where opening a named pipe waits for a
    writer. The message says why: "not a regular file", "it is a directory", "no such
    file", "a link to a missing file".
    """
    _regular_file(path, os.fspath(path), "")


def regular_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a regular file to read ("not a regular file", "it is a
    directory", "no such file", "a link to a missing file"), or ``None`` when it is one.

    Only ``os.stat`` is used, which never blocks. A URL is not asked (a store holds no
    pipes or devices): ``None``, and reading it says what is wrong.
    """
    if remote.is_url(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return "a link to a missing file"
        return os_reason(exc)
    if stat.S_ISDIR(mode):
        return "it is a directory"
    return None if stat.S_ISREG(mode) else "not a regular file"


def _regular_file(path: str | os.PathLike[str], name: str, hint: str) -> None:
    """:func:`check_regular_file`, with ``hint`` after "not a regular file"."""
    problem = regular_file_problem(path)
    if problem is not None:
        extra = hint if problem == "not a regular file" else ""
        raise InputImageError(f"cannot read '{name}': {problem}{extra}")


def open_regular_file(path: str | os.PathLike[str], name: str) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file, never waiting on a pipe.

    Raises:
        InputImageError: ``path`` is missing, unreadable or not a regular file (``name``
            is how the message names it).
    """
    _regular_file(path, name, _PIPE_HINT)
    try:
        handle = open(path, "rb", opener=_non_blocking)  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise InputImageError(f"cannot read '{name}': {os_reason(exc)}") from exc
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # replaced since the stat
        handle.close()
        raise InputImageError(f"cannot read '{name}': not a regular file{_PIPE_HINT}")
    if _NON_BLOCKING:
        os.set_blocking(handle.fileno(), True)
    return handle


def _non_blocking(path: str, flags: int) -> int:
    return os.open(path, flags | _NON_BLOCKING)


@contextlib.contextmanager
def _input_stream(source: str | os.PathLike[str] | BinaryIO, name: str) -> Iterator[BinaryIO]:
    """Yield a seekable binary stream positioned at the start of the image data."""
    if isinstance(source, str) and source == STDIO:
        yield io.BytesIO(_read(sys.stdin.buffer, name))
        return
    if not isinstance(source, (str, os.PathLike)):
        # Pillow seeks to 0 itself, so a caller's stream is copied from where it stands.
        yield io.BytesIO(_read(source, name))
        return
    if remote.is_url(source):
        yield io.BytesIO(remote.read_bytes(source))
        return
    with open_regular_file(source, name) as handle:
        yield handle


def _read(stream: BinaryIO, name: str, size: int = -1) -> bytes:
    """Read from ``stream``, turning OS errors into :class:`InputImageError`."""
    try:
        return stream.read(size)
    except OSError as exc:
        raise InputImageError(f"cannot read '{name}': {os_reason(exc)}") from exc


def _check_pixel_count(width: int, height: int, limit: int | None, name: str) -> None:
    """Refuse images larger than ``limit`` pixels (a decompression bomb, or just too big)."""
    pixels = width * height
    if limit is not None and pixels > limit:
        raise InputImageError(
            f"'{name}' has {pixels:,} pixels, more than max_pixels ({limit:,})",
            parameter="max_pixels",
        )


_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_limit_lifted(lift: bool = True) -> Iterator[None]:
    """Switch pillow's own decompression-bomb error off while the block runs (if ``lift``).

    Pillow raises above ``2 * MAX_IMAGE_PIXELS`` inside ``Image.open``, before the caller
    sees the size, and has no per-call option, so its module-level setting is changed under
    a lock and restored. Our own check (from the header, before decoding) replaces it.
    """
    if not lift:
        yield
        return
    with _PILLOW_LIMIT_LOCK:
        saved = PILImage.MAX_IMAGE_PIXELS
        PILImage.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            PILImage.MAX_IMAGE_PIXELS = saved


def _pillow_would_refuse(limit: int | None) -> bool:
    """Whether pillow's own check is stricter than ``limit`` (so it must be lifted to load)."""
    pillow_max = PILImage.MAX_IMAGE_PIXELS
    return pillow_max is not None and (limit is None or limit > 2 * pillow_max)


def _load_with_pillow(stream: BinaryIO, name: str, limit: int | None, integers: bool) -> Image:
    """Decode anything but a 16-bit colour PNG with pillow.

    Pillow's warnings are silenced: its decompression-bomb warning because our size check
    replaces it, the others ("Corrupt EXIF data", ...) because either the image decodes or
    :class:`InputImageError` says why not.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with _pillow_limit_lifted():  # only parses the header: the lock is held briefly
                picture = PILImage.open(stream)
        except Exception as exc:  # pillow raises many types for bad files
            raise InputImageError(f"cannot read '{name}': {_decode_reason(exc)}") from exc
        with picture:
            _check_pixel_count(picture.width, picture.height, limit, name)
            try:
                with _pillow_limit_lifted(_pillow_would_refuse(limit)):
                    picture.load()
            except Exception as exc:
                raise InputImageError(f"cannot read '{name}': {_decode_reason(exc)}") from exc
            return image_from_pillow(picture, name, integers)


def _load_png16(data: bytes, name: str, limit: int | None, integers: bool) -> Image:
    """Decode a 16-bit colour PNG with our own decoder, keeping all 16 bits."""
    try:
        decoded = png.decode_16_bit(
            data, lambda width, height: _check_pixel_count(width, height, limit, name)
        )
    except png.PngError as exc:
        raise InputImageError(f"cannot read '{name}': {exc}") from None
    return Image(
        pixels=_pixels(decoded.samples, 16, exif_orientation(decoded.exif), integers),
        mode=decoded.mode,
        bit_depth=16,
        icc_profile=decoded.icc_profile,
        exif=clean_exif(decoded.exif),
        source_format="PNG",
    )


def _decode_reason(exc: BaseException) -> str:
    """A one-line reason for a pillow decoding failure."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, PILImage.DecompressionBombError):
        return f"image is too large ({text})"
    if isinstance(exc, PILImage.UnidentifiedImageError):
        return "not an image, or a format pillow cannot read"
    if isinstance(exc, EOFError) or "truncated" in text.lower():
        return "file is truncated"
    if isinstance(exc, OSError) and exc.errno is not None:
        return os_reason(exc)
    return f"file is corrupt ({text})"


def image_from_pillow(picture: PILImage.Image, name: str, integers: bool = False) -> Image:
    """Convert a loaded pillow image to an :class:`Image`, orientation applied."""
    icc = picture.info.get("icc_profile") or None
    if picture.mode in ("CMYK", "LAB"):
        icc = None  # the profile describes the source space, not the RGB we convert to
    try:
        values, mode = _normalise_mode(picture)
    except (ValueError, OSError) as exc:  # ours, or pillow's "conversion not supported"
        raise InputImageError(f"cannot read '{name}': {exc}") from exc
    bit_depth = FLOAT_DEPTH if values.dtype.kind == "f" else 16 if values.dtype.itemsize == 2 else 8
    raw_exif = picture.info.get("exif")
    exif = clean_exif(raw_exif if isinstance(raw_exif, bytes) else None)
    orientation = exif_orientation(raw_exif) if exif else pillow_orientation(picture)
    return Image(
        pixels=_pixels(values, bit_depth, orientation, integers),
        mode=mode,
        bit_depth=bit_depth,
        icc_profile=icc if isinstance(icc, bytes) else None,
        exif=exif,
        source_format=picture.format,
    )


def _normalise_mode(picture: PILImage.Image) -> tuple[np.ndarray, str]:
    """Map any pillow mode onto L/LA/RGB/RGBA.

    Returns:
        ``(values, mode)`` where ``values`` is uint8, uint16 or (for pillow's 32-bit
        float mode ``F``, values as stored) float32, of shape ``(H, W, C)``.

    Raises:
        ValueError: the mode cannot be represented (out-of-range 32-bit integers).
    """
    mode = picture.mode
    transparent = "transparency" in picture.info
    if mode.startswith("I;16"):
        return _with_channel_axis(np.asarray(picture).astype(np.uint16)), "L"
    if mode == "I":
        return _with_channel_axis(_int32_to_uint16(np.asarray(picture))), "L"
    if mode == "F":
        return _with_channel_axis(np.asarray(picture, dtype=np.float32)), "L"
    target = _target_mode(mode, transparent, picture)
    if target != mode:
        picture = picture.convert(target)
    return _with_channel_axis(np.asarray(picture)), target


def _target_mode(mode: str, transparent: bool, picture: PILImage.Image) -> str:
    """The one of L/LA/RGB/RGBA that a pillow mode becomes."""
    if mode in ("1", "L"):
        return "LA" if transparent and mode == "L" else "L"
    if mode in ("LA", "La"):
        return "LA"
    if mode == "P":
        palette_alpha = picture.palette is not None and picture.palette.mode == "RGBA"
        return "RGBA" if transparent or palette_alpha else "RGB"
    if mode in ("PA", "RGBA", "RGBa"):
        return "RGBA"
    if mode == "RGB":
        return "RGBA" if transparent else "RGB"
    return "RGB"  # RGBX, CMYK, YCbCr, HSV; LAB through sRGB (pillow uses ImageCms for it)


def _int32_to_uint16(values: np.ndarray) -> np.ndarray:
    """32-bit integer samples as 16-bit, if they fit (16-bit grey read by older decoders)."""
    if values.size and (values.min() < 0 or values.max() > MAX_VALUE[16]):
        raise ValueError("32-bit integer images with values outside 0..65535 are not supported")
    return values.astype(np.uint16)


def _with_channel_axis(values: np.ndarray) -> np.ndarray:
    """``(H, W)`` → ``(H, W, 1)``; ``(H, W, C)`` unchanged."""
    return values[:, :, None] if values.ndim == 2 else values


def _pixels(values: np.ndarray, bit_depth: int, orientation: int, integers: bool) -> np.ndarray:
    """Decoded samples as :attr:`Image.pixels`: float32, or an owned, writable integer copy."""
    if integers:
        return np.array(apply_orientation(values, orientation), order="C")
    return apply_orientation(to_float(values, bit_depth), orientation)
