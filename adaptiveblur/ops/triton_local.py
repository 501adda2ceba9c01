"""Fused Triton kernels for the spatially varying convolution with a kernel per location.

With ``x`` the padded input ``(B, C, H + k - 1, W + k - 1)``, ``K`` the kernels
``(B or 1, O, C, k, k, H, W)`` and ``g`` the output's gradient:

    out[b, o, p]       = sum_{c, i, j} K[b, o, c, i, j, p] x[b, c, p + (i, j)]
    dx[b, c, q]        = sum_{o, i, j} K[b, o, c, i, j, q - (i, j)] g[b, o, q - (i, j)]
                         (over the p = q - (i, j) inside the output)
    dK[b, o, c, i, j, p] = g[b, o, p] x[b, c, p + (i, j)]    (summed over b when K has one)

Each kernel reads ``K`` (or writes ``dK``) once, plane by plane along the pixels, so it
runs at the memory's speed: ``K`` is ``k^2 C`` times the output, and no other ``k^2``-sized
tensor exists. A program owns a run of pixels of one image and one output channel
(forward), input channel (``dx``) or pair of them (``dK``), and every sum runs in a fixed
order: no atomics, the same bits every run. float16 and bfloat16 are computed in float32
and stored in their own dtype; float64 in float64.

Offsets into ``K`` are int64; those inside one image of ``x``, ``g`` or the output int32,
so :func:`handles` refuses images of ``2**31`` elements or more.
"""

from __future__ import annotations

import math

import torch

from adaptiveblur.ops.triton import available, on_device
from adaptiveblur.ops.triton_conv import _DTYPES, _INT32  # the dtypes and offsets both take

try:
    import triton
    import triton.language as tl
except ImportError:  # available() then says why; nothing here runs
    triton = None
    tl = None

_BLOCK = 256  # pixels per program
_WARPS = 4


def handles(padded: torch.Tensor, weight: torch.Tensor, modulation: torch.Tensor | None) -> bool:
    """Whether :func:`local_forward` and :func:`local_backward` take these CUDA inputs:
    per-location kernels ``(B or 1, C_out, C_in, k, k, H, W)`` with no modulation, one
    floating dtype for both, and images small enough for int32 offsets."""
    if modulation is not None or weight.dim() != 7 or padded.dim() != 4:
        return False
    if padded.dtype not in _DTYPES or weight.dtype != padded.dtype:
        return False
    if weight.device != padded.device or not padded.is_cuda:
        return False
    if available(padded.device) is not None:
        return False
    out_channels, height, width = weight.shape[1], weight.shape[-2], weight.shape[-1]
    image = max(math.prod(padded.shape[1:]), out_channels * height * width)
    return image <= _INT32


def local_forward(padded: torch.Tensor, weight: torch.Tensor, size: int) -> torch.Tensor:
    """``out (B, C_out, H, W)`` of :mod:`adaptiveblur.ops.shifted_conv`'s per-location form."""
    x, kernels = padded.contiguous(), weight.contiguous()
    batch, channels = x.shape[:2]
    out_channels, height, width = kernels.shape[1], kernels.shape[-2], kernels.shape[-1]
    out = x.new_empty(batch, out_channels, height, width)
    if out.numel() == 0:
        return out
    grid = (triton.cdiv(height * width, _BLOCK), out_channels, batch)
    with on_device(x.device):
        _forward_kernel[grid](
            x, kernels, out, channels, out_channels, height, width, x.shape[-1],
            SIZE=size, K_BATCHED=kernels.shape[0] > 1, FP64=x.dtype == torch.float64,
            BLOCK=_BLOCK, num_warps=_WARPS,
        )  # fmt: skip
    return out


