"""adaptiveblur against ImageMagick and GEGL, side by side: time, memory and error.

One table from one run on this machine. Every row is a whole-process command run with
``subprocess`` (median wall time and median CPU time of ``--repeat`` runs, and the largest
peak resident memory of the child, from ``os.wait4``'s ``ru_maxrss``), on a natural photo
(``sample_images/astronaut.jpg`` resized with pillow, bicubic, saved as PNG in a temporary
folder; with ``--image noisy`` it also gets seeded sensor-like grain,
``_common.noisy_photo_image``, as a real photo of that size has) at each ``--sizes`` and
``--sigmas`` (``sigma = max_sigma * Rec. 709 luma``; with ``--map`` the adaptiveblur rows read
it from the same 8-bit gray PNG GEGL is given, ``--map GRAY``):

* ``adaptiveblur run IN OUT --max-sigma S --quiet --device cpu --backend native`` (exact),
* ``adaptiveblur ... --method fast`` (the levels backend),
* ``adaptiveblur ... --backend reference`` (the plain unfold path) on images up to
  ``--reference-max-mp`` megapixels and max-sigmas up to ``--reference-max-sigma`` (default
  1 MP, sigma <= 4), else ``skipped (est. ...)``,
* ImageMagick: ``convert IN ( IN -colorspace gray ) -compose blur -define compose:args=S
  -composite OUT`` (``magick`` when present, else the first ``convert`` on PATH that is a
  compiled program whose ``-version`` line is ``Version: ImageMagick ...``),
* GEGL: ``gegl IN -o OUT -- gegl:variable-blur radius=S aux=[ gegl:load path=GRAY ]``, with
  GRAY the input's Rec. 709 luma saved as an 8-bit PNG beforehand (not timed).

Without ImageMagick, or without a ``gegl`` that runs ``gegl:variable-blur``, their rows are left
out (the report says "not found").

G'MIC is not a row: its command set (2.9.x) has no Gaussian blur whose size varies with a map
(``fx_blur_dof`` varies it with a geometric focus region, not an image).

For the adaptiveblur exact and fast methods the blur alone is also timed in this process
(``adaptive_blur`` on the decoded float32 tensor, median of the same number of runs after one
warm-up), so the table shows both the whole process and the blur itself.

Every output is decoded to float and compared with adaptiveblur's exact result (float32,
not rounded to 8 bits) computed with the semantics matched to that tool where possible:

* (a) adaptiveblur rows: the CLI's own definition (stored sRGB values, mirrored borders);
* (i) ImageMagick: sigma = S * gray, blurred in the stored sRGB values, edge pixels repeated
  (ImageMagick's default virtual pixels); ImageMagick resamples with an elliptical weighted
  average (EWA), so part of its error is its definition, not inaccuracy;
* (g) GEGL: blurred in linear light, edge pixels repeated, sigma = S * the gray map as stored,
  i.e. ``adaptiveblur run IN OUT --max-sigma S --linear --border replicate --map GRAY``;
  GEGL blends a stack of Gaussian levels, so part of its error is its definition.

PSNR is over all RGB samples with peak 1; max error is in 8-bit steps (1/255).

    python benchmarks/bench_compare.py --quick                 # 1 MP, sigma 4 only (~1 min)
    python benchmarks/bench_compare.py --output compare.md     # 1 and 12 MP, sigma 2 4 8 16
    python benchmarks/bench_compare.py --repeat 3 --repeat-large 1   # 1 run per 12 MP row

Progress goes to stderr; the report (machine, commands, table, ratios, notes) to stdout at
the end, and to ``--output`` as well.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from _common import (  # benchmarks/_common.py, beside this script
    adaptiveblur_command,
    cpu_line,
    log,
    measure,
    noisy_photo_image,
    parse_floats,
    parse_sizes,
    parsed,
    photo_image,
)
from PIL import Image

import adaptiveblur
from adaptiveblur import adaptive_blur, io
from adaptiveblur.color import REC709_LUMA
from adaptiveblur.kernels import DEFAULT_TRUNCATE, radius_for
from adaptiveblur.render import blur_image, sigma_map_for
from adaptiveblur.settings import BlurSettings

LARGE_PIXELS = 4_000_000  # images at least this big use --repeat-large
# Prior for the reference backend before it has been timed here: ~12 s per MP at sigma 4.
REFERENCE_SECONDS_PER_MP_AT_4 = 12.0
# Rows whose blur is also timed alone in this process: warm-up key and adaptive_blur options.
IN_PROCESS: dict[str, tuple[str, dict[str, str]]] = {
    "adaptiveblur exact (native)": ("native", {"backend": "native"}),
    "adaptiveblur fast": ("fast", {"method": "fast"}),
}

AGAINST = {
    "a": "adaptiveblur exact, its own definition: stored sRGB values, sigma = S * Rec. 709 "
    "luma of the input, mirrored borders (the CLI's defaults)",
    "i": "adaptiveblur exact with ImageMagick's semantics: stored sRGB values, sigma = S * "
    "Rec. 709 luma of the input (ImageMagick's -colorspace gray is within 1/255 of it), edge "
    "pixels repeated (--border replicate; ImageMagick's default virtual pixels)",
    "g": "adaptiveblur exact with GEGL's semantics: `adaptiveblur run IN OUT --max-sigma S "
    "--linear --border replicate --map GRAY` (linear light, edge pixels repeated, sigma = S * "
    "the gray map's stored values)",
}


# ---------------------------------------------------------------- machine and tools


def first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0].strip() if text else ""


def is_script(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(2) == b"#!"
    except OSError:
        return True


def find_imagemagick() -> tuple[list[str] | None, str]:
    """``magick`` when present, else a compiled ``convert`` whose ``-version`` is ImageMagick's.

    Scripts named ``convert`` (stand-ins, wrappers) are passed over: even one that forwards
    to the real program adds an interpreter's start-up to every timing.
    """
    magick = shutil.which("magick")
    if magick and is_imagemagick(first_line([magick, "-version"])):
        return [magick], first_line([magick, "-version"])
    seen: set[str] = set()
    scripts: list[str] = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(folder or ".", "convert")
        if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
            continue
        real = os.path.realpath(candidate)
        if real in seen:
            continue
        seen.add(real)
        if is_script(real):
            scripts.append(candidate)
            continue
        version = first_line([candidate, "-version"])
        if is_imagemagick(version):
            return [candidate], version
    for candidate in scripts:  # only a script is left: use it, but say so
        version = first_line([candidate, "-version"])
        if is_imagemagick(version):
            return [candidate], f"{version} (through the script {candidate})"
    return None, "not found"


def is_imagemagick(version: str) -> bool:
    """Whether a ``-version`` line is ImageMagick's own (``Version: ImageMagick 6.9...``).

    Not merely one that names it: a stand-in that says ImageMagick is missing is passed over.
    """
    return version.startswith("Version: ImageMagick")


def gegl_command(
    gegl: str, source: str, dest: str, gray: str, sigma: float, prefix: str
) -> list[str]:
    return [
        gegl, source, "-o", dest, "--",
        f"{prefix}variable-blur", f"radius={sigma:g}",
        "aux=[", f"{prefix}load", f"path={gray}", "]",
    ]  # fmt: skip


def check_gegl(folder: Path) -> tuple[str | None, str, str]:
    """(gegl path, op-name prefix that works, version) after a real run on a tiny image."""
    gegl = shutil.which("gegl")
    if gegl is None:
        return None, "", "not found"
    probe = Image.new("RGB", (16, 16), (200, 30, 90))
    probe.save(folder / "probe.png")
    Image.new("L", (16, 16), 128).save(folder / "probe-map.png")
    version = package_version("gegl") or first_line([gegl, "--version"])
    for prefix in ("gegl:", ""):
        out = folder / "probe-out.png"
        out.unlink(missing_ok=True)
        command = gegl_command(gegl, "probe.png", "probe-out.png", "probe-map.png", 4, prefix)
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        if done.returncode == 0 and out.exists() and Image.open(out).size == (16, 16):
            return gegl, prefix, version
    return None, "", f"{version}: `gegl:variable-blur` did not run"


def package_version(name: str) -> str:
    if shutil.which("dpkg-query") is None:
        return ""
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True
    )
    return f"{name} {done.stdout.strip()}" if done.returncode == 0 and done.stdout else ""


# ---------------------------------------------------------------- measuring


@dataclass
class Run:
    wall: float  # median seconds
    cpu: float  # median user + system seconds of the child
    peak_mib: float  # largest ru_maxrss of the child over the runs
    runs: int


# Runs one command and reports its wall time and resource usage. The children are started
# from this small process, not from the benchmark itself: on Linux a child's ru_maxrss
# starts at its parent's resident size when it was forked (the high-water mark survives
# exec), so a child of the benchmark (torch, decoded 12 MP images) would inherit its size.
LAUNCHER = r"""
import json, os, sys, time
report, command = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(command[0], command)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(report, "w") as handle:
    json.dump({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
               "maxrss_kib": usage.ru_maxrss, "code": os.waitstatus_to_exitcode(status)}, handle)
