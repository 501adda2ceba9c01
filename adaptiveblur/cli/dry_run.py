"""``batch --dry-run``: what a run would do with each file, one line each on stdout, and the
counts on stderr. Nothing is written."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from adaptiveblur.cli.progress import PROG, say

if TYPE_CHECKING:
    from adaptiveblur.batch.manifest import Decision

# Why, by the reason a decision gives ("new" needs no word).
_WHY = {
    "same settings": "exists, made with these settings",
    "no record": "exists, no record of its settings; --overwrite redoes it",
    "settings changed": "made with other settings",
    "overwrite": "exists, --overwrite",
}


def show_plan(decisions: Sequence[Decision]) -> None:
    """Print ``ACTION  SOURCE -> DEST  (why)`` per file on stdout, then a count on stderr.

    A file that would be read but is not a regular file (a pipe, a device) is ``fail``,
    as the run would report it; it is checked with ``stat`` alone, never opened.
    """
    counts: Counter[str] = Counter()
    for decision in decisions:
        action, why = decision.action, _why(decision)
        if action in ("do", "redo"):
            unreadable = _unreadable(decision.task.source)
            action, why = ("fail", unreadable) if unreadable else (action, why)
        counts[action] += 1
        line = f"{action:<6} {decision.task.source} -> {decision.task.dest}"
        _write_line(f"{line}  ({why})" if why else line)
    unrecorded = sum(decision.reason == "no record" for decision in decisions)
    listed = f"{counts['do']} to do, {counts['redo']} to redo, {counts['skip']} to skip"
    if unrecorded:
        listed += f" ({unrecorded} with no record of their settings)"
    if counts["refuse"]:
        listed += f", {counts['refuse']} refused"
    if counts["fail"]:
        listed += f", {counts['fail']} that would fail"
    say(f"{PROG}: dry run: {listed}; nothing was written")


def _unreadable(source: str) -> str | None:
    """Why ``source`` could not be read (``"not a regular file"``), or ``None``."""
    from adaptiveblur.errors import InputImageError
    from adaptiveblur.io import check_regular_file

    try:
        check_regular_file(source)
    except InputImageError as failure:
        return str(failure).split("': ", 1)[-1]
    return None


def _why(decision: Decision) -> str:
    if decision.reason == "input":
        return "it is the input" if decision.action == "skip" else "would replace its input"
    return _WHY.get(decision.reason, "")


def _write_line(text: str) -> None:
    """One line on stdout, file names byte for byte (names that are not UTF-8 included)."""
    data = (text + "\n").encode("utf-8", "surrogateescape")
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(data.decode("utf-8", "replace"))
        return
    sys.stdout.flush()
    buffer.write(data)
