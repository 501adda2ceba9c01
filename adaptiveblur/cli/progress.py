"""What the command line shows on stderr while it works: progress bars and per-file failures.

Bars are drawn only when stderr is a terminal; failures are always reported. rich is
imported when something is first shown, so a quiet run that succeeds never loads it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from adaptiveblur.cli.options import with_flag_hint

if TYPE_CHECKING:
    from rich.console import Console

    from adaptiveblur.batch import Task
    from adaptiveblur.batch.runner import Outcome

PROG = "adaptiveblur"


@functools.cache
def stderr() -> Console:
    """The console on stderr that every message and bar goes to."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def say(message: str) -> None:
    """Print ``message`` as it is (no markup) on stderr."""
    stderr().print(message, markup=False)


def error(message: str) -> None:
    """Print ``adaptiveblur: error: message`` on stderr."""
    say(f"{PROG}: error: {message}")


def notice(message: str) -> None:
    """Print ``adaptiveblur: note: message`` on stderr (a choice the user should know of)."""
    say(f"{PROG}: note: {message}")


@contextmanager
def tile_progress(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback drawing a bar, or ``None`` when none is drawn."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, TaskProgressColumn, TextColumn

    with _bar(TextColumn("blurring"), BarColumn(), TaskProgressColumn()) as bar:
        task = bar.add_task("blur", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


class BatchProgress:
    """Reports each failure as it happens and, on a terminal, draws a bar over the planned files."""

    def __init__(self, enabled: bool) -> None:
        self._wanted = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        self._counted = 0

    def planned(self, tasks: list[Task]) -> None:
        """Start the bar for ``tasks`` (sized by their input bytes)."""
        if not self._wanted or not tasks:
            return
        from rich.progress import BarColumn, DownloadColumn, TextColumn

        total = sum(_size_of(task.source) for task in tasks)
        files = TextColumn("{task.fields[files]}/{task.fields[total_files]} files")
        self._bar = _bar(files, BarColumn(), DownloadColumn()).__enter__()
        self._task = self._bar.add_task(
            "batch", total=total or None, files=0, total_files=len(tasks)
        )

    def finished(self, outcome: Outcome) -> None:
        """Count one file, reporting it if it failed."""
        if self._bar is not None:
            self._counted += 1
            self._bar.update(self._task, advance=outcome.size, files=self._counted)
        if outcome.status == "failed":
            reason = with_flag_hint(outcome.reason or "unknown error", outcome.parameter)
            where = "" if outcome.task.source in reason else f"{outcome.task.source}: "
            say(f"{PROG}: failed: {where}{reason}")

    def close(self) -> None:
        """Take the bar away."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _bar(*columns: Any) -> Any:
    """A transient rich progress display on stderr with a time-remaining column."""
    from rich.progress import Progress, TimeRemainingColumn

    return Progress(*columns, TimeRemainingColumn(), console=stderr(), transient=True)


def _size_of(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
