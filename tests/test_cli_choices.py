"""Command-line conventions: fixed choices listed and completed, case-insensitive; ``-V``."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from adaptiveblur import __version__
from adaptiveblur.borders import BORDER_MODES
from adaptiveblur.errors import EXIT_USAGE
from adaptiveblur.ops.registry import BACKEND_NAMES, METHODS
from adaptiveblur.sigma import CHANNELS
from tests.helpers import assert_clean_error, cli, pixels_of, run_subprocess, subprocess_env

CHOICES = {
    "--border": sorted(BORDER_MODES),
    "--channel": sorted(CHANNELS),
    "--method": sorted(METHODS),
    "--backend": sorted(["auto", *BACKEND_NAMES]),
}


def test_short_version(capsys):
    code, out, _ = cli(capsys, "-V")
    assert code == 0 and out.strip() == f"adaptiveblur {__version__}"


@pytest.mark.parametrize("command", ["run", "batch"])
def test_help_lists_the_choices(capsys, command):
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0
    for flag, values in CHOICES.items():
        listed = next(line for line in out.splitlines() if line.strip().startswith(flag + " "))
        assert sorted(listed.split("<", 1)[1].split(">", 1)[0].split("|")) == values, listed
    assert "png|jpg|jpeg" in out.replace("\n", "")


def test_main_help_offers_completion(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and "--install-completion" in out


@pytest.mark.parametrize(("flag", "values"), list(CHOICES.items()))
def test_completion_offers_the_choices(work, flag, values):
    env = subprocess_env() | {
        "_ADAPTIVEBLUR_COMPLETE": "complete_bash",
        "COMP_WORDS": f"adaptiveblur run in.png out.png {flag} ",
        "COMP_CWORD": "5",
    }
    done = run_subprocess(["-m", "adaptiveblur"], work, env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert sorted(done.stdout.decode().split()) == values


def test_choices_ignore_case(work, capsys):
    rng = np.random.default_rng(3)
    PILImage.fromarray(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)).save(work / "in.png")
    base = ["run", "in.png", "--max-sigma", "2", "-q"]
    assert cli(capsys, *base[:2], "lower.png", *base[2:], "--border", "replicate")[0] == 0
    assert (
        cli(capsys, *base[:2], "upper", *base[2:], "--border", "REPLICATE", "--format", "PNG")[0]
        == 0
    )
    assert (pixels_of(work / "lower.png") == pixels_of(work / "upper")).all()
    assert not (pixels_of(work / "lower.png") == np.asarray(PILImage.open(work / "in.png"))).all()


def test_an_unknown_choice_is_a_usage_error(work, capsys):
    PILImage.new("RGB", (5, 4)).save(work / "in.png")
    code, out, err = cli(capsys, "run", "in.png", "o.png", "--max-sigma", "1", "--border", "mirror")
    assert_clean_error(code, out, err, EXIT_USAGE, "'mirror' is not one of")
