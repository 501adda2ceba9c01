"""How fast is ``spatially_varying_conv2d`` (factored: weight x modulation), against its peers?

Forward and forward + backward (gradients to x, weight and modulation; ``out.backward(g)``
with a fixed random ``g``) of seeded random float32 inputs, for each case
``B x C x N² k K`` (C in and out; a trailing ``L``, as in ``1x8x256k5L``, gives a kernel
per location, ``(B, C, C, K, K, N, N)``, with no modulation and no deform_conv2d row):
adaptiveblur's op, the unfold + multiply + matmul +
fold of the forum answers, and ``torchvision.ops.deform_conv2d`` with zero offsets and
``mask=`` (the same arithmetic) when torchvision is installed. Medians of ``--repeat``
runs after one warm-up; on CUDA also the peak memory each adds (``max_memory_allocated``
beyond the inputs, the leaves' clones included). Unfold and deform_conv2d rows are
skipped above ``--peer-max-bytes`` of windows (``B C K² N²`` floats; the k 25 case has
7.9 GB of them). On CUDA adaptiveblur's row runs the fused Triton kernels
(``adaptiveblur/ops/triton_conv.py``).

    python benchmarks/bench_conv.py                                  # CPU, the three cases
    python benchmarks/bench_conv.py --device cuda
    python benchmarks/bench_conv.py --device cuda --peer-max-bytes 2e10   # peers at k 25 too

Prints one table on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import log, machine_line, measure  # benchmarks/_common.py

from adaptiveblur import spatially_varying_conv2d

CASES = "8x64x128k3,2x16x512k5,1x3x1024k25"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default=CASES, help=f"BxCxNkK, comma-separated ({CASES})")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--peer-max-bytes", type=float, default=4e9)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"machine: {machine_line(args.device)}; torch {torch.__version__}")
    print(f"spatially varying conv, float32, {device}; medians of {args.repeat}\n")
    print(f"{'case':<16} {'op':<14} {'forward ms':>11} {'fwd+bwd ms':>11} {'extra MiB':>10}")
    for case in args.cases.split(","):
        shape, size = case.split("k")
        local = size.endswith("L")  # a kernel per location, (B, C, C, k, k, N, N)
        size = size.removesuffix("L")
        batch, channels, side = (int(part) for part in shape.split("x"))
        inputs = _inputs(batch, channels, side, int(size), device, local)
        windows = batch * channels * int(size) ** 2 * side * side * 4
        for name, op in (_local_ops(int(size)) if local else _ops(int(size))).items():
            if name != "adaptiveblur" and windows > args.peer_max_bytes:
                continue
            log(f"{case}: {name}")
            ahead, both, extra = _timed(op, inputs, args.repeat, device)
            print(f"{case:<16} {name:<14} {ahead:>11.2f} {both:>11.2f} {extra:>10}", flush=True)


def _inputs(
    batch: int, channels: int, side: int, size: int, device: torch.device, local: bool
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(side * size)

    def made(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator).to(device)

    if local:
        return {
            "x": made(batch, channels, side, side),
            "weight": made(batch, channels, channels, size, size, side, side) / (channels * size),
            "grad": made(batch, channels, side, side),
        }
    return {
        "x": made(batch, channels, side, side),
        "weight": made(channels, channels, size, size) / (channels * size),
        "modulation": made(batch, size * size, side, side),
        "grad": made(batch, channels, side, side),
    }


def _local_ops(size: int) -> dict[str, Callable[..., torch.Tensor]]:
    """Ours and unfold + multiply + sum for kernels given per location (no modulation)."""
    radius = size // 2

    def ours(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return spatially_varying_conv2d(x, weight)

    def unfold(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        cols = F.unfold(F.pad(x, (radius,) * 4), size).view(batch, channels, size * size, -1)
        kernels = weight.reshape(batch, weight.shape[1], channels, size * size, -1)
        return torch.einsum("bctp,boctp->bop", cols, kernels).view(batch, -1, height, width)

    return {"adaptiveblur": ours, "unfold": unfold}


def _ops(size: int) -> dict[str, Callable[..., torch.Tensor]]:
    radius = size // 2

    def ours(x: torch.Tensor, weight: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        return spatially_varying_conv2d(x, weight, modulation=modulation)

    def unfold(x: torch.Tensor, weight: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        cols = F.unfold(F.pad(x, (radius,) * 4), size).view(batch, channels, size * size, -1)
        cols = (cols * modulation.view(batch, 1, size * size, -1)).view(batch, -1, height * width)
        return (weight.view(weight.shape[0], -1) @ cols).view(batch, -1, height, width)

    ops = {"adaptiveblur": ours, "unfold": unfold}
    try:
        from torchvision.ops import deform_conv2d
    except ImportError:
        return ops

    def deform(x: torch.Tensor, weight: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        offset = x.new_zeros(batch, 2 * size * size, height, width)
        return deform_conv2d(x, offset, weight, padding=radius, mask=modulation)

    ops["deform_conv2d"] = deform
    return ops


def _timed(
    op: Callable[..., torch.Tensor],
    inputs: dict[str, torch.Tensor],
    repeat: int,
    device: torch.device,
) -> tuple[float, float, str]:
    """Median milliseconds of the forward pass and of forward + backward, and the peak CUDA
    memory forward + backward adds (``-`` on the CPU)."""

    names = [name for name in ("x", "weight", "modulation") if name in inputs]

    def forward() -> None:
        with torch.no_grad():
            op(*(inputs[name] for name in names))

    def both() -> None:
        leaves = [inputs[name].clone().requires_grad_() for name in names]
        op(*leaves).backward(inputs["grad"])

    ahead = measure(forward, repeat, device=device).wall * 1e3
    extra = "-"
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        both()
        torch.cuda.synchronize(device)
        extra = f"{(torch.cuda.max_memory_allocated(device) - start) / 2**20:.0f}"
    return ahead, measure(both, repeat, device=device).wall * 1e3, extra


if __name__ == "__main__":
    main()
