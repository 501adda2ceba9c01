"""The reference backend: the unfold-weighted-sum, one tile at a time.

Always available, on any device, differentiable, and written to be read: each output
pixel is the Gaussian-weighted mean of its own square window, formed from a strided
(copy-free) view of every window and a per-pixel weight tensor. Temporaries hold
``rows * K`` values per pixel, where the caller picks ``rows`` to fit its memory budget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaptiveblur.kernels import gaussian_taps
from adaptiveblur.ops.tile import TileInput
from adaptiveblur.tiling import chunks


def available(device: torch.device) -> str | None:
    """Always available: plain torch operations on any device."""
    return None


def bytes_per_pixel(batch: int, channels: int, window: int, element: int) -> int:
    """Temporaries per output pixel with the whole ``window x window`` window at once."""
    return batch * (channels + 2) * window * window * element


def blur_tile(tile: TileInput) -> torch.Tensor:
    """Blur one tile; the window is split into row chunks when it would not fit ``tile.budget``.

    Returns:
        ``(B, C, h, w)`` in the tile's dtype; differentiable in ``padded`` and ``sigma``.
    """
    padded, sigma, halo = tile.padded, tile.sigma, tile.halo
    size = 2 * halo + 1
    batch, channels = padded.shape[:2]
    height, width = tile.height, tile.width
    per_row = bytes_per_pixel(batch, channels, size, padded.element_size()) // size
    rows_per_chunk = max(1, min(size, tile.budget // max(per_row * height * width, 1)))
    offsets = torch.arange(-halo, halo + 1, device=padded.device)
    taps = gaussian_taps(sigma, tile.radius, offsets).flatten(2, 3)  # (B, 1, h*w, K), both axes
    numerator = padded.new_zeros(batch, channels, height * width)
    denominator = sigma.new_zeros(batch, 1, height * width)
    for start, stop in chunks(size, rows_per_chunk):
        rows = stop - start
        # The unfold: windows[b, c, i, j, p] = padded[b, c, y(p) + start + i, x(p) + j].
        band = padded[..., start : start + height + rows - 1, :]
        windows = F.unfold(band, (rows, size)).view(batch, channels, rows, size, height * width)
        weights = taps[..., start:stop].mT[..., :, None, :] * taps.mT[..., None, :, :]
        numerator = numerator + (windows * weights).sum(dim=(2, 3))
        denominator = denominator + weights.sum(dim=(2, 3))
    return (numerator / denominator).view(batch, channels, height, width)