"""


def run_once(command: list[str], cwd: Path) -> tuple[float, float, float]:
    """(wall s, cpu s, peak MiB) of one whole-process run; exits on failure."""
    with tempfile.TemporaryFile() as errors, tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "usage.json"
        launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(report), *command]
        done = subprocess.run(launcher, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errors)
        usage = json.loads(report.read_text()) if report.exists() else {"code": done.returncode}
        if done.returncode != 0 or usage["code"] != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace")[-2000:]
            sys.exit(f"{shlex.join(command)} failed ({usage['code']}):\n{message}")
    return usage["wall"], usage["cpu"], usage["maxrss_kib"] / 1024


def measure_command(command: list[str], cwd: Path, repeat: int) -> Run:
    results = [run_once(command, cwd) for _ in range(repeat)]
    return Run(
        wall=statistics.median(r[0] for r in results),
        cpu=statistics.median(r[1] for r in results),
        peak_mib=max(r[2] for r in results),
        runs=repeat,
    )


_WARMED: set[str] = set()


def time_in_process(key: str, call: Callable[[], object], repeat: int) -> float:
    """Median wall seconds of ``call``; its first use in this process is a warm-up, not timed."""
    # One-time costs: loading the native kernel, thread pools.
    warm_up = key not in _WARMED
    _WARMED.add(key)
    return measure(call, repeat, warm_up=warm_up).wall


def decode(path: Path) -> np.ndarray:
    """An output as float64 RGB in [0, 1] (an opaque alpha channel is dropped)."""
    with Image.open(path) as picture:
        if picture.mode in ("RGBA", "LA") and picture.getchannel("A").getextrema() != (255, 255):
            sys.exit(f"{path} has a transparent alpha channel: cannot compare it as RGB")
        pixels = np.asarray(picture.convert("RGB"), dtype=np.float64)
    return pixels / 255.0


def errors_against(output: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    """(PSNR dB with peak 1, max |error| in 8-bit steps)."""
    difference = output - exact
    mse = float(np.mean(difference * difference))
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    return psnr, float(np.abs(difference).max()) * 255


def exact_reference(
    image: io.Image, settings: BlurSettings, sigma_source: io.Image | None = None
) -> np.ndarray:
    """adaptiveblur's exact result for ``settings``, as the CLI computes it, before rounding."""
    sigma = sigma_map_for(image if sigma_source is None else sigma_source, settings)
    return blur_image(image, sigma, settings).pixels[..., :3].astype(np.float64)


