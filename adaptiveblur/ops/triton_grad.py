"""The Triton backend under autograd, and for float64: the moments and spread kernels.

The forward pass is :mod:`adaptiveblur.ops.triton`'s kernel for float32 tiles and
:func:`_moments_kernel` for float64 ones. With ``a_p(d)`` the normalised weights of pixel
``p`` (``g(dx) g(dy) / S^2``, ``g(d) = exp(-d^2 / 2 s^2)``, ``S = sum_{|d| <= r} g(d)``),
``D = dx^2 + dy^2`` and ``G`` the output's gradient, the backward pass is two gathers (no
atomics, every sum in a fixed order, so two runs give the same bits):

* ``dL/ds_p = s^-3 sum_c G_c(p) sum_d a_p(d) D (I_c(p + d) - out_c(p))``, computed as
  ``m2 - M2 m1`` of the values less ``I_c(p)`` (``m1 = sum a (I - I_p)``,
  ``m2 = sum a D (I - I_p)``, ``M2 = sum a D = 2 T / S`` with ``T = sum g(d) d^2``), which
  loses less to cancellation in float32. It is 0 where ``s`` is below the floor or the
  radius is 0 (the forward pass does not change there); the radius, a step function of
  ``s``, has no gradient. :func:`_moments_kernel` also writes each pixel's weights
  (:class:`Planes`).
* ``dL/dI(q) = sum_p a_p(q - p) G(p)`` over the pixels ``p`` whose window holds ``q``,
  for every ``q`` of the padded tile (:func:`_spread_kernel`); torch folds it back through
  the border.

Both kernels are laid out as the forward one: a thread owns 4 adjacent pixels and one
aligned vector load feeds all 4. The backward pass keeps sigma, the radius (as int16) and,
where the engine can read the window again (``TileInput.reread``), not the window: the
window's memory is free while the input's gradient is made.
"""

from __future__ import annotations

from collections.abc import Callable

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
# Blocks of 16 rows x 8 groups of 4 pixels, one group per thread (as the forward kernel).
_CONFIG = fused.LaunchConfig(block_y=16, groups=8, num_warps=4)
# The spread's threads own 4 x 4 positions: programs of 4 * 8 rows x 32 columns.
_SPREAD_CONFIG = fused.LaunchConfig(block_y=8, groups=8, num_warps=2)


def blur_tile(tile: TileInput) -> torch.Tensor:
    """Blur one CUDA tile, differentiably in ``tile.padded`` and ``tile.sigma``.

    float32 tiles use the fused forward kernel; float64 tiles :func:`_moments_kernel`.
    """
    return _TileBlur.apply(tile.padded, tile.sigma, tile.radius, tile.halo, tile.reread)


