"""How fast are ``adaptive_blur``'s forward and forward + backward passes, per backend?

For each ``--sizes`` (square, ``1 x C x N x N`` float32, ``--channels`` C) a seeded random
image and a sigma map uniform in ``[0, --max-sigma]`` (radius up to ``round(3 * max σ)``)
are blurred on ``--device`` with the default backend (on the CPU the native one, whose
backward pass is native C; on CUDA Triton forward, the reference backward) and with the
unfold ``reference`` backend, which is autograd through plain torch. Forward + backward is
``out.backward(g)`` with a fixed random ``g``, gradients to the image and to sigma. Medians
of ``--repeat`` runs after one warm-up; the reference rows run only up to
``--reference-max-size`` (their backward takes minutes on 2 cores at 1000²).

    python benchmarks/bench_backward.py                               # CPU, 256 and 1000
    python benchmarks/bench_backward.py --device cuda --sizes 1024 --channels 3

Prints one table on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse

import torch
from _common import log, machine_line, measure, parse_ints, parsed  # benchmarks/_common.py

from adaptiveblur import adaptive_blur


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="256,1000", help="image sides (default: 256,1000)")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--max-sigma", type=float, default=4.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference-max-size", type=int, default=256)
    args = parser.parse_args()
    sizes = parsed(parser, parse_ints, args.sizes)
    device = torch.device(args.device)
    print(f"machine: {machine_line(args.device)}; torch {torch.__version__}")
    print(
        f"adaptive_blur, 1x{args.channels}xNxN float32, sigma uniform in [0, {args.max_sigma:g}], "
        f"{device}; medians of {args.repeat}\n"
    )
    print(f"{'N':>6} {'backend':<10} {'forward s':>10} {'fwd+bwd s':>10}")
    for size in sizes:
        generator = torch.Generator().manual_seed(size)
        shape = (1, args.channels, size, size)
        image = torch.rand(shape, generator=generator).to(device)
        sigma = (torch.rand((1, 1, size, size), generator=generator) * args.max_sigma).to(device)
        grad = torch.randn(shape, generator=generator).to(device)
        backends = [None] + (["reference"] if size <= args.reference_max_size else [])
        for backend in backends:
            name = backend or "default"
            log(f"{size}: {name}")

            ahead, total = timed(image, sigma, grad, backend, args.repeat, device)
            print(f"{size:>6} {name:<10} {ahead:>10.3f} {total:>10.3f}", flush=True)


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


if __name__ == "__main__":
    main()
