"""One file to one file: load, sigma map, blur, save. The same code serves ``run`` and each batch worker.

Raises library errors; never prints, never exits (that is :mod:`adaptiveblur.cli`'s job).
Nothing is written unless the whole result is ready (outputs are written atomically).
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from adaptiveblur import io
from adaptiveblur.devices import resolve_device
from adaptiveblur.errors import OutputImageError
from adaptiveblur.ops.blur import ProgressCallback
from adaptiveblur.render import (
    Replayer,
    blur_image,
    check_map_size,
    resized_map,
    sigma_image,
    sigma_map_for,
)
from adaptiveblur.settings import BlurSettings, FileOptions

STDIO = "-"


class DeviceTokens:
    """The devices files may be blurred on, each lent to one blur at a time (thread-safe)."""

    def __init__(self, devices: Sequence[str]) -> None:
        self._free: queue.SimpleQueue[str] = queue.SimpleQueue()
        for device in devices:
            self._free.put(device)

    @contextlib.contextmanager
    def lease(self) -> Iterator[str]:
        """Wait for a free device; it is given back when the block ends."""
        device = self._free.get()
        try:
            yield device
        finally:
            self._free.put(device)


class FileBlur:
    """Blur files with fixed settings; the map file, if any, is decoded once for all of them.

    Thread-safe: a batch's threads share one instance.
    """

    def __init__(
        self, settings: BlurSettings, options: FileOptions, sigma_source: io.Image | None = None
    ) -> None:
        self.settings = settings
        self.options = options
        self.sigma_source = sigma_source
        self._map_sigma = functools.lru_cache(maxsize=4)(self._sigma_from_map)

    def __reduce__(self) -> tuple[object, ...]:
        # Worker processes get the settings and the decoded map, not this process's cache.
        return (FileBlur, (self.settings, self.options, self.sigma_source))

    @classmethod
    def open(cls, settings: BlurSettings, options: FileOptions) -> FileBlur:
        """Check the settings and options, and decode ``options.map_path`` (when given)."""
        settings.check()
        options.check()
        sigma_source = None
        if options.map_path is not None:
            sigma_source = io.load_image(
                options.map_path, max_pixels=options.max_pixels, integers=True
            )
        return cls(settings, options, sigma_source)

    def blur(
        self,
        source: str,
        dest: str,
        devices: DeviceTokens,
        *,
        replayers: Mapping[str, Replayer] | None = None,
        progress: ProgressCallback | None = None,
        save_sigma: str | None = None,
        make_folder: bool = False,
    ) -> str:
        """Read ``source``, blur it on one of ``devices``, write ``dest``; returns the device used.

        ``replayers`` (by device) replay the blur of repeated shapes; ``save_sigma`` also
        writes the sigma map as a gray image, after the output; ``make_folder`` creates
        ``dest``'s folder when it is missing (only once the result is ready).

        Raises:
            InputImageError, OutputImageError, InvalidParameterError, DeviceUnavailableError.
        """
        options = self.options
        image = io.load_image(source, max_pixels=options.max_pixels, integers=True)
        fmt = io.check_output_format(image.mode, options.output_format, dest)
        height, width = image.pixels.shape[:2]
        if self.sigma_source is not None and not options.resize_map:
            check_map_size(self.sigma_source, image)
        with devices.lease() as device:
            sigma_map = None  # derived from the image by the blur, on its device
            if self.sigma_source is not None:
                sigma_map = self._map_sigma(height, width, device)
            elif save_sigma is not None:
                sigma_map = sigma_map_for(image, self.settings)
            replayer = None if replayers is None else replayers.get(device)
            on_device = replace(self.settings, device=device)
            result = blur_image(image, sigma_map, on_device, progress, replayer=replayer)
        if make_folder:
            os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        # The output first: if it fails, no sigma map is left behind either.
        io.save_image(result, dest, format=fmt, quality=options.quality)
        if save_sigma is not None and sigma_map is not None:
            io.save_image(sigma_image(sigma_map, self.settings.max_sigma), save_sigma)
        return device

    def _sigma_from_map(self, height: int, width: int, device: str) -> torch.Tensor:
        """The map's sigma map for images of this size on ``device``: once per size, not per file."""
        assert self.sigma_source is not None
        driver = self.sigma_source
        if self.options.resize_map:
            driver = resized_map(driver, height, width)
        return sigma_map_for(driver, self.settings).to(device)


def run_file(
    source: str,
    dest: str,
    settings: BlurSettings,
    options: FileOptions | None = None,
    *,
    save_sigma: str | None = None,
    progress: ProgressCallback | None = None,
) -> None:
    """``adaptiveblur run``: read ``source`` (a path or ``"-"``), blur, write ``dest`` atomically.

    Everything that can be checked before the slow part is checked first.

    Raises:
        InvalidParameterError, InputImageError, OutputImageError, DeviceUnavailableError.
    """
    options = options or FileOptions()
    settings.check()
    options.check()
    refuse_clobbering(source, options.map_path, dest, save_sigma, options.overwrite)
    # Resolve formats and check destinations now, so a mistake costs no blur.
    io.check_output_format("L", options.output_format, dest)
    for path in (dest, save_sigma):
        check_writable(path)
    if save_sigma is not None:
        io.check_output_format("L", None, save_sigma)
    job = FileBlur.open(settings, options)
    devices = DeviceTokens([str(resolve_device(settings.device))])
    job.blur(source, dest, devices, progress=progress, save_sigma=save_sigma)


def refuse_clobbering(
    source: str, map_path: str | None, dest: str, save_sigma: str | None, overwrite: bool
) -> None:
    """OUT may replace IN only with ``overwrite``; nothing else may replace an input.

    Raises:
        OutputImageError: a write would replace an input (or the output and the sigma
            map are one file).
    """
    inputs = [path for path in (source, map_path) if path not in (None, STDIO)]
    if save_sigma is not None and same_file(dest, save_sigma):
        raise OutputImageError(
            f"the output and save_sigma are the same file: {dest!r}", parameter="save_sigma"
        )
    for path in inputs:
        if save_sigma is not None and same_file(path, save_sigma):
            raise OutputImageError(f"refusing to write the sigma map over the input {path!r}")
        if dest != STDIO and same_file(path, dest) and not (overwrite and path == source):
            raise OutputImageError(
                f"refusing to overwrite the input {path!r}",
                parameter="overwrite" if path == source else None,
            )


def check_writable(path: str | None) -> None:
    """Fail early when ``path`` cannot be created: missing or read-only folder, or a folder itself.

    Raises:
        OutputImageError: the reason it cannot.
    """
    if path is None or path == STDIO:
        return
    if os.path.isdir(path):
        raise OutputImageError(f"cannot write {path!r}: it is a directory")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputImageError(f"cannot write {path!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputImageError(f"cannot write {path!r}: permission denied")


def same_file(a: str | None, b: str | None) -> bool:
    """Whether two paths name one file (through links too); ``False`` if either is ``None``."""
    if a is None or b is None:
        return False
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return Path(a).resolve() == Path(b).resolve()
