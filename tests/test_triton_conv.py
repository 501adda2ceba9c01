"""The fused Triton kernels of the factored spatially varying convolution
(:mod:`adaptiveblur.ops.triton_conv`) against float64 references.

Without CUDA the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, set here
before Triton is imported) on small inputs, called directly; with
CUDA the tests marked ``cuda`` run :func:`adaptiveblur.nn.spatially_varying_conv2d` itself
on the GPU (where the op dispatches to these kernels), on larger, odd-sized inputs.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are decorated

pytest.importorskip("triton", reason="the Triton kernels need triton installed")

from adaptiveblur.borders import read_window  # noqa: E402
from adaptiveblur.nn import SpatiallyVaryingConv2d, spatially_varying_conv2d  # noqa: E402
from adaptiveblur.nn.functional import PADDING_MODES  # noqa: E402
from adaptiveblur.ops import shifted_conv, triton_conv  # noqa: E402
from adaptiveblur.ops.triton_conv import Blocks, Plan  # noqa: E402
from tests.test_triton import (  # noqa: E402, F401 - its autouse interpreter fix applies here
    _interpreter_numpy_fix,
    interpreter_only,
)

# Tilings that force each kind of kernel whatever the channel counts: tl.dot tiles of the
# smallest size, and outer products in blocks of 2 channels; None is plan()'s own choice
# (for float64: outer products in blocks of up to 32 channels).
DOT = Plan(*[Blocks(16, 16, 16, True)] * 4, splits=3)
RANK1 = Plan(Blocks(2, 1, 32, False), Blocks(2, 1, 32, False), Blocks(1, 1, 32, False),
             Blocks(2, 16, 16, False), splits=2)  # fmt: skip
TILINGS = {"plan": None, "dot": DOT, "rank1": RANK1}


def assert_equal_for(tiling: str, got: torch.Tensor, want: torch.Tensor) -> None:
    """float64 kernels to rounding; tl.dot tiles compute in float32 whatever the dtype."""
    if tiling == "dot":
        torch.testing.assert_close(
            got, want, rtol=1e-5, atol=1e-6 * float(want.detach().abs().max())
        )
    else:
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def seeded(seed: int, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=generator, dtype=torch.float64).to(dtype)


def reference(
    padded: torch.Tensor, weight: torch.Tensor, modulation: torch.Tensor | None
) -> torch.Tensor:
    """float64 unfold of the padded input, times the modulation, times the weight."""
    batch, channels, padded_height, padded_width = padded.shape
    size = weight.shape[-1]
    height, width = padded_height - size + 1, padded_width - size + 1
    cols = F.unfold(padded.double(), size).view(batch, channels, size * size, height * width)
    if modulation is not None:
        cols = cols * modulation.double().reshape(-1, 1, size * size, height * width)
    out = weight.double().reshape(weight.shape[0], -1) @ cols.reshape(batch, -1, height * width)
    return out.view(batch, -1, height, width)


class _Fused(torch.autograd.Function):
    """The kernels called directly (on any device the interpreter runs), under autograd."""

    @staticmethod
    def forward(ctx: Any, padded, weight, modulation, tiling):  # noqa: ANN001, ANN205
        ctx.save_for_backward(padded, weight, modulation)
        ctx.tiling = tiling
        return triton_conv.conv_forward(padded, weight, modulation, weight.shape[-1], tiling)

    @staticmethod
    def backward(ctx: Any, grad):  # noqa: ANN001, ANN205
        padded, weight, modulation = ctx.saved_tensors
        wanted = ctx.needs_input_grad
        grads = triton_conv.conv_backward(
            grad, padded, weight, modulation, weight.shape[-1],
            want_x=wanted[0], want_weight=wanted[1], want_modulation=wanted[2],
            tiling=ctx.tiling,
        )  # fmt: skip
        return (*grads, None)


def fused(padded, weight, modulation=None, tiling=None):  # noqa: ANN001, ANN201
    return _Fused.apply(padded, weight, modulation, tiling)


def conv_inputs(
    seed: int,
    shape: tuple[int, int, int, int, int, int],
    *,
    shared: bool = False,
    dtype: torch.dtype = torch.float64,
    grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, weight, modulation (one plane for every image with ``shared``) and a gradient for
    ``(B, C_in, C_out, H, W, k)``; ``x`` is the image, not yet padded."""
    batch, channels, out_channels, height, width, size = shape
    x = seeded(seed, batch, channels, height, width, dtype=dtype)
    weight = seeded(seed + 1, out_channels, channels, size, size, dtype=dtype) - 0.5
    planes = 1 if shared else batch
    modulation = seeded(seed + 2, planes, size * size, height, width, dtype=dtype)
    grad_out = seeded(seed + 3, batch, out_channels, height, width, dtype=dtype) - 0.5
    for leaf in (x, weight, modulation):
        leaf.requires_grad_(grad)
    return x, weight, modulation, grad_out


