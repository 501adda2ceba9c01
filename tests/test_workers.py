"""``adaptiveblur.batch.workers``: tasks spread over worker processes, results and failures come back.

The workers are built from picklable standard-library callables (``functools.partial`` of
``operator`` functions), since a spawned process cannot import this test module.
"""

from __future__ import annotations

import functools
import operator
import os

import pytest

from adaptiveblur.batch.workers import run_in_processes
from adaptiveblur.errors import WorkerProcessError


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
