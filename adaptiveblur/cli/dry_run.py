"""``batch --dry-run``: what a run would do with each file, one line each on stdout, and the
counts on stderr. Nothing is written."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO

from adaptiveblur.cli.progress import PROG, say

if TYPE_CHECKING:
    from adaptiveblur.batch.manifest import Decision

# Why, by the reason a decision gives ("new" needs no word).
_WHY = {
    "same settings": "exists, made with these settings",
    "no record": "exists, no record of its settings; --overwrite redoes it",
    "exists": "exists, a URL OUT_DIR keeps no record of settings; --overwrite redoes it",
    "settings changed": "made with other settings",
    "overwrite": "exists, --overwrite",
}


def show_plan(decisions: Sequence[Decision]) -> None:
    """Print ``ACTION  SOURCE -> DEST  (why)`` per file on stdout, then a count on stderr."""
    for decision in decisions:
        why = _why(decision)
        line = f"{decision.action:<6} {decision.task.source} -> {decision.task.dest}"
        _write_line(f"{line}  ({why})" if why else line)
    counts = Counter(decision.action for decision in decisions)
    unrecorded = sum(decision.reason in ("no record", "exists") for decision in decisions)
    listed = f"{counts['do']} to do, {counts['redo']} to redo, {counts['skip']} to skip"
    if unrecorded:
        listed += f" ({unrecorded} with no record of their settings)"
    if counts["refuse"]:
        listed += f", {counts['refuse']} refused"
    if counts["fail"]:
        listed += f", {counts['fail']} that would fail"
    say(f"{PROG}: dry run: {listed}; nothing was written")


def _why(decision: Decision) -> str:
    if decision.action == "fail":
        return decision.reason
    if decision.reason == "map":
        return "would replace the --map file"
    if decision.reason == "input":
        return "it is the input" if decision.action == "skip" else "would replace its input"
    return _WHY.get(decision.reason, "")


def _write_line(text: str) -> None:
    """One line on stdout, file names byte for byte (names that are not UTF-8 included).

    Raises:
        BrokenPipeOutputError, OutputImageError: stdout is closed or the write failed.
    """
    from adaptiveblur.io.atomic import write_stdout

    data = (text + "\n").encode("utf-8", "surrogateescape")
    if sys.stdout is not None and getattr(sys.stdout, "buffer", None) is None:
        sys.stdout.write(data.decode("utf-8", "replace"))  # a text-only stream (tests)
        return
    if sys.stdout is not None:
        sys.stdout.flush()

    def encode(stream: BinaryIO) -> None:
        stream.write(data)

    write_stdout(encode)
