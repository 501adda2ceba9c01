"""The fast (levels) backend: its speed, its accuracy against exact, and its worst case.

Three questions, one mode each (stdout is the table; progress goes to stderr):

``python benchmarks/bench_fast.py`` (``--sizes``, ``--sigmas``, ``--device``, ``--repeat``)
    Time and accuracy on a natural photo (``sample_images/astronaut.jpg`` resized) with
    ``sigma = max_sigma * luminance`` (``--map constant``: ``max_sigma`` everywhere; ``--map
    octave``: ``max_sigma * 2**(luminance - 1)``, one octave wide): fast time (median of
    ``--repeat`` runs after a warm-up), exact time where it takes under ``--exact-seconds``
    (else estimated from a crop, marked ``~``), PSNR, max error in LSB (1/255) and the
    largest difference of the 8-bit roundings, measured on a centre crop against a float64
    exact reference; then the time ratio of the largest to the smallest max-sigma per size.
    ``--phases`` adds a line per row: one more run with each phase synchronised and timed
    (the exact small windows, the levels with their FFTs, the stencil weights, the rest).
``--corpus``
    Max error against float64 exact on synthetic worst cases: step edges, a line, a dot,
    checkerboards, concentric square rings, binary noise, a photo; sigma maps smooth,
    jumping, luminance-driven and constant; max-sigma 2 to 32; then constant sigmas swept
    over [3.2, 32] with the node grid placed in several positions.
``--design``
    Why the level count grows with ``log(max_sigma)``: the same worst case for other
    designs, on uniform node grids in ``log(sigma)`` (levels per octave x stencil points),
    and for levels computed on a coarse grid of step ``h`` and interpolated (cubic) back.
    The truncated window's edge moves with sigma and with the grid, which no smooth
    interpolation follows, so neither a wider stencil nor coarse grids buy levels.
``--bound``
    The worst case over *all* images with values in [0, 1]:
    ``0.5 * ||sum_k w_k K(s_k) - K(sigma)||_1`` for pixel sigmas in ``[3.17, --max-sigma]``
    and node grids in every position (``--truncate`` picks the window rule).

``--strips-bound``
    The same proof for the levels-and-strips reference (:mod:`adaptiveblur.ops.strips`):
    its effective kernel (:func:`strips.pixel_bound`, built from the operator's own
    tables) against the exact one, for pixel sigmas from just above the exact path to
    ``--strips-max-sigma``: three sigmas in every radius band (``--strips-stride`` bands
    apart above sigma 64), the node grid in 12 positions, then a finer look at the worst.
    ``--levels-per-octave`` picks the node density (the module's default is 5).
    ``--strips-main pyramid`` proves the operator with its main term on the pyramid
    (``strips_blur(..., main="pyramid")``): each kernel's bound gains the pyramid's
    deviation from the untruncated Gaussian (:func:`strips.pyramid_error`, every phase).
    ``--strips-images recursive`` proves it with the strip images as recursions on pyramid
    profiles (``strips_blur(..., strips="recursive")``): each kernel's bound gains the
    profiles' deviation times the strips' mass (:func:`strips.pixel_bound`).

``--levels-per-octave N`` changes the node density for any of the above, for analysis:
the proven bound holds for the default (5) only.

The exact reference is the native C backend in float64 when it builds here, else the
reference backend in float64 (slow: use small crops).
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from _common import (  # benchmarks/_common.py, beside this script
    exact_float64,
    exact_float64_backend,
    log,
    luma,
    machine_line,
    measure,
    parse_floats,
    parse_sizes,
    parsed,
    photo_tensor,
    synchronize,
)

from adaptiveblur import adaptive_blur
from adaptiveblur.borders import read_window
from adaptiveblur.ops import levels, registry, strips

FAST_BACKEND = "levels"
SIGMA_MAPS = ("luminance", "constant", "octave")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="1024x1024,4000x3000", help="WxH list (default: 1 MP and 12 MP)"
    )
    parser.add_argument("--sigmas", default="2,4,8,16,32", help="max-sigma list")
    parser.add_argument(
        "--map",
        choices=SIGMA_MAPS,
        default="luminance",
        help="sigma map: max-sigma x luminance, max-sigma everywhere, or one octave below it",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument(
        "--crop",
        type=int,
        default=192,
        help="side of the centre crop checked against exact (0: skip)",
    )
    parser.add_argument(
        "--exact-seconds", type=float, default=30.0, help="time exact only when this fast"
    )
    parser.add_argument("--no-exact", action="store_true", help="skip exact timings and accuracy")
    parser.add_argument("--phases", action="store_true", help="time the fast method's phases too")
    parser.add_argument(
        "--levels-per-octave",
        type=int,
        default=levels.LEVELS_PER_OCTAVE,
        help="node density (analysis only: the bound holds for the default)",
    )
    parser.add_argument("--corpus", action="store_true", help="synthetic worst cases against exact")
    parser.add_argument("--bound", action="store_true", help="proven worst case over all images")
    parser.add_argument("--design", action="store_true", help="worst cases of other designs")
    parser.add_argument(
        "--max-sigma", type=float, default=64.0, help="--bound: largest pixel sigma"
    )
    parser.add_argument(
        "--truncate", type=float, default=3.0, help="--bound: window radius in sigmas"
    )
    parser.add_argument(
        "--strips-bound", action="store_true", help="proven worst case of the strips reference"
    )
    parser.add_argument(
        "--strips-max-sigma", type=float, default=256.0, help="--strips-bound: largest sigma"
    )
    parser.add_argument(
        "--strips-stride",
        type=int,
        default=4,
        help="--strips-bound: radius bands between samples above sigma 64 (1: every band)",
    )
    parser.add_argument(
        "--strips-main",
        choices=strips.MAIN_TERMS,
        default="fft",
        help="--strips-bound: how the main term is computed (fft or pyramid)",
    )
    parser.add_argument(
        "--strips-images",
        choices=strips.STRIP_TERMS,
        default="fft",
        help="--strips-bound: how the strip images are computed (fft or recursive)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # setattr: a module constant, changed for this process only.
    setattr(levels, "LEVELS_PER_OCTAVE", args.levels_per_octave)  # noqa: B010
    if args.strips_bound:
        run_strips_bound(
            args.strips_max_sigma,
            args.truncate,
            args.levels_per_octave,
            args.strips_stride,
            args.strips_main,
            args.strips_images,
        )
    elif args.design:
        run_design(args.truncate)
    elif args.bound:
        run_bound(args.max_sigma, args.truncate)
    elif args.corpus:
        run_corpus(args.device)
    else:
        sizes = parsed(parser, parse_sizes, args.sizes)
        sigmas = parsed(parser, parse_floats, args.sigmas)
        run_table(sizes, sigmas, args)


# --- timing and accuracy on a photo ---------------------------------------------------------


def run_table(sizes: list[tuple[int, int]], sigmas: list[float], args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    exact_name = exact_backend_name(device)
    print(f"machine: {machine_line(args.device)}")
    print(
        f"device {device} ({device_name(device)}), torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(
        f"fast = backend {FAST_BACKEND!r}; exact time = backend {exact_name!r}; accuracy on a centre crop"
    )
    print(
        f"of {args.crop}x{args.crop} against float64 {exact_float64_backend()}; median of {args.repeat} runs"
    )
    print(f"sigma map: {args.map}; {levels.LEVELS_PER_OCTAVE} levels per octave")
    header = (
        f"{'size':>11} {'max σ':>6} {'fast s':>8} {'exact s':>9} {'speed-up':>8} "
        f"{'PSNR dB':>8} {'max LSB':>8} {'8-bit Δ':>7} {'GPU MiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for width, height in sizes:
        image = photo_tensor(width, height).to(device)
        luminance = luma(image)
        times: dict[float, float] = {}
        for max_sigma in sigmas:
            sigma = sigma_map(args.map, max_sigma, luminance)
            log(f"{width}x{height} max sigma {max_sigma:g}: fast")
            timing = measure(
                functools.partial(adaptive_blur, image, sigma, method="fast", backend=FAST_BACKEND),
                args.repeat,
                device=device,
            )
            out, times[max_sigma] = timing.result, timing.wall
            memory = peak_memory(image, sigma, device)
            exact_text, speedup, accuracy = "-", "-", ("-", "-", "-")
            if not args.no_exact:
                log("  exact timing")
                exact_seconds, estimated = exact_time(image, sigma, args.exact_seconds, device)
                exact_text = f"{'~' if estimated else ''}{exact_seconds:.2f}"
                speedup = f"{exact_seconds / times[max_sigma]:.1f}x"
                if args.crop > 0:
                    log("  accuracy")
                    accuracy = crop_accuracy(image, sigma, out, args.crop)
            print(
                f"{width:>5}x{height:<5} {max_sigma:>6g} {times[max_sigma]:>8.3f} {exact_text:>9} "
                f"{speedup:>8} {accuracy[0]:>8} {accuracy[1]:>8} {accuracy[2]:>7} {memory:>8}",
                flush=True,
            )
            if args.phases:
                print(f"{'':>11} phases: {phase_times(image, sigma, device)}", flush=True)
        if len(times) > 1:
            high = max(times)
            low = 4.0 if 4.0 in times and high != 4.0 else min(times)
            print(f"{'':>11} time ratio max σ {high:g} / {low:g}: {times[high] / times[low]:.2f}")


def sigma_map(kind: str, max_sigma: float, luminance: torch.Tensor) -> torch.Tensor:
    """The table's sigma map (see ``--map``) from the photo's luminance in [0, 1]."""
    if kind == "constant":
        return torch.full_like(luminance, max_sigma)
    if kind == "octave":
        return max_sigma * torch.exp2(luminance - 1.0)
    return max_sigma * luminance


PHASES = {
    "blur_exact_small": "exact windows",
    "_blur_levels": "levels",
    "stencil_weights": "weights",
    "_plan_subtiles": "plan",
}


def phase_times(image: torch.Tensor, sigma: torch.Tensor, device: torch.device) -> str:
    """One fast run with the backend's phases wrapped: each synchronised and timed, in ms."""
    spent = dict.fromkeys(PHASES.values(), 0.0)
    originals = {name: getattr(levels, name) for name in PHASES}

    def timing(name: str, function: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*args: object, **kwargs: object) -> object:
            synchronize(device)
            start = time.perf_counter()
            result = function(*args, **kwargs)
            synchronize(device)
            spent[PHASES[name]] += time.perf_counter() - start
            return result

        return wrapper

    try:
        for name, function in originals.items():
            setattr(levels, name, timing(name, function))
        synchronize(device)
        start = time.perf_counter()
        adaptive_blur(image, sigma, method="fast", backend=FAST_BACKEND)
        synchronize(device)
        total = time.perf_counter() - start
    finally:
        for name, function in originals.items():
            setattr(levels, name, function)
    rest = total - sum(spent.values())
    return (
        " ".join(f"{name} {seconds * 1000:.1f}" for name, seconds in spent.items())
        + f" rest {rest * 1000:.1f} ms"
    )


