"""Depth of field: a focal band in a map, feathering, and a focus read from the picture.

With a focus ``D`` and a focus range ``R`` (both map values), a value ``v`` in ``[0, 1]``
(a depth map's, or the image's own intensity) is sharp inside the focal band
``|v - D| <= R / 2`` and blurs more the farther it lies outside::

    L = max(D - R/2, 1 - D - R/2)        the largest distance from the band to an end
    t = (D - R/2 - v) / L                below the band (the near side)
    t = (v - D - R/2) / L                above the band (the far side)
    sigma = min_sigma + (side_sigma - min_sigma) * t ** gamma

so blur grows at the same rate on both sides, ``t`` is 0 at the band's edge and reaches 1
at the end of the value range (map value 0 or 1) farthest from the band, and
``side_sigma`` is the near or the far sigma. The scale is that of the values, the same for
every image: a band near one end leaves that side little room, and a sliver of values
there never jumps to the full blur. Inside the band sigma is ``min_sigma`` (0 by default: those pixels come out as they
went in). Smaller values are near, as in a depth map that stores distance; ``invert``
makes the larger values near (a disparity map, white near), as ``1 - v`` with ``1 - D``.

Without a focus the usual mapping applies (see :mod:`adaptiveblur.sigma`). Feathering
smooths ``v`` first with an exact Gaussian (mirrored borders; a constant sigma's window
is the product of two 1-D windows, so it runs as two passes), so a hard mask edge gives
no hard step in sigma. ``focus="auto"`` takes the median of the (feathered) values in a
square around a point, the image centre by default.

Everything here is numpy, computed once per map on the CPU; the blur then takes the map
as it is, on any engine. No torch here.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np

from adaptiveblur import io
from adaptiveblur.color import REC709_LUMA
from adaptiveblur.errors import InvalidParameterError
from adaptiveblur.kernels import radius_for
from adaptiveblur.sigma import intensity_source

if TYPE_CHECKING:
    from adaptiveblur.settings import BlurSettings

AUTO = "auto"
DEFAULT_FOCUS_AT = "50%,50%"
# The side of the square whose median is the automatic focus, as a fraction of the
# image's shorter side: large enough to ignore noise, small enough to stay on a subject.
FOCUS_REGION = 0.1
_COORDINATE = re.compile(r"^\s*(-?\d+(?:\.\d*)?)\s*(%?)\s*$")


def in_use(settings: BlurSettings) -> bool:
    """Whether ``settings`` ask for a focal band or feathering (and so for :func:`sigma_for`)."""
    return settings.focus is not None or settings.feather > 0


def check_focus(settings: BlurSettings) -> None:
    """Validate the depth-of-field settings; raises :class:`InvalidParameterError` naming the bad one."""
    focus = settings.focus
    number = focus is not None and focus != AUTO
    if number and not (_finite(focus) and 0.0 <= focus <= 1.0):  # type: ignore[operator]
        raise InvalidParameterError(
            f"expected focus to be a map value in [0, 1] or 'auto', got {focus!r}"
        )
    if not _finite(settings.focus_range) or settings.focus_range < 0:
        raise InvalidParameterError(
            f"expected focus_range >= 0, got {settings.focus_range!r}", parameter="focus_range"
        )
    if not _finite(settings.feather) or settings.feather < 0:
        raise InvalidParameterError(
            f"expected feather >= 0 (pixels), got {settings.feather!r}", parameter="feather"
        )
    for name in ("near_sigma", "far_sigma"):
        value = getattr(settings, name)
        if value is None:
            continue
        if not _finite(value) or not settings.min_sigma <= value <= settings.max_sigma:
            raise InvalidParameterError(
                f"expected {name} in [min_sigma, max_sigma] = "
                f"[{settings.min_sigma:g}, {settings.max_sigma:g}], got {value!r}",
                parameter=name,
            )
    if focus is None:
        for name, unset in (
            ("focus_range", settings.focus_range == 0),
            ("near_sigma", settings.near_sigma is None),
            ("far_sigma", settings.far_sigma is None),
            ("focus_at", settings.focus_at is None),
        ):
            if not unset:
                raise InvalidParameterError(f"{name} needs a focus", parameter="focus")
    elif focus != AUTO and settings.focus_at is not None:
        raise InvalidParameterError("focus_at needs focus 'auto' (--focus auto)")
    if settings.focus_at is not None:
        parse_point(settings.focus_at)


def parse_point(text: str) -> tuple[tuple[float, bool], tuple[float, bool]]:
    """``"X,Y"`` in pixels, or with ``%`` in percent of the width and height.

    Returns:
        ``((x, x_is_percent), (y, y_is_percent))``.

    Raises:
        InvalidParameterError: not two coordinates.

    Example:
        >>> parse_point("120,40%")
        ((120.0, False), (40.0, True))
    """
    parts = text.split(",")
    matches = [_COORDINATE.match(part) for part in parts]
    if len(parts) != 2 or not all(matches):
        raise InvalidParameterError(
            f"expected focus_at as X,Y in pixels or percent (e.g. 50%,40%), got {text!r}",
            parameter="focus_at",
        )
    x, y = ((float(m.group(1)), m.group(2) == "%") for m in matches if m is not None)
    return x, y


def map_values(image: io.Image, channel: str) -> np.ndarray:
    """The ``(H, W)`` float32 values in ``[0, 1]`` that drive sigma, as the blur reads them.

    Integer samples are divided by their maximum; a 32-bit float image is normalised by
    its range (its minimum is 0, its maximum 1, a constant one is 0 everywhere).
    """
    kind, index = intensity_source(image.mode, channel)
    pixels = image.float_pixels()
    if kind == "luminance":
        weights = np.asarray(REC709_LUMA, dtype=np.float32)
        weighted = pixels[..., 0] * weights[0] + pixels[..., 1] * weights[1]
        value = np.clip(weighted + pixels[..., 2] * weights[2], 0.0, 1.0)
    elif kind == "mean":
        value = (pixels[..., 0] + pixels[..., 1] + pixels[..., 2]) / np.float32(3.0)
    else:
        value = pixels[..., index]
    if image.bit_depth == io.FLOAT_DEPTH:
        low, high = float(value.min()), float(value.max())
        value = (value - low) / (high - low) if high > low else np.zeros_like(value)
    return np.ascontiguousarray(value, dtype=np.float32)


def feathered(values: np.ndarray, sigma: float, truncate: float) -> np.ndarray:
    """``values`` (``(H, W)``) blurred with an exact Gaussian of ``sigma`` pixels, mirrored borders.

    Equals ``scipy.ndimage.gaussian_filter(values, sigma, mode='mirror', truncate=truncate)``
    (in float64, returned as float32), for any radius, also one wider than the image.
    Mirrored borders make each axis periodic (period ``2 n - 2``), so each pass is a
    circular convolution of one period with the window folded onto it, done by FFT: the
    cost does not grow with sigma.
    """
    radius = radius_for(sigma, truncate)
    result = np.asarray(values, dtype=np.float64)
    if radius == 0:
        return result.astype(np.float32)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    for axis in (0, 1):
        result = _periodic_pass(result, offsets, weights, axis)
    return result.astype(np.float32)


def _periodic_pass(
    values: np.ndarray, offsets: np.ndarray, weights: np.ndarray, axis: int
) -> np.ndarray:
    """One 1-D pass along ``axis``: ``out[p] = sum_t weights[t] values[mirror(p + offsets[t])]``."""
    size = values.shape[axis]
    if size == 1:
        return values  # every neighbour is the pixel itself; the weights sum to 1
    period = 2 * size - 2
    # One period of the mirrored signal: 0 .. n-1, then n-2 .. 1.
    extended = np.concatenate([values, np.flip(values, axis).take(range(1, size - 1), axis)], axis)
    # Symmetric weights: a correlation equals a convolution, so fold them onto the period.
    folded = np.bincount(np.mod(offsets, period), weights, minlength=period)
    shape = [1, 1]
    shape[axis] = period // 2 + 1
    spectrum = np.fft.rfft(extended, axis=axis) * np.fft.rfft(folded).reshape(shape)
    out = np.fft.irfft(spectrum, n=period, axis=axis)
    return out.take(range(size), axis)


def focus_at(values: np.ndarray, point: str | None) -> float:
    """The median of ``values`` in a square of :data:`FOCUS_REGION` of the shorter side
    (at least one pixel) around ``point`` (:func:`parse_point`; default the centre).

    Raises:
        InvalidParameterError: the point lies outside the image.
    """
    height, width = values.shape
    (x, x_percent), (y, y_percent) = parse_point(point or DEFAULT_FOCUS_AT)
    column = x / 100 * (width - 1) if x_percent else x
    row = y / 100 * (height - 1) if y_percent else y
    if not (0 <= column <= width - 1 and 0 <= row <= height - 1):
        raise InvalidParameterError(
            f"focus_at {point!r} lies outside the {width}x{height} image", parameter="focus_at"
        )
    half = max(0, int(FOCUS_REGION * min(height, width)) // 2)
    row0, column0 = round(row), round(column)
    region = values[
        max(0, row0 - half) : row0 + half + 1, max(0, column0 - half) : column0 + half + 1
    ]
    return float(np.median(region))


def sigma_for(driver: io.Image, settings: BlurSettings) -> np.ndarray:
    """The ``(H, W)`` float32 sigma map of ``driver`` (a map, or the image) under ``settings``.

    Its values are feathered first (``settings.feather > 0``), then mapped through the
    focal band (``settings.focus`` given) or the usual curve.
    """
    values = map_values(driver, settings.channel)
    if settings.feather > 0:
        values = feathered(values, settings.feather, settings.truncate)
    if settings.focus is None:
        return _curve(values, settings)
    focus = focus_at(values, settings.focus_at) if settings.focus == AUTO else float(settings.focus)
    return focal_sigma(values, focus, settings)


def focal_sigma(values: np.ndarray, focus: float, settings: BlurSettings) -> np.ndarray:
    """The focal band's mapping (module docstring) of ``values`` in ``[0, 1]``, float32."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    if settings.invert:
        v, focus = 1.0 - v, 1.0 - focus
    half = settings.focus_range / 2
    low, high = focus - half, focus + half
    near = settings.max_sigma if settings.near_sigma is None else settings.near_sigma
    far = settings.max_sigma if settings.far_sigma is None else settings.far_sigma
    below, above = v < low, v > high
    longest = max(low, 1.0 - high)  # > 0 whenever a value lies outside the band
    t = np.zeros_like(v)
    t[below] = (low - v[below]) / longest
    t[above] = (v[above] - high) / longest
    top = np.where(below, near, np.where(above, far, settings.min_sigma))
    curve = t**settings.gamma
    return (settings.min_sigma + (top - settings.min_sigma) * curve).astype(np.float32)


def _curve(values: np.ndarray, settings: BlurSettings) -> np.ndarray:
    """The usual mapping (:func:`adaptiveblur.sigma.sigma_from_intensity`) in float64."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    if settings.invert:
        v = 1.0 - v
    span = settings.max_sigma - settings.min_sigma
    return (settings.min_sigma + span * v**settings.gamma).astype(np.float32)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
