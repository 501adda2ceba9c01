"""The ``adaptiveblur`` command line: parse the options, make one library call, map errors to exit codes.

The only place that prints or exits. Heavy modules (torch and everything built on it)
are imported inside the commands, so ``adaptiveblur --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import textwrap
import traceback
from collections.abc import Sequence

import typer

from adaptiveblur._version import __version__
from adaptiveblur.cli import allocator
from adaptiveblur.cli.options import CommonOptions, with_common_options, with_flag_hint
from adaptiveblur.cli.progress import PROG, BatchProgress, error, notice, say, tile_progress
from adaptiveblur.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_CODE_MEANINGS,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_PARTIAL,
    EXIT_USAGE,
    AdaptiveBlurError,
    os_reason,
)
from adaptiveblur.io.remote import is_url

try:  # typer >= 0.22 carries its own copy of click
    from typer import TyperException as _CommandLineError
except ImportError:  # older typer on top of click
    from click import ClickException as _CommandLineError  # type: ignore[no-redef, assignment, unused-ignore]


def _exit_codes() -> str:
    """The exit codes and their meanings, as one help paragraph."""
    listed = ", ".join(f"{code} {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items())
    return "\b\n" + "\n".join(textwrap.wrap(f"Exit codes: {listed}.", 78))


EXAMPLES = f"""\b
Examples:
  adaptiveblur run photo.jpg soft.jpg --max-sigma 4
  adaptiveblur run photo.jpg out.png --max-sigma 6 --invert --gamma 2
  adaptiveblur run photo.jpg out.png --map depth.png --max-sigma 8 --save-sigma sigma.png
  adaptiveblur run photo.jpg out.jpg --map depth.png --focus auto --focus-range 0.1 \\
      --max-sigma 8 --preview preview.jpg
  cat in.png | adaptiveblur run - - --max-sigma 3 --format png > out.png

{_exit_codes()}
"""

BATCH_EPILOG = f"""\b
Examples:
  adaptiveblur batch photos/ soft/ --max-sigma 4 --recursive
  adaptiveblur batch photos/ soft/ --max-sigma 4 --pattern '*.jpg' --format webp --suffix -soft
  find photos -name '*.png' -print0 | adaptiveblur batch --from-list - soft/ --max-sigma 3
  adaptiveblur batch photos/ soft/ --max-sigma 4 --shard 2/8     # this machine's eighth

\b
Existing outputs are skipped (a re-run resumes), except those a manifest in
OUT_DIR records as made with other settings: those are redone. Outputs with
no record (an older version or another program made them) are kept;
--overwrite redoes every output. --dry-run lists what would happen.

