"""One image from file to file: load, sigma map, blur, save.

Reports progress through a callback and raises library errors; never prints, never
exits (that is :mod:`adaptiveblur.cli`'s job).
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from adaptiveblur import io
from adaptiveblur.batch import Task
from adaptiveblur.borders import DEFAULT_BORDER
from adaptiveblur.color import linear_to_srgb, srgb_to_linear
from adaptiveblur.devices import resolve_device
from adaptiveblur.errors import (
    AdaptiveBlurError,
    InputImageError,
    InvalidParameterError,
    OutputImageError,
)
from adaptiveblur.graphs import ShapeGraphs
from adaptiveblur.kernels import DEFAULT_TRUNCATE
from adaptiveblur.ops import adaptive_blur
from adaptiveblur.ops.blur import ProgressCallback, check_blur_options
from adaptiveblur.ops.registry import DEFAULT_METHOD, choose_backend
from adaptiveblur.sigma import DEFAULT_CHANNEL, check_mapping, intensity, sigma_from_intensity
from adaptiveblur.workers import run_tasks

STDIO = "-"
# Below this blurred alpha a pixel is fully transparent: its colour is kept, not divided.
_ALPHA_FLOOR = 1e-6


@dataclass(frozen=True)
class BlurSettings:
    """How to turn an image into a sigma map and blur it (the options of ``adaptiveblur run``)."""

    max_sigma: float
    min_sigma: float = 0.0
    gamma: float = 1.0
    invert: bool = False
    channel: str = DEFAULT_CHANNEL
    truncate: float = DEFAULT_TRUNCATE
    border: str = DEFAULT_BORDER
    linear: bool = False
    device: str = "auto"
    method: str = DEFAULT_METHOD
    backend: str | None = None
    max_memory: int | None = None

    def check(self) -> None:
        """Raise :class:`InvalidParameterError` for any bad value, before any work is done."""
        check_mapping(self.min_sigma, self.max_sigma, self.gamma)
        check_blur_options(self.truncate, self.border, self.max_memory)


def sigma_map_for(
    image: io.Image, settings: BlurSettings, sigma_source: io.Image | None = None
) -> torch.Tensor:
    """The ``(H, W)`` float32 sigma map of ``image`` (from ``sigma_source`` when given), on the CPU.

    Raises:
        InputImageError: ``sigma_source`` is not the image's size.
    """
    source = image if sigma_source is None else sigma_source
    _check_map_size(source, image)
    return _sigma_of(_planes(source, None), source.mode, settings)


def _check_map_size(sigma_source: io.Image, image: io.Image) -> None:
    if sigma_source.pixels.shape[:2] != image.pixels.shape[:2]:
        raise InputImageError(
            f"the sigma map is {_size(sigma_source)} but the image is {_size(image)}; "
            "resize it or pass --resize-map"
        )


def _planes(image: io.Image, device: torch.device | None) -> torch.Tensor:
    """``image.pixels`` as float ``(C, H, W)`` in ``[0, 1]`` on ``device``."""
    return _to_planes(torch.from_numpy(image.pixels).to(device), image.bit_depth)


def _to_planes(samples: torch.Tensor, bit_depth: int) -> torch.Tensor:
    """``(H, W, C)`` samples as float ``(C, H, W)`` in ``[0, 1]``, on their device.

    Integer samples travel as they are and are converted there (a quarter of the bytes,
    and no float work for the CPU when the device is a GPU).
    """
    height, width, channels = samples.shape
    dtype = samples.dtype if samples.is_floating_point() else torch.float32
    # One pass converts and makes each channel a contiguous plane (the blur and the
    # luminance read planes; strided (H, W, C) reads are several times slower on CPU).
    planes = torch.empty((channels, height, width), dtype=dtype, device=samples.device)
    planes.copy_(samples.permute(2, 0, 1))
    if not samples.is_floating_point():
        planes.div_(float(io.MAX_VALUE[bit_depth]))
    return planes


def _sigma_of(pixels: torch.Tensor, mode: str, settings: BlurSettings) -> torch.Tensor:
    value = intensity(pixels, mode, settings.channel)
    return sigma_from_intensity(
        value,
        min_sigma=settings.min_sigma,
        max_sigma=settings.max_sigma,
        gamma=settings.gamma,
        invert=settings.invert,
    )


def blur_image(
    image: io.Image,
    sigma_map: torch.Tensor | None,
    settings: BlurSettings,
    progress: ProgressCallback | None = None,
) -> io.Image:
    """Blur a decoded image with a ``(H, W)`` sigma map; returns a new :class:`io.Image`.

    ``sigma_map=None`` derives it from the image itself (as :func:`sigma_map_for` does).
    All the arithmetic runs on ``settings.device``: on a GPU the CPU only uploads the
    decoded pixels and downloads the result. Float pixels give float pixels; uint8
    samples give uint8 samples (rounded as :func:`io.save_image` rounds); uint16 samples give
    float pixels (the output format decides the depth).

    Alpha images are blurred premultiplied (colour times alpha, then divided by the
    blurred alpha), so transparent pixels lend no colour and no dark fringes appear.
    With ``settings.linear`` the colour is blurred in linear light (sRGB decoded).
    """
    device = resolve_device(settings.device)
    samples = torch.from_numpy(image.pixels).to(device)
    if sigma_map is not None:
        sigma_map = sigma_map.to(device)
    result = _blur_samples(
        samples, image.mode, image.bit_depth, sigma_map, settings, progress=progress
    )
    return _with_pixels(image, result.cpu().numpy())


def _blur_samples(
    samples: torch.Tensor,
    mode: str,
    bit_depth: int,
    sigma_map: torch.Tensor | None,
    settings: BlurSettings,
    *,
    progress: ProgressCallback | None = None,
    sigma_bound: float | None = None,
) -> torch.Tensor:
    """:func:`blur_image` on ``(H, W, C)`` samples and a sigma map already on the device.

    Returns the ``(H, W, C)`` result there. With ``sigma_bound`` (see ``adaptive_blur``)
    nothing is read back, so the whole call can be recorded in a CUDA graph.
    """
    pixels = _to_planes(samples, bit_depth)
    if sigma_map is None:
        sigma_map = _sigma_of(pixels, mode, settings)
    has_alpha = mode in io.ALPHA_MODES
    color_count = pixels.shape[0] - (1 if has_alpha else 0)
    color = pixels[:color_count]
    if settings.linear:
        color = srgb_to_linear(color)
    if has_alpha:
        alpha = pixels[color_count:]
        stacked = torch.cat([color * alpha, alpha])
    else:
        stacked = color
    blurred = adaptive_blur(
        stacked,
        sigma_map[None],
        truncate=settings.truncate,
        border=settings.border,
        device=samples.device,
        method=settings.method,
        backend=settings.backend,
        max_memory=settings.max_memory,
        progress=progress,
        sigma_bound=sigma_bound,
    )
    out_color = blurred[:color_count]
    if has_alpha:
        out_alpha = blurred[color_count:].clamp(0.0, 1.0)
        opaque = out_alpha > _ALPHA_FLOOR
        out_color = torch.where(opaque, out_color / out_alpha.clamp_min(_ALPHA_FLOOR), color)
    out_color = out_color.clamp(0.0, 1.0)
    if settings.linear:
        out_color = linear_to_srgb(out_color)
    result = torch.cat([out_color, out_alpha]) if has_alpha else out_color
    if samples.dtype == torch.uint8:
        # 8-bit samples in, 8-bit samples out (every format keeps an 8-bit source at 8
        # bits): rounded here as io.save_image would (half to even, like numpy's rint),
        # so a quarter of the bytes come back from the device.
        result = result.mul_(float(io.MAX_VALUE[8])).round_().to(torch.uint8)
    return result.permute(1, 2, 0).contiguous()


def _with_pixels(image: io.Image, pixels: np.ndarray) -> io.Image:
    """A new :class:`io.Image` of ``pixels`` with ``image``'s mode, depth and metadata."""
    return io.Image(
        pixels=pixels,
        mode=image.mode,
        bit_depth=image.bit_depth,
        icc_profile=image.icc_profile,
        exif=image.exif,
        source_format=image.source_format,
    )


