"""Fused Triton kernels for the factored spatially varying convolution, forward and backward.

With ``x`` the padded input ``(B, C, H + k - 1, W + k - 1)``, ``w`` the shared weight
``(O, C, k, k)``, ``m`` the modulation ``(B or 1, T = k*k, H, W)`` (or none: all ones), a
tap ``t = i k + j`` and ``d_t = (i, j)``:

    out[b, o, p]   = sum_{t, c} w[o, c, t] m[b, t, p] x[b, c, p + d_t]
    h[b, c, t, p]  = sum_o w[o, c, t] g[b, o, p]                    (g: out's gradient)
    dx[b, c, q]    = sum_t m[b, t, q - d_t] h[b, c, t, q - d_t]     (over the p = q - d_t
                                                                     inside the output)
    dm[b, t, p]    = sum_c x[b, c, p + d_t] h[b, c, t, p]
    dw[o, c, t]    = sum_{b, p} g[b, o, p] m[b, t, p] x[b, c, p + d_t]

Each is an implicit GEMM whose operand is gathered from the image on the fly, so no
``k^2``-sized tensor exists beyond the modulation the caller gave and its gradient (``h``
is never stored: the ``dx`` and ``dm`` kernels contract ``w`` with ``g`` block by block):

* forward: a program owns ``(BLOCK_O output channels) x (BLOCK_P pixels)`` of one image
  and adds ``w[o-block, c-block, t] @ (m[t] * x[c-block, p + d_t])`` for every tap and
  channel block;
* ``dx``: a program owns channels x pixels of the *padded* input and gathers, tap by tap,
  ``w[o-block, c-block, t]^T @ (m * g)[o-block, q - d_t]`` from the output pixels whose
  windows hold it (each padded pixel is written once: no atomics);
* ``dm``: a program owns pixels and, for each tap, forms ``h`` for a channel block as
  ``w[:, c-block, t]^T @ g`` and reduces it against the shifted input;
* ``dw``: a program owns ``(BLOCK_O) x (BLOCK_K taps and channels)`` of the weight and
  sums ``g @ (m * x)^T`` over its share of the pixels; the shares' partial sums land in
  a buffer that ``torch.sum`` adds in a fixed order.

Every sum runs in a fixed order, so two runs give the same bits. ``tl.dot`` runs as
float32 arithmetic or, where the GPU has tf32 tensor cores, as three tf32 products of
each operand's high and low parts (``input_precision="tf32x3"``), which keeps float32's
accuracy (:func:`plan`); never as plain tf32. float16 and bfloat16 are loaded and
computed as float32 and stored in their own dtype. Where the channel counts are too small
to fill ``tl.dot``'s tiles (it needs 16 a side; :func:`plan` decides) and for float64, the
"rank-1" kernels add one outer product per tap and channel instead, in the input's
precision (float32 or float64), and ``dw`` sums the same products without ``tl.dot``.

Offsets inside one image are int32, so :func:`handles` refuses inputs whose single image
(of ``x``, ``m`` or the output) has ``2**31`` elements or more.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # available() then says why; nothing here runs
    triton = None
    tl = None

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INT32 = 2**31 - 1
_MIN_DOT = 16  # tl.dot's smallest side


@dataclass(frozen=True)
class Blocks:
    """How one kernel is tiled.

    Attributes:
        rows: channels a program owns: output channels (forward, ``dw``) or input channels
            (``dx``, ``dm``).
        inner: channels per step of the contraction (input channels for the forward pass,
            output channels for ``dx`` and ``dm``), or for ``dw`` the (tap, channel)
            columns a program owns.
        pixels: pixels per program (forward, ``dx``, ``dm``) or per step (``dw``).
        dot: ``tl.dot`` tiles (float32 arithmetic); otherwise outer products (rank-1 updates)
            in the input's precision, with ``inner`` unused (forward, ``dx``, ``dm``), and
            for ``dw`` a product summed in registers (for float64).
        num_warps: warps per program.
        num_stages: software-pipelining stages of the contraction loop.
        precision: ``tl.dot``'s ``input_precision``.
    """

    rows: int
    inner: int
    pixels: int
    dot: bool
    num_warps: int = 4
    num_stages: int = 3
    precision: str = "ieee"


@dataclass(frozen=True)
class Plan:
    """The tiling of each of the four kernels, and how many pixel shares ``dw`` sums."""

    forward: Blocks
    grad_x: Blocks
    grad_m: Blocks
    grad_w: Blocks
    splits: int


def available(device: torch.device) -> str | None:
    """``None`` when the kernels can run on ``device`` (a CUDA device Triton supports),
    else why not."""
    from adaptiveblur.ops.triton import available as triton_available

    return triton_available(device)


def handles(padded: torch.Tensor, weight: torch.Tensor, modulation: torch.Tensor | None) -> bool:
    """Whether :func:`conv_forward` and :func:`conv_backward` take these CUDA inputs: a shared
    ``(C_out, C_in, k, k)`` weight, one floating dtype for all, and images small enough
    for int32 offsets."""
    tensors = [padded, weight] if modulation is None else [padded, weight, modulation]
    if weight.dim() != 4 or padded.dim() != 4 or padded.dtype not in _DTYPES:
        return False
    if any(t.dtype != padded.dtype or t.device != padded.device for t in tensors):
        return False
    if not padded.is_cuda or available(padded.device) is not None:
        return False
    size = weight.shape[-1]
    height, width = padded.shape[-2] - size + 1, padded.shape[-1] - size + 1
    image = max(math.prod(padded.shape[1:]), weight.shape[0] * height * width)
    if modulation is not None:
        image = max(image, math.prod(modulation.shape[1:]))
    return image <= _INT32 and weight.numel() <= _INT32


@functools.lru_cache(maxsize=256)
def plan(
    batch: int,
    channels: int,
    out_channels: int,
    size: int,
    height: int,
    width: int,
    dtype: torch.dtype,
    device: torch.device,
) -> Plan:
    """The tiling used for these sizes, chosen by the channel counts and the GPU.

    ``tl.dot`` (float32 only) pays off where both channel counts fill its tiles: from 32
    for ``dx``, 16 for the forward pass, ``dm`` and the output channels of ``dw``
    (``benchmarks/README.md`` has the measurements). Below that, and for float64,
    outer products. Where tensor cores take tf32 (compute capability 8.0 on), the forward
    pass, ``dx`` and ``dw`` run ``tl.dot`` as three tf32 products ("tf32x3": each float32
    operand split into a tf32 part and a tf32 remainder), as accurate as float32
    arithmetic; ``dm`` stays on float32 arithmetic, which is faster for its shapes.
    """
    dot = dtype != torch.float64
    precision = "tf32x3" if _tensor_cores_take_tf32(device) else "ieee"
    narrow = min(channels, out_channels)
    if dot and narrow >= 2 * _MIN_DOT:
        forward = Blocks(32, _MIN_DOT, 128, True, num_stages=2, precision=precision)
        grad_x = Blocks(32, _MIN_DOT, 128, True, precision=precision)
    elif dot and narrow >= _MIN_DOT and precision != "ieee":
        forward = Blocks(_MIN_DOT, _MIN_DOT, 128, True, num_stages=2, precision=precision)
        grad_x = _rank1(channels, dtype)
    else:
        forward = _rank1(out_channels, dtype)
        grad_x = _rank1(channels, dtype)
    if dot and narrow >= _MIN_DOT:
        rows = _fit(channels, _MIN_DOT, 64)
        grad_m = Blocks(rows, _fit(out_channels, _MIN_DOT, 32), 4096 // rows, True)
    else:
        grad_m = Blocks(1, 1, 1024 if dot else 256, False)
    if dot:
        rows = _fit(out_channels, _MIN_DOT, 64)
        columns, pixels = (32, 64) if rows >= 64 else (64, 32)
        grad_w = Blocks(rows, columns, pixels, True, precision=precision)
    else:
        grad_w = Blocks(_fit(out_channels, 1, 16), 16, 16, False)
    splits = weight_splits(grad_w, out_channels, size * size * channels, height * width, device)
    return Plan(forward, grad_x, grad_m, grad_w, splits)


def _tensor_cores_take_tf32(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device) >= (8, 0)


def weight_splits(
    blocks: Blocks, out_channels: int, columns: int, pixels: int, device: torch.device
) -> int:
    """Pixel shares for the weight's gradient: enough for 8 programs per multiprocessor."""
    programs = max(1, _cdiv(out_channels, blocks.rows) * _cdiv(columns, blocks.inner))
    target = 8 * _processors(device)
    return max(1, min(_cdiv(target, programs), _cdiv(pixels, blocks.pixels)))


