"""Run a planned batch: each task through :class:`adaptiveblur.run.FileBlur`, one bad file never stopping the rest.

``jobs`` threads each take a file through load, blur and save, so decoding and encoding
overlap the blur; a blur needs one of the devices (one blur at a time each, per
process), so files spread over all of them. With ``processes > 1`` the threads are
shared out over worker processes (see :mod:`adaptiveblur.batch.workers`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from adaptiveblur.batch.plan import Task
from adaptiveblur.batch.workers import run_tasks
from adaptiveblur.engine import Route
from adaptiveblur.errors import AdaptiveBlurError, InvalidParameterError, OutputImageError
from adaptiveblur.io import remote
from adaptiveblur.io.atomic import stale_temporaries
from adaptiveblur.native import library
from adaptiveblur.run import DeviceTokens, FileBlur, same_file
from adaptiveblur.settings import BlurSettings, FileOptions

if TYPE_CHECKING:
    from adaptiveblur.render import Replayer


@dataclass(frozen=True)
class Outcome:
    """What happened to one batch task: ``done``, ``skipped`` or ``failed`` (with the reason)."""

    task: Task
    status: str
    seconds: float = 0.0
    reason: str | None = None
    size: int = 0  # input bytes
    device: str | None = None  # where it was blurred
    parameter: str | None = None  # the library parameter a failure names (see errors)


@dataclass
class BatchSummary:
    """Counts and timings of a batch run; ``outcomes`` in completion order.

    ``redone``: outputs of an earlier run with other settings, made again (counted in
    ``done`` too). ``unrecorded``: existing outputs kept because no manifest records the
    settings that made them (counted in ``skipped`` too); see :mod:`adaptiveblur.batch.manifest`.
    """

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    redone: int = 0
    unrecorded: int = 0

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def images_per_second(self) -> float:
        done = self.count("done")
        return done / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready report."""
        return {
            "done": self.count("done"),
            "skipped": self.count("skipped"),
            "failed": self.count("failed"),
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 3),
            "files": [
                {
                    "input": outcome.task.source,
                    "output": outcome.task.dest,
                    "status": outcome.status,
                    "seconds": round(outcome.seconds, 3),
                    **({"device": outcome.device} if outcome.device else {}),
                    **({"error": outcome.reason} if outcome.reason else {}),
                }
                for outcome in self.outcomes
            ],
        }


