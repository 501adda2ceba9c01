"""The native (compiled C) backend against float64 references, and its compile cache.

Blurs go through ``adaptive_blur(..., backend="native")``; the tile-level tests call
``blur_tile`` with a :class:`~adaptiveblur.ops.tile.TileInput` as the engine does.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptiveblur import adaptive_blur
from adaptiveblur.borders import read_window
from adaptiveblur.errors import DeviceUnavailableError
from adaptiveblur.kernels import radius_map
from adaptiveblur.native import build, library
from adaptiveblur.ops import native
from adaptiveblur.ops.tile import TileInput
from tests.helpers import EXACT as FLOAT32_EXACT
from tests.oracle import loop_blur_batch, scipy_blur

EXACT = {torch.float32: FLOAT32_EXACT, torch.float64: 1e-12}  # float32 rounding; float64 to float64
CPU = torch.device("cpu")
UNAVAILABLE = native.available(CPU)
needs_kernel = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"native backend: {UNAVAILABLE}")


def native_blur(
    image: torch.Tensor,
    sigma: torch.Tensor | float,
    truncate: float = 3.0,
    border: str = "reflect",
) -> torch.Tensor:
    """``image (B, C, H, W)``, ``sigma (B, 1, H, W)`` or a number, through the native backend."""
    return adaptive_blur(image, sigma, truncate=truncate, border=border, backend="native")


def rounded(values: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """``values`` as the backend sees them (rounded to ``dtype``), held in float64."""
    return values.astype(np.float32).astype(np.float64) if dtype == torch.float32 else values


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("border", ["reflect", "replicate", "constant"])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (7, 13), (1, 17), (40, 5), (37, 29)])
def test_constant_sigma_equals_scipy(rng, dtype, border, height, width):
    image = rng.random((1, 2, height, width))
    for sigma in (0.0, rng.uniform(0.2, 1.0), rng.uniform(1.0, 4.0), 9.7):  # 9.7: radius > image
        truncate = float(rng.choice([2.0, 3.0, 4.0]))
        out = native_blur(torch.from_numpy(image).to(dtype), sigma, truncate, border)
        assert out.dtype == dtype
        expected = scipy_blur(rounded(image, dtype), sigma, truncate, border)
        np.testing.assert_allclose(out.double().numpy(), expected, atol=EXACT[dtype], rtol=0)


@needs_kernel
def test_constant_sigma_larger_odd_image_equals_scipy(rng):
    image = rounded(rng.random((2, 3, 257, 131)), torch.float32)
    sigma = float(rng.uniform(1.5, 4.0))
    out = native_blur(torch.from_numpy(image).float(), sigma)
    np.testing.assert_allclose(
        out.double().numpy(), scipy_blur(image, sigma, 3.0, "reflect"), atol=EXACT[torch.float32]
    )


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("border", ["reflect", "replicate", "constant"])
@pytest.mark.parametrize(
    ("channels", "height", "width"),
    [(1, 1, 1), (3, 7, 13), (2, 1, 17), (4, 37, 29), (1, 23, 3), (5, 18, 33)],
)
def test_varying_sigma_equals_loop(rng, dtype, border, channels, height, width):
    image = rng.random((2, channels, height, width))
    sigma = rng.uniform(0.0, 6.0, (2, 1, height, width))  # radii up to 18: wider than the image
    sigma[rng.random(sigma.shape) < 0.2] = 0.0
    truncate = float(rng.choice([2.0, 3.0]))
    out = native_blur(
        torch.from_numpy(image).to(dtype), torch.from_numpy(sigma).to(dtype), truncate, border
    )
    expected = loop_blur_batch(rounded(image, dtype), rounded(sigma, dtype), truncate, border)
    np.testing.assert_allclose(out.double().numpy(), expected, atol=EXACT[dtype], rtol=0)


@needs_kernel
def test_smooth_sigma_map_equals_loop(rng):
    """Neighbouring pixels with close sigmas: each must still stop at its own radius."""
    height, width = 29, 71
    yy, xx = np.mgrid[0:height, 0:width]
    sigma = (2.5 + 2.0 * np.sin(xx / 7.0) * np.cos(yy / 5.0)).clip(0.0, None)[None, None]
    image = rounded(rng.random((1, 3, height, width)), torch.float32)
    out = native_blur(torch.from_numpy(image).float(), torch.from_numpy(sigma).float())
    expected = loop_blur_batch(image, rounded(sigma, torch.float32), 3.0, "reflect")
    np.testing.assert_allclose(out.double().numpy(), expected, atol=EXACT[torch.float32], rtol=0)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_radius_is_identity(rng, dtype):
    image = torch.from_numpy(rng.random((2, 3, 19, 41))).to(dtype)
    sigma = torch.zeros(2, 1, 19, 41, dtype=dtype)
    sigma[..., 4:9, 3:30] = 1e-7  # radius still 0
    sigma[1, :, 10:, 20:] = 1.5  # mixed groups: blurred and untouched lanes side by side
    out = native_blur(image, sigma)
    untouched = radius_map(sigma) == 0
    assert torch.equal(out[untouched.expand_as(out)], image[untouched.expand_as(image)])
    assert not torch.isnan(out).any()


@needs_kernel
def test_constant_image_stays_constant(rng):
    value = float(rng.random())
    image = torch.full((1, 3, 33, 47), value)
    sigma = torch.from_numpy(rng.uniform(0.0, 8.0, (1, 1, 33, 47))).float()
    torch.testing.assert_close(native_blur(image, sigma), image, atol=EXACT[torch.float32], rtol=0)


@needs_kernel
def test_noncontiguous_inputs(rng):
    base = torch.from_numpy(rng.random((2, 30, 23, 3))).float()
    image = base.permute(0, 3, 2, 1)  # (2, 3, 23, 30), channels-last strides
    assert not image.is_contiguous()
    sigma = torch.from_numpy(rng.uniform(0.0, 3.0, (2, 1, 30, 23))).float().transpose(-2, -1)
    expected = native_blur(image.contiguous(), sigma.contiguous())
    torch.testing.assert_close(native_blur(image, sigma), expected, atol=0, rtol=0)
    # blur_tile itself with strided views of every argument.
    radius = radius_map(sigma)
    halo = int(radius.max())
    padded = read_window(image, -halo, 23 + halo, -halo, 30 + halo, "reflect")
    wide = torch.zeros(2, 3, padded.shape[-2], 2 * padded.shape[-1])
    wide[..., ::2] = padded
    strided_radius = radius.transpose(-2, -1).contiguous().transpose(-2, -1)
    out = native.blur_tile(TileInput(wide[..., ::2], sigma, strided_radius, halo, budget=1))
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


@needs_kernel
def test_threads_give_the_same_result(rng):
    image = torch.from_numpy(rng.random((2, 3, 150, 203))).float()
    sigma = torch.from_numpy(rng.uniform(0.0, 3.0, (2, 1, 150, 203))).float()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = native_blur(image, sigma)
        torch.set_num_threads(3)
        parallel = native_blur(image, sigma)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(serial, parallel)


@needs_kernel
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() of a threaded process
def test_forked_child_can_blur(rng):
    """A child forked after the thread pool started gets a pool of its own (else it hangs).

    The child only calls blur_tile: torch's own parallel ops may hang after fork.
    """
    sigma = torch.full((1, 1, 64, 64), 4.0)  # radius 12: enough work for the thread pool
    radius = radius_map(sigma)
    padded = torch.from_numpy(rng.random((1, 1, 88, 88))).float()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = native.blur_tile(TileInput(padded, sigma, radius, 12, budget=1))
        assert library._pool is not None

        def child() -> None:
            out = native.blur_tile(TileInput(padded, sigma, radius, 12, budget=1))
            os._exit(0 if torch.equal(out, expected) else 1)

        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        process.join(60)
        if process.is_alive():
            process.kill()
            pytest.fail("the forked child hung in the native backend")
        assert process.exitcode == 0
    finally:
        torch.set_num_threads(threads)


@needs_kernel
def test_bad_radius_raises():
    padded = torch.zeros(1, 1, 20, 20)
    sigma = torch.ones(1, 1, 16, 16)
    radius = torch.full((1, 1, 16, 16), 3)
    with pytest.raises(ValueError, match="radius"):
        native.blur_tile(TileInput(padded, sigma, radius, 2))
    with pytest.raises(ValueError, match="expected padded"):
        native.blur_tile(TileInput(padded, sigma[..., 1:], radius[..., 1:], 2))


@needs_kernel
def test_weight_exp_is_within_two_ulp():
    kernels = library.kernels()
    assert not isinstance(kernels, str)
    x = -np.concatenate([np.linspace(0.0, 707.9, 20_001), np.geomspace(1e-300, 1.0, 2_001)])
    y = np.empty_like(x)
    kernels.exp(x.size, x.ctypes.data, y.ctypes.data)
    expected = np.array([math.exp(v) for v in x])
    assert np.all(np.abs(y - expected) <= 2 * np.spacing(expected))
    far = np.array([-708.5, -1e4, -np.inf])
    out = np.empty_like(far)
    kernels.exp(far.size, far.ctypes.data, out.ctypes.data)
    assert np.all(out == 0.0)


def test_not_available_on_other_devices():
    assert "cpu" in str(native.available(torch.device("meta")))


@needs_kernel
def test_registered_and_used_by_name(rng):
    image = torch.from_numpy(rng.random((3, 21, 34))).float()
    out = adaptive_blur(image, 1.7, backend="native")
    expected = adaptive_blur(image, 1.7, backend="reference")
    torch.testing.assert_close(out, expected, atol=EXACT[torch.float32], rtol=0)


# ---- the compile cache -------------------------------------------------------------------


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@needs_kernel
def test_second_build_reuses_the_cache(tmp_path):
    first = build.build_library(tmp_path)
    assert first.compiled and first.path.exists()
    stamp = first.path.stat().st_mtime_ns
    second = build.build_library(tmp_path)
    assert not second.compiled
    assert second.path == first.path and second.path.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no temporaries left


@needs_kernel
def test_available_loads_from_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(library, "_loaded", {})
    monkeypatch.setenv("ADAPTIVEBLUR_CACHE_DIR", str(tmp_path))
    assert native.available(CPU) is None
    assert len(list(tmp_path.glob("adaptiveblur_native-*.so"))) == 1


@needs_kernel
def test_damaged_cache_file_is_rebuilt(tmp_path):
    path = build.build_library(tmp_path).path  # built, never loaded by this process
    path.unlink()
    path.write_bytes(b"not a shared library")
    library = build.open_library(path)
    assert library.adaptiveblur_abi_version() == build.ABI_VERSION
    assert path.read_bytes()[:4] != b"not "


@needs_kernel
@pytest.mark.skipif(os.name != "posix", reason="uses a shell script as the compiler")
def test_falls_back_without_march_native(tmp_path, monkeypatch):
    compiler = build.compiler_command()
    wrapper = _script(
        tmp_path / "picky-cc",
        'for a in "$@"; do [ "$a" = -march=native ] && { echo "error: no -march=native" >&2; exit 1; }; done\n'
        f'exec {" ".join(compiler)} "$@"',
    )
    monkeypatch.setenv("CC", str(wrapper))
    made = build.build_library(tmp_path / "cache")
    assert made.compiled and "-march=native" not in made.flags


@pytest.mark.skipif(os.name != "posix", reason="uses a shell script as the compiler")
@pytest.mark.parametrize(
    ("compiler", "message"),
    [
        ("/nonexistent/cc", "was not found"),
        ('gcc "', "cannot be parsed"),
        ("FAILING", "does not work"),
        ("BROKEN", "failed to build"),
    ],
)
def test_broken_compiler_is_a_reason_not_an_exception(tmp_path, monkeypatch, compiler, message):
    if compiler == "FAILING":
        compiler = str(_script(tmp_path / "failing-cc", "echo 'cc: fatal error' >&2; exit 1"))
    elif compiler == "BROKEN":  # runs, but every compile fails
        compiler = str(
            _script(
                tmp_path / "broken-cc",
                '[ "$1" = --version ] && { echo "broken 1.0"; exit 0; }\necho "error: broken" >&2; exit 1',
            )
        )
    monkeypatch.setattr(library, "_loaded", {})
    monkeypatch.setenv("CC", compiler)
    monkeypatch.setenv("ADAPTIVEBLUR_CACHE_DIR", str(tmp_path / "cache"))
    reason = native.available(CPU)
    assert reason is not None and message in reason
    with pytest.raises(DeviceUnavailableError, match="native"):
        native.blur_tile(
            TileInput(
                torch.zeros(1, 1, 3, 3),
                torch.ones(1, 1, 1, 1),
                torch.ones(1, 1, 1, 1, dtype=torch.int64),
                1,
            )
        )


def test_missing_source_is_a_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(library, "_loaded", {})
    monkeypatch.setattr(build, "SOURCES", {"adaptiveblur_native.c": tmp_path / "_native.c"})
    reason = native.available(CPU)
    assert reason is not None and "source is missing" in reason


def test_empty_cc_means_the_default_compiler(monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    default = build.compiler_command() if build.shutil.which("cc") else None
    monkeypatch.setenv("CC", "  ")
    if default is None:
        pytest.skip("no cc on PATH")
    assert build.compiler_command() == default


def test_no_compiler_on_path(tmp_path, monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(build.NativeBuildError, match="no C compiler found"):
        build.compiler_command()


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTIVEBLUR_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert build.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("ADAPTIVEBLUR_CACHE_DIR")
    assert build.cache_dir() == tmp_path / "xdg" / "adaptiveblur"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert build.cache_dir() == Path.home() / ".cache" / "adaptiveblur"
