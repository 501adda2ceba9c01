"""How fast are ``adaptive_blur``'s forward and forward + backward passes, per backend?

For each ``--sizes`` (``N`` for ``N x N`` or ``WxH``; ``1 x C x H x W`` float32,
``--channels`` C) a seeded random image and a sigma map uniform in ``[0, --max-sigma]``
(radius up to ``round(3 * max σ)``) are blurred on ``--device`` with the default backend
(native C forward and backward on the CPU, Triton forward and backward on CUDA) and with
the unfold ``reference`` backend, which is autograd through plain torch. On CUDA the
last column is the peak memory forward + backward took beyond its inputs, in multiples of
the image and sigma bytes. Forward + backward is
``out.backward(g)`` with a fixed random ``g``, gradients to the image and to sigma. Medians
of ``--repeat`` runs after one warm-up; the reference rows run only up to
``--reference-max-size`` (their backward takes minutes on 2 cores at 1000²).

    python benchmarks/bench_backward.py                               # CPU, 256 and 1000
    python benchmarks/bench_backward.py --device cuda --sizes 1024,3840x2160 --channels 3

Prints one table on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse

import torch
from _common import log, machine_line, measure, parse_sizes, parsed  # benchmarks/_common.py

from adaptiveblur import adaptive_blur


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="256,1000", help="N or WxH, comma-separated (default: 256,1000)"
    )
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--max-sigma", type=float, default=4.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference-max-size", type=int, default=256)
    args = parser.parse_args()
    sizes = parsed(parser, square_or_sizes, args.sizes)
    device = torch.device(args.device)
    print(f"machine: {machine_line(args.device)}; torch {torch.__version__}")
    print(
        f"adaptive_blur, 1x{args.channels}xHxW float32, sigma uniform in [0, {args.max_sigma:g}], "
        f"{device}; medians of {args.repeat}\n"
    )
    print(f"{'W x H':>11} {'backend':<10} {'forward ms':>11} {'fwd+bwd ms':>11} {'extra mem':>10}")
    for width, height in sizes:
        generator = torch.Generator().manual_seed(width * height)
        shape = (1, args.channels, height, width)
        image = torch.rand(shape, generator=generator).to(device)
        sigma = (torch.rand((1, 1, height, width), generator=generator) * args.max_sigma).to(device)
        grad = torch.randn(shape, generator=generator).to(device)
        large = max(width, height) > args.reference_max_size
        for backend in [None] + ([] if large else ["reference"]):
            name = backend or "default"
            log(f"{width}x{height}: {name}")
            ahead, total = timed(image, sigma, grad, backend, args.repeat, device)
            extra = extra_memory(image, sigma, grad, backend, device)
            label = f"{width}x{height}"
            print(
                f"{label:>11} {name:<10} {ahead * 1e3:>11.2f} {total * 1e3:>11.2f} {extra:>10}",
                flush=True,
            )


def square_or_sizes(text: str) -> list[tuple[int, int]]:
    """``"256,640x480"`` -> ``[(256, 256), (640, 480)]``."""
    return parse_sizes(",".join(p if "x" in p.lower() else f"{p}x{p}" for p in text.split(",")))


def timed(
    image: torch.Tensor,
    sigma: torch.Tensor,
    grad: torch.Tensor,
    backend: str | None,
    repeat: int,
    device: torch.device,
) -> tuple[float, float]:
    """Median seconds of the forward pass alone and of forward + backward."""

    def forward() -> None:
        with torch.no_grad():
            adaptive_blur(image, sigma, backend=backend)

    def both() -> None:
        x = image.clone().requires_grad_()
        s = sigma.clone().requires_grad_()
        adaptive_blur(x, s, backend=backend).backward(grad)

    return measure(forward, repeat, device=device).wall, measure(both, repeat, device=device).wall


def extra_memory(
    image: torch.Tensor,
    sigma: torch.Tensor,
    grad: torch.Tensor,
    backend: str | None,
    device: torch.device,
) -> str:
    """Peak CUDA memory of one forward + backward beyond its inputs, as a multiple of the
    image and sigma bytes (``-`` off CUDA)."""
    if device.type != "cuda":
        return "-"
    x = image.clone().requires_grad_()
    s = sigma.clone().requires_grad_()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    adaptive_blur(x, s, backend=backend).backward(grad)
    torch.cuda.synchronize(device)
    extra = torch.cuda.max_memory_allocated(device) - before
    inputs = image.numel() * image.element_size() + sigma.numel() * sigma.element_size()
    return f"{extra / inputs:.2f}x"


if __name__ == "__main__":
    main()