def reference_for(
    key: str, image: io.Image, gray: io.Image, sigma: float, from_map: bool
) -> np.ndarray:
    """The exact result each row is compared with (see ``AGAINST``)."""
    common = BlurSettings(max_sigma=sigma, device="cpu", backend="native")
    if key == "a":
        return exact_reference(image, common, gray if from_map else None)
    if key == "i":
        return exact_reference(image, replace(common, border="replicate"))
    return exact_reference(image, replace(common, border="replicate", linear=True), gray)


def window_area(sigma: float) -> int:
    return (2 * radius_for(sigma, DEFAULT_TRUNCATE) + 1) ** 2


# ---------------------------------------------------------------- the table


@dataclass
class Row:
    size: str
    sigma: float
    tool: str
    run: Run | None = None
    skipped: str = ""
    blur_only: float | None = None
    psnr: float | None = None
    max_lsb: float | None = None
    against: str = ""
    load: float | None = None  # 1-minute load average when the row started


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    commands: dict[str, str] = field(default_factory=dict)


def fmt_seconds(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def fmt_psnr(value: float | None) -> str:
    if value is None:
        return "—"
    return "inf" if math.isinf(value) else f"{value:.1f}"


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| image | max σ | tool | whole process: wall s (median) | CPU s | peak RSS MiB "
        "| blur only s (in-process) | PSNR dB | max err LSB | vs | load |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|:-:|---:|",
    ]
    for row in rows:
        if row.run is None:
            wall, cpu, peak = row.skipped, "—", "—"
        else:
            wall = fmt_seconds(row.run.wall) + ("" if row.run.runs > 1 else " ¹")
            cpu, peak = fmt_seconds(row.run.cpu), f"{row.run.peak_mib:.0f}"
        blur = "—" if row.blur_only is None else fmt_seconds(row.blur_only)
        err = "—" if row.max_lsb is None else f"{row.max_lsb:.2f}"
        lines.append(
            f"| {row.size} | {row.sigma:g} | {row.tool} | {wall} | {cpu} | {peak} | {blur} "
            f"| {fmt_psnr(row.psnr)} | {err} | {row.against or '—'} "
            f"| {'—' if row.load is None else f'{row.load:.1f}'} |"
        )
    return "\n".join(lines)


