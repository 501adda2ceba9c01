"""The decoded image and its sample conventions: modes, bit depths, alpha, float <-> samples.

Decoded images are ``(H, W, C)`` arrays in one of four layouts (``L``, ``LA``, ``RGB``,
``RGBA``), alpha straight (not premultiplied) in the last channel. Pixels are float32 in
``[0, 1]`` or the stored integer samples; :func:`to_float` and :func:`quantise` convert
between them, and are the only place that does. 32-bit float images (depth maps,
scientific data; :data:`FLOAT_DEPTH`) are gray and keep their values as stored, in any
units: their samples and their float pixels are the same float32 values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptiveblur.errors import InvalidParameterError

MODES: tuple[str, ...] = ("L", "LA", "RGB", "RGBA")

CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}

ALPHA_MODES = frozenset({"LA", "RGBA"})  # modes whose last channel is alpha

MAX_VALUE = {8: 255, 16: 65535}  # largest sample at each bit depth

SAMPLE_TYPES = {8: "uint8", 16: "uint16"}  # integer pixels at each bit depth

FLOAT_DEPTH = 32  # the bit depth of float32 samples, taken as they are (not scaled, not clipped)

BIT_DEPTHS: tuple[int, ...] = (8, 16, FLOAT_DEPTH)

# Format names (pillow's) and the aliases and extensions that select them.

STDIO = "-"  # a path that means standard input or output


@dataclass(eq=False)
class Image:
    """A decoded image, ready for processing.

    Attributes:
        pixels: array of shape ``(H, W, C)``: float32 values in ``[0, 1]``, or the stored
            integer samples (uint8 for ``bit_depth`` 8, uint16 for 16; see
            :func:`load_image`'s ``integers``); alpha, when present, is the last channel
            and is straight (not premultiplied). For ``bit_depth`` 32 (:data:`FLOAT_DEPTH`)
            float32 values as stored, in any range (a depth map in metres).
        mode: channel layout, one of ``"L"``, ``"LA"``, ``"RGB"``, ``"RGBA"``; ``"L"`` for
            ``bit_depth`` 32.
        bit_depth: 8, 16 or 32, what the source stored; the output follows it where the
            output format can hold it.
        icc_profile: raw ICC profile bytes, or ``None``.
        exif: raw EXIF bytes starting with ``b"Exif\\0\\0"``, with the orientation already
            applied to ``pixels`` and reset to 1 here, or ``None``.
        source_format: pillow's name of the format it was read from (``"PNG"``, ``"JPEG"``).

    Raises:
        InvalidParameterError: if ``mode``, ``bit_depth``, the shape of ``pixels`` or an
            integer ``pixels`` dtype is wrong (integer pixels with ``bit_depth`` 32, or
            ``bit_depth`` 32 in a mode other than ``"L"``).
    """

    pixels: np.ndarray
    mode: str
    bit_depth: int
    icc_profile: bytes | None = None
    exif: bytes | None = None
    source_format: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in CHANNELS:
            raise InvalidParameterError(f"expected mode in {MODES}, got {self.mode!r}")
        if self.bit_depth not in BIT_DEPTHS:
            raise InvalidParameterError(f"expected bit_depth 8, 16 or 32, got {self.bit_depth!r}")
        if self.bit_depth == FLOAT_DEPTH and self.mode != "L":
            raise InvalidParameterError(
                f"expected mode L for bit_depth {FLOAT_DEPTH} (float), got {self.mode!r}"
            )
        shape = tuple(getattr(self.pixels, "shape", ()))
        channels = CHANNELS[self.mode]
        if len(shape) != 3 or shape[2] != channels:
            raise InvalidParameterError(
                f"expected pixels of shape (H, W, {channels}) for mode {self.mode}, got {shape}"
            )
        dtype = np.dtype(self.pixels.dtype)
        expected = SAMPLE_TYPES.get(self.bit_depth, "float")
        if dtype.kind in "ui" and dtype.name != expected:
            raise InvalidParameterError(
                f"expected {expected} samples for bit_depth {self.bit_depth}, got {dtype.name}"
            )

    def float_pixels(self) -> np.ndarray:
        """``pixels`` as float32 in ``[0, 1]`` (converted when they are integer samples);
        the stored values for ``bit_depth`` 32."""
        if np.dtype(self.pixels.dtype).kind in "ui":
            return to_float(self.pixels, self.bit_depth)
        return np.asarray(self.pixels, dtype=np.float32)

    def with_pixels(self, pixels: np.ndarray, bit_depth: int | None = None) -> Image:
        """A new image of ``pixels`` with this one's mode and metadata (and depth, by default)."""
        return Image(
            pixels=pixels,
            mode=self.mode,
            bit_depth=self.bit_depth if bit_depth is None else bit_depth,
            icc_profile=self.icc_profile,
            exif=self.exif,
            source_format=self.source_format,
        )

    @property
    def has_alpha(self) -> bool:
        """Whether the last channel is alpha."""
        return has_alpha(self.mode)

    @property
    def color_channels(self) -> int:
        """Number of channels that are not alpha (1 or 3)."""
        return CHANNELS[self.mode] - int(self.has_alpha)


def to_float(values: np.ndarray, bit_depth: int) -> np.ndarray:
    """Integer samples → float32 in [0, 1]; 32-bit float samples → a float32 copy, as they are."""
    pixels = values.astype(np.float32)
    if bit_depth != FLOAT_DEPTH:
        pixels /= np.float32(MAX_VALUE[bit_depth])
    return pixels


def quantise(values: Any, bit_depth: int) -> Any:
    """THE rounding from float pixels to samples: clip to [0, 1], scale, round half to even.

    Works on numpy arrays and torch tensors alike (only ``clip``, ``*`` and ``round``), so
    samples rounded on a GPU are the ones saving would round here. Returns rounded floats
    in ``[0, MAX_VALUE[bit_depth]]``; the caller casts them to :data:`SAMPLE_TYPES`.

    Example:
        >>> import numpy as np
        >>> quantise(np.array([-0.1, 0.5 / 255, 1.5 / 255, 0.5, 2.0], dtype=np.float32), 8)
        array([  0.,   0.,   2., 128., 255.], dtype=float32)
    """
    return (values.clip(0.0, 1.0) * float(MAX_VALUE[bit_depth])).round()


def has_alpha(mode: str) -> bool:
    """Whether the last channel of ``mode`` (one of :data:`MODES`) is alpha."""
    return mode in ALPHA_MODES
