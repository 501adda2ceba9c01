"""EXIF orientation: read it, apply it to the pixels, and reset it to 1 in the bytes that ride along."""

from __future__ import annotations

import struct
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image as PILImage

EXIF_PREFIX = b"Exif\x00\x00"

_ORIENTATION_TAG = 0x0112


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
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


def pillow_orientation(picture: PILImage.Image) -> int:
    """Orientation pillow finds outside an EXIF block (a TIFF's own tag, XMP); 1 if none."""
    # A damaged metadata block should not stop the image from loading.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = picture.getexif().get(_ORIENTATION_TAG, 1)
        except Exception:
            return 1
    return value if isinstance(value, int) else 1


def clean_exif(raw: bytes | None) -> bytes | None:
    """EXIF bytes with the ``Exif\\0\\0`` prefix and orientation reset to 1; None if empty."""
    if not raw:
        return None
    exif = raw if raw.startswith(EXIF_PREFIX) else EXIF_PREFIX + raw
    entry = _orientation_entry(exif)
    if entry is None or entry[1] == 1:
        return exif
    patched = bytearray(exif)
    struct.pack_into(entry[2] + "H", patched, entry[0], 1)
    return bytes(patched)


def exif_orientation(raw: bytes | None) -> int:
    """The orientation stored in raw EXIF bytes (with or without prefix); 1 if none."""
    if not raw:
        return 1
    entry = _orientation_entry(raw if raw.startswith(EXIF_PREFIX) else EXIF_PREFIX + raw)
    return entry[1] if entry is not None else 1


def _orientation_entry(exif: bytes) -> tuple[int, int, str] | None:
    """Find the orientation tag in IFD0 of prefixed EXIF bytes.

    Returns:
        ``(offset of its value in exif, value, struct byte-order char)`` or ``None``.
    """
    base = len(EXIF_PREFIX)
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
