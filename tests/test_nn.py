"""Per-location kernels as torch ops: equal to unfold + matmul + fold, tiled, differentiable."""

from __future__ import annotations

import doctest

import pytest
import torch
import torch.nn.functional as F

import adaptiveblur
import adaptiveblur.nn.functional
import adaptiveblur.nn.modules
import adaptiveblur.ops.blur
from adaptiveblur import InvalidParameterError
from adaptiveblur.nn import (
    AdaptiveGaussianBlur,
    SpatiallyVaryingConv2d,
    adaptive_blur,
    spatially_varying_conv2d,
)
from tests.oracle import loop_blur

TORCH_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate"}


def unfold_conv(x, weight, modulation=None, bias=None, padding_mode="zeros"):
    """The forum's approach: pad, unfold every window, modulate, matmul, fold back."""
    b, c, h, w = x.shape
    k = weight.shape[-3] if weight.dim() == 7 else weight.shape[-1]
    r = k // 2
    cols = F.unfold(F.pad(x, (r, r, r, r), mode=TORCH_PAD[padding_mode]), k)  # (B, C*k*k, H*W)
    if weight.dim() == 7:
        kernels = weight.reshape(weight.shape[0], weight.shape[1], c * k * k, h * w)
        out = (cols.unsqueeze(1) * kernels).sum(2)
    else:
        if modulation is not None:
            cols = (cols.view(b, c, k * k, h * w) * modulation.reshape(-1, 1, k * k, h * w)).view(
                b, c * k * k, h * w
            )
        out = weight.reshape(weight.shape[0], -1) @ cols
    out = F.fold(out, (h, w), 1)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def make(rng_seed, *shape, dtype=torch.float64, grad=False):
    generator = torch.Generator().manual_seed(rng_seed)
    return torch.rand(*shape, generator=generator, dtype=dtype).requires_grad_(grad)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize(("height", "width", "k"), [(1, 1, 1), (7, 13, 3), (9, 11, 5), (12, 10, 7)])
def test_factored_equals_unfold_matmul_fold(rng, padding_mode, height, width, k):
    if padding_mode == "reflect" and k // 2 >= min(height, width):
        pytest.skip("F.pad reflect needs the pad smaller than the image")
    seed = int(rng.integers(1 << 30))
    x, weight = make(seed, 2, 3, height, width), make(seed + 1, 4, 3, k, k)
    modulation, bias = make(seed + 2, 2, k * k, height, width), make(seed + 3, 4)
    out = spatially_varying_conv2d(
        x, weight, modulation=modulation, bias=bias, padding_mode=padding_mode, max_memory=20_000
    )
    expected = unfold_conv(x, weight, modulation, bias, padding_mode)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("padding_mode", ["zeros", "replicate"])
def test_per_location_equals_unfold(rng, padding_mode):
    seed = int(rng.integers(1 << 30))
    x, weight = make(seed, 2, 3, 9, 8), make(seed + 1, 2, 4, 3, 3, 3, 9, 8)
    out = spatially_varying_conv2d(x, weight, padding_mode=padding_mode, max_memory=30_000)
    torch.testing.assert_close(
        out, unfold_conv(x, weight, padding_mode=padding_mode), atol=1e-12, rtol=0
    )


def test_without_modulation_is_a_same_convolution(rng):
    seed = int(rng.integers(1 << 30))
    x, weight = make(seed, 1, 2, 15, 17), make(seed + 1, 5, 2, 5, 5)
    torch.testing.assert_close(
        spatially_varying_conv2d(x, weight), F.conv2d(x, weight, padding=2), atol=1e-12, rtol=0
    )


def test_tiled_equals_untiled(rng):
    seed = int(rng.integers(1 << 30))
    x, weight, modulation = (
        make(seed, 1, 3, 33, 29),
        make(seed + 1, 2, 3, 5, 5),
        make(seed + 2, 1, 25, 33, 29),
    )
    whole = spatially_varying_conv2d(x, weight, modulation=modulation, max_memory=1 << 32)
    tiled = spatially_varying_conv2d(x, weight, modulation=modulation, max_memory=1)
    torch.testing.assert_close(tiled, whole, atol=1e-12, rtol=0)


def test_conv_gradcheck_factored(rng):
    seed = int(rng.integers(1 << 30))
    x, weight = make(seed, 1, 2, 5, 6, grad=True), make(seed + 1, 2, 2, 3, 3, grad=True)
    modulation, bias = make(seed + 2, 1, 9, 5, 6, grad=True), make(seed + 3, 2, grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w, m, b: spatially_varying_conv2d(
            a, w, modulation=m, bias=b, padding_mode="reflect", max_memory=2_000
        ),
        (x, weight, modulation, bias),
    )


