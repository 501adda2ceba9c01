"""What a batch does for clusters and re-runs: the settings manifest, ``--dry-run``, plain
progress lines in logs, environment defaults, and the usable-CPU count every pool sizes by.

Mirrors :mod:`adaptiveblur.batch.manifest`, :mod:`adaptiveblur.cpus`,
:mod:`adaptiveblur.cli.dry_run` and the plain lines of
:class:`adaptiveblur.cli.progress.BatchProgress`. Commands run in-process through
:func:`tests.helpers.cli`; images are tiny, made fresh with the ``rng`` fixture.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from adaptiveblur import cpus
from adaptiveblur import io as abio
from adaptiveblur.batch import manifest, runner
from adaptiveblur.batch.plan import Task
from adaptiveblur.batch.runner import Outcome
from adaptiveblur.cli import progress
from adaptiveblur.io import png
from adaptiveblur.native import library
from adaptiveblur.settings import BlurSettings, FileOptions
from tests.helpers import (
    PREFIX,
    assert_clean_error,
    cli,
    files_under,
    run_subprocess,
    snapshot,
    subprocess_env,
    temporaries,
)
from tests.test_batch import make_image, summary_of

NAMES = ["a.png", "b.jpg", "sub/c.png", "sub/d.webp"]
NOTE = "adaptiveblur: note:"
REDONE = re.compile(r"^adaptiveblur: note: redid (\d+) existing outputs? made with other settings$")
UNRECORDED = re.compile(r"^adaptiveblur: note: kept (\d+) existing outputs? with no record")
PLAIN = re.compile(
    r"^adaptiveblur: (\d+)/(\d+) files, (\d+) failed, \d+\.\d images/s(, about \d+ (s|min) left)?$"
)
DRY_LINE = re.compile(r"^(do|skip|redo|refuse|fail) +(\S+) -> (\S+)(  \((.+)\))?$")


@pytest.fixture
def photos(work: Path, rng: np.random.Generator) -> list[str]:
    """``in/`` holding :data:`NAMES` (nested too); returns them."""
    for name in NAMES:
        make_image(work / "in" / name, rng)
    return NAMES


def batch(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``adaptiveblur batch in out -r ARGS``."""
    return cli(capsys, "batch", "in", "out", "-r", *args)


def notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(NOTE)]


def mtimes(root: Path) -> dict[str, int]:
    return {name: (root / name).stat().st_mtime_ns for name in files_under(root)}


def manifests(root: Path) -> dict[str, dict]:
    """The manifest files of an output folder, parsed, by name."""
    return {
        name: json.loads((root / name).read_text(encoding="utf-8"))
        for name in files_under(root, manifests=True) - files_under(root)
    }


# ---- the manifest: resume, redo, keep ---------------------------------------------------


def test_same_settings_are_skipped_without_a_note(capsys, work, photos):
    assert batch(capsys, "--max-sigma", "2")[0] == 0
    assert set(manifests(work / "out")) == {".adaptiveblur-manifest.json"}
    before = mtimes(work / "out")
    code, _, err = batch(capsys, "--max-sigma", "2.0", "--jobs", "1", "--device", "cpu")
    assert code == 0, err
    assert summary_of(err) == (0, len(photos), 0)
    assert notes(err) == []
    assert mtimes(work / "out") == before


def test_changed_settings_are_redone_once_noted_and_equal_a_fresh_run(capsys, work, photos):
    assert batch(capsys, "--max-sigma", "2")[0] == 0
    code, _, err = batch(capsys, "--max-sigma", "3")
    assert code == 0, err
    assert summary_of(err) == (len(photos), 0, 0)
    (note,) = notes(err)
    assert REDONE.match(note) and REDONE.match(note)[1] == str(len(photos)), note
    assert cli(capsys, "batch", "in", "fresh", "-r", "--max-sigma", "3")[0] == 0
    assert snapshot(work / "out", manifests=False) == snapshot(work / "fresh", manifests=False)
    # The records now say 3: a third run resumes.
    code, _, err = batch(capsys, "--max-sigma", "3")
    assert summary_of(err) == (0, len(photos), 0) and notes(err) == []


