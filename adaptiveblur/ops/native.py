"""The native backend: a fused exact CPU kernel in C, compiled at first use.

``_native.c`` (shipped beside this file) is built with the system C compiler
(``$CC``, else ``cc``, ``gcc`` or ``clang``) as ``-O3 -march=native`` (retried without
``-march=native`` if that fails; never ``-ffast-math``), cached under
``$ADAPTIVEBLUR_CACHE_DIR``, else ``$XDG_CACHE_HOME/adaptiveblur``, else
``~/.cache/adaptiveblur``, in a file named by a hash of the source, the compiler, the
flags and the CPU, and loaded with :mod:`ctypes`. Builds land under a temporary name
and are moved into place with :func:`os.replace`, so concurrent processes are safe.

Each output pixel sums only its own window (a SIMD group of neighbouring pixels in a
row loops over the group's largest radius, with per-lane weights that are zero past
each pixel's own radius), so cost follows the sigma map, not its maximum. Output rows
are split into bands that run on ``torch.get_num_threads()`` threads (ctypes releases
the GIL). float32 images are summed in float32 with weights computed in float64;
float64 images entirely in float64. Both are exact: float32 within its rounding of the
float64 result, float64 within a few ulp.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from adaptiveblur.errors import DeviceUnavailableError

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("_native.c")
ABI_VERSION = 1  # must match ABI_VERSION in _native.c
BASE_FLAGS = ("-O3", "-fPIC", "-shared", "-ffp-contract=fast", "-std=gnu11")
NATIVE_FLAGS = ("-march=native",)
LIBRARIES = ("-lm",)
COMPILE_TIMEOUT_S = 120.0

# Below this many multiply-adds a tile is blurred on the calling thread (thread hand-off
# costs more than it saves); above it, each worker gets about BANDS_PER_WORKER bands so
# that uneven rows (sigma varies across the image) still balance.
_PARALLEL_WORK = 2_000_000
BANDS_PER_WORKER = 8

_STATUS_MESSAGES = {
    1: "a window radius is negative or larger than the halo",
    2: "the native kernel could not allocate its buffers",
}


class NativeBuildError(RuntimeError):
    """The C kernel could not be compiled or loaded (the message says why)."""


@dataclass(frozen=True)
class Build:
    """A compiled kernel: where it is and whether this call compiled it."""

    path: Path
    compiled: bool
    flags: tuple[str, ...]


class _Kernels:
    """The loaded library's entry points."""

    def __init__(self, library: ctypes.CDLL, build: Build) -> None:
        self.library = library
        self.build = build
        pointers = [ctypes.c_void_p] * 4
        integers = [ctypes.c_int64] * 6
        self.by_dtype: dict[torch.dtype, Callable[..., int]] = {}
        self.lanes: dict[torch.dtype, int] = {}
        for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
            function = getattr(library, f"adaptiveblur_blur_{suffix}")
            function.argtypes = pointers + integers
            function.restype = ctypes.c_int
            self.by_dtype[dtype] = function
            self.lanes[dtype] = int(getattr(library, f"adaptiveblur_lanes_{suffix}")())
        self.exp: Callable[..., None] = library.adaptiveblur_exp_f64
        self.exp.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
        self.exp.restype = None


# One load per (CC, cache dir) setting: the kernels, or the reason there are none.
_loaded: dict[tuple[str | None, str], _Kernels | str] = {}
_load_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()


def available(device: torch.device) -> str | None:
    """``None`` when the kernel runs on ``device``, else why not (compiles it on first call)."""
    if device.type != "cpu":
        return f"it runs on cpu, not {device.type}"
    kernels = _kernels()
    return kernels if isinstance(kernels, str) else None


def bytes_per_pixel(batch: int, channels: int, window: int, element: int) -> int:
    """Temporaries per output pixel: the result, contiguous sigma and radius copies.

    Independent of ``window``: besides these the kernel only keeps, per thread, a weight
    table and the folded rows of one chunk (``4 * halo * (256 + 2 * halo)`` values).
    """
    return batch * (channels * element + element + 8)


