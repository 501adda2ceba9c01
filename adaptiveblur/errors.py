"""One small exception hierarchy; each error knows the CLI exit code it maps to.

The library raises these; only :mod:`adaptiveblur.cli` turns them into exit codes.
Every class is also a familiar built-in (``ValueError``, ``OSError``, ``RuntimeError``)
so library users can catch what they would expect. Messages speak the library's API
(``max_pixels``, ``format``); an error may name the ``parameter`` that would fix it, and
the command line adds the matching flag to its message.
"""

from __future__ import annotations

import errno

# One source of truth for exit codes (listed in the README and in ``--help``).
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_OUTPUT = 4
EXIT_DEVICE = 5
EXIT_PARTIAL = 6
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a process SIGPIPE killed

EXIT_CODE_MEANINGS: dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_USAGE: "usage or bad option value",
    EXIT_INPUT: "input error",
    EXIT_OUTPUT: "output error",
    EXIT_DEVICE: "device unavailable",
    EXIT_PARTIAL: "some files of a batch failed",
    EXIT_INTERNAL: "internal error",
    EXIT_INTERRUPTED: "interrupted",
    EXIT_BROKEN_PIPE: "the reader closed the output pipe early",
}


class AdaptiveBlurError(Exception):
    """Base class of every error adaptiveblur raises on purpose.

    Args:
        message: one line saying what is wrong, in the library's terms.
        parameter: the name of the library parameter that would fix it (``"max_pixels"``,
            ``"format"``, ``"overwrite"``), when there is one.
    """

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross between worker processes: keep the parameter through pickling.
        return (_rebuild, (type(self), str(self), self.parameter))


def _rebuild(
    kind: type[AdaptiveBlurError], message: str, parameter: str | None
) -> AdaptiveBlurError:
    return kind(message, parameter=parameter)


class InvalidParameterError(AdaptiveBlurError, ValueError):
    """A parameter value is out of range or inconsistent (bad sigma, max < min, ...)."""

    exit_code = EXIT_USAGE


class InputImageError(AdaptiveBlurError, OSError):
    """An input image (or sigma map) is missing, unreadable, corrupt, truncated or unsupported."""

    exit_code = EXIT_INPUT


class OutputImageError(AdaptiveBlurError, OSError):
    """The output cannot be written (unwritable path, unsupported format, would clobber input)."""

    exit_code = EXIT_OUTPUT


class BrokenPipeOutputError(OutputImageError, BrokenPipeError):
    """The output is a pipe whose reader went away before it had everything (``| head``).

    Not a failure of the output itself: the command line ends quietly, with
    :data:`EXIT_BROKEN_PIPE`, as a program killed by SIGPIPE would.
    """

    exit_code = EXIT_BROKEN_PIPE


class DeviceUnavailableError(AdaptiveBlurError, RuntimeError):
    """The requested device or backend is not available on this machine."""

    exit_code = EXIT_DEVICE


class WorkerProcessError(AdaptiveBlurError, RuntimeError):
    """A batch's worker process ended before its tasks were done (killed, out of memory)."""

    exit_code = EXIT_INTERNAL


_OS_REASONS = {
    errno.ENOENT: "no such file",
    errno.EISDIR: "it is a directory",
    errno.ENOTDIR: "a parent is not a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "the file system is read-only",
    errno.EPIPE: "the reader closed the pipe",
}


def os_reason(exc: OSError) -> str:
    """A short lower-case reason for an OS error ("no such file", "permission denied")."""
    if exc.errno in _OS_REASONS:
        return _OS_REASONS[exc.errno]
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]