def sigma_image(sigma_map: torch.Tensor, max_sigma: float) -> io.Image:
    """A viewable 16-bit gray image of a sigma map: black is 0, white is ``max_sigma``."""
    scale = max_sigma if max_sigma > 0 else 1.0
    pixels = (sigma_map / scale).clamp(0.0, 1.0).cpu().numpy().astype(np.float32)[..., None]
    return io.Image(pixels=pixels, mode="L", bit_depth=16)


def run_file(
    source: str,
    dest: str,
    settings: BlurSettings,
    *,
    map_path: str | None = None,
    resize_map: bool = False,
    save_sigma: str | None = None,
    output_format: str | None = None,
    quality: int = 95,
    overwrite: bool = False,
    max_pixels: int | None = io.DEFAULT_MAX_PIXELS,
    progress: ProgressCallback | None = None,
) -> None:
    """``adaptiveblur run``: read ``source``, blur, write ``dest`` atomically.

    Everything that can be checked before the slow part is checked first; nothing is
    written unless the whole result is ready.

    Raises:
        InvalidParameterError, InputImageError, OutputImageError, DeviceUnavailableError.
    """
    settings.check()
    if not 1 <= quality <= 100:
        raise InvalidParameterError(f"expected quality between 1 and 100, got {quality}")
    _refuse_clobbering(source, map_path, dest, save_sigma, overwrite)
    # Resolve formats and check destinations now, so a mistake costs no blur.
    io.check_output_format("L", output_format, dest)
    for path in (dest, save_sigma):
        check_writable(path)
    if save_sigma is not None:
        io.check_output_format("L", None, save_sigma)

    image = io.load_image(source, max_pixels=max_pixels, integers=True)
    fmt = io.check_output_format(image.mode, output_format, dest)
    sigma_source = None
    if map_path is not None:
        sigma_source = io.load_image(map_path, max_pixels=max_pixels, integers=True)
        if resize_map:
            sigma_source = _resized(sigma_source, *image.pixels.shape[:2])
    # Without a map file or --save-sigma, the blur derives the sigma map from the planes it
    # converts anyway (no second conversion of the whole image).
    needed = sigma_source is not None or save_sigma is not None
    sigma_map = sigma_map_for(image, settings, sigma_source) if needed else None
    result = blur_image(image, sigma_map, settings, progress)
    # The output first: if it fails, no sigma map is left behind either.
    io.save_image(result, dest, format=fmt, quality=quality)
    if save_sigma is not None and sigma_map is not None:
        io.save_image(sigma_image(sigma_map, settings.max_sigma), save_sigma)


