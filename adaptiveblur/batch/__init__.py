"""Many files: :func:`blur_files` plans, shards, spreads over devices, runs and reports;
:func:`plan_files` says what it would do, touching nothing.

``plan`` decides which files and where their results go (pure paths), ``manifest``
records which settings made each output (so a re-run knows what to keep and what to
redo), ``runner`` takes each through :class:`adaptiveblur.run.FileBlur`, ``workers``
runs tasks in threads or worker processes, ``graphs`` replays repeated shapes from
recorded CUDA graphs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from adaptiveblur.batch.plan import Task
from adaptiveblur.io import remote

if TYPE_CHECKING:
    from adaptiveblur.batch.manifest import Decision, Fingerprints
    from adaptiveblur.batch.runner import BatchSummary, Outcome
    from adaptiveblur.settings import BlurSettings, FileOptions

__all__ = ["Task", "blur_files", "plan_files"]

# Files whose headers are read to estimate a batch's image size for the device choice.
_SIZE_SAMPLE = 8


def blur_files(
    out_dir: str,
    settings: BlurSettings,
    options: FileOptions | None = None,
    *,
    in_dir: str | None = None,
    sources: Sequence[str] | None = None,
    patterns: Sequence[str] | None = None,
    recursive: bool = False,
    suffix: str = "",
    shard: tuple[int, int] | None = None,
    jobs: int | None = None,
    processes: int = 1,
    gpus: Sequence[int] | None = None,
    report: str | None = None,
    preview_dir: str | None = None,
    on_plan: Callable[[list[Task]], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
    cuda_graphs: bool = True,
) -> BatchSummary:
    """Blur every image of ``in_dir`` (or the files ``sources``) into ``out_dir``, mirroring folders.

    An existing output is skipped, unless a manifest in ``out_dir`` records that it was
    made with other settings (then it is redone) or ``options.overwrite`` is set; each
    output made is recorded (see :mod:`adaptiveblur.batch.manifest`; each shard writes its
    own manifest file).

    Folders and files may be URLs (``s3://bucket/photos``, any fsspec protocol; see
    :mod:`adaptiveblur.io.remote`); a URL ``out_dir`` keeps no manifest, so its existing
    outputs are kept unless ``options.overwrite``.

    Args:
        out_dir: the output folder (created when missing).
        settings, options: how to blur, and how to read and write the files.
        in_dir: a folder to take images from: every type pillow reads, or those matching
            ``patterns`` (globs on the name or the relative path); hidden files are skipped;
            subfolders with ``recursive``.
        sources: instead of ``in_dir``, these paths, their folders mirrored relative to
            the deepest folder that holds them all.
        suffix: added before each output's extension.
        shard: ``(K, N)``: only the K-th of N shares of the files, chosen by a hash of each
            relative path (shards never overlap and need no coordination).
        jobs: files in flight at once (default: the CPUs this process may use, see
            :func:`adaptiveblur.cpus.usable_cpus`; at least one more than the devices).
            processes: worker processes to share them out over.
        gpus: CUDA device indices to spread files over; default: every visible GPU when
            ``settings.device`` is ``cuda`` or an ``auto`` that finds one, else the device.
        report: also write a JSON report of every file here (atomically); ``"-"`` for
            standard output.
        preview_dir: also write a preview of each file blurred (not of those skipped)
            here, as PNG (:func:`adaptiveblur.preview.preview_image`), at the output's
            path relative to ``out_dir`` with ``.png`` added (``sub/a.jpg.png``); one that
            would replace an input, an output, the map or another preview is refused.
            Both it and ``out_dir`` must then be local folders.
        on_plan: called once with the tasks, before any is run (for a progress bar).
        on_outcome: called with each file's :class:`Outcome`, in completion order.
        on_notice: called once with the route's notice (a slower fallback), if any.
        cuda_graphs: replay repeated image shapes from recorded CUDA graphs.

    Returns:
        The :class:`BatchSummary`; failed files are in it, not raised.

    Raises:
        InvalidParameterError: bad settings, both or neither of ``in_dir`` and ``sources``,
            a bad shard, two inputs that would write one output, or a URL with previews.
        InputImageError: ``in_dir`` cannot be read, or the map file is bad.
        OutputImageError: ``out_dir`` is a file, or ``report`` or the manifest cannot be
            written.
        DeviceUnavailableError: a GPU was asked for and is not there.
    """
    from adaptiveblur import io
    from adaptiveblur.batch.manifest import ManifestWriter
    from adaptiveblur.batch.runner import run_batch
    from adaptiveblur.cpus import usable_cpus
    from adaptiveblur.engine import choose_route
    from adaptiveblur.errors import AdaptiveBlurError, InvalidParameterError
    from adaptiveblur.run import check_writable, same_file
    from adaptiveblur.settings import FileOptions

    options = options or FileOptions()
    check_writable(report)
    if preview_dir is not None:
        for folder in (preview_dir, out_dir):
            if remote.is_url(folder):  # a preview is placed and checked beside local files
                raise InvalidParameterError(
                    f"expected local folders for the previews and the outputs, got {folder!r}",
                    parameter="preview_dir",
                )
    if preview_dir is not None and any(
        same_file(preview_dir, folder) for folder in (out_dir, in_dir) if folder is not None
    ):
        raise InvalidParameterError(
            "the previews need a folder of their own, not OUT_DIR", parameter="preview_dir"
        )
    decisions, fingerprints = _decide(
        out_dir, settings, options, in_dir, sources, patterns, recursive, suffix, shard
    )
    tasks = [decision.task for decision in decisions]
    if preview_dir is not None:
        _check_previews(out_dir, preview_dir, tasks, options.map_path)
    if gpus is not None:  # GPUs by index: the torch engine on them
        route = choose_route(replace(settings, device="cuda"), pixels=0)
    else:
        sizes = [io.image_size(task.source) for task in tasks[:_SIZE_SAMPLE]]
        pixels = [width * height for width, height in filter(None, sizes)]
        typical = sum(pixels) // len(pixels) if pixels else 0
        route = choose_route(settings, pixels=typical, files=len(tasks))
    if route.notice is not None and on_notice is not None:
        on_notice(route.notice)
    devices = ["cpu"] if route.engine == "native" else spread_devices(route.device, gpus)
    workers = jobs if jobs is not None else max(usable_cpus(), len(devices) + 1)
    redo = frozenset(
        _as_found(decision.task.dest) for decision in decisions if decision.action == "redo"
    )
    redone = {dest for dest, _, _ in redo}
    made_with = {decision.task.dest: decision.settings for decision in decisions}
    manifest = ManifestWriter(out_dir, shard, fingerprints.table)

    def finished(outcome: Outcome) -> None:
        if outcome.status == "done":
            manifest.add(outcome.task.dest, made_with[outcome.task.dest])
        if on_outcome is not None:
            on_outcome(outcome)

    if on_plan is not None:
        on_plan(tasks)
    try:
        summary = run_batch(
            tasks,
            settings,
            options,
            devices=devices,
            jobs=workers,
            processes=processes,
            on_outcome=finished,
            cuda_graphs=cuda_graphs,
            route=route,
            redo=redo,
            previews=None if preview_dir is None else (out_dir, preview_dir),
        )
    except BaseException:
        with contextlib.suppress(AdaptiveBlurError):  # keep the records of what was done
            manifest.flush()
        raise
    manifest.flush()
    unrecorded = {d.task.dest for d in decisions if d.reason in ("no record", "exists")}
    summary.redone = sum(o.status == "done" and o.task.dest in redone for o in summary.outcomes)
    summary.unrecorded = sum(
        o.status == "skipped" and o.task.dest in unrecorded for o in summary.outcomes
    )
    if report is not None:
        io.write_text_atomically(report, json.dumps(summary.as_dict(), indent=2) + "\n")
    return summary


def plan_files(
    out_dir: str,
    settings: BlurSettings,
    options: FileOptions | None = None,
    *,
    in_dir: str | None = None,
    sources: Sequence[str] | None = None,
    patterns: Sequence[str] | None = None,
    recursive: bool = False,
    suffix: str = "",
    shard: tuple[int, int] | None = None,
) -> list[Decision]:
    """What :func:`blur_files` would do with each file, with the same arguments, and why;
    nothing is written (not even ``out_dir``) and no device is started.

    Returns:
        One :class:`~adaptiveblur.batch.manifest.Decision` per file, in path order; a file
        the run would read but that is not a regular file is ``"fail"``, its reason why
        (``"not a regular file"``).

    Raises:
        InvalidParameterError, InputImageError, OutputImageError: as :func:`blur_files`
        raises before any work.
    """
    from adaptiveblur import io
    from adaptiveblur.settings import FileOptions

    options = options or FileOptions()
    decisions, _ = _decide(
        out_dir, settings, options, in_dir, sources, patterns, recursive, suffix, shard
    )
    planned = []
    for decision in decisions:  # what the run would fail, unopened (a pipe would block)
        problem = None
        if decision.action in ("do", "redo"):
            problem = io.regular_file_problem(decision.task.source)
        planned.append(
            dataclasses.replace(decision, action="fail", reason=problem) if problem else decision
        )
    return planned


def _decide(
    out_dir: str,
    settings: BlurSettings,
    options: FileOptions,
    in_dir: str | None,
    sources: Sequence[str] | None,
    patterns: Sequence[str] | None,
    recursive: bool,
    suffix: str,
    shard: tuple[int, int] | None,
) -> tuple[list[Decision], Fingerprints]:
    """Check everything that can be checked before any work, plan the tasks of this shard
    and decide each one from its output and the manifests."""
    from adaptiveblur import io
    from adaptiveblur.batch import manifest, plan
    from adaptiveblur.errors import InvalidParameterError

    if (in_dir is None) == (sources is None):
        raise InvalidParameterError("expected either in_dir or sources, not both or neither")
    fmt = io.check_output_format("L", options.output_format) if options.output_format else None
    plan.check_output_folder(out_dir)
    if shard is not None:
        plan.check_shard(*shard)
    if in_dir is not None:
        relatives = plan.discover(in_dir, patterns, recursive, io.readable_extensions())
        sources = [plan.join(in_dir, relative) for relative in relatives]
    else:
        assert sources is not None
        sources = list(sources)
        relatives = plan.relative_names(sources)
    tasks = plan.plan(sources, relatives, out_dir, suffix=suffix, output_format=fmt)
    if shard is not None:
        tasks = [task for task in tasks if plan.in_shard(task.relative, *shard)]
    settings.check()
    options.check()
    fingerprints = manifest.Fingerprints(settings, options)
    decisions = manifest.decide(
        tasks, out_dir, fingerprints, overwrite=options.overwrite, map_path=options.map_path
    )
    return decisions, fingerprints


def _as_found(dest: str) -> tuple[str, int, int]:
    """``dest`` with its size and modification time now, so the run redoes only that file."""
    if remote.is_url(dest):  # a store's outputs are redone only with overwrite
        return dest, -1, -1
    try:
        status = os.stat(dest)
    except OSError:
        return dest, -1, -1
    return dest, status.st_size, status.st_mtime_ns


def spread_devices(device: str, gpus: Sequence[int] | None = None) -> list[str]:
    """The devices a batch spreads over: ``gpus`` when given, every visible GPU for
    ``cuda``/``auto`` on a GPU host, else the one device.

    Raises:
        DeviceUnavailableError: a GPU index that is not there.
    """
    import torch

    from adaptiveblur.devices import resolve_device

    if gpus is not None:
        return [str(resolve_device(f"cuda:{index}")) for index in gpus]
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return [str(resolved)]


def _check_previews(
    out_dir: str, preview_dir: str, tasks: Sequence[Task], map_path: str | None
) -> None:
    """Refuse previews that would replace an input, an output or the map, or each other.

    Raises:
        InvalidParameterError: naming the first such preview.
    """
    from adaptiveblur.batch.runner import preview_path
    from adaptiveblur.errors import InvalidParameterError

    if os.path.exists(preview_dir) and not os.path.isdir(preview_dir):
        raise InvalidParameterError(
            f"the preview folder {preview_dir!r} is a file", parameter="preview_dir"
        )
    taken = {os.path.abspath(path) for task in tasks for path in (task.source, task.dest)}
    if map_path is not None:
        taken.add(os.path.abspath(map_path))
    for task in tasks:
        path = os.path.abspath(preview_path(out_dir, preview_dir, task.dest))
        if path in taken:
            raise InvalidParameterError(
                f"the preview of {task.relative!r} would replace {path!r}; "
                "give the previews a folder of their own",
                parameter="preview_dir",
            )
        taken.add(path)
