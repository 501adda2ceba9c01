"""One file to one file: load, sigma map, blur, save. The same code serves ``run`` and each batch worker.

The blur goes by the file's :class:`~adaptiveblur.engine.Route`: the fused native path
(no torch is imported) or torch (:mod:`adaptiveblur.render`, imported when first used).
32-bit float images and maps take the torch engine (the fused path reads integer
samples); on the CPU it runs the same exact method through the native backend.
Raises library errors; never prints, never exits (that is :mod:`adaptiveblur.cli`'s job).
Nothing is written unless the whole result is ready (outputs are written atomically).
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from adaptiveblur import focus, io
from adaptiveblur.engine import Route, choose_route
from adaptiveblur.errors import DeviceUnavailableError, InputImageError, OutputImageError
from adaptiveblur.io import remote
from adaptiveblur.io.decode import source_name
from adaptiveblur.settings import BlurSettings, FileOptions

if TYPE_CHECKING:
    import torch

    from adaptiveblur.render import Replayer

STDIO = "-"
ProgressCallback = Callable[[int, int], None]


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

    ``route`` fixes the route of every file (a batch decides it once); without it each
    file gets its own (:func:`adaptiveblur.engine.choose_route`). A file that is a 32-bit
    float image, or any file with a float map, goes by torch even where the fixed route is
    the fused native path, which reads integer samples only. Thread-safe: a batch's
    threads share one instance.
    """

    def __init__(
        self,
        settings: BlurSettings,
        options: FileOptions,
        sigma_source: io.Image | None = None,
        route: Route | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.sigma_source = sigma_source
        self.route = route
        self._map_sigma = functools.lru_cache(maxsize=4)(self._sigma_from_map)
        self._map_focus = functools.lru_cache(maxsize=4)(self._focus_from_map)

    def __reduce__(self) -> tuple[object, ...]:
        # Worker processes get the settings and the decoded map, not this process's cache.
        return (FileBlur, (self.settings, self.options, self.sigma_source, self.route))

    @classmethod
    def open(
        cls, settings: BlurSettings, options: FileOptions, route: Route | None = None
    ) -> FileBlur:
        """Check the settings and options, and decode ``options.map_path`` (when given).

        Raises:
            InvalidParameterError: a bad setting or option.
            InputImageError: the map cannot be read, or it is a float map with NaN or
                infinite values.
        """
        settings.check()
        options.check()
        sigma_source = None
        if options.map_path is not None:
            sigma_source = io.load_image(
                options.map_path, max_pixels=options.max_pixels, integers=True
            )
            check_finite(sigma_source, f"map '{options.map_path}'")
        return cls(settings, options, sigma_source, route)

    def load(self, source: str) -> io.Image:
        """Decode ``source`` (integer samples) and check the map fits it.

        Raises:
            InputImageError: unreadable, not a regular file, too large, a float image with
                NaN or infinite values, or a map of another size without ``resize_map``.
        """
        image = io.load_image(source, max_pixels=self.options.max_pixels, integers=True)
        check_finite(image, f"'{source_name(source)}'")
        if self.sigma_source is not None and not self.options.resize_map:
            check_map_size(self.sigma_source, image)
        return image

    def route_for(self, image: io.Image) -> Route:
        """This job's fixed route, or the one chosen for ``image`` (torch for float data)."""
        floats = any(
            source is not None and source.bit_depth == io.FLOAT_DEPTH
            for source in (image, self.sigma_source)
        )
        if self.route is not None:
            if floats and self.route.engine == "native":
                return replace(self.route, engine="torch")
            return self.route
        height, width, channels = image.pixels.shape
        return choose_route(
            self.settings, pixels=height * width, channels=channels, needs_torch=floats
        )

    def blur(
        self,
        source: str,
        dest: str,
        devices: DeviceTokens,
        *,
        replayers: Mapping[str, Replayer] | None = None,
        make_folder: bool = False,
        preview: str | None = None,
        replace: bool = True,
    ) -> str:
        """Read ``source``, blur it on one of ``devices``, write ``dest``; returns the device used.

        ``replayers`` (by device) replay the blur of repeated shapes; ``make_folder``
        creates ``dest``'s folder (and ``preview``'s) when it is missing (only once the
        result is ready); ``preview`` also writes the picture of
        :func:`adaptiveblur.preview.preview_image` there. Without ``replace``, a ``dest``
        that exists when the result is written is left alone (an OutputImageError).

        Only a regular file is read: anything else (a pipe, a socket, a device, a link to
        nothing) fails with the reason and is never opened, so it cannot hold the batch up.

        Raises:
            InputImageError, OutputImageError, InvalidParameterError, DeviceUnavailableError.
        """
        io.check_regular_file(source)
        image = self.load(source)
        route = self.route_for(image)
        return self.write(
            image,
            dest,
            route,
            devices,
            replayers=replayers,
            make_folder=make_folder,
            preview=preview,
            replace=replace,
        )

    def write(
        self,
        image: io.Image,
        dest: str,
        route: Route,
        devices: DeviceTokens,
        *,
        replayers: Mapping[str, Replayer] | None = None,
        progress: ProgressCallback | None = None,
        save_sigma: str | None = None,
        make_folder: bool = False,
        preview: str | None = None,
        replace: bool = True,
    ) -> str:
        """Blur a loaded ``image`` by ``route`` on one of ``devices``, write ``dest``; returns
        the device used (``replace``: as in :meth:`blur`).

        The device is held for the blur alone: encoding and writing overlap the next
        file's blur. ``save_sigma`` also writes the sigma map as a gray image, and
        ``preview`` the picture of :func:`adaptiveblur.preview.preview_image`, after the
        output.

        Raises:
            OutputImageError: the format cannot hold the image (checked before the blur:
                alpha, or float values outside ``[0, 1]`` in a format other than TIFF), or
                the write failed.
        """
        fmt = io.check_output_format(image.mode, self.options.output_format, dest)
        io.check_float_range(image, fmt)  # the blur keeps values within the input's range
        keep_sigma = save_sigma is not None or preview is not None
        result, sigma, device = self.blur_loaded(
            image,
            fmt,
            route,
            devices,
            replayers=replayers,
            progress=progress,
            keep_sigma=keep_sigma,
        )
        if make_folder:
            for path in (dest, preview):
                if remote.is_url(path):
                    remote.make_parent(path)
                elif path is not None:
                    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # The preview before the output (an output is only ever made with its preview, so a
        # failed preview cannot leave an output a re-run would skip), and removed again if
        # the output fails; the sigma map after the output, so none is left without one.
        if preview is not None and sigma is not None:
            from adaptiveblur.preview import preview_image

            picture = preview_image(image, sigma, result, self.settings.max_sigma)
            io.save_image(picture, preview, quality=self.options.quality)
        try:
            io.save_image(result, dest, format=fmt, quality=self.options.quality, overwrite=replace)
        except BaseException:
            if remote.is_url(preview):
                remote.remove(preview)
            elif preview is not None and os.path.isfile(preview):
                os.unlink(preview)
            raise
        if save_sigma is not None and sigma is not None:
            io.save_image(sigma_image(sigma, self.settings.max_sigma), save_sigma)
        return device

    def blur_loaded(
        self,
        image: io.Image,
        fmt: str,
        route: Route,
        devices: DeviceTokens,
        *,
        replayers: Mapping[str, Replayer] | None = None,
        progress: ProgressCallback | None = None,
        keep_sigma: bool = False,
    ) -> tuple[io.Image, np.ndarray | None, str]:
        """Blur a loaded ``image`` by ``route`` on one of ``devices``, for the format ``fmt``
        (which decides the result's bit depth), holding the device for the blur alone.

        Returns:
            ``(result, sigma, device)``: the blurred image, its ``(H, W)`` sigma map when
            ``keep_sigma`` (else possibly ``None``), and the device used.
        """
        with devices.lease() as device:
            if route.engine == "native":
                result, sigma = self._blur_native(image, fmt, keep_sigma, progress)
            else:
                on_device = replace(self.settings, device=device, method=route.method)
                replayer = None if replayers is None else replayers.get(device)
                result, sigma = self._blur_torch(image, on_device, replayer, keep_sigma, progress)
        return result, sigma, device

    def _blur_native(
        self, image: io.Image, fmt: str, keep_sigma: bool, progress: ProgressCallback | None
    ) -> tuple[io.Image, np.ndarray | None]:
        from adaptiveblur.native.render import render_samples

        height, width = image.pixels.shape[:2]
        depth = io.output_bit_depth(image.mode, image.bit_depth, fmt)
        driver, sigma_map = None, self._focus_sigma(image)
        if sigma_map is None and self.sigma_source is not None:
            if self.sigma_source.pixels.shape[:2] == (height, width):
                driver = self.sigma_source
            else:  # resize_map: the resizing is torch's (imported for it alone)
                sigma_map = self._map_sigma(height, width, "cpu").numpy()
        try:
            samples, sigma = render_samples(
                image,
                self.settings,
                bit_depth=depth,
                driver=driver,
                sigma_map=sigma_map,
                keep_sigma=keep_sigma,
                progress=progress,
            )
        except RuntimeError as error:  # the kernel went missing since the route was chosen
            raise DeviceUnavailableError(str(error)) from error
        return image.with_pixels(samples, depth), sigma

    def _blur_torch(
        self,
        image: io.Image,
        settings: BlurSettings,
        replayer: Replayer | None,
        keep_sigma: bool,
        progress: ProgressCallback | None,
    ) -> tuple[io.Image, np.ndarray | None]:
        import torch

        from adaptiveblur.devices import resolve_device
        from adaptiveblur.render import blur_image, sigma_map_for

        height, width = image.pixels.shape[:2]
        device = str(resolve_device(settings.device))
        if device == "cpu":
            _fit_torch_threads()
        sigma_map = None  # derived from the image by the blur, on its device
        focused = self._focus_sigma(image)
        if focused is not None:
            sigma_map = torch.from_numpy(focused).to(device)
            if self.sigma_source is None:
                replayer = None  # a map of each image's own: a recording would keep the first
        elif self.sigma_source is not None:
            sigma_map = self._map_sigma(height, width, device)
        elif keep_sigma:
            sigma_map = sigma_map_for(image, settings)
            replayer = None  # as above: this image's own map
        result = blur_image(image, sigma_map, settings, progress, replayer=replayer)
        return result, None if sigma_map is None else sigma_map.cpu().numpy()

    def _focus_sigma(self, image: io.Image) -> np.ndarray | None:
        """The sigma map of a focal band or feathering (:mod:`adaptiveblur.focus`), from the
        map or from ``image``; ``None`` when the settings ask for neither."""
        if not focus.in_use(self.settings):
            return None
        if self.sigma_source is None:
            return focus.sigma_for(image, self.settings)
        height, width = image.pixels.shape[:2]
        return self._map_focus(height, width)

    def _focus_from_map(self, height: int, width: int) -> np.ndarray:
        """:meth:`_focus_sigma` of the map for images of this size: once per size, not per file."""
        assert self.sigma_source is not None
        driver = self.sigma_source
        if driver.pixels.shape[:2] != (height, width):  # resize_map: the resizing is torch's
            from adaptiveblur.render import resized_map

            driver = resized_map(driver, height, width)
        return focus.sigma_for(driver, self.settings)

    def _sigma_from_map(self, height: int, width: int, device: str) -> torch.Tensor:
        """The map's sigma map for images of this size on ``device``: once per size, not per file."""
        from adaptiveblur.render import resized_map, sigma_map_for

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
    preview: str | None = None,
    progress: ProgressCallback | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Route:
    """``adaptiveblur run``: read ``source`` (a path, a URL or ``"-"``), blur, write ``dest``
    (the same) atomically.

    Everything that can be checked before the slow part is checked first. ``save_sigma``
    also writes the sigma map, ``preview`` the picture of input, sigma map and output
    (:func:`adaptiveblur.preview.preview_image`). ``on_notice`` is called with the route's
    notice, if it has one, before the blur starts.

    Returns:
        The :class:`~adaptiveblur.engine.Route` the file took.

    Raises:
        InvalidParameterError, InputImageError, OutputImageError, DeviceUnavailableError.
    """
    options = options or FileOptions()
    settings.check()
    options.check()
    refuse_clobbering(source, options.map_path, dest, save_sigma, options.overwrite, preview)
    # Resolve formats and check destinations now, so a mistake costs no blur.
    io.check_output_format("L", options.output_format, dest)
    for path in (dest, save_sigma, preview):
        check_writable(path)
    if preview == STDIO:
        raise OutputImageError("the preview cannot go to standard output", parameter="preview")
    for side_output in (save_sigma, preview):
        if side_output is not None:
            io.check_output_format("RGB", None, side_output)
    job = FileBlur.open(settings, options)
    image = job.load(source)
    route = job.route_for(image)
    if route.notice is not None and on_notice is not None:
        on_notice(route.notice)
    devices = DeviceTokens([route.device])
    job.write(
        image, dest, route, devices, progress=progress, save_sigma=save_sigma, preview=preview
    )
    return route


def _fit_torch_threads() -> None:
    """Keep this thread's torch CPU threads within what the native kernel may use
    (:func:`adaptiveblur.native.library.worker_count`: the usable CPUs, or a batch worker
    process's share of them).

    torch sizes its pool by the cores it sees, not by a cgroup quota or a SLURM
    allotment; more threads than the process may use only get throttled. A lower count
    (set by the user) is kept. Called by the thread that runs the blur: a thread that has
    used torch keeps its own count when another thread sets one.
    """
    import torch

    from adaptiveblur.native import library

    usable = library.worker_count()
    if torch.get_num_threads() > usable:
        torch.set_num_threads(usable)


def check_finite(image: io.Image, what: str) -> None:
    """Raise :class:`InputImageError` when a float image (``what``: ``"map 'd.tif'"``) holds
    NaN or infinite values, which no sigma or blur can be computed from."""
    if image.bit_depth == io.FLOAT_DEPTH and not np.isfinite(image.pixels).all():
        raise InputImageError(f"{what} has NaN or infinite values")


def check_map_size(sigma_source: io.Image, image: io.Image) -> None:
    """Raise :class:`InputImageError` when a map is not the image's size (``resize_map`` fixes it)."""
    if sigma_source.pixels.shape[:2] != image.pixels.shape[:2]:
        raise InputImageError(
            f"the sigma map is {_size(sigma_source)} but the image is {_size(image)}",
            parameter="resize_map",
        )


def sigma_image(sigma_map: np.ndarray, max_sigma: float) -> io.Image:
    """A viewable 16-bit gray image of an ``(H, W)`` sigma map: black is 0, white is ``max_sigma``."""
    scale = max_sigma if max_sigma > 0 else 1.0
    pixels = (np.asarray(sigma_map, dtype=np.float32) / scale).clip(0.0, 1.0)
    return io.Image(pixels=pixels.astype(np.float32)[..., None], mode="L", bit_depth=16)


def _size(image: io.Image) -> str:
    height, width = image.pixels.shape[:2]
    return f"{width}x{height}"


def refuse_clobbering(
    source: str,
    map_path: str | None,
    dest: str,
    save_sigma: str | None,
    overwrite: bool,
    preview: str | None = None,
) -> None:
    """OUT may replace IN only with ``overwrite``; nothing else may replace an input, and no
    two outputs may be one file.

    Raises:
        OutputImageError: a write would replace an input, or two outputs (the output, the
            sigma map, the preview) are one file.
    """
    inputs = [path for path in (source, map_path) if path not in (None, STDIO)]
    side_outputs = [
        (name, path)
        for name, path in (("save_sigma", save_sigma), ("preview", preview))
        if path is not None
    ]
    for number, (name, path) in enumerate(side_outputs):
        earlier = [
            ("the output", dest),
            *((f"--{n.replace('_', '-')}", p) for n, p in side_outputs[:number]),
        ]
        for what, other in earlier:
            if same_file(other, path):
                raise OutputImageError(
                    f"{what} and --{name.replace('_', '-')} are the same file: {path!r}"
                )
    for path in inputs:
        for name, side in side_outputs:
            if same_file(path, side):
                what = "the sigma map" if name == "save_sigma" else "the preview"
                raise OutputImageError(f"refusing to write {what} over the input {path!r}")
        if dest != STDIO and same_file(path, dest) and not (overwrite and path == source):
            raise OutputImageError(
                f"refusing to overwrite the input {path!r}",
                parameter="overwrite" if path == source else None,
            )


def check_writable(path: str | None) -> None:
    """Fail early when ``path`` cannot be created: missing or read-only folder, or a folder itself.

    An existing device or FIFO (written in place) needs write permission on itself alone.
    A URL is checked by its store (reachable, not a folder); object stores have no folders
    to be missing.

    Raises:
        OutputImageError: the reason it cannot.
    """
    if path is None or path == STDIO:
        return
    if remote.is_url(path):
        remote.check_output(path)
        return
    if os.path.isdir(path):
        raise OutputImageError(f"cannot write {path!r}: it is a directory")
    if os.path.exists(path) and not os.path.isfile(path):  # a device or FIFO: written in place
        if not os.access(path, os.W_OK):
            raise OutputImageError(f"cannot write {path!r}: permission denied")
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputImageError(f"cannot write {path!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputImageError(f"cannot write {path!r}: permission denied")


def same_file(a: str | None, b: str | None) -> bool:
    """Whether two paths name one file (through links too); ``False`` if either is ``None``.
    URLs name one object when their store says so (a URL and a local path never do)."""
    if a is None or b is None:
        return False
    if remote.is_url(a) or remote.is_url(b):
        return remote.same_object(a, b)
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return Path(a).resolve() == Path(b).resolve()
