"""The fast method's small windows: the exact blur of pixels whose radius is small.

A pixel whose radius is at most ``levels.EXACT_RADIUS`` gets the exact sum, from the
fused exact backend the registry names for the tile's device and dtype, else in torch.
In torch its separable weights ``b_i`` are shared by the pixels at ``(+-i, +-j)``, so
the window costs ``(r + 1)^2`` multiply-adds, not ``(2 r + 1)^2``. On CPU the tile is
cut into blocks that reach only their own largest radius (cost follows the sigma map);
on GPUs row bands reach the tile's largest radius (gathering blocks costs more there
than it saves). Why small windows are not interpolated: ``docs/fast_method.md``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from adaptiveblur.kernels import SIGMA_FLOOR
from adaptiveblur.ops import registry
from adaptiveblur.ops.tile import TileInput

_EXACT_BLOCK = 32  # block side of the CPU path: each block reaches its own radius
_EXACT_CACHE_BYTES = 16 << 20  # CPU batches of blocks: in cache, few calls


def blur_exact_small(tile: TileInput, reach: int, output: torch.Tensor) -> None:
    """Write the exact blur of every pixel with ``tile.radius > 0`` into ``output``.

    Args:
        tile: the tile, its ``radius`` already 0 for the pixels left to the levels.
        reach: the largest value of ``tile.radius`` (``<= tile.halo``).
        output: ``(B, C, h, w)``, in the tile's dtype; other pixels are left as they are.
    """
    device, dtype = tile.padded.device, tile.padded.dtype
    fused = registry.fused_exact(device, dtype)
    if fused is not None:
        window = dataclasses.replace(tile, padded=tile.around(reach).contiguous(), halo=reach)
        blurred = fused.load().blur_tile(window)
        output.copy_(torch.where(tile.radius > 0, blurred, output))
    elif device.type == "cpu":
        exact_by_blocks(tile, output)
    else:
        exact_by_rows(tile, reach, output)


def exact_by_rows(tile: TileInput, reach: int, output: torch.Tensor) -> None:
    """:func:`blur_exact_small` in torch by row bands that reach ``reach`` (the largest radius)."""
    padded, sigma, radius = tile.padded, tile.sigma, tile.radius
    batch, channels = padded.shape[:2]
    height, width = tile.height, tile.width
    row_bytes = (reach + 4) * (channels + 1) * batch * (width + 2 * reach) * padded.element_size()
    rows = max(1, min(height, tile.budget // row_bytes))
    for y0 in range(0, height, rows):
        y1 = min(y0 + rows, height)
        window = tile.around(reach, rows=(y0, y1))
        band_radius = radius[..., y0:y1, :]
        band_sigma = sigma[..., y0:y1, :].clamp_min(SIGMA_FLOOR)
        blurred = _exact_window_sum(window, band_sigma, band_radius, reach)
        part = output[..., y0:y1, :]
        part.copy_(torch.where(band_radius > 0, blurred, part))


def exact_by_blocks(tile: TileInput, output: torch.Tensor) -> None:
    """:func:`blur_exact_small` in torch by blocks: those of equal reach run as cache-sized batches."""
    padded, sigma, radius = tile.padded, tile.sigma, tile.radius
    batch, channels = padded.shape[:2]
    height, width = tile.height, tile.width
    side = _EXACT_BLOCK
    blocks_y, blocks_x = -(-height // side), -(-width // side)
    widen = (0, blocks_x * side - width, 0, blocks_y * side - height)  # to whole blocks

    def by_block(plane: torch.Tensor) -> torch.Tensor:
        # (B, K, blocks_y * side, blocks_x * side) -> (blocks_y, blocks_x, B, K, side, side)
        return (
            plane.unflatten(-1, (blocks_x, side))
            .unflatten(-3, (blocks_y, side))
            .permute(2, 4, 0, 1, 3, 5)
        )

    radius_blocks = by_block(F.pad(radius, widen))
    sigma_blocks = by_block(F.pad(sigma.clamp_min(SIGMA_FLOOR), widen, value=1.0))
    block_reach = radius_blocks.amax(dim=(2, 3, 4, 5))  # (blocks_y, blocks_x)
    top = int(block_reach.max())
    # The input `top` around the tile; the zeros past it only feed discarded outputs.
    source = tile.around(top)
    source = F.pad(source, widen)
    exact = by_block(padded.new_zeros((batch, channels, blocks_y * side, blocks_x * side)))
    element = padded.element_size()
    for reach in torch.unique(block_reach).tolist():
        if reach <= 0:
            continue
        size = side + 2 * reach
        # Every block's window, as a view: (B, C, blocks_y, blocks_x, size, size).
        margin = top - reach
        windows = source[..., margin : margin + blocks_y * side + 2 * reach, margin:]
        windows = (
            windows[..., : blocks_x * side + 2 * reach].unfold(2, size, side).unfold(3, size, side)
        )
        chosen_y, chosen_x = torch.nonzero(block_reach == reach, as_tuple=True)
        block_bytes = (3 * channels + 1) * (reach + 1) * batch * size * size * element
        group = max(1, min(tile.budget, _EXACT_CACHE_BYTES) // block_bytes)
        for first in range(0, chosen_y.numel(), group):
            iy, ix = chosen_y[first : first + group], chosen_x[first : first + group]
            count = iy.numel()
            blurred = _exact_window_sum(
                windows[:, :, iy, ix].movedim(2, 0).flatten(0, 1),
                sigma_blocks[iy, ix].flatten(0, 1),
                radius_blocks[iy, ix].flatten(0, 1),
                reach,
            )
            exact[iy, ix] = blurred.unflatten(0, (count, batch))
    exact_tile = exact.permute(2, 3, 0, 4, 1, 5).flatten(4, 5).flatten(2, 3)[..., :height, :width]
    output.copy_(torch.where(radius > 0, exact_tile, output))


def _exact_window_sum(
    window: torch.Tensor, sigma: torch.Tensor, radius: torch.Tensor, reach: int
) -> torch.Tensor:
    """Exact normalised blur of the interior of ``window``.

    Args:
        window: ``(N, C, h + 2 reach, w + 2 reach)``.
        sigma: ``(N, 1, h, w)``, all > 0.
        radius: ``(N, 1, h, w)``, all ``<= reach``.

    Returns:
        ``(N, C, h, w)``: ``sum_{i,j} b_i b_j C_ij / (b_0 + 2 sum_{i>0} b_i)^2``.
    """
    height, width = sigma.shape[-2:]
    distance = torch.arange(reach + 1, device=window.device, dtype=sigma.dtype).view(-1, 1, 1, 1, 1)
    # taps[i] = b_i, zero past the pixel's own radius: (reach + 1, N, 1, h, w).
    taps = torch.exp(-(distance * distance) / (2.0 * sigma * sigma)) * (distance <= radius)
    taps = taps.to(window.dtype)
    # pairs[i] = I(x + i) + I(x - i) on every row of the window; pairs[0] = I(x).
    pairs = window.new_empty((reach + 1,) + window.shape[:-1] + (width,))
    pairs[0].copy_(window[..., reach : reach + width])
    for i in range(1, reach + 1):
        torch.add(
            window[..., reach + i : reach + i + width],
            window[..., reach - i : reach - i + width],
            out=pairs[i],
        )
    # In-place multiply-adds only: on cache-sized blocks allocation costs more than arithmetic.
    total = window.new_zeros(window.shape[:2] + (height, width))
    inner = torch.empty_like(total)
    for j in range(reach + 1):
        torch.mul(pairs[0][..., reach + j : reach + j + height, :], taps[0], out=inner)
        if j > 0:
            inner.add_(pairs[0][..., reach - j : reach - j + height, :])
        for i in range(1, reach + 1):
            inner.addcmul_(taps[i], pairs[i][..., reach + j : reach + j + height, :])
            if j > 0:
                inner.addcmul_(taps[i], pairs[i][..., reach - j : reach - j + height, :])
        total.addcmul_(taps[j], inner)
    norm = 2.0 * taps.sum(0) - 1.0  # b_0 = 1 counted once, the other taps twice
    return total.div_(norm * norm)
