"""The levels-and-strips reference (adaptiveblur.ops.strips) against independent float64 oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adaptiveblur.ops import strips
from tests.oracle import loop_blur, scipy_blur

BOUND = strips.ERROR_BOUND
ROUNDING = {torch.float64: 1e-9, torch.float32: 2e-6}  # float arithmetic on top of the bound


def run(
    image: np.ndarray,
    sigma: np.ndarray,
    dtype: torch.dtype = torch.float64,
    main: str = "fft",
    images: str = "fft",
) -> np.ndarray:
    """``strips_blur`` of ``image (C, H, W)`` with ``sigma (H, W)``, as float64 ``(C, H, W)``."""
    out = strips.strips_blur(
        torch.tensor(image, dtype=dtype)[None],
        torch.tensor(sigma, dtype=torch.float32)[None, None],
        main=main,
        strips=images,
    )
    return out[0].double().numpy()


# (main, strips): the FFT reference and the pyramid + recursive path
PATHS = [("fft", "fft"), ("pyramid", "recursive")]


def reference(image: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The exact operator in float64 at the float32 sigmas the operator sees."""
    return loop_blur(image, sigma.astype(np.float32).astype(np.float64))


def node_grids(
    sigmas: tuple[float, ...], placements: tuple[tuple[int, float], ...]
) -> list[tuple[float, list[float]]]:
    """``(sigma, nodes)`` for each float32 pixel sigma and each top node ``steps + phase``
    node intervals above it: the proof's sweep, coarsely."""
    ratio = 2.0 ** (1.0 / strips.LEVELS_PER_OCTAVE)
    grids = []
    for value in sigmas:
        sigma = float(np.float32(value))
        for steps, phase in placements:
            top = float(np.float32(sigma * ratio ** (steps + phase)))
            grids.append((sigma, strips.node_sigmas(sigma, top)))
    return grids


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("height", "width", "top"),
    [(1, 1, 6.0), (7, 13, 8.0), (5, 4, 20.0), (23, 19, 12.0)],  # (5, 4): radius >> image
)
def test_random_varying_sigma(
    rng: np.random.Generator, dtype: torch.dtype, height: int, width: int, top: float
) -> None:
    image = rng.random((2, height, width))
    sigma = rng.uniform(0.0, top, (height, width))
    error = np.abs(run(image, sigma, dtype) - reference(image, sigma)).max()
    assert error <= BOUND + ROUNDING[dtype]