def _refuse_clobbering(
    source: str, map_path: str | None, dest: str, save_sigma: str | None, overwrite: bool
) -> None:
    """OUT may replace IN only with ``overwrite``; nothing else may replace an input."""
    inputs = [path for path in (source, map_path) if path not in (None, STDIO)]
    if save_sigma is not None and _same_file(dest, save_sigma):
        raise OutputImageError(f"the output and --save-sigma are the same file: {dest!r}")
    for path in inputs:
        if save_sigma is not None and _same_file(path, save_sigma):
            raise OutputImageError(f"refusing to write the sigma map over the input {path!r}")
        if dest != STDIO and _same_file(path, dest) and not (overwrite and path == source):
            hint = "; pass --overwrite to replace it" if path == source else ""
            raise OutputImageError(f"refusing to overwrite the input {path!r}{hint}")


def check_output_folder(folder: str) -> None:
    """Fail early when ``folder`` exists and is not a folder (it is created when missing)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputImageError(f"cannot write into {folder!r}: it is a file, not a folder")


def check_writable(path: str | None) -> None:
    """Fail early when ``path`` cannot be created: missing or read-only folder, or a folder itself."""
    if path is None or path == STDIO:
        return
    if os.path.isdir(path):
        raise OutputImageError(f"cannot write {path!r}: it is a directory")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputImageError(f"cannot write {path!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputImageError(f"cannot write {path!r}: permission denied")


def _same_file(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return Path(a).resolve() == Path(b).resolve()


def _resized(sigma_source: io.Image, height: int, width: int) -> io.Image:
    if sigma_source.pixels.shape[:2] == (height, width):
        return sigma_source
    planes = torch.from_numpy(np.ascontiguousarray(sigma_source.float_pixels().transpose(2, 0, 1)))
    resized = torch.nn.functional.interpolate(
        planes[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )[0]
    return io.Image(
        pixels=resized.clamp(0, 1).permute(1, 2, 0).contiguous().numpy(),
        mode=sigma_source.mode,
        bit_depth=sigma_source.bit_depth,
    )


def _size(image: io.Image) -> str:
    height, width = image.pixels.shape[:2]
    return f"{width}x{height}"


@dataclass(frozen=True)
class Outcome:
    """What happened to one batch task: ``done``, ``skipped`` or ``failed`` (with the reason)."""

    task: Task
    status: str
    seconds: float = 0.0
    reason: str | None = None
    size: int = 0  # input bytes
    device: str | None = None  # where it was blurred


@dataclass
class BatchSummary:
    """Counts and timings of a batch run; ``outcomes`` in completion order."""

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def images_per_second(self) -> float:
        done = self.count("done")
        return done / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready report."""
        return {
            "done": self.count("done"),
            "skipped": self.count("skipped"),
            "failed": self.count("failed"),
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 3),
            "files": [
                {
                    "input": outcome.task.source,
                    "output": outcome.task.dest,
                    "status": outcome.status,
                    "seconds": round(outcome.seconds, 3),
                    **({"device": outcome.device} if outcome.device else {}),
                    **({"error": outcome.reason} if outcome.reason else {}),
                }
                for outcome in self.outcomes
            ],
        }


