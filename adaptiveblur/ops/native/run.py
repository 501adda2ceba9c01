"""The loaded kernels and how a tile is run: ctypes calls on a shared pool of threads.

Output rows are split into bands that run on ``torch.get_num_threads()`` threads
(ctypes releases the GIL); a tile of little work runs on the calling thread.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from adaptiveblur.ops.native import build
from adaptiveblur.ops.native.build import Build, NativeBuildError

# Below this many multiply-adds a tile is blurred on the calling thread (thread hand-off
# costs more than it saves); above it, each worker gets about BANDS_PER_WORKER bands so
# that uneven rows (sigma varies across the image) still balance.
_PARALLEL_WORK = 2_000_000
BANDS_PER_WORKER = 8

_STATUS_MESSAGES = {
    1: "a window radius is negative or larger than the halo",
    2: "the native kernel could not allocate its buffers",
}


class Kernels:
    """The loaded library's entry points."""

    def __init__(self, library: ctypes.CDLL, made: Build) -> None:
        self.library = library
        self.build = made
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
_loaded: dict[tuple[str | None, str], Kernels | str] = {}
_load_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()


def kernels() -> Kernels | str:
    """The loaded kernels for the current ``$CC`` and cache dir, or why they cannot load."""
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


def run(
    function: Callable[..., int],
    source: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    out: torch.Tensor,
    halo: int,
) -> None:
    """Blur contiguous ``source (B, C, h + 2 halo, w + 2 halo)`` into ``out (B, C, h, w)``.

    Raises:
        ValueError: the kernel reported a bad radius or could not allocate.
    """
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
