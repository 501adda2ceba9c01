"""The Triton backend under autograd, and for float64: gradient kernels and a plain gather.

The forward pass is :mod:`adaptiveblur.ops.triton`'s kernel for float32 tiles and
:func:`_moments_kernel` (a plain per-pixel gather) for float64 ones. With ``a_p(d)`` the
normalised weights of pixel ``p`` (``g(dx) g(dy) / S^2``, ``g(d) = exp(-d^2 / 2 s^2)``,
``S = sum_{|d| <= r} g(d)``), ``D = dx^2 + dy^2`` and ``G`` the output's gradient, the
backward pass is two gathers (no atomics, every sum in a fixed order, so two runs give the
same bits):

* ``dL/ds_p = s^-3 sum_c G_c(p) sum_d a_p(d) D (I_c(p + d) - out_c(p))``, computed as
  ``m2 - M2 m1`` of the values less ``I_c(p)`` (``m1 = sum a (I - I_p)``,
  ``m2 = sum a D (I - I_p)``, ``M2 = sum a D = 2 T / S`` with ``T = sum g(d) d^2``), which
  loses less to cancellation in float32. It is 0 where ``s`` is below the floor or the
  radius is 0 (the forward pass does not change there); the radius, a step function of
  ``s``, has no gradient. :func:`_moments_kernel` also writes, per pixel, the exponent's
  coefficient, the radius and ``G / S^2``.
* ``dL/dI(q) = sum_p a_p(q - p) G(p)`` over the pixels ``p`` whose window holds ``q``,
  for every ``q`` of the padded tile (:func:`_spread_kernel`); torch folds it back through
  the border.
"""

from __future__ import annotations

import torch

from adaptiveblur.ops import triton as fused
from adaptiveblur.ops.tile import TileInput

try:
    import triton
    import triton.language as tl
except ImportError:  # ops.triton reports the backend unavailable; nothing here runs then
    triton = None
    tl = None

_MAX_CHANNELS = 4  # channels one launch carries; more are done in groups
_BLOCK = (8, 32)  # output (or padded) rows x columns a program owns
_NUM_WARPS = 4


def blur_tile(tile: TileInput) -> torch.Tensor:
    """Blur one CUDA tile, differentiably in ``tile.padded`` and ``tile.sigma``.

    float32 tiles use the fused forward kernel; float64 tiles the plain gather.
    """
    return _TileBlur.apply(tile.padded, tile.sigma, tile.radius, tile.halo)


def forward_tile(
    padded: torch.Tensor, sigma: torch.Tensor, radius: torch.Tensor, halo: int
) -> torch.Tensor:
    """The blurred tile ``(B, C, h, w)``, without autograd."""
    if padded.dtype == torch.float32:
        return fused.gather_blur(TileInput(padded.contiguous(), sigma, radius, halo))
    out, *_ = _moments(padded, sigma, radius, halo, None, want_sigma=False)
    assert out is not None
    return out


