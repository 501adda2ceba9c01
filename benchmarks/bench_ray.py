"""How fast is a Ray Data pipeline with ``adaptiveblur.BlurBatch``, against ``adaptiveblur batch``
on the same files?

Makes ``--count`` (default 200) different ``--size`` (default 1000x1000) RGB PNGs of the noisy
sample photo (``_common.noisy_photo_image``, one grain seed per file), starts a local Ray
cluster once in this process (``ray.init(num_cpus=--cpus)``, its start-up reported apart),
then ``--repeat`` times, alternately:

* ``ray + write_images``: ``read_images(IN, include_paths=True)``, ``map_batches(BlurBatch,
  fn_constructor_kwargs={"max_sigma": S, "device": D}, compute=ActorPoolStrategy(size=A),
  num_cpus=C or num_gpus=1, batch_size=B, batch_format="numpy")``, ``write_images(OUT,
  column="image", file_format="png")`` (pillow's PNG encoder, zlib level 6);
* ``ray, no write``: the same pipeline, its batches taken back into this process instead of
  written;
* ``adaptiveblur batch IN OUT --max-sigma S --device D --quiet --report R.json``, a whole
  process (start-up included); its report's in-run images/s beside it.

Prints medians of wall seconds and images/s (count / wall) on stdout; progress on stderr.
On a CPU-only machine leave CPUs for the read tasks: ``--actors 1 --actor-cpus 1`` on 2 CPUs
(two one-CPU actors there take both CPUs and the reads never run). ``--device cuda`` gives
each actor one GPU (``num_gpus=1``) and blurs there.

    python benchmarks/bench_ray.py
    python benchmarks/bench_ray.py --count 50 --repeat 1
    python benchmarks/bench_ray.py --device cuda --actors 1 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (  # benchmarks/_common.py, beside this script
    adaptiveblur_command,
    log,
    machine_line,
    noisy_photo_image,
    parse_size,
    parsed,
)


def make_images(folder: Path, count: int, size: tuple[int, int]) -> None:
    """``count`` noisy photos as PNG, each with grain of its own seed."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        noisy_photo_image(*size, seed=number).save(folder / f"photo{number:04d}.png")


def ray_pipeline(source: Path, args: argparse.Namespace) -> Any:
    """The dataset of :func:`main`'s Ray rows, blurred (lazy: nothing runs yet)."""
    import ray

    from adaptiveblur import BlurBatch

    resources = {"num_gpus": 1} if args.device.startswith("cuda") else {"num_cpus": args.actor_cpus}
    return ray.data.read_images(str(source), include_paths=True).map_batches(
        BlurBatch,
        fn_constructor_kwargs={"max_sigma": args.max_sigma, "device": args.device},
        compute=ray.data.ActorPoolStrategy(size=args.actors),
        batch_size=args.batch_size,
        batch_format="numpy",
        **resources,
    )


