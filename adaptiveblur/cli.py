"""The ``adaptiveblur`` command line: parse, call the pipeline, report.

The only module that prints or exits. Heavy modules (torch and everything built on it)
are imported inside the commands, so ``adaptiveblur --help`` answers at once.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from adaptiveblur import allocator
from adaptiveblur._version import __version__

try:  # typer >= 0.22 carries its own copy of click
    from typer import TyperException as _CommandLineError
except ImportError:  # older typer on top of click
    from click import ClickException as _CommandLineError  # type: ignore[no-redef]

from adaptiveblur.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    AdaptiveBlurError,
)

if TYPE_CHECKING:
    from adaptiveblur.batch import Task
    from adaptiveblur.pipeline import BlurSettings, Outcome

PROG = "adaptiveblur"
_stderr = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

EXAMPLES = """\b
Examples:
  adaptiveblur run photo.jpg soft.jpg --max-sigma 4
  adaptiveblur run photo.jpg out.png --max-sigma 6 --invert --gamma 2
  adaptiveblur run photo.jpg out.png --map depth.png --max-sigma 8 --save-sigma sigma.png
  cat in.png | adaptiveblur run - - --max-sigma 3 --format png > out.png

\b
Exit codes: 0 ok, 2 usage or bad option value, 3 input error, 4 output error,
5 device unavailable, 70 internal error, 130 interrupted.
"""

app = typer.Typer(
    name=PROG,
    help="Blur each pixel of an image with its own Gaussian, its sigma taken from the pixel's "
    "intensity or from a separate map. Exact, tiled, on CPU or CUDA.",
    epilog=EXAMPLES,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version_callback,
        is_eager=True,
        help="Print the version and exit.",
    ),
    show_traceback: bool = typer.Option(
        False, "--traceback", help="Show the full traceback on errors."
    ),
) -> None:
    """Per-pixel adaptive Gaussian blur."""


# Blur options shared by ``run`` and ``batch`` (declared once, used by both).
MAX_SIGMA = typer.Option(..., "--max-sigma", help="Sigma (pixels) where the intensity is 1.")
MIN_SIGMA = typer.Option(0.0, "--min-sigma", help="Sigma (pixels) where the intensity is 0.")
GAMMA = typer.Option(1.0, "--gamma", help="Curve exponent: sigma follows intensity**gamma.")
INVERT = typer.Option(False, "--invert", help="Blur dark pixels most instead of bright ones.")
CHANNEL = typer.Option(
    "luminance",
    "--channel",
    help="Intensity: luminance (Rec. 709), mean, red, green, blue or alpha.",
)
MAP = typer.Option(
    None, "--map", help="Take intensity from this image (a depth map or mask) instead."
)
RESIZE_MAP = typer.Option(False, "--resize-map", help="Resize a --map of another size to fit.")
TRUNCATE = typer.Option(3.0, "--truncate", help="Window radius in sigmas.")
BORDER = typer.Option("reflect", "--border", help="Border mode: reflect, replicate or constant.")
LINEAR = typer.Option(False, "--linear", help="Blur in linear light (default: as stored, sRGB).")
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.")
METHOD = typer.Option(
    "exact", "--method", help="exact, fast (approximate, <= 1 LSB at 8 bits) or auto."
)
BACKEND = typer.Option(None, "--backend", help="Force an implementation (see README).")
MAX_MEMORY = typer.Option(
    None, "--max-memory", help="Memory budget for the blur's temporaries, e.g. 512M (default 1G)."
)
FORMAT = typer.Option(
    None, "--format", help="Output format: png, jpeg, tiff, webp, bmp (default: from the name)."
)
QUALITY = typer.Option(95, "--quality", help="JPEG/WebP quality, 1-100.")
MAX_PIXELS = typer.Option(
    None, "--max-pixels", help="Refuse larger inputs (decompression-bomb guard); 0 = no limit."
)
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar.")


@app.command(epilog=EXAMPLES, no_args_is_help=True)
def run(
    paths: list[str] = typer.Argument(
        ..., metavar="IN OUT | IN... -o DIR", help="Input and output images (- for stdin/stdout)."
    ),
    output_dir: str | None = typer.Option(
        None, "--output-dir", "-o", help="Blur every IN into this folder (like batch)."
    ),
    max_sigma: float = MAX_SIGMA,
    min_sigma: float = MIN_SIGMA,
    gamma: float = GAMMA,
    invert: bool = INVERT,
    channel: str = CHANNEL,
    map_path: str | None = MAP,
    resize_map: bool = RESIZE_MAP,
    save_sigma: str | None = typer.Option(
        None,
        "--save-sigma",
        help="Also write the sigma map as a 16-bit gray image (white = max sigma).",
    ),
    truncate: float = TRUNCATE,
    border: str = BORDER,
    linear: bool = LINEAR,
    device: str = DEVICE,
    method: str = METHOD,
    backend: str | None = BACKEND,
    max_memory: str | None = MAX_MEMORY,
    output_format: str | None = FORMAT,
    quality: int = QUALITY,
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Allow OUT to replace IN (with -o: redo existing outputs)."
    ),
    max_pixels: int | None = MAX_PIXELS,
    quiet: bool = QUIET,
) -> None:
    """Blur IN into OUT, each pixel with its own sigma."""
    from adaptiveblur.pipeline import run_file

    settings = _blur_settings(locals())
    _tune_allocator(settings)
    if output_dir is not None:
        if save_sigma is not None:
            raise typer.BadParameter("--save-sigma takes one input; use run IN OUT")
        _run_batch(
            sources=paths,
            relatives=None,
            out_dir=output_dir,
            settings=settings,
            map_path=map_path,
            resize_map=resize_map,
            output_format=output_format,
            quality=quality,
            overwrite=overwrite,
            max_pixels=max_pixels,
            quiet=quiet,
        )
        return
    if len(paths) != 2:
        raise typer.BadParameter(
            f"expected IN OUT (or several IN with -o DIR), got {len(paths)} path(s)",
            param_hint="paths",
        )
    with _progress(enabled=not quiet) as progress:
        run_file(
            paths[0],
            paths[1],
            settings,
            map_path=map_path,
            resize_map=resize_map,
            save_sigma=save_sigma,
            output_format=output_format,
            quality=quality,
            overwrite=overwrite,
            max_pixels=_pixel_limit(max_pixels),
            progress=progress,
        )


BATCH_EPILOG = """\b
Examples:
  adaptiveblur batch photos/ soft/ --max-sigma 4 --recursive
  adaptiveblur batch photos/ soft/ --max-sigma 4 --pattern '*.jpg' --format webp --suffix -soft
  find photos -name '*.png' -print0 | adaptiveblur batch --from-list - soft/ --max-sigma 3
  adaptiveblur batch photos/ soft/ --max-sigma 4 --shard 2/8     # this machine's eighth