{_exit_codes()}
"""

app = typer.Typer(
    name=PROG,
    help="Blur each pixel of an image with its own Gaussian, its sigma taken from the pixel's "
    "intensity or from a separate map. Exact, tiled, on CPU or CUDA.",
    epilog=EXAMPLES,
    add_completion=True,
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
        "-V",
        callback=_version_callback,
        is_eager=True,
        help="Print the version and exit.",
    ),
    show_traceback: bool = typer.Option(
        False, "--traceback", help="Show the full traceback on errors."
    ),
) -> None:
    """Per-pixel adaptive Gaussian blur."""


@app.command(epilog=EXAMPLES, no_args_is_help=True)
@with_common_options
def run(
    paths: list[str] = typer.Argument(
        ...,
        metavar="IN OUT | IN... -o DIR",
        help="Input and output images (- for stdin/stdout; or URLs such as s3://bucket/a.jpg).",
    ),
    output_dir: str | None = typer.Option(
        None, "--output-dir", "-o", help="Blur every IN into this folder (like batch)."
    ),
    save_sigma: str | None = typer.Option(
        None,
        "--save-sigma",
        help="Also write the sigma map as a 16-bit gray image (white = max sigma).",
    ),
    preview: str | None = typer.Option(
        None,
        "--preview",
        help="Also write a picture of input, sigma map (with a scale in pixels) and output "
        "side by side.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Allow OUT to replace IN (with -o: redo existing outputs)."
    ),
    *,
    common: CommonOptions,
) -> None:
    """Blur IN into OUT, each pixel with its own sigma."""
    from adaptiveblur.run import run_file

    settings = common.blur_settings()
    _tune_allocator(settings.method)
    if output_dir is not None:
        for flag, given in (("--save-sigma", save_sigma), ("--preview", preview)):
            if given is not None:
                raise typer.BadParameter(f"{flag} takes one input; use run IN OUT")
        _blur_files(common, overwrite, output_dir, sources=paths)
        return
    if len(paths) != 2:
        raise typer.BadParameter(
            f"expected IN OUT (or several IN with -o DIR), got {len(paths)} path(s)",
            param_hint="paths",
        )
    with tile_progress(enabled=not common.quiet) as progress:
        run_file(
            paths[0],
            paths[1],
            settings,
            common.file_options(overwrite),
            save_sigma=save_sigma,
            preview=preview,
            progress=progress,
            on_notice=notice,
        )


@app.command(epilog=BATCH_EPILOG, no_args_is_help=True)
@with_common_options
def batch(
    paths: list[str] = typer.Argument(
        ...,
        metavar="IN_DIR OUT_DIR | --from-list FILE OUT_DIR",
        help="Input folder and output folder (or URLs such as s3://bucket/photos/).",
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
        help="Files in flight at once (decode/encode overlap the blur); default: the CPUs "
        "this process may use (affinity, cgroup quota, SLURM_CPUS_PER_TASK).",
        envvar="ADAPTIVEBLUR_JOBS",
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
        None, "--report", help="Write a JSON report of every file here (- for stdout)."
    ),
    preview_dir: str | None = typer.Option(
        None,
        "--preview-dir",
        help="Also write a preview (input, sigma map, output) of each file blurred, as PNG, "
        "at its output's path with .png added (a.jpg.png), mirroring OUT_DIR's folders.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo outputs that already exist."),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="List what would be done, redone and skipped (and why), one line per file; "
        "write nothing.",
    ),
    *,
    common: CommonOptions,
) -> None:
    """Blur every image in IN_DIR into OUT_DIR, mirroring its folders."""
    from adaptiveblur.batch.plan import parse_shard, read_list_file

    expected = 1 if from_list is not None else 2
    if len(paths) != expected:
        usage = "--from-list FILE OUT_DIR" if from_list is not None else "IN_DIR OUT_DIR"
        raise typer.BadParameter(f"expected {usage}, got {len(paths)} path(s)", param_hint="paths")
    files = {  # which files, and where they go: the same for a dry run and a run
        "in_dir": None if from_list is not None else paths[0],
        "sources": read_list_file(from_list) if from_list is not None else None,
        "patterns": patterns,
        "recursive": recursive,
        "suffix": suffix,
        "shard": parse_shard(shard) if shard is not None else None,
    }
    if dry_run:
        _show_plan(common, overwrite, paths[-1], **files)
        return
    _tune_allocator(common.method)
    _blur_files(
        common,
        overwrite,
        paths[-1],
        **files,
        jobs=jobs,
        processes=processes,
        gpus=_gpu_indices(devices),
        report=report,
        preview_dir=preview_dir,
    )


def _blur_files(common: CommonOptions, overwrite: bool, out_dir: str, **batch: object) -> None:
    """Run :func:`adaptiveblur.batch.blur_files`; report failures, a summary and the exit code."""
    from adaptiveblur.batch import blur_files

    progress = BatchProgress(enabled=not common.quiet)
    try:
        summary = blur_files(
            out_dir,
            common.blur_settings(),
            common.file_options(overwrite),
            on_plan=progress.planned,
            on_outcome=progress.finished,
            on_notice=notice,
            **batch,  # type: ignore[arg-type]
        )
    finally:
        progress.close()
    if summary.redone:
        notice(f"redid {_outputs(summary.redone)} made with other settings")
    if summary.unrecorded:
        one = summary.unrecorded == 1
        why = (
            "a URL OUT_DIR keeps no manifest"
            if is_url(out_dir)
            else "made by an older version or another program, or changed since"
        )
        notice(
            f"kept {_outputs(summary.unrecorded)} with no record of {'its' if one else 'their'} "
            f"settings ({why}); --overwrite redoes {'it' if one else 'them'}"
        )
    failed = summary.count("failed")
    if not common.quiet:
        say(
            f"{summary.count('done')} done, {summary.count('skipped')} skipped, {failed} failed "
            f"in {summary.seconds:.1f} s ({summary.images_per_second:.2f} images/s)"
        )
    if failed:
        raise typer.Exit(EXIT_PARTIAL)


def _show_plan(common: CommonOptions, overwrite: bool, out_dir: str, **batch: object) -> None:
    """``--dry-run``: print what :func:`adaptiveblur.batch.blur_files` would do (see
    :mod:`adaptiveblur.cli.dry_run`); nothing is written."""
    from adaptiveblur.batch import plan_files
    from adaptiveblur.cli.dry_run import show_plan

    decisions = plan_files(
        out_dir,
        common.blur_settings(),
        common.file_options(overwrite),
        **batch,  # type: ignore[arg-type]
    )
    show_plan(decisions)


def _outputs(count: int) -> str:
    return f"{count} existing output{'' if count == 1 else 's'}"


def _gpu_indices(text: str | None) -> list[int] | None:
    """``"0,1"`` to ``[0, 1]``."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected GPU indices like 0,1, got {text!r}") from None


