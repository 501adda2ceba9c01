"""Run a batch's tasks in threads, or in worker processes each with its own threads and lock.

The threads of one process share one interpreter lock. On a host with many cores, where
a GPU does the blur, the Python parts of decoding, encoding and driving the GPU queue
behind that lock and the cores idle. Worker processes each run threads of their own:
they take tasks from one shared queue (task descriptions only; pixels never cross
between processes) and send back small results, which the caller sees in completion
order, in its own thread.

Stopping: an exception in the caller (Ctrl-C is ``KeyboardInterrupt``) tells the
workers to take no new task; the tasks in hand finish (outputs are written atomically),
then the exception goes on. The workers ignore SIGINT themselves (a terminal sends it to
the whole process group), and stop on their own if the calling process goes away.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from adaptiveblur.errors import WorkerProcessError

_POLL_SECONDS = 0.2  # how often waiting workers and the caller look up from their queues
_RESULT = "result"
_ERROR = "error"


def run_tasks(
    make_worker: Callable[[], Callable[[Any], Any]],
    tasks: Sequence[Any],
    *,
    jobs: int,
    processes: int,
    on_result: Callable[[Any], None],
) -> None:
    """``jobs`` tasks at a time: in this process's threads, or shared out over ``processes``.

    With ``processes == 1``, ``make_worker()`` is called here and its result runs in
    ``jobs`` threads; otherwise as :func:`run_in_processes` with ``ceil(jobs / processes)``
    threads each. ``on_result`` sees each result in completion order, in this thread.
    """
    if processes == 1:
        _run_in_threads(make_worker(), tasks, jobs, on_result)
    else:
        threads = -(-jobs // processes)
        run_in_processes(
            make_worker, tasks, processes=processes, threads=threads, on_result=on_result
        )


def _run_in_threads(
    worker: Callable[[Any], Any],
    tasks: Sequence[Any],
    jobs: int,
    on_result: Callable[[Any], None],
) -> None:
    # The caller's thread only waits on a C-level queue: concurrent.futures' wait() takes
    # every future's lock in a Python loop, and a Ctrl-C landing inside that loop would leave
    # locks held that the workers then wait on forever.
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    outbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    for task in tasks:
        inbox.put(task)
    stop = threading.Event()

    def take_tasks() -> None:
        while not stop.is_set():
            try:
                task = inbox.get_nowait()
            except queue.Empty:
                return
            try:
                outbox.put((_RESULT, worker(task)))
            except BaseException as error:  # noqa: BLE001 - raised in the caller's thread
                outbox.put((_ERROR, error))
                return

    pool = [
        threading.Thread(target=take_tasks, name=f"adaptiveblur-{index}")
        for index in range(min(jobs, len(tasks)))
    ]

    def finish() -> None:
        # Tasks in hand finish (outputs are written atomically); the rest never start.
        stop.set()
        for thread in pool:
            with contextlib.suppress(RuntimeError):  # a thread the interruption kept from starting
                thread.join()

    in_on_result = False  # an error there ends the results: on_result is not called again
    try:
        for thread in pool:
            thread.start()
        remaining = len(tasks)
        while remaining:
            kind, payload = outbox.get()  # a thread's last act is a result or its error
            if kind == _ERROR:
                raise payload
            remaining -= 1
            in_on_result = True
            on_result(payload)
            in_on_result = False
    except BaseException:
        finish()
        if in_on_result:
            raise
        # The results of the tasks that finished meanwhile still reach the caller (a batch
        # records their outputs), unless on_result fails.
        with contextlib.suppress(Exception):
            while True:
                kind, payload = outbox.get_nowait()
                if kind == _RESULT:
                    on_result(payload)
        raise
    finish()


def run_in_processes(
    make_worker: Callable[[], Callable[[Any], Any]],
    tasks: Sequence[Any],
    *,
    processes: int,
    threads: int,
    on_result: Callable[[Any], None],
) -> None:
    """Call ``make_worker()`` once in each of ``processes`` processes, then its result on every task.

    Args:
        make_worker: picklable (a top-level function, or a ``functools.partial`` of one);
            builds the per-process callable that turns one task into one result.
        tasks: picklable task descriptions (not ``None``: that marks the end).
        processes: worker processes to start (``spawn``: a fresh interpreter each).
        threads: threads per process, each doing one task at a time.
        on_result: called in the caller's thread with each result, in completion order.

    Raises:
        WorkerProcessError: a worker process died before the tasks were done.
        Exception: whatever ``make_worker`` or a worker raised (a worker's error stops
            the run, as it would in the caller's own thread), with the worker's
            traceback as a note.
    """
    context = multiprocessing.get_context("spawn")  # forking a process that runs CUDA is unsafe
    inbox: Any = context.Queue()
    outbox: Any = context.Queue()
    stop = context.Event()
    for task in tasks:
        inbox.put(task)
    for _ in range(processes * threads):
        inbox.put(None)  # one end mark per thread
    workers = [
        context.Process(
            target=_serve,
            args=(make_worker, threads, inbox, outbox, stop, os.getpid()),
            name=f"adaptiveblur-{index}",
            daemon=True,
        )
        for index in range(processes)
    ]
    with _sigint_ignored():  # the workers start with SIGINT ignored (the caller's is back after)
        for worker in workers:
            worker.start()
    # Until every result is in, the results of tasks that finish while the run stops are
    # delivered too, unless on_result is what failed (it is not called again then).
    stopping, in_on_result = True, False
    try:
        remaining = len(tasks)
        ended = False  # every worker had ended at the last look: their results are all in
        while remaining:
            try:
                kind, payload = outbox.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                ended = _check_workers(workers, remaining, ended)
                continue
            if kind == _ERROR:
                raise payload
            remaining -= 1
            in_on_result = True
            on_result(payload)
            in_on_result = False
        stopping = False
    finally:
        stop.set()
        inbox.cancel_join_thread()  # unread end marks must not hold this process at exit
        _join(workers, outbox, on_result if stopping and not in_on_result else None)
        for channel in (inbox, outbox):
            channel.close()
        # Free the queues' and the event's semaphores now, not whenever the cycle collector
        # runs: from inside multiprocessing's resource tracker that fails (Python 3.12 warns
        # "ResourceTracker called reentrantly").
        del inbox, outbox, stop, workers
        gc.collect()


def _serve(
    make_worker: Callable[[], Callable[[Any], Any]],
    threads: int,
    inbox: Any,
    outbox: Any,
    stop: Any,
    parent: int,
) -> None:
    """A worker process: ``threads`` threads take tasks until the end marks or a stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker = make_worker()
    except BaseException as error:  # noqa: BLE001 - reported to the caller, which raises it
        outbox.put((_ERROR, _portable(error)))
        return

    def take_tasks() -> None:
        while not stop.is_set() and os.getppid() == parent:
            try:
                task = inbox.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            if task is None:
                return
            try:
                outbox.put((_RESULT, worker(task)))
            except BaseException as error:  # noqa: BLE001 - as above
                outbox.put((_ERROR, _portable(error)))
                return

    pool = [threading.Thread(target=take_tasks, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def _portable(error: BaseException) -> BaseException:
    """``error`` with the worker's traceback as a note, or a RuntimeError if it cannot be pickled."""
    remote = "".join(traceback.format_exception(error))
    try:
        error.add_note(f"in a worker process:\n{remote}")
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any failure to travel: send its text instead
        return RuntimeError(f"in a worker process:\n{remote}")
    return error


def _check_workers(workers: list[Any], remaining: int, ended: bool) -> bool:
    """Raise if a worker died, or if all had ended already at the last look; else whether all have."""
    for worker in workers:
        if worker.exitcode not in (None, 0):
            raise WorkerProcessError(
                f"a worker process ended unexpectedly (exit code {worker.exitcode}) "
                f"with {remaining} file(s) not done"
            )
    if ended:
        raise WorkerProcessError(f"the worker processes ended with {remaining} file(s) not done")
    return all(worker.exitcode is not None for worker in workers)


def _join(workers: list[Any], outbox: Any, deliver: Callable[[Any], None] | None) -> None:
    """Wait for the workers, reading what they still send (a full pipe would keep them
    alive): results go to ``deliver`` (until it fails), errors are dropped."""

    def read(timeout: float) -> bool:
        nonlocal deliver
        try:
            kind, payload = outbox.get(timeout=timeout)
        except queue.Empty:
            return False
        if deliver is not None and kind == _RESULT:
            try:
                deliver(payload)
            except Exception:  # noqa: BLE001 - the run is already stopping on an error
                deliver = None
        return True

    for worker in workers:
        while worker.is_alive():
            read(_POLL_SECONDS)
        worker.join()
    while deliver is not None and read(_POLL_SECONDS):  # sent just before a worker ended
        pass


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored meanwhile (a new interpreter keeps an inherited SIG_IGN), main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
