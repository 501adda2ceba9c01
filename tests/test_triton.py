"""The Triton backend against float64 references.

Without CUDA the kernel runs under Triton's interpreter (``TRITON_INTERPRET=1``, set here
before Triton is imported) on small inputs; with CUDA the compiled kernel runs, and the
tests marked ``cuda`` compare it on larger, odd-sized images. Everything is skipped, with
the reason, where Triton is not installed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from scipy import ndimage

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are decorated

pytest.importorskip("triton", reason="the Triton backend needs triton installed")

from adaptiveblur.borders import read_window  # noqa: E402
from adaptiveblur.kernels import radius_map  # noqa: E402
from adaptiveblur.ops import reference  # noqa: E402
from adaptiveblur.ops import triton as triton_backend  # noqa: E402
from adaptiveblur.ops.registry import choose_backend  # noqa: E402
from adaptiveblur.ops.tile import TileInput  # noqa: E402
from tests.helpers import EXACT  # noqa: E402
from tests.oracle import loop_blur_batch  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

interpreter_only = pytest.mark.skipif(
    not INTERPRETED,
    reason="runs the kernel under TRITON_INTERPRET=1 (set only where CUDA is absent)",
)


@pytest.fixture(autouse=True)
def _interpreter_numpy_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton 3.6's interpreter turns loop bounds into ints with ``int(array_of_shape_1)``,
    which numpy >= 2.4 refuses (triton-lang/triton#9171, fixed upstream after 3.6).
    Make the interpreter's ``__index__`` take the array's single element instead."""
    if not INTERPRETED:
        return
    try:
        int(np.array([1]))
    except TypeError:
        from triton.runtime import interpreter

        original = interpreter._patch_lang_tensor

        def patched(tensor, scope):  # noqa: ANN001, ANN202
            original(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

        monkeypatch.setattr(interpreter, "_patch_lang_tensor", patched)


def run_tile(
    image: torch.Tensor,
    sigma: torch.Tensor,
    *,
    truncate: float = 3.0,
    border: str = "reflect",
    config: triton_backend.LaunchConfig | None = None,
) -> torch.Tensor:
    """The engine's job for one whole-image tile: radius, halo, border, then the backend."""
    radius = radius_map(sigma, truncate)
    halo = int(radius.max())
    height, width = image.shape[-2:]
    padded = read_window(image, -halo, height + halo, -halo, width + halo, border).contiguous()
    tile = TileInput(padded, sigma, radius, halo, truncate)
    if config is None:
        return triton_backend.blur_tile(tile)
    return triton_backend.gather_blur(tile, config)


def random_sigma(rng: np.random.Generator, shape: tuple[int, ...], high: float) -> np.ndarray:
    sigma = rng.uniform(0.0, high, shape)
    sigma[rng.random(shape) < 0.2] = 0.0
    return sigma.astype(np.float32)


# --- the interpreter (CPU CI) -------------------------------------------------------------


@interpreter_only
@pytest.mark.parametrize(
    ("batch", "channels", "height", "width", "high"),
    [(1, 1, 1, 1, 3.0), (2, 3, 7, 13, 3.0), (2, 4, 17, 9, 3.0), (1, 2, 9, 2, 2.0)],
)
def test_varying_sigma_equals_loop(rng, batch, channels, height, width, high):
    image = rng.random((batch, channels, height, width)).astype(np.float32)
    sigma = random_sigma(rng, (batch, 1, height, width), high)  # radii up to 9: past the image
    out = run_tile(torch.from_numpy(image), torch.from_numpy(sigma))
    np.testing.assert_allclose(
        out.double().numpy(), loop_blur_batch(image, sigma), atol=EXACT, rtol=0
    )


@interpreter_only
@pytest.mark.parametrize(("border", "paired"), [("reflect", True), ("constant", False)])
def test_small_blocks_with_mixed_radii(rng, border, paired):
    """Many programs, each with its own reach: some all radius 0, some wider than a block."""
    image = rng.random((1, 2, 9, 10)).astype(np.float32)
    sigma = random_sigma(rng, (1, 1, 9, 10), 2.0)
    sigma[..., :4, :] = 0.0
    config = triton_backend.LaunchConfig(block_y=4, groups=1, num_warps=1, paired=paired)
    out = run_tile(torch.from_numpy(image), torch.from_numpy(sigma), border=border, config=config)
    expected = loop_blur_batch(image, sigma, border=border)
    np.testing.assert_allclose(out.double().numpy(), expected, atol=EXACT, rtol=0)


@interpreter_only
def test_constant_sigma_equals_scipy(rng):
    image = rng.random((1, 2, 13, 7)).astype(np.float32)
    sigma = float(rng.uniform(1.0, 2.5))
    out = run_tile(torch.from_numpy(image), torch.full((1, 1, 13, 7), sigma), truncate=2.0)
    expected = np.stack(
        [
            ndimage.gaussian_filter(p.astype(np.float64), sigma, mode="mirror", truncate=2.0)
            for p in image[0]
        ]
    )
    np.testing.assert_allclose(out[0].double().numpy(), expected, atol=EXACT, rtol=0)


@interpreter_only
def test_more_than_four_channels(rng):
    image = rng.random((1, 5, 6, 9)).astype(np.float32)
    sigma = random_sigma(rng, (1, 1, 6, 9), 2.0)
    out = run_tile(torch.from_numpy(image), torch.from_numpy(sigma))
    np.testing.assert_allclose(
        out.double().numpy(), loop_blur_batch(image, sigma), atol=EXACT, rtol=0
    )


@interpreter_only
def test_radius_zero_is_identity_bit_for_bit(rng):
    image = torch.from_numpy(rng.random((2, 3, 5, 11)).astype(np.float32))
    sigma = torch.zeros(2, 1, 5, 11)
    sigma[:, :, 1:3, 2:6] = torch.tensor([1e-30, 1e-7, 0.1, 0.16])  # radius still 0
    assert torch.equal(run_tile(image, sigma), image)


@interpreter_only
def test_strided_sigma(rng):
    """A transposed sigma map and one broadcast over the batch (stride 0)."""
    image = rng.random((2, 1, 7, 9)).astype(np.float32)
    base = random_sigma(rng, (9, 7), 2.0)
    sigma = torch.from_numpy(base).t()[None, None].expand(2, 1, 7, 9)
    assert not sigma.is_contiguous()
    out = run_tile(torch.from_numpy(image), sigma)
    expected = loop_blur_batch(image, np.ascontiguousarray(sigma.numpy()))
    np.testing.assert_allclose(out.double().numpy(), expected, atol=EXACT, rtol=0)


# --- on any machine with triton --------------------------------------------------------------


def test_float64_and_autograd_stay_on_triton(monkeypatch):
    # triton declares float32, float64 and autograd (ops.triton_grad): nothing leaves it.
    monkeypatch.setattr(triton_backend, "available", lambda device: None)  # as on a GPU
    cuda = torch.device("cuda")
    assert choose_backend("exact", "triton", cuda).backend.name == "triton"
    assert choose_backend("exact", None, cuda).backend.graph_safe
    for options in ({"dtype": torch.float64}, {"needs_grad": True}):
        assert choose_backend("exact", "triton", cuda, **options).backend.name == "triton"
        assert choose_backend("exact", None, cuda, **options).backend.name == "triton"
    with pytest.raises(ValueError, match="expected float32"):
        padded = torch.zeros(1, 1, 4, 4, dtype=torch.float16)
        radius = torch.ones(1, 1, 2, 2, dtype=torch.int64)
        sigma = torch.ones(1, 1, 2, 2, dtype=torch.float16)
        triton_backend.blur_tile(TileInput(padded, sigma, radius, 1))


def test_bytes_per_pixel_is_small_and_window_free():
    small = triton_backend.bytes_per_pixel(2, 3, 3, 4)
    assert small == triton_backend.bytes_per_pixel(2, 3, 101, 4)
    assert small < reference.bytes_per_pixel(2, 3, 3, 4) * 4


def test_unavailable_on_cpu():
    reason = triton_backend.available(torch.device("cpu"))
    assert reason is not None
    assert "CUDA" in reason


@pytest.mark.parametrize(
    ("padded", "sigma", "radius", "message"),
    [
        (
            torch.zeros(1, 1, 6, 6),
            torch.zeros(1, 1, 4, 4),
            torch.zeros(1, 1, 4, 4, dtype=torch.int32),
            "int64",
        ),
        (
            torch.zeros(1, 1, 6, 6),
            torch.zeros(1, 1, 3, 4),
            torch.zeros(1, 1, 3, 4, dtype=torch.int64),
            "shape",
        ),
        (
            torch.zeros(1, 6, 6),
            torch.zeros(1, 1, 4, 4),
            torch.zeros(1, 1, 4, 4, dtype=torch.int64),
            "4-D",
        ),
    ],
)
def test_bad_arguments_raise(padded, sigma, radius, message):
    with pytest.raises(ValueError, match=message):
        triton_backend.blur_tile(TileInput(padded, sigma, radius, 1))


# --- CUDA -----------------------------------------------------------------------------------


def reference_on(image: torch.Tensor, sigma: torch.Tensor, border: str = "reflect") -> torch.Tensor:
    """float64 reference backend on the same device, one whole-image tile."""
    radius = radius_map(sigma)
    halo = int(radius.max())
    height, width = image.shape[-2:]
    padded = read_window(image.double(), -halo, height + halo, -halo, width + halo, border)
    return reference.blur_tile(TileInput(padded, sigma.double(), radius, halo))


@pytest.mark.cuda
@pytest.mark.parametrize("border", ["reflect", "replicate", "constant"])
@pytest.mark.parametrize(
    ("batch", "channels", "height", "width"), [(1, 3, 129, 257), (2, 1, 181, 78), (1, 5, 33, 65)]
)
def test_cuda_varying_sigma_equals_float64_reference(
    cuda, rng, border, batch, channels, height, width
):
    image = torch.from_numpy(rng.random((batch, channels, height, width))).float().to(cuda)
    sigma = torch.from_numpy(random_sigma(rng, (batch, 1, height, width), 6.0)).to(cuda)
    out = run_tile(image, sigma, border=border)
    torch.testing.assert_close(out.double(), reference_on(image, sigma, border), atol=EXACT, rtol=0)


@pytest.mark.cuda
def test_cuda_large_odd_image_every_config(cuda, rng):
    image = torch.from_numpy(rng.random((1, 3, 781, 1823))).float().to(cuda)
    sigma = torch.from_numpy(random_sigma(rng, (1, 1, 781, 1823), 4.0)).to(cuda)
    expected = reference_on(image, sigma)
    configs = (
        triton_backend.DEFAULT_CONFIG,
        triton_backend.LaunchConfig(4, 16, 2, paired=False),
        triton_backend.LaunchConfig(32, 8, 8),
    )
    for config in configs:
        out = run_tile(image, sigma, config=config)
        torch.testing.assert_close(out.double(), expected, atol=EXACT, rtol=0)


@pytest.mark.cuda
def test_cuda_constant_sigma_equals_scipy(cuda, rng):
    image = rng.random((2, 389, 511)).astype(np.float32)
    sigma = 4.0
    out = run_tile(
        torch.from_numpy(image)[None].to(cuda), torch.full((1, 1, 389, 511), sigma, device=cuda)
    )
    expected = np.stack(
        [
            ndimage.gaussian_filter(p.astype(np.float64), sigma, mode="mirror", truncate=3.0)
            for p in image
        ]
    )
    np.testing.assert_allclose(out[0].double().cpu().numpy(), expected, atol=EXACT, rtol=0)


@pytest.mark.cuda
def test_cuda_every_output_written_and_identity_exact(cuda, rng):
    image = torch.from_numpy(rng.random((1, 4, 67, 133))).float().to(cuda)
    sigma = torch.from_numpy(random_sigma(rng, (1, 1, 67, 133), 3.0)).to(cuda)
    sigma[..., 20:40, 30:90] = 0.0
    radius = radius_map(sigma)
    halo = int(radius.max())
    padded = read_window(image, -halo, 67 + halo, -halo, 133 + halo, "reflect").contiguous()
    source, out = triton_backend.prepare(TileInput(padded, sigma, radius, halo))
    out.fill_(float("nan"))
    triton_backend.launch(source, sigma, radius, out)
    assert bool(torch.isfinite(out).all())
    zero = (radius == 0).expand_as(image)
    assert torch.equal(out[zero], image[zero])
