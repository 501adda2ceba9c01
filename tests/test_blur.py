"""adaptive_blur against independent float64 references, its properties, and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adaptiveblur import InvalidParameterError, adaptive_blur
from adaptiveblur.errors import DeviceUnavailableError
from tests.helpers import EXACT
from tests.oracle import loop_blur, scipy_blur, unfold_blur


@pytest.mark.parametrize("border", ["reflect", "replicate", "constant"])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (7, 13), (13, 7), (31, 2)])
def test_constant_sigma_equals_scipy(device, backend, rng, border, height, width):
    image = rng.random((3, height, width))
    for sigma in (0.0, rng.uniform(0.2, 1.0), rng.uniform(1.0, 4.0), 9.7):  # 9.7: radius > image
        truncate = float(rng.choice([2.0, 3.0, 4.0]))
        out = adaptive_blur(
            torch.from_numpy(image).float(),
            sigma,
            truncate=truncate,
            border=border,
            device=device,
            backend=backend,
        )
        expected = scipy_blur(image, sigma, truncate, border)
        np.testing.assert_allclose(out.double().numpy(), expected, atol=EXACT, rtol=0)


def test_constant_sigma_large_odd_image_equals_scipy(rng):
    image = rng.random((1, 769, 1023))
    sigma = float(rng.uniform(1.5, 2.5))
    out = adaptive_blur(torch.from_numpy(image).float(), sigma, max_memory=64 << 20)
    np.testing.assert_allclose(
        out.double().numpy(), scipy_blur(image, sigma, 3.0, "reflect"), atol=EXACT
    )


@pytest.mark.parametrize("border", ["reflect", "replicate", "constant"])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 9), (7, 13), (16, 11)])
def test_varying_sigma_equals_loop(device, backend, rng, border, height, width):
    image = rng.random((2, height, width))
    sigma = rng.uniform(0.0, 6.0, (height, width))  # radii up to 18: wider than the image
    sigma[rng.random((height, width)) < 0.2] = 0.0
    out = adaptive_blur(
        torch.from_numpy(image).float(),
        torch.from_numpy(sigma).float(),
        border=border,
        device=device,
        backend=backend,
    )
    expected = loop_blur(image, sigma.astype(np.float32), border=border)
    np.testing.assert_allclose(out.double().numpy(), expected, atol=EXACT, rtol=0)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (7, 13), (16, 11)])
def test_sigma_bound_changes_nothing_below_it(device, backend, rng, height, width):
    image = torch.from_numpy(rng.random((2, height, width))).float()
    bound = float(rng.uniform(2.0, 6.0))  # radii up to 18: wider than the image
    sigma = rng.uniform(0.0, bound, (height, width)).astype(np.float32)
    sigma[rng.random((height, width)) < 0.2] = 0.0
    options = {"device": device, "backend": backend}
    out = adaptive_blur(image, torch.from_numpy(sigma), sigma_bound=bound, **options)
    expected = loop_blur(image.double().numpy(), sigma)
    np.testing.assert_allclose(out.double().numpy(), expected, atol=EXACT, rtol=0)


def test_sigma_bound_in_several_tiles(rng):
    image = torch.from_numpy(rng.random((2, 70, 45))).float()
    sigma = rng.uniform(0.0, 5.0, (70, 45)).astype(np.float32)
    tiles: list[int] = []
    out = adaptive_blur(
        image,
        torch.from_numpy(sigma),
        sigma_bound=5.0,
        max_memory=4096,  # 32 x 32 tiles, each with the bound's halo of 15
        progress=lambda done, total: tiles.append(total),
    )
    assert tiles[-1] > 1
    expected = loop_blur(image.double().numpy(), sigma)
    np.testing.assert_allclose(out.double().numpy(), expected, atol=EXACT, rtol=0)


def test_sigma_bound_cuts_larger_windows_to_its_own(device, backend, rng):
    image = rng.random((3, 9, 14))
    sigma = rng.uniform(0.0, 4.0, (9, 14)).astype(np.float32)
    bound = 1.7  # radius 5 at truncate 3: many pixels are above it
    out = adaptive_blur(
        torch.from_numpy(image).float(),
        torch.from_numpy(sigma),
        sigma_bound=bound,
        device=device,
        backend=backend,
    )
    expected = loop_blur(image, sigma, max_radius=5)
    np.testing.assert_allclose(out.double().numpy(), expected, atol=EXACT, rtol=0)


def test_sigma_bound_with_the_fast_method_stays_within_its_bound(rng):
    from adaptiveblur.ops.levels import ERROR_BOUND

    image = rng.random((1, 40, 57))
    sigma = rng.uniform(0.0, 7.0, (40, 57)).astype(np.float32)
    out = adaptive_blur(
        torch.from_numpy(image).float(), torch.from_numpy(sigma), method="fast", sigma_bound=7.0
    )
    assert np.abs(out.double().numpy() - loop_blur(image, sigma)).max() <= ERROR_BOUND + 1e-5


@pytest.mark.parametrize("bound", [-1.0, math.nan, math.inf, "4", True])
def test_bad_sigma_bound_is_refused(bound):
    with pytest.raises(InvalidParameterError, match="sigma_bound"):
        adaptive_blur(torch.ones(1, 4, 4), 1.0, sigma_bound=bound)


def test_float64_is_exact_to_float64(rng):
    image = rng.random((3, 9, 14))
    sigma = rng.uniform(0.0, 3.0, (9, 14))
    out = adaptive_blur(torch.from_numpy(image), torch.from_numpy(sigma))
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), loop_blur(image, sigma), atol=1e-12, rtol=0)


def test_matches_seed_style_unfold(device, backend, rng):
    image = torch.from_numpy(rng.random((2, 3, 41, 37))).float()
    sigma = torch.from_numpy(rng.uniform(0.0, 4.0, (2, 1, 41, 37))).float()
    out = adaptive_blur(image, sigma, device=device, backend=backend)
    torch.testing.assert_close(out.double(), unfold_blur(image, sigma), atol=EXACT, rtol=0)


@pytest.mark.parametrize("budget", [1, 4096, 200_000])
def test_tiled_equals_untiled(device, backend, rng, budget):
    image = torch.from_numpy(rng.random((3, 53, 47))).float()
    sigma = torch.from_numpy(rng.uniform(0.0, 5.0, (53, 47))).float()
    whole = adaptive_blur(image, sigma, max_memory=1 << 34, device=device, backend=backend)
    tiled = adaptive_blur(image, sigma, max_memory=budget, device=device, backend=backend)
    torch.testing.assert_close(tiled, whole, atol=EXACT, rtol=0)


def test_tiles_are_reported(rng):
    image = torch.from_numpy(rng.random((1, 100, 90))).float()
    calls: list[tuple[int, int]] = []
    adaptive_blur(
        image, 3.0, max_memory=100_000, progress=lambda done, total: calls.append((done, total))
    )
    total = calls[-1][1]
    assert total > 1
    assert calls == [(i, total) for i in range(1, total + 1)]


def test_constant_image_stays_constant(device, backend, rng):
    value = float(rng.random())
    image = torch.full((3, 19, 23), value)
    sigma = torch.from_numpy(rng.uniform(0.0, 8.0, (19, 23))).float()
    out = adaptive_blur(image, sigma, device=device, backend=backend)
    torch.testing.assert_close(out, image, atol=EXACT, rtol=0)


@pytest.mark.parametrize("border", ["reflect", "replicate", "constant"])
def test_output_within_input_range(rng, border):
    image = torch.from_numpy(rng.uniform(0.2, 0.7, (2, 17, 29))).float()
    sigma = torch.from_numpy(rng.uniform(0.0, 5.0, (17, 29))).float()
    out = adaptive_blur(image, sigma, border=border)
    low = 0.0 if border == "constant" else float(image.min())
    assert float(out.min()) >= low - EXACT
    assert float(out.max()) <= float(image.max()) + EXACT


def test_zero_sigma_is_identity_without_nan(rng):
    image = torch.from_numpy(rng.random((4, 12, 9))).float()
    sigma = torch.zeros(12, 9)
    sigma[3:6, 2:5] = torch.tensor([1e-30, 1e-7, 0.1])[None, :].expand(3, 3)  # radius still 0
    out = adaptive_blur(image, sigma)
    assert torch.equal(out, image)


def test_impulse_keeps_its_mass_inside_the_image():
    image = torch.zeros(1, 41, 41, dtype=torch.float64)
    image[0, 20, 20] = 1.0
    out = adaptive_blur(image, 2.3)
    assert math.isclose(float(out.sum()), 1.0, rel_tol=1e-12)


def test_shapes_and_broadcasting(rng):
    image = torch.from_numpy(rng.random((2, 3, 8, 10))).float()
    per_item = torch.from_numpy(rng.uniform(0, 2, (2, 1, 8, 10))).float()
    out = adaptive_blur(image, per_item)
    for item in range(2):
        torch.testing.assert_close(out[item], adaptive_blur(image[item], per_item[item]))
    shared = per_item[:1]
    torch.testing.assert_close(adaptive_blur(image, shared), adaptive_blur(image, shared[0, 0]))


def test_noncontiguous_input(rng):
    base = torch.from_numpy(rng.random((9, 11, 3))).float()
    image = base.permute(2, 0, 1)
    assert not image.is_contiguous()
    sigma = torch.from_numpy(rng.uniform(0, 2, (11, 9))).float().t()
    torch.testing.assert_close(
        adaptive_blur(image, sigma), adaptive_blur(image.contiguous(), sigma.contiguous())
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma": -1.0}, "sigma >= 0"),
        ({"sigma": float("nan")}, "finite"),
        ({"sigma": float("inf")}, "finite"),
        ({"sigma": torch.ones(5, 5)}, "shape"),
        ({"truncate": 0.0}, "truncate"),
        ({"truncate": float("nan")}, "truncate"),
        ({"border": "wrap"}, "border"),
        ({"max_memory": 0}, "max_memory"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    arguments = {"sigma": 1.0, **kwargs}
    sigma = arguments.pop("sigma")
    with pytest.raises(InvalidParameterError, match=message):
        adaptive_blur(torch.rand(3, 8, 8), sigma, **arguments)


@pytest.mark.parametrize(
    "image", [torch.rand(8, 8), torch.zeros(3, 8, 8, dtype=torch.uint8), torch.rand(3, 0, 4)]
)
def test_bad_images_raise(image):
    with pytest.raises(InvalidParameterError):
        adaptive_blur(image, 1.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda_raises():
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        adaptive_blur(torch.rand(1, 4, 4), 1.0, device="cuda")


@pytest.mark.cuda
def test_cuda_equals_cpu(rng):
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    image = torch.from_numpy(rng.random((3, 129, 257))).float()
    sigma = torch.from_numpy(rng.uniform(0, 6, (129, 257))).float()
    cpu = adaptive_blur(image, sigma)
    gpu = adaptive_blur(image.cuda(), sigma.cuda())
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=EXACT, rtol=0)