@pytest.mark.parametrize(
    "change",
    [["--gamma", "2"], ["--border", "constant"], ["--linear"], ["--method", "fast"]],
    ids=["gamma", "border", "linear", "method"],
)
def test_every_pixel_setting_counts(capsys, work, photos, change):
    assert batch(capsys, "--max-sigma", "2")[0] == 0
    code, _, err = batch(capsys, "--max-sigma", "2", *change)
    assert code == 0, err
    assert summary_of(err) == (len(photos), 0, 0)


def test_settings_that_leave_pixels_alone_redo_nothing(capsys, work, photos):
    assert batch(capsys, "--max-sigma", "2", "--quality", "90")[0] == 0
    # --quality matters for JPEG and WebP only; the device, the budget and the jobs never.
    code, _, err = batch(
        capsys, "--max-sigma", "2", "--quality", "80", "--max-memory", "64M", "-j", "1"
    )
    assert code == 0, err
    lossy = [name for name in photos if name.endswith((".jpg", ".webp"))]
    assert summary_of(err) == (len(lossy), len(photos) - len(lossy), 0)


def test_outputs_without_a_record_are_kept_and_noted(capsys, work, photos):
    assert batch(capsys, "--max-sigma", "2")[0] == 0
    (work / "out" / ".adaptiveblur-manifest.json").unlink()  # as an older version left it
    kept = snapshot(work / "out")
    code, _, err = batch(capsys, "--max-sigma", "3")
    assert code == 0, err
    assert summary_of(err) == (0, len(photos), 0)
    (note,) = notes(err)
    assert UNRECORDED.match(note)[1] == str(len(photos)) and "--overwrite" in note, note
    assert snapshot(work / "out") == kept  # nothing replaced, no manifest written


def test_an_output_replaced_since_it_was_recorded_is_kept(capsys, work, photos):
    assert batch(capsys, "--max-sigma", "2")[0] == 0
    (work / "out" / "a.png").write_bytes(b"someone else's file now")
    code, _, err = batch(capsys, "--max-sigma", "3")
    assert code == 0, err
    assert summary_of(err) == (len(photos) - 1, 1, 0)
    assert (work / "out" / "a.png").read_bytes() == b"someone else's file now"
    assert [UNRECORDED.match(line)[1] for line in notes(err) if UNRECORDED.match(line)] == ["1"]


def test_the_same_map_elsewhere_matches_and_an_edited_one_does_not(work, rng):
    make_image(work / "map.png", rng)
    (work / "sub").mkdir()
    (work / "sub" / "map.png").write_bytes((work / "map.png").read_bytes())
    settings = BlurSettings(max_sigma=2)

    def key(path: str) -> str:
        return manifest.Fingerprints(settings, FileOptions(map_path=path)).for_output("x.png")

    assert key("map.png") == key(str(work / "sub" / "map.png"))
    make_image(work / "sub" / "map.png", rng)
    assert key("map.png") != key("sub/map.png")
    assert key("map.png") != manifest.Fingerprints(settings, FileOptions()).for_output("x.png")
    assert manifest.Fingerprints(BlurSettings(max_sigma=2), FileOptions()).for_output(
        "x.png"
    ) == manifest.Fingerprints(BlurSettings(max_sigma=2.0), FileOptions()).for_output("x.png")


def test_two_shards_at_once_into_one_folder_keep_every_record(capsys, work, photos, monkeypatch):
    """Shard 2 runs from start to end while shard 1 is about to write its records."""
    write = abio.write_text_atomically
    interleaved = []

    def write_during_the_other_shard(path, text):
        if not interleaved:
            interleaved.append(path)
            assert batch(capsys, "--max-sigma", "2", "--shard", "2/2")[0] == 0
        write(path, text)

    with monkeypatch.context() as patch:
        patch.setattr(abio, "write_text_atomically", write_during_the_other_shard)
        assert batch(capsys, "--max-sigma", "2", "--shard", "1/2")[0] == 0
    assert interleaved
    found = manifests(work / "out")
    assert set(found) == {
        ".adaptiveblur-manifest.shard-1-of-2.json",
        ".adaptiveblur-manifest.shard-2-of-2.json",
    }
    recorded = [name for document in found.values() for name in document["outputs"]]
    assert sorted(recorded) == sorted(photos)  # each output once, none lost
    # Every output is known: an unsharded re-run with other settings redoes them all.
    code, _, err = batch(capsys, "--max-sigma", "3")
    assert summary_of(err) == (len(photos), 0, 0)
    assert REDONE.match(notes(err)[0])[1] == str(len(photos))


