"""How fast is ``adaptiveblur batch`` per image, against decoding and encoding alone?

Makes ``--count`` (default 24) different 1000x1000 RGB photos from
``sample_images/astronaut.jpg`` (random crop, flip and a slight brightness change, resized),
alternately PNG and JPEG (quality 95), then for each ``--jobs`` value (default 1,2,4) runs,
in a subprocess, exactly what a user would::

    adaptiveblur batch IN OUT --max-sigma 4 --jobs J --quiet --report R.json [pass-through]

over all N images and over 1 of them, and reports

* ``wall N``: seconds for the whole command over N images (start-up included),
* ``img/s``: N / wall N; ``in-run img/s``: the report's images_per_second (no start-up),
* ``per image``: (wall N - wall 1) / (N - 1), the cost of each image after start-up,
* ``codec/img``: seconds per image to decode and encode the same files alone, with the
  functions the batch itself uses (``adaptiveblur.io``: same formats and settings, atomic
  writes), in J threads,
* ``vs codec``: codec/img / per image; 1.0 would be as fast as decoding and encoding alone.

The issue's targets: per image <= 0.3 s on the 2-core CPU; on a GPU host a throughput within
90% of decode + encode alone (``vs codec`` >= 0.9). Walls are medians of ``--repeat`` runs.

``--steady`` measures the same thing without start-up: from this process, after a warm-up
batch, ``adaptiveblur.batch.runner.run_batch`` over the N images and decode + encode alone run the same way
(threads here, or ``--processes`` worker processes), alternately, ``--repeat`` times per
``--jobs`` and ``--processes`` value. Images/s count from the J-th result to the last, so the
start-up of worker processes is left out (the "whole" column has it in). Differences of
whole-process walls are noisy when start-up is several seconds (a GPU host); this is not.
``--without-graphs`` adds the batch without recorded CUDA graphs (``run_batch(cuda_graphs=False)``)
to the same alternation; ``--each-size K`` gives every K images a size of their own (K = 2 or 3:
sizes recorded and hardly replayed, the graphs' worst case).

``--backend``, ``--method`` and ``--device`` are passed to the command. Prints one table on
stdout; progress goes to stderr.

    python benchmarks/bench_batch.py
    python benchmarks/bench_batch.py --backend native
    python benchmarks/bench_batch.py --device cuda --jobs 2,4,8
    python benchmarks/bench_batch.py --steady --device cuda --count 384 --jobs 8,16 --processes 1,2,4
    python benchmarks/bench_batch.py --steady --device cuda --count 384 --jobs 16 --without-graphs
    python benchmarks/bench_batch.py --steady --device cuda --count 192 --jobs 16 --without-graphs \
        --each-size 3
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import (  # benchmarks/_common.py, beside this script
    PHOTO,
    adaptiveblur_command,
    load_photo,
    log,
    machine_line,
    parse_ints,
    parsed,
)
from PIL import Image

from adaptiveblur.batch.workers import run_tasks
from adaptiveblur.io import load_image, save_image

SIDE = 1000
TARGET_PER_IMAGE_S = 0.3  # on the 2-core CPU
TARGET_CODEC_RATIO = 0.9  # on a GPU host


def make_images(folder: Path, count: int, seed: int, each_size: int = 0) -> list[Path]:
    """``count`` different 1 MP photos, even ones PNG and odd ones JPEG (quality 95).

    All ``SIDE x SIDE``, or with ``each_size`` K > 0: every K of them (in a shuffled
    order) share a size of their own, ``SIDE`` wide and a little less high.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    photo = load_photo()
    width, height = photo.size
    for index in range(count):
        margin = int(0.06 * min(width, height))
        left, top = (int(value) for value in rng.integers(0, margin + 1, 2))
        right = width - int(rng.integers(0, margin + 1))
        bottom = height - int(rng.integers(0, margin + 1))
        side_y = SIDE - index // each_size if each_size > 0 else SIDE
        picture = photo.crop((left, top, right, bottom)).resize(
            (SIDE, side_y), Image.Resampling.BICUBIC
        )
        if rng.random() < 0.5:
            picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        gain = rng.uniform(0.92, 1.08)
        values = np.clip(np.asarray(picture, dtype=np.float32) * gain, 0, 255).astype(np.uint8)
        picture = Image.fromarray(values)
        if index % 2 == 0:
            path = folder / f"photo{index:03d}.png"
            picture.save(path, format="PNG")
        else:
            path = folder / f"photo{index:03d}.jpg"
            picture.save(path, format="JPEG", quality=95)
        paths.append(path)
    if each_size > 0:
        rng.shuffle(paths)
    return paths


