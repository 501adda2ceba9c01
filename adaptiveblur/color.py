"""Colour constants and transfer functions (one source of truth for each).

The transfer functions take numpy arrays or torch tensors and compute in float64,
rounding once to the input's dtype: the torch path and the fused native path (whose
tables numpy makes with these same functions) then agree to the last bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Rec. 709 / sRGB luma weights for R, G, B.
REC709_LUMA = (0.2126, 0.7152, 0.0722)


def srgb_to_linear(values: Any) -> Any:
    """sRGB-encoded values in ``[0, 1]`` to linear light (IEC 61966-2-1).

    Example:
        >>> srgb_to_linear(np.array([0.0, 0.5, 1.0], dtype=np.float32)).round(4)
        array([0.   , 0.214, 1.   ], dtype=float32)
    """
    wide, where, narrow = _in_float64(values)
    return narrow(where(wide <= 0.04045, wide / 12.92, ((wide + 0.055) / 1.055) ** 2.4))


def linear_to_srgb(values: Any) -> Any:
    """Linear light in ``[0, 1]`` to sRGB-encoded values (inverse of :func:`srgb_to_linear`)."""
    wide, where, narrow = _in_float64(values)
    return narrow(where(wide <= 0.0031308, wide * 12.92, 1.055 * wide ** (1 / 2.4) - 0.055))


def _in_float64(values: Any) -> tuple[Any, Any, Any]:
    """``values`` clamped to ``[0, 1]`` in float64, the matching ``where``, and the way back."""
    if isinstance(values, np.ndarray):
        dtype = values.dtype
        return values.clip(0.0, 1.0).astype(np.float64), np.where, lambda r: r.astype(dtype)
    import torch

    dtype = values.dtype
    return values.clamp(0.0, 1.0).to(torch.float64), torch.where, lambda r: r.to(dtype)