def ratio_table(rows: list[Row], ours: Sequence[str], theirs: Sequence[str]) -> str:
    """How many times faster (whole process, wall) each of ours is than each of theirs."""
    short = {"adaptiveblur exact (native)": "exact", "adaptiveblur fast": "fast"}
    header = ["image", "max σ"] + [f"{t} ÷ {short.get(o, o)}" for o in ours for t in theirs]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (len(header) - 2)]
    keys = list(dict.fromkeys((row.size, row.sigma) for row in rows))
    for size, sigma in keys:
        walls = {
            row.tool: row.run.wall
            for row in rows
            if row.size == size and row.sigma == sigma and row.run is not None
        }
        cells = []
        for o in ours:
            for t in theirs:
                cells.append(f"{walls[t] / walls[o]:.2f}×" if o in walls and t in walls else "—")
        lines.append(f"| {size} | {sigma:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def size_label(width: int, height: int) -> str:
    megapixels = width * height / 1e6
    return f"{megapixels:.3g} MP ({width}×{height})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="1000x1000,4000x3000", help="WIDTHxHEIGHT list (default: 1 and 12 MP)"
    )
    parser.add_argument("--sigmas", default="2,4,8,16", help="max-sigma list (default: 2,4,8,16)")
    parser.add_argument("--quick", action="store_true", help="1000x1000 at max-sigma 4 only")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median; default 3)")
    parser.add_argument(
        "--repeat-large",
        type=int,
        default=None,
        help=f"runs per row for images of {LARGE_PIXELS / 1e6:g} MP or more (default: --repeat)",
    )
    parser.add_argument(
        "--reference-max-mp",
        type=float,
        default=1.0,
        help="run the reference backend only on images up to this many megapixels (default 1)",
    )
    parser.add_argument(
        "--reference-max-sigma",
        type=float,
        default=4.0,
        help="... and only up to this max-sigma (default 4); other rows show an estimate",
    )
    parser.add_argument(
        "--repeat-reference",
        type=int,
        default=1,
        help="runs per reference-backend row (default 1: one takes 10-100 s here)",
    )
    parser.add_argument(
        "--image",
        choices=("photo", "noisy"),
        default="photo",
        help="the resized sample photo, or the same with seeded grain (default: photo)",
    )
    parser.add_argument(
        "--map",
        action="store_true",
        help="adaptiveblur rows take sigma from the 8-bit gray PNG (--map), as GEGL does",
    )
    parser.add_argument("--output", help="also write the report (markdown) to this file")
    parser.add_argument("--keep", help="work in this folder and keep the images and outputs")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.sigmas = "1000x1000", "4"
    sizes = parsed(parser, parse_sizes, args.sizes)
    sigmas = parsed(parser, parse_floats, args.sigmas)
    repeat_large = args.repeat if args.repeat_large is None else args.repeat_large
    if min(args.repeat, repeat_large, args.repeat_reference) < 1:
        parser.error("expected at least one run per row")

    if args.keep:
        folder = Path(args.keep).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        cleanup = None
    else:
        cleanup = tempfile.TemporaryDirectory(prefix="bench_compare-")
        folder = Path(cleanup.name)
    try:
        report_text = benchmark(args, folder, sizes, sigmas, repeat_large)
    finally:
        if cleanup is not None:
            cleanup.cleanup()
    print(report_text)
    if args.output:
        Path(args.output).write_text(report_text + "\n", encoding="utf-8")
        log(f"wrote {args.output}")