def timed_batch(
    prefix: list[str], source: Path, out: Path, report: Path, jobs: int, extra: list[str]
) -> tuple[float, dict]:
    """Wall seconds of one ``adaptiveblur batch`` over ``source`` into a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    command = [*prefix, "batch", str(source), str(out), "--jobs", str(jobs), "--quiet"]
    command += ["--report", str(report), *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed ({done.returncode}):\n{done.stderr}")
    summary = json.loads(report.read_text())
    expected = len(list(source.iterdir()))
    if summary["done"] != expected:
        sys.exit(f"expected {expected} images done, the report says {summary['done']}")
    return wall, summary


def codec_seconds(paths: list[Path], out: Path, jobs: int) -> float:
    """Wall seconds to decode and encode every file (its own format) in ``jobs`` threads.

    With the same functions the batch uses (``load_image(integers=True)``, ``save_image``:
    JPEG quality 95 4:4:4, PNG at zlib level 2 with our encoder, atomic writes), so the
    ratio shows what the blur adds to the I/O, nothing else.
    """
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(codec_worker(str(out)), paths))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=24, help="images (default 24)")
    parser.add_argument("--jobs", default="1,2,4", help="--jobs values (default 1,2,4)")
    parser.add_argument("--max-sigma", default="4", help="default 4")
    parser.add_argument("--backend", help="passed to adaptiveblur batch")
    parser.add_argument("--method", help="passed to adaptiveblur batch")
    parser.add_argument("--device", help="passed to adaptiveblur batch")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="keep images and outputs here (default: a temp dir)")
    parser.add_argument("--steady", action="store_true", help="in-process steady state (above)")
    parser.add_argument(
        "--processes", default="1", help="with --steady: worker-process counts (default 1)"
    )
    parser.add_argument(
        "--each-size",
        type=int,
        default=0,
        help="with --steady: every K images share a size of their own (default: all one size)",
    )
    parser.add_argument(
        "--without-graphs",
        action="store_true",
        help="with --steady: also the batch without recorded CUDA graphs",
    )
    args = parser.parse_args()
    if args.steady:
        run_steady(args, parser)
        return
    if args.count < 2:
        sys.exit("expected --count >= 2 (the per-image cost needs N and 1)")
    job_values = parsed(parser, parse_ints, args.jobs)

    extra = ["--max-sigma", args.max_sigma]
    for option in ("backend", "method", "device"):
        if getattr(args, option) is not None:
            extra += [f"--{option}", getattr(args, option)]
    prefix = adaptiveblur_command()
    temporary = None if args.workdir else tempfile.TemporaryDirectory(prefix="bench_batch-")
    work = Path(args.workdir or temporary.name)  # type: ignore[union-attr]
    try:
        log(f"making {args.count} images in {work / 'in'} ...")
        paths = make_images(work / "in", args.count, args.seed)
        single = work / "one"
        shutil.rmtree(single, ignore_errors=True)
        single.mkdir()
        shutil.copy2(paths[0], single / paths[0].name)
        megabytes = sum(path.stat().st_size for path in paths) / 1e6

        rows = []
        for jobs in job_values:
            walls_n, walls_1, rates, codecs = [], [], [], []
            for attempt in range(args.repeat):
                log(f"jobs {jobs}, run {attempt + 1}/{args.repeat}: batch of {args.count} ...")
                wall, summary = timed_batch(
                    prefix, work / "in", work / "out", work / "report.json", jobs, extra
                )
                walls_n.append(wall)
                rates.append(summary["images_per_second"])
                log(f"  {wall:.2f} s; batch of 1 ...")
                walls_1.append(
                    timed_batch(prefix, single, work / "out1", work / "report1.json", jobs, extra)[
                        0
                    ]
                )
                log(f"  {walls_1[-1]:.2f} s; decode + encode alone ...")
                codecs.append(codec_seconds(paths, work / "codec", jobs))
            wall_n, wall_1 = statistics.median(walls_n), statistics.median(walls_1)
            per_image = (wall_n - wall_1) / (args.count - 1)
            codec = statistics.median(codecs) / args.count
            rows.append((jobs, wall_n, wall_1, per_image, statistics.median(rates), codec))
    finally:
        if temporary is not None:
            temporary.cleanup()

    device = args.device or "auto"
    shown = ["adaptiveblur", "batch", "IN", "OUT", "--jobs", "J", "--quiet", "--report", "R.json"]
    print(f"machine: {machine_line(device)}")
    print(f"the command runs as: {shlex.join(prefix)}")
    print(f"command: {shlex.join([*shown, *extra])}")
    print(
        f"images: {args.count} x {SIDE}x{SIDE} RGB from {PHOTO.name} "
        f"({(args.count + 1) // 2} PNG, {args.count // 2} JPEG q95), {megabytes:.1f} MB; "
        f"median of {args.repeat} run(s)\n"
    )
    header = (
        f"{'jobs':>4} | {'wall N':>7} {'img/s':>6} {'wall 1':>7} {'per image':>9} "
        f"{'in-run img/s':>12} | {'codec/img':>9} {'codec img/s':>11} | {'vs codec':>8}"
    )
    print(header)
    print("-" * len(header))
    for jobs, wall_n, wall_1, per_image, rate, codec in rows:
        print(
            f"{jobs:>4} | {wall_n:7.2f} {args.count / wall_n:6.2f} {wall_1:7.2f} {per_image:9.3f} "
            f"{rate:12.2f} | {codec:9.3f} {1 / codec:11.2f} | {codec / per_image:8.2f}"
        )
    best = min(rows, key=lambda row: row[3])
    print(
        f"\nseconds. best per-image cost after start-up: {best[3]:.3f} s at --jobs {best[0]} "
        f"(target <= {TARGET_PER_IMAGE_S} s on the 2-core CPU: "
        f"{'met' if best[3] <= TARGET_PER_IMAGE_S else 'not met'}); throughput vs decode + "
        f"encode alone at that --jobs: {best[5] / best[3]:.0%} (GPU-host target >= "
        f"{TARGET_CODEC_RATIO:.0%})."
    )


def run_steady(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Steady-state images/s of run_batch and of decode + encode alone, alternately."""
    from adaptiveblur.batch import Task, spread_devices
    from adaptiveblur.batch.runner import run_batch
    from adaptiveblur.settings import BlurSettings

    settings = BlurSettings(
        max_sigma=float(args.max_sigma),
        method=args.method or "exact",
        backend=args.backend,
        device=args.device or "auto",
    )
    devices = spread_devices(settings.device)
    job_values = parsed(parser, parse_ints, args.jobs)
    process_values = parsed(parser, parse_ints, args.processes)
    with tempfile.TemporaryDirectory(prefix="bench_batch-") as folder:
        work = Path(args.workdir or folder)
        log(f"making {args.count} images in {work / 'in'} ...")
        paths = make_images(work / "in", args.count, args.seed, args.each_size)

        def batch_rates(
            jobs: int, processes: int, chosen: list[Path], graphs: bool = True
        ) -> tuple[float, float]:
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            tasks = [Task(str(p), p.name, str(out / p.name)) for p in chosen]
            clock = Clock()
            summary = run_batch(
                tasks,
                settings,
                devices=devices,
                jobs=jobs,
                processes=processes,
                on_outcome=clock.tick,
                cuda_graphs=graphs,
            )
            if summary.count("done") != len(chosen):
                sys.exit(f"expected {len(chosen)} images done, got {summary.count('done')}")
            return clock.rates(jobs)

        def codec_rates(jobs: int, processes: int) -> tuple[float, float]:
            out = work / "codec"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            clock = Clock()
            run_tasks(
                functools.partial(codec_worker, str(out)),
                paths,
                jobs=jobs,
                processes=processes,
                on_result=clock.tick,
            )
            return clock.rates(jobs)

        batch_rates(max(job_values), 1, paths[: min(len(paths), 16)])  # warm-up
        print(f"machine: {machine_line(args.device or 'auto')}")
        print(
            f"devices {devices}; max σ {args.max_sigma}; {args.count} images "
            f"({SIDE}x{SIDE}, half PNG, half JPEG"
            + (f"; every {args.each_size} a size of their own" if args.each_size > 0 else "")
            + f"); median of {args.repeat} run(s)"
        )
        print(
            "steady img/s: (N - J) / (time of the last result - time of the J-th), J = --jobs "
            "(at most N/4), "
            "so worker start-up is left out; whole: N / wall (start-up in)"
        )
        header = (
            f"{'jobs':>4} {'procs':>5} | {'batch steady':>12} {'whole':>6} | "
            f"{'decode+encode steady':>20} {'whole':>6} | {'ratio':>5}"
        )
        if args.without_graphs:
            header += f" | {'no graphs':>9} {'ratio':>5}"
        print(header)
        print("-" * len(header))
        best_batch = best_codec = 0.0
        for jobs in job_values:
            for processes in process_values:
                batches, codecs, plain = [], [], []
                for _ in range(args.repeat):
                    batches.append(batch_rates(jobs, processes, paths))
                    codecs.append(codec_rates(jobs, processes))
                    if args.without_graphs:
                        plain.append(batch_rates(jobs, processes, paths, graphs=False)[0])
                steady, whole = (statistics.median(values) for values in zip(*batches, strict=True))
                codec, codec_whole = (
                    statistics.median(values) for values in zip(*codecs, strict=True)
                )
                best_batch, best_codec = max(best_batch, steady), max(best_codec, codec)
                row = (
                    f"{jobs:>4} {processes:>5} | {steady:12.1f} {whole:6.1f} | "
                    f"{codec:20.1f} {codec_whole:6.1f} | {steady / codec:5.2f}"
                )
                if plain:
                    row += f" | {statistics.median(plain):9.1f} {statistics.median(plain) / codec:5.2f}"
                print(row, flush=True)
        print(
            f"\nbest batch {best_batch:.1f} img/s against the best decode + encode alone "
            f"{best_codec:.1f} img/s: {best_batch / best_codec:.0%} (GPU-host target >= "
            f"{TARGET_CODEC_RATIO:.0%})"
        )


class Clock:
    """Times of results as they come, from the clock's creation."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.times: list[float] = []

    def tick(self, _: object) -> None:
        self.times.append(time.perf_counter())

    def rates(self, jobs: int) -> tuple[float, float]:
        """``(steady, whole)`` images/s (see the table's heading)."""
        count = len(self.times)
        first = max(1, min(jobs, count // 4))
        steady = (count - first) / (self.times[-1] - self.times[first - 1])
        return steady, count / (self.times[-1] - self.started)


def codec_worker(out: str) -> Callable[[Path], None]:
    """Decode and encode one file, as the batch does (top level: worker processes import it)."""
    return functools.partial(codec_one, out)


def codec_one(out: str, path: Path) -> None:
    save_image(load_image(str(path), integers=True), str(Path(out) / path.name), quality=95)


if __name__ == "__main__":
    main()
