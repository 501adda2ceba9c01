"""The spatially varying convolution as a sum over window offsets, with its own backward pass.

For each offset ``(i, j)`` of the ``k x k`` window the input shifted by it is a view of
the padded input (no copy), so the forward pass is ``k^2`` image-sized products:

    factored:      out += weight[:, :, i, j] @ (modulation[:, i k + j] * x_ij)
    per location:  out += sum_c K[:, :, c, i, j] * x_ij[:, c]

and the backward pass is the same loop, each gradient a gather (no atomics, every sum in
a fixed order, so two runs give the same bits)::

    G_ij          = weight[:, :, i, j]^T @ grad_out          (per pixel, over C_out)
    grad_x_ij    += G_ij * modulation[:, i k + j]             (into the padded input's view)
    grad_mod_ij   = sum_c G_ij * x_ij
    grad_w[:, :, i, j] = sum_{b, p} grad_out (modulation_ij * x_ij)^T

Nothing ``k^2`` times the image is ever held beside the modulation (or the per-location
kernels) the caller gave and their gradients: rows are done in bands of at most
``max_memory`` bytes of temporaries.
"""

from __future__ import annotations

from typing import Any

import torch

# Temporaries per output pixel and channel of a band: the shifted product, the running
# sum and the backward's G (in the element size).
_TEMPORARIES = 3


def shifted_conv(
    padded: torch.Tensor,
    weight: torch.Tensor,
    modulation: torch.Tensor | None,
    size: int,
    max_memory: int,
) -> torch.Tensor:
    """The convolution of :func:`adaptiveblur.nn.spatially_varying_conv2d` without bias.

    A ``torch.library`` custom op (``adaptiveblur::shifted_conv``) with a registered
    backward and shape function, so ``torch.compile(fullgraph=True)`` captures it whole.

    Args:
        padded: ``(B, C_in, H + k - 1, W + k - 1)``, the input with its border filled.
        weight: ``(C_out, C_in, k, k)``, or per location ``(B or 1, C_out, C_in, k, k, H, W)``.
        modulation: ``(B or 1, k*k, H, W)`` with a shared weight, else ``None``.
        size: ``k``.
        max_memory: bytes of temporaries per band of rows.

    Returns:
        ``(B, C_out, H, W)``; differentiable in ``padded``, ``weight`` and ``modulation``.
    """
    return torch.ops.adaptiveblur.shifted_conv(padded, weight, modulation, size, max_memory)


@torch.library.custom_op("adaptiveblur::shifted_conv", mutates_args=())
def _conv_op(
    padded: torch.Tensor,
    weight: torch.Tensor,
    modulation: torch.Tensor | None,
    size: int,
    max_memory: int,
) -> torch.Tensor:
    if padded.is_cuda:  # fused Triton kernels where they run
        from adaptiveblur.ops import triton_conv, triton_local

        if triton_conv.handles(padded, weight, modulation):
            return triton_conv.conv_forward(padded, weight, modulation, size)
        if triton_local.handles(padded, weight, modulation):
            return triton_local.local_forward(padded, weight, size)
    return _forward(padded, weight, modulation, size, max_memory)


@_conv_op.register_fake
def _conv_shape(
    padded: torch.Tensor,
    weight: torch.Tensor,
    modulation: torch.Tensor | None,
    size: int,
    max_memory: int,
) -> torch.Tensor:
    out_channels = weight.shape[-6] if weight.dim() == 7 else weight.shape[0]
    height, width = padded.shape[-2] - size + 1, padded.shape[-1] - size + 1
    return padded.new_empty(padded.shape[0], out_channels, height, width)


@torch.library.custom_op("adaptiveblur::shifted_conv_backward", mutates_args=())
def _conv_backward_op(
    grad_out: torch.Tensor,
    padded: torch.Tensor,
    weight: torch.Tensor,
    modulation: torch.Tensor | None,
    size: int,
    max_memory: int,
    wanted: list[bool],
) -> list[torch.Tensor]:
    """The gradients to ``padded``, ``weight`` and ``modulation``; an empty tensor for one
    not ``wanted`` (or no modulation)."""
    want_x, want_weight = wanted[0], wanted[1]
    want_modulation = wanted[2] and modulation is not None
    if padded.is_cuda:  # fused Triton kernels where they run
        from adaptiveblur.ops import triton_conv, triton_local

        if triton_local.handles(padded, weight, modulation):
            grad_x, grad_w = triton_local.local_backward(
                grad_out, padded, weight, size, want_x=want_x, want_weight=want_weight
            )
            return [padded.new_empty(0) if g is None else g for g in (grad_x, grad_w, None)]
        if triton_conv.handles(padded, weight, modulation):
            grads = triton_conv.conv_backward(
                grad_out,
                padded,
                weight,
                modulation,
                size,
                want_x=want_x,
                want_weight=want_weight,
                want_modulation=want_modulation,
            )
            return [padded.new_empty(0) if grad is None else grad for grad in grads]
    grads = _backward(
        grad_out.contiguous(),
        padded,
        weight,
        modulation,
        size,
        max_memory,
        want_x=want_x,
        want_weight=want_weight,
        want_modulation=want_modulation,
    )
    return [padded.new_empty(0) if grad is None else grad for grad in grads]


@_conv_backward_op.register_fake
def _conv_backward_shape(
    grad_out: torch.Tensor,
    padded: torch.Tensor,
    weight: torch.Tensor,
    modulation: torch.Tensor | None,
    size: int,
    max_memory: int,
    wanted: list[bool],
) -> list[torch.Tensor]:
    shapes = (padded, weight, modulation)
    return [
        torch.empty_like(like) if want and like is not None else padded.new_empty(0)
        for want, like in zip(wanted, shapes, strict=True)
    ]