def test_records_of_finished_files_survive_ctrl_c(capsys, work, photos, monkeypatch):
    original = runner.run_batch

    def interrupted(*args, on_outcome, **kwargs):
        def stop_after_one(outcome: Outcome) -> None:
            on_outcome(outcome)
            raise KeyboardInterrupt

        return original(*args, on_outcome=stop_after_one, **kwargs)

    monkeypatch.setattr(runner, "run_batch", interrupted)
    code, _, err = batch(capsys, "--max-sigma", "2", "-j", "1")
    assert code == 130, err
    (document,) = manifests(work / "out").values()
    # The file reported before Ctrl-C is recorded (one still being written may not be).
    assert document["outputs"] and set(document["outputs"]) <= files_under(work / "out")


def test_a_long_run_writes_its_records_as_it_goes(work):
    now = [0.0]
    out = work / "out"
    out.mkdir()
    for name in ("a.png", "b.png"):
        (out / name).write_bytes(b"made")
    writer = manifest.ManifestWriter(str(out), None, {}, interval=30, clock=lambda: now[0])
    writer.add(str(out / "a.png"), "k1")
    assert manifests(out) == {}  # not due yet
    now[0] = 31.0
    writer.add(str(out / "b.png"), "k2")
    (document,) = manifests(out).values()
    assert {key: entry["settings"] for key, entry in document["outputs"].items()} == {
        "a.png": "k1",
        "b.png": "k2",
    }
    # A later writer of the same file keeps what is there.
    (out / "c.png").write_bytes(b"made too")
    other = manifest.ManifestWriter(str(out), None, {})
    other.add(str(out / "c.png"), "k3")
    other.flush()
    assert set(manifest.read_records(str(out))) == {"a.png", "b.png", "c.png"}


def test_an_unreadable_manifest_holds_no_records(capsys, work, photos):
    assert batch(capsys, "--max-sigma", "2")[0] == 0
    (work / "out" / ".adaptiveblur-manifest.json").write_text("{not json")
    code, _, err = batch(capsys, "--max-sigma", "3")
    assert code == 0, err
    assert summary_of(err) == (0, len(photos), 0)
    assert UNRECORDED.match(notes(err)[0])


# ---- --dry-run ----------------------------------------------------------------------------


def dry_lines(out: str) -> dict[str, tuple[str, str | None]]:
    """Output name (below ``out/``) to ``(action, why)``, from dry-run stdout."""
    found = {}
    for line in out.splitlines():
        match = DRY_LINE.match(line)
        assert match, line
        found[Path(match[3]).relative_to("out").as_posix()] = (match[1], match[5])
    return found


def test_dry_run_writes_nothing_not_even_out_dir(capsys, work, photos):
    before = snapshot(work)
    code, out, err = batch(capsys, "--max-sigma", "2", "--dry-run", "--report", "r.json")
    assert code == 0, err
    assert snapshot(work) == before
    assert not (work / "out").exists()
    assert dry_lines(out) == dict.fromkeys(photos, ("do", None))
    assert out.splitlines()[0] == f"do     {os.path.join('in', 'a.png')} -> " + os.path.join(
        "out", "a.png"
    )
    (summary,) = err.strip().splitlines()
    assert summary == "adaptiveblur: dry run: 4 to do, 0 to redo, 0 to skip; nothing was written"


def test_dry_run_says_what_a_rerun_would_do_and_why(capsys, work, photos):
    assert batch(capsys, "--max-sigma", "2")[0] == 0
    (work / "out" / "a.png").unlink()
    (work / "out" / "b.jpg").write_bytes(b"not ours")
    before = snapshot(work)
    code, out, err = batch(capsys, "--max-sigma", "3", "--dry-run")
    assert code == 0, err
    assert snapshot(work) == before
    lines = dry_lines(out)
    assert lines["a.png"] == ("do", None)
    assert lines["b.jpg"][0] == "skip" and "no record" in lines["b.jpg"][1]
    assert lines["sub/c.png"] == lines["sub/d.webp"] == ("redo", "made with other settings")
    assert err.strip() == (
        "adaptiveblur: dry run: 1 to do, 2 to redo, 1 to skip (1 with no record of their "
        "settings); nothing was written"
    )
    code, out, _ = batch(capsys, "--max-sigma", "2", "--dry-run")
    assert dry_lines(out)["sub/c.png"] == ("skip", "exists, made with these settings")
    code, out, _ = batch(capsys, "--max-sigma", "2", "--dry-run", "--overwrite")
    assert dry_lines(out)["b.jpg"] == ("redo", "exists, --overwrite")
    assert snapshot(work) == before


