"""The fused CPU path: decoded integer samples to integer samples, one native call per band of rows.

The arithmetic is the torch path's (:func:`adaptiveblur.render.blur_samples` with the
native backend), step for step in float32 (see ``_render.c``), so both give the same
samples. What the C code looks samples up in is made here with numpy: the value of each
sample (``s / max``), its linear-light value, and the luminance weight times the value.
No torch here, and nothing image-sized in float: each band holds its own planes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from adaptiveblur import io
from adaptiveblur.color import REC709_LUMA, srgb_to_linear
from adaptiveblur.kernels import radius_for
from adaptiveblur.native import library
from adaptiveblur.sigma import intensity_source
from adaptiveblur.tiling import DEFAULT_MAX_MEMORY, check_window

if TYPE_CHECKING:
    from adaptiveblur.settings import BlurSettings

_INTENSITY = {"channel": 0, "luminance": 1, "mean": 2}
_BORDER = {"reflect": 0, "replicate": 1, "constant": 2}
# Input planes per band call: large enough that the halo rows each band reads again are
# few, small enough that the bands in flight stay far below the memory budget.
BAND_BYTES = 16 << 20
BANDS_PER_WORKER = 4  # at least this many bands per thread, so uneven bands still balance


def unavailable_reason() -> str | None:
    """``None`` when the fused path can run here, else why not (compiles it on first call)."""
    kernels = library.kernels()
    return kernels if isinstance(kernels, str) else None


def render_samples(
    image: io.Image,
    settings: BlurSettings,
    *,
    bit_depth: int,
    driver: io.Image | None = None,
    sigma_map: np.ndarray | None = None,
    keep_sigma: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Blur ``image``'s integer samples into samples of ``bit_depth`` (8 or 16).

    Args:
        image: decoded with integer samples (``load_image(..., integers=True)``).
        settings: the sigma mapping and the blur's truncate, border, linear light and
            memory budget (method, backend and device are the caller's business).
        bit_depth: the output samples' depth (uint8 for 8, uint16 for 16).
        driver: the image whose intensity gives sigma, of ``image``'s size, integer
            samples; default ``image`` itself.
        sigma_map: instead of a driver, the ``(H, W)`` float32 sigma of each pixel.
        keep_sigma: also return the ``(H, W)`` float32 sigma map.
        progress: called as ``progress(bands_done, bands_total)``.

    Returns:
        ``(samples, sigma)``: ``(H, W, C)`` samples in ``image``'s mode, and the sigma
        map when ``keep_sigma`` (else ``None``).

    Raises:
        InvalidParameterError: max sigma's window is so much wider than the image that one
            row band does not fit in the memory budget (see :func:`tiling.check_window`).
        ValueError: float pixels, sizes that do not match, or the kernel failed.
        RuntimeError: the native library cannot be built here (see :func:`unavailable_reason`).
    """
    kernels = library.kernels()
    if isinstance(kernels, str):
        raise RuntimeError(f"the native kernel is not available: {kernels}")
    height, width = image.pixels.shape[:2]
    driver = image if driver is None and sigma_map is None else driver
    if driver is not None and driver.pixels.shape[:2] != (height, width):
        raise ValueError("the driver must be the image's size")
    if sigma_map is not None and sigma_map.shape != (height, width):
        raise ValueError("the sigma map must be the image's size")
    # The vector kernel needs rows at least one SIMD group wide; a tall narrow image is
    # done transposed, as the native backend does with such a tile.
    if width < kernels.lanes["float32"] <= height:
        samples, sigma = render_samples(
            _transposed(image),
            settings,
            bit_depth=bit_depth,
            driver=None if driver is None else _transposed(driver),
            sigma_map=None if sigma_map is None else np.ascontiguousarray(sigma_map.T),
            keep_sigma=keep_sigma,
            progress=progress,
        )
        return (
            np.ascontiguousarray(samples.transpose(1, 0, 2)),
            None if sigma is None else np.ascontiguousarray(sigma.T),
        )

    samples = _integer_samples(image)
    channels = samples.shape[2]
    out = np.empty(samples.shape, dtype=io.SAMPLE_TYPES[bit_depth])
    kept = np.empty((height, width), dtype=np.float32) if keep_sigma else None
    value = _values(image.bit_depth)
    colour = _linear_values(image.bit_depth) if settings.linear else value
    held: list[np.ndarray] = [samples, out, value, colour]  # alive until the calls return
    job = library.RenderJob(
        height=height,
        width=width,
        samples=samples.ctypes.data,
        channels=channels,
        sample_bytes=samples.itemsize,
        alpha=int(io.has_alpha(image.mode)),
        value=value.ctypes.data,
        colour=colour.ctypes.data,
        # torch multiplies float32 by these scalars rounded to float32, and so does the C code.
        min_sigma=float(np.float32(settings.min_sigma)),
        sigma_scale=float(np.float32(settings.max_sigma - settings.min_sigma)),
        gamma=float(settings.gamma),
        invert=int(settings.invert),
        truncate=float(settings.truncate),
        border=_BORDER[settings.border],
        linear=int(settings.linear),
        out=out.ctypes.data,
        out_bytes=out.itemsize,
        out_max=float(io.MAX_VALUE[bit_depth]),
        sigma_out=None if kept is None else kept.ctypes.data,
    )
    if driver is not None:
        kind, index = intensity_source(driver.mode, settings.channel)
        driven = _integer_samples(driver)
        driver_value = _values(driver.bit_depth)
        luma = _luma_tables(driver.bit_depth)
        held += [driven, driver_value, luma]
        job.driver = driven.ctypes.data
        job.driver_channels = driven.shape[2]
        job.driver_bytes = driven.itemsize
        job.driver_value = driver_value.ctypes.data
        job.luma = luma.ctypes.data
        job.intensity = _INTENSITY[kind]
        job.driver_channel = index
    else:
        assert sigma_map is not None
        given = np.ascontiguousarray(sigma_map, dtype=np.float32)
        held.append(given)
        job.sigma_map = given.ctypes.data

    bands, workers = _bands(height, width, channels, settings, library.worker_count())
    done = 0

    def band_done() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(bands))

    statuses = library.run_jobs(
        workers, lambda row0, row1: kernels.render(job, row0, row1), bands, band_done
    )
    del held
    message = library.failure(statuses)
    if message is not None:
        raise ValueError(f"native render failed: {message}")
    return out, kept


