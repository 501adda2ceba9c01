"""Peak memory of forward + backward: the tiled, checkpointed ops vs plain unfold.

Each variant runs in a fresh subprocess and reports its peak resident memory
(``ru_maxrss``) and wall time; the baseline is the same process importing torch and
allocating the inputs only, so the table shows what the operation itself added.

    python benchmarks/bench_memory.py                    # 1000x1000, k = 25, one channel
    python benchmarks/bench_memory.py --size 512 --channels 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _common import machine_line  # benchmarks/_common.py, beside this script

VARIANT = r"""
import json, resource, sys, time
import torch, torch.nn.functional as F
from adaptiveblur.nn import adaptive_blur, spatially_varying_conv2d
name, size, channels, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
r = k // 2
x = torch.rand(1, channels, size, size, requires_grad=True)
weight = torch.rand(channels, channels, k, k, requires_grad=True)
modulation = torch.rand(1, k * k, size, size, requires_grad=True)
sigma = torch.full((1, 1, size, size), (r - 0.5) / 3.0 + 0.01, requires_grad=True)  # radius r
start = time.perf_counter()
if name == "conv-tiled":
    out = spatially_varying_conv2d(x, weight, modulation=modulation, max_memory=256 << 20)
elif name == "conv-unfold":
    cols = F.unfold(F.pad(x, (r, r, r, r)), k).view(1, channels, k * k, -1) * modulation.view(1, 1, k * k, -1)
    out = F.fold(weight.view(channels, -1) @ cols.view(1, channels * k * k, -1), (size, size), 1)
elif name == "blur-tiled":
    out = adaptive_blur(x, sigma, max_memory=256 << 20)
elif name == "blur-unfold":
    cols = F.unfold(F.pad(x, (r, r, r, r), mode="reflect"), k).view(1, channels, k * k, -1)
    d = torch.arange(-r, r + 1, dtype=torch.float32)
    d2 = (d[:, None] ** 2 + d[None, :] ** 2).reshape(1, k * k, 1)
    w = torch.exp(-d2 / (2 * sigma.view(1, 1, -1) ** 2))
    out = ((cols * w[:, None]).sum(2) / w.sum(1, keepdim=True)).view(1, channels, size, size)
if name != "baseline":
    out.square().mean().backward()
seconds = time.perf_counter() - start
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--kernel", type=int, default=25)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["baseline", "conv-tiled", "conv-unfold", "blur-tiled", "blur-unfold"],
    )
    args = parser.parse_args()
    print(f"machine: {machine_line()}")
    print(
        f"input: 1x{args.channels}x{args.size}x{args.size}, k = {args.kernel}; forward + backward\n"
    )
    rows = []
    for name in args.variants:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                VARIANT,
                name,
                str(args.size),
                str(args.channels),
                str(args.kernel),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            rows.append(
                (
                    name,
                    None,
                    None,
                    done.stderr.strip().splitlines()[-1]
                    if done.stderr
                    else f"exit {done.returncode}",
                )
            )
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((name, result["peak_mib"], result["seconds"], ""))
    baseline = next((peak for name, peak, _, _ in rows if name == "baseline" and peak), 0.0)
    print(f"{'variant':<12} {'peak MiB':>10} {'added MiB':>10} {'seconds':>8}  note")
    for name, peak, seconds, note in rows:
        if peak is None:
            print(f"{name:<12} {'-':>10} {'-':>10} {'-':>8}  {note}")
        else:
            print(f"{name:<12} {peak:>10.0f} {peak - baseline:>10.0f} {seconds:>8.2f}  {note}")


if __name__ == "__main__":
    main()