def adversarial(size: int) -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size]
    centre = size // 2
    return {
        "step": (x >= centre).astype(float),
        "dot": ((x == centre) & (y == centre)).astype(float),
        "check": ((x // 5 + y // 5) % 2).astype(float),
        "rings": (np.maximum(abs(y - centre), abs(x - centre)) % 2).astype(float),
    }


@pytest.mark.parametrize(("main", "images"), PATHS)
@pytest.mark.parametrize("kind", ["constant", "step", "ramp"])
def test_adversarial_patterns(rng: np.random.Generator, kind: str, main: str, images: str) -> None:
    size = 41
    patterns = adversarial(size)
    y, x = np.mgrid[0:size, 0:size]
    if kind == "constant":
        sigma = np.full((size, size), rng.uniform(3.3, 9.0))
    elif kind == "step":  # a sigma step across the image's own edge
        sigma = np.where(x + y >= size, rng.uniform(5.0, 9.0), rng.uniform(3.3, 5.0))
    else:
        sigma = 3.2 + 6.0 * (x + 2 * y) / (3 * size - 3)
    stack = np.stack(list(patterns.values()))
    error = np.abs(run(stack, sigma, main=main, images=images) - reference(stack, sigma)).max()
    assert error <= BOUND + ROUNDING[torch.float64]


def test_photo_sized_constant_sigmas_against_scipy(rng: np.random.Generator) -> None:
    """~200 x 150 with a constant sigma: exact is scipy's separable filter (mirror)."""
    image = rng.random((1, 151, 199))
    for value in (3.2, rng.uniform(4.0, 40.0)):
        sigma = np.full((151, 199), value)
        expected = scipy_blur(image, float(np.float32(value)))
        error = np.abs(run(image, sigma, torch.float32) - expected).max()
        assert error <= BOUND + ROUNDING[torch.float32]


@pytest.mark.parametrize(("main", "images"), PATHS)
def test_large_image_varying_sigma_on_a_sample(
    rng: np.random.Generator, main: str, images: str
) -> None:
    """~200 x 150, sigma up to 16 with steps; checked against the loop oracle on a few pixels."""
    height, width = 150, 200
    image = (rng.random((1, height, width)) > 0.5).astype(float)  # binary noise: large errors
    sigma = np.where(np.arange(width)[None, :] < 90, 5.0, 15.0) * np.ones((height, 1))
    sigma[60:, :] *= 0.7
    out = run(image, sigma, torch.float32, main, images)
    picks = [(0, 0), (59, 89), (60, 90), (149, 199), (75, 100), (10, 180)]
    for y, x in picks:
        one = np.zeros_like(sigma)
        one[y, x] = sigma[y, x]
        # loop_blur pads by the largest radius: give it only this pixel's sigma.
        expected = loop_blur(image, one.astype(np.float32).astype(np.float64))[:, y, x]
        assert abs(out[0, y, x] - expected[0]) <= BOUND + ROUNDING[torch.float32]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_constant_image_stays_constant(rng: np.random.Generator, dtype: torch.dtype) -> None:
    value = rng.random()
    sigma = rng.uniform(0.0, 30.0, (37, 29))
    out = run(np.full((1, 37, 29), value), sigma, dtype)
    assert np.abs(out - value).max() <= ROUNDING[dtype]


@pytest.mark.parametrize(("sigma", "top"), [(3.3, 3.3), (5.3, 6.1), (6.7, 9.0)])
def test_impulse_response_is_the_proven_kernel(sigma: float, top: float) -> None:
    """The operator on an impulse equals :func:`strips.pixel_kernel`: the proof's kernel."""
    size, reach = 151, 30
    centre = size // 2
    image = torch.zeros(1, 1, size, size, dtype=torch.float64)
    image[0, 0, centre, centre] = 1.0
    sigma_map = torch.full((1, 1, size, size), sigma, dtype=torch.float64)
    sigma_map[0, 0, 0, 0] = top  # places the node grid, far from the impulse
    out = strips.strips_blur(image, sigma_map)[0, 0].numpy()
    rows, cols, scale = strips.pixel_kernel(sigma, strips.node_sigmas(sigma, top), 3.0, reach)
    kernel = scale * np.einsum("ji,jk->ik", rows, cols)
    window = slice(centre - reach, centre + reach + 1)
    assert np.abs(out[window, window][::-1, ::-1] - kernel).max() < 1e-14


def test_bound_constant_covers_a_coarse_sweep() -> None:
    """``pixel_bound`` on a coarse subset of the proof's sweep stays under ERROR_BOUND."""
    worst = 0.0
    placements = ((0, 0.0), (0, 0.5), (1, 0.25), (2, 0.75))
    for sigma, nodes in node_grids((3.1668, 3.5, 4.49, 7.2, 11.83, 23.5), placements):
        worst = max(worst, strips.pixel_bound(sigma, nodes))
    assert 0.0 < worst <= BOUND


def test_bound_detects_a_wrong_kernel() -> None:
    """The bound machinery is not vacuous: nodes too sparse to interpolate break it."""
    sigma = 7.0
    nodes = [sigma / 4, sigma / 2, sigma * 1.5, sigma * 3]
    assert strips.pixel_bound(sigma, nodes) > 4 * BOUND


def test_rejects_bad_arguments() -> None:
    image = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="sigma of shape"):
        strips.strips_blur(image, torch.ones(1, 1, 4, 5))
    with pytest.raises(ValueError, match="finite sigma"):
        strips.strips_blur(image, torch.full((1, 1, 4, 4), math.nan))
    with pytest.raises(ValueError, match="truncate"):
        strips.strips_blur(image, torch.ones(1, 1, 4, 4), truncate=0.0)


# ---------------------------------------------------------------- the main term on a pyramid

PYRAMID_BOUND = strips.PYRAMID_ERROR_BOUND


@pytest.mark.parametrize(("height", "width"), [(1, 1), (2, 3), (5, 4), (37, 29), (64, 97)])
def test_pyramid_main_term_matches_fft(rng: np.random.Generator, height: int, width: int) -> None:
    """Each node's pyramid level is within its proven 1-D/2-D deviation of the FFT level."""
    image = torch.tensor(rng.random((1, 2, height, width)))
    nodes = [2.9, 3.59, 3.61, 5.3, 7.19, 7.21, 13.0, 29.0, 61.0]  # both sides of level changes
    fft = strips.main_levels(image, nodes, "fft")
    pyramid = strips.main_levels(image, nodes, "pyramid")
    for node, a, b in zip(nodes, fft, pyramid, strict=True):
        error, norm = strips.pyramid_error(node)
        assert error < 3e-6
        assert float((a - b).abs().max()) <= error * (norm + 1.0) + 1e-12


@pytest.mark.parametrize("node", [3.3, 5.3, 9.9, 20.0])
def test_pyramid_impulse_response_is_the_proven_kernel(node: float) -> None:
    """The 2-D pyramid level of an impulse, at several grid phases, is ``k_ry (x) k_rx``."""
    step = 2 ** strips.pyramid_level(node)
    support = strips.pyramid_support(node)
    kernel = strips.pyramid_kernel(node)
    size = 2 * support + 3 * step + 7  # odd; the mirrored copies stay out of the window
    centre = support + step + 1
    for phase_y, phase_x in ((0, 0), (1, step - 1), (step // 2, 1), (step - 1, step // 2)):
        cy, cx = centre + phase_y, centre + phase_x
        image = torch.zeros(1, 1, size, size, dtype=torch.float64)
        image[0, 0, cy, cx] = 1.0
        (out,) = strips.main_levels(image, [node], "pyramid")
        window = slice(centre - support, centre + support + step)
        ys = np.arange(size)[window]
        padded = np.pad(kernel, ((0, 0), (step, step)))  # zero beyond the support
        rows = padded[ys % step, cy - ys + support + step]  # out(y) = k_{y mod h}(cy - y)
        cols = padded[ys % step, cx - ys + support + step]
        expected = rows[:, None] * cols[None, :]
        assert np.abs(out[0, 0, window, window].numpy() - expected).max() < 1e-15


def test_pyramid_kernel_is_one_of_the_gaussian() -> None:
    """Each phase's kernel has mass 1 and is even about its own phase (grids aligned at 0)."""
    for node in (3.7, 9.0, 33.0):
        kernel = strips.pyramid_kernel(node)
        assert np.abs(kernel.sum(1) - 1.0).max() < 1e-14
        # Phase 0 sits on the coarse grid: its kernel is even.
        assert np.abs(kernel[0] - kernel[0][::-1]).max() < 1e-15


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("height", "width", "top"),
    [(1, 1, 6.0), (7, 13, 8.0), (5, 4, 20.0), (23, 19, 12.0), (31, 27, 30.0)],
)
def test_pyramid_operator_within_bound(
    rng: np.random.Generator, dtype: torch.dtype, height: int, width: int, top: float
) -> None:
    image = rng.random((2, height, width))
    sigma = rng.uniform(0.0, top, (height, width))
    out = (
        strips.strips_blur(
            torch.tensor(image, dtype=dtype)[None],
            torch.tensor(sigma, dtype=torch.float32)[None, None],
            main="pyramid",
        )[0]
        .double()
        .numpy()
    )
    error = np.abs(out - reference(image, sigma)).max()
    assert error <= PYRAMID_BOUND + ROUNDING[dtype]


def test_pyramid_bound_covers_a_coarse_sweep() -> None:
    """``pixel_bound(main="pyramid")`` exceeds the FFT one, by little, and stays under the bound."""
    worst = 0.0
    for sigma, nodes in node_grids((3.1668, 3.62, 7.2, 23.5), ((0, 0.0), (1, 0.5))):
        fft = strips.pixel_bound(sigma, nodes)
        pyramid = strips.pixel_bound(sigma, nodes, main="pyramid")
        assert fft < pyramid < fft + 0.002 / 255
        worst = max(worst, pyramid)
    assert worst <= PYRAMID_BOUND


def test_rejects_an_unknown_main_term() -> None:
    with pytest.raises(ValueError, match="main"):
        strips.strips_blur(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4), main="iir")
    with pytest.raises(ValueError, match="main"):
        strips.main_levels(torch.zeros(1, 1, 4, 4), [2.0], main="iir")


# ---------------------------------------------------------------- strip images as recursions

RECURSIVE_BOUND = strips.RECURSIVE_ERROR_BOUND
# float32 rounding of the blocked scan, relative to max|Y| / (1 - z): a few eps per block
# product and per carry (docs/strips_method.md, section 5)
SCAN_FLOAT32 = 4e-6


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("period", [1, 2, 7, 31, 32, 33, 100])
def test_geometric_scan_is_the_periodic_geometric_sum(
    rng: np.random.Generator, dtype: torch.dtype, period: int
) -> None:
    """The blocked recursion equals the closed-form periodic sum (FFT multiplier), no tail."""
    values = torch.tensor(rng.random((3, period)) - 0.3)
    z = np.concatenate([strips.poles(4.0), strips.poles(256.0)])  # z up to 0.990
    out = strips.geometric_scan(values.to(dtype).T.contiguous(), -2, z)  # along dim -2
    for m, pole in enumerate(z):
        multiplier = strips._geometric_spectrum(float(pole), period, onesided=False)
        expected = torch.fft.ifft(torch.fft.fft(values) * multiplier).real
        scale = 1.0 / (1.0 - pole)
        tolerance = 1e-13 if dtype == torch.float64 else SCAN_FLOAT32
        assert float((out[m].T.double() - expected).abs().max()) <= tolerance * scale


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (2, 3), (7, 13), (37, 29)])
def test_recursive_strip_images_match_fft(
    rng: np.random.Generator, dtype: torch.dtype, height: int, width: int
) -> None:
    """Recursive strip images are within ``e_k / (1 - z)`` (pyramid profile) of the FFT ones."""
    image = torch.tensor(rng.random((1, 2, height, width)))
    nodes = [3.3, 3.61, 7.21, 13.0, 61.0]  # direct FIR and three pyramid levels
    fft = strips.strip_images(image, nodes, "fft")
    recursive = strips.strip_images(image.to(dtype), nodes, "recursive")
    rounding = 1e-12 if dtype == torch.float64 else SCAN_FLOAT32
    for node, (fx, fy), (rx, ry) in zip(nodes, fft, recursive, strict=True):
        error, _ = strips.pyramid_error(node)
        for m, pole in enumerate(strips.poles(node)):
            tolerance = (error + rounding) / (1.0 - pole)
            assert float((fx[m] - rx[m].double()).abs().max()) <= tolerance
            assert float((fy[m] - ry[m].double()).abs().max()) <= tolerance


