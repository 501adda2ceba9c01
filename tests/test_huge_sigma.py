"""Windows far wider than the image: a clear usage error naming the largest sigma that fits,
never a failed allocation; windows wider than the image within the limit still blur exactly."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from adaptiveblur import adaptive_blur
from adaptiveblur.errors import EXIT_USAGE, InvalidParameterError
from adaptiveblur.kernels import radius_for
from adaptiveblur.tiling import DEFAULT_MAX_MEMORY, check_window, padded_bytes
from tests.helpers import PREFIX, assert_clean_error, cli, files_under, run_subprocess
from tests.oracle import loop_blur

LARGEST = re.compile(r"largest sigma is ([0-9.e+]+)")


def largest_stated(message: str) -> float:
    match = LARGEST.search(message)
    assert match, message
    return float(match.group(1))


def test_check_window_states_a_sigma_that_fits(rng: np.random.Generator) -> None:
    """The sigma the error names fits; a tenth of a pixel more (in radius terms) does not."""
    for _ in range(40):
        rows, cols = int(rng.integers(1, 40)), int(rng.integers(1, 5000))
        planes, truncate = int(rng.integers(1, 5)), float(rng.uniform(1.0, 5.0))
        budget = int(rng.integers(1, 4)) * DEFAULT_MAX_MEMORY
        halo = int(rng.integers(20_000, 10**7))
        with pytest.raises(InvalidParameterError) as raised:
            check_window(rows, cols, planes, 4, halo, budget, truncate=truncate)
        assert raised.value.parameter == "max_memory"
        largest = largest_stated(str(raised.value))
        check_window(
            rows, cols, planes, 4, radius_for(largest, truncate), budget, truncate=truncate
        )
        widest = radius_for(largest, truncate)
        # one more pixel of halo than the widest that fits would not fit (the search is tight
        # to the 0.1 rounding of the stated sigma)
        limit = max(budget, DEFAULT_MAX_MEMORY)
        overshoot = widest + math.ceil(0.1 * truncate) + 1
        assert padded_bytes(rows, cols, overshoot, planes, 4) > limit


def test_check_window_passes_what_fits() -> None:
    check_window(1, 50, 3, 4, 1000, DEFAULT_MAX_MEMORY, truncate=3.0)
    # A small budget is a tiling target: the smallest piece may exceed it up to 1 GiB.
    check_window(1, 50, 3, 4, 1000, 1 << 12, truncate=3.0)


@pytest.mark.parametrize("extra", [[], ["--backend", "reference"], ["--method", "fast"]])
def test_cli_refuses_a_sigma_no_piece_can_hold(work: Path, capsys, extra: list[str]) -> None:
    rng = np.random.default_rng(7)
    PILImage.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(work / "in.png")
    before = files_under(work)
    code, out, err = cli(capsys, "run", "in.png", "out.png", "--max-sigma", "1e6", *extra)
    assert_clean_error(code, out, err, EXIT_USAGE, "largest sigma is")
    assert "--max-memory" in err
    assert files_under(work) == before  # no output, no temporary


def test_the_stated_sigma_follows_the_budget(work: Path, capsys) -> None:
    PILImage.new("L", (50, 40), 128).save(work / "in.png")
    stated = []
    for budget in ("1G", "4G"):
        code, out, err = cli(
            capsys, "run", "in.png", "out.png", "--max-sigma", "1e5", "--max-memory", budget
        )
        assert code == EXIT_USAGE, err
        stated.append(largest_stated(err))
    assert stated[1] > 1.5 * stated[0]


def test_the_library_refuses_too(rng: np.random.Generator) -> None:
    image = torch.from_numpy(rng.random((3, 9, 11), dtype=np.float32))
    with pytest.raises(InvalidParameterError, match="largest sigma"):
        adaptive_blur(image, torch.full((9, 11), 1e6), backend="native")


def test_subprocess_is_quick_and_clean(work: Path) -> None:
    """The command line answers at once (no allocation attempted), with no traceback."""
    PILImage.new("RGB", (50, 40), (10, 200, 30)).save(work / "in.png")
    done = run_subprocess(
        ["-m", "adaptiveblur", "run", "in.png", "out.png", "--max-sigma", "1e6"], work
    )
    assert done.returncode == EXIT_USAGE
    text = done.stderr.decode()
    assert text.startswith(PREFIX) and "Traceback" not in text and len(text.splitlines()) == 1
    assert not (work / "out.png").exists()


@pytest.mark.parametrize("border", ["reflect", "replicate", "constant"])
def test_windows_wider_than_the_image_within_the_limit_are_exact(
    rng: np.random.Generator, border: str
) -> None:
    """A 3x5 image under windows of radius up to 150 (30 times its width): the oracle's loop."""
    image = rng.random((3, 3, 5))
    sigma = rng.uniform(0.0, 50.0, (3, 5))
    got = adaptive_blur(
        torch.from_numpy(image.astype(np.float32)),
        torch.from_numpy(sigma.astype(np.float32)),
        backend="native",
        border=border,
    )
    want = loop_blur(image, sigma.astype(np.float32).astype(np.float64), border=border)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=0)
