"""One picture to judge a blur at a glance: the input, its sigma map and the output, side by side.

The sigma map is drawn in a perceptual colour map (:data:`COLOURS`: lightness rises
evenly from dark violet to light yellow, so equal sigma steps look like equal steps and
the map reads in grey too), with a labelled scale in pixels under it. Each panel is
scaled to fit :data:`PANEL` pixels (small images are enlarged by whole factors, without
smoothing). No torch here.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from adaptiveblur import io
from adaptiveblur.color import linear_to_srgb

PANEL = 480  # the longest side of each panel, in pixels
SMALLEST = 160  # images smaller than this are enlarged (nearest neighbour) to about it
_MARGIN = 12
_CAPTION = 22
_BAR = 14
_TICKS = 3
_BACKGROUND = (255, 255, 255)
_INK = (32, 32, 32)
_CHECKER = (204, 204, 204), (240, 240, 240)  # behind transparent pixels


def _oklab_to_linear(lightness: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Oklab to linear-light sRGB, ``(..., 3)``, unclipped (outside ``[0, 1]``: out of gamut)."""
    l_ = (lightness + 0.3963377774 * a + 0.2158037573 * b) ** 3
    m_ = (lightness - 0.1055613458 * a - 0.0638541728 * b) ** 3
    s_ = (lightness - 0.0894841775 * a - 1.2914855480 * b) ** 3
    red = 4.0767416621 * l_ - 3.3077115913 * m_ + 0.2309699292 * s_
    green = -1.2684380046 * l_ + 2.6097574011 * m_ - 0.3413193965 * s_
    blue = -0.0041960863 * l_ - 0.7034186147 * m_ + 1.7076147010 * s_
    return np.stack([red, green, blue], axis=-1)


def _colour_map(count: int = 256) -> np.ndarray:
    """``(count, 3)`` uint8: Oklab lightness 0.27 to 0.94, hue from violet to yellow, and
    for each entry nine tenths of the largest chroma (up to a ramp from 0.09 to 0.17)
    that sRGB holds."""
    t = np.linspace(0.0, 1.0, count)
    lightness = 0.27 + 0.67 * t
    hue = np.radians(300.0 - 195.0 * t)

    def linear(chroma: np.ndarray) -> np.ndarray:
        return _oklab_to_linear(lightness, chroma * np.cos(hue), chroma * np.sin(hue))

    low, high = np.zeros(count), 0.09 + 0.08 * t
    for _ in range(30):  # bisect each entry's chroma to the edge of the gamut
        chroma = (low + high) / 2
        inside = np.all((linear(chroma) >= 0) & (linear(chroma) <= 1), axis=-1)
        low, high = np.where(inside, chroma, low), np.where(inside, high, chroma)
    # A little inside the edge, so no channel sits at 0 or 1 and each step shows.
    srgb = np.asarray(linear_to_srgb(np.clip(linear(0.9 * low), 0.0, 1.0)), dtype=np.float64)
    return np.round(srgb * 255).astype(np.uint8)


COLOURS = _colour_map()


