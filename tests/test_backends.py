"""The backend registry: auto choice, forced backends, clear errors."""

from __future__ import annotations

import pytest
import torch

from adaptiveblur import DeviceUnavailableError, InvalidParameterError, adaptive_blur
from adaptiveblur.ops.backends import BACKENDS, choose_backend

CPU = torch.device("cpu")


def test_reference_is_always_available():
    assert choose_backend("exact", "reference", CPU).backend.name == "reference"


def test_auto_prefers_a_fused_backend_and_falls_back_to_reference():
    chosen = choose_backend("exact", None, CPU).backend
    fused = [
        b
        for b in BACKENDS
        if b.method == "exact" and b.name != "reference" and b.unavailable_reason(CPU) is None
    ]
    assert chosen.name == (fused[0].name if fused else "reference")


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
    fast = [b for b in BACKENDS if b.method == "fast"]
    if not fast:
        pytest.skip("no fast backend registered")
    with pytest.raises(InvalidParameterError, match="implements the fast method"):
        choose_backend("exact", fast[0].name, CPU)


def test_named_backend_that_cannot_run_here_raises():
    cuda_only = [b for b in BACKENDS if b.device_types == frozenset({"cuda"})]
    if not cuda_only:
        pytest.skip("no CUDA-only backend registered")
    with pytest.raises(DeviceUnavailableError, match="not available"):
        choose_backend(cuda_only[0].method, cuda_only[0].name, CPU)