def blur_tile(
    padded: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    halo: int,
    budget: int,
) -> torch.Tensor:
    """Blur one tile whose input arrives with a halo (see :mod:`adaptiveblur.ops.reference`).

    Args:
        padded: ``(B, C, h + 2*halo, w + 2*halo)`` float32 or float64 CPU tensor.
        sigma: ``(B, 1, h, w)`` per-pixel sigma.
        radius: ``(B, 1, h, w)`` int64 per-pixel window radius, all in ``[0, halo]``.
        halo: the border width of ``padded``.
        budget: unused (see :func:`bytes_per_pixel`).

    Returns:
        ``(B, C, h, w)`` in ``padded``'s dtype (float32 unless it is float64).

    Raises:
        DeviceUnavailableError: the kernel could not be built here.
        ValueError: shapes disagree or a radius is outside ``[0, halo]``.
    """
    kernels = _kernels()
    if isinstance(kernels, str):
        raise DeviceUnavailableError(f"backend 'native' is not available: {kernels}")
    dtype = torch.float64 if padded.dtype == torch.float64 else torch.float32
    batch, channels, padded_height, padded_width = padded.shape
    height, width = sigma.shape[-2:]
    if (
        padded_height != height + 2 * halo
        or padded_width != width + 2 * halo
        or tuple(sigma.shape) != (batch, 1, height, width)
        or tuple(radius.shape) != tuple(sigma.shape)
    ):
        raise ValueError(
            f"expected padded (B, C, h + 2*{halo}, w + 2*{halo}) and sigma, radius (B, 1, h, w), "
            f"got {tuple(padded.shape)}, {tuple(sigma.shape)}, {tuple(radius.shape)}"
        )
    lanes = kernels.lanes[dtype]
    # The vector kernel needs rows at least one SIMD group wide; the blur is symmetric in
    # x and y, so a tall narrow tile is done transposed instead of pixel by pixel.
    transposed = width < lanes <= height
    if transposed:
        padded, sigma, radius = (t.transpose(-2, -1) for t in (padded, sigma, radius))
        height, width = width, height
    source = padded.to(device="cpu", dtype=dtype).contiguous()
    sigma = sigma.to(device="cpu", dtype=dtype).contiguous()
    radius = radius.to(device="cpu", dtype=torch.int64).contiguous()
    out = torch.empty((batch, channels, height, width), dtype=dtype)
    _run(kernels.by_dtype[dtype], source, sigma, radius, out, halo)
    if transposed:
        out = out.transpose(-2, -1).contiguous()
    return out if padded.dtype == dtype else out.to(padded.dtype)


