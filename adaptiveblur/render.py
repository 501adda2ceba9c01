"""Decoded samples to blurred samples: planes, the sigma map, premultiplied alpha, linear light, rounding.

No files here (that is :mod:`adaptiveblur.run`) and no printing; the arithmetic runs on
the settings' device, so on a GPU the CPU only uploads the decoded samples and
downloads the result. On the CPU, :mod:`adaptiveblur.native.render` does the same
arithmetic in one fused native call, without torch; the two give the same samples.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from adaptiveblur import io
from adaptiveblur.color import linear_to_srgb, srgb_to_linear
from adaptiveblur.devices import resolve_device
from adaptiveblur.ops.blur import adaptive_blur
from adaptiveblur.ops.registry import choose_backend
from adaptiveblur.sigma import intensity, normalised_by_range, sigma_from_intensity

if TYPE_CHECKING:
    from adaptiveblur.ops.blur import ProgressCallback
    from adaptiveblur.settings import BlurSettings

# Below this blurred alpha a pixel is fully transparent: its colour is kept, not divided.
_ALPHA_FLOOR = 1e-6


class Replayer(Protocol):
    """Runs a device function of samples, replaying it from a recording where it can
    (:class:`adaptiveblur.batch.graphs.ShapeGraphs`)."""

    def run(
        self, key: Hashable, function: Callable[[torch.Tensor], torch.Tensor], samples: np.ndarray
    ) -> np.ndarray: ...


def sigma_map_for(image: io.Image, settings: BlurSettings) -> torch.Tensor:
    """The ``(H, W)`` float32 sigma map of ``image`` (an input, or a map file's image), on the CPU.

    A 32-bit float image's values are normalised by their range first (see
    :func:`adaptiveblur.sigma.normalised_by_range`).
    """
    return _sigma_of(to_planes(torch.from_numpy(image.pixels), image.bit_depth), image, settings)


def resized_map(sigma_source: io.Image, height: int, width: int) -> io.Image:
    """``sigma_source`` resized (bilinear, antialiased) to ``height x width``, as float pixels.

    A 32-bit float map is normalised by its own range first, then resized: the result
    holds values in ``[0, 1]`` (as a 16-bit map's float pixels), so its sigma follows the
    map file's range, not the resized one's.
    """
    if sigma_source.pixels.shape[:2] == (height, width):
        return sigma_source
    planes = torch.from_numpy(np.ascontiguousarray(sigma_source.float_pixels().transpose(2, 0, 1)))
    bit_depth = sigma_source.bit_depth
    if bit_depth == io.FLOAT_DEPTH:
        planes, bit_depth = normalised_by_range(planes), 16
    resized = torch.nn.functional.interpolate(
        planes[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )[0]
    return io.Image(
        pixels=resized.clamp(0, 1).permute(1, 2, 0).contiguous().numpy(),
        mode=sigma_source.mode,
        bit_depth=bit_depth,
    )


def blur_image(
    image: io.Image,
    sigma_map: torch.Tensor | None,
    settings: BlurSettings,
    progress: ProgressCallback | None = None,
    *,
    replayer: Replayer | None = None,
) -> io.Image:
    """Blur a decoded image with a ``(H, W)`` sigma map; returns a new :class:`io.Image`.

    ``sigma_map=None`` derives it from the image itself (as :func:`sigma_map_for` does),
    from the planes the blur converts anyway. Float pixels give float pixels; uint8
    samples give uint8 samples (rounded by :func:`io.quantise`, as saving rounds); uint16
    samples give float pixels (the output format decides the depth).

    Alpha images are blurred premultiplied (colour times alpha, then divided by the
    blurred alpha), so transparent pixels lend no colour and no dark fringes appear.
    With ``settings.linear`` the colour is blurred in linear light (sRGB decoded).

    A 32-bit float image (``bit_depth`` 32, values in any units) is blurred as it is:
    not clipped, and ``settings.linear`` leaves it alone (its values are not
    sRGB-encoded); its own sigma comes from its values normalised by their range.

    With a ``replayer`` and a backend that queues without reading back (one declared
    graph-safe), repeated shapes replay a recorded run; the sigma map is then at most
    ``settings.max_sigma`` (it comes through the settings' mapping), the blur's bound.
    """
    device = resolve_device(settings.device)
    if sigma_map is not None:
        sigma_map = sigma_map.to(device)
    if replayer is not None and _replayable(settings, device):
        key = (image.pixels.shape, image.pixels.dtype.str, image.mode, image.bit_depth)

        def recordable(samples: torch.Tensor) -> torch.Tensor:
            return blur_samples(samples, image, sigma_map, settings, sigma_bound=settings.max_sigma)

        return image.with_pixels(replayer.run(key, recordable, image.pixels))
    samples = torch.from_numpy(image.pixels).to(device)
    result = blur_samples(samples, image, sigma_map, settings, progress=progress)
    return image.with_pixels(result.cpu().numpy())


def blur_samples(
    samples: torch.Tensor,
    layout: io.Image,
    sigma_map: torch.Tensor | None,
    settings: BlurSettings,
    *,
    progress: ProgressCallback | None = None,
    sigma_bound: float | None = None,
) -> torch.Tensor:
    """:func:`blur_image` on ``(H, W, C)`` samples and a sigma map already on their device.

    ``layout`` gives the samples' mode and bit depth. Returns the ``(H, W, C)`` result
    there. With ``sigma_bound`` (see ``adaptive_blur``) nothing is read back, so the
    whole call can be recorded in a CUDA graph.
    """
    pixels = to_planes(samples, layout.bit_depth)
    if sigma_map is None:
        sigma_map = _sigma_of(pixels, layout, settings)
    as_stored = layout.bit_depth == io.FLOAT_DEPTH  # float values in any units: no curve, no clip
    linear = settings.linear and not as_stored
    alpha_too = io.has_alpha(layout.mode)
    color_count = pixels.shape[0] - (1 if alpha_too else 0)
    color = pixels[:color_count]
    if linear:
        color = srgb_to_linear(color)
    stacked = (
        torch.cat([color * pixels[color_count:], pixels[color_count:]]) if alpha_too else color
    )
    blurred = adaptive_blur(
        stacked,
        sigma_map[None],
        device=samples.device,
        progress=progress,
        sigma_bound=sigma_bound,
        **settings.blur_options(),
    )
    out_color = blurred[:color_count]
    if alpha_too:
        out_alpha = blurred[color_count:].clamp(0.0, 1.0)
        opaque = out_alpha > _ALPHA_FLOOR
        out_color = torch.where(opaque, out_color / out_alpha.clamp_min(_ALPHA_FLOOR), color)
    if as_stored:
        # Each output is a weighted mean of inputs, so it lies within their range; float32
        # rounding can step just outside it (1.0000002 from ones), which would make a
        # float image in [0, 1] unwritable as PNG. Clamped on the device, nothing read back.
        out_color = torch.minimum(torch.maximum(out_color, color.amin()), color.amax())
    else:
        out_color = out_color.clamp(0.0, 1.0)
    if linear:
        out_color = linear_to_srgb(out_color)
    result = torch.cat([out_color, out_alpha]) if alpha_too else out_color
    if samples.dtype == torch.uint8:
        # 8-bit samples in, 8-bit samples out (every format keeps an 8-bit source at 8
        # bits), so a quarter of the bytes come back from the device.
        result = io.quantise(result, 8).to(torch.uint8)
    return result.permute(1, 2, 0).contiguous()


def to_planes(samples: torch.Tensor, bit_depth: int) -> torch.Tensor:
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


def _sigma_of(pixels: torch.Tensor, layout: io.Image, settings: BlurSettings) -> torch.Tensor:
    value = intensity(pixels, layout.mode, settings.channel)
    if layout.bit_depth == io.FLOAT_DEPTH:  # arbitrary units: their own range spans the sigmas
        value = normalised_by_range(value)
    return sigma_from_intensity(
        value,
        min_sigma=settings.min_sigma,
        max_sigma=settings.max_sigma,
        gamma=settings.gamma,
        invert=settings.invert,
    )


def _replayable(settings: BlurSettings, device: torch.device) -> bool:
    """Whether the blur with ``settings`` on ``device`` queues without reading anything back."""
    if device.type != "cuda":
        return False
    chosen = choose_backend(settings.method, settings.backend, device)
    return chosen.backend.graph_safe