\b
Existing outputs are skipped (a re-run resumes); --overwrite redoes them.
Exit codes: 0 all done, 6 some files failed (listed), and those of run.
"""


@app.command(epilog=BATCH_EPILOG, no_args_is_help=True)
def batch(
    paths: list[str] = typer.Argument(
        ...,
        metavar="IN_DIR OUT_DIR | --from-list FILE OUT_DIR",
        help="Input folder and output folder.",
    ),
    from_list: str | None = typer.Option(
        None,
        "--from-list",
        help="Read input paths from FILE (- for stdin), one per line or NUL-separated.",
    ),
    recursive: bool = typer.Option(
        False, "--recursive", "-r", help="Also blur images in subfolders."
    ),
    patterns: list[str] | None = typer.Option(
        None,
        "--pattern",
        help="Only files matching this glob (repeatable); default: every image type.",
    ),
    suffix: str = typer.Option("", "--suffix", help="Add this before each output's extension."),
    shard: str | None = typer.Option(
        None, "--shard", help="K/N: do only this machine's share (1 <= K <= N) of the files."
    ),
    jobs: int | None = typer.Option(
        None,
        "--jobs",
        "-j",
        help="Files in flight at once (decode/encode overlap the blur); default: CPUs.",
    ),
    processes: int = typer.Option(
        1,
        "--processes",
        help="Share the jobs out over this many worker processes (each with its own "
        "Python lock and start-up; for hosts where one process's threads cannot keep up).",
    ),
    devices: str | None = typer.Option(
        None,
        "--devices",
        help="GPU indices to spread files over, e.g. 0,1 (default with --device cuda: all).",
    ),
    report: str | None = typer.Option(
        None, "--report", help="Write a JSON report of every file here."
    ),
    max_sigma: float = MAX_SIGMA,
    min_sigma: float = MIN_SIGMA,
    gamma: float = GAMMA,
    invert: bool = INVERT,
    channel: str = CHANNEL,
    map_path: str | None = MAP,
    resize_map: bool = RESIZE_MAP,
    truncate: float = TRUNCATE,
    border: str = BORDER,
    linear: bool = LINEAR,
    device: str = DEVICE,
    method: str = METHOD,
    backend: str | None = BACKEND,
    max_memory: str | None = MAX_MEMORY,
    output_format: str | None = FORMAT,
    quality: int = QUALITY,
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo outputs that already exist."),
    max_pixels: int | None = MAX_PIXELS,
    quiet: bool = QUIET,
) -> None:
    """Blur every image in IN_DIR into OUT_DIR, mirroring its folders."""
    from adaptiveblur import batch as planning
    from adaptiveblur import io

    expected = 1 if from_list is not None else 2
    if len(paths) != expected:
        usage = "--from-list FILE OUT_DIR" if from_list is not None else "IN_DIR OUT_DIR"
        raise typer.BadParameter(f"expected {usage}, got {len(paths)} path(s)", param_hint="paths")
    if from_list is not None:
        sources = planning.read_list(_read_list_bytes(from_list))
        relatives = None
    else:
        relatives = planning.discover(paths[0], patterns, recursive, io.READABLE_EXTENSIONS)
        sources = [os.path.join(paths[0], relative) for relative in relatives]
    settings = _blur_settings(locals())
    _tune_allocator(settings)
    _run_batch(
        sources=sources,
        relatives=relatives,
        out_dir=paths[-1],
        settings=settings,
        map_path=map_path,
        resize_map=resize_map,
        output_format=output_format,
        quality=quality,
        overwrite=overwrite,
        max_pixels=max_pixels,
        quiet=quiet,
        suffix=suffix,
        shard=shard,
        jobs=jobs,
        processes=processes,
        gpu_indices=devices,
        report=report,
    )


def _blur_settings(options: dict[str, object]) -> BlurSettings:
    """The :class:`BlurSettings` named by a command's options (its fields, by name)."""
    from dataclasses import fields

    from adaptiveblur.pipeline import BlurSettings

    values = {f.name: options[f.name] for f in fields(BlurSettings)}
    values["max_memory"] = _parse_bytes(options["max_memory"])  # type: ignore[arg-type]
    return BlurSettings(**values)  # type: ignore[arg-type]


