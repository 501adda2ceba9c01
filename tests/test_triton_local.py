"""The fused Triton kernels of the per-location convolution
(:mod:`adaptiveblur.ops.triton_local`) against a float64 unfold reference.

Without CUDA the kernels run under Triton's interpreter on small inputs, called directly;
with CUDA the tests marked ``cuda`` run :func:`adaptiveblur.nn.spatially_varying_conv2d`
itself on the GPU (where the op dispatches to these kernels).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are decorated

pytest.importorskip("triton", reason="the Triton kernels need triton installed")

from adaptiveblur.nn import spatially_varying_conv2d  # noqa: E402
from adaptiveblur.ops import shifted_conv, triton_local  # noqa: E402
from tests.test_triton import (  # noqa: E402, F401 - its autouse interpreter fix applies here
    _interpreter_numpy_fix,
    interpreter_only,
)


def reference(padded: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """``sum_{c, i, j} K[b, o, c, i, j, p] x[b, c, p + (i, j)]`` by unfold, in float64."""
    batch, channels = padded.shape[:2]
    k_batch, out_channels, _, size, _, height, width = kernels.shape
    windows = F.unfold(padded.double(), size).view(batch, channels, size * size, height * width)
    flat = kernels.double().reshape(k_batch, out_channels, channels, size * size, height * width)
    out = torch.einsum("bctp,boctp->bop", windows, flat.expand(batch, -1, -1, -1, -1))
    return out.view(batch, out_channels, height, width)


def inputs(rng, shape, k_batch, dtype=torch.float64):  # noqa: ANN001, ANN201
    """Seeded padded input, kernels and output gradient of ``(B, C, O, H, W, k)``."""
    batch, channels, out_channels, height, width, size = shape
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 30)))

    def made(*dims: int) -> torch.Tensor:
        return (torch.rand(*dims, generator=generator, dtype=torch.float64) - 0.5).to(dtype)

    padded = made(batch, channels, height + size - 1, width + size - 1)
    kernels = made(k_batch, out_channels, channels, size, size, height, width)
    return padded, kernels, made(batch, out_channels, height, width)


SHAPES = [(1, 1, 1, 1, 1, 1), (1, 2, 3, 7, 13, 3), (2, 3, 2, 5, 4, 5), (2, 1, 2, 1, 9, 3)]


@interpreter_only
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("shared", [False, True])
def test_forward_and_gradients_equal_the_float64_reference(rng, shape, shared):
    padded, kernels, grad = inputs(rng, shape, 1 if shared else shape[0])
    size = shape[-1]
    out = triton_local.local_forward(padded, kernels, size)
    grad_x, grad_w = triton_local.local_backward(
        grad, padded, kernels, size, want_x=True, want_weight=True
    )
    leaves = [padded.clone().requires_grad_(), kernels.clone().requires_grad_()]
    want = reference(*leaves)
    want_x, want_w = torch.autograd.grad(want, leaves, grad)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_x, want_x, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_w, want_w, atol=1e-12, rtol=0)


@interpreter_only
def test_only_the_wanted_gradient_is_made_and_float32_is_close(rng):
    padded, kernels, grad = inputs(rng, (2, 2, 3, 6, 5, 3), 2, torch.float32)
    grad_x, grad_w = triton_local.local_backward(
        grad, padded, kernels, 3, want_x=False, want_weight=True
    )
    assert grad_x is None and grad_w is not None
    out = triton_local.local_forward(padded, kernels, 3)
    torch.testing.assert_close(out.double(), reference(padded, kernels), atol=1e-5, rtol=0)


def test_handles_only_per_location_kernels_on_cuda():
    padded, kernels = torch.rand(1, 2, 5, 5), torch.rand(1, 3, 2, 3, 3, 3, 3)
    assert not triton_local.handles(padded, kernels, None)  # on the CPU
    if not torch.cuda.is_available():
        return
    on = {"device": "cuda"}
    assert triton_local.handles(padded.to(**on), kernels.to(**on), None)
    assert not triton_local.handles(padded.to(**on), torch.rand(3, 2, 3, 3, **on), None)
    assert not triton_local.handles(padded.to(**on), kernels.double().to(**on), None)


@pytest.fixture
def fused_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if the op's torch loops run for CUDA tensors instead of the kernels."""

    def cpu_only(loops):  # noqa: ANN001, ANN202
        def run(first: torch.Tensor, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            assert not first.is_cuda, "the torch loops ran instead of the Triton kernels"
            return loops(first, *args, **kwargs)

        return run

    monkeypatch.setattr(shifted_conv, "_forward", cpu_only(shifted_conv._forward))
    monkeypatch.setattr(shifted_conv, "_backward", cpu_only(shifted_conv._backward))


@pytest.mark.cuda
@pytest.mark.usefixtures("fused_only")
@pytest.mark.parametrize("border", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize(
    "shape", [(1, 1, 1, 1, 1, 3), (2, 3, 4, 37, 53, 5), (1, 4, 2, 6, 5, 9)], ids=str
)
@pytest.mark.parametrize("shared", [False, True])
def test_cuda_equals_the_cpu_op_and_the_reference(cuda, rng, border, shape, shared):
    batch, channels, out_channels, height, width, size = shape
    padded, kernels, grad = inputs(rng, shape, 1 if shared else batch, torch.float32)
    r = size // 2
    x = padded[..., r : r + height, r : r + width].contiguous()
    bias = torch.rand(out_channels)

    def run(device: torch.device) -> list[torch.Tensor]:
        leaves = [t.to(device).requires_grad_() for t in (x, kernels, bias)]
        out = spatially_varying_conv2d(leaves[0], leaves[1], bias=leaves[2], padding_mode=border)
        return [out, *torch.autograd.grad(out, leaves, grad.to(device))]

    want = run(torch.device("cpu"))
    got = run(cuda)
    for a, b in zip(got, want, strict=True):
        scale = float(b.detach().abs().max()) or 1.0
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-5 * scale)
    second = run(cuda)
    for a, b in zip(got, second, strict=True):
        assert torch.equal(a, b)  # deterministic


@pytest.mark.cuda
@pytest.mark.usefixtures("fused_only")
@pytest.mark.parametrize("shared", [False, True])
def test_cuda_float64_gradcheck(cuda, rng, shared):
    padded, kernels, _ = inputs(rng, (2, 2, 3, 5, 6, 3), 1 if shared else 2)
    x = padded[..., 1:-1, 1:-1].contiguous().to(cuda).requires_grad_()
    kernels = kernels.to(cuda).requires_grad_()
    for border in ("zeros", "reflect", "replicate"):
        assert torch.autograd.gradcheck(
            lambda a, b, mode=border: spatially_varying_conv2d(a, b, padding_mode=mode),
            (x, kernels),
        )


@pytest.mark.cuda
@pytest.mark.usefixtures("fused_only")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_in_same_dtype_out(cuda, rng, dtype):
    padded, kernels, grad = inputs(rng, (1, 3, 2, 20, 33, 3), 1, dtype)
    x = padded[..., 1:-1, 1:-1].contiguous().to(cuda).requires_grad_()
    weight = kernels.to(cuda).requires_grad_()
    out = spatially_varying_conv2d(x, weight)
    grads = torch.autograd.grad(out, (x, weight), grad.to(cuda))
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    want = reference(F.pad(x.detach().double(), (1, 1, 1, 1)), weight.detach())
    torch.testing.assert_close(out.double(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.cuda
@pytest.mark.usefixtures("fused_only")
def test_cuda_opcheck(cuda, rng):
    padded, kernels, _ = inputs(rng, (2, 3, 2, 7, 8, 3), 2)
    args = (padded.to(cuda).requires_grad_(), kernels.to(cuda).requires_grad_(), None, 3, 1 << 20)
    torch.library.opcheck(torch.ops.adaptiveblur.shifted_conv, args)
