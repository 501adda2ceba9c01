"""Per-location kernels as differentiable torch functions.

* :func:`adaptiveblur.adaptive_blur` (re-exported here): a Gaussian per pixel,
  differentiable with respect to the image **and** sigma (so a network can predict
  sigma); the kernel size follows sigma on every call.
* :func:`spatially_varying_conv2d`: a different kernel at every output location, either given
  whole, ``(B, C_out, C_in, k, k, H, W)``, or factored as a shared learnable ``weight
  (C_out, C_in, k, k)`` modulated per location by a known ``modulation (B, k*k, H, W)``.

Both keep memory bounded: no ``k^2``-sized activation is kept for the whole image in either
pass. The factored convolution is :mod:`adaptiveblur.ops.shifted_conv`'s op on the CPU and,
through fused Triton kernels (:mod:`adaptiveblur.ops.triton_conv`), on CUDA (inputs those
kernels refuse, such as mixed dtypes, take the op's torch loops). Per-location kernels on
CUDA, and the factored form on a device where Triton cannot run, go tile by tile with halos
under ``max_memory``, each tile checkpointed and recomputed in the backward pass.

Example:
    >>> x = torch.rand(1, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    >>> sigma = torch.full((1, 1, 16, 16), 1.5, dtype=torch.float64, requires_grad=True)
    >>> adaptive_blur(x, sigma).sum().backward()
    >>> x.grad.shape, sigma.grad.shape
    (torch.Size([1, 3, 16, 16]), torch.Size([1, 1, 16, 16]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from adaptiveblur.borders import read_window
from adaptiveblur.errors import InvalidParameterError
from adaptiveblur.ops.blur import adaptive_blur
from adaptiveblur.ops.shifted_conv import shifted_conv
from adaptiveblur.tiling import DEFAULT_MAX_MEMORY, Tile, plan_tiles, tile_side

__all__ = ["adaptive_blur", "spatially_varying_conv2d"]

PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate"}


def spatially_varying_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    modulation: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    padding_mode: str = "zeros",
    max_memory: int | None = None,
) -> torch.Tensor:
    """2-D convolution with a different kernel at every output location ("same" size, stride 1).

    ``out[b, o, y, x] = bias[o] + sum_{c, i, j} K[b, o, c, i, j, y, x] * x[b, c, y + i - r, x + j - r]``
    with ``r = k // 2`` and the kernel ``K`` either

    * given whole: ``weight`` of shape ``(B, C_out, C_in, k, k, H, W)`` (``B`` may be 1), or
    * factored: ``weight`` of shape ``(C_out, C_in, k, k)`` shared by all locations, times
      ``modulation`` of shape ``(B, k*k, H, W)`` (row-major window offsets), i.e.
      ``K[b, o, c, i, j, y, x] = weight[o, c, i, j] * modulation[b, i*k + j, y, x]``
      (without ``modulation`` this is an ordinary ``same`` convolution).

    Equal to unfold + multiply + matmul + fold, computed in tiles (memory bounded by
    ``max_memory``) and differentiable with respect to ``x``, ``weight``, ``modulation`` and
    ``bias``; the kernel size ``k`` is read from ``weight`` on every call.

    Args:
        x: ``(B, C_in, H, W)`` float tensor.
        weight: ``(C_out, C_in, k, k)`` or ``(B, C_out, C_in, k, k, H, W)``; ``k`` odd.
        modulation: ``(B, k*k, H, W)`` with the shared weight, else ``None``.
        bias: ``(C_out,)`` or ``None``.
        padding_mode: ``"zeros"``, ``"reflect"`` or ``"replicate"``.
        max_memory: bytes of temporaries per step (default 1 GiB); the fused CUDA kernels of
            the factored form keep none and ignore it.

    Returns:
        ``(B, C_out, H, W)``.

    Raises:
        InvalidParameterError: shapes that do not fit together, an even ``k``, or an
            unknown padding mode.

    Example:
        >>> x = torch.rand(2, 3, 10, 12)
        >>> weight = torch.rand(4, 3, 5, 5)
        >>> modulation = torch.rand(2, 25, 10, 12)
        >>> spatially_varying_conv2d(x, weight, modulation=modulation).shape
        torch.Size([2, 4, 10, 12])
    """
    size, per_location = _check_conv(x, weight, modulation, bias, padding_mode)
    batch, in_channels, height, width = x.shape
    out_channels = weight.shape[-6] if per_location else weight.shape[0]
    element = x.element_size()
    window = size * size
    kernel_bytes = batch * out_channels * in_channels * window if per_location else window * batch
    per_pixel = (batch * in_channels * window * 2 + kernel_bytes) * element
    budget = DEFAULT_MAX_MEMORY if max_memory is None else max_memory
    side = tile_side(per_pixel, budget, height, width)

    if x.device.type == "cpu" or _fused_kernels_run_on(x.device):
        # On the CPU one pass per window offset over views of the padded input, with a
        # backward pass of its own; on CUDA the same op runs fused Triton kernels (see
        # adaptiveblur.ops.shifted_conv, triton_conv and triton_local): no k^2-sized
        # windows beyond the caller's, and max_memory is not needed.
        r = size // 2
        padded = read_window(x, -r, height + r, -r, width + r, PADDING_MODES[padding_mode])
        output = shifted_conv(padded, weight, modulation, size, budget)
        return output if bias is None else output + bias.view(1, -1, 1, 1)
    differentiable = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, modulation)
    )
    output = x.new_empty(batch, out_channels, height, width)
    # The k*k-sized inputs are cut into tiles by one split each, so their backward gathers
    # the tiles' gradients once instead of a full-size gradient per tile.
    kernel_tiles = _tile_grid(weight, side) if per_location else None
    modulation_tiles = _tile_grid(modulation, side) if modulation is not None else None
    for tile in plan_tiles(height, width, side):
        row, col = tile.y0 // side, tile.x0 // side
        tile_weight = kernel_tiles[row][col] if kernel_tiles is not None else weight
        tile_modulation = modulation_tiles[row][col] if modulation_tiles is not None else None
        arguments = (x, tile_weight, tile_modulation, tile, size, PADDING_MODES[padding_mode])
        if differentiable:
            result = checkpoint(_conv_one_tile, *arguments, use_reentrant=False)
        else:
            result = _conv_one_tile(*arguments)
        output[..., tile.y0 : tile.y1, tile.x0 : tile.x1] = result
    if bias is not None:
        output = output + bias.view(1, -1, 1, 1)
    return output


@torch.compiler.assume_constant_result  # a fact about the device: torch.compile folds it
def _fused_kernels_run_on(device: torch.device) -> bool:
    """Whether the Triton kernels of the convolution run on ``device`` (a CUDA device)."""
    from adaptiveblur.ops import triton_conv

    return triton_conv.available(device) is None


def _conv_one_tile(
    x: torch.Tensor,
    weight: torch.Tensor,
    modulation: torch.Tensor | None,
    tile: Tile,
    size: int,
    border: str,
) -> torch.Tensor:
    """Convolve one output tile; its input comes from a halo of ``size // 2`` around it.

    ``weight`` (when per location) and ``modulation`` are already cut to the tile.
    """
    r = size // 2
    padded = read_window(x, tile.y0 - r, tile.y1 + r, tile.x0 - r, tile.x1 + r, border)
    batch, channels = x.shape[:2]
    height, width = tile.height, tile.width
    # im2col: windows[b, c, i*k + j, y*w + x] = padded[b, c, y + i, x + j]
    windows = F.unfold(padded, size).view(batch, channels, size * size, height * width)
    if weight.dim() == 7:
        kernels = weight.flatten(3, 4).flatten(-2)  # (B, C_out, C_in, k*k, h*w)
        out = (windows.unsqueeze(1) * kernels).sum(dim=(2, 3))
    else:
        if modulation is not None:
            windows = windows * modulation.flatten(-2).unsqueeze(1)
        shared = weight.flatten(1)  # (C_out, C_in*k*k)
        out = shared @ windows.flatten(1, 2)
    return out.view(batch, -1, height, width)


def _tile_grid(values: torch.Tensor, side: int) -> list[tuple[torch.Tensor, ...]]:
    """``values[..., H, W]`` cut into the row-major grid of ``plan_tiles(H, W, side)``."""
    return [band.split(side, dim=-1) for band in values.split(side, dim=-2)]


def _check_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    modulation: torch.Tensor | None,
    bias: torch.Tensor | None,
    padding_mode: str,
) -> tuple[int, bool]:
    """Validate shapes; return the kernel size and whether kernels are given per location."""
    if x.dim() != 4 or not x.is_floating_point():
        raise InvalidParameterError(
            f"expected x of shape (B, C_in, H, W), floating point, got {tuple(x.shape)} {x.dtype}"
        )
    if padding_mode not in PADDING_MODES:
        raise InvalidParameterError(
            f"expected padding_mode in {', '.join(PADDING_MODES)}, got {padding_mode!r}"
        )
    batch, in_channels, height, width = x.shape
    per_location = weight.dim() == 7
    if per_location:
        wb, _, wc, k1, k2, wh, ww = weight.shape
        if wb not in (1, batch) or wc != in_channels or k1 != k2 or (wh, ww) != (height, width):
            raise InvalidParameterError(
                f"expected per-location weight of shape ({batch}, C_out, {in_channels}, k, k, "
                f"{height}, {width}), got {tuple(weight.shape)}"
            )
        if modulation is not None:
            raise InvalidParameterError("modulation goes with a shared (C_out, C_in, k, k) weight")
    elif weight.dim() == 4:
        _, wc, k1, k2 = weight.shape
        if wc != in_channels or k1 != k2:
            raise InvalidParameterError(
                f"expected weight of shape (C_out, {in_channels}, k, k), got {tuple(weight.shape)}"
            )
    else:
        raise InvalidParameterError(
            "expected weight of shape (C_out, C_in, k, k) or (B, C_out, C_in, k, k, H, W), "
            f"got {tuple(weight.shape)}"
        )
    if k1 % 2 == 0:
        raise InvalidParameterError(f"expected an odd kernel size, got {k1}")
    if modulation is not None and tuple(modulation.shape) not in (
        (batch, k1 * k1, height, width),
        (1, k1 * k1, height, width),
    ):
        raise InvalidParameterError(
            f"expected modulation of shape ({batch}, {k1 * k1}, {height}, {width}), "
            f"got {tuple(modulation.shape)}"
        )
    out_channels = weight.shape[1] if per_location else weight.shape[0]
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise InvalidParameterError(
            f"expected bias of shape ({out_channels},), got {tuple(bias.shape)}"
        )
    return k1, per_location
