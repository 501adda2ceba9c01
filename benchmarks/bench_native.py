"""How fast is the native (compiled C) backend, and how much faster than the reference?

Prints a table of median wall times (and process CPU time, which is what to compare on a
shared machine) for ``adaptive_blur(..., backend="native")`` on RGB photos whose sigma
follows their luminance (``sigma = max_sigma * luma``), on uniformly random sigma and on
the worst case (constant sigma), plus the kernel alone (``blur_tile`` on the padded
image) and the first-call (compile) and cached start-up times.

The photo is ``sample_images/astronaut.jpg`` resized (bicubic) to the size asked for.
The reference backend is slow: it is timed on the 1 MP image at max-sigma 4 (its cost
depends only on the largest sigma, not on the map), and scaled by the pixel count for
the 12 MP rows.

    python benchmarks/bench_native.py                 # the full table (~2 minutes)
    python benchmarks/bench_native.py --quick         # 1 MP rows only, no reference
    python benchmarks/bench_native.py --threads 2 --runs 7
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable

import torch
from _common import (  # benchmarks/_common.py, beside this script
    Timing,
    luma,
    machine_line,
    measure,
    photo_tensor,
)

from adaptiveblur import adaptive_blur
from adaptiveblur.borders import read_window
from adaptiveblur.kernels import DEFAULT_TRUNCATE, radius_map
from adaptiveblur.native import library
from adaptiveblur.ops import native
from adaptiveblur.ops.tile import TileInput


def sigma_maps(image: torch.Tensor, max_sigma: float) -> dict[str, torch.Tensor]:
    luminance = luma(image)
    generator = torch.Generator().manual_seed(0)
    return {
        "photo luma": max_sigma * luminance,
        "uniform random": max_sigma * torch.rand(luminance.shape, generator=generator),
        "constant": torch.full_like(luminance, max_sigma),
    }


def whole_blur(image: torch.Tensor, sigma: torch.Tensor) -> Callable[[], object]:
    """The public call, engine included (validation, tiling, borders, stitching)."""
    return lambda: adaptive_blur(image, sigma, backend="native")


def kernel_only(image: torch.Tensor, sigma: torch.Tensor) -> Callable[[], object]:
    """The backend's share of a one-tile call: ``blur_tile`` on the padded image."""
    batched, sigma4 = image[None], sigma[None, None]
    radius = radius_map(sigma4, DEFAULT_TRUNCATE)
    halo = int(radius.max())
    height, width = sigma.shape
    padded = read_window(batched, -halo, height + halo, -halo, width + halo, "reflect")
    tile = TileInput(padded, sigma4, radius, halo)
    return lambda: native.blur_tile(tile)


def startup_times() -> tuple[float, float]:
    """Seconds for ``available()`` in a fresh process: with an empty cache, then cached."""
    code = (
        "import time, torch; t = time.perf_counter(); from adaptiveblur.ops import native; "
        "assert native.available(torch.device('cpu')) is None, native.available(torch.device('cpu')); "
        "print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "ADAPTIVEBLUR_CACHE_DIR": cache}
        seconds = [
            float(
                subprocess.run(
                    [sys.executable, "-c", code],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            for _ in range(2)
        ]
    return seconds[0], seconds[1]


def machine() -> str:
    kernels = library.kernels()
    lanes = "" if isinstance(kernels, str) else f", {kernels.lanes['float32']} float32 lanes"
    flags = "" if isinstance(kernels, str) else " ".join(kernels.build.flags) or "(cached build)"
    return (
        f"{machine_line()}; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads{lanes}; compiler flags {flags}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument(
        "--runs", type=int, default=5, help="timed runs per row (median; default 5)"
    )
    parser.add_argument(
        "--reference-runs", type=int, default=1, help="timed reference runs (default 1)"
    )
    parser.add_argument("--quick", action="store_true", help="1 MP rows only, no reference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reason = native.available(torch.device("cpu"))
    if reason is not None:
        sys.exit(f"native backend not available: {reason}")
    compile_s, cached_s = startup_times()
    print(f"machine: {machine()}")
    print(f"first call (compile + load): {compile_s:.2f} s; cached (load): {cached_s:.3f} s\n")

    rows: list[tuple[str, str, str, float, Timing, Timing, float | None]] = []
    reference_1mp: float | None = None
    if not args.quick:
        image = photo_tensor(1000, 1000)
        sigma = sigma_maps(image, 4.0)["photo luma"]
        reference_1mp = measure(
            lambda: adaptive_blur(image, sigma, backend="reference"), args.reference_runs
        ).wall

    sizes = [(1000, 1000, (2.0, 4.0, 8.0, 16.0))] + ([] if args.quick else [(3000, 4000, (4.0,))])
    for height, width, max_sigmas in sizes:
        image = photo_tensor(width, height)
        for max_sigma in max_sigmas:
            for name, sigma in sigma_maps(image, max_sigma).items():
                if height * width > 1_000_000 or name == "photo luma" or max_sigma == 4.0:
                    total = measure(whole_blur(image, sigma), args.runs)
                    kernel = measure(kernel_only(image, sigma), args.runs)
                    scale = height * width / 1e6
                    reference = (
                        reference_1mp * scale if reference_1mp and max_sigma == 4.0 else None
                    )
                    mean_radius = float(radius_map(sigma).float().mean())
                    rows.append(
                        (
                            f"{width}x{height}",
                            name,
                            f"{max_sigma:g}",
                            mean_radius,
                            total,
                            kernel,
                            reference,
                        )
                    )

    header = (
        f"{'image':>9} {'sigma map':>15} {'max':>4} {'mean r':>6} |"
        f" {'blur med':>8} {'best':>6} {'cpu':>6} | {'kernel med':>10} {'best':>6} {'cpu':>6} |"
        f" {'reference':>9} {'speed-up':>8}"
    )
    print(header)
    print("-" * len(header))
    for size, name, max_text, mean_radius, total, kernel, reference in rows:
        reference_text = (
            f"{reference:9.2f} {reference / total.wall:7.0f}x" if reference else f"{'':9} {'':8}"
        )
        print(
            f"{size:>9} {name:>15} {max_text:>4} {mean_radius:6.2f} |"
            f" {total.wall:8.3f} {total.best:6.3f} {total.cpu:6.3f} |"
            f" {kernel.wall:10.3f} {kernel.best:6.3f} {kernel.cpu:6.3f} | {reference_text}"
        )
    print(
        f"\nseconds; 'med' = median of {args.runs} runs, 'best' = fastest run, 'cpu' = median process "
        "CPU time of all threads; 'blur' = adaptive_blur(backend='native') end to end (engine "
        "included), 'kernel' = native.blur_tile on the padded image; speed-up = reference / blur med."
    )
    if reference_1mp:
        print(
            f"reference: adaptive_blur(backend='reference') on the 1 MP photo at max-sigma 4, "
            f"{args.reference_runs} run(s): {reference_1mp:.2f} s; 12 MP value scaled by pixel count."
        )


if __name__ == "__main__":
    main()
