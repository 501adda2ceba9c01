"""What the benchmark scripts here share: the machine they ran on, and how to start the CLI."""

from __future__ import annotations

import platform
import shutil
import sys
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def adaptiveblur_command() -> list[str]:
    """How to start the CLI: the console script beside this Python, on PATH, else ``-m``."""
    script = Path(sys.executable).with_name("adaptiveblur")
    if script.exists():
        return [str(script)]
    found = shutil.which("adaptiveblur")
    return [found] if found else [sys.executable, "-m", "adaptiveblur"]
