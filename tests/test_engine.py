"""adaptiveblur.engine: which route a command's files take, and what each route costs at start-up.

The fused native route must leave torch unloaded and write the same files as the torch
route; without a C compiler the default must fall back to the fast method, saying so once.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from adaptiveblur import engine
from adaptiveblur.engine import Route, choose_route
from adaptiveblur.native import library
from adaptiveblur.native.render import unavailable_reason
from adaptiveblur.run import DeviceTokens, FileBlur, run_file
from adaptiveblur.settings import BlurSettings, FileOptions
from tests.helpers import cli, files_under, pixels_of, run_subprocess, subprocess_env
from tests.oracle import png16_bytes

needs_kernel = pytest.mark.skipif(
    unavailable_reason() is not None, reason=f"native kernel: {unavailable_reason()}"
)
NO_COMPILER = "no C compiler found (install cc, gcc or clang, or set CC)"


@pytest.fixture
def without_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    """The native kernel cannot be built in this process."""
    monkeypatch.setattr(library, "kernels", lambda: NO_COMPILER)


@pytest.fixture
def photo(work: Path, rng: np.random.Generator) -> Path:
    """``in.png``: 41x29 RGB noise over a gradient."""
    y, x = np.mgrid[0:29, 0:41]
    base = np.stack([x * 6, y * 8, (x + y) * 3], axis=2) + rng.integers(0, 60, (29, 41, 3))
    PILImage.fromarray(base.clip(0, 255).astype(np.uint8)).save(work / "in.png")
    return work / "in.png"


# ---- the choice ---------------------------------------------------------------------------


@needs_kernel
@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"device": "cpu"}, ("native", "cpu", "auto")),
        ({"device": "cpu", "method": "exact", "backend": "native"}, ("native", "cpu", "exact")),
        ({"device": "cuda"}, ("torch", "cuda", "auto")),
        ({"device": "cpu", "method": "fast"}, ("torch", "cpu", "fast")),
        ({"device": "cpu", "backend": "reference"}, ("torch", "cpu", "auto")),
    ],
)
def test_route_by_settings(settings, expected):
    route = choose_route(BlurSettings(max_sigma=4, **settings), pixels=10**6)
    assert (route.engine, route.device, route.method) == expected
    assert route.notice is None


@needs_kernel
def test_auto_on_a_gpu_host_weighs_the_whole_command(monkeypatch):
    monkeypatch.setattr(engine, "cuda_visible", lambda: True)
    monkeypatch.setattr(library, "worker_count", lambda: 16)
    small = BlurSettings(max_sigma=4)
    assert choose_route(small, pixels=10**6).engine == "native"  # one photo: the CPU
    assert choose_route(small, pixels=12 * 10**6).engine == "native"
    assert choose_route(small, pixels=10**6, files=5000).engine == "torch"  # a big batch
    assert choose_route(BlurSettings(max_sigma=128), pixels=12 * 10**6).device == "auto"
    # The crossing point is where the CPU's estimate passes the GPU's start-up.
    radius_units = (12 + 1) ** 2 + engine.CPU_PIXEL_COST
    files = engine.GPU_START_SECONDS * engine.CPU_RATE * 16 / (10**6 * 3 * radius_units)
    assert choose_route(small, pixels=10**6, files=int(files * 0.9)).engine == "native"
    assert choose_route(small, pixels=10**6, files=int(files * 1.1) + 1).engine == "torch"


@needs_kernel
def test_auto_without_a_gpu_stays_on_the_cpu(monkeypatch):
    monkeypatch.setattr(engine, "cuda_visible", lambda: False)
    route = choose_route(BlurSettings(max_sigma=64), pixels=10**8, files=10**4)
    assert (route.engine, route.device) == ("native", "cpu")


def test_without_a_compiler_auto_becomes_the_fast_method(without_compiler, monkeypatch):
    monkeypatch.setattr(engine, "cuda_visible", lambda: False)
    route = choose_route(BlurSettings(max_sigma=4), pixels=10**6)
    assert (route.engine, route.device, route.method) == ("torch", "cpu", "auto")
    assert route.notice is not None
    assert "fast method" in route.notice and "install a C compiler" in route.notice
    assert NO_COMPILER in route.notice


def test_without_a_compiler_exact_says_it_is_slow(without_compiler):
    route = choose_route(BlurSettings(max_sigma=4, device="cpu", method="exact"), pixels=1)
    assert (route.engine, route.method) == ("torch", "exact")
    assert route.notice is not None and "reference" in route.notice
    # Named, the native backend is an error of its own (the registry's), not a notice.
    named = choose_route(BlurSettings(max_sigma=4, device="cpu", backend="native"), pixels=1)
    assert named.notice is None


def test_without_a_compiler_a_gpu_host_needs_no_notice(without_compiler, monkeypatch):
    monkeypatch.setattr(engine, "cuda_visible", lambda: True)
    assert choose_route(BlurSettings(max_sigma=4), pixels=1) == Route("torch", "auto", "auto")


def test_cuda_visible_respects_cuda_visible_devices(monkeypatch):
    from adaptiveblur.devices import cuda_visible

    for hidden in ("", "-1", " -1,0"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert cuda_visible() is False


# ---- the same files either way ------------------------------------------------------------


def blur_by(route: Route, source: Path, dest: Path, settings: BlurSettings, **options) -> None:
    job = FileBlur.open(settings, FileOptions(**options), route)
    job.blur(str(source), str(dest), DeviceTokens(["cpu"]))


@needs_kernel
@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"linear": True, "border": "replicate"},
        {"gamma": 0.6, "invert": True, "min_sigma": 0.5, "channel": "mean"},
    ],
)
@pytest.mark.parametrize("kind", ["rgb8", "rgba8", "rgb16", "map"])
def test_native_and_torch_routes_write_the_same_file(work, rng, settings, kind):
    options: dict[str, object] = {}
    if kind == "rgb16":
        values = rng.integers(0, 65536, (13, 31, 3), dtype=np.uint16)
        (work / "in.png").write_bytes(png16_bytes(values))
    else:
        mode = "RGBA" if kind == "rgba8" else "RGB"
        values = rng.integers(0, 256, (13, 31, len(mode)), dtype=np.uint8)
        if mode == "RGBA":
            values[..., 3][rng.random((13, 31)) < 0.3] = 0
        PILImage.fromarray(values, mode).save(work / "in.png")
    if kind == "map":
        gray = rng.integers(0, 256, (13, 31), dtype=np.uint8)
        PILImage.fromarray(gray, "L").save(work / "map.png")
        options["map_path"] = str(work / "map.png")
    blur_settings = BlurSettings(max_sigma=float(rng.uniform(1.0, 6.0)), **settings)
    for name, engine_name in (("native.png", "native"), ("torch.png", "torch")):
        blur_by(
            Route(engine_name, "cpu", "exact"),
            work / "in.png",
            work / name,
            blur_settings,
            **options,
        )
    assert (work / "native.png").read_bytes() == (work / "torch.png").read_bytes()


@needs_kernel
def test_map_resized_on_the_native_route_matches_torch(work, rng, photo):
    gray = rng.integers(0, 256, (10, 14), dtype=np.uint8)
    PILImage.fromarray(gray, "L").save(work / "map.png")
    settings = BlurSettings(max_sigma=3.0)
    options = {"map_path": str(work / "map.png"), "resize_map": True}
    blur_by(Route("native", "cpu", "auto"), photo, work / "native.png", settings, **options)
    blur_by(Route("torch", "cpu", "exact"), photo, work / "torch.png", settings, **options)
    assert np.array_equal(pixels_of(work / "native.png"), pixels_of(work / "torch.png"))


@needs_kernel
def test_saved_sigma_map_is_the_same_on_both_routes(work, photo):
    settings = BlurSettings(max_sigma=2.5, gamma=2.0)
    for name in ("native", "torch"):
        job = FileBlur.open(settings, FileOptions(), Route(name, "cpu", "exact"))
        image = job.load(str(photo))
        route = job.route_for(image)
        job.write(image, f"{name}.png", route, DeviceTokens(["cpu"]), save_sigma=f"{name}-s.png")
    assert (work / "native-s.png").read_bytes() == (work / "torch-s.png").read_bytes()
    assert (work / "native.png").read_bytes() == (work / "torch.png").read_bytes()


@needs_kernel
def test_run_file_reports_its_route(work, photo):
    notices: list[str] = []
    route = run_file(
        str(photo), "out.png", BlurSettings(max_sigma=2, device="cpu"), on_notice=notices.append
    )
    assert route.engine == "native" and notices == []
    assert (work / "out.png").exists()


# ---- what a command imports, and the fallback it announces --------------------------------


@needs_kernel
def test_run_on_the_cpu_imports_no_torch(work, photo):
    """``PYTHONPROFILEIMPORTTIME`` lists every module the command imported; fsspec is only
    for URLs, so local paths import none of it either."""
    env = subprocess_env() | {"PYTHONPROFILEIMPORTTIME": "1"}
    focused = ["--map", "in.png", "--focus", "auto", "--feather", "1.5", "--preview", "p.png"]
    for extra in ([], ["--save-sigma", "sigma.png", "--linear"], ["--map", "in.png"], focused):
        done = run_subprocess(
            ["-m", "adaptiveblur", "run", "in.png", "out.png", "--max-sigma", "3", *extra],
            work,
            env=env,
        )
        assert done.returncode == 0, done.stderr.decode()
        imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.decode().splitlines()]
        assert "numpy" in imported  # the listing is there
        assert not [name for name in imported if name.split(".")[0] == "torch"], extra
        assert not [name for name in imported if name.split(".")[0] == "fsspec"], extra  # URLs only
        # Neither pydantic (typer 0.29 and later) nor pillow's full plugin list is loaded:
        # each costs more than the blur of a small image.
        assert "pydantic" not in imported and "PIL.DdsImagePlugin" not in imported, extra


@needs_kernel
def test_batch_and_pipes_import_no_torch_and_no_fsspec(work, photo):
    (work / "folder").mkdir()
    photo.rename(work / "folder" / "a.png")
    script = (
        "import sys; from adaptiveblur.cli import main; "
        "code = main(['batch', 'folder', 'out', '--max-sigma', '2', '--quiet']); "
        "print(code, 'torch' in sys.modules, 'fsspec' in sys.modules, file=sys.stderr)"
    )
    done = run_subprocess(["-c", script], work)
    assert done.stderr.decode().strip().splitlines()[-1] == "0 False False"
    assert (work / "out" / "a.png").exists()
    data = (work / "out" / "a.png").read_bytes()
    piped = run_subprocess(
        ["-m", "adaptiveblur", "run", "-", "-", "--max-sigma", "2", "--format", "png"],
        work,
        input=(work / "folder" / "a.png").read_bytes(),
    )
    assert piped.returncode == 0, piped.stderr.decode()
    assert piped.stdout == data


def test_without_a_compiler_the_command_says_so_once(work, photo, tmp_path_factory):
    env = subprocess_env() | {
        "CC": "/nonexistent/cc",
        "ADAPTIVEBLUR_CACHE_DIR": str(tmp_path_factory.mktemp("empty-cache")),
        "CUDA_VISIBLE_DEVICES": "",
    }
    done = run_subprocess(
        ["-m", "adaptiveblur", "run", "in.png", "out.png", "--max-sigma", "3"], work, env=env
    )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adaptiveblur: note:"), lines
    assert "fast method" in lines[0] and "set CC" in lines[0]
    assert pixels_of(work / "out.png").shape == (29, 41, 3)
    (work / "folder").mkdir()
    for name in ("a.png", "b.png"):
        (work / "folder" / name).write_bytes(photo.read_bytes())
    batch = run_subprocess(
        ["-m", "adaptiveblur", "batch", "folder", "out", "--max-sigma", "3", "--quiet"],
        work,
        env=env,
    )
    assert batch.returncode == 0, batch.stderr.decode()
    notes = [line for line in batch.stderr.decode().splitlines() if "note:" in line]
    assert len(notes) == 1
    assert files_under(work / "out") == {"a.png", "b.png"}


@needs_kernel
def test_quiet_run_on_the_cpu_prints_nothing(capsys, work, photo):
    assert cli(capsys, "run", "in.png", "out.png", "--max-sigma", "2", "--quiet") == (0, "", "")
    assert cli(capsys, "run", "in.png", "o2.png", "--max-sigma", "2", "--device", "cpu") == (
        0,
        "",
        "",
    )


def test_route_is_kept_by_worker_processes():
    job = FileBlur(BlurSettings(max_sigma=1), FileOptions(), route=Route("native", "cpu", "auto"))
    restored = job.__reduce__()
    assert restored[1][3] == Route("native", "cpu", "auto")
    assert replace(Route("torch", "cpu", "fast"), notice="x").notice == "x"
