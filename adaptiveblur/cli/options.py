"""The options ``run`` and ``batch`` share, declared once, and what they turn into.

:func:`with_common_options` adds them to a command's signature (typer reads it) and
hands them to the command as one :class:`CommonOptions`.
"""

from __future__ import annotations

import enum
import functools
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import typer

from adaptiveblur.borders import BORDER_MODES, DEFAULT_BORDER
from adaptiveblur.errors import InvalidParameterError
from adaptiveblur.io.formats import output_format_names
from adaptiveblur.ops.registry import BACKEND_NAMES, METHODS
from adaptiveblur.sigma import CHANNELS

if TYPE_CHECKING:
    from adaptiveblur.settings import BlurSettings, FileOptions


@dataclass(frozen=True)
class CommonOptions:
    """The values of the shared options, as typed on the command line."""

    max_sigma: float
    min_sigma: float
    gamma: float
    invert: bool
    channel: str
    map_path: str | None
    resize_map: bool
    truncate: float
    border: str
    linear: bool
    device: str
    method: str
    backend: str | None
    max_memory: str | None
    output_format: str | None
    quality: int
    max_pixels: int | None
    quiet: bool
    focus: str | None
    focus_at: str | None
    focus_range: float
    near_sigma: float | None
    far_sigma: float | None
    feather: float

    def blur_settings(self) -> BlurSettings:
        """The :class:`adaptiveblur.settings.BlurSettings` these options name."""
        from adaptiveblur.settings import BlurSettings

        values = asdict(self)
        named = {field.name: values[field.name] for field in fields(BlurSettings)}
        named["max_memory"] = parse_bytes(self.max_memory)
        named["focus"] = parse_focus(self.focus)
        return BlurSettings(**named)

    def file_options(self, overwrite: bool) -> FileOptions:
        """The :class:`adaptiveblur.settings.FileOptions` these options name."""
        from adaptiveblur import io
        from adaptiveblur.settings import FileOptions

        limit = io.DEFAULT_MAX_PIXELS if self.max_pixels is None else (self.max_pixels or None)
        values = asdict(self) | {"overwrite": overwrite, "max_pixels": limit}
        return FileOptions(**{field.name: values[field.name] for field in fields(FileOptions)})


def _option(
    name: str, annotation: Any, default: Any, *flags: str, help: str, envvar: str | None = None
) -> inspect.Parameter:
    """A keyword-only typer option; ``envvar`` names an environment variable that sets its
    default (a flag on the command line wins; ``--help`` shows the variable)."""
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(default, *flags, help=help, envvar=envvar, case_sensitive=False),
        annotation=annotation,
    )


def _choices(name: str, values: Iterable[str]) -> type[enum.Enum]:
    """An enum of fixed option values, so ``--help`` lists them and completion offers them."""
    return enum.Enum(name, {value: value for value in values}, type=str)  # type: ignore[return-value]


_BORDERS = _choices("Border", [DEFAULT_BORDER, *sorted(BORDER_MODES - {DEFAULT_BORDER})])
_CHANNELS = _choices("Channel", CHANNELS)
_METHODS = _choices("Method", ["auto", *(m for m in METHODS if m != "auto")])
_BACKENDS = _choices("Backend", ["auto", *BACKEND_NAMES])
_FORMATS = _choices("Format", output_format_names())