def peak_memory(image: torch.Tensor, sigma: torch.Tensor, device: torch.device) -> str:
    """On CUDA: the most memory one fast call holds beyond its input and output, in MiB."""
    if device.type != "cuda":
        return "-"
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = adaptive_blur(image, sigma, method="fast", backend=FAST_BACKEND)
    peak = torch.cuda.max_memory_allocated(device) - before - out.numel() * out.element_size()
    return f"{peak / 2**20:.0f}"


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def exact_backend_name(device: torch.device) -> str:
    return registry.choose_backend("exact", None, device).backend.name


def exact_time(
    image: torch.Tensor, sigma: torch.Tensor, limit: float, device: torch.device
) -> tuple[float, bool]:
    """Seconds for the exact method on the whole image, or an estimate from a crop.

    Centre crops of 128, then 512 pixels a side are timed (after a warm-up each); a
    crop's time scaled by the pixel count estimates the whole (fixed costs make small
    crops overestimate). The whole image is timed only if the estimate is within
    ``limit``. Returns ``(seconds, estimated)``.
    """
    height, width = sigma.shape
    estimate = math.inf
    for side in (128, 512):
        side_y, side_x = min(height, side), min(width, side)
        y0, x0 = (height - side_y) // 2, (width - side_x) // 2
        part = image[:, y0 : y0 + side_y, x0 : x0 + side_x]
        part_sigma = sigma[y0 : y0 + side_y, x0 : x0 + side_x]
        seconds = measure(
            functools.partial(adaptive_blur, part, part_sigma, method="exact"), 1, device=device
        ).wall
        estimate = seconds * (height * width) / (side_y * side_x)
        if estimate <= limit or estimate > 20 * limit or side_y * side_x == height * width:
            break
    if estimate > limit:
        return estimate, True
    whole = functools.partial(adaptive_blur, image, sigma, method="exact")
    return measure(whole, 1, device=device).wall, False