def ray_written(source: Path, out: Path, args: argparse.Namespace) -> float:
    """Wall seconds of the pipeline writing PNGs into a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    ray_pipeline(source, args).write_images(str(out), column="image", file_format="png")
    wall = time.perf_counter() - started
    written = len(list(out.glob("*.png")))
    if written != args.count:
        sys.exit(f"expected {args.count} images written, found {written}")
    return wall


def ray_taken(source: Path, _: Path, args: argparse.Namespace) -> float:
    """Wall seconds of the pipeline with its batches taken back into this process."""
    started = time.perf_counter()
    images = sum(
        len(batch["image"])
        for batch in ray_pipeline(source, args).iter_batches(batch_size=None, batch_format="numpy")
    )
    wall = time.perf_counter() - started
    if images != args.count:
        sys.exit(f"expected {args.count} images back, got {images}")
    return wall


def batch_command(source: Path, out: Path, report: Path, args: argparse.Namespace) -> list[str]:
    return [
        *adaptiveblur_command(),
        "batch",
        str(source),
        str(out),
        "--max-sigma",
        str(args.max_sigma),
        "--device",
        args.device,
        "--quiet",
        "--report",
        str(report),
    ]


def timed_batch(source: Path, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """Wall seconds of one ``adaptiveblur batch`` into a fresh ``out``, and its in-run images/s."""
    shutil.rmtree(out, ignore_errors=True)
    report = out.with_name("report.json")
    command = batch_command(source, out, report, args)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed ({done.returncode}):\n{done.stderr}")
    summary = json.loads(report.read_text())
    if summary["done"] != args.count:
        sys.exit(f"expected {args.count} images done, the report says {summary['done']}")
    return wall, float(summary["images_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200, help="images (default 200)")
    parser.add_argument("--size", default="1000x1000", help="WIDTHxHEIGHT (default 1000x1000)")
    parser.add_argument("--max-sigma", type=float, default=4.0, help="default 4")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--cpus", type=int, help="ray.init(num_cpus=...); default: Ray's count")
    parser.add_argument("--actors", type=int, default=1, help="actor pool size (default 1)")
    parser.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs per actor (CPU)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median; default 3)")
    parser.add_argument("--workdir", help="keep images and outputs here (default: a temp dir)")
    args = parser.parse_args()
    size = parsed(parser, parse_size, args.size)
    if args.count < 1 or args.repeat < 1 or args.actors < 1:
        parser.error("expected --count, --repeat and --actors >= 1")

    import ray

    temporary = None if args.workdir else tempfile.TemporaryDirectory(prefix="bench_ray-")
    work = Path(args.workdir or temporary.name)  # type: ignore[union-attr]
    try:
        log(f"making {args.count} images of {args.size} in {work / 'in'} ...")
        make_images(work / "in", args.count, size)
        started = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        cluster_start = time.perf_counter() - started
        log(f"Ray cluster started in {cluster_start:.1f} s; warm-up run ...")
        ray_taken(work / "in", work / "ray", args)  # the kernel built and cached, pages warm
        rays: dict[str, Callable[[Path, Path, argparse.Namespace], float]] = {
            "ray + write_images": ray_written,
            "ray, no write": ray_taken,
        }
        walls: dict[str, list[float]] = {name: [] for name in [*rays, "adaptiveblur batch"]}
        in_run: list[float] = []
        for attempt in range(args.repeat):
            for name, run in rays.items():
                walls[name].append(run(work / "in", work / "ray", args))
                log(f"run {attempt + 1}/{args.repeat}, {name}: {walls[name][-1]:.1f} s")
            wall, rate = timed_batch(work / "in", work / "batch", args)
            walls["adaptiveblur batch"].append(wall)
            in_run.append(rate)
            log(f"run {attempt + 1}/{args.repeat}, adaptiveblur batch: {wall:.1f} s")
    finally:
        ray.shutdown()
        if temporary is not None:
            temporary.cleanup()

    strategy = (
        f"{args.actors} actor(s) x 1 GPU"
        if args.device.startswith("cuda")
        else f"{args.actors} actor(s) x {args.actor_cpus:g} CPU"
    )
    print(f"machine: {machine_line(args.device)}")
    print(
        f"{args.count} PNGs of {args.size} (noisy photo), max sigma {args.max_sigma:g}, device "
        f"{args.device}; Ray {ray.__version__}: {strategy}, batch size {args.batch_size}, "
        f"cluster start {cluster_start:.1f} s (not in the rows); medians of {args.repeat}"
    )
    print()
    print("| pipeline | wall s | images/s |")
    print("|---|---:|---:|")
    for name, values in walls.items():
        wall = statistics.median(values)
        extra = f" (in-run {statistics.median(in_run):.1f})" if name == "adaptiveblur batch" else ""
        print(f"| {name} | {wall:.2f} | {args.count / wall:.1f}{extra} |")


if __name__ == "__main__":
    main()
