"""Shared fixtures: devices (CUDA skipped where absent), a fresh random generator (--seed
replays one), a working folder, and --runslow."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Without CUDA the Triton kernels run under Triton's interpreter. Set before any module
# decorates a kernel (torch.compile imports triton, and the ops import theirs when loaded).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from adaptiveblur.ops.registry import BACKENDS  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False, help="also run tests marked slow"
    )
    parser.addoption(
        "--seed",
        type=int,
        default=None,
        help="seed every test's random generator with this (to replay a failure)",
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
def cuda() -> torch.device:
    """The CUDA device (the test is skipped where there is none)."""
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return torch.device("cuda")


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the current directory, so paths and messages are short."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded afresh each run, or with ``--seed``; a failure shows the seed."""
    seed = request.config.getoption("--seed")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**32))
    print(f"random seed: {seed} (replay with --seed {seed})")
    return np.random.default_rng(seed)


@pytest.fixture(params=[b.name for b in BACKENDS if b.method == "exact"])
def backend(request: pytest.FixtureRequest, device: str) -> str:
    """Every exact backend in the registry, on every device where it runs (else skipped)."""
    named = next(b for b in BACKENDS if b.name == request.param)
    reason = named.unavailable_reason(torch.device(device))
    if reason is not None:
        pytest.skip(f"{request.param} on {device}: {reason}")
    return str(request.param)