@pytest.mark.parametrize(
    ("sigma", "top", "main", "size"), [(5.3, 6.1, "fft", 121), (9.9, 12.0, "pyramid", 241)]
)
def test_recursive_impulse_response_is_the_proven_kernel(
    sigma: float, top: float, main: str, size: int
) -> None:
    """On an impulse, every pixel's value is its own phase's kernel (:func:`strips.pixel_kernel`).

    The strips are infinite: ``size`` keeps the impulse's mirrored copies ``> 15 s_max`` away.
    """
    reach = 30
    centre = size // 2
    image = torch.zeros(1, 1, size, size, dtype=torch.float64)
    image[0, 0, centre, centre] = 1.0
    sigma_map = torch.full((1, 1, size, size), sigma, dtype=torch.float64)
    sigma_map[0, 0, 0, 0] = top  # places the node grid, far from the impulse
    out = strips.strips_blur(image, sigma_map, main=main, strips="recursive")[0, 0].numpy()
    nodes = strips.node_sigmas(sigma, top)
    step = max(2 ** strips.pyramid_level(node) for node in nodes)
    window = np.arange(centre - 30, centre + 31)  # out(p) = K_p(centre - p)
    for phase_y in range(step):
        for phase_x in range(step):
            rows, cols, scale = strips.pixel_kernel(
                sigma, nodes, 3.0, reach, main, "recursive", (phase_y, phase_x)
            )
            kernel = scale * np.einsum("ji,jk->ik", rows, cols)
            ys, xs = window[window % step == phase_y], window[window % step == phase_x]
            expected = kernel[np.ix_(centre - ys + reach, centre - xs + reach)]
            assert np.abs(out[np.ix_(ys, xs)] - expected).max() < 1e-15


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("height", "width", "top", "main"),
    [
        (1, 1, 6.0, "pyramid"),
        (7, 13, 8.0, "pyramid"),
        (5, 4, 20.0, "pyramid"),  # radius >> image
        (23, 19, 12.0, "pyramid"),
        (31, 27, 30.0, "pyramid"),
        (7, 13, 8.0, "fft"),
        (23, 19, 12.0, "fft"),
    ],
)
def test_recursive_operator_within_bound(
    rng: np.random.Generator, dtype: torch.dtype, height: int, width: int, top: float, main: str
) -> None:
    image = rng.random((2, height, width))
    sigma = rng.uniform(0.0, top, (height, width))
    out = run(image, sigma, dtype, main, "recursive")
    error = np.abs(out - reference(image, sigma)).max()
    assert error <= RECURSIVE_BOUND + ROUNDING[dtype]


