"""Load and save images: modes, bit depth, alpha, ICC/EXIF, stdin/stdout.

Decoded images are float32 ``(H, W, C)`` arrays in ``[0, 1]`` with straight (not
premultiplied) alpha in the last channel, in one of four layouts: ``L``, ``LA``, ``RGB``,
``RGBA``. Every input mode pillow knows is mapped onto one of those, EXIF orientation is
applied to the pixels, and the ICC profile and EXIF bytes ride along to the output.

Pillow decodes and encodes everything except 16-bit colour PNGs (RGB, RGBA and grey+alpha),
which pillow silently reduces to 8 bits; a small numpy PNG codec at the end of this module
reads and writes those so that 16 bits survive a round trip.

Files are written atomically (temporary file in the same directory, then ``os.replace``),
and stdout only ever receives the fully encoded image.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import stat
import struct
import sys
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image as PILImage
from PIL import features

from adaptiveblur import png
from adaptiveblur.errors import (
    AdaptiveBlurError,
    InputImageError,
    InvalidParameterError,
    OutputImageError,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MODES",
    "READABLE_EXTENSIONS",
    "SUPPORTED_OUTPUT_FORMATS",
    "Image",
    "check_output_format",
    "format_for_path",
    "load_image",
    "output_bit_depth",
    "save_image",
    "write_text_atomically",
]

# Twice pillow's warning threshold: the size at which pillow itself refuses to open a file.
DEFAULT_MAX_PIXELS: int = 2 * (PILImage.MAX_IMAGE_PIXELS or 89_478_485)

MODES: tuple[str, ...] = ("L", "LA", "RGB", "RGBA")
_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
ALPHA_MODES = frozenset({"LA", "RGBA"})  # modes whose last channel is alpha
MAX_VALUE = {8: 255, 16: 65535}  # largest sample at each bit depth
_SAMPLE_TYPES = {8: "uint8", 16: "uint16"}  # integer pixels at each bit depth

# Format names (pillow's) and the aliases and extensions that select them.
_FORMAT_ALIASES = {
    "png": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "jpe": "JPEG",
    "jfif": "JPEG",
    "tif": "TIFF",
    "tiff": "TIFF",
    "webp": "WEBP",
    "bmp": "BMP",
    "dib": "BMP",
}
SUPPORTED_OUTPUT_FORMATS: tuple[str, ...] = tuple(
    name
    for name in ("PNG", "JPEG", "TIFF", "WEBP", "BMP")
    if name != "WEBP" or features.check("webp")
)
_ALPHA_FORMATS = frozenset({"PNG", "TIFF", "WEBP"})
_METADATA_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "WEBP"})
_DISPLAY_NAMES = {"WEBP": "WebP"}

_STDIO = "-"
_EXIF_PREFIX = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112
_JPEG_MAX_EXIF = 65533  # one APP1 marker; larger EXIF blocks are dropped for JPEG
_WEBP_LOSSLESS_QUALITY = 100  # quality 100 means lossless WebP rather than "lossy, best"


def _readable_extensions() -> frozenset[str]:
    """Extensions (lower case, with the dot) of every format pillow can open."""
    return frozenset(
        ext.lower()
        for ext, name in PILImage.registered_extensions().items()
        if name in PILImage.OPEN
    )


READABLE_EXTENSIONS: frozenset[str] = _readable_extensions()


@dataclass(eq=False)
class Image:
    """A decoded image, ready for processing.

    Attributes:
        pixels: array of shape ``(H, W, C)``: float32 values in ``[0, 1]``, or the stored
            integer samples (uint8 for ``bit_depth`` 8, uint16 for 16; see
            :func:`load_image`'s ``integers``); alpha, when present, is the last channel
            and is straight (not premultiplied).
        mode: channel layout, one of ``"L"``, ``"LA"``, ``"RGB"``, ``"RGBA"``.
        bit_depth: 8 or 16, what the source stored; the output follows it where the output
            format can hold it.
        icc_profile: raw ICC profile bytes, or ``None``.
        exif: raw EXIF bytes starting with ``b"Exif\\0\\0"``, with the orientation already
            applied to ``pixels`` and reset to 1 here, or ``None``.
        source_format: pillow's name of the format it was read from (``"PNG"``, ``"JPEG"``).

    Raises:
        InvalidParameterError: if ``mode``, ``bit_depth``, the shape of ``pixels`` or an
            integer ``pixels`` dtype is wrong.
    """

    pixels: np.ndarray
    mode: str
    bit_depth: int
    icc_profile: bytes | None = None
    exif: bytes | None = None
    source_format: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in _CHANNELS:
            raise InvalidParameterError(f"expected mode in {MODES}, got {self.mode!r}")
        if self.bit_depth not in MAX_VALUE:
            raise InvalidParameterError(f"expected bit_depth 8 or 16, got {self.bit_depth!r}")
        shape = tuple(getattr(self.pixels, "shape", ()))
        channels = _CHANNELS[self.mode]
        if len(shape) != 3 or shape[2] != channels:
            raise InvalidParameterError(
                f"expected pixels of shape (H, W, {channels}) for mode {self.mode}, got {shape}"
            )
        dtype = np.dtype(self.pixels.dtype)
        if dtype.kind in "ui" and dtype.name != _SAMPLE_TYPES[self.bit_depth]:
            raise InvalidParameterError(
                f"expected {_SAMPLE_TYPES[self.bit_depth]} samples for bit_depth "
                f"{self.bit_depth}, got {dtype.name}"
            )

    def float_pixels(self) -> np.ndarray:
        """``pixels`` as float32 in ``[0, 1]`` (converted when they are integer samples)."""
        if np.dtype(self.pixels.dtype).kind in "ui":
            return _to_float(self.pixels, self.bit_depth)
        return np.asarray(self.pixels, dtype=np.float32)

    @property
    def has_alpha(self) -> bool:
        """Whether the last channel is alpha."""
        return self.mode in ALPHA_MODES

    @property
    def color_channels(self) -> int:
        """Number of channels that are not alpha (1 or 3)."""
        return _CHANNELS[self.mode] - int(self.has_alpha)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load_image(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    integers: bool = False,
) -> Image:
    """Decode an image file into float pixels (or its integer samples).

    Args:
        source: a path, ``"-"`` for standard input, or a binary file object (read from its
            current position to the end).
        max_pixels: refuse images with more pixels than this, checked from the header before
            anything is decoded; ``None`` or 0 means no limit.
        integers: keep the samples as stored (uint8, or uint16 for 16-bit images) in an
            array of the caller's own, instead of float32 in ``[0, 1]``: a quarter of the
            memory, and the conversion can run where the pixels go (a GPU).

    Returns:
        The decoded :class:`Image`, EXIF orientation applied.

    Raises:
        InputImageError: the source is missing, a directory, unreadable, empty, not an
            image, corrupt, truncated, unsupported or larger than ``max_pixels``.
        InvalidParameterError: ``max_pixels`` is negative.
    """
    limit = _pixel_limit(max_pixels)
    name = _source_name(source)
    with _input_stream(source, name) as stream:
        head = _read(stream, name, 32)
        if not head:
            raise InputImageError(f"cannot read '{name}': file is empty")
        stream.seek(0)
        if png.is_16_bit_colour(head):
            return _load_png16(_read(stream, name), name, limit, integers)
        return _load_with_pillow(stream, name, limit, integers)


def _pixel_limit(max_pixels: int | None) -> int | None:
    """Normalise ``max_pixels``: ``None`` for no limit, else a positive int."""
    if max_pixels is None or max_pixels == 0:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)):
        raise InvalidParameterError(f"expected max_pixels to be an int, got {max_pixels!r}")
    if max_pixels < 0:
        raise InvalidParameterError(f"expected max_pixels >= 0, got {max_pixels}")
    return int(max_pixels)


def _source_name(source: object) -> str:
    """How to name the source in messages."""
    if isinstance(source, str) and source == _STDIO:
        return "<stdin>"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<stream>"


@contextlib.contextmanager
def _input_stream(source: str | os.PathLike[str] | BinaryIO, name: str) -> Iterator[BinaryIO]:
    """Yield a seekable binary stream positioned at the start of the image data."""
    if isinstance(source, str) and source == _STDIO:
        yield io.BytesIO(_read(sys.stdin.buffer, name))
        return
    if not isinstance(source, (str, os.PathLike)):
        # Pillow seeks to 0 itself, so a caller's stream is copied from where it stands.
        yield io.BytesIO(_read(source, name))
        return
    try:
        handle = open(source, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise InputImageError(f"cannot read '{name}': {_os_reason(exc)}") from exc
    with handle:
        yield handle


def _read(stream: BinaryIO, name: str, size: int = -1) -> bytes:
    """Read from ``stream``, turning OS errors into :class:`InputImageError`."""
    try:
        return stream.read(size)
    except OSError as exc:
        raise InputImageError(f"cannot read '{name}': {_os_reason(exc)}") from exc


def _os_reason(exc: OSError) -> str:
    """A short lower-case reason for an OS error ("no such file", "permission denied")."""
    reasons = {
        errno.ENOENT: "no such file",
        errno.EISDIR: "it is a directory",
        errno.ENOTDIR: "a parent is not a directory",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOSPC: "no space left on the device",
        errno.EROFS: "the file system is read-only",
    }
    if exc.errno in reasons:
        return reasons[exc.errno]
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _check_pixel_count(width: int, height: int, limit: int | None, name: str) -> None:
    """Refuse images larger than ``limit`` pixels (a decompression bomb, or just too big)."""
    pixels = width * height
    if limit is not None and pixels > limit:
        raise InputImageError(
            f"'{name}' has {pixels:,} pixels, more than the limit of {limit:,}; "
            "raise it with --max-pixels"
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
            return _image_from_pillow(picture, name, integers)


def _load_png16(data: bytes, name: str, limit: int | None, integers: bool) -> Image:
    """Decode a 16-bit colour PNG with our own decoder, keeping all 16 bits."""
    try:
        decoded = png.decode_16_bit(
            data, lambda width, height: _check_pixel_count(width, height, limit, name)
        )
    except png.PngError as exc:
        raise InputImageError(f"cannot read '{name}': {exc}") from None
    return Image(
        pixels=_pixels(decoded.samples, 16, _exif_orientation(decoded.exif), integers),
        mode=decoded.mode,
        bit_depth=16,
        icc_profile=decoded.icc_profile,
        exif=_clean_exif(decoded.exif),
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
        return _os_reason(exc)
    return f"file is corrupt ({text})"


def _image_from_pillow(picture: PILImage.Image, name: str, integers: bool = False) -> Image:
    """Convert a loaded pillow image to an :class:`Image`, orientation applied."""
    icc = picture.info.get("icc_profile") or None
    if picture.mode in ("CMYK", "LAB"):
        icc = None  # the profile describes the source space, not the RGB we convert to
    try:
        values, mode = _normalise_mode(picture)
    except (ValueError, OSError) as exc:  # ours, or pillow's "conversion not supported"
        raise InputImageError(f"cannot read '{name}': {exc}") from exc
    bit_depth = 16 if values.dtype.itemsize == 2 else 8
    raw_exif = picture.info.get("exif")
    exif = _clean_exif(raw_exif if isinstance(raw_exif, bytes) else None)
    orientation = _exif_orientation(raw_exif) if exif else _pillow_orientation(picture)
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
        ``(values, mode)`` where ``values`` is uint8 or uint16 of shape ``(H, W, C)``.

    Raises:
        ValueError: the mode cannot be represented (32-bit float, out-of-range integers).
    """
    mode = picture.mode
    transparent = "transparency" in picture.info
    if mode.startswith("I;16"):
        return _with_channel_axis(np.asarray(picture).astype(np.uint16)), "L"
    if mode == "I":
        return _with_channel_axis(_int32_to_uint16(np.asarray(picture))), "L"
    if mode == "F":
        raise ValueError("32-bit float images are not supported")
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
        return np.array(_apply_orientation(values, orientation), order="C")
    return _apply_orientation(_to_float(values, bit_depth), orientation)


def _to_float(values: np.ndarray, bit_depth: int) -> np.ndarray:
    """Integer samples → float32 in [0, 1]."""
    pixels = values.astype(np.float32)
    pixels /= np.float32(MAX_VALUE[bit_depth])
    return pixels


# ---- EXIF orientation --------------------------------------------------------------------


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Transform ``(H, W, C)`` pixels so that EXIF ``orientation`` becomes 1.

    Same transforms as ``PIL.ImageOps.exif_transpose``.
    """
    transforms: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda p: p[:, ::-1],
        3: lambda p: p[::-1, ::-1],
        4: lambda p: p[::-1],
        5: lambda p: p.transpose(1, 0, 2),
        6: lambda p: np.rot90(p, -1),
        7: lambda p: p[::-1, ::-1].transpose(1, 0, 2),
        8: lambda p: np.rot90(p, 1),
    }
    if orientation not in transforms:
        return pixels
    return np.ascontiguousarray(transforms[orientation](pixels))


def _pillow_orientation(picture: PILImage.Image) -> int:
    """Orientation pillow finds outside an EXIF block (a TIFF's own tag, XMP); 1 if none."""
    # A damaged metadata block should not stop the image from loading.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = picture.getexif().get(_ORIENTATION_TAG, 1)
        except Exception:
            return 1
    return value if isinstance(value, int) else 1


def _clean_exif(raw: bytes | None) -> bytes | None:
    """EXIF bytes with the ``Exif\\0\\0`` prefix and orientation reset to 1; None if empty."""
    if not raw:
        return None
    exif = raw if raw.startswith(_EXIF_PREFIX) else _EXIF_PREFIX + raw
    entry = _orientation_entry(exif)
    if entry is None or entry[1] == 1:
        return exif
    patched = bytearray(exif)
    struct.pack_into(entry[2] + "H", patched, entry[0], 1)
    return bytes(patched)


def _exif_orientation(raw: bytes | None) -> int:
    """The orientation stored in raw EXIF bytes (with or without prefix); 1 if none."""
    if not raw:
        return 1
    entry = _orientation_entry(raw if raw.startswith(_EXIF_PREFIX) else _EXIF_PREFIX + raw)
    return entry[1] if entry is not None else 1


def _orientation_entry(exif: bytes) -> tuple[int, int, str] | None:
    """Find the orientation tag in IFD0 of prefixed EXIF bytes.

    Returns:
        ``(offset of its value in exif, value, struct byte-order char)`` or ``None``.
    """
    base = len(_EXIF_PREFIX)
    order = {b"II": "<", b"MM": ">"}.get(exif[base : base + 2])
    if order is None:
        return None
    try:
        ifd = base + struct.unpack_from(order + "I", exif, base + 4)[0]
        (count,) = struct.unpack_from(order + "H", exif, ifd)
        for index in range(count):
            entry = ifd + 2 + 12 * index
            tag, kind, n = struct.unpack_from(order + "HHI", exif, entry)
            if tag == _ORIENTATION_TAG and kind == 3 and n == 1:  # one SHORT
                (value,) = struct.unpack_from(order + "H", exif, entry + 8)
                return entry + 8, value, order
    except struct.error:  # truncated EXIF: treat as having no orientation
        return None
    return None


# --------------------------------------------------------------------------------------
# Output formats
# --------------------------------------------------------------------------------------


def format_for_path(path: str | os.PathLike[str]) -> str | None:
    """The output format (pillow's name) an extension selects, or ``None``.

    Args:
        path: an output path such as ``"out.jpg"``; case does not matter.

    Returns:
        One of :data:`SUPPORTED_OUTPUT_FORMATS`, or ``None`` for an unknown or unsupported
        extension.
    """
    extension = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    name = _FORMAT_ALIASES.get(extension)
    return name if name in SUPPORTED_OUTPUT_FORMATS else None


def check_output_format(
    mode: str,
    format: str | None,
    dest: str | os.PathLike[str] | BinaryIO | None = None,
) -> str:
    """Resolve the output format and check it can hold ``mode``, without any pixels.

    Lets the CLI fail before the slow blur rather than after it.

    Args:
        mode: the image's channel layout (``"L"``, ``"LA"``, ``"RGB"``, ``"RGBA"``).
        format: a format name or alias (``"png"``, ``"jpg"``, ``"JPEG"``, ``"tif"``, ...);
            ``None`` to infer it from ``dest``.
        dest: the destination path, ``"-"`` for stdout, or a file object; used only when
            ``format`` is ``None``.

    Returns:
        Pillow's format name, one of :data:`SUPPORTED_OUTPUT_FORMATS`.

    Raises:
        InvalidParameterError: ``mode`` or ``format`` is not a known name.
        OutputImageError: no format was given and none follows from ``dest``, or the format
            cannot store transparency and ``mode`` has alpha.
    """
    if mode not in _CHANNELS:
        raise InvalidParameterError(f"expected mode in {MODES}, got {mode!r}")
    name = _format_from_name(format) if format is not None else _format_from_dest(dest)
    if mode in ("LA", "RGBA") and name not in _ALPHA_FORMATS:
        raise OutputImageError(
            f"{_display(name)} cannot store transparency; write PNG, WebP or TIFF instead"
        )
    return name


def output_bit_depth(mode: str, bit_depth: int, format: str) -> int:
    """The bit depth an image of ``mode``/``bit_depth`` gets when written as ``format``.

    16 bits survive in PNG (any mode) and in greyscale TIFF; everything else is 8-bit.
    """
    name = _format_from_name(format)
    if bit_depth == 16 and (name == "PNG" or (name == "TIFF" and mode == "L")):
        return 16
    return 8


def _format_from_name(format: str) -> str:
    """Pillow's name for a format name or alias; InvalidParameterError if unknown."""
    key = format.strip().lower().lstrip(".")
    name = _FORMAT_ALIASES.get(key)
    if name is None or name not in SUPPORTED_OUTPUT_FORMATS:
        choices = ", ".join(_display(n) for n in SUPPORTED_OUTPUT_FORMATS)
        raise InvalidParameterError(f"unknown output format {format!r}; choose one of {choices}")
    return name


def _format_from_dest(dest: str | os.PathLike[str] | BinaryIO | None) -> str:
    """The format implied by a destination path; OutputImageError when there is none."""
    if dest is None or (isinstance(dest, str) and dest == _STDIO):
        raise OutputImageError("writing to stdout needs --format")
    if not isinstance(dest, (str, os.PathLike)):
        dest_name = getattr(dest, "name", None)
        if not isinstance(dest_name, str):
            raise OutputImageError("writing to a stream needs a format")
        dest = dest_name
    name = format_for_path(dest)
    if name is not None:
        return name
    path = os.fspath(dest)
    extension = os.path.splitext(path)[1].lower()
    if extension in PILImage.registered_extensions():
        choices = ", ".join(_display(n) for n in SUPPORTED_OUTPUT_FORMATS)
        raise OutputImageError(
            f"cannot write '{path}': {extension} output is not supported; use one of {choices}"
        )
    raise OutputImageError(f"cannot tell the output format from '{path}'; use --format")


def _display(name: str) -> str:
    """How a format name is written in messages (``WebP``, ``JPEG``)."""
    return _DISPLAY_NAMES.get(name, name)


# --------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------


def save_image(
    image: Image,
    dest: str | os.PathLike[str] | BinaryIO,
    *,
    format: str | None = None,
    quality: int = 95,
    overwrite: bool = True,
) -> None:
    """Encode ``image`` and write it to a file, stdout or a stream.

    Pixels are clipped to ``[0, 1]`` and rounded to the nearest integer at the output bit
    depth (``image.bit_depth`` where the format can hold it, else 8). Files are written
    atomically: a temporary file next to ``dest`` is renamed over it only once complete,
    so on any failure (Ctrl-C included) ``dest`` is untouched and no temporary is left.

    Args:
        image: the image to write.
        dest: a path, ``"-"`` for stdout, or a binary file object.
        format: a format name or alias; ``None`` to infer it from ``dest``'s extension
            (required for stdout and for streams without a name).
        quality: 1-100, for JPEG and WebP (100 means lossless WebP).
        overwrite: if False, refuse to replace an existing file.

    Raises:
        OutputImageError: unknown output format, alpha in a format without it, missing or
            unwritable directory, ``dest`` is a directory or exists with ``overwrite=False``,
            or the encoder or the write failed.
        InvalidParameterError: ``quality`` is out of range or the pixels contain NaN.
    """
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise InvalidParameterError(f"expected quality to be an int, got {quality!r}")
    if not 1 <= quality <= 100:
        raise InvalidParameterError(f"expected quality in 1..100, got {quality}")
    name = check_output_format(image.mode, format, dest)

    def encode(stream: BinaryIO) -> None:
        _encode(image, name, int(quality), stream)

    if isinstance(dest, str) and dest == _STDIO:
        _write_stream(sys.stdout.buffer, encode, "<stdout>")
    elif isinstance(dest, (str, os.PathLike)):
        _write_file_atomically(os.fspath(dest), encode, overwrite)
    else:
        _write_stream(dest, encode, _source_name(dest))


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file (a report) atomically, like the images: complete or not at all.

    Raises:
        OutputImageError: the file cannot be written.
    """
    data = text.encode("utf-8")

    def encode(stream: BinaryIO) -> None:
        stream.write(data)

    _write_file_atomically(os.fspath(path), encode, True)


def _write_stream(stream: BinaryIO, encode: Callable[[BinaryIO], None], name: str) -> None:
    """Encode fully into memory, then write, so a failed encode writes nothing."""
    buffer = io.BytesIO()
    _run_encoder(encode, buffer, name)
    try:
        stream.write(buffer.getbuffer())
        stream.flush()
    except OSError as exc:
        raise OutputImageError(f"cannot write to {name}: {_os_reason(exc)}") from exc


def _run_encoder(encode: Callable[[BinaryIO], None], stream: BinaryIO, name: str) -> None:
    """Call ``encode``, turning encoder and OS failures into :class:`OutputImageError`."""
    try:
        encode(stream)
    except AdaptiveBlurError:
        raise
    except OSError as exc:
        reason = _os_reason(exc) if exc.errno is not None else str(exc)
        raise OutputImageError(f"cannot write '{name}': {reason}") from exc
    except (ValueError, zlib.error) as exc:
        raise OutputImageError(f"cannot encode '{name}': {exc}") from exc


def _write_file_atomically(path: str, encode: Callable[[BinaryIO], None], overwrite: bool) -> None:
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
            raise OutputImageError(f"cannot write '{path}': {_os_reason(exc)}") from exc
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
            raise OutputImageError(f"cannot write '{path}': {_os_reason(exc)}") from exc
    raise OutputImageError(f"cannot write '{path}': no free temporary file name")


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


def _encode(image: Image, format: str, quality: int, stream: BinaryIO) -> None:
    """Write ``image`` encoded as ``format`` to ``stream``."""
    depth = output_bit_depth(image.mode, image.bit_depth, format)
    values = _quantise(image.pixels, depth)
    if format == "PNG":
        exif = image.exif
        if exif is not None and exif.startswith(_EXIF_PREFIX):
            exif = exif[len(_EXIF_PREFIX) :]  # a PNG's eXIf chunk holds the TIFF part alone
        stream.write(png.encode(values, image.mode, image.icc_profile, exif))
        return
    picture = PILImage.fromarray(values[:, :, 0] if values.shape[2] == 1 else values)
    picture.save(stream, format=format, **_save_options(image, format, quality))


def _quantise(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float pixels → uint8/uint16, clipped to [0, 1] and rounded to nearest.

    Integer samples of the wanted depth pass as they are; of the other depth they are
    converted through float like any other pixels.
    """
    dtype = np.dtype(pixels.dtype)
    if dtype.kind in "ui":
        if dtype.name == _SAMPLE_TYPES[bit_depth]:
            return np.ascontiguousarray(pixels)
        pixels = _to_float(pixels, 16 if dtype.itemsize == 2 else 8)
    scaled = np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0)
    if np.isnan(scaled).any():
        raise InvalidParameterError("expected finite pixel values, got NaN")
    scaled *= np.float32(MAX_VALUE[bit_depth])
    np.rint(scaled, out=scaled)
    return np.ascontiguousarray(scaled.astype(np.uint16 if bit_depth == 16 else np.uint8))


def _save_options(image: Image, format: str, quality: int) -> dict[str, Any]:
    """Pillow ``save`` keyword arguments for ``format``."""
    options: dict[str, Any] = {}
    if format in _METADATA_FORMATS:
        if image.icc_profile:
            options["icc_profile"] = image.icc_profile
        if image.exif and not (format == "JPEG" and len(image.exif) > _JPEG_MAX_EXIF):
            options["exif"] = image.exif
    if format == "JPEG":
        options["quality"] = quality
        options["subsampling"] = "4:4:4" if quality >= 90 else "4:2:0"
    elif format == "WEBP":
        options["quality"] = quality
        options["lossless"] = quality == _WEBP_LOSSLESS_QUALITY
        options["exact"] = True  # keep colour under transparent pixels (straight alpha)
    elif format == "TIFF" and features.check("libtiff"):
        options["compression"] = "tiff_adobe_deflate"
    return options
