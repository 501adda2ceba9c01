"""One small exception hierarchy; each error knows the CLI exit code it maps to.

The library raises these; only :mod:`adaptiveblur.cli` turns them into exit codes.
Every class is also a familiar built-in (``ValueError``, ``OSError``, ``RuntimeError``)
so library users can catch what they would expect.
"""

from __future__ import annotations

# One source of truth for exit codes (listed in the README).
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_OUTPUT = 4
EXIT_DEVICE = 5
EXIT_PARTIAL = 6
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class AdaptiveBlurError(Exception):
    """Base class of every error adaptiveblur raises on purpose."""

    exit_code = EXIT_INTERNAL


class InvalidParameterError(AdaptiveBlurError, ValueError):
    """A parameter value is out of range or inconsistent (bad sigma, max < min, ...)."""

    exit_code = EXIT_USAGE


class InputImageError(AdaptiveBlurError, OSError):
    """An input image (or sigma map) is missing, unreadable, corrupt, truncated or unsupported."""

    exit_code = EXIT_INPUT


class OutputImageError(AdaptiveBlurError, OSError):
    """The output cannot be written (unwritable path, unsupported format, would clobber input)."""

    exit_code = EXIT_OUTPUT


class DeviceUnavailableError(AdaptiveBlurError, RuntimeError):
    """The requested device or backend is not available on this machine."""

    exit_code = EXIT_DEVICE