def _tune_allocator(settings: BlurSettings) -> None:
    """With the fast method, keep freed memory for reuse (:mod:`adaptiveblur.allocator`).

    Its FFT temporaries are large and short-lived; the exact methods gain nothing from it
    and would hold on to more memory.
    """
    if settings.method == "fast":
        allocator.keep_freed_memory()


def _run_batch(
    *,
    sources: list[str],
    relatives: list[str] | None,
    out_dir: str,
    settings: BlurSettings,
    map_path: str | None,
    resize_map: bool,
    output_format: str | None,
    quality: int,
    overwrite: bool,
    max_pixels: int | None,
    quiet: bool,
    suffix: str = "",
    shard: str | None = None,
    jobs: int | None = None,
    processes: int = 1,
    gpu_indices: str | None = None,
    report: str | None = None,
) -> None:
    """Plan, shard and run a batch; report failures, a summary, and the exit code."""
    from adaptiveblur import batch as planning
    from adaptiveblur import io
    from adaptiveblur.errors import EXIT_PARTIAL
    from adaptiveblur.pipeline import check_output_folder, check_writable, run_batch

    fmt = io.check_output_format("L", output_format) if output_format is not None else None
    check_output_folder(out_dir)
    check_writable(report)
    relatives = planning.relative_names(sources) if relatives is None else relatives
    tasks = planning.plan(sources, relatives, out_dir, suffix=suffix, output_format=fmt)
    if shard is not None:
        index, count = planning.parse_shard(shard)
        tasks = [task for task in tasks if planning.in_shard(task.relative, index, count)]
    devices = _batch_devices(settings.device, gpu_indices)
    workers = jobs if jobs is not None else max(os.cpu_count() or 2, len(devices) + 1)
    with _batch_progress(tasks, enabled=not quiet) as on_outcome:
        summary = run_batch(
            tasks,
            settings,
            devices=devices,
            jobs=workers,
            processes=processes,
            map_path=map_path,
            resize_map=resize_map,
            output_format=fmt,
            quality=quality,
            overwrite=overwrite,
            max_pixels=_pixel_limit(max_pixels),
            on_outcome=on_outcome,
        )
    failed = summary.count("failed")
    if not quiet:
        _stderr.print(
            f"{summary.count('done')} done, {summary.count('skipped')} skipped, {failed} failed "
            f"in {summary.seconds:.1f} s ({summary.images_per_second:.2f} images/s)",
            markup=False,
        )
    if report is not None:
        io.write_text_atomically(report, json.dumps(summary.as_dict(), indent=2) + "\n")
    if failed:
        raise typer.Exit(EXIT_PARTIAL)


