"""Window radius and Gaussian weights. No I/O, no tiling.

The gather model: a pixel ``p`` with sigma ``s`` averages the square window of radius
``radius_for(s, truncate) = floor(truncate * s + 0.5)`` around it with weights
``exp(-d^2 / (2 s^2))``, normalised by their sum. This is the radius rule of
``scipy.ndimage.gaussian_filter``, so a constant sigma map reproduces it. torch is
imported by the functions that take tensors only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from adaptiveblur.errors import InvalidParameterError

if TYPE_CHECKING:
    import torch

DEFAULT_TRUNCATE = 3.0

# Below this sigma the radius is 0 for any truncate <= 3 (the pixel is left as it is);
# clamping keeps exp(-d^2 / (2 s^2)) finite at d = 0 for s = 0. Every backend clamps here.
SIGMA_FLOOR = 1e-3


def radius_for(sigma: float, truncate: float = DEFAULT_TRUNCATE) -> int:
    """Window radius in pixels for one sigma: ``floor(truncate * sigma + 0.5)``.

    Example:
        >>> radius_for(1.5), radius_for(0.1), radius_for(2.0, truncate=4.0)
        (5, 0, 8)
    """
    return int(math.floor(truncate * float(sigma) + 0.5))


def check_truncate(truncate: float) -> None:
    """Raise :class:`InvalidParameterError` unless ``truncate`` is a finite number > 0."""
    if (
        isinstance(truncate, bool)
        or not isinstance(truncate, (int, float))
        or not math.isfinite(truncate)
        or truncate <= 0
    ):
        raise InvalidParameterError(
            f"expected truncate to be a finite number > 0, got {truncate!r}"
        )


def radius_map(sigma: torch.Tensor, truncate: float = DEFAULT_TRUNCATE) -> torch.Tensor:
    """Per-pixel window radius (int64 tensor, same shape as ``sigma``).

    Computed in float64 so it agrees with :func:`radius_for` (and scipy) even where
    ``truncate * sigma + 0.5`` lands on an integer.
    """
    import torch

    return torch.floor(sigma.to(torch.float64) * float(truncate) + 0.5).to(torch.int64)


def gaussian_taps(sigma: torch.Tensor, radius: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """1-D Gaussian weights of each pixel at each offset, zero outside its own window.

    Args:
        sigma: ``(...)`` per-pixel sigma, float.
        radius: ``(...)`` per-pixel radius (as from :func:`radius_map`).
        offsets: ``(K,)`` integer offsets ``-R..R``.

    Returns:
        ``(..., K)`` weights ``exp(-d^2 / (2 sigma^2))`` for ``|d| <= radius``, else 0.
        Not normalised; the caller divides by the window's total weight.
    """
    import torch

    s = sigma.clamp_min(SIGMA_FLOOR).unsqueeze(-1)
    d = offsets.to(sigma.dtype)
    taps = torch.exp(-(d * d) / (2.0 * s * s))
    inside = offsets.abs() <= radius.unsqueeze(-1)
    return taps * inside