def test_dry_run_into_the_input_folder(capsys, work, photos):
    code, out, _ = cli(capsys, "batch", "in", "in", "--max-sigma", "2", "--dry-run")
    assert code == 0
    assert {line.split()[0] for line in out.splitlines()} == {"skip"}
    assert all(line.endswith("(it is the input)") for line in out.splitlines())
    code, out, _ = cli(capsys, "batch", "in", "in", "--max-sigma", "2", "--dry-run", "--overwrite")
    assert all(line.startswith("refuse ") for line in out.splitlines()), out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_dry_run_says_a_pipe_would_fail(capsys, work, photos):
    os.mkfifo(work / "in" / "pipe.png")  # opened, it would wait for a writer
    code, out, err = batch(capsys, "--max-sigma", "2", "--dry-run")
    assert code == 0
    assert dry_lines(out)["pipe.png"] == ("fail", "not a regular file")
    assert err.strip().endswith(", 1 that would fail; nothing was written")


def test_dry_run_errors_like_a_run(capsys, work, photos):
    before = snapshot(work)
    code, out, err = batch(capsys, "--max-sigma", "-1", "--dry-run")
    assert_clean_error(code, out, err, 2, "max_sigma")
    code, out, err = batch(capsys, "--max-sigma", "2", "--map", "missing.png", "--dry-run")
    assert_clean_error(code, out, err, 3, "missing.png")
    assert snapshot(work) == before


