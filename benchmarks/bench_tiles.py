"""Which launch shapes make the fused CUDA kernels fastest on this card?

Two sweeps, each kernel alone (``triton.testing.do_bench``, median ms), every variant
checked against the default before it is timed:

* ``conv``: the forward kernel of ``spatially_varying_conv2d`` (``ops/triton_conv.py``)
  over ``tl.dot`` tiles (output channels x channels per step x pixels, warps, stages), for
  the cases of ``bench_conv.py``; relative error against a float64 unfold reference.
* ``blur``: the two backward kernels of ``adaptive_blur`` (``ops/triton_grad.py``: the
  moments kernel, sigma's gradient, and the spread kernel, the image's gradient) over
  ``LaunchConfig`` (rows x groups of 4 columns, warps), 1 x 3 x H x W, sigma uniform in
  [0, 4]; a variant must give the default's bits (block shapes do not change any sum's
  order). The moments kernel's time includes its aligned copy of the window, whose
  padding follows the block shape.

    python benchmarks/bench_tiles.py                       # both, on cuda
    python benchmarks/bench_tiles.py --sweep blur --sizes 3840x2160
    TRITON_INTERPRET=1 python benchmarks/bench_tiles.py --device cpu --cases 1x16x8k3 --sizes 24x16

Prints the fastest variants of each case on stdout, and any variant that disagrees;
progress goes to stderr. ``--device cpu`` (Triton's interpreter) only checks the script.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import log, machine_line, measure, parse_sizes, parsed  # benchmarks/_common.py

from adaptiveblur.borders import read_window
from adaptiveblur.kernels import radius_map
from adaptiveblur.ops import triton as fused
from adaptiveblur.ops import triton_conv, triton_grad

CONV_CASES = "8x64x128k3,2x16x512k5"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sweep", choices=("conv", "blur", "both"), default="both")
    parser.add_argument("--cases", default=CONV_CASES, help=f"conv: BxCxNkK ({CONV_CASES})")
    parser.add_argument("--sizes", default="3840x2160,1024x1024", help="blur: WxH list")
    parser.add_argument("--top", type=int, default=6, help="variants printed per case")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu under TRITON_INTERPRET=1")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"machine: {machine_line(args.device)}; torch {torch.__version__}")
    if args.sweep in ("conv", "both"):
        for case in args.cases.split(","):
            sweep_conv(case, args.top, device)
    if args.sweep in ("blur", "both"):
        for width, height in parsed(parser, parse_sizes, args.sizes):
            sweep_blur(width, height, args.top, device)


def median_ms(call: Callable[[], object], device: torch.device) -> float:
    """Median ms of ``call``: CUDA events through ``do_bench``, else one timed run."""
    if device.type != "cuda":
        return measure(call, 1).wall * 1e3
    import triton

    return float(triton.testing.do_bench(call, warmup=25, rep=100, return_mode="median"))


def sweep_conv(case: str, top: int, device: torch.device) -> None:
    """Time the conv forward kernel over ``tl.dot`` tiles for one ``BxCxNkK`` case."""
    shape, size_text = case.split("k")
    batch, channels, side = (int(part) for part in shape.split("x"))
    size, radius = int(size_text), int(size_text) // 2
    generator = torch.Generator().manual_seed(side * size)
    x = torch.rand((batch, channels, side, side), generator=generator).to(device)
    weight = (torch.rand((channels, channels, size, size), generator=generator) / channels).to(
        device
    )
    modulation = torch.rand((batch, size * size, side, side), generator=generator).to(device)
    padded = read_window(x, -radius, side + radius, -radius, side + radius, "constant")
    windows = F.unfold(padded.double(), size).view(batch, channels, size * size, -1)
    windows = windows * modulation.double().view(batch, 1, size * size, -1)
    expected = weight.double().view(channels, -1) @ windows.view(batch, channels * size**2, -1)
    base = triton_conv.plan(batch, channels, channels, size, side, side, torch.float32, x.device)
    rows = []
    shapes = itertools.product((16, 32, 64), (16, 32), (64, 128, 256), (4, 8), (2, 3))
    for out_block, in_block, pixels, warps, stages in shapes:
        if max(out_block, in_block) > channels:
            continue
        blocks = triton_conv.Blocks(
            out_block, in_block, pixels, True, warps, stages, base.forward.precision
        )
        plan = dataclasses.replace(base, forward=blocks)
        log(f"conv {case}: {blocks}")
        got = triton_conv.conv_forward(padded, weight, modulation, size, plan).double()
        error = float((got.view_as(expected) - expected).norm() / expected.norm())
        ms = median_ms(
            lambda plan=plan: triton_conv.conv_forward(padded, weight, modulation, size, plan),
            device,
        )
        rows.append(
            (ms, f"{out_block} x {in_block} x {pixels}, {warps} warps, {stages} stages", error)
        )
    print(f"\nconv {case} forward kernel (the plan: {base.forward})")
    for ms, label, error in sorted(rows)[:top]:
        print(f"  {ms:8.4f} ms  {label:<34} relative error {error:.1e}")


def sweep_blur(width: int, height: int, top: int, device: torch.device) -> None:
    """Time the moments and spread kernels over launch configs at ``width x height``."""
    generator = torch.Generator().manual_seed(width * height)
    image = torch.rand((1, 3, height, width), generator=generator).to(device)
    sigma = (torch.rand((1, 1, height, width), generator=generator) * 4).to(device)
    grad = torch.randn((1, 3, height, width), generator=generator).to(device)
    radius = radius_map(sigma, 3.0)
    halo = int(radius.max())
    narrow = radius.to(torch.int16)
    padded = read_window(image, -halo, height + halo, -halo, width + halo, "reflect")
    defaults = triton_grad._CONFIG, triton_grad._SPREAD_CONFIG

    def moments(config: fused.LaunchConfig) -> tuple[torch.Tensor, triton_grad.Planes]:
        triton_grad._CONFIG = config
        source = fused.aligned_source(padded, halo, config.block_y, config.block_x)
        _, grad_sigma, planes = triton_grad._moments(
            source, sigma, narrow, halo, grad, want_sigma=True
        )
        assert grad_sigma is not None and planes is not None
        return grad_sigma, planes

    def spread(planes: triton_grad.Planes) -> torch.Tensor:
        return triton_grad._spread(planes, grad, halo, padded.shape)

    expected_sigma, expected_planes = moments(defaults[0])
    expected_image = spread(expected_planes)
    timings: dict[str, list[tuple[float, str]]] = {"moments": [], "spread": []}
    try:
        for block_y, groups, warps in itertools.product(
            (2, 4, 8, 16, 32), (4, 8, 16), (1, 2, 4, 8)
        ):
            if block_y * groups != 32 * warps:  # one group of 4 pixels per thread
                continue
            config = fused.LaunchConfig(block_y=block_y, groups=groups, num_warps=warps)
            label = f"{block_y} x {groups}, {warps} warps"
            log(f"blur {width}x{height}: {label}")
            triton_grad._SPREAD_CONFIG = defaults[1]
            grad_sigma, _ = moments(config)
            if torch.equal(grad_sigma, expected_sigma):
                ms = median_ms(lambda config=config: moments(config), device)
                timings["moments"].append((ms, label))
            else:
                print(f"  moments {label}: differs from the default")
            triton_grad._CONFIG, triton_grad._SPREAD_CONFIG = defaults[0], config
            _, planes = moments(defaults[0])
            if torch.equal(spread(planes), expected_image):
                timings["spread"].append(
                    (median_ms(lambda planes=planes: spread(planes), device), label)
                )
            else:
                print(f"  spread {label}: differs from the default")
    finally:
        triton_grad._CONFIG, triton_grad._SPREAD_CONFIG = defaults
    print(
        f"\nblur backward {width}x{height}, halo {halo} (defaults: moments {defaults[0]}, spread {defaults[1]})"
    )
    for kernel, rows in timings.items():
        for ms, label in sorted(rows)[:top]:
            print(f"  {kernel:<8} {ms:8.4f} ms  {label}")


if __name__ == "__main__":
    main()