def test_conv_gradcheck_per_location(rng):
    seed = int(rng.integers(1 << 30))
    x, weight = make(seed, 1, 1, 4, 5, grad=True), make(seed + 1, 1, 2, 1, 3, 3, 4, 5, grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w: spatially_varying_conv2d(a, w, max_memory=1_000), (x, weight)
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight": torch.rand(4, 3, 4, 4)}, "odd kernel size"),
        ({"weight": torch.rand(4, 2, 3, 3)}, "weight of shape"),
        ({"modulation": torch.rand(2, 8, 6, 7)}, "modulation of shape"),
        ({"bias": torch.rand(3)}, "bias of shape"),
        ({"padding_mode": "circular"}, "padding_mode"),
    ],
)
def test_conv_bad_arguments(kwargs, message):
    arguments = {"weight": torch.rand(4, 3, 3, 3), "modulation": None, **kwargs}
    weight = arguments.pop("weight")
    with pytest.raises(InvalidParameterError, match=message):
        spatially_varying_conv2d(torch.rand(2, 3, 6, 7), weight, **arguments)


def test_blur_gradcheck_image_and_sigma(rng):
    seed = int(rng.integers(1 << 30))
    x = make(seed, 1, 2, 7, 9, grad=True)
    # sigma away from radius jumps (radius = floor(3 sigma + 0.5) changes at (n + 0.5) / 3)
    sigma = (
        torch.tensor(rng.choice([0.25, 0.55, 0.9, 1.2, 1.55], (1, 1, 7, 9))) + 0.01
    ).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, s: adaptive_blur(a, s, max_memory=3_000), (x, sigma), fast_mode=True
    )


def test_blur_gradient_of_tiles_equals_whole_and_forward_equals_loop(rng):
    seed = int(rng.integers(1 << 30))
    grads = []
    for budget in (1 << 32, 2_000):
        x = make(seed, 1, 3, 21, 17, grad=True)
        sigma = (make(seed + 1, 1, 1, 21, 17) * 3).requires_grad_()
        out = adaptive_blur(x, sigma, max_memory=budget)
        (out * make(seed + 2, 1, 3, 21, 17)).sum().backward()
        grads.append((out.detach(), x.grad, sigma.grad))
    for whole, tiled in zip(*grads, strict=True):
        torch.testing.assert_close(tiled, whole, atol=1e-10, rtol=0)
    expected = loop_blur(
        make(seed, 1, 3, 21, 17)[0].numpy(), (make(seed + 1, 1, 1, 21, 17) * 3)[0, 0].numpy()
    )
    torch.testing.assert_close(grads[0][0][0], torch.from_numpy(expected), atol=1e-10, rtol=0)


def test_kernel_size_changes_per_call_and_module_equals_function(rng):
    blur = AdaptiveGaussianBlur()
    x = make(int(rng.integers(1 << 30)), 1, 3, 16, 16)
    for scale in (0.5, 2.0, 5.0):  # radii 2, 6, 15: a new kernel size each call
        sigma = torch.full((1, 1, 16, 16), scale, dtype=torch.float64)
        torch.testing.assert_close(blur(x, sigma), adaptive_blur(x, sigma))
    conv = SpatiallyVaryingConv2d(3, 2, kernel_size=3).double()
    modulation = make(1, 1, 9, 16, 16)
    torch.testing.assert_close(
        conv(x, modulation),
        spatially_varying_conv2d(x, conv.weight, modulation=modulation, bias=conv.bias),
    )


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_modules_train_under_torch_compile(rng):
    """A small model using both ops compiles (graph breaks allowed) and matches eager, with gradients."""
    torch._dynamo.reset()
    conv = SpatiallyVaryingConv2d(3, 3, kernel_size=3)
    blur = AdaptiveGaussianBlur()

    def model(x, modulation, sigma):
        return blur(conv(x, modulation), sigma).square().mean()

    x = torch.from_numpy(rng.random((1, 3, 12, 14))).float()
    modulation = torch.from_numpy(rng.random((1, 9, 12, 14))).float()
    sigma = torch.from_numpy(rng.uniform(0.2, 2.0, (1, 1, 12, 14))).float().requires_grad_()
    eager = model(x, modulation, sigma)
    eager_grads = torch.autograd.grad(eager, [conv.weight, sigma])
    compiled = torch.compile(model, backend="aot_eager")(x, modulation, sigma)
    compiled_grads = torch.autograd.grad(compiled, [conv.weight, sigma])
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "module",
    [adaptiveblur.nn.functional, adaptiveblur.nn.modules, adaptiveblur.ops.blur, adaptiveblur],
)
def test_doctests(module):
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_one_name_per_op_at_the_top():
    names = ("adaptive_blur", "spatially_varying_conv2d")
    for name in (*names, "AdaptiveGaussianBlur", "SpatiallyVaryingConv2d"):
        assert name in adaptiveblur.__all__
        assert getattr(adaptiveblur, name) is getattr(adaptiveblur.nn, name)
    assert not hasattr(adaptiveblur.nn, "adaptive_gaussian_blur")