def _batch_devices(device: str, gpu_indices: str | None) -> list[str]:
    """The devices a batch spreads over: every visible GPU for ``cuda``/``auto`` (or those listed)."""
    from adaptiveblur.devices import resolve_device

    if gpu_indices is not None:
        try:
            indices = [int(part) for part in gpu_indices.split(",") if part.strip()]
        except ValueError:
            raise typer.BadParameter(
                f"expected GPU indices like 0,1, got {gpu_indices!r}"
            ) from None
        return [str(resolve_device(f"cuda:{index}")) for index in indices]
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        import torch

        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return [str(resolved)]


def _read_list_bytes(source: str) -> bytes:
    from adaptiveblur.errors import InputImageError

    if source == "-":
        return sys.stdin.buffer.read()
    try:
        with open(source, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise InputImageError(
            f"cannot read the list {source!r}: {error.strerror or error}"
        ) from error


def _pixel_limit(max_pixels: int | None) -> int | None:
    from adaptiveblur import io

    return io.DEFAULT_MAX_PIXELS if max_pixels is None else (max_pixels or None)


@contextmanager
def _batch_progress(tasks: list[Task], enabled: bool) -> Iterator[Callable[[Outcome], None]]:
    """Report each failure on stderr as it happens, and draw an overall bar when on a terminal."""
    total_bytes = sum(_size_of(task.source) for task in tasks)
    bar_wanted = enabled and sys.stderr.isatty() and bool(tasks)
    if not bar_wanted:
        yield _report_failure
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.fields[files]}/{task.fields[total_files]} files"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=_stderr,
        transient=True,
    ) as bar:
        task_id = bar.add_task("batch", total=total_bytes or None, files=0, total_files=len(tasks))
        counted = 0

        def update(outcome: Outcome) -> None:
            nonlocal counted
            counted += 1
            bar.update(task_id, advance=outcome.size, files=counted)
            _report_failure(outcome)

        yield update


def _report_failure(outcome: Outcome) -> None:
    if outcome.status != "failed":
        return
    reason = outcome.reason or "unknown error"
    where = "" if outcome.task.source in reason else f"{outcome.task.source}: "
    _stderr.print(f"{PROG}: failed: {where}{reason}", markup=False)


def _size_of(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback drawing a bar on stderr, or ``None`` when stderr is not a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("blurring"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=_stderr,
        transient=True,
    ) as bar:
        task = bar.add_task("blur", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def _parse_bytes(text: str | None) -> int | None:
    if text is None:
        return None
    from adaptiveblur.errors import InvalidParameterError

    match = _SIZE.match(text)
    if not match:
        raise InvalidParameterError(
            f"expected a size like 512M or 2G for --max-memory, got {text!r}"
        )
    number, unit = float(match.group(1)), match.group(2).lower()
    value = int(number * 1024 ** "kmgt".find(unit) * 1024) if unit else int(number)
    if value <= 0:
        raise InvalidParameterError(f"expected a positive --max-memory, got {text!r}")
    return value


def _error(message: str) -> None:
    _stderr.print(f"{PROG}: error: {message}", markup=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the app and map every outcome to an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in args
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name=PROG, standalone_mode=False)
        code = result if isinstance(result, int) else 0
        if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into this exit code itself
            _error("interrupted")
        return code
    except typer.Exit as done:
        return done.exit_code
    except _CommandLineError as error:
        context = getattr(error, "ctx", None)
        if type(error).__name__ == "NoArgsIsHelpError" and context is not None:
            _stderr.print(context.get_help(), markup=False)  # a bare command: show its help
            return EXIT_USAGE
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        _error(f"{error.format_message()}{hint}")
        return getattr(error, "exit_code", EXIT_USAGE)
    except (KeyboardInterrupt, typer.Abort):
        _error("interrupted")
        return EXIT_INTERRUPTED
    except AdaptiveBlurError as error:
        if show_traceback:
            traceback.print_exc()
        _error(str(error))
        return error.exit_code
    except Exception as error:  # noqa: BLE001 - the one place that turns bugs into a message
        if show_traceback:
            traceback.print_exc()
        _error(
            f"internal error: {type(error).__name__}: {error} (rerun with --traceback for details)"
        )
        return EXIT_INTERNAL


def entry() -> None:
    """Console-script entry: exit with :func:`main`'s code."""
    sys.exit(main())
