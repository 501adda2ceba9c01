"""Output formats: names and aliases, which formats can hold alpha, 16 bits and floats, their save options."""

from __future__ import annotations

import functools
import os
from typing import Any, BinaryIO

import numpy as np
from PIL import Image as PILImage
from PIL import features

from adaptiveblur.errors import InvalidParameterError, OutputImageError
from adaptiveblur.io.image import CHANNELS, FLOAT_DEPTH, MODES, STDIO, Image

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


def output_format_names() -> list[str]:
    """What ``format`` accepts, lower case: each format's names and aliases (``png``, ``jpg``)."""
    return [alias for alias, name in _FORMAT_ALIASES.items() if name in SUPPORTED_OUTPUT_FORMATS]


_ALPHA_FORMATS = frozenset({"PNG", "TIFF", "WEBP"})

_METADATA_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "WEBP"})

_DISPLAY_NAMES = {"WEBP": "WebP"}

_JPEG_MAX_EXIF = 65533  # one APP1 marker; larger EXIF blocks are dropped for JPEG

_WEBP_LOSSLESS_QUALITY = 100  # quality 100 means lossless WebP rather than "lossy, best"


@functools.cache
def readable_extensions() -> frozenset[str]:
    """Extensions (lower case, with the dot) of every format pillow can open.

    Asking pillow loads every one of its format plugins, so it is asked only when a
    folder is listed, not by every command that loads this module.
    """
    return frozenset(
        ext.lower()
        for ext, name in PILImage.registered_extensions().items()
        if name in PILImage.OPEN
    )


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
    if mode not in CHANNELS:
        raise InvalidParameterError(f"expected mode in {MODES}, got {mode!r}")
    name = format_name(format) if format is not None else _format_from_dest(dest)
    if mode in ("LA", "RGBA") and name not in _ALPHA_FORMATS:
        raise OutputImageError(
            f"{display_name(name)} cannot store transparency; write PNG, WebP or TIFF instead"
        )
    return name


def output_bit_depth(mode: str, bit_depth: int, format: str) -> int:
    """The bit depth an image of ``mode``/``bit_depth`` gets when written as ``format``.

    16 bits survive in PNG (any mode) and in greyscale TIFF; everything else is 8-bit.
    32-bit float images stay float in TIFF (values as they are); in PNG they get 16 bits
    and in the other formats 8 (see :func:`check_float_range`).
    """
    name = format_name(format)
    if bit_depth == FLOAT_DEPTH:
        return FLOAT_DEPTH if name == "TIFF" else 16 if name == "PNG" else 8
    if bit_depth == 16 and (name == "PNG" or (name == "TIFF" and mode == "L")):
        return 16
    return 8


def check_float_range(image: Image, format: str) -> None:
    """Refuse to write float values outside ``[0, 1]`` in a format of integer samples.

    A 32-bit float image keeps its values in TIFF. PNG, JPEG, WebP and BMP store integers:
    values in ``[0, 1]`` are quantised like any pixels, but others (a depth map in
    metres) would be clipped away, so they are refused rather than silently lost. The
    blur's output stays within its input's range (each pixel is a weighted mean), so
    checking the input answers for the output before the blur.

    Raises:
        OutputImageError: ``image`` is float, ``format`` is not TIFF, and its values leave
            ``[0, 1]``.
    """
    name = format_name(format)
    if image.bit_depth != FLOAT_DEPTH or name == "TIFF" or not image.pixels.size:
        return
    low, high = float(image.pixels.min()), float(image.pixels.max())
    if low < 0.0 or high > 1.0:
        raise OutputImageError(
            f"{display_name(name)} cannot store float values outside [0, 1] (these range "
            f"from {low:g} to {high:g}); write TIFF instead, which keeps them as they are"
        )


def check_quality(quality: int) -> int:
    """``quality`` if it is an int in 1..100 (JPEG and WebP); else :class:`InvalidParameterError`."""
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise InvalidParameterError(f"expected quality to be an int, got {quality!r}")
    if not 1 <= quality <= 100:
        raise InvalidParameterError(f"expected quality in 1..100, got {quality}")
    return int(quality)


def format_name(format: str) -> str:
    """Pillow's name for a format name or alias; InvalidParameterError if unknown."""
    key = format.strip().lower().lstrip(".")
    name = _FORMAT_ALIASES.get(key)
    if name is None or name not in SUPPORTED_OUTPUT_FORMATS:
        choices = ", ".join(display_name(n) for n in SUPPORTED_OUTPUT_FORMATS)
        raise InvalidParameterError(f"unknown output format {format!r}; choose one of {choices}")
    return name


def _format_from_dest(dest: str | os.PathLike[str] | BinaryIO | None) -> str:
    """The format implied by a destination path; OutputImageError when there is none."""
    if dest is None or (isinstance(dest, str) and dest == STDIO):
        raise OutputImageError("writing to stdout needs a format", parameter="format")
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
        choices = ", ".join(display_name(n) for n in SUPPORTED_OUTPUT_FORMATS)
        raise OutputImageError(
            f"cannot write '{path}': {extension} output is not supported; use one of {choices}"
        )
    raise OutputImageError(f"cannot tell the output format from '{path}'", parameter="format")


def display_name(name: str) -> str:
    """How a format name is written in messages (``WebP``, ``JPEG``)."""
    return _DISPLAY_NAMES.get(name, name)


def save_options(image: Image, format: str, quality: int) -> dict[str, Any]:
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