# ---- usable CPUs ------------------------------------------------------------------------


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake machine of 64 CPUs with an affinity mask of 8, no cgroup limits, no SLURM;
    returns ``set_cgroup(relative_path, text)``."""
    root = tmp_path / "cgroup"
    root.mkdir()
    monkeypatch.setattr(cpus, "CGROUP_ROOT", str(root))
    monkeypatch.setattr(cpus, "PROC_CGROUP", str(tmp_path / "missing"))
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    cpus.usable_cpus.cache_clear()

    def set_cgroup(relative: str, text: str) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        cpus.usable_cpus.cache_clear()

    yield set_cgroup
    cpus.usable_cpus.cache_clear()


def test_affinity_mask_not_the_cpu_count(machine, monkeypatch):
    assert cpus.usable_cpus() == 8
    monkeypatch.delattr(os, "sched_getaffinity")
    cpus.usable_cpus.cache_clear()
    assert cpus.usable_cpus() == 64  # where there is no affinity call


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max 100000\n", 8),
        ("200000 100000\n", 2),
        ("150000 100000\n", 2),  # 1.5 CPUs: rounded up
        ("50000 100000\n", 1),
        ("2000000 100000\n", 8),  # a quota above the mask: the mask
        ("garbage\n", 8),
        ("0 100000\n", 8),
        ("100000 0\n", 8),
        ("", 8),
    ],
)
def test_cgroup_v2_quota(machine, text, expected):
    machine("cpu.max", text)
    assert cpus.usable_cpus() == expected


def test_cgroup_v2_quota_of_the_process_cgroup_and_above(machine, tmp_path, monkeypatch):
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/job/step\n")
    monkeypatch.setattr(cpus, "PROC_CGROUP", str(proc))
    machine("cpu.max", "max 100000\n")
    machine("job/step/cpu.max", "max 100000\n")
    machine("job/cpu.max", "300000 100000\n")
    assert cpus.usable_cpus() == 3
    machine("job/step/cpu.max", "100000 100000\n")
    assert cpus.usable_cpus() == 1


@pytest.mark.parametrize("mount", ["cpu", "cpu,cpuacct"])
@pytest.mark.parametrize(
    ("quota", "period", "expected"),
    [("400000", "100000", 4), ("250000", "100000", 3), ("-1", "100000", 8), ("x", "1", 8)],
)
def test_cgroup_v1_quota(machine, mount, quota, period, expected):
    machine(f"{mount}/cpu.cfs_quota_us", quota + "\n")
    machine(f"{mount}/cpu.cfs_period_us", period + "\n")
    assert cpus.usable_cpus() == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2), ("16", 8), ("abc", 8), ("0", 8), ("-3", 8), ("", 8), ("2.5", 8)],
)
def test_slurm_cpus_per_task(machine, monkeypatch, value, expected):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", value)
    assert cpus.usable_cpus() == expected


def test_the_least_limit_wins_and_the_answer_is_cached(machine, monkeypatch):
    machine("cpu.max", "300000 100000\n")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "5")
    assert cpus.usable_cpus() == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert cpus.usable_cpus() == 3  # read once
    cpus.usable_cpus.cache_clear()
    assert cpus.usable_cpus() == 1


def test_png_deflate_pieces_follow_usable_cpus(machine, monkeypatch, rng):
    monkeypatch.setattr(png, "PARALLEL_DEFLATE_PIECE", 1000)
    pools = []

    class Recording(png.ThreadPoolExecutor):
        def __init__(self, max_workers: int) -> None:
            pools.append(max_workers)
            super().__init__(max_workers=max_workers)

    monkeypatch.setattr(png, "ThreadPoolExecutor", Recording)
    data = memoryview(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    machine("cpu.max", "300000 100000\n")
    png.deflate(data, 2)
    assert pools == [3]  # not the 64 CPUs, nor the mask of 8
    machine("cpu.max", "100000 100000\n")
    png.deflate(data, 2)
    assert pools == [3]  # one CPU: one piece, no pool


def test_native_threads_follow_usable_cpus(machine, monkeypatch):
    library.set_worker_count(None)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert library.worker_count() == 3


def test_torch_cpu_threads_are_capped_not_raised(machine, monkeypatch):
    torch = pytest.importorskip("torch")
    from adaptiveblur.run import _fit_torch_threads

    machine("cpu.max", "200000 100000\n")
    original = torch.get_num_threads()
    seen = []

    def in_a_thread() -> None:  # torch's count is per thread: the test's own stays as it is
        try:
            torch.set_num_threads(4)
            _fit_torch_threads()
            seen.append(torch.get_num_threads())
            torch.set_num_threads(1)
            _fit_torch_threads()
            seen.append(torch.get_num_threads())
        finally:
            torch.set_num_threads(original)

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == [2, 1]


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The keyword arguments (and settings) of every :func:`run_batch` call, which still runs."""
    original = runner.run_batch
    calls: list[dict] = []

    def recording(tasks, settings, options=None, **kwargs):
        calls.append(kwargs | {"settings": settings})
        return original(tasks, settings, options, **kwargs)

    monkeypatch.setattr(runner, "run_batch", recording)
    return calls


def test_batch_jobs_default_follows_usable_cpus(capsys, work, photos, machine, runs):
    machine("cpu.max", "300000 100000\n")
    assert batch(capsys, "--max-sigma", "2", "--device", "cpu")[0] == 0
    assert runs[-1]["jobs"] == 3


# ---- plain progress lines when stderr is not a terminal ---------------------------------


def outcome(status: str) -> Outcome:
    return Outcome(Task("in/x.png", "x.png", "out/x.png"), status)


def test_plain_lines_every_interval_and_at_the_end(capsys):
    now = [100.0]
    shown = progress.BatchProgress(enabled=True, interval=10, clock=lambda: now[0])
    shown.planned([outcome("done").task] * 6)
    for when, status in [(1, "done"), (2, "skipped"), (5, "done"), (11, "failed"), (13, "done")]:
        now[0] = 100.0 + when
        shown.finished(outcome(status))
    now[0] = 120.0
    shown.finished(outcome("done"))
    shown.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if PLAIN.match(line)]
    assert lines == [
        # 4 of 6 after 11 s; 3 took time (the skipped one did not): 2 left at 11/3 s each.
        "adaptiveblur: 4/6 files, 1 failed, 0.2 images/s, about 7 s left",
        "adaptiveblur: 6/6 files, 1 failed, 0.2 images/s",
    ]


