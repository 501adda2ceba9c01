"""adaptiveblur: blur each pixel of an image with its own Gaussian.

One name per job, all listed in ``__all__``: the torch ops (:func:`adaptive_blur`,
:func:`spatially_varying_conv2d` and their ``nn`` modules), images in and out
(:func:`load_image`, :func:`save_image`, :func:`blur_image`), one file or many
(:func:`run_file`, :func:`blur_files`, configured by :class:`BlurSettings` and
:class:`FileOptions`), the sigma mapping, and the errors. They are imported on first
use, so importing the package (and running ``adaptiveblur --help``) stays fast.

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
    BrokenPipeOutputError,
    DeviceUnavailableError,
    InputImageError,
    InvalidParameterError,
    OutputImageError,
    WorkerProcessError,
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
    "blur_image": "adaptiveblur.render",
    "BlurSettings": "adaptiveblur.settings",
    "FileOptions": "adaptiveblur.settings",
    "run_file": "adaptiveblur.run",
    "blur_files": "adaptiveblur.batch",
    "blur_array": "adaptiveblur.arrays",
    "blur_pil": "adaptiveblur.arrays",
    "BlurBatch": "adaptiveblur.arrays",
}

__all__ = [
    "AdaptiveBlurError",
    "BrokenPipeOutputError",
    "DeviceUnavailableError",
    "InputImageError",
    "InvalidParameterError",
    "OutputImageError",
    "WorkerProcessError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adaptiveblur' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