def _tune_allocator(method: str) -> None:
    """With the fast method, keep freed memory for reuse (:mod:`adaptiveblur.cli.allocator`).

    Its FFT temporaries are large and short-lived; the exact methods gain nothing from it
    and would hold on to more memory.
    """
    if method == "fast":
        allocator.keep_freed_memory()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the app and map every outcome to an exit code.

    Standard output is flushed before the code is returned, so that data it did not take
    is an output error, not a silent loss at interpreter exit.
    """
    return _flush_stdout(_run_app(argv))


def _run_app(argv: Sequence[str] | None) -> int:
    """Run the app; every outcome becomes an exit code, every failure one line on stderr."""
    args = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in args
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name=PROG, standalone_mode=False)
        code = result if isinstance(result, int) else 0
        if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into this exit code itself
            error("interrupted")
        return code
    except typer.Exit as done:
        return done.exit_code
    except _CommandLineError as failure:
        context = getattr(failure, "ctx", None)
        if type(failure).__name__ == "NoArgsIsHelpError" and context is not None:
            say(context.get_help())  # a bare command: show its help
            return EXIT_USAGE
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        error(f"{failure.format_message()}{hint}")
        return getattr(failure, "exit_code", EXIT_USAGE)
    except (KeyboardInterrupt, typer.Abort):
        error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # BrokenPipeOutputError too: the reader wants no more, say nothing
        # typer turns an OSError whose errno is EPIPE into exit 1 before it gets here; the
        # library's BrokenPipeOutputError carries no errno, so it does get here.
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except AdaptiveBlurError as failure:
        if show_traceback:
            traceback.print_exc()
        error(with_flag_hint(str(failure), failure.parameter))
        return failure.exit_code
    except Exception as failure:  # noqa: BLE001 - the one place that turns bugs into a message
        if isinstance(failure, OSError) and failure.errno in _WRITE_FAILURES:
            # What the command line prints itself (help, version) did not reach stdout; the
            # library's own writes raise OutputImageError instead.
            _discard_stdout()
            return _stdout_failed(failure)
        if show_traceback:
            traceback.print_exc()
        error(
            f"internal error: {type(failure).__name__}: {failure} "
            "(rerun with --traceback for details)"
        )
        return EXIT_INTERNAL


# errno values of a write that did not reach its file or device.
_WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT})


def _flush_stdout(code: int) -> int:
    """Flush standard output; a failure turns a success into an output error (or a broken pipe).

    After a failure, what is still buffered goes to the null device, so the interpreter's
    own flush at exit neither raises nor prints "Exception ignored".
    """
    failure = _stdout_failure()
    if failure is None:
        return code
    _discard_stdout()
    if code != EXIT_OK:  # already reported (a write to stdout that failed, most likely)
        return code
    if isinstance(failure, BrokenPipeError):
        return EXIT_BROKEN_PIPE
    return _stdout_failed(failure)


def _stdout_failed(failure: OSError) -> int:
    """Report text that did not reach standard output (an output error)."""
    from adaptiveblur.io.atomic import STDOUT_NAME

    error(f"cannot write to {STDOUT_NAME}: {os_reason(failure)}")
    return EXIT_OUTPUT


def _stdout_failure() -> OSError | None:
    """The error that flushing standard output raises now, if any."""
    if sys.stdout is None:
        return None
    try:
        sys.stdout.flush()
    except OSError as failure:
        return failure
    return None


def _discard_stdout() -> None:
    """Point standard output's descriptor at the null device and drop what is buffered."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests capture it)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()


def entry() -> None:
    """Console-script entry: exit with :func:`main`'s code."""
    sys.exit(main())