def benchmark(
    args: argparse.Namespace,
    folder: Path,
    sizes: list[tuple[int, int]],
    sigmas: list[float],
    repeat_large: int,
) -> str:
    load_before = os.getloadavg()
    started = time.perf_counter()
    ab = adaptiveblur_command()
    magick, magick_version = find_imagemagick()
    gegl, gegl_prefix, gegl_version = check_gegl(folder)
    log(f"adaptiveblur: {shlex.join(ab)}; ImageMagick: {magick_version}; GEGL: {gegl_version}")

    # Warm-up: builds (or loads) the native kernel, and pulls the programs into the page cache.
    Image.new("RGB", (64, 64), (90, 160, 220)).save(folder / "warm.png")
    run_once([*ab, "run", "warm.png", "warm-out.png", "--max-sigma", "2", "--quiet",
              "--device", "cpu", "--backend", "native"], folder)  # fmt: skip

    report = Report()
    tools = ["adaptiveblur exact (native)", "adaptiveblur fast", "adaptiveblur reference (unfold)"]
    if magick:
        tools.append("ImageMagick")
    if gegl:
        tools.append("GEGL")
    reference_rate: float | None = None  # measured seconds per (MP x window pixel)
    skipped: list[Row] = []

    make_image = noisy_photo_image if args.image == "noisy" else photo_image
    for width, height in sizes:
        label = size_label(width, height)
        repeat = repeat_large if width * height >= LARGE_PIXELS else args.repeat
        name = f"in-{width}x{height}.png"
        gray_name = f"gray-{width}x{height}.png"
        make_image(width, height).save(folder / name)
        image = io.load_image(str(folder / name))
        luma = np.clip(image.pixels[..., :3].astype(np.float64) @ np.array(REC709_LUMA), 0.0, 1.0)
        Image.fromarray(np.rint(luma * 255).astype(np.uint8), "L").save(folder / gray_name)
        gray = io.load_image(str(folder / gray_name))
        tensor = torch.from_numpy(np.ascontiguousarray(image.pixels.transpose(2, 0, 1)))
        luma_t = torch.from_numpy(luma.astype(np.float32))
        megapixels = width * height / 1e6
        for sigma in sigmas:
            log(f"{label}, max-sigma {sigma:g}: {repeat} run(s) per row")
            base = ["run", name, "OUT", "--max-sigma", f"{sigma:g}", "--quiet", "--device", "cpu"]
            base += ["--map", gray_name] if args.map else []
            commands = {
                "adaptiveblur exact (native)": [*ab, *base, "--backend", "native"],
                "adaptiveblur fast": [*ab, *base, "--method", "fast"],
                "adaptiveblur reference (unfold)": [*ab, *base, "--backend", "reference"],
            }
            if magick:
                commands["ImageMagick"] = [
                    *magick, name, "(", name, "-colorspace", "gray", ")", "-compose", "blur",
                    "-define", f"compose:args={sigma:g}", "-composite", "OUT",
                ]  # fmt: skip
            if gegl:
                commands["GEGL"] = gegl_command(gegl, name, "OUT", gray_name, sigma, gegl_prefix)
            references: dict[str, np.ndarray] = {}
            for tool in tools:
                out_name = f"out-{width}x{height}-s{sigma:g}-{tool.split()[0].lower()}"
                out_name += "-" + tool.split()[1] if tool.startswith("adaptiveblur") else ""
                out_name += ".png"
                command = [out_name if part == "OUT" else part for part in commands[tool]]
                report.commands.setdefault(tool, shlex.join(command))
                row = Row(label, sigma, tool)
                report.rows.append(row)
                runs = repeat
                if tool.startswith("adaptiveblur reference"):
                    runs = args.repeat_reference
                    if megapixels > args.reference_max_mp or sigma > args.reference_max_sigma:
                        skipped.append(row)  # its estimate is filled in at the end
                        log(f"  {tool}: skipped")
                        continue
                (folder / out_name).unlink(missing_ok=True)
                log(f"  {tool}")
                row.load = os.getloadavg()[0]
                row.run = measure_command(command, folder, runs)
                if tool.startswith("adaptiveblur reference"):
                    reference_rate = row.run.wall / (megapixels * window_area(sigma))
                row.against = "g" if tool == "GEGL" else "i" if tool == "ImageMagick" else "a"
                if row.against not in references:
                    log(f"  exact reference ({row.against})")
                    references[row.against] = reference_for(
                        row.against, image, gray, sigma, args.map
                    )
                row.psnr, row.max_lsb = errors_against(
                    decode(folder / out_name), references[row.against]
                )
                in_process = IN_PROCESS.get(tool)
                if in_process is not None:
                    warm_key, options = in_process
                    blur = partial(adaptive_blur, tensor, sigma * luma_t, device="cpu", **options)
                    row.blur_only = time_in_process(warm_key, blur, repeat)
                log(
                    f"    wall {row.run.wall:.2f} s, cpu {row.run.cpu:.2f} s, "
                    f"{row.run.peak_mib:.0f} MiB, PSNR {fmt_psnr(row.psnr)} dB, "
                    f"max {row.max_lsb:.2f} LSB"
                )

    # Reference rows not run: scale the measured ones (cost ~ pixels x largest window).
    rate = reference_rate or REFERENCE_SECONDS_PER_MP_AT_4 / window_area(4.0)
    for row in skipped:
        megapixels = next(w * h for w, h in sizes if size_label(w, h) == row.size) / 1e6
        estimate = rate * megapixels * window_area(row.sigma)
        row.skipped = (
            f"skipped (est. {estimate:.0f} s)"
            if estimate < 600
            else (f"skipped (est. {estimate / 60:.0f} min)")
        )
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    return render(
        report, args, sizes, sigmas, repeat_large, tools, magick_version, gegl_version, reference_rate is not None, load_before, load_after,
        elapsed,
    )  # fmt: skip


