"""The command line's allocator tuning: freed large blocks are reused, not faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from adaptiveblur.cli import allocator, main

# Frees a 64 MiB tensor, then makes a 32 MiB one (room enough in the freed block) and
# prints the page faults of that allocation and its first touch, tuned or not.
SCRIPT = """
import resource, sys
import torch
from adaptiveblur.cli import allocator
applied = allocator.keep_freed_memory() if sys.argv[1] == "tuned" else None
block = torch.ones(16 << 20)
del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = torch.ones(8 << 20)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    applied, count = result.stdout.split()
    return applied, int(count)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="the tuning exists for glibc on Linux only",
)
def test_freed_blocks_are_reused_after_tuning():
    pages = (32 << 20) // 4096
    _, default = faults("default")
    if default < pages // 2:  # e.g. transparent huge pages for every mapping
        pytest.skip(f"the default allocator faults in only {default} of {pages} pages here")
    applied, tuned = faults("tuned")
    assert applied == "True"
    assert tuned < pages // 20  # tuned: the freed block's pages are reused


@pytest.mark.parametrize(("method", "tuned"), [("fast", True), ("exact", False)])
def test_the_command_line_tunes_it_for_the_fast_method_only(tmp_path, monkeypatch, method, tuned):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(True) or True)
    source, dest = tmp_path / "in.png", tmp_path / "out.png"
    values = np.random.default_rng().integers(0, 256, (9, 11, 3), dtype=np.uint8)
    Image.fromarray(values).save(source)
    code = main(["run", str(source), str(dest), "--max-sigma", "4", "--method", method, "--quiet"])
    assert code == 0 and dest.exists()
    assert calls == ([True] if tuned else [])
