"""Blur operators and their backends."""

from __future__ import annotations

from adaptiveblur.ops.blur import adaptive_blur

__all__ = ["adaptive_blur"]
