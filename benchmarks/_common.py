"""What the benchmark scripts share: the sample photo, timers, option lists, the machine line.

Imported by the scripts beside it (``from _common import ...``: a script's own folder is on
``sys.path``). torch, numpy and pillow are imported inside the functions that use them, so
that ``bench_memory.py``'s parent process stays small: on Linux a child's ``ru_maxrss``
starts at its parent's resident size when it is forked.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "sample_images" / "astronaut.jpg"


def log(message: str) -> None:
    """Progress, on stderr (stdout is for the table)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the sample photo


def load_photo() -> Image.Image:
    """``sample_images/astronaut.jpg`` (512x512) as an RGB pillow image."""
    from PIL import Image

    with Image.open(PHOTO) as source:
        return source.convert("RGB")


def photo_image(width: int, height: int) -> Image.Image:
    """The sample photo resized (bicubic) to ``width x height``, RGB."""
    from PIL import Image

    return load_photo().resize((width, height), Image.Resampling.BICUBIC)


# Gaussian noise (in 8-bit steps) on the noisy photo: sensor-like grain that the upscaled
# sample photo lacks, and that PNG cannot squeeze away.
PHOTO_NOISE = 12.0


def noisy_photo_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """The sample photo resized (bicubic) to ``width x height`` with Gaussian grain, RGB.

    Upscaled to 12 MP the photo alone is smoother than any real photo of that size, which
    flatters PNG codecs; the grain (:data:`PHOTO_NOISE` steps, seeded) makes it photo-like.
    """
    import numpy as np
    from PIL import Image

    values = np.asarray(photo_image(width, height), dtype=np.float32)
    values += np.random.default_rng(seed).normal(0.0, PHOTO_NOISE, values.shape).astype(np.float32)
    return Image.fromarray(values.clip(0, 255).round().astype(np.uint8))