def run_batch(
    tasks: Sequence[Task],
    settings: BlurSettings,
    *,
    devices: Sequence[str] = ("auto",),
    jobs: int = 2,
    processes: int = 1,
    map_path: str | None = None,
    resize_map: bool = False,
    output_format: str | None = None,
    quality: int = 95,
    overwrite: bool = False,
    max_pixels: int | None = io.DEFAULT_MAX_PIXELS,
    on_outcome: Callable[[Outcome], None] | None = None,
    cuda_graphs: bool = True,
) -> BatchSummary:
    """Blur many files; one bad file never stops the others.

    ``jobs`` threads each take a file through load, blur and save, so decoding and
    encoding overlap the blur; a blur needs one of ``devices`` (one at a time each, per
    process), so files spread over all of them. With ``processes > 1`` the threads are
    shared out over that many worker processes, each with its own interpreter lock (see
    :mod:`adaptiveblur.workers`). Existing outputs are skipped unless ``overwrite``;
    outputs are written atomically, so an interrupted batch resumes where it stopped.
    With ``cuda_graphs``, image sizes that keep coming replay a recorded CUDA graph of
    their blur where the fused Triton kernel does it (see :mod:`adaptiveblur.graphs`).

    Raises:
        InvalidParameterError: bad settings (before any file is touched).
        KeyboardInterrupt: passed on after the workers stop (no partial files remain).
    """
    settings.check()
    if not 1 <= quality <= 100:
        raise InvalidParameterError(f"expected quality between 1 and 100, got {quality}")
    if jobs < 1:
        raise InvalidParameterError(f"expected --jobs >= 1, got {jobs}")
    if processes < 1:
        raise InvalidParameterError(f"expected --processes >= 1, got {processes}")
    if output_format is not None:
        output_format = io.check_output_format("L", output_format)
    sigma_source = (
        io.load_image(map_path, max_pixels=max_pixels, integers=True) if map_path else None
    )
    job = BatchJob(
        settings,
        tuple(devices),
        sigma_source,
        resize_map,
        output_format,
        quality,
        overwrite,
        max_pixels,
        cuda_graphs,
    )
    summary = BatchSummary()

    def record(outcome: Outcome) -> None:
        summary.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    processes = min(processes, jobs, max(len(tasks), 1))
    # Worker processes share the cores for torch's CPU threads.
    torch_threads = None if processes == 1 else max(1, (os.cpu_count() or 1) // processes)
    started = time.perf_counter()
    try:
        run_tasks(
            functools.partial(job.worker, torch_threads=torch_threads),
            tasks,
            jobs=jobs,
            processes=processes,
            on_result=record,
        )
    finally:
        summary.seconds = time.perf_counter() - started
    return summary


@dataclass(frozen=True)
class BatchJob:
    """What every file of a batch gets done to it; picklable, so worker processes get a copy."""

    settings: BlurSettings
    devices: tuple[str, ...]
    sigma_source: io.Image | None
    resize_map: bool
    output_format: str | None
    quality: int
    overwrite: bool
    max_pixels: int | None
    cuda_graphs: bool = True

    def worker(self, torch_threads: int | None = None) -> Callable[[Task], Outcome]:
        """The function that takes one task from file to file (thread-safe, one per process).

        ``torch_threads`` sets this process's CPU threads for torch (worker processes
        share the cores).
        """
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        free_devices: queue.SimpleQueue[str] = queue.SimpleQueue()
        for device in self.devices:
            free_devices.put(device)
        stale = _StaleTemporaries()
        settings, sigma_source = self.settings, self.sigma_source

        # Recorded CUDA graphs replay the blur of repeated shapes (see adaptiveblur.graphs).
        graphs = {
            device: ShapeGraphs(torch.device(device))
            for device in self.devices
            if self.cuda_graphs and _recordable(settings, device)
        }

        @functools.lru_cache(maxsize=4)
        def map_sigma(height: int, width: int, device: str) -> torch.Tensor:
            """The map file's sigma map for images of this size on ``device``: once, not per file."""
            assert sigma_source is not None
            driver = _resized(sigma_source, height, width) if self.resize_map else sigma_source
            return sigma_map_for(driver, settings).to(device)

        def work(task: Task) -> Outcome:
            started = time.perf_counter()
            device = None
            size = _file_size(task.source)
            stale.remove(task.dest)
            if not self.overwrite and os.path.lexists(task.dest):
                return Outcome(task, "skipped", 0.0, None, size)
            try:
                if _same_file(task.source, task.dest):
                    raise OutputImageError(f"refusing to overwrite the input {task.source!r}")
                image = io.load_image(task.source, max_pixels=self.max_pixels, integers=True)
                fmt = io.check_output_format(image.mode, self.output_format, task.dest)
                if sigma_source is not None and not self.resize_map:
                    _check_map_size(sigma_source, image)
                device = free_devices.get()
                try:
                    sigma_map = None  # the blur derives it from the image, on its device
                    if sigma_source is not None:
                        sigma_map = map_sigma(*image.pixels.shape[:2], device)
                    on_device = replace(settings, device=device)
                    if device in graphs:
                        result = _blur_recorded(image, sigma_map, on_device, graphs[device])
                    else:
                        result = blur_image(image, sigma_map, on_device)
                finally:
                    free_devices.put(device)
                os.makedirs(os.path.dirname(os.path.abspath(task.dest)), exist_ok=True)
                io.save_image(result, task.dest, format=fmt, quality=self.quality)
            except AdaptiveBlurError as error:
                seconds = time.perf_counter() - started
                return Outcome(task, "failed", seconds, str(error), size, device)
            except OSError as error:
                reason = f"{error.strerror or error}"
                return Outcome(task, "failed", time.perf_counter() - started, reason, size, device)
            return Outcome(task, "done", time.perf_counter() - started, None, size, device)

        return work


def _recordable(settings: BlurSettings, device: str) -> bool:
    """Whether blurs with ``settings`` on ``device`` can be recorded in CUDA graphs.

    They can where the fused Triton kernel runs (the fast method reads values back).
    """
    target = torch.device(device)
    if target.type != "cuda":
        return False
    try:
        chosen = choose_backend(settings.method, settings.backend, target)
    except AdaptiveBlurError:  # each file reports it
        return False
    return chosen.backend.graph_safe


def _blur_recorded(
    image: io.Image, sigma_map: torch.Tensor | None, settings: BlurSettings, graphs: ShapeGraphs
) -> io.Image:
    """:func:`blur_image` with ``sigma_map`` on the GPU, replayed from a graph for repeated shapes.

    The sigma map is ``settings.max_sigma`` at most (it comes from the image or a map
    file through the settings' mapping), which the blur takes as its bound.
    """
    key = (image.pixels.shape, image.pixels.dtype.str, image.mode, image.bit_depth)

    def blur(samples: torch.Tensor) -> torch.Tensor:
        return _blur_samples(
            samples,
            image.mode,
            image.bit_depth,
            sigma_map,
            settings,
            sigma_bound=settings.max_sigma,
        )

    return _with_pixels(image, graphs.run(key, blur, image.pixels))


class _StaleTemporaries:
    """Temporary files a killed run left in the output folders (io writes ``.<name>.<hex>.tmp``).

    Each folder is listed once, when its first output comes up, not once per file: a
    folder of many outputs would otherwise be listed as many times.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_folder: dict[str, dict[str, list[str]]] = {}

    def remove(self, dest: str) -> None:
        """Remove those left beside ``dest``."""
        folder, name = os.path.split(os.path.abspath(dest))
        with self._lock:
            if folder not in self._by_folder:
                self._by_folder[folder] = _temporaries_in(folder)
            stale = self._by_folder[folder].pop(name, [])
        for path in stale:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _temporaries_in(folder: str) -> dict[str, list[str]]:
    """Output name to the paths of its temporaries in ``folder`` (none if it is missing)."""
    found: dict[str, list[str]] = {}
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMPORARY.fullmatch(entry.name)
            if match:
                found.setdefault(match.group(1), []).append(entry.path)
    return found


_TEMPORARY = re.compile(r"\.(.+)\.[0-9a-f]+\.tmp", re.DOTALL)


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
