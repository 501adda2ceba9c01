"""The Triton backend: the exact gather as one fused CUDA kernel, no window materialised.

Each output pixel ``p`` with sigma ``s`` and radius ``r`` is

    out(p) = sum_{|dy|,|dx| <= r} g(dy) g(dx) I(p + (dy, dx)) / (sum_{|d| <= r} g(d))^2,
    g(d) = exp(-d^2 / (2 s^2)),

the same function as :mod:`adaptiveblur.ops.reference`, in float32 arithmetic (no tf32).

How the kernel is laid out, and why:

* A program owns ``BLOCK_Y x (4 * GROUPS)`` output pixels of one image, all its channels
  (up to 4 per launch; more are done 4 at a time). Each thread holds groups of 4
  horizontally adjacent pixels, so one aligned 16-byte load of 4 input values feeds
  4 x 4 multiply-adds per channel instead of one. Groups are numbered row-major in a
  1-D block so that a warp's loads cover whole 128-byte lines.
* The program loops only as far as the largest radius among its own pixels (read from
  ``radius`` at run time), so areas of small sigma cost less; pixels of smaller radius
  in the block get exact zero weights beyond their own window.
* The weights are separable per pixel. For each 4-column chunk of the window the 16
  horizontal weights (4 pixels x 4 columns) are computed once with ``exp2`` and reused
  down all rows (two chunks per pass by default); rows ``+k`` and ``-k`` share their
  vertical weight, so they are added first and multiplied once. The inner loop is
  loads, adds and FMAs: about one instruction per multiply-add of the direct sum.
  The normaliser is ``(sum_d g(d))^2`` in closed form.
* Loads are unmasked and 16-byte aligned: the launcher copies the padded tile into a
  zero-margined buffer whose rows are a multiple of 16 floats and whose first output
  column sits on a 16-byte boundary (one extra pass over the tile).

This kernel is float32 only. Under autograd, and for float64 tiles,
:mod:`adaptiveblur.ops.triton_grad` takes over: the same forward pass (a plain gather for
float64) and a backward pass of two gather kernels. Design
notes and timings: ``docs/fast_method.md`` (section "The fused Triton kernel").
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from adaptiveblur.ops.tile import TileInput

try:
    import triton
    import triton.language as tl
except ImportError as error:  # the backend then reports itself unavailable
    triton = None
    tl = None
    _IMPORT_ERROR: str | None = f"triton is not installed ({error})"
else:
    _IMPORT_ERROR = None

_MAX_CHANNELS = 4  # channels one launch carries; more are done in groups
_ROW_ALIGN = 16  # floats: row stride of the aligned copy (Triton marks it divisible by 16)


@dataclass(frozen=True)
class LaunchConfig:
    """How one launch is cut up.

    Attributes:
        block_y, groups: a program owns ``block_y`` rows x ``4 * groups`` columns.
        num_warps: warps per program (one group of 4 pixels per thread when
            ``block_y * groups == 32 * num_warps``).
        paired: walk the window 8 columns (two aligned chunks) per pass over its rows
            instead of 4: fewer instructions, more registers.
        maxnreg: register cap per thread (``None``: the compiler's choice); a lower cap
            lets more warps share a multiprocessor.
    """

    block_y: int = 16
    groups: int = 8
    num_warps: int = 4
    paired: bool = True
    maxnreg: int | None = None

    @property
    def block_x(self) -> int:
        return 4 * self.groups


DEFAULT_CONFIG = LaunchConfig()


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available(device: torch.device) -> str | None:
    """``None`` when Triton imports and ``device`` is a CUDA device, else why not."""
    if _IMPORT_ERROR is not None:
        return _IMPORT_ERROR
    if device.type != "cuda":
        return f"the Triton kernel runs on CUDA devices, not {device.type}"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (7, 5):
        return f"Triton needs compute capability 7.5 or newer, this GPU has {major}.{minor}"
    return None


def bytes_per_pixel(batch: int, channels: int, window: int, element: int) -> int:
    """Memory per output pixel, independent of the window.

    The engine's padded tile, this backend's aligned copy of it and the output tile
    (``channels`` values each), plus the tile's sigma and int64 radius; under autograd
    also the backward pass's gradients to the tile and to sigma and its three weight
    planes (``2 * channels + 4`` values, bounding its aligned copy too).
    """
    del window  # the kernels keep no per-window temporaries
    return batch * ((5 * channels + 4) * element + 8)


def blur_tile(tile: TileInput) -> torch.Tensor:
    """Blur one float32 or float64 CUDA tile (``tile.budget`` is unused: no temporaries
    beyond a copy); differentiable in ``tile.padded`` and ``tile.sigma``.

    Returns:
        ``(B, C, h, w)`` blurred tile in the tile's dtype.

    Raises:
        ValueError: dtypes, devices or a non-contiguous ``padded`` that do not fit.
    """
    if tile.padded.dtype == torch.float64 or (
        torch.is_grad_enabled() and (tile.padded.requires_grad or tile.sigma.requires_grad)
    ):
        from adaptiveblur.ops import triton_grad

        _check(tile, dtypes=(torch.float32, torch.float64))
        return triton_grad.blur_tile(tile)
    return gather_blur(tile)


def gather_blur(tile: TileInput, config: LaunchConfig = DEFAULT_CONFIG) -> torch.Tensor:
    """:func:`blur_tile` with an explicit launch configuration."""
    source, out = prepare(tile, config)
    launch(source, tile.sigma, tile.radius, out, config)
    return out


def prepare(
    tile: TileInput, config: LaunchConfig = DEFAULT_CONFIG
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the tile; return the aligned source view and an empty output.

    The source view ``(B, C, h, w)`` starts at output pixel (0, 0) of a zero-margined
    copy of ``padded``: reads up to ``halo`` rows and ``halo + 3`` columns before it and
    past the last block of programs stay inside the copy.
    """
    _check(tile)
    source = aligned_source(tile.padded, tile.halo, config.block_y, config.block_x)
    padded = tile.padded
    batch, channels = padded.shape[:2]
    out = torch.empty(
        (batch, channels, tile.height, tile.width), dtype=padded.dtype, device=padded.device
    )
    return source, out


def aligned_source(padded: torch.Tensor, halo: int, block_y: int, block_x: int) -> torch.Tensor:
    """A view ``(B, C, h, w)`` at output pixel (0, 0) of a zero-margined copy of ``padded``.

    Rows are a multiple of 16 elements apart and the first output column sits on a
    4-element boundary, so groups of 4 pixels load as one aligned vector; reads up to
    ``halo`` rows and ``halo + 3`` columns beyond the output, in blocks of ``block_y x
    block_x`` pixels, stay inside the copy.
    """
    batch, channels, padded_h, padded_w = padded.shape
    height, width = padded_h - 2 * halo, padded_w - 2 * halo
    rows = _round_up(height, block_y)
    cols = _round_up(width, block_x)
    left = 3 + (-(halo + 3)) % 4  # >= 3 columns before the first read, output start on 4
    stride_y = _round_up(left + cols + 2 * halo + 3, _ROW_ALIGN)
    buffer = torch.empty(
        (batch, channels, rows + 2 * halo, stride_y), dtype=padded.dtype, device=padded.device
    )
    # Every value read must be finite: out-of-window taps weigh exactly 0, and 0 * NaN is NaN.
    buffer[..., :left].zero_()
    buffer[..., left + padded_w :].zero_()
    buffer[..., padded_h:, left : left + padded_w].zero_()
    buffer[..., :padded_h, left : left + padded_w].copy_(padded)
    return buffer[..., halo : halo + height, halo + left : halo + left + width]


def launch(
    source: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    out: torch.Tensor,
    config: LaunchConfig = DEFAULT_CONFIG,
) -> None:
    """Run the kernel on a source view from :func:`prepare` into ``out`` (B, C, h, w)."""
    batch, channels, height, width = out.shape
    grid = (triton.cdiv(width, config.block_x), triton.cdiv(height, config.block_y), batch)
    options = {} if config.maxnreg is None else {"maxnreg": config.maxnreg}
    with on_device(out.device):
        _launch_groups(source, sigma, radius, out, config, grid, options)


def on_device(device: torch.device) -> contextlib.AbstractContextManager:
    """Launch on ``device``: Triton launches on the current CUDA device (nothing to do for
    the interpreter's CPU tensors)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _launch_groups(
    source: torch.Tensor,
    sigma: torch.Tensor,
    radius: torch.Tensor,
    out: torch.Tensor,
    config: LaunchConfig,
    grid: tuple[int, int, int],
    options: dict[str, int],
) -> None:
    channels, height, width = out.shape[1:]
    for first in range(0, channels, _MAX_CHANNELS):
        count = min(_MAX_CHANNELS, channels - first)
        _gather_blur_kernel[grid](
            source[:, first:],
            sigma,
            radius,
            out[:, first:],
            height,
            width,
            source.stride(0),
            source.stride(1),
            source.stride(2),
            sigma.stride(0),
            sigma.stride(2),
            sigma.stride(3),
            radius.stride(0),
            radius.stride(2),
            radius.stride(3),
            out.stride(0),
            out.stride(1),
            out.stride(2),
            CHANNELS=count,
            BLOCK_Y=config.block_y,
            GROUPS=config.groups,
            PAIRED=config.paired,
            num_warps=config.num_warps,
            **options,
        )


def _check(tile: TileInput, dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> None:
    """What this kernel needs beyond the tile contract (whose shapes are already checked)."""
    if _IMPORT_ERROR is not None:
        raise RuntimeError(_IMPORT_ERROR)
    padded, sigma, radius = tile.padded, tile.sigma, tile.radius
    if padded.dtype not in dtypes or sigma.dtype != padded.dtype:
        names = " or ".join(str(dtype).removeprefix("torch.") for dtype in dtypes)
        raise ValueError(f"expected {names} padded and sigma, got {padded.dtype} and {sigma.dtype}")
    if not padded.is_contiguous():
        raise ValueError("expected a contiguous padded tile")
    devices = {padded.device, sigma.device, radius.device}
    if len(devices) != 1:
        raise ValueError(
            f"expected padded, sigma and radius on one device, got {sorted(map(str, devices))}"
        )
    if padded.device.type != "cuda" and not _interpreting():
        raise ValueError(f"expected CUDA tensors (or TRITON_INTERPRET=1), got {padded.device}")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _jit(fn):  # noqa: ANN001, ANN202 - a Triton kernel or the plain function without Triton
    return fn if triton is None else triton.jit(fn)


@_jit
def _split4(x, SIZE: tl.constexpr):
    """``(SIZE, 4)`` -> four ``(SIZE,)``: the 4 pixels (or columns) of each group."""
    even, odd = tl.split(tl.reshape(x, [SIZE, 2, 2]))
    u0, u2 = tl.split(even)
    u1, u3 = tl.split(odd)
    return u0, u1, u2, u3


@_jit
def _join4(u0, u1, u2, u3, SIZE: tl.constexpr):
    """Inverse of :func:`_split4`."""
    return tl.reshape(tl.join(tl.join(u0, u2), tl.join(u1, u3)), [SIZE, 4])


@_jit
def _tap(scale, reach, d):
    """Weight ``exp2(scale * d^2)`` of offset ``d`` (a scalar), 0 where ``|d| > reach``."""
    df = d * 1.0  # float32 (a loop index is a plain int under the interpreter)
    return tl.where(tl.abs(df) <= reach, tl.exp2(scale * (df * df)), 0.0)


@_jit
def _taps4(scale, reach, d0):
    """Weights of one pixel at offsets ``d0 .. d0 + 3``."""
    return (
        _tap(scale, reach, d0),
        _tap(scale, reach, d0 + 1),
        _tap(scale, reach, d0 + 2),
        _tap(scale, reach, d0 + 3),
    )


@_jit
def _chunk_weights(scale, reach, j0):
    """``w[v][u]``: pixel ``v``'s weight of chunk column ``j0 + u`` (offset ``j0 + u - v``)."""
    return (
        _taps4(scale[0], reach[0], j0),
        _taps4(scale[1], reach[1], j0 - 1),
        _taps4(scale[2], reach[2], j0 - 2),
        _taps4(scale[3], reach[3], j0 - 3),
    )


@_jit
def _row_weights(scale, reach, k):
    """Each pixel's weight of rows ``+k`` and ``-k``."""
    return (
        _tap(scale[0], reach[0], k),
        _tap(scale[1], reach[1], k),
        _tap(scale[2], reach[2], k),
        _tap(scale[3], reach[3], k),
    )


@_jit
def _add_rows(ptr, up, down, PAIR: tl.constexpr, w, g, a, SIZE: tl.constexpr):
    """Add one 4-column chunk of row ``up`` (plus row ``down`` if ``PAIR``) to 4 pixels.

    One aligned 16-byte load per row feeds 16 multiply-adds (4 pixels x 4 columns).
    """
    s = _split4(tl.load(ptr + up), SIZE)
    if PAIR:  # rows +k and -k share their weight: add them, then multiply once
        m = _split4(tl.load(ptr + down), SIZE)
        s = (s[0] + m[0], s[1] + m[1], s[2] + m[2], s[3] + m[3])
    return (
        a[0] + g[0] * (w[0][0] * s[0] + w[0][1] * s[1] + w[0][2] * s[2] + w[0][3] * s[3]),
        a[1] + g[1] * (w[1][0] * s[0] + w[1][1] * s[1] + w[1][2] * s[2] + w[1][3] * s[3]),
        a[2] + g[2] * (w[2][0] * s[0] + w[2][1] * s[1] + w[2][2] * s[2] + w[2][3] * s[3]),
        a[3] + g[3] * (w[3][0] * s[0] + w[3][1] * s[1] + w[3][2] * s[2] + w[3][3] * s[3]),
    )


@_jit
def _add_channel(
    ptr, up, down, PAIR: tl.constexpr, wa, wb, g, a, TWO: tl.constexpr, SIZE: tl.constexpr
):
    """One channel: chunk ``wa`` at ``ptr``, and chunk ``wb`` 4 columns on if ``TWO``."""
    a = _add_rows(ptr, up, down, PAIR, wa, g, a, SIZE)
    if TWO:
        a = _add_rows(ptr + 4, up, down, PAIR, wb, g, a, SIZE)
    return a


@_jit
def _add_columns(
    src, src_sy, src_sc, j0, reach, scale, radius, acc0, acc1, acc2, acc3, one,
    CHANNELS: tl.constexpr, TWO: tl.constexpr, SIZE: tl.constexpr,
):  # fmt: skip
    """Add window columns ``j0 .. j0 + 3`` (``.. j0 + 7`` if ``TWO``) of every row, every channel.

    The chunk's horizontal weights are computed once here and reused down all rows.
    """
    wa = _chunk_weights(scale, radius, j0)
    wb = wa
    if TWO:
        wb = _chunk_weights(scale, radius, j0 + 4)
    base = src + j0
    g = (one, one, one, one)  # row 0
    acc0 = _add_channel(base, 0, 0, False, wa, wb, g, acc0, TWO, SIZE)
    if CHANNELS > 1:
        acc1 = _add_channel(base + src_sc, 0, 0, False, wa, wb, g, acc1, TWO, SIZE)
    if CHANNELS > 2:
        acc2 = _add_channel(base + 2 * src_sc, 0, 0, False, wa, wb, g, acc2, TWO, SIZE)
    if CHANNELS > 3:
        acc3 = _add_channel(base + 3 * src_sc, 0, 0, False, wa, wb, g, acc3, TWO, SIZE)
    for k in range(1, reach + 1):
        g = _row_weights(scale, radius, k)
        up = k * src_sy
        acc0 = _add_channel(base, up, -up, True, wa, wb, g, acc0, TWO, SIZE)
        if CHANNELS > 1:
            acc1 = _add_channel(base + src_sc, up, -up, True, wa, wb, g, acc1, TWO, SIZE)
        if CHANNELS > 2:
            acc2 = _add_channel(base + 2 * src_sc, up, -up, True, wa, wb, g, acc2, TWO, SIZE)
        if CHANNELS > 3:
            acc3 = _add_channel(base + 3 * src_sc, up, -up, True, wa, wb, g, acc3, TWO, SIZE)
    return acc0, acc1, acc2, acc3


@_jit
def _store_channel(out_ptr, a, norm, inside, SIZE: tl.constexpr):
    value = _join4(a[0] * norm[0], a[1] * norm[1], a[2] * norm[2], a[3] * norm[3], SIZE)
    tl.store(out_ptr, value, mask=inside)


@_jit
def _gather_blur_kernel(
    src_ptr, sigma_ptr, radius_ptr, out_ptr,
    height, width,
    src_sb, src_sc, src_sy,
    sig_sb, sig_sy, sig_sx,
    rad_sb, rad_sy, rad_sx,
    out_sb, out_sc, out_sy,
    CHANNELS: tl.constexpr, BLOCK_Y: tl.constexpr, GROUPS: tl.constexpr, PAIRED: tl.constexpr,
):  # fmt: skip
    """One ``BLOCK_Y x 4*GROUPS`` block of output pixels of image ``program_id(2)``.

    Weights are ``exp2(c d^2)`` with ``c = -log2(e) / (2 s^2)``; sigma is clamped at 1e-3
    (kernels.SIGMA_FLOOR) so that ``c`` stays finite and the centre weight is exactly 1.
    ``PAIRED`` walks the window two 4-column chunks at a time (one row pass per 8 columns).

    ``src_ptr`` points at output pixel (0, 0) of the aligned copy; rows ``src_sy`` apart
    (a multiple of 16), columns contiguous, at least ``halo + 3`` readable columns each side.
    """
    y0 = tl.program_id(1) * BLOCK_Y
    x0 = tl.program_id(0) * (4 * GROUPS)
    batch = tl.program_id(2).to(tl.int64)
    # One row of 4 per group, groups row-major: consecutive threads take consecutive
    # groups of a row, so a warp's 16-byte loads cover whole 128-byte lines.
    SIZE: tl.constexpr = BLOCK_Y * GROUPS
    group = tl.arange(0, SIZE)[:, None]
    y = y0 + group // GROUPS
    x = x0 + 4 * (group % GROUPS) + tl.arange(0, 4)[None, :]
    inside = (y < height) & (x < width)

    sigma = tl.load(sigma_ptr + batch * sig_sb + y * sig_sy + x * sig_sx, mask=inside, other=1.0)
    radius = tl.load(radius_ptr + batch * rad_sb + y * rad_sy + x * rad_sx, mask=inside, other=0)
    radius = radius.to(tl.int32)
    reach = tl.max(radius)  # this block's widest window: every loop stops there
    sigma = tl.maximum(sigma, 1e-3)  # kernels.SIGMA_FLOOR (Triton reads no plain globals)
    scale = _split4(-0.7213475204444817 / (sigma * sigma), SIZE)
    radius = _split4(radius.to(tl.float32), SIZE)

    # Normaliser: (sum_{|d| <= r} g(d))^2, the sum of the separable window's weights.
    one = tl.full([SIZE], 1.0, tl.float32)
    n = (one, one, one, one)
    for d in range(1, reach + 1):
        g = _row_weights(scale, radius, d)
        n = (n[0] + 2.0 * g[0], n[1] + 2.0 * g[1], n[2] + 2.0 * g[2], n[3] + 2.0 * g[3])
    # A multiply by the reciprocal keeps radius-0 pixels bit-exact (x * 1.0).
    norm = (
        1.0 / (n[0] * n[0]),
        1.0 / (n[1] * n[1]),
        1.0 / (n[2] * n[2]),
        1.0 / (n[3] * n[3]),
    )

    zero = tl.zeros([SIZE], tl.float32)
    acc0 = (zero, zero, zero, zero)
    acc1 = acc0
    acc2 = acc0
    acc3 = acc0
    src = src_ptr + batch * src_sb + (y * src_sy + x)  # 16-byte aligned groups of 4
    chunks = (reach + 3) // 4  # chunks -chunks .. chunks cover offsets -reach .. reach + 3
    if PAIRED:
        for pair in range(0, chunks):
            acc0, acc1, acc2, acc3 = _add_columns(
                src, src_sy, src_sc, 4 * (2 * pair - chunks), reach, scale, radius,
                acc0, acc1, acc2, acc3, one, CHANNELS, True, SIZE,
            )  # fmt: skip
        acc0, acc1, acc2, acc3 = _add_columns(
            src, src_sy, src_sc, 4 * chunks, reach, scale, radius,
            acc0, acc1, acc2, acc3, one, CHANNELS, False, SIZE,
        )  # fmt: skip
    else:
        for m in range(-chunks, chunks + 1):
            acc0, acc1, acc2, acc3 = _add_columns(
                src, src_sy, src_sc, 4 * m, reach, scale, radius,
                acc0, acc1, acc2, acc3, one, CHANNELS, False, SIZE,
            )  # fmt: skip

    out = out_ptr + batch * out_sb + y * out_sy + x
    _store_channel(out, acc0, norm, inside, SIZE)
    if CHANNELS > 1:
        _store_channel(out + out_sc, acc1, norm, inside, SIZE)
    if CHANNELS > 2:
        _store_channel(out + 2 * out_sc, acc2, norm, inside, SIZE)
    if CHANNELS > 3:
        _store_channel(out + 3 * out_sc, acc3, norm, inside, SIZE)