def local_backward(
    grad_out: torch.Tensor,
    padded: torch.Tensor,
    weight: torch.Tensor,
    size: int,
    *,
    want_x: bool,
    want_weight: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The gradients to ``padded`` and to ``weight`` (``None`` for one not wanted), each in
    its input's dtype and shape."""
    x, kernels, g = padded.contiguous(), weight.contiguous(), grad_out.contiguous()
    batch, channels, padded_height, padded_width = x.shape
    k_batch, out_channels = kernels.shape[:2]
    height, width = kernels.shape[-2], kernels.shape[-1]
    fp64 = x.dtype == torch.float64
    grad_x = grad_w = None
    if want_x:
        grad_x = torch.empty_like(x)
        if grad_x.numel() > 0:
            grid = (triton.cdiv(padded_height * padded_width, _BLOCK), channels, batch)
            with on_device(x.device):
                _grad_x_kernel[grid](
                    g, kernels, grad_x, channels, out_channels, height, width,
                    padded_height, padded_width,
                    SIZE=size, K_BATCHED=k_batch > 1, FP64=fp64, BLOCK=_BLOCK, num_warps=_WARPS,
                )  # fmt: skip
    if want_weight:
        grad_w = torch.empty_like(kernels)
        if grad_w.numel() > 0:
            grid = (triton.cdiv(height * width, _BLOCK), out_channels * channels, k_batch)
            with on_device(x.device):
                _grad_w_kernel[grid](
                    g, x, grad_w, batch, channels, out_channels, height, width, padded_width,
                    SIZE=size, K_BATCHED=k_batch > 1, FP64=fp64, BLOCK=_BLOCK, num_warps=_WARPS,
                )  # fmt: skip
    return grad_x, grad_w


def _jit(fn):  # noqa: ANN001, ANN202 - a Triton kernel, or the plain function without Triton
    return fn if triton is None else triton.jit(fn)


@_jit
def _forward_kernel(
    x_ptr, k_ptr, out_ptr, channels, out_channels, height, width, padded_width,
    SIZE: tl.constexpr, K_BATCHED: tl.constexpr, FP64: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``BLOCK`` output pixels of one image ``b`` and output channel ``o``."""
    pix = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    o = tl.program_id(1)
    b = tl.program_id(2)
    pixels = height * width
    inside = pix < pixels
    y = pix // width
    x = pix % width
    kb = b if K_BATCHED else 0
    acc = tl.zeros([BLOCK], tl.float64 if FP64 else tl.float32)
    padded_pixels = (height + SIZE - 1) * padded_width
    for c in range(channels):
        row = x_ptr + (b * channels + c).to(tl.int64) * padded_pixels + y * padded_width + x
        plane = ((kb * out_channels + o) * channels + c).to(tl.int64) * (SIZE * SIZE)
        for i in range(SIZE):
            for j in range(SIZE):
                at = (plane + i * SIZE + j) * pixels + pix
                weight = tl.load(k_ptr + at, mask=inside, other=0.0)
                value = tl.load(row + i * padded_width + j, mask=inside, other=0.0)
                acc += weight.to(acc.dtype) * value.to(acc.dtype)
    out = out_ptr + (b * out_channels + o).to(tl.int64) * pixels + pix
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=inside)


@_jit
def _grad_x_kernel(
    g_ptr, k_ptr, gx_ptr, channels, out_channels, height, width, padded_height, padded_width,
    SIZE: tl.constexpr, K_BATCHED: tl.constexpr, FP64: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``BLOCK`` padded input positions ``q`` of one image ``b`` and input channel ``c``:
    a gather over the output pixels ``q - (i, j)`` whose windows hold ``q``."""
    q = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    c = tl.program_id(1)
    b = tl.program_id(2)
    pixels = height * width
    inside = q < padded_height * padded_width
    qy = q // padded_width
    qx = q % padded_width
    kb = b if K_BATCHED else 0
    acc = tl.zeros([BLOCK], tl.float64 if FP64 else tl.float32)
    for o in range(out_channels):
        grad = g_ptr + (b * out_channels + o).to(tl.int64) * pixels
        plane = ((kb * out_channels + o) * channels + c).to(tl.int64) * (SIZE * SIZE)
        for i in range(SIZE):
            py = qy - i
            row_ok = inside & (py >= 0) & (py < height)
            for j in range(SIZE):
                px = qx - j
                ok = row_ok & (px >= 0) & (px < width)
                p = py * width + px
                weight = tl.load(k_ptr + (plane + i * SIZE + j) * pixels + p, mask=ok, other=0.0)
                value = tl.load(grad + p, mask=ok, other=0.0)
                acc += weight.to(acc.dtype) * value.to(acc.dtype)
    out = gx_ptr + (b * channels + c).to(tl.int64) * (padded_height * padded_width) + q
    tl.store(out, acc.to(gx_ptr.dtype.element_ty), mask=inside)


@_jit
def _grad_w_kernel(
    g_ptr, x_ptr, gk_ptr, batch, channels, out_channels, height, width, padded_width,
    SIZE: tl.constexpr, K_BATCHED: tl.constexpr, FP64: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``BLOCK`` pixels of the ``k x k`` kernel planes of one ``(o, c)`` pair: ``g x``
    shifted, of image ``kb`` (or summed over the batch in order, for a shared ``K``)."""
    pix = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    pair = tl.program_id(1)
    kb = tl.program_id(2)
    o = pair // channels
    c = pair % channels
    pixels = height * width
    inside = pix < pixels
    y = pix // width
    x = pix % width
    padded_pixels = (height + SIZE - 1) * padded_width
    first = kb if K_BATCHED else 0
    count = 1 if K_BATCHED else batch
    plane = ((kb * out_channels + o) * channels + c).to(tl.int64) * (SIZE * SIZE)
    for i in range(SIZE):
        for j in range(SIZE):
            acc = tl.zeros([BLOCK], tl.float64 if FP64 else tl.float32)
            for b in range(first, first + count):
                grad = tl.load(
                    g_ptr + (b * out_channels + o).to(tl.int64) * pixels + pix,
                    mask=inside,
                    other=0.0,
                )
                row = x_ptr + (b * channels + c).to(tl.int64) * padded_pixels
                value = tl.load(row + (y + i) * padded_width + x + j, mask=inside, other=0.0)
                acc += grad.to(acc.dtype) * value.to(acc.dtype)
            out = gk_ptr + (plane + i * SIZE + j) * pixels + pix
            tl.store(out, acc.to(gk_ptr.dtype.element_ty), mask=inside)