class _TileBlur(torch.autograd.Function):
    """The tile's blur. Given ``reread``, its backward pass keeps only sigma and a narrow
    radius, and holds the window only until it has its aligned copy."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        padded: torch.Tensor,
        sigma: torch.Tensor,
        radius: torch.Tensor,
        halo: int,
        reread: Callable[[], torch.Tensor] | None,
    ) -> torch.Tensor:
        narrow = radius.to(torch.int16 if halo < 2**15 else torch.int32)
        if reread is None:
            ctx.save_for_backward(sigma, narrow, padded)
        else:
            ctx.save_for_backward(sigma, narrow)
        ctx.reread = reread  # type: ignore[attr-defined]
        ctx.halo = halo  # type: ignore[attr-defined]
        if padded.dtype == torch.float32:
            return fused.gather_blur(TileInput(padded.contiguous(), sigma, radius, halo))
        source = fused.aligned_source(padded, halo, _CONFIG.block_y, _CONFIG.block_x)
        out, _, _ = _moments(source, sigma, radius, halo, None, want_sigma=False)
        assert out is not None
        return out

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        sigma, radius, *kept = ctx.saved_tensors  # type: ignore[attr-defined]
        halo = ctx.halo  # type: ignore[attr-defined]
        want_input, want_sigma = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        padded = kept[0] if kept else ctx.reread()  # type: ignore[attr-defined]
        shape = padded.shape
        source = fused.aligned_source(padded, halo, _CONFIG.block_y, _CONFIG.block_x)
        del padded, kept
        grad = grad.to(source.dtype).contiguous()
        _, grad_sigma, planes = _moments(source, sigma, radius, halo, grad, want_sigma=want_sigma)
        del source
        grad_input = None
        if want_input:
            assert planes is not None
            grad_input = _spread(planes, grad, halo, shape)
        return grad_input, grad_sigma, None, None, None


def _moments(
    source: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    halo: int,
    grad: torch.Tensor | None,
    *,
    want_sigma: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, Planes | None]:
    """Run :func:`_moments_kernel` over ``source`` (from :func:`fused.aligned_source` with
    :data:`_CONFIG`'s blocks): the blurred tile when ``grad`` is ``None``, else the
    gradient to sigma (when ``want_sigma``) and the planes :func:`_spread` reads."""
    batch, channels = source.shape[:2]
    height, width = sigma.shape[-2:]
    dtype, device = source.dtype, source.device
    block_y, block_x = _CONFIG.block_y, _CONFIG.block_x
    backward = grad is not None
    out = grad_sigma = planes = None
    if backward:
        planes = Planes.empty(batch, height, width, halo, dtype, device)
        grad_sigma = torch.empty((batch, 1, height, width), dtype=dtype, device=device)
    else:
        out = torch.empty((batch, channels, height, width), dtype=dtype, device=device)
    # Placeholders where a launch stores nothing (never dereferenced).
    values = out if out is not None else source
    gradient = grad if grad is not None else source
    gsig = grad_sigma if grad_sigma is not None else source
    weights = planes.weights if planes is not None else source
    grid = (triton.cdiv(width, block_x), triton.cdiv(height, block_y), batch)
    with fused.on_device(device):
        for first in range(0, channels, _MAX_CHANNELS):
            _moments_kernel[grid](
                source[:, first:],
                sigma,
                radius,
                gradient[:, first:],
                values[:, first:],
                gsig,
                weights,
                height,
                width,
                *source.stride()[:3],
                sigma.stride(0),
                sigma.stride(2),
                sigma.stride(3),
                radius.stride(0),
                radius.stride(2),
                radius.stride(3),
                *gradient.stride()[:3],
                *values.stride()[:3],
                gsig.stride(0),
                gsig.stride(2),
                *weights.stride()[:3],
                CHANNELS=min(_MAX_CHANNELS, channels - first),
                BACKWARD=backward,
                WANT_SIGMA=backward and want_sigma,
                ACCUMULATE=first > 0,
                BLOCK_Y=block_y,
                GROUPS=_CONFIG.groups,
                num_warps=_CONFIG.num_warps,
            )
    return out, grad_sigma if want_sigma else None, planes


class Planes:
    """Per output pixel, what the input's gradient needs, in one zero-margined buffer.

    ``weights``: a ``(B, 3, ., .)`` view at output pixel (0, 0): plane 0 the exponent's
    coefficient in base 2, ``-log2(e) / (2 s^2)``; plane 1 ``log2(1 / S^2)``; plane 2 the
    radius. A pixel's weight at offset ``d`` is then ``2^(plane0 |d|^2 + plane1)`` within
    its radius. The margins, ``2 * halo`` rows above and ``chunks * 4`` columns to the
    left, make :func:`_spread_kernel`'s 4-aligned reads from every padded position valid;
    what they hold weighs nothing, as the output's gradient is 0 outside the tile.
    """

    def __init__(self, weights: torch.Tensor, chunks: int) -> None:
        self.weights, self.chunks = weights, chunks

    @staticmethod
    def empty(
        batch: int, height: int, width: int, halo: int, dtype: torch.dtype, device: torch.device
    ) -> Planes:
        # Sources reach 2 * halo columns left of a 4-aligned group: chunks 0 .. chunks back.
        chunks = (2 * halo + 3) // 4
        rows = _round_up(height + 2 * halo, 4 * _SPREAD_CONFIG.block_y) + 2 * halo
        cols = _round_up(width + 2 * halo, _SPREAD_CONFIG.block_x) + 4 * chunks + 4
        weights = torch.zeros((batch, 3, rows, _round_up(cols, 16)), dtype=dtype, device=device)
        top, left = 2 * halo, 4 * chunks
        return Planes(weights[..., top : top + height, left : left + width], chunks)


def _spread(planes: Planes, grad: torch.Tensor, halo: int, shape: torch.Size) -> torch.Tensor:
    """Run :func:`_spread_kernel`: the gradient to the padded tile of ``shape`` from the
    output's (contiguous) gradient ``grad``."""
    batch, channels, padded_h, padded_w = shape
    weights = planes.weights
    grad_input = torch.empty(shape, dtype=grad.dtype, device=grad.device)
    config = _SPREAD_CONFIG
    grid = (triton.cdiv(padded_w, config.block_x), triton.cdiv(padded_h, 4 * config.block_y), batch)
    with fused.on_device(grad.device):
        for first in range(0, channels, _MAX_CHANNELS):
            _spread_kernel[grid](
                weights,
                grad[:, first:],
                grad_input[:, first:],
                padded_h,
                padded_w,
                halo,
                planes.chunks,
                grad.shape[-2],
                grad.shape[-1],
                *weights.stride()[:3],
                *grad.stride()[:3],
                *grad_input.stride()[:3],
                CHANNELS=min(_MAX_CHANNELS, channels - first),
                BLOCK_Y=config.block_y,
                GROUPS=config.groups,
                num_warps=config.num_warps,
            )
    return grad_input


def _jit(fn):  # noqa: ANN001, ANN202 - a Triton kernel or the plain function without Triton
    return fn if triton is None else triton.jit(fn)


_round_up = fused._round_up
_split4 = fused._split4
_join4 = fused._join4


@_jit
def _weight(c, reach, d):
    """``exp(c d^2)`` for offset ``d`` (a scalar), 0 where ``|d| > reach``."""
    df = d * 1.0  # a loop index is a plain int under the interpreter
    return tl.where(tl.abs(df) <= reach, tl.exp(c * (df * df)), 0.0)


@_jit
def _weights4(c, reach, d):
    """:func:`_weight` of each of a group's 4 pixels at the same offset ``d``."""
    return (
        _weight(c[0], reach[0], d),
        _weight(c[1], reach[1], d),
        _weight(c[2], reach[2], d),
        _weight(c[3], reach[3], d),
    )


@_jit
def _pixel_chunk(c, reach, d0):
    """One pixel's weights at offsets ``d0 .. d0 + 3``, and the same times ``d^2``."""
    w0 = _weight(c, reach, d0)
    w1 = _weight(c, reach, d0 + 1)
    w2 = _weight(c, reach, d0 + 2)
    w3 = _weight(c, reach, d0 + 3)
    e0 = d0 * 1.0
    e1 = e0 + 1.0
    e2 = e0 + 2.0
    e3 = e0 + 3.0
    return (w0, w1, w2, w3), (w0 * (e0 * e0), w1 * (e1 * e1), w2 * (e2 * e2), w3 * (e3 * e3))


@_jit
def _chunk(c, reach, j0):
    """Pixel ``v``'s weights of chunk columns ``j0 .. j0 + 3`` (offsets ``j0 + u - v``)."""
    a0, b0 = _pixel_chunk(c[0], reach[0], j0)
    a1, b1 = _pixel_chunk(c[1], reach[1], j0 - 1)
    a2, b2 = _pixel_chunk(c[2], reach[2], j0 - 2)
    a3, b3 = _pixel_chunk(c[3], reach[3], j0 - 3)
    return (a0, a1, a2, a3), (b0, b1, b2, b3)


@_jit
def _dot4(w, s):
    return w[0] * s[0] + w[1] * s[1] + w[2] * s[2] + w[3] * s[3]


@_jit
def _moment_rows(
    ptr, up, down, PAIR: tl.constexpr, w, wd, gy, gyk, shift, a, b, SIZE: tl.constexpr
):
    """Add one 4-column chunk of row ``up`` (and row ``down`` if ``PAIR``), less ``shift``,
    to the 4 pixels' sums ``a`` (of weight x value) and ``b`` (of weight x D x value)."""
    s = _split4(tl.load(ptr + up), SIZE)
    if PAIR:  # rows +k and -k share their weight and their D: add them first
        m = _split4(tl.load(ptr + down), SIZE)
        s = (s[0] + m[0] - shift, s[1] + m[1] - shift, s[2] + m[2] - shift, s[3] + m[3] - shift)
    else:
        s = (s[0] - shift, s[1] - shift, s[2] - shift, s[3] - shift)
    r0 = (_dot4(w[0], s), _dot4(w[1], s), _dot4(w[2], s), _dot4(w[3], s))
    r2 = (_dot4(wd[0], s), _dot4(wd[1], s), _dot4(wd[2], s), _dot4(wd[3], s))
    a = (a[0] + gy[0] * r0[0], a[1] + gy[1] * r0[1], a[2] + gy[2] * r0[2], a[3] + gy[3] * r0[3])
    b = (
        b[0] + gy[0] * r2[0] + gyk[0] * r0[0],
        b[1] + gy[1] * r2[1] + gyk[1] * r0[1],
        b[2] + gy[2] * r2[2] + gyk[2] * r0[2],
        b[3] + gy[3] * r2[3] + gyk[3] * r0[3],
    )
    return a, b


@_jit
def _channel_sums(src, src_sc, channel, up, down, PAIR: tl.constexpr, w, wd, gy, gyk, shift, a, b, SIZE: tl.constexpr):  # fmt: skip
    return _moment_rows(src + channel * src_sc, up, down, PAIR, w, wd, gy, gyk, shift, a, b, SIZE)


@_jit
def _centred(a, b, centre, anchor, total, moment):
    """Sums taken about ``anchor`` moved to be about each pixel's own ``centre``."""
    d = (centre[0] - anchor, centre[1] - anchor, centre[2] - anchor, centre[3] - anchor)
    a = (
        a[0] - d[0] * total[0] * total[0],
        a[1] - d[1] * total[1] * total[1],
        a[2] - d[2] * total[2] * total[2],
        a[3] - d[3] * total[3] * total[3],
    )
    b = (
        b[0] - d[0] * 2.0 * moment[0] * total[0],
        b[1] - d[1] * 2.0 * moment[1] * total[1],
        b[2] - d[2] * 2.0 * moment[2] * total[2],
        b[3] - d[3] * 2.0 * moment[3] * total[3],
    )
    return a, b


@_jit
def _store_forward(out, centre, a, norm, inside, SIZE: tl.constexpr):
    value = _join4(
        centre[0] + a[0] * norm[0],
        centre[1] + a[1] * norm[1],
        centre[2] + a[2] * norm[2],
        centre[3] + a[3] * norm[3],
        SIZE,
    )
    tl.store(out, value, mask=inside)


@_jit
def _sigma_term(grad, a, b, ratio):
    """``G (b - a * 2 T / S)`` per pixel: the channel's share of the sigma gradient."""
    g = grad
    return (
        g[0] * (b[0] - a[0] * ratio[0]),
        g[1] * (b[1] - a[1] * ratio[1]),
        g[2] * (b[2] - a[2] * ratio[2]),
        g[3] * (b[3] - a[3] * ratio[3]),
    )


@_jit
def _add4(x, y):
    return x[0] + y[0], x[1] + y[1], x[2] + y[2], x[3] + y[3]


@_jit
def _moments_kernel(
    src_ptr, sigma_ptr, radius_ptr, grad_ptr, out_ptr, gsig_ptr, weights_ptr,
    height, width,
    src_sb, src_sc, src_sy,
    sig_sb, sig_sy, sig_sx,
    rad_sb, rad_sy, rad_sx,
    g_sb, g_sc, g_sy,
    out_sb, out_sc, out_sy,
    gs_sb, gs_sy,
    w_sb, w_sc, w_sy,
    CHANNELS: tl.constexpr, BACKWARD: tl.constexpr, WANT_SIGMA: tl.constexpr,
    ACCUMULATE: tl.constexpr, BLOCK_Y: tl.constexpr, GROUPS: tl.constexpr,
):  # fmt: skip
    """One ``BLOCK_Y x 4*GROUPS`` block of output pixels: the window's moments of up to 4
    channels, laid out as :mod:`adaptiveblur.ops.triton`'s kernel (groups of 4 pixels,
    one aligned vector load feeding 4 pixels, weights reused down the rows).

    Without ``BACKWARD`` it stores the blurred pixels. With it, it stores the pixel's
    weights (:class:`Planes`) and, with ``WANT_SIGMA``, the gradient to sigma (added to what is there with ``ACCUMULATE``, for channels beyond the first 4).
    Sums are taken about each group's first pixel, then moved to each pixel's own value,
    so float32 loses little to cancellation.
    """
    y0 = tl.program_id(1) * BLOCK_Y
    x0 = tl.program_id(0) * (4 * GROUPS)
    item = tl.program_id(2).to(tl.int64)
    SIZE: tl.constexpr = BLOCK_Y * GROUPS
    group = tl.arange(0, SIZE)[:, None]
    y = y0 + group // GROUPS
    x = x0 + 4 * (group % GROUPS) + tl.arange(0, 4)[None, :]
    inside = (y < height) & (x < width)
    dtype = src_ptr.dtype.element_ty

    given = tl.load(sigma_ptr + item * sig_sb + y * sig_sy + x * sig_sx, mask=inside, other=1.0)
    radius = tl.load(radius_ptr + item * rad_sb + y * rad_sy + x * rad_sx, mask=inside, other=0)
    radius = radius.to(tl.int32)
    reach = tl.max(radius)
    s = tl.maximum(given, 1e-3)  # kernels.SIGMA_FLOOR (Triton reads no plain globals)
    c_block = -0.5 / (s * s)
    c = _split4(c_block, SIZE)
    r = _split4(radius.to(dtype), SIZE)

    one = tl.full([SIZE], 1.0, dtype)
    zero = tl.zeros([SIZE], dtype)
    total = (one, one, one, one)  # S = sum_{|d| <= r} g(d)
    moment = (zero, zero, zero, zero)  # T = sum_{|d| <= r} g(d) d^2
    for d in range(1, reach + 1):
        dd = d * d * 1.0
        g = _weights4(c, r, d)
        total = (
            total[0] + 2.0 * g[0],
            total[1] + 2.0 * g[1],
            total[2] + 2.0 * g[2],
            total[3] + 2.0 * g[3],
        )
        moment = (
            moment[0] + 2.0 * dd * g[0],
            moment[1] + 2.0 * dd * g[1],
            moment[2] + 2.0 * dd * g[2],
            moment[3] + 2.0 * dd * g[3],
        )  # fmt: skip
    norm = (
        1.0 / (total[0] * total[0]),
        1.0 / (total[1] * total[1]),
        1.0 / (total[2] * total[2]),
        1.0 / (total[3] * total[3]),
    )

    src = src_ptr + item * src_sb + (y * src_sy + x)  # aligned groups of 4
    SUMS: tl.constexpr = (not BACKWARD) or WANT_SIGMA
    empty = (zero, zero, zero, zero)
    a0, b0, a1, b1, a2, b2, a3, b3 = empty, empty, empty, empty, empty, empty, empty, empty
    v0 = _split4(tl.load(src), SIZE)
    v1, v2, v3 = v0, v0, v0
    if CHANNELS > 1:
        v1 = _split4(tl.load(src + src_sc), SIZE)
    if CHANNELS > 2:
        v2 = _split4(tl.load(src + 2 * src_sc), SIZE)
    if CHANNELS > 3:
        v3 = _split4(tl.load(src + 3 * src_sc), SIZE)
    if SUMS:
        ones = (one, one, one, one)  # row 0: vertical weight 1, D gains nothing
        zeros = (zero, zero, zero, zero)
        chunks = (reach + 3) // 4
        for m in range(-chunks, chunks + 1):
            j0 = 4 * m
            w, wd = _chunk(c, r, j0)
            base = src + j0
            a0, b0 = _channel_sums(
                base, src_sc, 0, 0, 0, False, w, wd, ones, zeros, v0[0], a0, b0, SIZE
            )
            if CHANNELS > 1:
                a1, b1 = _channel_sums(
                    base, src_sc, 1, 0, 0, False, w, wd, ones, zeros, v1[0], a1, b1, SIZE
                )
            if CHANNELS > 2:
                a2, b2 = _channel_sums(
                    base, src_sc, 2, 0, 0, False, w, wd, ones, zeros, v2[0], a2, b2, SIZE
                )
            if CHANNELS > 3:
                a3, b3 = _channel_sums(
                    base, src_sc, 3, 0, 0, False, w, wd, ones, zeros, v3[0], a3, b3, SIZE
                )
            for k in range(1, reach + 1):
                kk = k * k * 1.0
                gy = _weights4(c, r, k)
                gyk = (gy[0] * kk, gy[1] * kk, gy[2] * kk, gy[3] * kk)
                up = k * src_sy
                a0, b0 = _channel_sums(
                    base, src_sc, 0, up, -up, True, w, wd, gy, gyk, 2.0 * v0[0], a0, b0, SIZE
                )
                if CHANNELS > 1:
                    a1, b1 = _channel_sums(
                        base, src_sc, 1, up, -up, True, w, wd, gy, gyk, 2.0 * v1[0], a1, b1, SIZE
                    )
                if CHANNELS > 2:
                    a2, b2 = _channel_sums(
                        base, src_sc, 2, up, -up, True, w, wd, gy, gyk, 2.0 * v2[0], a2, b2, SIZE
                    )
                if CHANNELS > 3:
                    a3, b3 = _channel_sums(
                        base, src_sc, 3, up, -up, True, w, wd, gy, gyk, 2.0 * v3[0], a3, b3, SIZE
                    )
        a0, b0 = _centred(a0, b0, v0, v0[0], total, moment)
        a1, b1 = _centred(a1, b1, v1, v1[0], total, moment)
        a2, b2 = _centred(a2, b2, v2, v2[0], total, moment)
        a3, b3 = _centred(a3, b3, v3, v3[0], total, moment)

    if not BACKWARD:
        out = out_ptr + item * out_sb + y * out_sy + x
        _store_forward(out, v0, a0, norm, inside, SIZE)
        if CHANNELS > 1:
            _store_forward(out + out_sc, v1, a1, norm, inside, SIZE)
        if CHANNELS > 2:
            _store_forward(out + 2 * out_sc, v2, a2, norm, inside, SIZE)
        if CHANNELS > 3:
            _store_forward(out + 3 * out_sc, v3, a3, norm, inside, SIZE)
    else:
        planes = weights_ptr + item * w_sb + y * w_sy + x
        norm_block = _join4(norm[0], norm[1], norm[2], norm[3], SIZE)
        ln2 = tl.log(tl.full([SIZE, 4], 2.0, dtype))  # in the tile's own precision
        tl.store(planes, c_block / ln2, mask=inside)
        tl.store(planes + w_sc, tl.log2(norm_block), mask=inside)
        tl.store(planes + 2 * w_sc, radius.to(dtype), mask=inside)
        grad = grad_ptr + item * g_sb + y * g_sy + x
        ratio = (
            2.0 * moment[0] / total[0],
            2.0 * moment[1] / total[1],
            2.0 * moment[2] / total[2],
            2.0 * moment[3] / total[3],
        )
        g0 = tl.load(grad, mask=inside, other=0.0)
        result = _sigma_term(_split4(g0, SIZE), a0, b0, ratio)
        if CHANNELS > 1:
            g1 = tl.load(grad + g_sc, mask=inside, other=0.0)
            result = _add4(result, _sigma_term(_split4(g1, SIZE), a1, b1, ratio))
        if CHANNELS > 2:
            g2 = tl.load(grad + 2 * g_sc, mask=inside, other=0.0)
            result = _add4(result, _sigma_term(_split4(g2, SIZE), a2, b2, ratio))
        if CHANNELS > 3:
            g3 = tl.load(grad + 3 * g_sc, mask=inside, other=0.0)
            result = _add4(result, _sigma_term(_split4(g3, SIZE), a3, b3, ratio))
        if WANT_SIGMA:
            total_sigma = _join4(result[0], result[1], result[2], result[3], SIZE)
            total_sigma = total_sigma * norm_block / (s * s * s)
            total_sigma = tl.where((given < 1e-3) | (radius == 0), 0.0, total_sigma)
            gsig = gsig_ptr + item * gs_sb + y * gs_sy + x
            if ACCUMULATE:
                total_sigma += tl.load(gsig, mask=inside, other=0.0)
            tl.store(gsig, total_sigma, mask=inside)


@_jit
def _factor(c, b, reach, d):
    """``2^(c d^2 + b)`` at the offset ``d`` (the same for every lane), 0 beyond ``reach``."""
    df = d * 1.0  # a loop index is a plain int under the interpreter
    return tl.where(tl.abs(df) <= reach, tl.exp2(c * (df * df) + b), 0.0)


@_jit
def _factors(c, b, reach, d0):
    """:func:`_factor` at the offsets ``d0 .. d0 + 3``."""
    return (
        _factor(c, b, reach, d0),
        _factor(c, b, reach, d0 + 1),
        _factor(c, b, reach, d0 + 2),
        _factor(c, b, reach, d0 + 3),
    )


@_jit
def _spread_row(acc, gr, cols):
    """One target row's 4 sums plus ``sum_u gr[u] cols[u][v]``, ``u`` in a fixed order."""
    return (
        acc[0] + gr[0] * cols[0][0] + gr[1] * cols[1][0] + gr[2] * cols[2][0] + gr[3] * cols[3][0],
        acc[1] + gr[0] * cols[0][1] + gr[1] * cols[1][1] + gr[2] * cols[2][1] + gr[3] * cols[3][1],
        acc[2] + gr[0] * cols[0][2] + gr[1] * cols[1][2] + gr[2] * cols[2][2] + gr[3] * cols[3][2],
        acc[3] + gr[0] * cols[0][3] + gr[1] * cols[1][3] + gr[2] * cols[2][3] + gr[3] * cols[3][3],
    )


@_jit
def _spread_channel(ptr, valid, rows, cols, acc, SIZE: tl.constexpr):
    """Add 4 sources' gradients (weights ``rows[u][k] cols[u][v]``) to the 4 x 4 targets."""
    g = _split4(tl.load(ptr, mask=valid, other=0.0), SIZE)
    return (
        _spread_row(acc[0], (g[0] * rows[0][0], g[1] * rows[1][0], g[2] * rows[2][0], g[3] * rows[3][0]), cols),
        _spread_row(acc[1], (g[0] * rows[0][1], g[1] * rows[1][1], g[2] * rows[2][1], g[3] * rows[3][1]), cols),
        _spread_row(acc[2], (g[0] * rows[0][2], g[1] * rows[1][2], g[2] * rows[2][2], g[3] * rows[3][2]), cols),
        _spread_row(acc[3], (g[0] * rows[0][3], g[1] * rows[1][3], g[2] * rows[2][3], g[3] * rows[3][3]), cols),
    )  # fmt: skip


@_jit
def _store_spread(ptr, acc, row_stride, qy, qx, padded_h, padded_w, SIZE: tl.constexpr):
    for k in tl.static_range(4):
        value = _join4(acc[k][0], acc[k][1], acc[k][2], acc[k][3], SIZE)
        inside = (qy + k < padded_h) & (qx < padded_w)
        tl.store(ptr + k * row_stride, value, mask=inside)


@_jit
def _spread_kernel(
    weights_ptr, grad_ptr, gin_ptr,
    padded_h, padded_w, halo, chunks, height, width,
    w_sb, w_sc, w_sy,
    g_sb, g_sc, g_sy,
    gi_sb, gi_sc, gi_sy,
    CHANNELS: tl.constexpr, BLOCK_Y: tl.constexpr, GROUPS: tl.constexpr,
):  # fmt: skip
    """One ``4*BLOCK_Y x 4*GROUPS`` block of padded positions ``q``: ``sum_p a_p(q - p)
    G_p`` over the pixels ``p`` within ``halo`` whose own radius reaches ``q``.

    Each thread takes 4 x 4 positions. A source's weight factors, ``2^(c dy^2 + b)``
    down and ``2^(c dx^2)`` across, serve its 16 pairs with 8 exponentials; one aligned
    vector load of 4 sources' weights (:class:`Planes`, whose margins make every read
    valid) and one masked load of their gradients feed 64 pairs.
    """
    y0 = tl.program_id(1) * (4 * BLOCK_Y)
    x0 = tl.program_id(0) * (4 * GROUPS)
    item = tl.program_id(2).to(tl.int64)
    SIZE: tl.constexpr = BLOCK_Y * GROUPS
    group = tl.arange(0, SIZE)[:, None]
    qy = y0 + 4 * (group // GROUPS)  # the thread's first row
    qx = x0 + 4 * (group % GROUPS) + tl.arange(0, 4)[None, :]
    dtype = grad_ptr.dtype.element_ty
    zero = tl.zeros([SIZE], dtype)
    empty = ((zero, zero, zero, zero), (zero, zero, zero, zero),
             (zero, zero, zero, zero), (zero, zero, zero, zero))  # fmt: skip
    acc0, acc1, acc2, acc3 = empty, empty, empty, empty
    # Source p = (qy - halo - j, qx - 4 n + u): target (k, v) is at offset (j + k, e + v - u),
    # e = 4 n - halo.
    planes = weights_ptr + item * w_sb
    grad = grad_ptr + item * g_sb
    for j in range(-halo - 3, halo + 1):
        py = qy - halo - j
        row_ok = (py >= 0) & (py < height)
        for n in range(0, chunks + 1):
            px = qx - 4 * n
            at = py * w_sy + px
            c = _split4(tl.load(planes + at), SIZE)
            b = _split4(tl.load(planes + w_sc + at), SIZE)
            reach = _split4(tl.load(planes + 2 * w_sc + at), SIZE)
            e = 4 * n - halo
            rows = (
                _factors(c[0], b[0], reach[0], j),
                _factors(c[1], b[1], reach[1], j),
                _factors(c[2], b[2], reach[2], j),
                _factors(c[3], b[3], reach[3], j),
            )
            cols = (
                _factors(c[0], 0.0, reach[0], e),
                _factors(c[1], 0.0, reach[1], e - 1),
                _factors(c[2], 0.0, reach[2], e - 2),
                _factors(c[3], 0.0, reach[3], e - 3),
            )
            valid = row_ok & (px >= 0) & (px < width)
            source = grad + py * g_sy + px
            acc0 = _spread_channel(source, valid, rows, cols, acc0, SIZE)
            if CHANNELS > 1:
                acc1 = _spread_channel(source + g_sc, valid, rows, cols, acc1, SIZE)
            if CHANNELS > 2:
                acc2 = _spread_channel(source + 2 * g_sc, valid, rows, cols, acc2, SIZE)
            if CHANNELS > 3:
                acc3 = _spread_channel(source + 3 * g_sc, valid, rows, cols, acc3, SIZE)
    out = gin_ptr + item * gi_sb + qy * gi_sy + qx
    _store_spread(out, acc0, gi_sy, qy, qx, padded_h, padded_w, SIZE)
    if CHANNELS > 1:
        _store_spread(out + gi_sc, acc1, gi_sy, qy, qx, padded_h, padded_w, SIZE)
    if CHANNELS > 2:
        _store_spread(out + 2 * gi_sc, acc2, gi_sy, qy, qx, padded_h, padded_w, SIZE)
    if CHANNELS > 3:
        _store_spread(out + 3 * gi_sc, acc3, gi_sy, qy, qx, padded_h, padded_w, SIZE)
