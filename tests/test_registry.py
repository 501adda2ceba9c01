"""The backend registry: declared capabilities, auto choice, forced backends, clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from adaptiveblur import DeviceUnavailableError, InvalidParameterError, adaptive_blur
from adaptiveblur.ops import registry
from adaptiveblur.ops.registry import BACKENDS, choose_backend, fused_exact

CPU = torch.device("cpu")
BY_NAME = {b.name: b for b in BACKENDS}


def test_reference_is_always_available():
    assert choose_backend("exact", "reference", CPU).backend.name == "reference"


def test_declared_capabilities():
    assert all(b.dtypes >= {"float32", "float64"} for b in BACKENDS)
    assert [b.name for b in BACKENDS if b.differentiable] == ["triton", "native", "reference"]
    assert [b.name for b in BACKENDS if b.graph_safe] == ["triton"]
    assert {b.name for b in BACKENDS if b.fused} == {"triton", "native"}


def test_auto_prefers_a_fused_backend_and_falls_back_to_reference():
    chosen = choose_backend("exact", None, CPU).backend
    fused = [b for b in BACKENDS if b.fused and b.unavailable_reason(CPU) is None]
    assert chosen.name == (fused[0].name if fused else "reference")


def test_autograd_goes_to_a_differentiable_backend():
    for method in ("exact", "fast", "auto"):
        assert choose_backend(method, None, CPU, needs_grad=True).backend.differentiable
    for backend in BACKENDS:
        if backend.unavailable_reason(CPU) is None:
            chosen = choose_backend("auto", backend.name, CPU, needs_grad=True)
            assert chosen.backend.differentiable, backend.name


def test_an_undeclared_dtype_goes_to_the_reference(monkeypatch):
    # A fused backend restricted to float32 hands float64 to the reference.
    if choose_backend("exact", None, CPU).backend.name != "native":
        pytest.skip("the native kernel does not build here")
    narrowed = dataclasses.replace(BY_NAME["native"], dtypes=frozenset({"float32"}))
    entries = tuple(narrowed if b.name == "native" else b for b in BACKENDS)
    monkeypatch.setattr(registry, "BACKENDS", entries)
    assert choose_backend("exact", "native", CPU).backend is narrowed
    assert choose_backend("exact", "native", CPU, dtype=torch.float64).backend.name == "reference"
    assert choose_backend("exact", None, CPU, dtype=torch.float64).backend.name == "reference"
    assert fused_exact(CPU, torch.float64) is None
    assert fused_exact(CPU, torch.float32) is narrowed


def test_fused_exact_is_the_auto_exact_choice():
    for dtype in (torch.float32, torch.float64):
        fused = fused_exact(CPU, dtype)
        chosen = choose_backend("exact", None, CPU, dtype=dtype).backend
        assert (fused or BY_NAME["reference"]) is chosen


def test_every_available_backend_agrees_with_reference(rng):
    image = torch.from_numpy(rng.random((3, 19, 23))).float()
    sigma = torch.from_numpy(rng.uniform(0, 3, (19, 23))).float()
    expected = adaptive_blur(image, sigma, backend="reference")
    for backend in BACKENDS:
        if backend.unavailable_reason(CPU) is not None or backend.method != "exact":
            continue
        out = adaptive_blur(image, sigma, method=backend.method, backend=backend.name)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0, msg=backend.name)


def test_unknown_names_raise():
    with pytest.raises(InvalidParameterError, match="method"):
        choose_backend("approximate", None, CPU)
    with pytest.raises(InvalidParameterError, match="backend"):
        choose_backend("exact", "opencl", CPU)


def test_backend_of_another_method_raises():
    with pytest.raises(InvalidParameterError, match="implements the fast method"):
        choose_backend("exact", "levels", CPU)


def test_named_backend_that_cannot_run_here_raises():
    with pytest.raises(DeviceUnavailableError, match="not available"):
        choose_backend("exact", "triton", CPU)