def test_no_plain_lines_for_a_short_batch_or_when_quiet(capsys):
    now = [0.0]
    for enabled, step in [(True, 1.0), (False, 100.0)]:
        shown = progress.BatchProgress(enabled=enabled, interval=10, clock=lambda: now[0])
        shown.planned([outcome("done").task] * 3)
        for _ in range(3):
            now[0] += step
            shown.finished(outcome("done"))
        shown.close()
    assert capsys.readouterr().err == ""


def test_batch_prints_plain_lines_into_a_log(capsys, work, photos, monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 0.0)
    code, _, err = batch(capsys, "--max-sigma", "2")
    assert code == 0, err
    lines = err.strip().splitlines()
    assert summary_of(err) == (len(photos), 0, 0)  # the summary stays last
    plain = [PLAIN.match(line) for line in lines[:-1]]
    assert all(plain), lines
    assert [int(match[1]) for match in plain] == list(range(1, len(photos) + 1))
    assert batch(capsys, "--max-sigma", "2", "-q") == (0, "", "")


# ---- environment defaults ---------------------------------------------------------------


def test_environment_sets_defaults(capsys, work, photos, monkeypatch, runs):
    monkeypatch.setenv("ADAPTIVEBLUR_DEVICE", "cpu")
    monkeypatch.setenv("ADAPTIVEBLUR_MAX_MEMORY", "64M")
    monkeypatch.setenv("ADAPTIVEBLUR_JOBS", "2")
    assert batch(capsys, "--max-sigma", "2")[0] == 0
    (call,) = runs
    assert call["jobs"] == 2
    assert (call["settings"].device, call["settings"].max_memory) == ("cpu", 64 << 20)


def test_flags_beat_the_environment(capsys, work, photos, monkeypatch, runs):
    monkeypatch.setenv("ADAPTIVEBLUR_DEVICE", "bogus")
    monkeypatch.setenv("ADAPTIVEBLUR_MAX_MEMORY", "lots")
    monkeypatch.setenv("ADAPTIVEBLUR_JOBS", "abc")
    code, _, err = batch(
        capsys, "--max-sigma", "2", "--device", "cpu", "--max-memory", "32M", "--jobs", "1"
    )
    assert code == 0, err
    (call,) = runs
    assert call["jobs"] == 1
    assert (call["settings"].device, call["settings"].max_memory) == ("cpu", 32 << 20)


def test_an_empty_variable_is_unset(capsys, work, photos, monkeypatch, runs):
    monkeypatch.setenv("ADAPTIVEBLUR_JOBS", "")
    monkeypatch.setenv("ADAPTIVEBLUR_DEVICE", "")
    assert batch(capsys, "--max-sigma", "2")[0] == 0
    assert runs[0]["settings"].device == "auto" and runs[0]["jobs"] >= 1


@pytest.mark.parametrize(
    ("command", "variable", "value", "fragment"),
    [
        ("batch", "ADAPTIVEBLUR_DEVICE", "bogus", "bogus"),
        ("batch", "ADAPTIVEBLUR_MAX_MEMORY", "lots", "lots"),
        ("batch", "ADAPTIVEBLUR_JOBS", "abc", "ADAPTIVEBLUR_JOBS"),
        ("batch", "ADAPTIVEBLUR_JOBS", "0", "jobs"),
        ("run", "ADAPTIVEBLUR_DEVICE", "gpu9", "gpu9"),
    ],
)
def test_a_bad_variable_is_a_usage_error(
    capsys, work, photos, monkeypatch, command, variable, value, fragment
):
    monkeypatch.setenv(variable, value)
    before = snapshot(work)
    paths = ["in", "out"] if command == "batch" else ["in/a.png", "out.png"]
    code, out, err = cli(capsys, command, *paths, "--max-sigma", "2")
    assert_clean_error(code, out, err, 2, fragment)
    assert err.startswith(PREFIX)
    assert snapshot(work) == before