# ---- the CPU conv's own backward pass (adaptiveblur.ops.shifted_conv) ---------------------


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize(
    ("height", "width", "k", "max_memory"),
    [(1, 1, 3, 1 << 20), (2, 3, 7, 500), (7, 13, 3, 1 << 20)],
)
def test_conv_gradcheck_every_input_and_border(rng, padding_mode, height, width, k, max_memory):
    """Radius wider than the image included (k 7 on 2x3; mirrored borders repeat); 500
    bytes make bands of one row."""
    seed = int(rng.integers(1 << 30))
    batch = 2 if height * width < 10 else 1
    x = make(seed, batch, 2, height, width, grad=True)
    weight = make(seed + 1, 3, 2, k, k, grad=True)
    modulation = make(seed + 2, batch, k * k, height, width, grad=True)
    bias = make(seed + 3, 3, grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w, m, b: spatially_varying_conv2d(
            a, w, modulation=m, bias=b, padding_mode=padding_mode, max_memory=max_memory
        ),
        (x, weight, modulation, bias),
    )


def test_conv_gradcheck_shared_modulation_and_kernels(rng):
    """A modulation (or per-location kernels) of batch 1 serves every image of the batch."""
    seed = int(rng.integers(1 << 30))
    x = make(seed, 3, 2, 4, 5, grad=True)
    modulation = make(seed + 1, 1, 9, 4, 5, grad=True)
    weight = make(seed + 2, 2, 2, 3, 3, grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w, m: spatially_varying_conv2d(a, w, modulation=m, padding_mode="reflect"),
        (x, weight, modulation),
    )
    kernels = make(seed + 3, 1, 2, 2, 3, 3, 4, 5, grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w: spatially_varying_conv2d(a, w, padding_mode="replicate"), (x, kernels)
    )


def test_conv_bands_and_repeats_give_the_same_bits(rng):
    seed = int(rng.integers(1 << 30))
    x = make(seed, 2, 3, 23, 19, dtype=torch.float32, grad=True)
    weight = make(seed + 1, 4, 3, 5, 5, dtype=torch.float32, grad=True)
    modulation = make(seed + 2, 2, 25, 23, 19, dtype=torch.float32, grad=True)

    def gradients(max_memory):
        out = spatially_varying_conv2d(x, weight, modulation=modulation, max_memory=max_memory)
        return (out, *torch.autograd.grad(out.square().sum(), [x, weight, modulation]))

    first, again = gradients(1 << 30), gradients(1 << 30)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)  # bitwise deterministic
    for a, b in zip(first, gradients(1), strict=True):  # one row per band
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    expected = unfold_conv(x.double(), weight.double(), modulation.double())
    torch.testing.assert_close(first[0].double(), expected, rtol=1e-5, atol=1e-4)


def test_conv_opcheck(rng):
    seed = int(rng.integers(1 << 30))
    padded = make(seed, 2, 3, 9, 10, grad=True)
    weight = make(seed + 1, 4, 3, 3, 3, grad=True)
    modulation = make(seed + 2, 2, 9, 7, 8, grad=True)
    kernels = make(seed + 3, 2, 4, 3, 3, 3, 7, 8, grad=True)
    for args in ((padded, weight, modulation, 3, 1 << 20), (padded, kernels, None, 3, 4_000)):
        torch.library.opcheck(torch.ops.adaptiveblur.shifted_conv, args)


def test_conv_compiles_with_fullgraph(rng):
    torch._dynamo.reset()
    conv = SpatiallyVaryingConv2d(3, 2, kernel_size=5)
    x = torch.from_numpy(rng.random((1, 3, 11, 13))).float().requires_grad_()
    modulation = torch.from_numpy(rng.random((1, 25, 11, 13))).float().requires_grad_()

    def loss(x, modulation):
        return conv(x, modulation).square().mean()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    eager_grads = torch.autograd.grad(loss(x, modulation), [x, modulation, conv.weight])
    compiled_grads = torch.autograd.grad(compiled(x, modulation), [x, modulation, conv.weight])
    for a, b in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_blur_opcheck(rng):
    image = torch.from_numpy(rng.random((1, 2, 9, 11))).requires_grad_()
    sigma = torch.from_numpy(rng.uniform(0.0, 2.0, (1, 1, 9, 11))).requires_grad_()
    options = (3.0, "reflect", "exact", None, None, None)
    torch.library.opcheck(torch.ops.adaptiveblur.adaptive_blur, (image, sigma, *options))
    bounded = (3.0, "replicate", "exact", "reference", 1 << 20, 2.5)
    torch.library.opcheck(torch.ops.adaptiveblur.adaptive_blur, (image, sigma, *bounded))


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_a_model_with_both_ops_compiles_with_fullgraph(rng):
    torch._dynamo.reset()
    conv = SpatiallyVaryingConv2d(3, 3, kernel_size=3)
    blur = AdaptiveGaussianBlur(sigma_bound=2.0)

    def model(x, modulation, sigma):
        return blur(conv(x, modulation), sigma).square().mean()

    x = torch.from_numpy(rng.random((1, 3, 12, 14))).float()
    modulation = torch.from_numpy(rng.random((1, 9, 12, 14))).float()
    sigma = torch.from_numpy(rng.uniform(0.2, 2.0, (1, 1, 12, 14))).float().requires_grad_()
    eager = model(x, modulation, sigma)
    eager_grads = torch.autograd.grad(eager, [conv.weight, sigma])
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(x, modulation, sigma)
    compiled_grads = torch.autograd.grad(compiled, [conv.weight, sigma])
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b)
