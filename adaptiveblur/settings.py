"""What a command asks for: how to blur (:class:`BlurSettings`) and how to treat files (:class:`FileOptions`).

Plain frozen dataclasses, checked once before any work starts; the command line builds
them from its options and the library functions take them whole. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adaptiveblur import io
from adaptiveblur.borders import DEFAULT_BORDER, check_border
from adaptiveblur.devices import parse_device
from adaptiveblur.focus import check_focus
from adaptiveblur.kernels import DEFAULT_TRUNCATE, check_truncate
from adaptiveblur.ops.registry import check_names
from adaptiveblur.sigma import DEFAULT_CHANNEL, check_channel, check_mapping
from adaptiveblur.tiling import check_max_memory


@dataclass(frozen=True)
class BlurSettings:
    """How to turn an image into a sigma map and blur it (the blur options of ``run`` and ``batch``).

    Attributes:
        max_sigma, min_sigma, gamma, invert, channel: the sigma mapping
            (see :func:`adaptiveblur.sigma.sigma_from_intensity`).
        truncate, border, method, backend, max_memory: as for
            :func:`adaptiveblur.adaptive_blur`, except that ``method`` defaults to
            ``"auto"``: exact where a fused exact kernel runs, else the fast method.
        linear: blur the colour in linear light (sRGB decoded first).
        device: ``"auto"`` (whichever finishes the command first, see
            :mod:`adaptiveblur.engine`), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        focus, focus_at, focus_range, near_sigma, far_sigma: a focal band (depth of
            field, see :mod:`adaptiveblur.focus`): ``focus`` a map value in ``[0, 1]`` or
            ``"auto"`` (the median around ``focus_at``, ``"X,Y"`` in pixels or percent;
            default the centre); the near and far sigmas default to ``max_sigma``.
        feather: smooth the values that drive sigma with a Gaussian of this many pixels
            first (0: off).
    """

    max_sigma: float
    min_sigma: float = 0.0
    gamma: float = 1.0
    invert: bool = False
    channel: str = DEFAULT_CHANNEL
    truncate: float = DEFAULT_TRUNCATE
    border: str = DEFAULT_BORDER
    linear: bool = False
    device: str = "auto"
    method: str = "auto"
    backend: str | None = None
    max_memory: int | None = None
    focus: float | str | None = None
    focus_at: str | None = None
    focus_range: float = 0.0
    near_sigma: float | None = None
    far_sigma: float | None = None
    feather: float = 0.0

    def check(self) -> None:
        """Raise :class:`InvalidParameterError` for any bad value, before any work is done."""
        check_mapping(self.min_sigma, self.max_sigma, self.gamma)
        check_focus(self)
        check_channel(self.channel)
        check_truncate(self.truncate)
        check_border(self.border)
        check_max_memory(self.max_memory)
        check_names(self.method, self.backend)
        parse_device(self.device)

    def blur_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`adaptiveblur.adaptive_blur` these settings fix.

        Example:
            >>> BlurSettings(max_sigma=4, border="replicate").blur_options()["border"]
            'replicate'
        """
        names = ("truncate", "border", "method", "backend", "max_memory")
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True)
class FileOptions:
    """How files are read and written, for one file or a batch.

    Attributes:
        map_path: take the sigma map's intensity from this image instead of the input.
        resize_map: resize a map of another size to each input's size (else an error).
        output_format: a format name or alias; ``None`` takes it from each output's name.
        quality: 1-100, for JPEG and WebP.
        overwrite: for ``run``, let the output replace the input; for a batch, redo
            outputs that exist (they are skipped otherwise).
        max_pixels: refuse larger inputs; ``None`` or 0 means no limit.
    """

    map_path: str | None = None
    resize_map: bool = False
    output_format: str | None = None
    quality: int = 95
    overwrite: bool = False
    max_pixels: int | None = io.DEFAULT_MAX_PIXELS

    def check(self) -> None:
        """Raise :class:`InvalidParameterError` for a bad quality or format name."""
        io.check_quality(self.quality)
        if self.output_format is not None:
            io.check_output_format("L", self.output_format)
