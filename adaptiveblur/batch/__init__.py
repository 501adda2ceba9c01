"""Many files: :func:`blur_files` plans, shards, spreads over devices, runs and reports.

``plan`` decides which files and where their results go (pure paths), ``runner`` takes
each through :class:`adaptiveblur.run.FileBlur`, ``workers`` runs tasks in threads or
worker processes, ``graphs`` replays repeated shapes from recorded CUDA graphs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from adaptiveblur.batch.plan import Task

if TYPE_CHECKING:
    from adaptiveblur.batch.runner import BatchSummary, Outcome
    from adaptiveblur.settings import BlurSettings, FileOptions

__all__ = ["Task", "blur_files"]

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
    on_plan: Callable[[list[Task]], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
    cuda_graphs: bool = True,
) -> BatchSummary:
    """Blur every image of ``in_dir`` (or the files ``sources``) into ``out_dir``, mirroring folders.

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
        jobs: files in flight at once (default: the CPU count, at least one more than the
            devices). processes: worker processes to share them out over.
        gpus: CUDA device indices to spread files over; default: every visible GPU when
            ``settings.device`` is ``cuda`` or an ``auto`` that finds one, else the device.
        report: also write a JSON report of every file here (atomically).
        on_plan: called once with the tasks, before any is run (for a progress bar).
        on_outcome: called with each file's :class:`Outcome`, in completion order.
        on_notice: called once with the route's notice (a slower fallback), if any.
        cuda_graphs: replay repeated image shapes from recorded CUDA graphs.

    Returns:
        The :class:`BatchSummary`; failed files are in it, not raised.

    Raises:
        InvalidParameterError: bad settings, both or neither of ``in_dir`` and ``sources``,
            a bad shard, or two inputs that would write one output.
        InputImageError: ``in_dir`` cannot be read, or the map file is bad.
        OutputImageError: ``out_dir`` is a file, or ``report`` cannot be written.
        DeviceUnavailableError: a GPU was asked for and is not there.
    """
    from adaptiveblur import io
    from adaptiveblur.batch import plan
    from adaptiveblur.batch.runner import run_batch
    from adaptiveblur.engine import choose_route
    from adaptiveblur.errors import InvalidParameterError
    from adaptiveblur.run import check_writable
    from adaptiveblur.settings import FileOptions

    options = options or FileOptions()
    if (in_dir is None) == (sources is None):
        raise InvalidParameterError("expected either in_dir or sources, not both or neither")
    fmt = io.check_output_format("L", options.output_format) if options.output_format else None
    plan.check_output_folder(out_dir)
    check_writable(report)
    if shard is not None:
        plan.check_shard(*shard)
    if in_dir is not None:
        relatives = plan.discover(in_dir, patterns, recursive, io.readable_extensions())
        sources = [os.path.join(in_dir, relative) for relative in relatives]
    else:
        assert sources is not None
        sources = list(sources)
        relatives = plan.relative_names(sources)
    tasks = plan.plan(sources, relatives, out_dir, suffix=suffix, output_format=fmt)
    if shard is not None:
        tasks = [task for task in tasks if plan.in_shard(task.relative, *shard)]
    settings.check()
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
    workers = jobs if jobs is not None else max(os.cpu_count() or 2, len(devices) + 1)
    if on_plan is not None:
        on_plan(tasks)
    summary = run_batch(
        tasks,
        settings,
        options,
        devices=devices,
        jobs=workers,
        processes=processes,
        on_outcome=on_outcome,
        cuda_graphs=cuda_graphs,
        route=route,
    )
    if report is not None:
        io.write_text_atomically(report, json.dumps(summary.as_dict(), indent=2) + "\n")
    return summary


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
