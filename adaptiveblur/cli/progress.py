"""What the command line shows on stderr while it works: progress bars and per-file failures.

Bars are drawn only when stderr is a terminal; elsewhere (a batch job's log) a long batch
prints a plain line now and then instead. Failures are always reported. rich is imported
when something is first shown, so a quiet run that succeeds never loads it.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from adaptiveblur.cli.options import with_flag_hint

if TYPE_CHECKING:
    from rich.console import Console

    from adaptiveblur.batch import Task
    from adaptiveblur.batch.runner import Outcome

PROG = "adaptiveblur"
# Seconds between two plain progress lines when stderr is not a terminal.
PLAIN_INTERVAL = 10.0


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
    """Reports each failure as it happens and, on a terminal, draws a bar over the planned files.

    When stderr is not a terminal, a batch that runs longer than ``interval`` seconds
    (default :data:`PLAIN_INTERVAL`) prints a plain line every ``interval`` seconds (as
    files finish) and one at the end:
    ``adaptiveblur: 120/384 files, 0 failed, 31.2 images/s, about 8 s left``.
    ``clock`` gives the time in seconds.
    """

    def __init__(
        self,
        enabled: bool,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        terminal = sys.stderr.isatty()
        self._wanted = enabled and terminal
        self._plain = enabled and not terminal
        self._bar: Any = None
        self._task: Any = None
        self._counted = 0
        self._interval = PLAIN_INTERVAL if interval is None else interval
        self._clock = clock
        self._started = self._shown_at = clock()
        self._total = 0
        self._done = self._failed = self._skipped = 0
        self._shown: int | None = None  # files counted in the last plain line

    def planned(self, tasks: list[Task]) -> None:
        """Start the bar for ``tasks`` (sized by their input bytes)."""
        self._total = len(tasks)
        self._started = self._shown_at = self._clock()
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
        self._done += outcome.status == "done"
        self._failed += outcome.status == "failed"
        self._skipped += outcome.status == "skipped"
        if self._bar is not None:
            self._counted += 1
            self._bar.update(self._task, advance=outcome.size, files=self._counted)
        if outcome.status == "failed":
            reason = with_flag_hint(outcome.reason or "unknown error", outcome.parameter)
            where = "" if outcome.task.source in reason else f"{outcome.task.source}: "
            say(f"{PROG}: failed: {where}{reason}")
        if self._plain and self._clock() - self._shown_at >= self._interval:
            self._show_line()

    def close(self) -> None:
        """Take the bar away; after plain lines, print the last one."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        finished = self._done + self._failed + self._skipped
        if self._shown is not None and self._shown != finished:
            self._show_line()

    def _show_line(self) -> None:
        """``adaptiveblur: 120/384 files, 0 failed, 31.2 images/s, about 8 s left``."""
        now = self._clock()
        self._shown_at = now
        elapsed = max(now - self._started, 1e-9)
        finished = self._done + self._failed + self._skipped
        self._shown = finished
        line = (
            f"{PROG}: {finished}/{self._total} files, {self._failed} failed, "
            f"{self._done / elapsed:.1f} images/s"
        )
        worked = self._done + self._failed  # skipped files take no time: leave them out
        if finished < self._total and worked:
            line += f", about {_duration((self._total - finished) * elapsed / worked)} left"
        say(line)


def _duration(seconds: float) -> str:
    """``"8 s"``, ``"12 min"``, ``"3.5 h"``.

    Example:
        >>> _duration(7.6), _duration(725), _duration(12600)
        ('8 s', '12 min', '3.5 h')
    """
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _bar(*columns: Any) -> Any:
    """A transient rich progress display on stderr with a time-remaining column."""
    from rich.progress import Progress, TimeRemainingColumn

    return Progress(*columns, TimeRemainingColumn(), console=stderr(), transient=True)


def _size_of(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