def render(
    report: Report,
    args: argparse.Namespace,
    sizes: list[tuple[int, int]],
    sigmas: list[float],
    repeat_large: int,
    tools: list[str],
    magick_version: str,
    gegl_version: str,
    reference_measured: bool,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    elapsed: float,
) -> str:
    def loads(values: tuple[float, float, float]) -> str:
        return " ".join(f"{value:.2f}" for value in values)

    out = ["# adaptiveblur vs ImageMagick and GEGL (benchmarks/bench_compare.py)", ""]
    out.append(f"Command: `python benchmarks/bench_compare.py {shlex.join(sys.argv[1:])}`".rstrip())
    out.append("")
    out.append(
        f"Machine: {cpu_line()}, {platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"adaptiveblur {adaptiveblur.__version__}; ImageMagick: {magick_version}; "
        f"GEGL: {gegl_version}. Load average (1, 5, 15 min) before: {loads(load_before)}, "
        f"after: {loads(load_after)}; the run took {elapsed / 60:.1f} min."
    )
    out.append("")
    out.append(
        "Input: sample_images/astronaut.jpg (512×512) resized with pillow (bicubic) to "
        + ", ".join(f"{w}×{h}" for w, h in sizes)
        + (" with seeded Gaussian grain" if args.image == "noisy" else "")
        + ", saved as PNG; sigma = max σ × Rec. 709 luma"
        + (" read from the 8-bit gray PNG (--map)" if args.map else "")
        + " (max σ "
        + ", ".join(f"{s:g}" for s in sigmas)
        + "). Runs per row: "
        + (
            f"{args.repeat}"
            if repeat_large == args.repeat
            else f"{args.repeat} below {LARGE_PIXELS / 1e6:g} MP, {repeat_large} at or above"
        )
        + (
            f"; reference rows: {args.repeat_reference}"
            if "adaptiveblur reference (unfold)" in tools
            else ""
        )
        + " (wall and CPU: medians; peak RSS: the largest)."
    )
    out.append("")
    out.append(
        "Commands, as run (in the temporary folder) for the first image and max σ; the others "
        "differ only in file names and the max σ:"
    )
    out.append("")
    out.append("```")
    out.extend(f"# {tool}\n{command}" for tool, command in report.commands.items())
    out.append("```")
    out.append("")
    out.append(markdown_table(report.rows))
    out.append("")
    notes = [
        "Whole process = the command from start to exit: interpreter and library start-up "
        "(torch only where the command needs it), PNG decode, sigma map, blur, PNG encode. CPU s = user "
        "+ system time of the child; peak RSS = the child's ru_maxrss from os.wait4 (forked by "
        "a small launcher, so the benchmark's own size is not inherited). Blur only = "
        "`adaptive_blur` on the decoded float32 (3, H, W) tensor in this process, median after "
        "one warm-up per method. load = the 1-minute load average when the row started (the "
        "benchmark itself adds about 1): a row started well above the CPU count shared the "
        "CPUs with other work, and its times, wall and CPU alike, are inflated.",
        "vs (what PSNR and max err compare against; all float32, not rounded to 8 bits): "
        + "; ".join(f"({key}) {text}" for key, text in AGAINST.items())
        + ". adaptiveblur's exact rows therefore show only the 8-bit rounding of its output "
        "(≤ 0.5 LSB).",
        "Other tools' errors partly reflect their different definitions, not only "
        "inaccuracy: ImageMagick's compose blur resamples with an elliptical weighted average "
        "(EWA, with its own filter support and a minimum ellipse), and GEGL's variable-blur "
        "blends a stack of Gaussian levels (std-dev = radius × (i / (n − 1))^1.5, "
        "n = ceil(log2(radius)) + 3 levels) with its own IIR/FIR Gaussians.",
        "G'MIC is not a row: its command set (2.9.x) has no Gaussian blur whose size follows "
        "a map (fx_blur_dof varies it with a geometric focus region, not an image).",
    ]
    if "adaptiveblur reference (unfold)" in tools:
        notes.append(
            f"The reference (unfold) backend runs only up to {args.reference_max_mp:g} MP and "
            f"max σ {args.reference_max_sigma:g}, {args.repeat_reference} run(s) per row; "
            "skipped rows show an estimate scaled from its measured rows (its cost grows with "
            "pixels × the largest window, (2·round(3·max σ) + 1)²)"
            + ("" if reference_measured else ", or from ~12 s per MP at σ 4 when none ran")
            + "."
        )
    single = []
    if args.repeat == 1:
        single.append("--repeat 1")
    elif repeat_large == 1 and any(w * h >= LARGE_PIXELS for w, h in sizes):
        single.append(f"images of {LARGE_PIXELS / 1e6:g} MP or more: --repeat-large 1")
    if args.repeat_reference == 1 and args.repeat > 1:
        single.append("reference rows: --repeat-reference 1")
    if single:
        notes.append("¹ one run, not a median (" + "; ".join(single) + ").")
    out.append("Notes:")
    out.append("")
    out.extend(f"- {note}" for note in notes)
    out.append("")
    ours = [t for t in ("adaptiveblur exact (native)", "adaptiveblur fast") if t in tools]
    theirs = [t for t in ("GEGL", "ImageMagick") if t in tools]
    if ours and theirs:
        out.append(
            "Speed-up, whole process (wall): the other tool's time / adaptiveblur's "
            "(above 1× = adaptiveblur faster)."
        )
        out.append("")
        out.append(ratio_table(report.rows, ours, theirs))
    return "\n".join(out)


if __name__ == "__main__":
    main()
