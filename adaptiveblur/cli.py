"""The ``adaptiveblur`` command line: parse, call the pipeline, report.

The only module that prints or exits. Heavy modules (torch and everything built on it)
are imported inside the commands, so ``adaptiveblur --help`` answers at once.
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console

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
    pass

PROG = "adaptiveblur"
_stderr = Console(stderr=True, highlight=False, soft_wrap=True)

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


@app.command(epilog=EXAMPLES, no_args_is_help=True)
def run(
    source: str = typer.Argument(..., metavar="IN", help="Input image, or - for stdin."),
    dest: str = typer.Argument(
        ..., metavar="OUT", help="Output image, or - for stdout (needs --format)."
    ),
    max_sigma: float = typer.Option(
        ..., "--max-sigma", help="Sigma (pixels) where the intensity is 1."
    ),
    min_sigma: float = typer.Option(
        0.0, "--min-sigma", help="Sigma (pixels) where the intensity is 0."
    ),
    gamma: float = typer.Option(
        1.0, "--gamma", help="Curve exponent: sigma follows intensity**gamma."
    ),
    invert: bool = typer.Option(
        False, "--invert", help="Blur dark pixels most instead of bright ones."
    ),
    channel: str = typer.Option(
        "luminance",
        "--channel",
        help="Intensity: luminance (Rec. 709), mean, red, green, blue or alpha.",
    ),
    map_path: str | None = typer.Option(
        None, "--map", help="Take intensity from this image (a depth map or mask) instead."
    ),
    resize_map: bool = typer.Option(
        False, "--resize-map", help="Resize a --map of another size to fit."
    ),
    save_sigma: str | None = typer.Option(
        None,
        "--save-sigma",
        help="Also write the sigma map as a 16-bit gray image (white = max sigma).",
    ),
    truncate: float = typer.Option(3.0, "--truncate", help="Window radius in sigmas."),
    border: str = typer.Option(
        "reflect", "--border", help="Border mode: reflect, replicate or constant."
    ),
    linear: bool = typer.Option(
        False, "--linear", help="Blur in linear light (default: as stored, sRGB)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    max_memory: str | None = typer.Option(
        None,
        "--max-memory",
        help="Memory budget for the blur's temporaries, e.g. 512M or 2G (default 1G).",
    ),
    output_format: str | None = typer.Option(
        None,
        "--format",
        help="Output format (png, jpeg, tiff, webp, bmp); default from OUT's extension.",
    ),
    quality: int = typer.Option(95, "--quality", help="JPEG/WebP quality, 1-100."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow OUT to replace IN."),
    max_pixels: int | None = typer.Option(
        None, "--max-pixels", help="Refuse larger inputs (decompression-bomb guard); 0 = no limit."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Blur IN into OUT, each pixel with its own sigma."""
    from adaptiveblur import io
    from adaptiveblur.pipeline import BlurSettings, run_file

    settings = BlurSettings(
        max_sigma=max_sigma,
        min_sigma=min_sigma,
        gamma=gamma,
        invert=invert,
        channel=channel,
        truncate=truncate,
        border=border,
        linear=linear,
        device=device,
        max_memory=_parse_bytes(max_memory),
    )
    limit = io.DEFAULT_MAX_PIXELS if max_pixels is None else (max_pixels or None)
    with _progress(enabled=not quiet) as progress:
        run_file(
            source,
            dest,
            settings,
            map_path=map_path,
            resize_map=resize_map,
            save_sigma=save_sigma,
            output_format=output_format,
            quality=quality,
            overwrite=overwrite,
            max_pixels=limit,
            progress=progress,
        )


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
