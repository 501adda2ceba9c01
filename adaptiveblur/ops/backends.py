"""The backend registry: which implementations exist, where they run, which one to use.

A backend computes one tile (input with halo in, blurred tile out); the engine in
:mod:`adaptiveblur.ops.blur` does validation, tiling and stitching for all of them.
``auto`` picks the first available backend in preference order for the device; a
backend asked for by name that cannot run raises :class:`DeviceUnavailableError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from adaptiveblur.errors import DeviceUnavailableError, InvalidParameterError

METHODS = ("exact", "fast", "auto")
DEFAULT_METHOD = "exact"


@dataclass(frozen=True)
class Backend:
    """One implementation of one method.

    ``module`` provides ``available(device) -> str | None`` (``None`` when usable, else
    the reason it is not), ``bytes_per_pixel(batch, channels, window, element) -> int``
    (temporaries per output pixel, for tile sizing) and
    ``blur_tile(padded, sigma, radius, halo, budget) -> Tensor``.
    """

    name: str
    method: str
    device_types: frozenset[str]
    module: str
    differentiable: bool = False  # autograd can run through its blur_tile

    def load(self):  # noqa: ANN201 - a module
        return importlib.import_module(self.module)

    def unavailable_reason(self, device: torch.device) -> str | None:
        if device.type not in self.device_types:
            return f"it runs on {', '.join(sorted(self.device_types))}, not {device.type}"
        try:
            return self.load().available(device)
        except ImportError as error:
            return f"it could not be imported ({error})"


# Preference order within a method: fastest first, the reference last (always there).
BACKENDS = (
    Backend("triton", "exact", frozenset({"cuda"}), "adaptiveblur.ops.triton"),
    Backend("native", "exact", frozenset({"cpu"}), "adaptiveblur.ops.native"),
    Backend("levels", "fast", frozenset({"cpu", "cuda"}), "adaptiveblur.ops.fast"),
    Backend("reference", "exact", frozenset({"cpu", "cuda"}), "adaptiveblur.ops.reference", True),
)
BACKEND_NAMES = tuple(backend.name for backend in BACKENDS)


@dataclass(frozen=True)
class Choice:
    """The backend picked for a call, with its loaded module."""

    backend: Backend
    bytes_per_pixel: Callable[[int, int, int, int], int]
    blur_tile: Callable[..., torch.Tensor]


def choose_backend(method: str, backend: str | None, device: torch.device) -> Choice:
    """Pick the backend for ``method`` on ``device`` (``backend`` forces one by name).

    ``method="auto"`` means exact when a fused exact backend runs here, else fast.

    Raises:
        InvalidParameterError: unknown method or backend name, or a backend of another method.
        DeviceUnavailableError: the named backend cannot run here (the message says why).
    """
    if method not in METHODS:
        raise InvalidParameterError(
            f"expected method to be one of {', '.join(METHODS)}, got {method!r}"
        )
    if backend not in (None, "auto"):
        named = [b for b in BACKENDS if b.name == backend]
        if not named:
            raise InvalidParameterError(
                f"expected backend to be one of auto, {', '.join(BACKEND_NAMES)}, got {backend!r}"
            )
        chosen = named[0]
        if method != "auto" and chosen.method != method:
            raise InvalidParameterError(
                f"backend {backend!r} implements the {chosen.method} method, not {method}"
            )
        reason = chosen.unavailable_reason(device)
        if reason is not None:
            raise DeviceUnavailableError(f"backend {backend!r} is not available: {reason}")
        return _loaded(chosen)
    for candidate in _preference(method):
        if candidate.unavailable_reason(device) is None:
            return _loaded(candidate)
    raise DeviceUnavailableError(f"no backend for the {method} method runs on {device}")


def _preference(method: str) -> list[Backend]:
    if method != "auto":
        return [b for b in BACKENDS if b.method == method]
    fused_exact = [b for b in BACKENDS if b.method == "exact" and b.name != "reference"]
    fast = [b for b in BACKENDS if b.method == "fast"]
    reference = [b for b in BACKENDS if b.name == "reference"]
    return fused_exact + fast + reference


def _loaded(backend: Backend) -> Choice:
    module = backend.load()
    return Choice(backend, module.bytes_per_pixel, module.blur_tile)