def backward_tile(
    padded: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    halo: int,
    grad: torch.Tensor,
    *,
    want_input: bool = True,
    want_sigma: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of the tile's blur to ``padded`` and to ``sigma`` (``None`` where not wanted)."""
    _, grad_sigma, coefficients, scaled = _moments(
        padded, sigma, radius, halo, grad.contiguous(), want_sigma=want_sigma
    )
    grad_input = None
    if want_input:
        assert coefficients is not None and scaled is not None
        grad_input = _spread(coefficients, scaled, halo, padded.shape)
    return grad_input, grad_sigma


class _TileBlur(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        padded: torch.Tensor,
        sigma: torch.Tensor,
        radius: torch.Tensor,
        halo: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(padded, sigma, radius)
        ctx.halo = halo  # type: ignore[attr-defined]
        return forward_tile(padded, sigma, radius, halo)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        padded, sigma, radius = ctx.saved_tensors  # type: ignore[attr-defined]
        want_input, want_sigma = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        grad_input, grad_sigma = backward_tile(
            padded,
            sigma,
            radius,
            ctx.halo,  # type: ignore[attr-defined]
            grad.to(padded.dtype),
            want_input=want_input,
            want_sigma=want_sigma,
        )
        return grad_input, grad_sigma, None, None


def _moments(
    padded: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    halo: int,
    grad: torch.Tensor | None,
    *,
    want_sigma: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Run :func:`_moments_kernel`: the blurred tile when ``grad`` is ``None``, else the
    gradient to sigma (when ``want_sigma``), the per-pixel coefficients and ``G / S^2``."""
    batch, channels = padded.shape[:2]
    height, width = sigma.shape[-2:]
    dtype, device = padded.dtype, padded.device
    backward = grad is not None
    out = (
        None
        if backward
        else torch.empty((batch, channels, height, width), dtype=dtype, device=device)
    )
    grad_sigma = torch.empty((batch, 1, height, width), dtype=dtype, device=device)
    coefficients = torch.empty((batch, 2, height, width), dtype=dtype, device=device)
    scaled = torch.empty((batch, channels, height, width), dtype=dtype, device=device)
    values = out if out is not None else scaled  # a placeholder where nothing is stored
    gradient = grad if grad is not None else scaled
    grid = (triton.cdiv(width, _BLOCK[1]), triton.cdiv(height, _BLOCK[0]), batch)
    with fused.on_device(device):
        for first in range(0, channels, _MAX_CHANNELS):
            _moments_kernel[grid](
                padded[:, first:],
                sigma,
                radius,
                gradient[:, first:],
                values[:, first:],
                grad_sigma,
                coefficients,
                scaled[:, first:],
                height,
                width,
                halo,
                *padded.stride()[:3],
                sigma.stride(0),
                sigma.stride(2),
                sigma.stride(3),
                radius.stride(0),
                radius.stride(2),
                radius.stride(3),
                *gradient.stride()[:3],
                *values.stride()[:3],
                grad_sigma.stride(0),
                *coefficients.stride()[:3],
                *scaled.stride()[:3],
                CHANNELS=min(_MAX_CHANNELS, channels - first),
                BACKWARD=backward,
                WANT_SIGMA=backward and want_sigma,
                ACCUMULATE=first > 0,
                BLOCK_Y=_BLOCK[0],
                BLOCK_X=_BLOCK[1],
                num_warps=_NUM_WARPS,
            )
    if not backward:
        return out, None, None, None
    return None, grad_sigma if want_sigma else None, coefficients, scaled


def _spread(
    coefficients: torch.Tensor, scaled: torch.Tensor, halo: int, shape: torch.Size
) -> torch.Tensor:
    """Run :func:`_spread_kernel`: the gradient to the padded tile of ``shape``."""
    batch, channels, padded_h, padded_w = shape
    height, width = scaled.shape[-2:]
    grad_input = torch.empty(shape, dtype=scaled.dtype, device=scaled.device)
    grid = (triton.cdiv(padded_w, _BLOCK[1]), triton.cdiv(padded_h, _BLOCK[0]), batch)
    with fused.on_device(scaled.device):
        for first in range(0, channels, _MAX_CHANNELS):
            _spread_kernel[grid](
                coefficients,
                scaled[:, first:],
                grad_input[:, first:],
                height,
                width,
                halo,
                padded_h,
                padded_w,
                *coefficients.stride()[:3],
                *scaled.stride()[:3],
                *grad_input.stride()[:3],
                CHANNELS=min(_MAX_CHANNELS, channels - first),
                BLOCK_Y=_BLOCK[0],
                BLOCK_X=_BLOCK[1],
                num_warps=_NUM_WARPS,
            )
    return grad_input


def _jit(fn):  # noqa: ANN001, ANN202 - a Triton kernel or the plain function without Triton
    return fn if triton is None else triton.jit(fn)


@_jit
def _accumulate(row, offset, mask, weight, weighted, m1, m2, centre):
    """Add ``weight * (v - centre)`` to ``m1`` and ``weighted * (v - centre)`` to ``m2``."""
    value = tl.load(row + offset, mask=mask, other=0.0) - centre
    return m1 + weight * value, m2 + weighted * value


@_jit
def _moments_kernel(
    src_ptr, sigma_ptr, radius_ptr, grad_ptr, out_ptr, gsig_ptr, coef_ptr, scaled_ptr,
    height, width, halo,
    src_sb, src_sc, src_sy,
    sig_sb, sig_sy, sig_sx,
    rad_sb, rad_sy, rad_sx,
    g_sb, g_sc, g_sy,
    out_sb, out_sc, out_sy,
    gs_sb,
    co_sb, co_sc, co_sy,
    sc_sb, sc_sc, sc_sy,
    CHANNELS: tl.constexpr, BACKWARD: tl.constexpr, WANT_SIGMA: tl.constexpr,
    ACCUMULATE: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr,
):  # fmt: skip
    """One block of output pixels: the window's moments of up to 4 channels.

    Without ``BACKWARD`` it stores the blurred pixels. With it, it stores the exponent's
    coefficient and the radius (``coef_ptr``, 2 planes), ``G / S^2`` per channel and, with
    ``WANT_SIGMA``, the gradient to sigma (added to what is there with ``ACCUMULATE``, for
    channels beyond the first 4). ``src_ptr`` is the padded tile; rows contiguous.
    """
    y = tl.program_id(1) * BLOCK_Y + tl.arange(0, BLOCK_Y)[:, None]
    x = tl.program_id(0) * BLOCK_X + tl.arange(0, BLOCK_X)[None, :]
    item = tl.program_id(2).to(tl.int64)
    inside = (y < height) & (x < width)
    dtype = src_ptr.dtype.element_ty

    given = tl.load(sigma_ptr + item * sig_sb + y * sig_sy + x * sig_sx, mask=inside, other=1.0)
    radius = tl.load(radius_ptr + item * rad_sb + y * rad_sy + x * rad_sx, mask=inside, other=0)
    radius = radius.to(tl.int32)
    reach = tl.max(tl.max(radius, 1), 0)
    s = tl.maximum(given, 1e-3)  # kernels.SIGMA_FLOOR (Triton reads no plain globals)
    c = -0.5 / (s * s)
    reach_f = radius.to(dtype)

    total = tl.full([BLOCK_Y, BLOCK_X], 1.0, dtype)
    moment = tl.zeros([BLOCK_Y, BLOCK_X], dtype)
    for d in range(1, reach + 1):
        df = d * 1.0
        g = tl.where(df <= reach_f, tl.exp(c * (df * df)), 0.0)
        total += 2.0 * g
        moment += 2.0 * g * (df * df)
    norm = 1.0 / (total * total)

    centre = src_ptr + item * src_sb + (y + halo) * src_sy + (x + halo)
    zero = tl.zeros([BLOCK_Y, BLOCK_X], dtype)
    c0, c1, c2, c3 = zero, zero, zero, zero
    if not BACKWARD or WANT_SIGMA:
        c0 = tl.load(centre, mask=inside, other=0.0)
        if CHANNELS > 1:
            c1 = tl.load(centre + src_sc, mask=inside, other=0.0)
        if CHANNELS > 2:
            c2 = tl.load(centre + 2 * src_sc, mask=inside, other=0.0)
        if CHANNELS > 3:
            c3 = tl.load(centre + 3 * src_sc, mask=inside, other=0.0)
    m1 = (zero, zero, zero, zero)
    m2 = (zero, zero, zero, zero)
    if not BACKWARD or WANT_SIGMA:
        for dy in range(-reach, reach + 1):
            dyf = dy * 1.0
            gy = tl.where(tl.abs(dyf) <= reach_f, tl.exp(c * (dyf * dyf)), 0.0)
            row = centre + dy * src_sy
            for dx in range(-reach, reach + 1):
                dxf = dx * 1.0
                w = gy * tl.where(tl.abs(dxf) <= reach_f, tl.exp(c * (dxf * dxf)), 0.0)
                wd = w * (dxf * dxf + dyf * dyf)
                a0, b0 = _accumulate(row, dx, inside, w, wd, m1[0], m2[0], c0)
                a1, b1, a2, b2, a3, b3 = m1[1], m2[1], m1[2], m2[2], m1[3], m2[3]
                if CHANNELS > 1:
                    a1, b1 = _accumulate(row + src_sc, dx, inside, w, wd, a1, b1, c1)
                if CHANNELS > 2:
                    a2, b2 = _accumulate(row + 2 * src_sc, dx, inside, w, wd, a2, b2, c2)
                if CHANNELS > 3:
                    a3, b3 = _accumulate(row + 3 * src_sc, dx, inside, w, wd, a3, b3, c3)
                m1 = (a0, a1, a2, a3)
                m2 = (b0, b1, b2, b3)

    if not BACKWARD:
        out = out_ptr + item * out_sb + y * out_sy + x
        tl.store(out, c0 + m1[0] * norm, mask=inside)
        if CHANNELS > 1:
            tl.store(out + out_sc, c1 + m1[1] * norm, mask=inside)
        if CHANNELS > 2:
            tl.store(out + 2 * out_sc, c2 + m1[2] * norm, mask=inside)
        if CHANNELS > 3:
            tl.store(out + 3 * out_sc, c3 + m1[3] * norm, mask=inside)
    else:
        coef = coef_ptr + item * co_sb + y * co_sy + x
        tl.store(coef, c, mask=inside)
        tl.store(coef + co_sc, reach_f, mask=inside)
        grad = grad_ptr + item * g_sb + y * g_sy + x
        scaled = scaled_ptr + item * sc_sb + y * sc_sy + x
        g0 = tl.load(grad, mask=inside, other=0.0)
        tl.store(scaled, g0 * norm, mask=inside)
        result = g0 * (m2[0] - m1[0] * (2.0 * moment / total))
        if CHANNELS > 1:
            g1 = tl.load(grad + g_sc, mask=inside, other=0.0)
            tl.store(scaled + sc_sc, g1 * norm, mask=inside)
            result += g1 * (m2[1] - m1[1] * (2.0 * moment / total))
        if CHANNELS > 2:
            g2 = tl.load(grad + 2 * g_sc, mask=inside, other=0.0)
            tl.store(scaled + 2 * sc_sc, g2 * norm, mask=inside)
            result += g2 * (m2[2] - m1[2] * (2.0 * moment / total))
        if CHANNELS > 3:
            g3 = tl.load(grad + 3 * g_sc, mask=inside, other=0.0)
            tl.store(scaled + 3 * sc_sc, g3 * norm, mask=inside)
            result += g3 * (m2[3] - m1[3] * (2.0 * moment / total))
        if WANT_SIGMA:
            result = tl.where((given < 1e-3) | (radius == 0), 0.0, result * norm / (s * s * s))
            gsig = gsig_ptr + item * gs_sb + y * width + x
            if ACCUMULATE:
                result += tl.load(gsig, mask=inside, other=0.0)
            tl.store(gsig, result, mask=inside)


@_jit
def _spread_kernel(
    coef_ptr, scaled_ptr, gin_ptr,
    height, width, halo, padded_h, padded_w,
    co_sb, co_sc, co_sy,
    sc_sb, sc_sc, sc_sy,
    gi_sb, gi_sc, gi_sy,
    CHANNELS: tl.constexpr, BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr,
):  # fmt: skip
    """One block of padded positions ``q``: ``sum_p exp(c_p |q - p|^2) (G_p / S_p^2)`` over
    the pixels ``p`` within ``halo`` whose own radius reaches ``q``, up to 4 channels."""
    v = tl.program_id(1) * BLOCK_Y + tl.arange(0, BLOCK_Y)[:, None]
    u = tl.program_id(0) * BLOCK_X + tl.arange(0, BLOCK_X)[None, :]
    item = tl.program_id(2).to(tl.int64)
    inside = (v < padded_h) & (u < padded_w)
    dtype = scaled_ptr.dtype.element_ty
    zero = tl.zeros([BLOCK_Y, BLOCK_X], dtype)
    acc0, acc1, acc2, acc3 = zero, zero, zero, zero
    coef = coef_ptr + item * co_sb
    scaled = scaled_ptr + item * sc_sb
    for dy in range(-halo, halo + 1):
        py = v - halo - dy
        rows = inside & (py >= 0) & (py < height)
        dyf = dy * 1.0
        for dx in range(-halo, halo + 1):
            px = u - halo - dx
            ok = rows & (px >= 0) & (px < width)
            at = py * co_sy + px
            c = tl.load(coef + at, mask=ok, other=0.0)
            reach = tl.load(coef + co_sc + at, mask=ok, other=-1.0)
            dxf = dx * 1.0
            near = (tl.abs(dxf) <= reach) & (tl.abs(dyf) <= reach)
            w = tl.where(near, tl.exp(c * (dxf * dxf + dyf * dyf)), 0.0)
            value = scaled + py * sc_sy + px
            acc0 += w * tl.load(value, mask=ok, other=0.0)
            if CHANNELS > 1:
                acc1 += w * tl.load(value + sc_sc, mask=ok, other=0.0)
            if CHANNELS > 2:
                acc2 += w * tl.load(value + 2 * sc_sc, mask=ok, other=0.0)
            if CHANNELS > 3:
                acc3 += w * tl.load(value + 3 * sc_sc, mask=ok, other=0.0)
    out = gin_ptr + item * gi_sb + v * gi_sy + u
    tl.store(out, acc0, mask=inside)
    if CHANNELS > 1:
        tl.store(out + gi_sc, acc1, mask=inside)
    if CHANNELS > 2:
        tl.store(out + 2 * gi_sc, acc2, mask=inside)
    if CHANNELS > 3:
        tl.store(out + 3 * gi_sc, acc3, mask=inside)