def crop_accuracy(
    image: torch.Tensor, sigma: torch.Tensor, out: torch.Tensor, side: int
) -> tuple[str, str, str]:
    """PSNR, max error (LSB) and max 8-bit difference of ``out`` on a centre crop."""
    height, width = sigma.shape
    side_y, side_x = min(side, height), min(side, width)
    y0, x0 = (height - side_y) // 2, (width - side_x) // 2
    crop_sigma = sigma[y0 : y0 + side_y, x0 : x0 + side_x]
    expected = exact_float64(image.cpu(), crop_sigma.cpu(), y0, x0)
    return error_stats(out[:, y0 : y0 + side_y, x0 : x0 + side_x].double().cpu(), expected)


def error_stats(result: torch.Tensor, expected: torch.Tensor) -> tuple[str, str, str]:
    error = (result - expected).abs()
    mse = float((error * error).mean())
    psnr = "inf" if mse == 0 else f"{10 * math.log10(1 / mse):.1f}"
    codes = ((result.clamp(0, 1) * 255).round() - (expected.clamp(0, 1) * 255).round()).abs().max()
    return psnr, f"{float(error.max()) * 255:.3f}", f"{int(codes)}"


# --- synthetic worst cases --------------------------------------------------------------------


def structures(size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size]
    centre = size // 2
    chebyshev = np.maximum(abs(y - centre), abs(x - centre))
    gray = photo_tensor(512, 512).mean(0).numpy()[200 : 200 + size, 220 : 220 + size]
    return {
        "step": (x >= centre).astype(float),
        "diagonal": (x + 0.7 * y >= 0.85 * size).astype(float),
        "line": (x == centre).astype(float),
        "dot": ((x == centre) & (y == centre)).astype(float),
        "check8": ((x // 8 + y // 8) % 2).astype(float),
        "check16": ((x // 16 + y // 16) % 2).astype(float),
        "check21": ((x // 21 + y // 21) % 2).astype(float),
        "rings1": (chebyshev % 2).astype(float),
        "rings3": ((chebyshev // 3) % 2).astype(float),
        "noise": (rng.random((size, size)) > 0.5).astype(float),
        "photo": gray.astype(float),
    }


def corpus_sigma_maps(size: int, top: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size]
    luminance = luma(photo_tensor(512, 512)).double().numpy()[100 : 100 + size, 150 : 150 + size]
    blocks = np.kron(rng.random((size // 16 + 1, size // 16 + 1)), np.ones((16, 16)))[:size, :size]
    return {
        "luminance": top * luminance,
        "ramp": top * (x + y) / (2 * size - 2),
        "jumps": top * blocks,
        "constant": np.full((size, size), top * rng.uniform(0.1, 1.0)),
    }


def run_corpus(device_name_: str) -> None:
    size = 128
    rng = np.random.default_rng(0)
    images = structures(size, rng)
    names = list(images)
    batch = torch.from_numpy(np.stack([images[name] for name in names])).float()[:, None]
    print(
        f"max |fast - exact| in LSB over {size}x{size} images, float64 exact = {exact_float64_backend()}"
    )
    print(
        f"{'max σ':>6} {'σ map':>10}  " + " ".join(f"{name:>9}" for name in names) + "   min PSNR"
    )
    worst = 0.0
    for top in (2.0, 4.0, 8.0, 16.0, 32.0):
        for map_name, sigma_np in corpus_sigma_maps(size, top, rng).items():
            sigma = torch.from_numpy(sigma_np).float()
            log(f"max sigma {top:g}, {map_name}")
            out = adaptive_blur(
                batch.to(device_name_), sigma.to(device_name_), method="fast", backend=FAST_BACKEND
            )
            errors, psnrs = [], []
            for index in range(len(names)):
                expected = exact_float64(batch[index], sigma)
                psnr, max_lsb, _ = error_stats(out[index].double().cpu(), expected)
                errors.append(float(max_lsb))
                psnrs.append(float(psnr) if psnr != "inf" else math.inf)
            worst = max(worst, *errors)
            print(
                f"{top:>6g} {map_name:>10}  "
                + " ".join(f"{e:>9.3f}" for e in errors)
                + f"   {min(psnrs):.1f}"
            )
    print(f"largest error over the maps above: {worst:.3f} LSB")
    sweep_constant_sigmas(batch, names, device_name_)


def sweep_constant_sigmas(batch: torch.Tensor, names: list[str], device_name_: str) -> None:
    """Every pixel at one sigma, one corner pixel at a larger 'top' that places the nodes."""
    size = batch.shape[-1]
    ratio = 2.0 ** (1.0 / levels.LEVELS_PER_OCTAVE)
    worst = np.zeros(len(names))
    where: list[tuple[float, float]] = [(0.0, 0.0)] * len(names)
    for phase in (0.15, 0.5, 0.85):
        log(f"constant-sigma sweep, grid phase {phase}")
        for sigma_value in np.exp(np.linspace(math.log(3.2), math.log(30.0), 48)):
            top = float(sigma_value * ratio ** (phase + (0 if phase < 0.5 else 1)))
            sigma = torch.full((size, size), float(sigma_value))
            sigma[0, 0] = min(top, 32.0)
            out = adaptive_blur(
                batch.to(device_name_), sigma.to(device_name_), method="fast", backend=FAST_BACKEND
            )
            expected = constant_blur(batch, float(sigma[1, 1]))
            error = (out.double().cpu() - expected).abs()[..., 1:, 1:].flatten(1).amax(
                1
            ).numpy() * 255
            for index in range(len(names)):
                if error[index] > worst[index]:
                    worst[index], where[index] = (
                        error[index],
                        (float(sigma[1, 1]), float(sigma[0, 0])),
                    )
    print("constant sigma in [3.2, 30], node grid in 6 positions: max error in LSB (at sigma, top)")
    for index, name in enumerate(names):
        print(f"  {name:>9}: {worst[index]:.3f}  ({where[index][0]:.2f}, {where[index][1]:.2f})")
    print(f"largest: {worst.max():.3f} LSB")


def constant_blur(batch: torch.Tensor, sigma: float) -> torch.Tensor:
    """Exact float64 blur at one sigma (separable, reflect border) of ``(N, 1, S, S)``."""
    radius = math.floor(3.0 * sigma + 0.5)
    size = batch.shape[-1]
    padded = read_window(batch.double(), -radius, size + radius, -radius, size + radius, "reflect")
    taps = torch.exp(
        -(torch.arange(-radius, radius + 1, dtype=torch.float64) ** 2) / (2 * sigma * sigma)
    )
    taps = taps / taps.sum()
    rows = torch.nn.functional.conv2d(padded, taps.view(1, 1, 1, -1))
    return torch.nn.functional.conv2d(rows, taps.view(1, 1, -1, 1))


# --- the proven bound -------------------------------------------------------------------------


def run_bound(max_sigma: float, truncate: float) -> None:
    """``sup`` over images in [0, 1] of |fast - exact|, for the levels, swept over sigma and grid."""
    lowest = (levels.EXACT_RADIUS + 0.5) / truncate  # smaller sigmas are computed exactly
    ratio = 2.0 ** (1.0 / levels.LEVELS_PER_OCTAVE)
    edges = [lowest, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0]
    edges = [edge for edge in edges if edge < max_sigma] + [max_sigma]
    worst = np.zeros(len(edges) - 1)
    peaks: list[tuple[float, float, float]] = []  # (bound, sigma, top)
    sigmas = np.exp(np.linspace(math.log(lowest), math.log(max_sigma), 1500))
    log(f"{len(sigmas)} pixel sigmas x 24 grid positions, then a finer look at the 20 worst")
    for sigma_value in sigmas:
        for steps in (0, 1, 2):  # the top interval, the next one, the interior
            for phase in np.arange(8) / 8:
                top = sigma_value * ratio ** (steps + phase)
                if top <= max_sigma:
                    peaks.append((pixel_bound(sigma_value, top, truncate), sigma_value, top))
    peaks.sort(reverse=True)
    for _, sigma_value, top in peaks[:20]:  # the sup may sit between samples: look closer
        for sigma_scale in np.linspace(0.996, 1.004, 17):
            near = max(sigma_value * sigma_scale, lowest)
            for top_scale in np.linspace(ratio ** (-1 / 16), ratio ** (1 / 16), 9):
                peaks.append((pixel_bound(near, top * top_scale, truncate), near, top * top_scale))
    for value, sigma_value, _ in peaks:
        bin_index = int(np.searchsorted(edges, sigma_value, side="right")) - 1
        bin_index = min(max(bin_index, 0), len(worst) - 1)  # exp(log(x)) may round below x
        worst[bin_index] = max(worst[bin_index], value)
    print(
        f"proven max |fast - exact| over all images in [0, 1], truncate {truncate:g}, "
        f"{levels.LEVELS_PER_OCTAVE} levels per octave (LSB = 1/255):"
    )
    for index, value in enumerate(worst):
        print(f"  sigma in [{edges[index]:6.2f}, {edges[index + 1]:6.2f}): {value * 255:.3f} LSB")
    print(f"  sigma below {lowest:.2f}: exact (float rounding only)")
    print(f"largest: {worst.max() * 255:.3f} LSB; ERROR_BOUND = {levels.ERROR_BOUND * 255:.3f} LSB")


def pixel_bound(sigma: float, top: float, truncate: float) -> float:
    """``0.5 * ||sum_k w_k K(s_k) - K(sigma)||_1`` for nodes placed by ``top``.

    Both sigmas are rounded to float32 first, as the pixels' sigmas are.
    """
    sigma, top = float(np.float32(sigma)), float(np.float32(max(top, sigma)))
    nodes = levels.level_sigmas(sigma, top)
    weights = (
        levels.level_weights(torch.tensor([[[[sigma]]]], dtype=torch.float32), nodes)
        .flatten()
        .double()
    )
    reach = math.floor(truncate * top + 0.5)

    def kernel(s: float) -> np.ndarray:
        radius = math.floor(truncate * s + 0.5)
        d = np.arange(-reach, reach + 1)
        taps = np.exp(-(d * d) / (2 * s * s)) * (np.abs(d) <= radius)
        return taps / taps.sum()

    own = kernel(sigma)
    difference = -np.outer(own, own)
    for index, node in enumerate(nodes):
        weight = float(weights[index])
        if weight != 0.0:
            line = kernel(node)
            difference += weight * np.outer(line, line)
    return 0.5 * float(np.abs(difference).sum())


def strips_sweep_sigmas(
    max_sigma: float, truncate: float, stride: int, dense_below: float = 64.0
) -> list[float]:
    """Pixel sigmas (float32 values) for the strips sweep: three in each radius band.

    Each band ``R`` (``sigma`` in ``[(R - 1/2), (R + 1/2)) / truncate``) from the first
    above the exact path gets its first float32 sigma, its middle and its last float32
    sigma; above ``dense_below`` only every ``stride``-th band (and the last).
    """
    first = levels.EXACT_RADIUS + 1
    last = math.floor(truncate * max_sigma + 0.5)
    values: list[float] = []
    for radius in range(first, last + 1):
        low, high = (radius - 0.5) / truncate, (radius + 0.5) / truncate
        if low > dense_below and (radius - first) % stride and radius != last:
            continue
        for value in (low, 0.5 * (low + high), high):
            value32 = np.float32(value)
            while math.floor(truncate * float(value32) + 0.5) < radius:
                value32 = np.nextafter(value32, np.float32(np.inf))
            while math.floor(truncate * float(value32) + 0.5) > radius:
                value32 = np.nextafter(value32, np.float32(0))
            if float(value32) <= max_sigma:
                values.append(float(value32))
    return values


def run_strips_bound(
    max_sigma: float,
    truncate: float,
    per_octave: int,
    stride: int,
    main: str = "fft",
    images: str = "fft",
) -> None:
    """``sup`` over images in [0, 1] of |strips - exact|, swept over sigma and node grid.

    ``main``: the main term (``"fft"`` or ``"pyramid"``); ``images``: the strip images
    (``"fft"`` or ``"recursive"``); see :func:`strips.pixel_bound`.
    """
    ratio = 2.0 ** (1.0 / per_octave)
    lowest = (levels.EXACT_RADIUS + 0.5) / truncate
    edges = [lowest, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
    edges = [edge for edge in edges if edge < max_sigma] + [max_sigma]
    worst = np.zeros(len(edges) - 1)
    sigmas = strips_sweep_sigmas(max_sigma, truncate, stride)
    grid = [(steps, phase) for steps in (0, 1, 2) for phase in (0.0, 0.25, 0.5, 0.75)]
    log(f"{len(sigmas)} pixel sigmas x {len(grid)} grid positions, then the 12 worst up close")
    peaks: list[tuple[float, float, float]] = []  # (bound, sigma, top)

    def record(sigma_value: float, top: float) -> None:
        top = float(np.float32(max(top, sigma_value)))
        nodes = strips.node_sigmas(sigma_value, top, per_octave)
        bound = strips.pixel_bound(sigma_value, nodes, truncate, main, images)
        peaks.append((bound, sigma_value, top))

    for index, sigma_value in enumerate(sigmas):
        if index % 200 == 0:
            log(f"sigma {sigma_value:.2f}")
        for steps, phase in grid:
            record(sigma_value, sigma_value * ratio ** (steps + phase))
    peaks.sort(reverse=True)
    for _, sigma_value, top in peaks[:12]:  # the sup may sit between samples: look closer
        for top_scale in np.linspace(ratio ** (-1 / 8), ratio ** (1 / 8), 9):
            record(sigma_value, top * top_scale)
    for value, sigma_value, _ in peaks:
        bin_index = int(np.searchsorted(edges, sigma_value, side="right")) - 1
        worst[min(max(bin_index, 0), len(worst) - 1)] = max(
            worst[min(max(bin_index, 0), len(worst) - 1)], value
        )
    best = max(peaks)
    print(
        f"strips: proven max |fast - exact| over all images in [0, 1], truncate {truncate:g}, "
        f"{per_octave} levels per octave, poles {strips.POLE_RATES}, "
        f"{strips.TABLE_STEPS} table steps per radius, main term {main}, strip images "
        f"{images} (LSB = 1/255):"
    )
    for index, value in enumerate(worst):
        print(f"  sigma in [{edges[index]:6.2f}, {edges[index + 1]:6.2f}): {value * 255:.4f} LSB")
    print(f"  sigma below {lowest:.2f}: exact (float rounding only)")
    print(
        f"largest: {best[0] * 255:.4f} LSB at sigma {best[1]:.4f}, top {best[2]:.4f}; "
        f"{len(peaks)} kernels; ERROR_BOUND = {strips.ERROR_BOUND * 255:.3f} LSB"
    )


def run_design(truncate: float) -> None:
    """Worst cases (LSB) of node grids with other densities and stencils, and of coarse levels."""
    bands = [(3.17, 4.0), (4.0, 8.0), (8.0, 16.0), (16.0, 32.0)]
    print(f"worst |fast - exact| over all images in [0, 1] (LSB), truncate {truncate:g}")
    print("uniform nodes in log(sigma), Lagrange stencil centred on the pixel's interval:")
    print(
        f"{'levels/octave':>13} {'stencil':>7} "
        + " ".join(f"[{a:g},{b:g})".rjust(9) for a, b in bands)
    )
    for per_octave, points in [(5, 4), (4, 4), (4, 6), (3, 4), (3, 6), (2, 8)]:
        worst = []
        for low, high in bands:
            step = math.log(2.0) / per_octave
            sigmas = np.exp(np.linspace(math.log(low), math.log(high), 25))
            phases = np.arange(6) / 6 * step
            worst.append(
                max(
                    uniform_grid_bound(float(s), step, float(phase), points, truncate)
                    for s in sigmas
                    for phase in phases
                )
            )
        print(f"{per_octave:>13} {points:>7} " + " ".join(f"{w * 255:9.3f}" for w in worst))
    print("one level at sigma s computed every h pixels and interpolated (cubic) back:")
    steps = [2, 4, 8]
    print(f"{'s':>5} " + " ".join(f"h={h}".rjust(7) for h in steps))
    for s in [8.0, 16.0, 32.0, 64.0]:
        cells = [
            coarse_level_bound(s, h, truncate) * 255 if h <= s / 2 else math.nan for h in steps
        ]
        print(f"{s:5g} " + " ".join(f"{c:7.3f}" for c in cells))


def truncated_kernel(s: float, truncate: float, reach: int, centre: float = 0.0) -> np.ndarray:
    """The normalised truncated 1-D Gaussian of sigma ``s`` centred at ``centre``, on ``-reach..reach``."""
    radius = math.floor(truncate * s + 0.5)
    d = np.arange(-reach, reach + 1) - centre
    taps = np.exp(-(d * d) / (2 * s * s)) * (np.abs(d) <= radius)
    whole = np.arange(-radius, radius + 1)
    return taps / np.exp(-(whole * whole) / (2 * s * s)).sum()


def lagrange_weights(u: float, points: list[float]) -> list[float]:
    weights = []
    for i, ti in enumerate(points):
        weight = 1.0
        for j, tj in enumerate(points):
            if j != i:
                weight *= (u - tj) / (ti - tj)
        weights.append(weight)
    return weights


def uniform_grid_bound(
    sigma: float, step: float, phase: float, points: int, truncate: float
) -> float:
    """``0.5 * ||sum_k w_k K(s_k) - K(sigma)||_1`` for nodes ``exp(phase + k * step)``."""
    u = math.log(sigma)
    first = math.floor((u - phase) / step) - (points // 2 - 1)
    logs = [phase + (first + i) * step for i in range(points)]
    nodes = [math.exp(t) for t in logs]
    reach = math.floor(truncate * max(nodes) + 0.5)
    own = truncated_kernel(sigma, truncate, reach)
    difference = -np.outer(own, own)
    for weight, node in zip(lagrange_weights(u, logs), nodes, strict=True):
        line = truncated_kernel(node, truncate, reach)
        difference += weight * np.outer(line, line)
    return 0.5 * float(np.abs(difference).sum())


def coarse_level_bound(s: float, step: int, truncate: float) -> float:
    """Worst ``0.5 * ||interpolated K - K||_1`` over the pixel's position between coarse samples."""
    reach = math.floor(truncate * s + 0.5) + 3 * step
    exact = truncated_kernel(s, truncate, reach)
    worst = 0.0
    for offset in range(step):
        weights = lagrange_weights(offset / step, [-1.0, 0.0, 1.0, 2.0])
        line = sum(
            w * truncated_kernel(s, truncate, reach, (node - 1) * step - offset)
            for node, w in enumerate(weights)
        )
        difference = np.outer(line, line) - np.outer(exact, exact)
        worst = max(worst, 0.5 * float(np.abs(difference).sum()))
    return worst


if __name__ == "__main__":
    main()
