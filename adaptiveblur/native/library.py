"""The loaded C library: its entry points, and the shared pool of threads that calls them.

ctypes releases the interpreter lock during a call, so bands of rows run on
:func:`worker_count` threads at once. No torch here: the command path on a CPU uses
this module through :mod:`adaptiveblur.native.render` without loading torch.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from adaptiveblur.cpus import usable_cpus
from adaptiveblur.native import build
from adaptiveblur.native.build import Build, NativeBuildError

STATUS_MESSAGES = {
    1: "a window radius is negative or larger than the halo",
    2: "the native kernel could not allocate its buffers",
    3: "the native kernel was given an inconsistent job",
}


class RenderJob(ctypes.Structure):
    """``render_job`` of ``_render.c``, field for field (see there for their meaning)."""

    _fields_ = [
        ("height", ctypes.c_int64),
        ("width", ctypes.c_int64),
        ("samples", ctypes.c_void_p),
        ("channels", ctypes.c_int64),
        ("sample_bytes", ctypes.c_int64),
        ("alpha", ctypes.c_int64),
        ("value", ctypes.c_void_p),
        ("colour", ctypes.c_void_p),
        ("driver", ctypes.c_void_p),
        ("driver_channels", ctypes.c_int64),
        ("driver_bytes", ctypes.c_int64),
        ("driver_value", ctypes.c_void_p),
        ("luma", ctypes.c_void_p),
        ("intensity", ctypes.c_int64),
        ("driver_channel", ctypes.c_int64),
        ("sigma_map", ctypes.c_void_p),
        ("min_sigma", ctypes.c_float),
        ("sigma_scale", ctypes.c_float),
        ("gamma", ctypes.c_double),
        ("invert", ctypes.c_int64),
        ("truncate", ctypes.c_double),
        ("border", ctypes.c_int64),
        ("linear", ctypes.c_int64),
        ("out", ctypes.c_void_p),
        ("out_bytes", ctypes.c_int64),
        ("out_max", ctypes.c_float),
        ("sigma_out", ctypes.c_void_p),
    ]


class Kernels:
    """The loaded library's entry points, by element type name (``"float32"``, ``"float64"``)."""

    def __init__(self, library: ctypes.CDLL, made: Build) -> None:
        self.library = library
        self.build = made
        pointers = [ctypes.c_void_p] * 4
        integers = [ctypes.c_int64] * 6
        self.by_dtype: dict[str, Callable[..., int]] = {}
        self.lanes: dict[str, int] = {}
        for dtype, suffix in (("float32", "f32"), ("float64", "f64")):
            function = getattr(library, f"adaptiveblur_blur_{suffix}")
            function.argtypes = pointers + integers
            function.restype = ctypes.c_int
            self.by_dtype[dtype] = function
            self.lanes[dtype] = int(getattr(library, f"adaptiveblur_lanes_{suffix}")())
        # The backward pass (_backward.c): dL/dsigma and the tables by output rows, then
        # dL/dinput by padded rows.
        self.backward_sigma: dict[str, Callable[..., int]] = {}
        self.backward_input: dict[str, Callable[..., int]] = {}
        for dtype, suffix in (("float32", "f32"), ("float64", "f64")):
            function = getattr(library, f"adaptiveblur_backward_sigma_{suffix}")
            function.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int64] * 6
            function.restype = ctypes.c_int
            self.backward_sigma[dtype] = function
            function = getattr(library, f"adaptiveblur_backward_input_{suffix}")
            function.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 6
            function.restype = ctypes.c_int
            self.backward_input[dtype] = function
        self.exp: Callable[..., None] = library.adaptiveblur_exp_f64
        self.exp.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
        self.exp.restype = None
        self.render: Callable[..., int] = library.adaptiveblur_render
        self.render.argtypes = [ctypes.POINTER(RenderJob), ctypes.c_int64, ctypes.c_int64]
        self.render.restype = ctypes.c_int


# One load per (CC, cache dir) setting: the kernels, or the reason there are none.
_loaded: dict[tuple[str | None, str], Kernels | str] = {}
_load_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()
_worker_limit: int | None = None


def kernels() -> Kernels | str:
    """The loaded kernels for the current ``$CC`` and cache dir, or why they cannot load.

    The first call in a process compiles the library when no cached build matches.
    """
    directory = build.cache_dir()
    key = (os.environ.get("CC"), str(directory))
    with _load_lock:
        if key not in _loaded:
            try:
                made = build.build_library(directory)
                _loaded[key] = Kernels(build.open_library(made.path), made)
            except NativeBuildError as error:
                _loaded[key] = str(error)
        return _loaded[key]


def set_worker_count(count: int | None) -> None:
    """Use ``count`` threads from now on (``None``: :func:`worker_count`'s own answer)."""
    global _worker_limit
    _worker_limit = None if count is None else max(1, count)


def worker_count() -> int:
    """Threads to use: as set, else the CPUs this process may use (:func:`~adaptiveblur.cpus.usable_cpus`)."""
    if _worker_limit is not None:
        return _worker_limit
    return usable_cpus()


def run_jobs(
    workers: int,
    function: Callable[..., int],
    jobs: Sequence[tuple[int, ...]],
    on_done: Callable[[], None] | None = None,
) -> list[int]:
    """``function(*job)`` for every job on ``workers`` threads; the statuses, in job order.

    ``on_done`` is called after each job finishes, in the calling thread. With one
    worker or one job everything runs on the calling thread.
    """
    if workers <= 1 or len(jobs) <= 1:
        statuses = []
        for job in jobs:
            statuses.append(function(*job))
            if on_done is not None:
                on_done()
        return statuses
    futures = _submit(workers, function, jobs)
    for future in futures:
        future.result()
        if on_done is not None:
            on_done()
    return [future.result() for future in futures]


def failure(statuses: Sequence[int]) -> str | None:
    """The message of the first non-zero status, or ``None`` when all are 0."""
    bad = [status for status in statuses if status != 0]
    if not bad:
        return None
    return STATUS_MESSAGES.get(bad[0], f"status {bad[0]}")


def _submit(
    workers: int, function: Callable[..., int], jobs: Sequence[tuple[int, ...]]
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
