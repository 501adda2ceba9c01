"""Recorded CUDA graphs: replays give what running the work as it is gives (CUDA only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptiveblur import io as abio
from adaptiveblur.batch.graphs import ShapeGraphs
from adaptiveblur.render import blur_image
from adaptiveblur.settings import BlurSettings

pytestmark = pytest.mark.cuda

if not torch.cuda.is_available():
    pytest.skip("CUDA is not available", allow_module_level=True)


def affine(samples: torch.Tensor) -> torch.Tensor:
    return samples.float().mul(0.5).add_(samples.float().mean(dim=0))


def reads_back(samples: torch.Tensor) -> torch.Tensor:
    return samples.float() * float(samples.float().max())  # waits on the GPU


def test_third_sighting_records_and_later_ones_replay(rng):
    graphs = ShapeGraphs(torch.device("cuda"), capacity=1)
    a, b = (5, 7), (3, 4)
    recorded = []
    for shape in [a, a, a, a, b, b, b, a, b, a]:
        samples = rng.integers(0, 256, shape, dtype=np.uint8)
        out = graphs.run(shape, affine, samples)
        expected = affine(torch.from_numpy(samples).cuda()).cpu().numpy()
        np.testing.assert_array_equal(out, expected)
        recorded.append(graphs.recorded)
    # Capacity 1 drops the older shape for the newer one, and a dropped shape is not
    # recorded again (mixed shapes would record forever).
    assert recorded == [(), (), (a,), (a,), (a,), (a,), (b,), (b,), (b,), (b,)]


def test_large_inputs_are_not_recorded(rng):
    graphs = ShapeGraphs(torch.device("cuda"), max_bytes=100)
    for _ in range(3):
        samples = rng.integers(0, 256, (11, 10), dtype=np.uint8)
        out = graphs.run("key", affine, samples)
        np.testing.assert_array_equal(out, affine(torch.from_numpy(samples).cuda()).cpu())
    assert graphs.recorded == ()


def test_work_that_reads_back_runs_as_it_is(rng):
    graphs = ShapeGraphs(torch.device("cuda"))
    for _ in range(4):
        samples = rng.integers(0, 256, (6, 9), dtype=np.uint8)
        out = graphs.run("key", reads_back, samples)
        np.testing.assert_array_equal(out, reads_back(torch.from_numpy(samples).cuda()).cpu())
        assert graphs.recorded == ()
    # The device works normally afterwards.
    assert float(torch.ones(3, device="cuda").sum()) == 3.0


@pytest.mark.parametrize(
    ("mode", "depth", "size", "options"),
    [
        ("RGB", 8, (13, 7), {}),
        ("RGBA", 8, (40, 33), {"linear": True}),
        ("L", 8, (1, 1), {"min_sigma": 0.5}),
        ("LA", 16, (9, 12), {"invert": True, "gamma": 2.0}),
        ("RGB", 8, (70, 45), {"max_memory": 4096}),  # several tiles
    ],
)
def test_recorded_blur_is_blur_image(rng, mode, depth, size, options):
    settings = BlurSettings(max_sigma=6.0, device="cuda:0", **options)
    graphs = ShapeGraphs(torch.device("cuda:0"))
    # Twice as it is, recorded, replayed twice.
    assert_recorded_is_blur_image(graphs, settings, [size] * 5, rng, mode=mode, depth=depth)
    assert len(graphs.recorded) == 1


def test_recorded_blur_with_a_map(rng):
    settings = BlurSettings(max_sigma=3.0, device="cuda:0")
    graphs = ShapeGraphs(torch.device("cuda:0"))
    sigma = torch.from_numpy(rng.uniform(0.0, 3.0, (21, 15))).float()
    assert_recorded_is_blur_image(graphs, settings, [(21, 15)] * 4, rng, sigma=sigma)
    assert len(graphs.recorded) == 1


def test_recordings_of_several_shapes_replay_in_any_order(rng):
    """The recordings share one memory pool: each replay must still give its own result."""
    settings = BlurSettings(max_sigma=4.0, device="cuda:0")
    graphs = ShapeGraphs(torch.device("cuda:0"))
    sizes = [(23, 31), (40, 9), (17, 17)]
    order = sizes * 3 + [sizes[i] for i in rng.integers(0, 3, 12)]
    assert_recorded_is_blur_image(graphs, settings, order, rng)
    assert len(graphs.recorded) == 3


def assert_recorded_is_blur_image(
    graphs: ShapeGraphs,
    settings: BlurSettings,
    sizes: list[tuple[int, int]],
    rng: np.random.Generator,
    *,
    mode: str = "RGB",
    depth: int = 8,
    sigma: torch.Tensor | None = None,
) -> None:
    """Random images of ``sizes`` in turn through ``graphs``: each gives what blur_image gives."""
    dtype = np.uint8 if depth == 8 else np.uint16
    on_gpu = None if sigma is None else sigma.cuda()  # one map for all, as in a batch
    for height, width in sizes:
        samples = rng.integers(0, 1 << depth, (height, width, len(mode)), dtype=dtype)
        image = abio.Image(pixels=samples, mode=mode, bit_depth=depth)
        out = blur_image(image, on_gpu, settings, replayer=graphs).pixels
        np.testing.assert_array_equal(out, blur_image(image, sigma, settings).pixels)


def test_recording_needs_earlier_runs():
    with pytest.raises(ValueError, match="record_at"):
        ShapeGraphs(torch.device("cuda"), record_at=1)
