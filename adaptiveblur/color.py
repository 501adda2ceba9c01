"""Colour constants and transfer functions (one source of truth for each)."""

from __future__ import annotations

import torch

# Rec. 709 / sRGB luma weights for R, G, B.
REC709_LUMA = (0.2126, 0.7152, 0.0722)


def srgb_to_linear(values: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded values in ``[0, 1]`` to linear light (IEC 61966-2-1)."""
    values = values.clamp(0.0, 1.0)
    return torch.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: torch.Tensor) -> torch.Tensor:
    """Linear light in ``[0, 1]`` to sRGB-encoded values (inverse of :func:`srgb_to_linear`)."""
    values = values.clamp(0.0, 1.0)
    return torch.where(values <= 0.0031308, values * 12.92, 1.055 * values ** (1 / 2.4) - 0.055)
