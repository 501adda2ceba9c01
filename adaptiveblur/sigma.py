"""From an image (or a separate map) to a per-pixel sigma map.

``sigma = min_sigma + (max_sigma - min_sigma) * curve(v)`` where ``v`` in ``[0, 1]`` is the
chosen intensity (Rec. 709 luminance by default), ``curve(v) = v ** gamma`` and
``invert`` uses ``1 - v`` instead of ``v`` (dark pixels blur most). A 32-bit float image
or map holds values in arbitrary units (a depth map in metres), so its ``v`` is its value
normalised by its own range (:func:`normalised_by_range`: the minimum gives
``min_sigma``, the maximum ``max_sigma``).

Each step is one float32 operation (the curve is computed in float64 and rounded once),
so the fused native path (``_render.c``) repeats it bit for bit. torch is imported by the
functions that take tensors only; the checks and :func:`intensity_source` need none.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

from adaptiveblur.color import REC709_LUMA
from adaptiveblur.errors import InvalidParameterError
from adaptiveblur.io.image import has_alpha

if TYPE_CHECKING:
    import torch

CHANNELS = ("luminance", "mean", "red", "green", "blue", "alpha")
DEFAULT_CHANNEL = "luminance"
_COLOR_INDEX = {"red": 0, "green": 1, "blue": 2}


def intensity(pixels: torch.Tensor, mode: str, channel: str = DEFAULT_CHANNEL) -> torch.Tensor:
    """The value that drives sigma, per pixel.

    Args:
        pixels: ``(C, H, W)`` values in ``[0, 1]`` (straight alpha, encoded as stored).
        mode: channel layout, one of ``"L"``, ``"LA"``, ``"RGB"``, ``"RGBA"``.
        channel: one of :data:`CHANNELS`. For gray images ``luminance``, ``mean``
            and the colour names all read the gray channel.

    Returns:
        ``(H, W)`` tensor in ``[0, 1]``.

    Raises:
        InvalidParameterError: unknown channel, or ``alpha`` on an image without alpha.
    """
    kind, index = intensity_source(mode, channel)
    if kind == "luminance":
        weights = _luma_weights(pixels.dtype, pixels.device)
        weighted = pixels[0] * weights[0] + pixels[1] * weights[1]
        return (weighted + pixels[2] * weights[2]).clamp_(0.0, 1.0)
    if kind == "mean":
        return (pixels[0] + pixels[1] + pixels[2]) / 3.0
    return pixels[index]


def intensity_source(mode: str, channel: str = DEFAULT_CHANNEL) -> tuple[str, int]:
    """What :func:`intensity` reads for ``channel`` of a ``mode`` image.

    Returns:
        ``("luminance", 0)`` or ``("mean", 0)`` (from the first three channels), or
        ``("channel", index)`` for one channel.

    Raises:
        InvalidParameterError: unknown channel, or ``alpha`` on an image without alpha.

    Example:
        >>> intensity_source("RGBA", "alpha"), intensity_source("LA", "luminance")
        (('channel', 3), ('channel', 0))
    """
    check_channel(channel)
    if channel == "alpha":
        if not has_alpha(mode):
            raise InvalidParameterError(
                f"channel 'alpha' was asked for but the image ({mode}) has no alpha"
            )
        return "channel", len(mode) - 1
    if mode.startswith("L"):
        return "channel", 0
    if channel in ("luminance", "mean"):
        return channel, 0
    return "channel", _COLOR_INDEX[channel]


def check_channel(channel: str) -> None:
    """Raise :class:`InvalidParameterError` unless ``channel`` is one of :data:`CHANNELS`."""
    if channel not in CHANNELS:
        raise InvalidParameterError(
            f"expected channel to be one of {', '.join(CHANNELS)}, got {channel!r}"
        )


def check_mapping(min_sigma: float, max_sigma: float, gamma: float) -> None:
    """Validate the mapping's numbers; raises :class:`InvalidParameterError` naming the bad one."""
    for name, value in (("min_sigma", min_sigma), ("max_sigma", max_sigma), ("gamma", gamma)):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidParameterError(f"expected {name} to be a finite number, got {value!r}")
    if min_sigma < 0:
        raise InvalidParameterError(f"expected min_sigma >= 0, got {min_sigma:g}")
    if max_sigma < 0:
        raise InvalidParameterError(f"expected max_sigma >= 0, got {max_sigma:g}")
    if max_sigma < min_sigma:
        raise InvalidParameterError(
            f"expected max_sigma >= min_sigma, got max_sigma {max_sigma:g} < min_sigma {min_sigma:g}"
        )
    if gamma <= 0:
        raise InvalidParameterError(f"expected gamma > 0, got {gamma:g}")


def sigma_from_intensity(
    value: torch.Tensor,
    *,
    min_sigma: float = 0.0,
    max_sigma: float,
    gamma: float = 1.0,
    invert: bool = False,
) -> torch.Tensor:
    """Map intensities in ``[0, 1]`` to sigmas in ``[min_sigma, max_sigma]``.

    Args:
        value: ``(H, W)`` (any shape) intensities in ``[0, 1]``.
        min_sigma: sigma where the curve is 0 (``>= 0``).
        max_sigma: sigma where the curve is 1 (``>= min_sigma``).
        gamma: curve exponent (``> 0``); above 1 keeps more of the image sharp.
        invert: use ``1 - value`` (dark areas blur most).

    Returns:
        Tensor of ``value``'s shape with the sigma of each pixel, in pixels.
    """
    import torch

    check_mapping(min_sigma, max_sigma, gamma)
    v = value.clamp(0.0, 1.0)  # a new tensor: the in-place steps below leave value alone
    if invert:
        v.neg_().add_(1.0)
    if gamma != 1.0:
        v = v.to(torch.float64).pow_(gamma).to(value.dtype)
    return v.mul_(max_sigma - min_sigma).add_(min_sigma)


def normalised_by_range(value: torch.Tensor) -> torch.Tensor:
    """``(value - min) / (max - min)`` over the whole tensor: 0 at its minimum, 1 at its
    maximum; all 0 when it is constant (sigma is then ``min_sigma`` everywhere).

    Nothing is read back to the host, so the call can be recorded in a CUDA graph.
    ``value`` must be finite (a NaN or an infinity makes every result NaN).

    Example:
        >>> import torch
        >>> normalised_by_range(torch.tensor([2.0, 4.0, 3.0]))
        tensor([0.0000, 1.0000, 0.5000])
    """
    import torch

    low = value.amin()
    span = value.amax() - low
    return (value - low) / torch.where(span > 0, span, torch.ones_like(span))


@functools.cache
def _luma_weights(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:data:`REC709_LUMA` on ``device``, made once per dtype and device.

    A fresh copy per call would make every luminance wait for a host-to-device transfer,
    which a CUDA graph cannot record.
    """
    import torch

    return torch.tensor(REC709_LUMA, dtype=dtype, device=device)
