"""Ray Data: ``read_images`` then ``map_batches(BlurBatch, ...)`` gives, for every file, the
pixels ``adaptiveblur run IN OUT.png`` writes.

The pipeline runs on a local Ray cluster (loopback, 2 CPUs, no dashboard) in a process of its
own under a time limit: a cluster that stalls fails the test instead of holding CI up, and
its whole session (Ray's daemons and workers included) is killed. Skipped where Ray is not
installed; CI installs it (``pip install -e ".[test,ray]"``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.helpers import cli, pixels_of, subprocess_env

RAY_TIMEOUT = 180  # seconds; the pipeline takes about 10 on the 2-core machine
# Three odd sizes, each twice; RGB and RGBA (premultiplied alpha on the way).
IMAGES = {
    f"{number}.png": (size, mode)
    for number, (size, mode) in enumerate(
        [((13, 17), "RGB"), ((21, 9), "RGB"), ((7, 31), "RGBA")] * 2
    )
}

# One actor with one CPU, so the second CPU stays free for the read tasks: on a 2-CPU
# cluster two actors took both and the reads never ran.
PIPELINE = """
import sys
from pathlib import Path

import numpy as np
import ray

from adaptiveblur import BlurBatch

folder, results, temporary = sys.argv[1:]
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temporary)
try:
    blurred = ray.data.read_images(folder, include_paths=True).map_batches(
        BlurBatch,
        fn_constructor_kwargs={"max_sigma": 4},
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=1,
        batch_size=4,
        batch_format="numpy",
    )
    rows = blurred.take_all()
    np.savez(results, **{Path(row["path"]).name: row["image"] for row in rows})
finally:
    ray.shutdown()
"""


@pytest.fixture
def ray_temp_dir(tmp_path: Path):
    """A short folder for Ray's session (its socket paths must stay under ~100 bytes)."""
    folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else tmp_path)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run_pipeline(folder: Path, results: Path, temporary: str) -> None:
    """Run :data:`PIPELINE` in a session of its own; past :data:`RAY_TIMEOUT`, kill it all."""
    process = subprocess.Popen(
        [sys.executable, "-c", PIPELINE, str(folder), str(results), temporary],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, err = process.communicate(timeout=RAY_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, err = process.communicate()
        pytest.fail(f"the Ray pipeline ran past {RAY_TIMEOUT} s:\n{err.decode()[-3000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 0, err.decode()[-3000:]


def test_ray_data_pipeline_gives_what_run_writes(capsys, work, rng, ray_temp_dir):
    pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    (work / "in").mkdir()
    for name, ((height, width), mode) in IMAGES.items():
        channels = len(mode)
        values = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        PILImage.fromarray(values, mode).save(work / "in" / name)
    expected = {}
    for name in IMAGES:
        code, _, err = cli(capsys, "run", f"in/{name}", f"out-{name}", "--max-sigma", "4")
        assert code == 0, err
        expected[name] = pixels_of(work / f"out-{name}")
    run_pipeline(work / "in", work / "results.npz", ray_temp_dir)
    with np.load(work / "results.npz") as results:
        assert sorted(results.files) == sorted(IMAGES)
        for name, pixels in expected.items():
            got = results[name]
            assert got.dtype == np.uint8 and got.shape == pixels.shape, name
            assert np.array_equal(got, pixels), name