def _conv_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    padded, weight, modulation, size, max_memory = inputs
    ctx.save_for_backward(padded, weight, modulation)
    ctx.size, ctx.max_memory = size, max_memory


def _conv_gradients(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    padded, weight, modulation = ctx.saved_tensors
    wanted = [bool(flag) for flag in ctx.needs_input_grad[:3]]
    grads = torch.ops.adaptiveblur.shifted_conv_backward(
        grad_out, padded, weight, modulation, ctx.size, ctx.max_memory, wanted
    )
    return (*(grad if want else None for grad, want in zip(grads, wanted, strict=True)), None, None)


_conv_op.register_autograd(_conv_gradients, setup_context=_conv_setup)


def _bands(
    padded: torch.Tensor, weight: torch.Tensor, size: int, max_memory: int
) -> list[tuple[int, int]]:
    """Output row ranges whose temporaries fit ``max_memory`` (at least one row each)."""
    batch, channels = padded.shape[:2]
    height, width = padded.shape[-2] - size + 1, padded.shape[-1] - size + 1
    out_channels = weight.shape[-6] if weight.dim() == 7 else weight.shape[0]
    per_location = out_channels * channels if weight.dim() == 7 else 0
    row = batch * width * (max(channels, out_channels) * _TEMPORARIES + per_location)
    rows = max(1, max_memory // max(1, row * padded.element_size()))
    return [(y, min(y + rows, height)) for y in range(0, height, rows)]


def _forward(
    padded: torch.Tensor,
    weight: torch.Tensor,
    modulation: torch.Tensor | None,
    size: int,
    max_memory: int,
) -> torch.Tensor:
    batch, channels = padded.shape[:2]
    height, width = padded.shape[-2] - size + 1, padded.shape[-1] - size + 1
    per_location = weight.dim() == 7
    out_channels = weight.shape[-6] if per_location else weight.shape[0]
    out = padded.new_zeros(batch, out_channels, height, width)
    for y0, y1 in _bands(padded, weight, size, max_memory):
        band = out[:, :, y0:y1]
        for i in range(size):
            for j in range(size):
                shifted = padded[:, :, y0 + i : y1 + i, j : j + width]  # (B, C, h, W), a view
                if per_location:
                    kernel = weight[:, :, :, i, j, y0:y1]  # (B, C_out, C_in, h, W)
                    band += (kernel * shifted.unsqueeze(1)).sum(2)
                    continue
                if modulation is not None:
                    shifted = shifted * modulation[:, i * size + j, y0:y1].unsqueeze(1)
                band += _mix(weight[:, :, i, j], shifted)
    return out


def _backward(
    grad_out: torch.Tensor,
    padded: torch.Tensor,
    weight: torch.Tensor,
    modulation: torch.Tensor | None,
    size: int,
    max_memory: int,
    *,
    want_x: bool,
    want_weight: bool,
    want_modulation: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    width = padded.shape[-1] - size + 1
    per_location = weight.dim() == 7
    grad_x = torch.zeros_like(padded) if want_x else None
    grad_weight = torch.zeros_like(weight) if want_weight else None
    grad_modulation = (
        torch.zeros_like(modulation) if want_modulation and modulation is not None else None
    )
    for y0, y1 in _bands(padded, weight, size, max_memory):
        grad = grad_out[:, :, y0:y1]  # (B, C_out, h, W)
        for i in range(size):
            for j in range(size):
                rows = slice(y0 + i, y1 + i)
                shifted = padded[:, :, rows, j : j + width]
                if per_location:
                    kernel = weight[:, :, :, i, j, y0:y1]  # (B|1, C_out, C_in, h, W)
                    if grad_x is not None:
                        grad_x[:, :, rows, j : j + width] += (kernel * grad.unsqueeze(2)).sum(1)
                    if grad_weight is not None:
                        outer = grad.unsqueeze(2) * shifted.unsqueeze(1)
                        if grad_weight.shape[0] != outer.shape[0]:  # one kernel set for all
                            outer = outer.sum(0, keepdim=True)
                        grad_weight[:, :, :, i, j, y0:y1] = outer
                    continue
                tap = weight[:, :, i, j]  # (C_out, C_in)
                scale = None if modulation is None else modulation[:, i * size + j, y0:y1]
                if grad_x is not None or grad_modulation is not None:
                    spread = _mix(tap.t(), grad)  # (B, C_in, h, W)
                    if grad_x is not None:
                        into = spread if scale is None else spread * scale.unsqueeze(1)
                        grad_x[:, :, rows, j : j + width] += into
                    if grad_modulation is not None:
                        product = (spread * shifted).sum(1)
                        if grad_modulation.shape[0] != product.shape[0]:
                            product = product.sum(0, keepdim=True)
                        grad_modulation[:, i * size + j, y0:y1] = product
                if grad_weight is not None:
                    seen = shifted if scale is None else shifted * scale.unsqueeze(1)
                    # sum over batch and pixels of grad (C_out) times seen (C_in)
                    grad_weight[:, :, i, j] += torch.einsum("bohw,bchw->oc", grad, seen)
    return grad_x, grad_weight, grad_modulation


def _mix(tap: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``tap (A, C) @ values (B, C, h, W)`` over the channels: ``(B, A, h, W)``."""
    batch, channels, height, width = values.shape
    if tap.shape == (1, 1):
        return values * tap[0, 0]
    flat = values.reshape(batch, channels, height * width)
    return (tap @ flat).view(batch, tap.shape[0], height, width)