_COMMON = [
    _option(
        "max_sigma", float, ..., "--max-sigma", help="Sigma (pixels) where the intensity is 1."
    ),
    _option(
        "min_sigma", float, 0.0, "--min-sigma", help="Sigma (pixels) where the intensity is 0."
    ),
    _option("gamma", float, 1.0, "--gamma", help="Curve exponent: sigma follows intensity**gamma."),
    _option(
        "invert", bool, False, "--invert", help="Blur dark pixels most instead of bright ones."
    ),
    _option(
        "channel",
        _CHANNELS,
        "luminance",
        "--channel",
        help="Intensity: luminance (Rec. 709), mean, red, green, blue or alpha.",
    ),
    _option(
        "map_path",
        str | None,
        None,
        "--map",
        help="Take intensity from this image (a depth map or mask) instead.",
    ),
    _option(
        "resize_map", bool, False, "--resize-map", help="Resize a --map of another size to fit."
    ),
    _option("truncate", float, 3.0, "--truncate", help="Window radius in sigmas."),
    _option(
        "border",
        _BORDERS,
        DEFAULT_BORDER,
        "--border",
        help="Border mode: reflect (mirror), replicate (edge pixel) or constant (zeros).",
    ),
    _option(
        "linear", bool, False, "--linear", help="Blur in linear light (default: as stored, sRGB)."
    ),
    _option(
        "device",
        str,
        "auto",
        "--device",
        help="auto (whichever finishes first: the CPU for single images, a GPU for large "
        "sigmas and big batches), cpu, cuda or cuda:N.",
        envvar="ADAPTIVEBLUR_DEVICE",
    ),
    _option(
        "method",
        _METHODS,
        "auto",
        "--method",
        help="exact, fast (approximate, <= 1 LSB at 8 bits) or auto (exact where its fused "
        "kernel runs, else fast).",
    ),
    _option(
        "backend", _BACKENDS | None, None, "--backend", help="Force an implementation (see README)."
    ),
    _option(
        "max_memory",
        str | None,
        None,
        "--max-memory",
        help="Memory budget for the blur's temporaries, e.g. 512M (default 1G).",
        envvar="ADAPTIVEBLUR_MAX_MEMORY",
    ),
    _option(
        "output_format",
        _FORMATS | None,
        None,
        "--format",
        help="Output format: png, jpeg, tiff, webp, bmp (default: from the name).",
    ),
    _option("quality", int, 95, "--quality", help="JPEG/WebP quality, 1-100."),
    _option(
        "max_pixels",
        int | None,
        None,
        "--max-pixels",
        help="Refuse larger inputs (decompression-bomb guard); 0 = no limit.",
    ),
    _option(
        "focus",
        str | None,
        None,
        "--focus",
        help="Depth of field: keep this map value (0-1) sharp and blur more the farther a "
        "pixel's value is from it; auto takes the median around --focus-at.",
    ),
    _option(
        "focus_at",
        str | None,
        None,
        "--focus-at",
        help="X,Y in pixels or percent (e.g. 50%,40%) where --focus auto looks "
        "(default: the centre).",
    ),
    _option(
        "focus_range",
        float,
        0.0,
        "--focus-range",
        help="Width of the sharp band around --focus, in map values (e.g. 0.1).",
    ),
    _option(
        "near_sigma",
        float | None,
        None,
        "--near-sigma",
        help="With --focus: sigma at the near end, map value 0 (1 with --invert); default "
        "--max-sigma.",
    ),
    _option(
        "far_sigma",
        float | None,
        None,
        "--far-sigma",
        help="With --focus: sigma at the far end, map value 1 (0 with --invert); default "
        "--max-sigma.",
    ),
    _option(
        "feather",
        float,
        0.0,
        "--feather",
        help="Smooth the map (or intensity) with a Gaussian of this many pixels first, so "
        "hard mask edges give no hard sigma steps.",
    ),
    inspect.Parameter(
        "quiet",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(False, "--quiet", "-q", help="No progress bar."),
        annotation=bool,
    ),
]
_COMMON_NAMES = frozenset(parameter.name for parameter in _COMMON)


def with_common_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the shared options; it receives them as ``common: CommonOptions``."""
    own = inspect.signature(command, eval_str=True)
    parameters = [p for p in own.parameters.values() if p.name != "common"]

    @functools.wraps(command)
    def with_options(**values: Any) -> None:
        common = CommonOptions(**{name: _plain(values.pop(name)) for name in _COMMON_NAMES})
        command(**values, common=common)

    signature = own.replace(parameters=parameters + _COMMON)
    with_options.__signature__ = signature  # type: ignore[attr-defined]
    with_options.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    return with_options


def _plain(value: Any) -> Any:
    """A choice's text (what the library takes); other values as they are."""
    return value.value if isinstance(value, enum.Enum) else value


# How to fix, on the command line, an error that names a library parameter.
_FLAG_HINTS = {
    "max_pixels": "raise it with --max-pixels",
    "format": "use --format",
    "resize_map": "resize it or pass --resize-map",
    "overwrite": "pass --overwrite to replace it",
    "max_memory": "lower --max-sigma or raise --max-memory",
    "focus": "add --focus",
}


def with_flag_hint(message: str, parameter: str | None) -> str:
    """``message`` with the flag that fixes it, when the error names a library ``parameter``."""
    if parameter is None:
        return message
    hint = _FLAG_HINTS.get(parameter, f"see --{parameter.replace('_', '-')}")
    return f"{message}; {hint}"


def parse_focus(text: str | None) -> float | str | None:
    """``--focus``: ``"auto"`` (any case) or a number; ``None`` stays ``None``.

    Raises:
        InvalidParameterError: neither.

    Example:
        >>> parse_focus("0.6"), parse_focus("Auto")
        (0.6, 'auto')
    """
    if text is None:
        return None
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise InvalidParameterError(
            f"expected --focus to be a map value in [0, 1] or auto, got {text!r}"
        ) from None


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_bytes(text: str | None) -> int | None:
    """``"512M"``, ``"2G"``, ``"1048576"`` to bytes (powers of 1024); ``None`` stays ``None``.

    Raises:
        InvalidParameterError: not a positive size.

    Example:
        >>> parse_bytes("512M"), parse_bytes("1.5k"), parse_bytes("4096")
        (536870912, 1536, 4096)
    """
    if text is None:
        return None
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
