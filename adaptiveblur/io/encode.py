"""Encode an :class:`~adaptiveblur.io.image.Image` and write it (atomically) to a file, stdout or a stream.

Every PNG is written by :mod:`adaptiveblur.io.png` (8 or 16 bits, parallel deflate);
the other formats by pillow (a 32-bit float image as a float TIFF, pillow's mode ``F``).
"""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np
from PIL import Image as PILImage

from adaptiveblur.errors import InvalidParameterError
from adaptiveblur.io import png
from adaptiveblur.io.atomic import write_file_atomically, write_stdout, write_stream
from adaptiveblur.io.decode import source_name
from adaptiveblur.io.exif import EXIF_PREFIX
from adaptiveblur.io.formats import (
    check_float_range,
    check_output_format,
    check_quality,
    output_bit_depth,
    save_options,
)
from adaptiveblur.io.image import FLOAT_DEPTH, SAMPLE_TYPES, STDIO, Image, quantise, to_float


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
    depth (``image.bit_depth`` where the format can hold it, else 8). A 32-bit float
    image is written as a float TIFF with its values as they are; to PNG (16 bits) and
    the other formats (8 bits) only when its values lie in ``[0, 1]``. Files are written
    atomically: a temporary file next to ``dest`` is renamed over it only once complete,
    so on any failure (Ctrl-C included) ``dest`` is untouched and no temporary is left.
    An existing ``dest`` that is a device or a FIFO (``/dev/null``) is written in place.

    Args:
        image: the image to write.
        dest: a path, a URL (``s3://bucket/out.png``: any fsspec protocol, see
            :mod:`adaptiveblur.io.remote`), ``"-"`` for stdout, or a binary file object.
        format: a format name or alias; ``None`` to infer it from ``dest``'s extension
            (required for stdout and for streams without a name).
        quality: 1-100, for JPEG and WebP (100 means lossless WebP).
        overwrite: if False, refuse to replace an existing file.

    Raises:
        BrokenPipeOutputError: ``dest`` is a pipe whose reader has gone (``| head``).
        OutputImageError: unknown output format, alpha in a format without it, float
            values outside ``[0, 1]`` in a format other than TIFF, missing or unwritable
            directory, ``dest`` is a directory or exists with ``overwrite=False``, or the
            encoder or the write failed.
        InvalidParameterError: ``quality`` is out of range or the pixels contain NaN.
    """
    quality = check_quality(quality)
    name = check_output_format(image.mode, format, dest)
    check_float_range(image, name)

    def encode(stream: BinaryIO) -> None:
        _encode(image, name, quality, stream)

    if isinstance(dest, str) and dest == STDIO:
        write_stdout(encode)
    elif isinstance(dest, (str, os.PathLike)):
        write_file_atomically(os.fspath(dest), encode, overwrite)
    else:
        write_stream(dest, encode, source_name(dest))


def _encode(image: Image, format: str, quality: int, stream: BinaryIO) -> None:
    """Write ``image`` encoded as ``format`` to ``stream``."""
    depth = output_bit_depth(image.mode, image.bit_depth, format)
    values = _samples(image.pixels, depth)
    if format == "PNG":
        exif = image.exif
        if exif is not None and exif.startswith(EXIF_PREFIX):
            exif = exif[len(EXIF_PREFIX) :]  # a PNG's eXIf chunk holds the TIFF part alone
        stream.write(png.encode(values, image.mode, image.icc_profile, exif))
        return
    picture = PILImage.fromarray(values[:, :, 0] if values.shape[2] == 1 else values)
    picture.save(stream, format=format, **save_options(image, format, quality))


def _samples(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    """Pixels as contiguous uint8/uint16 samples of ``bit_depth``, rounded by :func:`quantise`,
    or float32 samples, as they are, for ``bit_depth`` 32.

    Integer samples of the wanted depth pass as they are; of the other depth they are
    converted through float like any other pixels.

    Raises:
        InvalidParameterError: the pixels contain NaN.
    """
    dtype = np.dtype(pixels.dtype)
    if dtype.kind in "ui":
        if dtype.name == SAMPLE_TYPES[bit_depth]:
            return np.ascontiguousarray(pixels)
        pixels = to_float(pixels, 16 if dtype.itemsize == 2 else 8)
    values = np.asarray(pixels, dtype=np.float32)
    if np.isnan(values).any():
        raise InvalidParameterError("expected finite pixel values, got NaN")
    if bit_depth == FLOAT_DEPTH:
        return np.ascontiguousarray(values)
    return np.ascontiguousarray(quantise(values, bit_depth).astype(SAMPLE_TYPES[bit_depth]))