def photo_tensor(width: int, height: int) -> torch.Tensor:
    """The sample photo resized (bicubic): ``(3, height, width)`` float32 in [0, 1], on the CPU."""
    import numpy as np
    import torch

    pixels = np.asarray(photo_image(width, height), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def luma(image: torch.Tensor) -> torch.Tensor:
    """Rec. 709 luma of ``(..., 3, H, W)`` RGB in [0, 1]: ``(..., H, W)``, clamped to [0, 1]."""
    import torch

    from adaptiveblur.color import REC709_LUMA

    weights = torch.tensor(REC709_LUMA, dtype=image.dtype, device=image.device)
    return (image * weights[:, None, None]).sum(-3).clamp(0.0, 1.0)


# ---------------------------------------------------------------- option lists


def parse_size(text: str) -> tuple[int, int]:
    """``"WIDTHxHEIGHT"`` -> ``(width, height)``; raises :class:`argparse.ArgumentTypeError`."""
    width, _, height = text.strip().lower().partition("x")
    try:
        size = int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return size


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """A comma list of ``WIDTHxHEIGHT``."""
    return [parse_size(part) for part in text.split(",") if part.strip()]


def parse_floats(text: str) -> list[float]:
    """A comma list of positive finite numbers (sigmas); raises ``ArgumentTypeError``."""
    return _positive_list(text, float, "numbers")


def parse_ints(text: str) -> list[int]:
    """A comma list of positive integers (``--jobs``, ``--processes``)."""
    return _positive_list(text, int, "integers")


def _positive_list(text: str, convert: Callable[[str], Any], kind: str) -> list[Any]:
    try:
        values = [convert(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of {kind}, got {text!r}") from None
    if not values or any(not 0 < value < float("inf") for value in values):
        raise argparse.ArgumentTypeError(f"expected positive {kind}, got {text!r}")
    return values


def parsed(parser: argparse.ArgumentParser, parse: Callable[[str], Any], text: str) -> Any:
    """``parse(text)``, a parse error reported as a usage error of ``parser`` (exit 2)."""
    try:
        return parse(text)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))


# ---------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Seconds of ``runs`` calls of one function, and what its last call returned."""

    wall: float  # median wall seconds
    best: float  # fastest run (the least disturbed by other work on the machine)
    cpu: float  # median process CPU seconds (all threads)
    result: Any


def measure(
    call: Callable[[], Any],
    runs: int,
    *,
    warm_up: bool = True,
    device: torch.device | str | None = None,
) -> Timing:
    """Time ``runs`` calls of ``call`` (after one untimed warm-up unless ``warm_up`` is False).

    On a CUDA ``device`` every run starts and ends with a synchronisation, so the wall time
    is the work's, not its queueing.
    """
    result = call() if warm_up else None
    walls, cpus = [], []
    for _ in range(runs):
        synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        synchronize(device)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return Timing(statistics.median(walls), min(walls), statistics.median(cpus), result)


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the work queued on a CUDA ``device``; nothing on other devices."""
    if device is not None and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- the float64 reference


def exact_float64_backend(device: torch.device | str = "cpu") -> str:
    """The backend :func:`exact_float64` uses on ``device``: native on a CPU where it builds."""
    import torch

    from adaptiveblur.ops import native

    device = torch.device(device)
    return "native" if device.type == "cpu" and native.available(device) is None else "reference"


def exact_float64(
    image: torch.Tensor, sigma: torch.Tensor, y0: int = 0, x0: int = 0
) -> torch.Tensor:
    """The exact blur in float64 of the pixels ``sigma (h, w)`` covers, at ``(y0, x0)``.

    ``image`` is ``(C, H, W)`` (or ``(B, C, H, W)``); mirrored borders. The input around
    the crop is read from the whole image, so the result equals the whole image's blur
    there. Computed on the image's device, by :func:`exact_float64_backend`'s backend.

    Returns:
        ``(C, h, w)`` (or ``(B, C, h, w)``) float64.
    """
    import torch.nn.functional as F

    from adaptiveblur import adaptive_blur
    from adaptiveblur.borders import read_window
    from adaptiveblur.kernels import radius_map

    backend = exact_float64_backend(image.device)
    height, width = sigma.shape[-2:]
    if (y0, x0, height, width) == (0, 0, *image.shape[-2:]):
        return adaptive_blur(image.double(), sigma.double(), backend=backend)
    halo = int(radius_map(sigma.float()).max())
    batched = image.double()[None] if image.dim() == 3 else image.double()
    window = read_window(
        batched, y0 - halo, y0 + height + halo, x0 - halo, x0 + width + halo, "reflect"
    )
    # The halo's own sigma is never read: only the crop's pixels are kept.
    padded_sigma = F.pad(sigma.double(), (halo, halo, halo, halo))
    out = adaptive_blur(window, padded_sigma, backend=backend)[
        ..., halo : -halo or None, halo : -halo or None
    ]
    return out[0] if image.dim() == 3 else out


# ---------------------------------------------------------------- the machine and the CLI


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


def cpu_line() -> str:
    """``MODEL, N logical CPUs (U usable)``."""
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return f"{cpu_model()}, {cores} logical CPUs ({usable} usable)"


def gpu_names() -> str:
    """The GPUs ``nvidia-smi`` lists, comma-separated, or why there are none to name."""
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "(nvidia-smi not available)"
    return ", ".join(listed.strip().splitlines())


def machine_line(device: str = "cpu") -> str:
    """The machine a table was made on: CPU, load average, Python, and the GPUs on ``cuda``."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = f"{cpu_line()}, load average {load:.2f}; Python {platform.python_version()}"
    if str(device).startswith("cuda"):
        text += f"; GPU: {gpu_names()}"
    return text


def adaptiveblur_command() -> list[str]:
    """How to start the CLI: the console script beside this Python, on PATH, else ``-m``."""
    script = Path(sys.executable).with_name("adaptiveblur")
    if script.exists():
        return [str(script)]
    found = shutil.which("adaptiveblur")
    return [found] if found else [sys.executable, "-m", "adaptiveblur"]
