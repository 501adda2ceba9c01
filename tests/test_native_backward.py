"""The native backend's backward pass (``_backward.c``): float64 gradcheck on odd shapes and
every border, agreement with autograd through the unfold reference, and bitwise-equal
gradients on every run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptiveblur import adaptive_blur
from adaptiveblur.native import library
from adaptiveblur.ops import native

pytestmark = pytest.mark.skipif(
    isinstance(library.kernels(), str), reason="the native kernel cannot be built here"
)

BORDERS = ["reflect", "replicate", "constant"]
# (batch, channels, height, width): 1x1; odd sizes; windows wider than the image; a tall
# narrow tile (done transposed); five channels (the kernel sums four at a time).
SHAPES = [(1, 1, 1, 1), (1, 3, 7, 13), (2, 2, 5, 3), (1, 5, 6, 9), (1, 1, 40, 3)]


def inputs(rng: np.random.Generator, shape, dtype, largest: float = 2.5):
    batch, channels, height, width = shape
    image = torch.from_numpy(rng.random(shape)).to(dtype).requires_grad_()
    sigma = rng.uniform(0.0, largest, (batch, 1, height, width))
    return image, torch.from_numpy(sigma).to(dtype).requires_grad_()


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gradcheck_float64(rng, border, shape):
    image, sigma = inputs(rng, shape, torch.float64)
    sigma = (sigma.detach() + 0.05).requires_grad_()  # keep clear of the floor's kink

    def blur(a, b):
        return adaptive_blur(a, b, backend="native", border=border)

    assert torch.autograd.gradcheck(blur, (image, sigma), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("border", BORDERS)
def test_gradients_equal_autograd_through_the_reference(rng, border):
    image, sigma = inputs(rng, (2, 3, 23, 17), torch.float32, largest=4.0)
    grad = torch.from_numpy(rng.standard_normal((2, 3, 23, 17)).astype(np.float32))
    got = torch.autograd.grad(
        adaptive_blur(image, sigma, backend="native", border=border), (image, sigma), grad
    )
    want = torch.autograd.grad(
        adaptive_blur(image, sigma, backend="reference", border=border), (image, sigma), grad
    )
    for mine, theirs in zip(got, want, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


def test_sigma_zero_and_below_the_floor_have_no_gradient(rng):
    image = torch.from_numpy(rng.random((1, 2, 6, 7))).requires_grad_()
    sigma = torch.zeros(1, 1, 6, 7, dtype=torch.float64)
    sigma[..., ::2] = 1e-4
    sigma.requires_grad_()
    out = adaptive_blur(image, sigma, backend="native")
    grad_image, grad_sigma = torch.autograd.grad(out.sum() * 3, (image, sigma))
    assert torch.equal(grad_sigma, torch.zeros_like(grad_sigma))
    assert torch.allclose(grad_image, torch.full_like(grad_image, 3.0))  # identity


def test_backward_is_bitwise_deterministic(rng):
    image, sigma = inputs(rng, (1, 3, 64, 80), torch.float32, largest=5.0)
    grad = torch.from_numpy(rng.standard_normal((1, 3, 64, 80)).astype(np.float32))
    first = torch.autograd.grad(adaptive_blur(image, sigma, backend="native"), (image, sigma), grad)
    second = torch.autograd.grad(
        adaptive_blur(image, sigma, backend="native"), (image, sigma), grad
    )
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_only_what_is_asked_for(rng):
    image, sigma = inputs(rng, (1, 1, 9, 11), torch.float64)
    (grad_sigma,) = torch.autograd.grad(
        adaptive_blur(image.detach(), sigma, backend="native").sum(), (sigma,)
    )
    (grad_image,) = torch.autograd.grad(
        adaptive_blur(image, sigma.detach(), backend="native").sum(), (image,)
    )
    both = torch.autograd.grad(adaptive_blur(image, sigma, backend="native").sum(), (image, sigma))
    assert torch.equal(grad_image, both[0]) and torch.equal(grad_sigma, both[1])


def test_tiles_under_a_small_budget_give_the_same_gradients(rng):
    image, sigma = inputs(rng, (1, 3, 70, 90), torch.float64, largest=3.0)
    whole = torch.autograd.grad(adaptive_blur(image, sigma, backend="native").sum(), (image, sigma))
    tiled = torch.autograd.grad(
        adaptive_blur(image, sigma, backend="native", max_memory=1 << 16).sum(), (image, sigma)
    )
    for a, b in zip(whole, tiled, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_the_backward_is_the_native_one(rng, monkeypatch):
    """The tile's gradient comes from the native kernels, not from autograd elsewhere."""
    calls = []
    original = native.backward_tile
    monkeypatch.setattr(
        native, "backward_tile", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    image, sigma = inputs(rng, (1, 1, 8, 8), torch.float32)
    adaptive_blur(image, sigma, backend="native").sum().backward()
    assert calls == [1]