def run_batch(
    tasks: Sequence[Task],
    settings: BlurSettings,
    options: FileOptions | None = None,
    *,
    devices: Sequence[str] = ("auto",),
    jobs: int = 2,
    processes: int = 1,
    on_outcome: Callable[[Outcome], None] | None = None,
    cuda_graphs: bool = True,
    route: Route | None = None,
    redo: frozenset[tuple[str, int, int]] = frozenset(),
    previews: tuple[str, str] | None = None,
) -> BatchSummary:
    """Blur planned tasks; one bad file never stops the others.

    ``route`` fixes how every file is blurred (default: chosen per file).

    Existing outputs are skipped unless ``options.overwrite``, or ``redo`` holds their
    path with the size and modification time (ns) they had when the batch was planned (a
    file put there since is not replaced); outputs are written atomically, so an interrupted batch resumes where
    it stopped. With ``cuda_graphs``, image sizes that keep coming replay a recorded CUDA
    graph of their blur where the backend allows it (see :mod:`adaptiveblur.batch.graphs`).
    ``previews``, ``(out_dir, preview_dir)``, also writes each blurred file's preview at
    its output's path relative to ``out_dir``, under ``preview_dir``, as PNG
    (:func:`preview_path`).

    Raises:
        InvalidParameterError: bad settings (before any file is touched).
        KeyboardInterrupt: passed on after the workers stop (no partial files remain).
    """
    options = options or FileOptions()
    if jobs < 1:
        raise InvalidParameterError(f"expected jobs >= 1, got {jobs}", parameter="jobs")
    if processes < 1:
        raise InvalidParameterError(
            f"expected processes >= 1, got {processes}", parameter="processes"
        )
    job = BatchJob(
        FileBlur.open(settings, options, route), tuple(devices), cuda_graphs, redo, previews
    )
    summary = BatchSummary()

    def record(outcome: Outcome) -> None:
        summary.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    processes = min(processes, jobs, max(len(tasks), 1))
    # Worker processes share the cores for their CPU threads.
    threads = None if processes == 1 else max(1, library.worker_count() // processes)
    started = time.perf_counter()
    try:
        run_tasks(
            functools.partial(job.worker, threads=threads),
            tasks,
            jobs=jobs,
            processes=processes,
            on_result=record,
        )
    finally:
        summary.seconds = time.perf_counter() - started
    return summary


@dataclass(frozen=True)
class BatchJob:
    """What every file of a batch gets done to it; picklable, so worker processes get a copy."""

    files: FileBlur
    devices: tuple[str, ...]
    cuda_graphs: bool = True
    redo: frozenset[tuple[str, int, int]] = frozenset()  # (path, size, mtime_ns) to replace
    previews: tuple[str, str] | None = None  # (out_dir, preview_dir)

    def worker(self, threads: int | None = None) -> Callable[[Task], Outcome]:
        """The function that takes one task from file to file (thread-safe, one per process).

        ``threads`` sets this process's CPU threads for the native kernel and torch
        (worker processes share the cores). torch is imported only when the route or a
        device needs it.
        """
        uses_torch = self.files.route is None or self.files.route.engine == "torch"
        if threads is not None:
            library.set_worker_count(threads)
            if uses_torch:
                import torch

                torch.set_num_threads(threads)
        tokens = DeviceTokens(self.devices)
        stale = _StaleTemporaries()
        replayers: dict[str, Replayer] = {}
        if self.cuda_graphs and any(device.startswith("cuda") for device in self.devices):
            import torch

            from adaptiveblur.batch.graphs import ShapeGraphs

            replayers = {
                device: ShapeGraphs(torch.device(device))
                for device in self.devices
                if device.startswith("cuda")
            }
        overwrite = self.files.options.overwrite
        redo = self.redo
        map_path = self.files.options.map_path

        def work(task: Task) -> Outcome:
            started = time.perf_counter()
            size = _file_size(task.source)
            stale.remove(task.dest)
            device = None
            # Only --overwrite or the plan's redo replaces an output: one that appears while
            # this file is blurred (another shard, another tool) is kept, and this one skipped.
            replace = overwrite or _as_planned(task.dest, redo)
            try:
                if not replace and remote.output_exists(task.dest):
                    return Outcome(task, "skipped", 0.0, None, size)
                if same_file(task.source, task.dest):
                    raise OutputImageError(f"refusing to overwrite the input {task.source!r}")
                if same_file(map_path, task.dest):
                    raise OutputImageError(f"refusing to overwrite the map {map_path!r}")
                device = self.files.blur(
                    task.source,
                    task.dest,
                    tokens,
                    replayers=replayers,
                    make_folder=True,
                    preview=self.preview_path(task.dest),
                    replace=replace,
                )
            except AdaptiveBlurError as error:
                if not replace and remote.output_exists(task.dest):
                    return Outcome(task, "skipped", time.perf_counter() - started, None, size)
                seconds = time.perf_counter() - started
                return Outcome(task, "failed", seconds, str(error), size, None, error.parameter)
            except OSError as error:
                reason = f"{error.strerror or error}"
                return Outcome(task, "failed", time.perf_counter() - started, reason, size)
            return Outcome(task, "done", time.perf_counter() - started, None, size, device)

        return work

    def preview_path(self, dest: str) -> str | None:
        """Where the preview of the output ``dest`` goes (``None`` without previews)."""
        if self.previews is None:
            return None
        out_dir, preview_dir = self.previews
        return preview_path(out_dir, preview_dir, dest)


def preview_path(out_dir: str, preview_dir: str, dest: str) -> str:
    """The preview of the output ``dest``: its path relative to ``out_dir``, under
    ``preview_dir``, with ``.png`` added (``sub/a.jpg`` -> ``sub/a.jpg.png``), so outputs
    that differ only by extension keep previews apart."""
    relative = os.path.relpath(os.path.abspath(dest), os.path.abspath(out_dir))
    return os.path.join(preview_dir, relative + ".png")


def _as_planned(dest: str, redo: frozenset[tuple[str, int, int]]) -> bool:
    """Whether ``dest`` is still the file the plan chose to redo (same size and mtime)."""
    if remote.is_url(dest):
        return False
    try:
        status = os.stat(dest)
    except OSError:
        return False
    return (dest, status.st_size, status.st_mtime_ns) in redo


class _StaleTemporaries:
    """Temporary files a killed run left in the output folders (see :mod:`adaptiveblur.io.atomic`).

    Each folder is listed once, when its first output comes up, not once per file.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_folder: dict[str, dict[str, list[str]]] = {}

    def remove(self, dest: str) -> None:
        """Remove those left beside ``dest`` (a local one: a store is not listed for them)."""
        if remote.is_url(dest):
            return
        folder, name = os.path.split(os.path.abspath(dest))
        with self._lock:
            if folder not in self._by_folder:
                self._by_folder[folder] = stale_temporaries(folder)
            stale = self._by_folder[folder].pop(name, [])
        for path in stale:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _file_size(path: str) -> int:
    if remote.is_url(path):  # not asked of a store: one more request per file
        return 0
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
