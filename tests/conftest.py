"""Shared fixtures: devices (CUDA skipped where absent), a fresh random generator, --runslow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptiveblur.ops.registry import BACKENDS


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """Every device: ``cpu`` always, ``cuda`` where there is one (skipped otherwise)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return str(request.param)


@pytest.fixture
def rng() -> np.random.Generator:
    """A generator seeded afresh each run (the seed is printed on failure)."""
    seed = int(np.random.SeedSequence().entropy % (2**32))
    print(f"random seed: {seed}")
    return np.random.default_rng(seed)


@pytest.fixture(params=[b.name for b in BACKENDS if b.method == "exact"])
def backend(request: pytest.FixtureRequest, device: str) -> str:
    """Every exact backend in the registry, on every device where it runs (else skipped)."""
    named = next(b for b in BACKENDS if b.name == request.param)
    reason = named.unavailable_reason(torch.device(device))
    if reason is not None:
        pytest.skip(f"{request.param} on {device}: {reason}")
    return str(request.param)