def _rank1(channels: int, dtype: torch.dtype) -> Blocks:
    """Outer products over up to 32 channels, 4096 accumulators per program (2048 in
    float64)."""
    rows = _fit(channels, 1, 32)
    pixels = 4096 // rows
    return Blocks(rows, 1, pixels // 2 if dtype == torch.float64 else pixels, False)


def _fit(value: int, low: int, high: int) -> int:
    """The power of 2 not below ``value``, clamped to ``[low, high]``."""
    return max(low, min(high, 1 << max(0, value - 1).bit_length()))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _processors(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return int(torch.cuda.get_device_properties(device).multi_processor_count)


def _on(device: torch.device) -> contextlib.AbstractContextManager:
    """Launch on ``device`` (Triton launches on the current CUDA device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _plan_for(padded: torch.Tensor, weight: torch.Tensor, size: int) -> Plan:
    batch, channels = padded.shape[:2]
    height, width = padded.shape[-2] - size + 1, padded.shape[-1] - size + 1
    return plan(batch, channels, weight.shape[0], size, height, width, padded.dtype, padded.device)


def conv_forward(
    padded: torch.Tensor,
    weight: torch.Tensor,
    modulation: torch.Tensor | None,
    size: int,
    tiling: Plan | None = None,
) -> torch.Tensor:
    """``out (B, C_out, H, W)`` of :mod:`adaptiveblur.ops.shifted_conv`'s factored form.

    Args:
        padded: ``(B, C_in, H + k - 1, W + k - 1)``.
        weight: ``(C_out, C_in, k, k)``.
        modulation: ``(B or 1, k*k, H, W)`` or ``None``.
        size: ``k``.
        tiling: block sizes (default :func:`plan`'s).
    """
    tiling = tiling or _plan_for(padded, weight, size)
    x = padded.contiguous()
    batch, channels, padded_height, padded_width = x.shape
    out_channels = weight.shape[0]
    height, width = padded_height - size + 1, padded_width - size + 1
    # w_k[o, t, c] = weight[o, c, t]: a tap's channels side by side
    w_k = weight.permute(0, 2, 3, 1).contiguous()
    m, m_batch = _modulation(modulation, x)
    out = x.new_empty(batch, out_channels, height, width)
    if out.numel() == 0:
        return out
    blocks = tiling.forward
    grid = (_cdiv(height * width, blocks.pixels), _cdiv(out_channels, blocks.rows), batch)
    arguments = (x, m, w_k, out, channels, out_channels, height, width, padded_width)
    with _on(x.device):
        if blocks.dot:
            _forward_dot_kernel[grid](
                *arguments, x[0].numel(), m_batch,
                SIZE=size, HAS_MOD=modulation is not None, PRECISION=blocks.precision,
                BLOCK_O=blocks.rows, BLOCK_C=blocks.inner, BLOCK_P=blocks.pixels,
                num_warps=blocks.num_warps, num_stages=blocks.num_stages,
            )  # fmt: skip
        else:
            _forward_rank1_kernel[grid](
                *arguments, x[0].numel(), m_batch,
                SIZE=size, HAS_MOD=modulation is not None, FP64=x.dtype == torch.float64,
                BLOCK_O=blocks.rows, BLOCK_P=blocks.pixels, num_warps=blocks.num_warps,
            )  # fmt: skip
    return out


def conv_backward(
    grad_out: torch.Tensor,
    padded: torch.Tensor,
    weight: torch.Tensor,
    modulation: torch.Tensor | None,
    size: int,
    *,
    want_x: bool,
    want_weight: bool,
    want_modulation: bool,
    tiling: Plan | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The gradients to ``padded``, ``weight`` and ``modulation`` (``None`` for one not
    wanted, or no modulation), each in its input's dtype and shape."""
    tiling = tiling or _plan_for(padded, weight, size)
    x = padded.contiguous()
    g = grad_out.contiguous()
    batch, channels, padded_height, padded_width = x.shape
    out_channels = weight.shape[0]
    height, width = padded_height - size + 1, padded_width - size + 1
    m, m_batch = _modulation(modulation, x)
    fp64 = x.dtype == torch.float64
    empty = g.numel() == 0 or x.numel() == 0
    grad_x = grad_w = grad_m = None
    with _on(x.device):
        if want_x:
            grad_x = torch.zeros_like(x) if empty else torch.empty_like(x)
            # w_x[c, t, o] = weight[o, c, t]
            w_x = weight.permute(1, 2, 3, 0).contiguous()
            blocks = tiling.grad_x
            grid = (
                _cdiv(padded_height * padded_width, blocks.pixels),
                _cdiv(channels, blocks.rows),
                batch,
            )
            arguments = (g, m, w_x, grad_x, channels, out_channels, height, width)
            if empty:
                pass
            elif blocks.dot:
                _grad_x_dot_kernel[grid](
                    *arguments, m_batch,
                    SIZE=size, HAS_MOD=modulation is not None, PRECISION=blocks.precision,
                    BLOCK_C=blocks.rows, BLOCK_O=blocks.inner, BLOCK_Q=blocks.pixels,
                    num_warps=blocks.num_warps, num_stages=blocks.num_stages,
                )  # fmt: skip
            else:
                _grad_x_rank1_kernel[grid](
                    *arguments, m_batch,
                    SIZE=size, HAS_MOD=modulation is not None, FP64=fp64,
                    BLOCK_C=blocks.rows, BLOCK_Q=blocks.pixels, num_warps=blocks.num_warps,
                )  # fmt: skip
        if want_modulation and modulation is not None:
            grad_m = torch.zeros_like(modulation) if empty else torch.empty_like(modulation)
            # w_m[t, c, o] = weight[o, c, t]
            w_m = weight.permute(2, 3, 1, 0).contiguous()
            blocks = tiling.grad_m
            planes = (_cdiv(height * width, blocks.pixels), modulation.shape[0])
            arguments = (x, g, w_m, grad_m, channels, out_channels, height, width)
            per_modulation = batch // max(1, modulation.shape[0])  # images summed per plane
            if empty:
                pass
            elif blocks.dot:
                _grad_m_dot_kernel[planes](
                    *arguments, padded_width, x[0].numel(), per_modulation,
                    SIZE=size, PRECISION=blocks.precision, BLOCK_C=blocks.rows,
                    BLOCK_O=blocks.inner, BLOCK_P=blocks.pixels,
                    num_warps=blocks.num_warps, num_stages=blocks.num_stages,
                )  # fmt: skip
            else:
                _grad_m_rank1_kernel[planes](
                    *arguments, padded_width, x[0].numel(), per_modulation,
                    SIZE=size, FP64=fp64, BLOCK_P=blocks.pixels, num_warps=blocks.num_warps,
                )  # fmt: skip
        if want_weight:
            grad_w = _grad_weight(g, x, m, m_batch, weight, size, tiling, modulation is not None)
    return grad_x, grad_w, grad_m


def _grad_weight(
    g: torch.Tensor,
    x: torch.Tensor,
    m: torch.Tensor,
    m_batch: int,
    weight: torch.Tensor,
    size: int,
    tiling: Plan,
    has_mod: bool,
) -> torch.Tensor:
    batch, channels, padded_height, padded_width = x.shape
    out_channels = weight.shape[0]
    height, width = padded_height - size + 1, padded_width - size + 1
    columns = size * size * channels
    blocks = tiling.grad_w
    share = _cdiv(_cdiv(height * width, tiling.splits), blocks.pixels) * blocks.pixels
    splits = max(1, _cdiv(height * width, share))
    accumulate = torch.float64 if x.dtype == torch.float64 else torch.float32
    # partial[s, o, t * C + c]: share s's sum; added over s in a fixed order
    partial = torch.zeros(splits, out_channels, columns, dtype=accumulate, device=x.device)
    if g.numel() != 0 and x.numel() != 0:
        grid = (_cdiv(out_channels, blocks.rows), _cdiv(columns, blocks.inner), splits)
        _grad_w_kernel[grid](
            x, m, g, partial, batch, channels, out_channels, height, width, padded_width,
            x[0].numel(), m_batch, share,
            SIZE=size, HAS_MOD=has_mod, USE_DOT=blocks.dot, FP64=accumulate == torch.float64,
            PRECISION=blocks.precision, BLOCK_O=blocks.rows, BLOCK_K=blocks.inner,
            BLOCK_P=blocks.pixels, num_warps=blocks.num_warps, num_stages=blocks.num_stages,
        )  # fmt: skip
    total = partial.sum(0).view(out_channels, size * size, channels)
    return total.permute(0, 2, 1).contiguous().view(weight.shape).to(weight.dtype)


def _modulation(modulation: torch.Tensor | None, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The modulation (contiguous) and its batch stride: 0 when one plane serves every
    image. Without modulation, ``x`` stands in as a pointer that is never read."""
    if modulation is None:
        return x, 0
    m = modulation.contiguous()
    return m, 0 if m.shape[0] == 1 else math.prod(m.shape[1:])


def _jit(fn):  # noqa: ANN001, ANN202 - a Triton kernel, or the plain function without Triton
    return fn if triton is None else triton.jit(fn)


@_jit
def _forward_dot_kernel(
    x_ptr, m_ptr, w_ptr, out_ptr,
    CI, CO, H, W, Wp, x_sb, m_sb,
    SIZE: tl.constexpr, HAS_MOD: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """``out[b, o-block, p-block]``: for each tap, ``w[o, t, c-block] @ (m[t] * x[c, p + d_t])``."""
    b = tl.program_id(2).to(tl.int64)
    hw = H * W
    plane = (H + SIZE - 1) * Wp
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < hw
    y = p // W
    corner = y * Wp + (p - y * W)  # the window's top-left corner in the padded image
    o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    o_ok = o < CO
    x_img = x_ptr + b * x_sb
    m_img = m_ptr + b * m_sb
    acc = tl.zeros((BLOCK_O, BLOCK_P), tl.float32)
    for t in range(0, SIZE * SIZE):
        i = t // SIZE
        shift = i * Wp + (t - i * SIZE)
        if HAS_MOD:
            scale = tl.load(m_img + t * hw + p, mask=p_ok, other=0.0).to(tl.float32)
        for c0 in range(0, CI, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_ok = c < CI
            ok = c_ok[:, None] & p_ok[None, :]
            values = tl.load(
                x_img + (c * plane + shift)[:, None] + corner[None, :], mask=ok, other=0.0
            ).to(tl.float32)
            if HAS_MOD:
                values = values * scale[None, :]
            taps = tl.load(
                w_ptr + o[:, None] * (SIZE * SIZE * CI) + (t * CI + c)[None, :],
                mask=o_ok[:, None] & c_ok[None, :],
                other=0.0,
            ).to(tl.float32)
            acc += tl.dot(taps, values, input_precision=PRECISION)
    out = out_ptr + b * CO * hw + o[:, None] * hw + p[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=o_ok[:, None] & p_ok[None, :])


@_jit
def _forward_rank1_kernel(
    x_ptr, m_ptr, w_ptr, out_ptr,
    CI, CO, H, W, Wp, x_sb, m_sb,
    SIZE: tl.constexpr, HAS_MOD: tl.constexpr, FP64: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """The forward pass as one outer product ``w[o-block, t, c] (m[t] x[c, p + d_t])`` per
    tap and channel."""
    b = tl.program_id(2).to(tl.int64)
    hw = H * W
    plane = (H + SIZE - 1) * Wp
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < hw
    y = p // W
    x_img = x_ptr + b * x_sb + y * Wp + (p - y * W)
    m_img = m_ptr + b * m_sb + p
    o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    o_ok = o < CO
    acc = tl.zeros((BLOCK_O, BLOCK_P), tl.float32)
    if FP64:
        acc = acc.to(tl.float64)
    for t in range(0, SIZE * SIZE):
        i = t // SIZE
        tap = x_img + i * Wp + (t - i * SIZE)
        if HAS_MOD:
            scale = tl.load(m_img + t * hw, mask=p_ok, other=0.0).to(acc.dtype)
        for c in range(0, CI):
            values = tl.load(tap + c * plane, mask=p_ok, other=0.0).to(acc.dtype)
            if HAS_MOD:
                values = values * scale
            w = tl.load(w_ptr + o * (SIZE * SIZE * CI) + t * CI + c, mask=o_ok, other=0.0)
            acc += w.to(acc.dtype)[:, None] * values[None, :]
    out = out_ptr + b * CO * hw + o[:, None] * hw + p[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=o_ok[:, None] & p_ok[None, :])


@_jit
def _grad_x_dot_kernel(
    g_ptr, m_ptr, w_ptr, dx_ptr,
    CI, CO, H, W, m_sb,
    SIZE: tl.constexpr, HAS_MOD: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_Q: tl.constexpr,
):  # fmt: skip
    """``dx[b, c-block, q-block]`` of the padded input: for each tap, ``w[c, t, o-block] @
    (m g)[o-block, q - d_t]`` over the output pixels ``q - d_t`` that exist."""
    b = tl.program_id(2).to(tl.int64)
    hw = H * W
    Wp = W + SIZE - 1
    q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_ok = q < (H + SIZE - 1) * Wp
    qy = q // Wp
    qx = q - qy * Wp
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < CI
    g_img = g_ptr + b * CO * hw
    m_img = m_ptr + b * m_sb
    acc = tl.zeros((BLOCK_C, BLOCK_Q), tl.float32)
    for t in range(0, SIZE * SIZE):
        i = t // SIZE
        py = qy - i
        px = qx - (t - i * SIZE)
        ok = q_ok & (py >= 0) & (py < H) & (px >= 0) & (px < W)
        p = py * W + px
        if HAS_MOD:
            scale = tl.load(m_img + t * hw + p, mask=ok, other=0.0).to(tl.float32)
        for o0 in range(0, CO, BLOCK_O):
            o = o0 + tl.arange(0, BLOCK_O)
            o_ok = o < CO
            grads = tl.load(
                g_img + o[:, None] * hw + p[None, :], mask=o_ok[:, None] & ok[None, :], other=0.0
            ).to(tl.float32)
            if HAS_MOD:
                grads = grads * scale[None, :]
            taps = tl.load(
                w_ptr + c[:, None] * (SIZE * SIZE * CO) + (t * CO + o)[None, :],
                mask=c_ok[:, None] & o_ok[None, :],
                other=0.0,
            ).to(tl.float32)
            acc += tl.dot(taps, grads, input_precision=PRECISION)
    plane = (H + SIZE - 1) * Wp
    dx = dx_ptr + b * CI * plane + c[:, None] * plane + q[None, :]
    tl.store(dx, acc.to(dx_ptr.dtype.element_ty), mask=c_ok[:, None] & q_ok[None, :])


@_jit
def _grad_x_rank1_kernel(
    g_ptr, m_ptr, w_ptr, dx_ptr,
    CI, CO, H, W, m_sb,
    SIZE: tl.constexpr, HAS_MOD: tl.constexpr, FP64: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr,
):  # fmt: skip
    """:func:`_grad_x_dot_kernel` as one outer product per tap and output channel."""
    b = tl.program_id(2).to(tl.int64)
    hw = H * W
    Wp = W + SIZE - 1
    q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_ok = q < (H + SIZE - 1) * Wp
    qy = q // Wp
    qx = q - qy * Wp
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < CI
    g_img = g_ptr + b * CO * hw
    m_img = m_ptr + b * m_sb
    acc = tl.zeros((BLOCK_C, BLOCK_Q), tl.float32)
    if FP64:
        acc = acc.to(tl.float64)
    for t in range(0, SIZE * SIZE):
        i = t // SIZE
        py = qy - i
        px = qx - (t - i * SIZE)
        ok = q_ok & (py >= 0) & (py < H) & (px >= 0) & (px < W)
        p = py * W + px
        if HAS_MOD:
            scale = tl.load(m_img + t * hw + p, mask=ok, other=0.0).to(acc.dtype)
        for o in range(0, CO):
            grads = tl.load(g_img + o * hw + p, mask=ok, other=0.0).to(acc.dtype)
            if HAS_MOD:
                grads = grads * scale
            w = tl.load(w_ptr + c * (SIZE * SIZE * CO) + t * CO + o, mask=c_ok, other=0.0)
            acc += w.to(acc.dtype)[:, None] * grads[None, :]
    plane = (H + SIZE - 1) * Wp
    dx = dx_ptr + b * CI * plane + c[:, None] * plane + q[None, :]
    tl.store(dx, acc.to(dx_ptr.dtype.element_ty), mask=c_ok[:, None] & q_ok[None, :])


@_jit
def _grad_m_dot_kernel(
    x_ptr, g_ptr, w_ptr, dm_ptr,
    CI, CO, H, W, Wp, x_sb, PER_MOD,
    SIZE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """``dm[n, t, p-block]``: for each tap, ``h = w[t, c-block, o-block] @ g[o-block, p]``
    reduced against ``x[c-block, p + d_t]``, summed over the ``PER_MOD`` images that share
    modulation plane ``n``."""
    n = tl.program_id(1)
    hw = H * W
    plane = (H + SIZE - 1) * Wp
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < hw
    y = p // W
    corner = y * Wp + (p - y * W)
    for t in range(0, SIZE * SIZE):
        i = t // SIZE
        shift = i * Wp + (t - i * SIZE)
        total = tl.zeros((BLOCK_P,), tl.float32)
        for image in range(0, PER_MOD):
            b = (n * PER_MOD + image).to(tl.int64)
            x_img = x_ptr + b * x_sb + shift
            g_img = g_ptr + b * CO * hw
            for c0 in range(0, CI, BLOCK_C):
                c = c0 + tl.arange(0, BLOCK_C)
                c_ok = c < CI
                h = tl.zeros((BLOCK_C, BLOCK_P), tl.float32)
                for o0 in range(0, CO, BLOCK_O):
                    o = o0 + tl.arange(0, BLOCK_O)
                    o_ok = o < CO
                    grads = tl.load(
                        g_img + o[:, None] * hw + p[None, :],
                        mask=o_ok[:, None] & p_ok[None, :],
                        other=0.0,
                    ).to(tl.float32)
                    taps = tl.load(
                        w_ptr + t * CI * CO + c[:, None] * CO + o[None, :],
                        mask=c_ok[:, None] & o_ok[None, :],
                        other=0.0,
                    ).to(tl.float32)
                    h += tl.dot(taps, grads, input_precision=PRECISION)
                values = tl.load(
                    x_img + (c * plane)[:, None] + corner[None, :],
                    mask=c_ok[:, None] & p_ok[None, :],
                    other=0.0,
                ).to(tl.float32)
                total += tl.sum(values * h, axis=0)
        dm = dm_ptr + n.to(tl.int64) * (SIZE * SIZE) * hw + t * hw + p
        tl.store(dm, total.to(dm_ptr.dtype.element_ty), mask=p_ok)


@_jit
def _grad_m_rank1_kernel(
    x_ptr, g_ptr, w_ptr, dm_ptr,
    CI, CO, H, W, Wp, x_sb, PER_MOD,
    SIZE: tl.constexpr, FP64: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """:func:`_grad_m_dot_kernel` one channel and one output channel at a time."""
    n = tl.program_id(1)
    hw = H * W
    plane = (H + SIZE - 1) * Wp
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < hw
    y = p // W
    corner = y * Wp + (p - y * W)
    for t in range(0, SIZE * SIZE):
        i = t // SIZE
        shift = i * Wp + (t - i * SIZE)
        total = tl.zeros((BLOCK_P,), tl.float32)
        if FP64:
            total = total.to(tl.float64)
        for image in range(0, PER_MOD):
            b = (n * PER_MOD + image).to(tl.int64)
            x_img = x_ptr + b * x_sb + shift + corner
            g_img = g_ptr + b * CO * hw + p
            for c in range(0, CI):
                h = tl.zeros((BLOCK_P,), total.dtype)
                for o in range(0, CO):
                    grads = tl.load(g_img + o * hw, mask=p_ok, other=0.0).to(total.dtype)
                    h += tl.load(w_ptr + t * CI * CO + c * CO + o).to(total.dtype) * grads
                values = tl.load(x_img + c * plane, mask=p_ok, other=0.0).to(total.dtype)
                total += values * h
        dm = dm_ptr + n.to(tl.int64) * (SIZE * SIZE) * hw + t * hw + p
        tl.store(dm, total.to(dm_ptr.dtype.element_ty), mask=p_ok)


@_jit
def _grad_w_kernel(
    x_ptr, m_ptr, g_ptr, part_ptr,
    B, CI, CO, H, W, Wp, x_sb, m_sb, SHARE,
    SIZE: tl.constexpr, HAS_MOD: tl.constexpr, USE_DOT: tl.constexpr, FP64: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """``part[s, o-block, k-block]`` with ``k = t CI + c``: ``sum g[o, p] (m[t, p] x[c, p + d_t])``
    over every image and the pixels ``[s SHARE, (s + 1) SHARE)``, in order."""
    hw = H * W
    plane = (H + SIZE - 1) * Wp
    columns = SIZE * SIZE * CI
    o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    o_ok = o < CO
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    k_ok = k < columns
    t = k // CI
    i = t // SIZE
    x_tap = (k - t * CI) * plane + i * Wp + (t - i * SIZE)
    m_tap = t * hw
    start = tl.program_id(2) * SHARE
    stop = tl.minimum(start + SHARE, hw)
    acc = tl.zeros((BLOCK_O, BLOCK_K), tl.float32)
    if FP64:
        acc = acc.to(tl.float64)
    for image in range(0, B):
        b = tl.full((), 0, tl.int64) + image
        x_img = x_ptr + b * x_sb
        m_img = m_ptr + b * m_sb
        g_img = g_ptr + b * CO * hw
        for p0 in range(start, stop, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            p_ok = p < stop
            y = p // W
            corner = y * Wp + (p - y * W)
            grads = tl.load(
                g_img + o[:, None] * hw + p[None, :], mask=o_ok[:, None] & p_ok[None, :], other=0.0
            ).to(acc.dtype)
            ok = k_ok[:, None] & p_ok[None, :]
            seen = tl.load(x_img + x_tap[:, None] + corner[None, :], mask=ok, other=0.0)
            seen = seen.to(acc.dtype)
            if HAS_MOD:
                scale = tl.load(m_img + m_tap[:, None] + p[None, :], mask=ok, other=0.0)
                seen = seen * scale.to(acc.dtype)
            if USE_DOT:
                acc += tl.dot(grads, tl.trans(seen), input_precision=PRECISION)
            else:  # float64: the same product as a broadcast sum (tl.dot is float32 here)
                acc += tl.sum(grads[:, None, :] * seen[None, :, :], axis=2)
    part = (
        part_ptr + tl.program_id(2).to(tl.int64) * CO * columns + o[:, None] * columns + k[None, :]
    )
    tl.store(part, acc, mask=o_ok[:, None] & k_ok[None, :])