def preview_image(
    before: io.Image, sigma_map: np.ndarray, after: io.Image, max_sigma: float
) -> io.Image:
    """The three panels, captioned, with the sigma scale from 0 to ``max_sigma`` pixels.

    Args:
        before, after: the input and the output (any mode and depth; alpha is shown over
            a checkerboard; a 32-bit float image by its own range).
        sigma_map: ``(H, W)`` sigma in pixels, of ``before``'s size.
        max_sigma: the top of the scale (the settings' largest sigma).

    Returns:
        An 8-bit RGB :class:`io.Image`.
    """
    height, width = sigma_map.shape
    size = _panel_size(width, height)
    top = max_sigma if max_sigma > 0 else 1.0
    scaled = np.clip(np.asarray(sigma_map, dtype=np.float32) / np.float32(top), 0.0, 1.0)
    sigma_panel = _resized(PILImage.fromarray(scaled, mode="F"), size)
    index = np.round(np.asarray(sigma_panel) * (len(COLOURS) - 1)).astype(np.intp)
    panels = [
        ("input", _resized(_displayed(before), size)),
        ("sigma (pixels)", PILImage.fromarray(COLOURS[index], mode="RGB")),
        ("output", _resized(_displayed(after), size)),
    ]
    font = _font()
    scale_height = _BAR + 6 + _CAPTION
    canvas = PILImage.new(
        "RGB",
        (
            len(panels) * size[0] + (len(panels) + 1) * _MARGIN,
            size[1] + _CAPTION + scale_height + 2 * _MARGIN,
        ),
        _BACKGROUND,
    )
    draw = ImageDraw.Draw(canvas)
    for number, (caption, panel) in enumerate(panels):
        left = _MARGIN + number * (size[0] + _MARGIN)
        draw.text((left, _MARGIN), caption, fill=_INK, font=font)
        canvas.paste(panel, (left, _MARGIN + _CAPTION))
    _draw_scale(
        draw,
        font,
        _MARGIN + size[0] + _MARGIN,
        _MARGIN + _CAPTION + size[1] + 6,
        size[0],
        max_sigma,
    )
    return io.Image(pixels=np.asarray(canvas), mode="RGB", bit_depth=8)


def _panel_size(width: int, height: int) -> tuple[int, int]:
    """Fit the longest side to :data:`PANEL`; enlarge by a whole factor up to :data:`SMALLEST`."""
    longest = max(width, height)
    factor = PANEL / longest if longest > PANEL else max(1, SMALLEST // longest)
    return max(1, round(width * factor)), max(1, round(height * factor))


def _resized(picture: PILImage.Image, size: tuple[int, int]) -> PILImage.Image:
    if picture.size == size:
        return picture
    smaller = size[0] < picture.size[0]
    return picture.resize(size, PILImage.Resampling.BOX if smaller else PILImage.Resampling.NEAREST)


def _displayed(image: io.Image) -> PILImage.Image:
    """``image`` as 8-bit RGB for the eye: gray spread to RGB, alpha over a checkerboard."""
    pixels = image.float_pixels()
    if image.bit_depth == io.FLOAT_DEPTH:
        low, high = float(pixels.min()), float(pixels.max())
        pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    colour = pixels[..., : image.color_channels]
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    if image.has_alpha:
        height, width = pixels.shape[:2]
        rows, columns = np.indices((height, width))
        tiles = ((rows // 8 + columns // 8) % 2)[..., None]
        checker = np.where(tiles, *(np.array(shade) / 255 for shade in _CHECKER))
        alpha = pixels[..., -1:]
        colour = colour * alpha + checker * (1 - alpha)
    return PILImage.fromarray(np.round(np.clip(colour, 0, 1) * 255).astype(np.uint8), mode="RGB")


def _draw_scale(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    left: int,
    top: int,
    width: int,
    max_sigma: float,
) -> None:
    """The colour bar under the sigma panel, with ticks at 0, the middle and ``max_sigma``."""
    ramp = COLOURS[np.linspace(0, len(COLOURS) - 1, width).round().astype(np.intp)]
    for column, colour in enumerate(ramp):
        draw.line(
            [(left + column, top), (left + column, top + _BAR - 1)],
            fill=tuple(int(c) for c in colour),
        )
    for tick in range(_TICKS):
        fraction = tick / (_TICKS - 1)
        x = left + round(fraction * (width - 1))
        draw.line([(x, top + _BAR), (x, top + _BAR + 3)], fill=_INK)
        label = f"{fraction * max_sigma:g}" + (" px" if tick == _TICKS - 1 else "")
        text_width = draw.textlength(label, font=font)
        anchor_x = min(max(left, x - text_width / 2), left + width - text_width)
        draw.text((anchor_x, top + _BAR + 5), label, fill=_INK, font=font)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """pillow's own font at a readable size (a bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=14)
    except (TypeError, OSError):  # pillow < 10.1 or no FreeType
        return ImageFont.load_default()
