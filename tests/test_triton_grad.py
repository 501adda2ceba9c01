"""The Triton backend's backward pass (and float64 gather) against autograd through the
reference backend and float64 ``gradcheck``.

Without CUDA the kernels run under Triton's interpreter on small tiles; the tests marked
``cuda`` run ``adaptive_blur`` itself on the GPU, on larger odd sizes.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are decorated

pytest.importorskip("triton", reason="the Triton backend needs triton installed")

from adaptiveblur import adaptive_blur  # noqa: E402
from adaptiveblur.borders import read_window  # noqa: E402
from adaptiveblur.kernels import radius_map  # noqa: E402
from adaptiveblur.ops import blur, reference, triton_grad  # noqa: E402
from adaptiveblur.ops.tile import TileInput  # noqa: E402
from tests.test_triton import (  # noqa: E402, F401 - its autouse interpreter fix applies here
    _interpreter_numpy_fix,
    interpreter_only,
    random_sigma,
)

BORDERS = ["reflect", "replicate", "constant"]


def tile_blur(blur_tile, image, sigma, border="reflect", truncate=3.0):  # noqa: ANN001, ANN201
    """One whole-image tile through ``blur_tile``, differentiable through the border."""
    radius = radius_map(sigma.detach(), truncate)
    halo = int(radius.max())
    height, width = image.shape[-2:]
    padded = read_window(image, -halo, height + halo, -halo, width + halo, border)
    return blur_tile(TileInput(padded, sigma, radius, halo, truncate))


def inputs(rng, shape, high, dtype=torch.float64):  # noqa: ANN001, ANN201
    batch, channels, height, width = shape
    image = torch.from_numpy(rng.random(shape)).to(dtype).requires_grad_()
    sigma = torch.from_numpy(random_sigma(rng, (batch, 1, height, width), high))
    return image, sigma.to(dtype).requires_grad_()


def gradients(blur_tile, image, sigma, grad, border="reflect"):  # noqa: ANN001, ANN201
    out = tile_blur(blur_tile, image, sigma, border)
    return (out, *torch.autograd.grad(out, (image, sigma), grad))


@interpreter_only
@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 7, 13), (2, 5, 5, 3), (1, 2, 3, 17)])
def test_gradients_equal_autograd_through_the_reference(rng, border, shape):
    # (2, 5, 5, 3): 5 channels (two launches of 4 and 1) and windows wider than the image.
    image, sigma = inputs(rng, shape, 2.0)
    grad = torch.from_numpy(rng.standard_normal(shape))
    out, grad_image, grad_sigma = gradients(triton_grad.blur_tile, image, sigma, grad, border)
    want, want_image, want_sigma = gradients(reference.blur_tile, image, sigma, grad, border)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_image, want_image, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_sigma, want_sigma, atol=1e-11, rtol=1e-10)


@interpreter_only
def test_float64_gradcheck(rng):
    # The interpreter is slow: one small case here; every border runs on CUDA below.
    image, sigma = inputs(rng, (1, 2, 3, 4), 1.0)
    sigma = (sigma.detach() + 0.3).requires_grad_()  # away from the floor
    radius = radius_map(sigma.detach())

    def blur(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        halo = int(radius.max())
        padded = read_window(image, -halo, 3 + halo, -halo, 4 + halo, "reflect")
        return triton_grad.blur_tile(TileInput(padded, sigma, radius, halo))

    assert torch.autograd.gradcheck(blur, (image, sigma), eps=1e-6, atol=1e-7, fast_mode=True)


@interpreter_only
def test_float32_gradients_are_close_to_float64(rng):
    image, sigma = inputs(rng, (1, 3, 9, 11), 2.0)
    grad = torch.from_numpy(rng.standard_normal((1, 3, 9, 11)))
    _, want_image, want_sigma = gradients(reference.blur_tile, image, sigma, grad)
    single = image.detach().float().requires_grad_(), sigma.detach().float().requires_grad_()
    _, grad_image, grad_sigma = gradients(triton_grad.blur_tile, *single, grad.float())
    torch.testing.assert_close(grad_image.double(), want_image, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_sigma.double(), want_sigma, atol=1e-4, rtol=1e-4)


@interpreter_only
def test_two_backward_passes_are_bitwise_equal(rng):
    image, sigma = inputs(rng, (2, 3, 6, 9), 1.5, torch.float32)
    grad = torch.from_numpy(rng.standard_normal((2, 3, 6, 9))).float()
    first = gradients(triton_grad.blur_tile, image, sigma, grad)
    second = gradients(triton_grad.blur_tile, image, sigma, grad)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@interpreter_only
def test_only_the_wanted_gradient_is_computed(rng, monkeypatch):
    image, sigma = inputs(rng, (1, 1, 5, 6), 2.0)
    calls: list[str] = []
    spread = triton_grad._spread
    monkeypatch.setattr(triton_grad, "_spread", lambda *a: calls.append("spread") or spread(*a))
    out = tile_blur(triton_grad.blur_tile, image.detach(), sigma)
    (grad_sigma,) = torch.autograd.grad(out.sum(), sigma)
    assert calls == [] and grad_sigma.shape == sigma.shape
    want = tile_blur(reference.blur_tile, image.detach(), sigma)
    (want_sigma,) = torch.autograd.grad(want.sum(), sigma)
    torch.testing.assert_close(grad_sigma, want_sigma, atol=1e-11, rtol=1e-10)
    out = tile_blur(triton_grad.blur_tile, image, sigma.detach())
    (grad_image,) = torch.autograd.grad(out.sum(), image)
    assert calls == ["spread"]


@interpreter_only
def test_no_sigma_gradient_below_the_floor_or_at_radius_zero(rng):
    image, sigma = inputs(rng, (1, 2, 6, 7), 2.0)
    sigma = sigma.detach()
    sigma[0, 0, 1, :] = 0.0
    sigma[0, 0, 2, :] = 0.1  # radius 0
    sigma.requires_grad_()
    out = tile_blur(triton_grad.blur_tile, image, sigma)
    (grad_sigma,) = torch.autograd.grad(out.sum() + (out**2).sum(), sigma)
    assert torch.equal(grad_sigma[0, 0, 1:3], torch.zeros(2, 7, dtype=torch.float64))
    assert bool((grad_sigma[0, 0, 3:] != 0).any())


@interpreter_only
def test_a_backward_pass_that_rereads_the_window_keeps_no_copy_of_it(rng):
    image, sigma = inputs(rng, (1, 2, 6, 7), 2.0)
    halo = int(radius_map(sigma.detach()).max())
    window = (-halo, 6 + halo, -halo, 7 + halo)
    padded = read_window(image, *window, "reflect")
    reread = blur._Reread(image, window, "reflect")
    tile = TileInput(padded, sigma, radius_map(sigma.detach()), halo, reread=reread)
    out = triton_grad.blur_tile(tile)
    del padded, tile
    assert len(out.grad_fn.saved_tensors) == 2  # sigma and the radius, not the window
    grad = torch.from_numpy(rng.standard_normal((1, 2, 6, 7)))
    got = torch.autograd.grad(out, (image, sigma), grad, retain_graph=True)
    again = torch.autograd.grad(out, (image, sigma), grad, retain_graph=True)
    _, *want = gradients(reference.blur_tile, image, sigma, grad)
    for a, b, w in zip(got, again, want, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, w, atol=1e-11, rtol=1e-10)
    with torch.no_grad():
        image.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        torch.autograd.grad(out, (image, sigma), grad)


# --- CUDA: adaptive_blur itself -----------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 7, 13), (2, 5, 9, 4)])
def test_cuda_float64_gradcheck(cuda, rng, border, shape):
    image, sigma = inputs(rng, shape, 2.5)
    sigma = (sigma.detach() + 0.2).to(cuda).requires_grad_()
    image = image.detach().to(cuda).requires_grad_()
    bound = float(sigma.detach().max())  # fixed windows: the radius steps are not differentiable

    def blur(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return adaptive_blur(image, sigma, border=border, sigma_bound=bound, backend="triton")

    assert torch.autograd.gradcheck(blur, (image, sigma), eps=1e-6, atol=1e-7)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(1, 3, 1023, 769), (2, 4, 129, 257)])
def test_cuda_gradients_equal_the_native_cpu_backward(cuda, rng, shape):
    image, sigma = inputs(rng, shape, 4.0, torch.float32)
    grad = torch.from_numpy(rng.standard_normal(shape)).float()
    want = torch.autograd.grad(adaptive_blur(image, sigma), (image, sigma), grad)
    on_gpu = [t.detach().to(cuda).requires_grad_() for t in (image, sigma)]
    out = adaptive_blur(*on_gpu)
    got = torch.autograd.grad(out, on_gpu, grad.to(cuda))
    torch.testing.assert_close(got[0].cpu(), want[0], atol=2e-5, rtol=0)
    scale = float(want[1].abs().max())
    torch.testing.assert_close(got[1].cpu(), want[1], atol=2e-5 * scale, rtol=1e-4)


@pytest.mark.cuda
def test_cuda_backward_is_deterministic_and_tiled_equals_untiled(cuda, rng):
    image, sigma = inputs(rng, (1, 3, 301, 517), 5.0, torch.float32)
    image, sigma = (t.detach().to(cuda).requires_grad_() for t in (image, sigma))
    grad = torch.randn(1, 3, 301, 517, device=cuda, generator=torch.Generator(cuda).manual_seed(1))

    def run(max_memory: int | None) -> list[torch.Tensor]:
        out = adaptive_blur(image, sigma, max_memory=max_memory)
        return [out, *torch.autograd.grad(out, (image, sigma), grad)]

    first, second = run(None), run(None)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(first, run(8 << 20), strict=True):  # several tiles
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_inputs_are_accepted(cuda, rng, dtype):
    image, sigma = inputs(rng, (1, 3, 40, 50), 3.0, torch.float32)
    half = image.detach().to(cuda, dtype).requires_grad_()
    out = adaptive_blur(half, sigma.detach().to(cuda))
    assert out.dtype == dtype
    (grad,) = torch.autograd.grad(out.float().sum(), half)
    assert grad.dtype == dtype and bool(torch.isfinite(grad.float()).all())
    want = adaptive_blur(half.detach().float(), sigma.detach().to(cuda))
    np.testing.assert_allclose(out.detach().float().cpu().numpy(), want.cpu().numpy(), atol=1e-2)
