"""``adaptiveblur.batch.workers``: tasks spread over worker processes, results and failures come back.

The workers are built from picklable standard-library callables (``functools.partial`` of
``operator`` functions), since a spawned process cannot import this test module.
"""

from __future__ import annotations

import functools
import operator
import os
import signal

import pytest

from adaptiveblur.batch.workers import run_in_processes, run_tasks
from adaptiveblur.errors import WorkerProcessError
from tests.helpers import run_subprocess, slow_or_interrupted


def times(factor: int) -> functools.partial:
    """A ``make_worker`` whose worker multiplies each task by ``factor``."""
    return functools.partial(functools.partial, operator.mul, factor)


@pytest.mark.parametrize(("processes", "threads"), [(1, 1), (2, 3)])
def test_every_task_gives_one_result(rng, processes, threads):
    tasks = [int(value) for value in rng.integers(-1000, 1000, 23)]
    results: list[int] = []
    run_in_processes(
        times(7), tasks, processes=processes, threads=threads, on_result=results.append
    )
    assert sorted(results) == sorted(7 * task for task in tasks)


def test_no_tasks():
    results: list[int] = []
    run_in_processes(times(2), [], processes=2, threads=2, on_result=results.append)
    assert results == []


def test_a_worker_error_is_raised_with_its_traceback():
    divide = functools.partial(functools.partial, operator.truediv, 1.0)
    with pytest.raises(ZeroDivisionError) as raised:
        run_in_processes(divide, [1, 2, 0, 4], processes=2, threads=1, on_result=lambda _: None)
    assert any("in a worker process" in note for note in raised.value.__notes__)


def test_an_error_building_the_worker_is_raised():
    broken = functools.partial(operator.truediv, 1.0, 0)  # make_worker itself fails
    with pytest.raises(ZeroDivisionError):
        run_in_processes(broken, [1, 2], processes=2, threads=1, on_result=lambda _: None)


def test_a_dead_worker_process_is_an_error():
    exiting = functools.partial(functools.partial, os._exit)  # the task is the exit code
    with pytest.raises(WorkerProcessError, match="exit code 3"):
        run_in_processes(exiting, [3, 3], processes=2, threads=1, on_result=lambda _: None)


def test_an_error_in_on_result_stops_the_workers():
    seen: list[int] = []

    def stop_at_the_first(result: int) -> None:
        seen.append(result)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_in_processes(
            times(1), list(range(200)), processes=2, threads=1, on_result=stop_at_the_first
        )
    assert len(seen) == 1


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_give_one_result_per_task(rng, threads):
    tasks = [int(value) for value in rng.integers(-1000, 1000, 37)]
    results: list[int] = []
    run_tasks(times(5), tasks, jobs=threads, processes=1, on_result=results.append)
    assert sorted(results) == sorted(5 * task for task in tasks)


def test_a_thread_error_is_raised_in_the_caller():
    divide = functools.partial(functools.partial, operator.truediv, 1.0)
    with pytest.raises(ZeroDivisionError):
        run_tasks(divide, [1, 2, 0, 4], jobs=2, processes=1, on_result=lambda _: None)


@pytest.mark.parametrize("processes", [1, 2])
def test_results_that_finish_while_a_run_stops_still_arrive(processes):
    # A batch records each finished output through on_result: one that finishes after the
    # run was told to stop must be recorded too.
    make_worker = functools.partial(functools.partial, slow_or_interrupted)
    results: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_tasks(
            make_worker, ["slow", "stop"], jobs=2, processes=processes, on_result=results.append
        )
    assert results == ["slow"]


# Ctrl-C at random moments of a threaded run: every time it must raise KeyboardInterrupt and
# leave no worker thread behind. Run in a child process so that a deadlock fails the test by
# its time limit instead of hanging the suite.
_INTERRUPTED_THREADS = """\
import random, signal, sys, threading, time
from adaptiveblur.batch.workers import run_tasks
signal.signal(signal.SIGINT, signal.default_int_handler)
rng = random.Random(int(sys.argv[1]))
main = threading.main_thread().ident
def make_worker():
    return lambda task: time.sleep(0.0002) or task
for trial in range(60):
    timer = threading.Timer(rng.uniform(0.0, 0.05), signal.pthread_kill, (main, signal.SIGINT))
    try:
        # Started inside the try: on a loaded machine the timer may fire before start()
        # returns, and that interruption belongs to this trial too.
        timer.start()
        run_tasks(make_worker, list(range(3000)), jobs=2, processes=1, on_result=lambda _: None)
    except KeyboardInterrupt:
        pass
    else:
        sys.exit(f"trial {trial}: the run ended before the interruption")
    timer.join()
    deadline = time.monotonic() + 2
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    if threading.active_count() > 1:
        sys.exit(f"trial {trial}: threads left running: {threading.enumerate()}")
"""


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_ctrl_c_anywhere_in_a_threaded_run_stops_it(tmp_path, rng):
    seed = str(int(rng.integers(1 << 30)))
    done = run_subprocess(["-c", _INTERRUPTED_THREADS, seed], tmp_path, timeout=60)
    assert done.returncode == 0, (seed, done.stderr.decode()[-2000:])