def test_help_names_the_variables(capsys):
    code, out, _ = cli(capsys, "batch", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for variable in ("ADAPTIVEBLUR_DEVICE", "ADAPTIVEBLUR_MAX_MEMORY", "ADAPTIVEBLUR_JOBS"):
        assert f"env var: {variable}" in flat


# ---- what a re-run must never replace -------------------------------------------------------


def test_an_output_used_as_the_map_is_never_replaced(capsys, work, photos):
    code, _, err = batch(capsys, "--max-sigma", "2", "-q")
    assert code == 0, err
    the_map = work / "out" / "a.png"
    before = the_map.read_bytes()
    code, out, _ = batch(capsys, "--max-sigma", "4", "--map", "out/a.png", "--dry-run")
    assert dry_lines(out)["a.png"] == ("refuse", "would replace the --map file")
    for extra in ([], ["--overwrite"]):
        batch(capsys, "--max-sigma", "4", "--map", "out/a.png", "-q", *extra)
        assert the_map.read_bytes() == before, extra


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_named_like_the_manifest_is_never_waited_on(work, photos):
    (work / "out").mkdir()
    os.mkfifo(work / "out" / (manifest.MANIFEST_PREFIX + manifest.MANIFEST_SUFFIX))
    for extra in (["--dry-run"], []):
        done = run_subprocess(
            ["-m", "adaptiveblur", "batch", "in", "out", "-r", "--max-sigma", "2", "-q", *extra],
            work,
        )
        text = done.stderr.decode()
        assert done.returncode in (0, 4), text  # a manifest it cannot write is an output error
        assert "Traceback" not in text


def test_dry_run_into_a_closed_pipe_is_quiet(work, photos):
    command = [sys.executable, "-m", "adaptiveblur", "batch", "in", "out", "-r", "--max-sigma", "2"]
    reader = subprocess.Popen(
        [*command, "--dry-run"],
        cwd=work,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None
    reader.stdout.close()  # no reader at all: the first line meets a closed pipe
    _, err = reader.communicate(timeout=60)
    assert reader.returncode == 141, err.decode()
    assert b"Traceback" not in err


def test_a_file_put_in_place_of_a_stale_output_after_planning_is_kept(capsys, work, photos):
    """The plan redoes the output it found; a file that replaced it meanwhile is not ours."""
    from adaptiveblur.batch import blur_files

    assert batch(capsys, "--max-sigma", "2", "-q")[0] == 0
    foreign = b"not made by adaptiveblur" * 10
    target = work / "out" / "a.png"

    def swap(tasks) -> None:
        (work / "out" / "a.new").write_bytes(foreign)
        os.replace(work / "out" / "a.new", target)

    summary = blur_files(
        "out", BlurSettings(max_sigma=5.0), FileOptions(), in_dir="in", recursive=True,
        on_plan=swap, jobs=1,
    )  # fmt: skip
    assert target.read_bytes() == foreign
    assert summary.redone == len(photos) - 1


def test_an_output_that_appears_while_its_file_is_blurred_is_kept(
    capsys, work, photos, monkeypatch
):
    """Without --overwrite nothing replaces a file that is there when the result is written
    (another shard or tool made it meanwhile): it is kept and the file counted skipped."""
    from adaptiveblur.batch import blur_files
    from adaptiveblur.run import FileBlur

    foreign = b"made by someone else" * 10
    target = work / "out" / "a.png"
    blur_loaded = FileBlur.blur_loaded

    def meanwhile(self, image, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        done = blur_loaded(self, image, *args, **kwargs)
        if image.pixels.shape[:2] == abio.load_image(str(work / "in" / "a.png")).pixels.shape[:2]:
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.write_bytes(foreign)
        return done

    monkeypatch.setattr(FileBlur, "blur_loaded", meanwhile)
    settings = BlurSettings(max_sigma=2.0)
    summary = blur_files("out", settings, FileOptions(), in_dir="in", recursive=True, jobs=1)
    assert target.read_bytes() == foreign
    assert summary.count("failed") == 0
    assert summary.count("skipped") >= 1
    assert summary.count("done") + summary.count("skipped") == len(photos)
    assert not temporaries(work / "out")
    summary = blur_files(
        "out", settings, FileOptions(overwrite=True), in_dir="in", recursive=True, jobs=1
    )
    assert target.read_bytes() != foreign  # --overwrite replaces it
    assert summary.count("done") == len(photos)
