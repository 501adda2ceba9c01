"""The backend registry: which implementations exist, what each declares it can do, which to use.

A backend computes one tile (:class:`~adaptiveblur.ops.tile.TileInput` in, blurred tile
out); the engine in :mod:`adaptiveblur.ops.blur` does validation, tiling and stitching
for all of them. Only this module decides from the declared capabilities; nothing
elsewhere tests a backend's name. Importing it loads no torch (the backends' modules
are imported when chosen), so the command line can check names without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from adaptiveblur.errors import DeviceUnavailableError, InvalidParameterError

if TYPE_CHECKING:
    import torch

    from adaptiveblur.ops.tile import TileInput

METHODS = ("exact", "fast", "auto")
DEFAULT_METHOD = "exact"
FLOAT_TYPES = frozenset({"float32", "float64"})  # dtype names, as in str(torch.float32)


@dataclass(frozen=True)
class Backend:
    """One implementation of one method, with the capabilities it declares.

    ``module`` provides ``available(device) -> str | None`` (``None`` when usable, else
    the reason it is not), ``bytes_per_pixel(batch, channels, window, element) -> int``
    (temporaries per output pixel, for tile sizing) and
    ``blur_tile(tile: TileInput) -> Tensor`` (``(B, C, h, w)`` in the tile's dtype).

    Attributes:
        devices: device types it can run on (``"cpu"``, ``"cuda"``).
        dtypes: names of the tile dtypes it computes (``"float32"``, ``"float64"``).
        differentiable: autograd runs through its ``blur_tile``.
        graph_safe: it queues its work without reading anything back, so a call can be
            captured in a CUDA graph.
        fused: a fused exact kernel (the fast method hands it its small windows).
    """

    name: str
    method: str
    devices: frozenset[str]
    module: str
    dtypes: frozenset[str] = FLOAT_TYPES
    differentiable: bool = False
    graph_safe: bool = False
    fused: bool = False

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def unavailable_reason(self, device: torch.device) -> str | None:
        """``None`` when it runs on ``device``, else why not."""
        if device.type not in self.devices:
            return f"it runs on {', '.join(sorted(self.devices))}, not {device.type}"
        try:
            return self.load().available(device)
        except ImportError as error:
            return f"it could not be imported ({error})"

    def computes(self, dtype: torch.dtype | str, needs_grad: bool) -> bool:
        """Whether it declares ``dtype`` and, when ``needs_grad``, autograd."""
        return dtype_name(dtype) in self.dtypes and (self.differentiable or not needs_grad)


# Preference order within a method: fastest first, the reference last (always there).
BACKENDS = (
    Backend(
        "triton",
        "exact",
        frozenset({"cuda"}),
        "adaptiveblur.ops.triton",
        graph_safe=True,
        fused=True,
        differentiable=True,
    ),
    Backend(
        "native",
        "exact",
        frozenset({"cpu"}),
        "adaptiveblur.ops.native",
        fused=True,
        differentiable=True,
    ),
    Backend("levels", "fast", frozenset({"cpu", "cuda"}), "adaptiveblur.ops.levels"),
    Backend(
        "reference",
        "exact",
        frozenset({"cpu", "cuda"}),
        "adaptiveblur.ops.reference",
        differentiable=True,
    ),
)
BACKEND_NAMES = tuple(backend.name for backend in BACKENDS)


@dataclass(frozen=True)
class Choice:
    """The backend picked for a call, with its loaded module's entry points."""

    backend: Backend
    bytes_per_pixel: Callable[[int, int, int, int], int]
    blur_tile: Callable[[TileInput], torch.Tensor]


def dtype_name(dtype: torch.dtype | str) -> str:
    """``torch.float32`` (or ``"float32"``) as ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def check_names(method: str, backend: str | None) -> None:
    """Raise :class:`InvalidParameterError` for an unknown method or backend name, or a
    backend of another method."""
    if method not in METHODS:
        raise InvalidParameterError(
            f"expected method to be one of {', '.join(METHODS)}, got {method!r}"
        )
    if backend in (None, "auto"):
        return
    named = [b for b in BACKENDS if b.name == backend]
    if not named:
        raise InvalidParameterError(
            f"expected backend to be one of auto, {', '.join(BACKEND_NAMES)}, got {backend!r}"
        )
    if method != "auto" and named[0].method != method:
        raise InvalidParameterError(
            f"backend {backend!r} implements the {named[0].method} method, not {method}"
        )


def choose_backend(
    method: str,
    backend: str | None,
    device: torch.device,
    *,
    dtype: torch.dtype | str = "float32",
    needs_grad: bool = False,
) -> Choice:
    """Pick the backend for ``method`` on ``device`` (``backend`` names one).

    ``method="auto"`` means exact when a fused exact backend runs on the device, else
    fast. Without a name, the first backend in preference order that runs on the device
    and declares ``dtype`` (and autograd when ``needs_grad``) is chosen. A named backend
    that runs on the device but does not declare ``dtype`` or autograd hands the call to
    the reference backend.

    Raises:
        InvalidParameterError: unknown method or backend name, or a backend of another method.
        DeviceUnavailableError: the named backend cannot run here (the message says why).
    """
    check_names(method, backend)
    reference = _reference()
    if backend not in (None, "auto"):
        chosen = next(b for b in BACKENDS if b.name == backend)
        reason = chosen.unavailable_reason(device)
        if reason is not None:
            raise DeviceUnavailableError(f"backend {backend!r} is not available: {reason}")
        return _loaded(chosen if chosen.computes(dtype, needs_grad) else reference)
    if method == "auto":
        fused = any(b.fused and b.unavailable_reason(device) is None for b in BACKENDS)
        method = "exact" if fused else "fast"
    for candidate in [b for b in BACKENDS if b.method == method] + [reference]:
        if candidate.computes(dtype, needs_grad) and candidate.unavailable_reason(device) is None:
            return _loaded(candidate)
    raise DeviceUnavailableError(f"no backend for the {method} method runs on {device}")


def fused_exact(device: torch.device, dtype: torch.dtype | str) -> Backend | None:
    """The first fused exact backend that runs on ``device`` for tiles of ``dtype``, if any."""
    for backend in BACKENDS:
        if (
            backend.fused
            and backend.method == "exact"
            and dtype_name(dtype) in backend.dtypes
            and backend.unavailable_reason(device) is None
        ):
            return backend
    return None


def _reference() -> Backend:
    # The last differentiable exact backend for every dtype: the one that always runs.
    return next(
        b
        for b in reversed(BACKENDS)
        if b.method == "exact" and b.differentiable and b.dtypes >= FLOAT_TYPES
    )


def _loaded(backend: Backend) -> Choice:
    module = backend.load()
    return Choice(backend, module.bytes_per_pixel, module.blur_tile)
