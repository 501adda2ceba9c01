"""adaptiveblur: blur each pixel of an image with its own Gaussian.

The torch-based API is imported on first use, so importing the package (and running
``adaptiveblur --help``) stays fast.

Example:
    >>> import torch
    >>> from adaptiveblur import adaptive_blur
    >>> image = torch.rand(3, 16, 16)
    >>> sigma = torch.linspace(0, 3, 16).expand(16, 16)  # sharp left, soft right
    >>> adaptive_blur(image, sigma).shape
    torch.Size([3, 16, 16])
"""

from __future__ import annotations

from typing import Any

from adaptiveblur._version import __version__
from adaptiveblur.errors import (
    AdaptiveBlurError,
    DeviceUnavailableError,
    InputImageError,
    InvalidParameterError,
    OutputImageError,
)

_LAZY = {
    "adaptive_blur": "adaptiveblur.ops",
    "spatially_varying_conv2d": "adaptiveblur.nn",
    "AdaptiveGaussianBlur": "adaptiveblur.nn",
    "SpatiallyVaryingConv2d": "adaptiveblur.nn",
    "sigma_from_intensity": "adaptiveblur.sigma",
    "intensity": "adaptiveblur.sigma",
    "load_image": "adaptiveblur.io",
    "save_image": "adaptiveblur.io",
}

__all__ = [
    "AdaptiveBlurError",
    "DeviceUnavailableError",
    "InputImageError",
    "InvalidParameterError",
    "OutputImageError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adaptiveblur' has no attribute {name!r}")