def test_recursive_photo_sized_constant_sigmas_against_scipy(rng: np.random.Generator) -> None:
    """~200 x 150, constant sigmas up to 60 (windows wider than the image), float32."""
    image = rng.random((1, 151, 199))
    for value in (3.2, rng.uniform(4.0, 40.0), 60.0):
        sigma = np.full((151, 199), value)
        expected = scipy_blur(image, float(np.float32(value)))
        out = run(image, sigma, torch.float32, "pyramid", "recursive")
        assert np.abs(out - expected).max() <= RECURSIVE_BOUND + ROUNDING[torch.float32]


def test_recursive_float32_rounding(rng: np.random.Generator) -> None:
    """float32 against float64 of the same path: the rounding estimate (2e-6) holds at sigma 100."""
    image = (rng.random((1, 45, 61)) > 0.5).astype(float)  # binary noise
    sigma = rng.choice([3.5, 17.3, 45.1, 99.7], (45, 61))  # few radii: few tail tables
    single = run(image, sigma, torch.float32, "pyramid", "recursive")
    double = run(image, sigma, torch.float64, "pyramid", "recursive")
    assert np.abs(single - double).max() <= ROUNDING[torch.float32]


def test_recursive_bound_covers_a_coarse_sweep() -> None:
    """``pixel_bound(strips="recursive")`` exceeds the FFT-strips one by little, under the bound."""
    worst = 0.0
    for sigma, nodes in node_grids((3.1668, 3.62, 23.5, 200.0), ((0, 0.0), (1, 0.5))):
        fft = strips.pixel_bound(sigma, nodes, main="pyramid")
        recursive = strips.pixel_bound(sigma, nodes, main="pyramid", strips="recursive")
        assert fft < recursive < fft + 1e-4 / 255
        worst = max(worst, recursive)
    assert worst <= RECURSIVE_BOUND


def test_rejects_unknown_strip_images() -> None:
    with pytest.raises(ValueError, match="strips"):
        strips.strips_blur(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4), strips="iir")
    with pytest.raises(ValueError, match="strips"):
        strips.strip_images(torch.zeros(1, 1, 4, 4), [2.0], strips="iir")
