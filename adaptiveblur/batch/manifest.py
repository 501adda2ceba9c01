"""Which settings made each output of a batch, so that a re-run can tell its own stale outputs.

A batch records in its output folder a fingerprint of what decides each output's pixels
and format (:class:`Fingerprints`). On a re-run (:func:`decide`), an output recorded with
the current settings is kept (the batch resumes), one recorded with other settings is
remade (it is this tool's own earlier result), and one with no record is kept (an older
version or another program made it: not ours to replace unasked).

Each shard writes a file of its own (:func:`manifest_name`): shards that run at once into
one folder never write the same file, and a run reads them all. A record also holds the
size and modification time its output had when it was written, and applies only while
they are unchanged: once the output is replaced (by a run with another shard split, by
hand, by another program), the record that describes the new file decides, or none does.

An output folder that is a URL (``s3://...``) keeps no manifest (a record holds its output's
size and modification time in nanoseconds, which stores do not give alike): there an
existing output is kept (``"exists"``) whatever made it, and ``overwrite`` redoes it.

Pure file logic: no torch, no pixels.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from adaptiveblur._version import __version__
from adaptiveblur.batch.plan import Task
from adaptiveblur.errors import AdaptiveBlurError, InputImageError, OutputImageError, os_reason
from adaptiveblur.focus import DEFAULT_FOCUS_AT
from adaptiveblur.io import remote

if TYPE_CHECKING:
    from adaptiveblur.settings import BlurSettings, FileOptions

MANIFEST_PREFIX = ".adaptiveblur-manifest"
MANIFEST_SUFFIX = ".json"
# A long batch writes its records this often too, so a killed run loses few of them.
FLUSH_SECONDS = 30.0

_SCHEMA = 1
# The settings that decide an output's pixels. The device, backend, memory budget and job
# counts do not (exact backends agree to rounding), so changing them redoes nothing.
_BLUR_FIELDS = (
    "max_sigma",
    "min_sigma",
    "gamma",
    "invert",
    "channel",
    "truncate",
    "border",
    "linear",
    "method",
)
# Depth-of-field settings decide pixels too; they enter only when set, so the records of
# outputs made without them keep their fingerprints.
_FOCUS_FIELDS = ("focus", "focus_at", "focus_range", "near_sigma", "far_sigma", "feather")
# The formats whose pixels depend on the quality (those io.formats.save_options gives it to).
_QUALITY_FORMATS = frozenset({"JPEG", "WEBP"})


def manifest_name(shard: tuple[int, int] | None) -> str:
    """The manifest file a run writes: one per shard, so concurrent shards never share one.

    Example:
        >>> manifest_name(None), manifest_name((2, 8))
        ('.adaptiveblur-manifest.json', '.adaptiveblur-manifest.shard-2-of-8.json')
    """
    tag = "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"
    return f"{MANIFEST_PREFIX}{tag}{MANIFEST_SUFFIX}"


class Fingerprints:
    """Short hashes of the settings and output options that decide each output's pixels and
    format; ``table`` maps each hash handed out to the values it stands for.

    The map file (``options.map_path``) enters by a hash of its bytes, so the same map
    under another path or working folder matches, and an edited map does not.

    Raises:
        InputImageError: the map file cannot be read.
    """

    def __init__(self, settings: BlurSettings, options: FileOptions) -> None:
        from adaptiveblur import io

        self._format = (
            io.check_output_format("L", options.output_format) if options.output_format else None
        )
        self._quality = options.quality
        self._base: dict[str, Any] = {
            name: _canonical(getattr(settings, name)) for name in _BLUR_FIELDS
        }
        defaults = {field.name: field.default for field in fields(settings)}
        given = {name: getattr(settings, name) for name in _FOCUS_FIELDS}
        if given["focus_at"] == DEFAULT_FOCUS_AT:  # the default spelled out is the default
            given["focus_at"] = None
        for name, value in given.items():
            if value != defaults[name]:
                self._base[name] = _canonical(value)
        self._base["map"] = _file_digest(options.map_path)
        self._base["resize_map"] = options.resize_map and options.map_path is not None
        self.table: dict[str, dict[str, Any]] = {}

    def for_output(self, dest: str) -> str:
        """The fingerprint of the output ``dest`` (its format follows from its name unless
        one is set)."""
        from adaptiveblur import io

        fmt = self._format or io.format_for_path(dest)
        values = self._base | {
            "format": fmt,
            "quality": self._quality if fmt in _QUALITY_FORMATS else None,
        }
        text = json.dumps(values, sort_keys=True, separators=(",", ":"))
        key = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        self.table.setdefault(key, values)
        return key


@dataclass(frozen=True)
class Record:
    """What made one output: a settings fingerprint, and the file it was when written."""

    settings: str
    size: int
    mtime_ns: int
    version: str = __version__

    def describes(self, status: os.stat_result) -> bool:
        """Whether the output is still the file this record was written for."""
        return (status.st_size, status.st_mtime_ns) == (self.size, self.mtime_ns)

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "version": self.version,
        }


@dataclass(frozen=True)
class Decision:
    """What a batch does with one task, and why.

    ``action``: ``"do"`` (no output yet), ``"skip"`` (an output is kept), ``"redo"`` (an
    output is replaced), ``"refuse"`` (the output would replace its own input; the run
    reports it as failed) or, from :func:`adaptiveblur.batch.plan_files`, ``"fail"`` (the
    input is not a regular file; ``reason`` says what it is). ``reason``: ``"new"``, ``"same settings"``, ``"no record"``
    (an output this tool has no record of), ``"exists"`` (an output in a URL folder, which
    keeps no records), ``"settings changed"``, ``"overwrite"``
    (asked for), ``"input"`` (the output is the input) or ``"map"`` (the output is the
    ``--map`` file). ``settings``: the fingerprint
    the output gets.
    """

    task: Task
    action: str
    reason: str
    settings: str


def decide(
    tasks: Sequence[Task],
    out_dir: str,
    fingerprints: Fingerprints,
    *,
    overwrite: bool = False,
    map_path: str | None = None,
) -> list[Decision]:
    """What to do with each task, from its output (if any) and the records of ``out_dir``;
    an output that is the ``map_path`` file is refused, whatever ``overwrite`` says.

    Reads only: nothing is written, not even ``out_dir``.
    """
    from adaptiveblur.run import same_file

    on_store = remote.is_url(out_dir)
    records = read_records(out_dir) if not (overwrite or on_store) else {}
    # A store is listed once, not asked once per output.
    present = _stored_outputs(out_dir) if on_store else None
    decisions = []
    for task in tasks:
        settings = fingerprints.for_output(task.dest)
        if not (os.path.lexists(task.dest) if present is None else task.dest in present):
            action, reason = "do", "new"
        elif same_file(task.source, task.dest):  # never replaced: the runner refuses it
            action, reason = ("refuse" if overwrite else "skip"), "input"
        elif same_file(map_path, task.dest):  # never replaced, even with overwrite
            action, reason = "refuse", "map"
        elif overwrite:
            action, reason = "redo", "overwrite"
        elif on_store:
            action, reason = "skip", "exists"
        else:
            made_with = _recorded_settings(task.dest, records.get(output_key(out_dir, task.dest)))
            if not made_with:
                action, reason = "skip", "no record"
            elif made_with == {settings}:
                action, reason = "skip", "same settings"
            else:  # records that disagree with each other count as changed: ours to redo
                action, reason = "redo", "settings changed"
        decisions.append(Decision(task, action, reason, settings))
    return decisions


def _stored_outputs(out_dir: str) -> frozenset[str]:
    """The URLs of every file below the URL folder ``out_dir`` (none when it is missing).

    Raises:
        OutputImageError: the store cannot be listed.
    """
    try:
        listed = remote.list_files(out_dir, recursive=True, missing_ok=True)
    except InputImageError as error:  # listing the output folder: an output error
        raise OutputImageError(str(error)) from error
    return frozenset(remote.join(out_dir, relative) for relative in listed)


def _recorded_settings(dest: str, records: Iterable[Record] | None) -> set[str]:
    """The fingerprints of the records that describe ``dest`` as it is now."""
    if not records:
        return set()
    try:
        status = os.stat(dest)
    except OSError:
        return set()
    return {record.settings for record in records if record.describes(status)}


def output_key(out_dir: str, dest: str) -> str:
    """How a manifest names an output: its path below ``out_dir``, ``/``-separated."""
    return os.path.relpath(dest, out_dir).replace(os.sep, "/")


def read_records(out_dir: str) -> dict[str, list[Record]]:
    """Every record of every manifest file in ``out_dir``, by output (several files may
    hold one output). Files that cannot be read or parsed hold none."""
    found: dict[str, list[Record]] = {}
    try:
        names = sorted(os.listdir(out_dir))
    except OSError:
        return found
    for name in names:
        if name.startswith(MANIFEST_PREFIX) and name.endswith(MANIFEST_SUFFIX):
            for key, record in _read_manifest(os.path.join(out_dir, name))[1].items():
                found.setdefault(key, []).append(record)
    return found


def _read_manifest(path: str) -> tuple[dict[str, Any], dict[str, Record]]:
    """The settings table and the records of one manifest file (both empty if unreadable,
    or if it is not a regular file: a pipe of that name is never waited on)."""
    from adaptiveblur.io import open_regular_file

    try:
        with open_regular_file(path, path) as handle:
            data = json.loads(handle.read().decode("utf-8"))
        table = data["settings"]
        records = {
            str(key): Record(
                str(entry["settings"]),
                int(entry["size"]),
                int(entry["mtime_ns"]),
                str(entry.get("version", "")),
            )
            for key, entry in data["outputs"].items()
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}, {}
    return (dict(table) if isinstance(table, dict) else {}), records


class ManifestWriter:
    """Records the outputs a run makes, and writes them into this run's manifest file now
    and then (every ``interval`` seconds, as outputs come in) and at :meth:`flush`.

    Each write reads the file again and adds to what it holds, so records of earlier runs
    of the same shard are kept. An ``out_dir`` that is a URL gets none (see the module's
    notes). Thread-safe.
    """

    def __init__(
        self,
        out_dir: str,
        shard: tuple[int, int] | None,
        table: Mapping[str, Mapping[str, Any]],
        *,
        interval: float = FLUSH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out_dir = out_dir
        self.path = None if remote.is_url(out_dir) else os.path.join(out_dir, manifest_name(shard))
        self._table = table
        self._interval = interval
        self._clock = clock
        self._written_at = clock()
        self._pending: dict[str, Record] = {}
        self._lock = threading.Lock()

    def add(self, dest: str, settings: str) -> None:
        """Record that ``dest`` was just written with the settings fingerprint ``settings``.

        A write that is due and fails is tried again at the next one (and at :meth:`flush`).
        """
        if self.path is None:
            return
        try:
            status = os.stat(dest)
        except OSError:
            return  # gone already: nothing to record
        with self._lock:
            key = output_key(self.out_dir, dest)
            self._pending[key] = Record(settings, status.st_size, status.st_mtime_ns)
            due = self._clock() - self._written_at >= self._interval
        if due:
            with contextlib.suppress(AdaptiveBlurError):
                self.flush()

    def flush(self) -> None:
        """Write the records so far (nothing when there are none).

        Raises:
            OutputImageError: the manifest cannot be written.
        """
        from adaptiveblur import io

        with self._lock:
            self._written_at = self._clock()
            if not self._pending or self.path is None:
                return
            table, records = _read_manifest(self.path)
            records.update(self._pending)
            used = {record.settings for record in records.values()}
            table = table | dict(self._table)
            document = {
                "adaptiveblur_manifest": _SCHEMA,
                "settings": {key: table[key] for key in sorted(used) if key in table},
                "outputs": {key: records[key].as_dict() for key in sorted(records)},
            }
            io.write_text_atomically(self.path, json.dumps(document, indent=1) + "\n")
            self._pending.clear()


def _canonical(value: Any) -> Any:
    """Numbers as floats (``4`` and ``4.0`` are one setting); other values as they are."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def _file_digest(path: str | None) -> str | None:
    """The SHA-256 of a regular file's bytes; ``None`` for no file. A pipe or standard
    input is named, not read (reading would use it up)."""
    if path is None:
        return None
    if remote.is_url(path):
        return hashlib.sha256(remote.read_bytes(path)).hexdigest()
    try:
        if path == "-" or not stat.S_ISREG(os.stat(path).st_mode):
            return f"unread:{os.path.abspath(path)}"
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise InputImageError(f"cannot read '{path}': {os_reason(error)}") from error
    return digest.hexdigest()
