"""What does each route cost? The fused native path by sigma, and a GPU command before it blurs.

``adaptiveblur.engine`` chooses between the fused CPU path and torch (a GPU) by a cost
model; this script measures its constants on the machine it runs on.

* ``--cost-model``: the fused path (``render_samples``, in this process, after a warm-up)
  on the noisy photo (``_common.noisy_photo_image``) with ``sigma = S * Rec. 709 luma`` at
  each ``--sigmas``, median of ``--runs``; then the least-squares fit of
  ``t = pixels * channels * (c0 + (R + 1)^2) / (rate * workers)`` (R the radius of S)
  against the engine's ``CPU_PIXEL_COST`` (c0) and ``CPU_RATE``.
* ``--start``: whole processes, median of ``--runs``: ``python -c "import torch"``,
  ``python -c "import torch; torch.zeros(1, device='cuda')"`` (CUDA context), and
  ``adaptiveblur run IN OUT --max-sigma 4 --quiet`` on the noisy 1 MP PNG with ``--device``
  cpu, cuda and auto (the difference between cuda and cpu is what a GPU command pays
  before its blur; the engine's ``GPU_START_SECONDS``).

    python benchmarks/bench_route.py --cost-model
    python benchmarks/bench_route.py --start --runs 5      # on a GPU host
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (  # benchmarks/_common.py, beside this script
    adaptiveblur_command,
    log,
    machine_line,
    noisy_photo_image,
    parse_floats,
    parsed,
)

from adaptiveblur import engine, io
from adaptiveblur.kernels import radius_for
from adaptiveblur.native import library
from adaptiveblur.native.render import render_samples
from adaptiveblur.settings import BlurSettings


def cost_model(sigmas: list[float], runs: int, size: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "photo.png"
        noisy_photo_image(size, size).save(path)
        image = io.load_image(path, integers=True)
    workers = library.worker_count()
    units, seconds = [], []
    print(f"fused native path, noisy photo {size}x{size}, sigma = S * luma, {workers} workers")
    print("| S | R | median s |")
    print("|---:|---:|---:|")
    for sigma in sigmas:
        settings = BlurSettings(max_sigma=sigma)
        render_samples(image, settings, bit_depth=8)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            render_samples(image, settings, bit_depth=8)
            times.append(time.perf_counter() - started)
        radius = radius_for(sigma)
        units.append((radius + 1) ** 2)
        seconds.append(statistics.median(times))
        print(f"| {sigma:g} | {radius} | {seconds[-1]:.4f} |")
    # t * workers / (pixels * channels) = (c0 + u) / rate: a line in u.
    per_unit = np.array(seconds) * workers / (size * size * 3)
    slope, intercept = np.polyfit(np.array(units, dtype=float), per_unit, 1)
    rate, c0 = 1.0 / slope, intercept / slope
    print(f"\nfit: CPU_RATE {rate:.3g} per worker-second, CPU_PIXEL_COST {c0:.0f}")
    print(f"engine: CPU_RATE {engine.CPU_RATE:.3g}, CPU_PIXEL_COST {engine.CPU_PIXEL_COST:.0f}")


def whole(command: list[str], runs: int, cwd: Path) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def start(runs: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        noisy_photo_image(1000, 1000).save(folder / "in.png")
        rows = {
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "python -c 'import torch; CUDA context'": [
                sys.executable,
                "-c",
                "import torch; torch.zeros(1, device='cuda'); torch.cuda.synchronize()",
            ],
        }
        for device in ("cpu", "cuda", "auto"):
            rows[f"adaptiveblur run (1 MP, S 4) --device {device}"] = [
                *adaptiveblur_command(),
                "run", "in.png", "out.png", "--max-sigma", "4", "--quiet", "--device", device,
            ]  # fmt: skip
        print("| command | median s |")
        print("|---|---:|")
        for name, command in rows.items():
            log(name)
            try:
                print(f"| {name} | {whole(command, runs, folder):.3f} |")
            except subprocess.CalledProcessError as error:
                print(f"| {name} | failed ({error.returncode}) |")
    print(f"\nengine: GPU_START_SECONDS {engine.GPU_START_SECONDS:g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cost-model", action="store_true", help="fit the CPU constants")
    parser.add_argument("--start", action="store_true", help="whole-process start-up times")
    parser.add_argument("--sigmas", default="0.5,1,2,4,8,16,32", help="max sigmas (cost model)")
    parser.add_argument("--size", type=int, default=1000, help="photo side (cost model)")
    parser.add_argument("--runs", type=int, default=5, help="runs per row (median)")
    args = parser.parse_args()
    if not (args.cost_model or args.start):
        parser.error("expected --cost-model and/or --start")
    print(machine_line("cuda" if args.start else "cpu"))
    if args.cost_model:
        cost_model(parsed(parser, parse_floats, args.sigmas), args.runs, args.size)
    if args.start:
        start(args.runs)


if __name__ == "__main__":
    main()
