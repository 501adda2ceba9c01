"""Which engine blurs the files of a command, and where: the fused native path or torch.

* ``native``: :mod:`adaptiveblur.native.render`, decoded samples to samples in C on the
  CPU. No torch is imported. It runs the exact method (the native backend's kernel).
* ``torch``: :mod:`adaptiveblur.render` through :func:`adaptiveblur.adaptive_blur`, on the
  CPU or a GPU: CUDA, the fast method, a backend named other than ``native``, and the CPU
  when the native kernel cannot be built.

``--device auto`` takes the device that finishes the whole command first, by a simple cost
model: on the CPU the blur takes about ``files * pixels * channels * ((R + 1)^2 +
CPU_PIXEL_COST) / (CPU_RATE * workers)`` seconds (``R`` the radius of ``max_sigma``: every
pixel is assumed to need the largest window); on a GPU the blur itself is nearly free but
the command first pays :data:`GPU_START_SECONDS` (importing torch, starting CUDA, loading
the kernel). Decoding and encoding cost the same either way, so they do not enter. The
constants were measured with ``benchmarks/bench_route.py`` (see ``benchmarks/README.md``).

Without a C compiler the default method (``auto``) becomes the fast method, not the
unfold reference (many times slower), and a :attr:`Route.notice` says so once.
"""

from __future__ import annotations

from dataclasses import dataclass

from adaptiveblur.devices import cuda_visible, parse_device
from adaptiveblur.kernels import radius_for
from adaptiveblur.native import library
from adaptiveblur.settings import BlurSettings

# Native-kernel work units (one per pixel, channel and (R + 1)^2 taps) per second per CPU,
# on a photo whose sigma follows its luminance (fitted on a 16-core GPU host's CPU).
CPU_RATE = 2.4e10
# The per-pixel, per-channel cost of the fused path outside the window sums, in those units.
CPU_PIXEL_COST = 500.0
# What a command pays before a GPU blurs anything: import torch, CUDA context, kernel load
# (measured 5.3 s on an H200 host: a 1 MP run with --device cuda less one on the CPU).
GPU_START_SECONDS = 5.0

_INSTALL_COMPILER = "install a C compiler (cc, gcc or clang) or set CC"


@dataclass(frozen=True)
class Route:
    """How a command's files are blurred.

    Attributes:
        engine: ``"native"`` (the fused CPU path, no torch) or ``"torch"``.
        device: what the torch engine is given (``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"auto"``); ``"cpu"`` for the native engine.
        method: the method the settings should run with (``auto`` resolved where the
            native kernel is missing).
        notice: one line for the user when the choice is not what they would expect
            (a slower fallback, and how to get the fast path), else ``None``.
    """

    engine: str
    device: str
    method: str
    notice: str | None = None


def choose_route(
    settings: BlurSettings,
    *,
    pixels: int,
    channels: int = 3,
    files: int = 1,
    needs_torch: bool = False,
) -> Route:
    """The route for ``files`` images of about ``pixels`` pixels and ``channels`` channels.

    ``needs_torch`` asks for the torch engine whatever else holds (a map that has to be
    resized is resized by torch). Nothing here imports torch; checking the native kernel
    compiles it on the first call.

    Raises:
        InvalidParameterError: a bad device name.
    """
    kind, _ = parse_device(settings.device)
    method, backend = settings.method, settings.backend
    if kind == "cuda" or method == "fast" or backend not in (None, "auto", "native"):
        return Route("torch", settings.device, method)
    missing = library.kernels()
    if isinstance(missing, str):
        return _without_native(settings, kind, missing)
    if kind == "auto" and cuda_visible() and gpu_finishes_first(settings, pixels, channels, files):
        return Route("torch", "auto", method)
    return Route("torch" if needs_torch else "native", "cpu", method)


def gpu_finishes_first(settings: BlurSettings, pixels: int, channels: int, files: int) -> bool:
    """Whether the cost model says a GPU would finish these files' blurs first."""
    radius = radius_for(settings.max_sigma, settings.truncate)
    work = files * pixels * channels * ((radius + 1) ** 2 + CPU_PIXEL_COST)
    return work / (CPU_RATE * library.worker_count()) > GPU_START_SECONDS


def _without_native(settings: BlurSettings, kind: str, reason: str) -> Route:
    """The torch route when the native kernel cannot be built (``reason`` says why)."""
    if kind == "auto" and cuda_visible():  # a GPU runs the exact method without it
        return Route("torch", "auto", settings.method)
    device = "cpu"
    if settings.backend == "native":  # asked for by name: the registry says it is missing
        return Route("torch", device, settings.method)
    if settings.method == "auto":
        return Route(
            "torch",
            device,
            "auto",
            f"the exact native kernel is not available ({reason}); on the CPU the fast "
            f"method is used instead (within 1 LSB at 8 bits); {_INSTALL_COMPILER} for the "
            "exact one",
        )
    return Route(
        "torch",
        device,
        settings.method,
        f"the exact native kernel is not available ({reason}); the exact method runs on the "
        f"slow reference backend; {_INSTALL_COMPILER}, or pass --method auto for the fast "
        "method",
    )
