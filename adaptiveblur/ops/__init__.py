"""Blur operators and their backends.

:func:`adaptive_blur` is imported on first use, so that :mod:`adaptiveblur.ops.registry`
(backend names, capabilities) can be read without loading torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["adaptive_blur"]


def __getattr__(name: str) -> Any:
    if name == "adaptive_blur":
        from adaptiveblur.ops.blur import adaptive_blur

        return adaptive_blur
    raise AttributeError(f"module 'adaptiveblur.ops' has no attribute {name!r}")