def _run(
    function: Callable[..., int],
    source: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    out: torch.Tensor,
    halo: int,
) -> None:
    batch, channels, height, width = out.shape
    in_item = source[0].numel() * source.element_size()
    out_item = out[0].numel() * out.element_size()
    map_item = height * width

    def rows(item: int, row0: int, row1: int) -> int:
        return int(
            function(
                source.data_ptr() + item * in_item,
                sigma.data_ptr() + item * map_item * sigma.element_size(),
                radius.data_ptr() + item * map_item * 8,
                out.data_ptr() + item * out_item,
                channels,
                height,
                width,
                halo,
                row0,
                row1,
            )
        )

    workers = max(1, torch.get_num_threads())
    work = batch * channels * height * width * (2 * halo + 1) ** 2
    if workers == 1 or work < _PARALLEL_WORK:
        statuses = [rows(item, 0, height) for item in range(batch)]
    else:
        per_item = max(1, -(-workers * BANDS_PER_WORKER // batch))
        step = max(1, -(-height // per_item))
        jobs = [
            (item, y, min(y + step, height))
            for item in range(batch)
            for y in range(0, height, step)
        ]
        statuses = [future.result() for future in _submit(workers, rows, jobs)]
    bad = [status for status in statuses if status != 0]
    if bad:
        raise ValueError(f"native blur failed: {_STATUS_MESSAGES.get(bad[0], f'status {bad[0]}')}")


def _submit(
    workers: int, function: Callable[..., int], jobs: list[tuple[int, int, int]]
) -> list[Future[int]]:
    """Queue ``function(*job)`` for each job on the shared pool of ``workers`` threads."""
    global _pool, _pool_workers
    with _pool_lock:  # held while submitting, so no other call can swap the pool meanwhile
        if _pool is None or _pool_workers != workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="adaptiveblur-native"
            )
            _pool_workers = workers
        return [_pool.submit(function, *job) for job in jobs]


def _forget_pool_after_fork() -> None:
    # A forked child has none of the parent's threads: its copy of the pool would hang,
    # and a lock some other thread held at the fork would never be released.
    global _pool, _pool_lock, _load_lock
    _pool = None
    _pool_lock = threading.Lock()
    _load_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _kernels() -> _Kernels | str:
    """The loaded kernels for the current ``$CC`` and cache dir, or why they cannot load."""
    key = (os.environ.get("CC"), str(cache_dir()))
    with _load_lock:
        if key not in _loaded:
            try:
                build = build_library(cache_dir())
                _loaded[key] = _Kernels(_open(build.path), build)
            except NativeBuildError as error:
                _loaded[key] = str(error)
        return _loaded[key]


def cache_dir() -> Path:
    """Where compiled kernels are kept (``$ADAPTIVEBLUR_CACHE_DIR`` first)."""
    explicit = os.environ.get("ADAPTIVEBLUR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "adaptiveblur"
    try:
        return Path.home() / ".cache" / "adaptiveblur"
    except (KeyError, RuntimeError):  # no home directory (some containers)
        return Path(tempfile.gettempdir()) / "adaptiveblur-cache"


def compiler_command() -> list[str]:
    """The C compiler to run: ``$CC`` (split like a shell would) if set, else cc, gcc or clang.

    Raises:
        NativeBuildError: ``$CC`` names nothing runnable, or no compiler is found.
    """
    configured = os.environ.get("CC", "").strip()
    if configured:
        try:
            command = shlex.split(configured)
        except ValueError as error:  # unbalanced quotes
            raise NativeBuildError(f"$CC ({configured!r}) cannot be parsed: {error}") from error
        if not command or shutil.which(command[0]) is None:
            raise NativeBuildError(f"the C compiler in $CC ({configured!r}) was not found")
        return command
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found is not None:
            return [found]
    raise NativeBuildError("no C compiler found (install cc, gcc or clang, or set CC)")


def build_library(directory: Path) -> Build:
    """Compile ``_native.c`` into ``directory`` unless an identical build is already there.

    Raises:
        NativeBuildError: no working compiler, or the source does not compile.
    """
    try:
        source = SOURCE.read_bytes()
    except OSError as error:
        raise NativeBuildError(
            f"the kernel source is missing from the installation ({error})"
        ) from error
    command = compiler_command()
    identity = _compiler_identity(command)
    digest = hashlib.sha256()
    for part in (
        source,
        identity.encode(),
        " ".join(BASE_FLAGS + NATIVE_FLAGS).encode(),
        _machine_identity().encode(),
    ):
        digest.update(part)
        digest.update(b"\0")
    target = directory / f"adaptiveblur_native-{digest.hexdigest()[:20]}.so"
    if target.exists():
        return Build(target, compiled=False, flags=())
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".probe-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
    except OSError:
        # An unwritable cache (read-only home, sandbox) only costs a compile per process.
        directory = Path(tempfile.mkdtemp(prefix="adaptiveblur-native-"))
        target = directory / target.name
        logger.warning("cache dir not writable; building the native kernel in %s", directory)
    flags = _compile(command, source, target)
    return Build(target, compiled=True, flags=flags)


def _compile(command: list[str], source: bytes, target: Path) -> tuple[str, ...]:
    with tempfile.TemporaryDirectory(prefix="adaptiveblur-build-") as work:
        # A copy with a plain name: the source includes itself through __FILE__.
        (Path(work) / "adaptiveblur_native.c").write_bytes(source)
        partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        errors = []
        for flags in (BASE_FLAGS + NATIVE_FLAGS, BASE_FLAGS):
            argv = [*command, *flags, "-o", str(partial), "adaptiveblur_native.c", *LIBRARIES]
            result = _run_compiler(argv, work)
            if result.returncode == 0 and partial.exists():
                os.replace(partial, target)
                logger.info("compiled the native kernel: %s", shlex.join(argv))
                return flags
            errors.append(_compiler_message(result.stderr) or f"exit status {result.returncode}")
            partial.unlink(missing_ok=True)
    raise NativeBuildError(
        f"the C compiler {command[0]!r} failed to build the native kernel: {errors[-1]}"
    )


def _open(path: Path) -> ctypes.CDLL:
    """Load a build, recompiling once if the cached file is unusable (truncated, stale)."""
    for attempt in (1, 2):
        try:
            library = ctypes.CDLL(str(path))
            version = int(library.adaptiveblur_abi_version())
            if version != ABI_VERSION:
                raise OSError(f"ABI version {version}, expected {ABI_VERSION}")
            return library
        except (OSError, AttributeError) as error:
            if attempt == 2:
                raise NativeBuildError(
                    f"the compiled kernel {path} could not be loaded: {error}"
                ) from error
            path.unlink(missing_ok=True)
            path = build_library(path.parent).path
    raise AssertionError("unreachable")


def _run_compiler(argv: list[str], cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the compiler; one that cannot be started at all is a :class:`NativeBuildError`."""
    try:
        return subprocess.run(
            argv,
            cwd=cwd,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=COMPILE_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise NativeBuildError(f"the C compiler {argv[0]!r} could not be run: {error}") from error


def _compiler_identity(command: list[str]) -> str:
    result = _run_compiler([*command, "--version"])
    if result.returncode != 0:
        raise NativeBuildError(
            f"the C compiler {command[0]!r} does not work: "
            f"{_compiler_message(result.stderr) or f'exit status {result.returncode}'}"
        )
    resolved = shutil.which(command[0]) or command[0]
    return "\n".join([os.path.realpath(resolved), *command[1:], result.stdout.strip()])


def _machine_identity() -> str:
    """What -march=native depends on: the architecture and, where readable, the CPU's features."""
    parts = [platform.system(), platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            seen = set()
            for line in info:
                key = line.split(":", 1)[0].strip()
                if (
                    key in ("vendor_id", "model name", "flags", "Features", "CPU part")
                    and key not in seen
                ):
                    seen.add(key)
                    parts.append(line.strip())
    except OSError:
        pass
    return "\n".join(parts)


def _compiler_message(text: str) -> str:
    """The line of compiler output worth showing: the first error, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [""])[0 if errors else -1][:300]
