"""Torch users' API: differentiable functions and the ``nn.Module`` s that call them."""

from __future__ import annotations

from adaptiveblur.nn.functional import adaptive_blur, spatially_varying_conv2d
from adaptiveblur.nn.modules import AdaptiveGaussianBlur, SpatiallyVaryingConv2d

__all__ = [
    "AdaptiveGaussianBlur",
    "SpatiallyVaryingConv2d",
    "adaptive_blur",
    "spatially_varying_conv2d",
]
