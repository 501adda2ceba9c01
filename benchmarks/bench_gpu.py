"""How fast is the fused Triton gather, against its floors and the unfold reference?

For 4K (3840x2160) and 8K (7680x4320) RGB images and three sigma maps (``astronaut``:
4 x Rec. 709 luma of the upscaled sample image; ``constant4``: sigma 4 everywhere, the
worst case at max-sigma 4; ``random``: uniform in [0, 4) per pixel) it reports

* the kernel alone (``triton.testing.do_bench`` median) for each launch configuration,
* the backend's ``blur_tile`` (aligned copy + kernel) and the whole ``adaptive_blur``,
* the reference (unfold) backend through ``adaptive_blur`` (4K; 8K with ``--reference-8k``),
* the floors: bytes (input and output once, sigma, int64 radius) over the measured copy
  bandwidth, and FLOPs (2 per channel per tap actually inside each pixel's window) over
  the measured FP32 rate (a float32 matrix product with tf32 off),
* with ``--check``: max |error| against the float64 reference backend on the GPU, scipy
  for constant sigma, every output written (NaN-poisoned first), radius-0 pixels unchanged.

Prints one table (stdout) and writes every number to ``--json``. Progress goes to stderr.

    python benchmarks/bench_gpu.py --check --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import (  # benchmarks/_common.py, beside this script
    exact_float64,
    log,
    luma,
    machine_line,
    measure,
    photo_tensor,
)

from adaptiveblur import adaptive_blur
from adaptiveblur.borders import read_window
from adaptiveblur.kernels import radius_map
from adaptiveblur.ops import triton as tb
from adaptiveblur.ops.tile import TileInput

SIZES = {"4k": (2160, 3840), "8k": (4320, 7680)}
CASES = ("astronaut", "constant4", "random")
# BLOCK_Y x GROUPS x WARPS, then "s" to walk the window one 4-column chunk at a time
# (default: two), then "r" and a register cap per thread (default: the compiler's choice).
CONFIGS = ("16x8x4", "16x16x8", "8x16x4", "4x16x2", "16x8x4s", "16x8x4r96")


def parse_config(text: str) -> tb.LaunchConfig:
    shape, _, cap = text.partition("r")
    single = shape.endswith("s")
    block_y, groups, warps = (int(part) for part in shape.rstrip("s").split("x"))
    return tb.LaunchConfig(block_y, groups, warps, not single, int(cap) if cap else None)


def config_name(config: tb.LaunchConfig) -> str:
    suffix = "" if config.paired else "s"
    cap = "" if config.maxnreg is None else f"r{config.maxnreg}"
    return f"{config.block_y}x{config.groups}x{config.num_warps}{suffix}{cap}"


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall ms of ``fn`` after a warm-up, with device sync, for calls too slow for do_bench."""
    return measure(fn, repeats, device="cuda").wall * 1e3