def _bands(
    height: int, width: int, channels: int, settings: BlurSettings, workers: int
) -> tuple[list[tuple[int, int]], int]:
    """Row ranges of about :data:`BAND_BYTES` of input planes, at least
    :data:`BANDS_PER_WORKER` per worker, and how many workers may hold a band at once.

    A band is never much shorter than its halo when the budget allows: the halo's rows
    are filled again by every band, and a band of one row under a wide halo would fill
    hundreds of rows for each row it blurs. Where bands that tall do not fit once per
    worker, fewer workers run, so the bands in flight stay within the budget.

    Raises:
        InvalidParameterError: not even a one-row band fits in the budget.
    """
    halo = radius_for(settings.max_sigma, settings.truncate)
    budget = settings.max_memory or DEFAULT_MAX_MEMORY
    check_window(1, width, channels, 4, halo, budget, truncate=settings.truncate)
    # Input planes, blurred planes, sigma and radius, per output row of a band.
    row_bytes = channels * (width + 2 * halo) * 4 + channels * width * 4 + width * 12
    every_worker = min(BAND_BYTES, budget // workers) // row_bytes - 2 * halo
    one_worker = budget // row_bytes - 2 * halo
    balanced = -(-height // (workers * BANDS_PER_WORKER))
    rows = max(1, min(max(every_worker, min(halo, one_worker)), balanced))
    in_flight = max(1, min(workers, budget // ((rows + 2 * halo) * row_bytes)))
    return [(row0, min(row0 + rows, height)) for row0 in range(0, height, rows)], in_flight


def _integer_samples(image: io.Image) -> np.ndarray:
    """``image.pixels`` as contiguous integer samples; float pixels are refused."""
    pixels = image.pixels
    if np.dtype(pixels.dtype).name != io.SAMPLE_TYPES[image.bit_depth]:
        raise ValueError(
            f"expected {io.SAMPLE_TYPES[image.bit_depth]} samples, got {pixels.dtype} pixels"
        )
    return np.ascontiguousarray(pixels)


def _transposed(image: io.Image) -> io.Image:
    return io.Image(
        pixels=np.ascontiguousarray(image.pixels.transpose(1, 0, 2)),
        mode=image.mode,
        bit_depth=image.bit_depth,
    )


@functools.cache
def _values(bit_depth: int) -> np.ndarray:
    """``value[s] = s / max`` in float32, as :func:`adaptiveblur.render.to_planes` divides."""
    top = io.MAX_VALUE[bit_depth]
    return np.arange(top + 1, dtype=np.float32) / np.float32(top)


@functools.cache
def _linear_values(bit_depth: int) -> np.ndarray:
    """Each sample's value in linear light (:func:`adaptiveblur.color.srgb_to_linear`)."""
    return np.ascontiguousarray(srgb_to_linear(_values(bit_depth)), dtype=np.float32)


@functools.cache
def _luma_tables(bit_depth: int) -> np.ndarray:
    """``(3, max + 1)``: each Rec. 709 weight (as float32) times each sample's value."""
    weights = np.array(REC709_LUMA, dtype=np.float32)[:, None]
    return np.ascontiguousarray(weights * _values(bit_depth)[None, :])
