"""The package top: every public name imports from it, lazily, and the import needs no torch."""

from __future__ import annotations

import subprocess
import sys

import adaptiveblur
from tests.helpers import subprocess_env


def test_every_public_name_imports_from_the_top():
    for name in adaptiveblur.__all__:
        assert getattr(adaptiveblur, name) is not None, name
    assert sorted(dir(adaptiveblur)) == sorted(adaptiveblur.__all__)


def test_one_name_per_op():
    """No op is listed twice under two names."""
    objects = [
        getattr(adaptiveblur, name) for name in adaptiveblur.__all__ if name != "__version__"
    ]
    assert len({id(value) for value in objects}) == len(objects)


def test_importing_the_package_and_the_cli_needs_no_torch():
    code = (
        "import sys, adaptiveblur, adaptiveblur.cli, adaptiveblur.io, adaptiveblur.batch.plan; "
        "sys.exit('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), timeout=120)
    assert result.returncode == 0