def pad(x: torch.Tensor, size: int, border: str) -> torch.Tensor:
    r = size // 2
    height, width = x.shape[-2:]
    return read_window(x, -r, height + r, -r, width + r, PADDING_MODES[border])


# --- the interpreter (CPU CI) -------------------------------------------------------------

# (B, C_in, C_out, H, W, k): a 1x1 image, 7x13, windows wider than the image, k = 1,
# C_out = 1, C_in = 5, 17 channels (more than one tl.dot block of 16)
SHAPES = [
    (1, 1, 1, 1, 1, 3),
    (2, 3, 4, 7, 13, 3),
    (1, 2, 3, 2, 3, 7),  # windows wider than the image
    (2, 3, 2, 5, 4, 1),
    (1, 5, 1, 4, 6, 3),
    (1, 17, 17, 3, 4, 3),
]


@interpreter_only
@pytest.mark.parametrize("tiling", ["plan", "dot"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_gradients_equal_float64_reference(rng, shape, tiling):
    seed = int(rng.integers(1 << 30))
    x, weight, modulation, grad_out = conv_inputs(seed, shape, grad=True)
    padded = pad(x, shape[-1], "zeros")
    out = fused(padded, weight, modulation, TILINGS[tiling])
    want = reference(padded, weight, modulation)
    assert_equal_for(tiling, out, want)
    got = torch.autograd.grad(out, (x, weight, modulation), grad_out, retain_graph=True)
    expected = torch.autograd.grad(want, (x, weight, modulation), grad_out)
    for a, b in zip(got, expected, strict=True):
        assert_equal_for(tiling, a, b)


@interpreter_only
@pytest.mark.parametrize("border", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize("tiling", TILINGS)
def test_radius_wider_than_the_image_with_each_border(rng, border, tiling):
    seed = int(rng.integers(1 << 30))
    x, weight, modulation, grad_out = conv_inputs(seed, (1, 2, 2, 2, 3, 5), grad=True)
    padded = pad(x, 5, border)
    out = fused(padded, weight, modulation, TILINGS[tiling])
    want = reference(padded, weight, modulation)
    assert_equal_for(tiling, out, want)
    got = torch.autograd.grad(out, (x, weight, modulation), grad_out, retain_graph=True)
    expected = torch.autograd.grad(want, (x, weight, modulation), grad_out)
    for a, b in zip(got, expected, strict=True):
        assert_equal_for(tiling, a, b)


@interpreter_only
@pytest.mark.parametrize("tiling", TILINGS)
def test_without_modulation_and_with_one_plane_for_all(rng, tiling):
    seed = int(rng.integers(1 << 30))
    x, weight, modulation, grad_out = conv_inputs(seed, (3, 2, 3, 4, 5, 3), shared=True)
    padded = pad(x, 3, "replicate")
    for plane in (None, modulation):
        leaves = [t.requires_grad_() for t in (padded, weight, plane) if t is not None]
        out = fused(padded, weight, plane, TILINGS[tiling])
        want = reference(padded, weight, plane)
        assert_equal_for(tiling, out, want)
        got = torch.autograd.grad(out, leaves, grad_out)
        expected = torch.autograd.grad(want, leaves, grad_out)
        for a, b in zip(got, expected, strict=True):
            assert_equal_for(tiling, a, b)


@interpreter_only
@pytest.mark.parametrize("tiling", TILINGS)
def test_float32_gradients_equal_the_cpu_path(rng, tiling):
    seed = int(rng.integers(1 << 30))
    x, weight, modulation, grad_out = conv_inputs(
        seed, (2, 3, 4, 6, 7, 3), dtype=torch.float32, grad=True
    )
    padded = pad(x, 3, "reflect")
    leaves = (x, weight, modulation)
    out = fused(padded, weight, modulation, TILINGS[tiling])
    got = (out, *torch.autograd.grad(out, leaves, grad_out, retain_graph=True))
    cpu = shifted_conv.shifted_conv(padded, weight, modulation, 3, 1 << 20)
    expected = (cpu, *torch.autograd.grad(cpu, leaves, grad_out))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.detach().abs().max()))


@interpreter_only
def test_float64_gradcheck(rng):
    seed = int(rng.integers(1 << 30))
    x, weight, modulation, _ = conv_inputs(seed, (2, 2, 3, 3, 4, 3), shared=True, grad=True)

    def conv(x, weight, modulation):  # noqa: ANN001, ANN202
        return fused(pad(x, 3, "reflect"), weight, modulation)

    assert torch.autograd.gradcheck(conv, (x, weight, modulation), fast_mode=True)


@interpreter_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_in_same_dtype_out(rng, dtype):
    seed = int(rng.integers(1 << 30))
    x, weight, modulation, grad_out = conv_inputs(seed, (1, 3, 2, 4, 5, 3), dtype=dtype, grad=True)
    padded = pad(x, 3, "zeros")
    out = fused(padded, weight, modulation)
    grads = torch.autograd.grad(out, (padded, weight, modulation), grad_out)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    # computed in float32 from the half-precision values: off by the output's rounding only
    want = reference(padded, weight, modulation)
    torch.testing.assert_close(out.double(), want, rtol=1e-2, atol=1e-2)


def test_handles_only_the_factored_form_on_cuda():
    padded, weight = torch.rand(1, 2, 5, 5), torch.rand(3, 2, 3, 3)
    assert not triton_conv.handles(padded, weight, torch.rand(1, 9, 3, 3))  # on the CPU
    if not torch.cuda.is_available():
        return
    on = {"device": "cuda"}
    assert triton_conv.handles(padded.to(**on), weight.to(**on), None)
    assert not triton_conv.handles(padded.to(**on), weight.double().to(**on), None)
    kernels = torch.rand(1, 3, 2, 3, 3, 3, 3, **on)
    assert not triton_conv.handles(padded.to(**on), kernels, None)


def test_plan_uses_tl_dot_only_where_it_fits():
    cpu = torch.device("cpu")
    wide = triton_conv.plan(8, 64, 64, 3, 128, 128, torch.float32, cpu)
    assert wide.forward.dot and wide.grad_x.dot and wide.grad_m.dot and wide.grad_w.dot
    narrow = triton_conv.plan(1, 3, 3, 25, 64, 64, torch.float32, cpu)
    assert not (narrow.forward.dot or narrow.grad_x.dot or narrow.grad_m.dot)
    assert narrow.forward.rows == 4  # 3 channels in a block of 4
    assert narrow.grad_w.dot and narrow.grad_w.rows == 16  # tl.dot, 3 rows padded to 16
    exact = triton_conv.plan(8, 64, 64, 3, 128, 128, torch.float64, cpu)
    assert not any(b.dot for b in (exact.forward, exact.grad_x, exact.grad_m, exact.grad_w))
    assert all(b.precision == "ieee" for b in (wide.forward, wide.grad_x, wide.grad_w))


@pytest.mark.cuda
def test_plan_takes_tf32x3_only_where_tensor_cores_take_tf32(cuda):
    plan = triton_conv.plan(8, 64, 64, 3, 128, 128, torch.float32, cuda)
    tf32 = torch.cuda.get_device_capability(cuda) >= (8, 0)
    for blocks in (plan.forward, plan.grad_x, plan.grad_w):
        assert blocks.precision == ("tf32x3" if tf32 else "ieee")
    assert plan.grad_m.precision == "ieee"


# --- CUDA ---------------------------------------------------------------------------------


@pytest.fixture
def cuda() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    if triton_conv.available(torch.device("cuda")) is not None:
        pytest.skip(str(triton_conv.available(torch.device("cuda"))))
    return torch.device("cuda")


def on(device: torch.device, *tensors: torch.Tensor, grad: bool = False) -> list[torch.Tensor]:
    return [t.detach().to(device).requires_grad_(grad) for t in tensors]


def module_call(x, weight, modulation, border):  # noqa: ANN001, ANN201
    return spatially_varying_conv2d(x, weight, modulation=modulation, padding_mode=border)


@pytest.fixture
def fused_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if the op falls back to its torch loops for CUDA tensors: the kernels must run
    (the CPU, where the tests compute what they compare with, keeps the loops)."""

    def cpu_only(loops: Any) -> Any:
        def run(first: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            assert not first.is_cuda, "the torch loops ran instead of the Triton kernels"
            return loops(first, *args, **kwargs)

        return run

    monkeypatch.setattr(shifted_conv, "_forward", cpu_only(shifted_conv._forward))
    monkeypatch.setattr(shifted_conv, "_backward", cpu_only(shifted_conv._backward))


CUDA_SHAPES = [
    (1, 1, 1, 1, 1, 3),
    (2, 3, 4, 37, 53, 5),
    (1, 5, 1, 19, 23, 3),
    (2, 16, 16, 31, 45, 3),
    (1, 20, 33, 17, 29, 5),
    (1, 40, 36, 21, 19, 3),  # both channel counts >= 32: the widest tl.dot tiles
    (1, 3, 24, 13, 70, 3),
    (2, 2, 3, 6, 5, 9),
    (1, 4, 4, 1, 1, 1),
]


@pytest.mark.cuda
@pytest.mark.usefixtures("fused_only")
@pytest.mark.parametrize("border", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=str)
def test_cuda_float32_equals_float64_reference_and_cpu_gradients(cuda, rng, shape, border):
    seed = int(rng.integers(1 << 30))
    x, weight, modulation, grad_out = conv_inputs(seed, shape, dtype=torch.float32, grad=True)
    size = shape[-1]
    out_cpu = module_call(x, weight, modulation, border)
    expected = (out_cpu, *torch.autograd.grad(out_cpu, (x, weight, modulation), grad_out))
    leaves = on(cuda, x, weight, modulation, grad=True)
    out = module_call(*leaves, border)
    got = (out, *torch.autograd.grad(out, leaves, grad_out.to(cuda)))
    want = reference(pad(x.detach(), size, border), weight.detach(), modulation.detach())
    scale = float(want.abs().max())
    torch.testing.assert_close(out.cpu().double(), want, rtol=1e-5, atol=1e-6 * scale)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-5 * float(b.detach().abs().max()))


@pytest.mark.cuda
@pytest.mark.usefixtures("fused_only")
@pytest.mark.parametrize("shared", [False, True])
def test_cuda_float64_gradcheck(cuda, rng, shared):
    seed = int(rng.integers(1 << 30))
    inputs = conv_inputs(seed, (2, 3, 2, 5, 6, 3), shared=shared)[:3]
    x, weight, modulation = on(cuda, *inputs, grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: module_call(*a, "reflect"), (x, weight, modulation)
    )  # fmt: skip
    assert torch.autograd.gradcheck(lambda *a: module_call(*a, None, "zeros"), (x, weight))


@pytest.mark.cuda
@pytest.mark.usefixtures("fused_only")
@pytest.mark.parametrize("shape", [(2, 16, 16, 67, 91, 5), (1, 3, 3, 45, 51, 9)], ids=str)
def test_cuda_two_backward_passes_give_the_same_bits(cuda, rng, shape):
    seed = int(rng.integers(1 << 30))
    x, weight, modulation, grad_out = conv_inputs(seed, shape, dtype=torch.float32)
    leaves = on(cuda, x, weight, modulation, grad=True)
    runs = []
    for _ in range(2):
        out = module_call(*leaves, "reflect")
        runs.append((out, *torch.autograd.grad(out, leaves, grad_out.to(cuda))))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.cuda
@pytest.mark.usefixtures("fused_only")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_in_same_dtype_out(cuda, rng, dtype):
    seed = int(rng.integers(1 << 30))
    x, weight, modulation, grad_out = conv_inputs(seed, (2, 16, 16, 21, 34, 3), dtype=dtype)
    leaves = on(cuda, x, weight, modulation, grad=True)
    out = module_call(*leaves, "reflect")
    grads = torch.autograd.grad(out, leaves, grad_out.to(cuda))
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    want = reference(pad(x, 3, "reflect"), weight, modulation)
    torch.testing.assert_close(out.cpu().double(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.cuda
@pytest.mark.usefixtures("fused_only")
def test_cuda_opcheck(cuda, rng):
    seed = int(rng.integers(1 << 30))
    padded = seeded(seed, 2, 3, 9, 10).to(cuda).requires_grad_()
    weight = seeded(seed + 1, 4, 3, 3, 3).to(cuda).requires_grad_()
    modulation = seeded(seed + 2, 2, 9, 7, 8).to(cuda).requires_grad_()
    for args in ((padded, weight, modulation, 3, 1 << 20), (padded, weight, None, 3, 1 << 20)):
        torch.library.opcheck(torch.ops.adaptiveblur.shifted_conv, args)


@pytest.mark.cuda
@pytest.mark.usefixtures("fused_only")
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_cuda_model_compiles_with_fullgraph(cuda, rng, backend):
    torch._dynamo.reset()
    conv = SpatiallyVaryingConv2d(3, 2, kernel_size=5).to(cuda)
    x = torch.from_numpy(rng.random((1, 3, 11, 13))).float().to(cuda).requires_grad_()
    modulation = torch.from_numpy(rng.random((1, 25, 11, 13))).float().to(cuda).requires_grad_()

    def loss(x, modulation):  # noqa: ANN001, ANN202
        return conv(x, modulation).square().mean()

    compiled = torch.compile(loss, fullgraph=True, backend=backend)
    eager_grads = torch.autograd.grad(loss(x, modulation), [x, modulation, conv.weight])
    compiled_grads = torch.autograd.grad(compiled(x, modulation), [x, modulation, conv.weight])
    for a, b in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.cuda
@pytest.mark.usefixtures("fused_only")
def test_cuda_op_compiles_with_fullgraph(cuda, rng):
    """The op itself (its Triton kernels and their backward) under torch.compile."""
    torch._dynamo.reset()
    seed = int(rng.integers(1 << 30))
    padded = seeded(seed, 2, 3, 13, 14, dtype=torch.float32).to(cuda).requires_grad_()
    weight = seeded(seed + 1, 4, 3, 3, 3, dtype=torch.float32).to(cuda).requires_grad_()
    modulation = seeded(seed + 2, 2, 9, 11, 12, dtype=torch.float32).to(cuda).requires_grad_()

    def loss(padded, weight, modulation):  # noqa: ANN001, ANN202
        return shifted_conv.shifted_conv(padded, weight, modulation, 3, 1 << 20).square().sum()

    leaves = [padded, weight, modulation]
    compiled = torch.compile(loss, fullgraph=True, backend="inductor")
    eager_grads = torch.autograd.grad(loss(*leaves), leaves)
    compiled_grads = torch.autograd.grad(compiled(*leaves), leaves)
    for a, b in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.cuda
@pytest.mark.usefixtures("fused_only")
def test_cuda_memory_is_the_modulation_and_its_gradient(cuda):
    """Forward + backward adds the modulation's gradient and image-sized buffers only."""
    batch, channels, side, size = 1, 3, 256, 25
    x = torch.rand(batch, channels, side, side, device=cuda, requires_grad=True)
    weight = torch.rand(channels, channels, size, size, device=cuda, requires_grad=True)
    modulation = torch.rand(batch, size * size, side, side, device=cuda, requires_grad=True)
    torch.cuda.synchronize(cuda)
    torch.cuda.reset_peak_memory_stats(cuda)
    start = torch.cuda.memory_allocated(cuda)
    out = module_call(x, weight, modulation, "reflect")
    out.backward(torch.ones_like(out))
    torch.cuda.synchronize(cuda)
    extra = torch.cuda.max_memory_allocated(cuda) - start
    image = 4 * batch * channels * (side + size) ** 2
    assert extra <= modulation.numel() * 4 + 12 * image + (8 << 20)