def ceilings(device: torch.device) -> dict[str, float]:
    """Measured copy bandwidth (bytes read + written per second) and FP32 FLOP/s (no tf32)."""
    from triton.testing import do_bench

    src = torch.empty(1 << 28, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    copy_ms = do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
    bandwidth = 2 * src.numel() * 4 / (copy_ms * 1e-3)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    n = 8192
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    mm_ms = do_bench(lambda: a @ b, warmup=50, rep=500, return_mode="median")
    return {"copy_bytes_per_s": bandwidth, "fp32_flops_per_s": 2 * n**3 / (mm_ms * 1e-3)}


def load_image(height: int, width: int, device: torch.device) -> torch.Tensor:
    """``(1, 3, height, width)``: the sample photo resized."""
    return photo_tensor(width, height)[None].to(device)


def sigma_map(case: str, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    batch, _, height, width = image.shape
    if case == "astronaut":
        return (4.0 * luma(image)[:, None]).contiguous()
    if case == "constant4":
        return torch.full((batch, 1, height, width), 4.0, device=image.device)
    values = torch.rand((batch, 1, height, width), generator=generator, device=image.device)
    return 4.0 * values


def run_case(
    size: str, case: str, image: torch.Tensor, sigma: torch.Tensor, configs: list[tb.LaunchConfig],
    limits: dict[str, float], args: argparse.Namespace,
) -> dict:  # fmt: skip
    from triton.testing import do_bench

    batch, channels, height, width = image.shape
    radius = radius_map(sigma)
    halo = int(radius.max())
    padded = read_window(image, -halo, height + halo, -halo, width + halo, "reflect").contiguous()
    taps = float(((2 * radius + 1) ** 2).sum())
    flops = 2.0 * channels * taps
    moved = batch * height * width * (2 * channels * 4 + 4 + 8)
    floor_ms = {
        "bytes": moved / limits["copy_bytes_per_s"] * 1e3,
        "flops": flops / limits["fp32_flops_per_s"] * 1e3,
    }
    row: dict = {"size": size, "case": case, "halo": halo, "mean_taps": taps / (batch * height * width),
                 "flops": flops, "bytes": moved, "floor_ms": floor_ms, "kernel_ms": {}}  # fmt: skip
    outputs = {}
    for config in configs:
        source, out = tb.prepare(TileInput(padded, sigma, radius, halo), config)
        out.fill_(float("nan"))  # poison: every element must be written
        tb.launch(source, sigma, radius, out, config)
        torch.cuda.synchronize()
        name = config_name(config)
        row["kernel_ms"][name] = do_bench(
            lambda s=source, o=out, c=config: tb.launch(s, sigma, radius, o, c),
            warmup=25, rep=args.rep, return_mode="median",
        )  # fmt: skip
        outputs[name] = out
        log(f"  {size} {case} {name}: {row['kernel_ms'][name]:.3f} ms")
        del source
    best = min(row["kernel_ms"], key=row["kernel_ms"].get)
    row["best"] = best
    best_config = parse_config(best)
    out = outputs[best]
    row["all_written"] = bool(torch.isfinite(out).all())
    agree = [float((outputs[n] - out).abs().max()) for n in outputs]
    row["configs_max_diff"] = max(agree)
    row["tile_ms"] = do_bench(
        lambda: tb.gather_blur(TileInput(padded, sigma, radius, halo), best_config),
        warmup=10, rep=args.rep, return_mode="median",
    )  # fmt: skip
    outputs.clear()
    torch.cuda.empty_cache()
    row["engine_triton_ms"] = median_ms(lambda: adaptive_blur(image, sigma, backend="triton"), 5)
    if (size == "4k" and not args.no_reference) or args.reference_8k:
        log(f"  {size} {case}: reference (unfold) backend ...")
        row["engine_reference_ms"] = median_ms(
            lambda: adaptive_blur(image, sigma, backend="reference"), args.reference_repeats
        )
    if args.check:
        zero = (radius == 0).expand_as(image)
        row["radius0_exact"] = bool(torch.equal(out[zero], image[zero]))
        log(f"  {size} {case}: float64 reference ...")
        start = time.perf_counter()
        expected = exact_float64(image, sigma)
        row["max_abs_err_vs_f64_reference"] = float((out.double() - expected).abs().max())
        row["f64_reference_s"] = time.perf_counter() - start
        del expected
        if case == "constant4":
            from scipy import ndimage

            planes = image[0].double().cpu().numpy()
            result = out[0].double().cpu().numpy()
            row["max_abs_err_vs_scipy"] = max(
                float(
                    np.abs(
                        ndimage.gaussian_filter(plane, 4.0, mode="mirror", truncate=3.0) - got
                    ).max()
                )
                for plane, got in ((planes[i], result[i]) for i in range(len(planes)))
            )
    del out
    torch.cuda.empty_cache()
    return row


def profile_once(args: argparse.Namespace, device: torch.device) -> None:
    """Two launches (compile, then the one to profile) of one configuration, for ncu."""
    height, width = SIZES[args.sizes[0]]
    image = load_image(height, width, device)
    sigma = sigma_map(args.cases[0], image, torch.Generator(device=device).manual_seed(0))
    radius = radius_map(sigma)
    halo = int(radius.max())
    padded = read_window(image, -halo, height + halo, -halo, width + halo, "reflect").contiguous()
    config = parse_config(args.configs[0])
    source, out = tb.prepare(TileInput(padded, sigma, radius, halo), config)
    for _ in range(2):
        tb.launch(source, sigma, radius, out, config)
    torch.cuda.synchronize()


def table(rows: list[dict], limits: dict[str, float]) -> str:
    lines = [
        f"copy {limits['copy_bytes_per_s'] / 1e12:.2f} TB/s, fp32 (no tf32) {limits['fp32_flops_per_s'] / 1e12:.1f} TFLOP/s",
        f"{'size':4} {'case':10} {'taps/px':>7} {'best':>9} {'kernel':>8} {'tile':>8} {'engine':>8} "
        f"{'ref':>9} {'ref/kern':>8} {'floorB':>7} {'floorF':>7} {'%peakF':>6} {'err64':>8} {'scipy':>8} ok",
    ]
    for r in rows:
        kernel = r["kernel_ms"][r["best"]]
        ref = r.get("engine_reference_ms")
        floor_f = r["floor_ms"]["flops"]
        lines.append(
            f"{r['size']:4} {r['case']:10} {r['mean_taps']:7.1f} {r['best']:>9} {kernel:8.3f} "
            f"{r['tile_ms']:8.3f} {r['engine_triton_ms']:8.2f} "
            f"{(f'{ref:9.1f}' if ref else '        -')} {(f'{ref / kernel:8.0f}' if ref else '       -')} "
            f"{r['floor_ms']['bytes']:7.3f} {floor_f:7.3f} {100 * floor_f / kernel:6.0f} "
            f"{r.get('max_abs_err_vs_f64_reference', float('nan')):8.1e} "
            f"{r.get('max_abs_err_vs_scipy', float('nan')):8.1e} "
            f"{'y' if r['all_written'] and r.get('radius0_exact', True) else 'NO'}"
        )
    names = sorted({n for r in rows for n in r["kernel_ms"]})
    lines.append("kernel ms by config: " + " ".join(f"{n:>9}" for n in names))
    for r in rows:
        lines.append(f"{r['size']:4} {r['case']:10}      " + " ".join(
            f"{r['kernel_ms'].get(n, float('nan')):9.3f}" for n in names))  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["4k", "8k"], choices=sorted(SIZES))
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument(
        "--configs", nargs="+", default=list(CONFIGS), help="BLOCK_Yx GROUPSx WARPS"
    )
    parser.add_argument(
        "--configs-8k", nargs="+", default=None, help="configs for 8K (default: 4K's best)"
    )
    parser.add_argument("--check", action="store_true", help="compare with float64 references")
    parser.add_argument("--reference-8k", action="store_true", help="also time the reference at 8K")
    parser.add_argument("--reference-repeats", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true", help="skip the reference timing")
    parser.add_argument("--rep", type=int, default=200, help="do_bench repetition time, ms")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--profile", action="store_true",
        help="launch the first config on the first size and case twice, nothing else (for ncu)",
    )  # fmt: skip
    args = parser.parse_args()

    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu needs a CUDA device")
    device = torch.device("cuda")
    if args.profile:
        profile_once(args, device)
        return
    limits = ceilings(device)
    log(f"{machine_line('cuda')}: {limits}")
    generator = torch.Generator(device=device).manual_seed(0)
    rows: list[dict] = []
    best_4k: list[str] = []
    for size in args.sizes:
        height, width = SIZES[size]
        image = load_image(height, width, device)
        names = args.configs
        if size == "8k":
            names = args.configs_8k or sorted(set(best_4k)) or args.configs
        configs = [parse_config(n) for n in names]
        for case in args.cases:
            sigma = sigma_map(case, image, generator)
            rows.append(run_case(size, case, image, sigma, configs, limits, args))
            if size == "4k":
                best_4k.append(rows[-1]["best"])
        del image
        torch.cuda.empty_cache()
    report = {
        "machine": machine_line("cuda"),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "limits": limits,
        "rows": rows,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    print(f"machine: {report['machine']}")
    print(table(rows, limits))


if __name__ == "__main__":
    main()
