"""The fast method's exact small windows: every torch path is the exact sum."""

from __future__ import annotations

import numpy as np
import torch

from adaptiveblur.kernels import radius_map
from adaptiveblur.ops import small_exact
from adaptiveblur.ops.tile import TileInput
from tests.oracle import loop_blur

EXACT = 1e-5  # float32 rounding


def test_exact_paths_are_exact_in_any_batching(rng):
    # CPU: blocks of equal reach in batches (one block at a time with a tiny budget);
    # GPUs: row bands. Both are the exact sum.
    sigma = torch.from_numpy(rng.uniform(0.0, 3.1, (1, 1, 45, 70))).float()
    sigma[..., :, 40:] = 0.0  # blocks with nothing to do
    sigma[..., 33:, :20] = 0.6  # blocks of a smaller reach
    radius = radius_map(sigma)
    halo = int(radius.max())
    padded = torch.from_numpy(rng.random((1, 2, 45 + 2 * halo, 70 + 2 * halo))).float()
    one_by_one = padded[..., halo:-halo, halo:-halo].clone()
    batched, by_rows = one_by_one.clone(), one_by_one.clone()
    small_exact.exact_by_blocks(TileInput(padded, sigma, radius, halo, budget=1), one_by_one)
    small_exact.exact_by_blocks(TileInput(padded, sigma, radius, halo, budget=1 << 30), batched)
    small_exact.exact_by_rows(TileInput(padded, sigma, radius, halo, budget=30_000), halo, by_rows)
    torch.testing.assert_close(one_by_one, batched, atol=1e-6, rtol=0)
    torch.testing.assert_close(by_rows, batched, atol=1e-6, rtol=0)
    # Away from the crop's edges (by the largest radius) the halo's content does not matter.
    crop = padded[0, :, halo:-halo, halo:-halo].double().numpy()
    expected = loop_blur(crop, sigma[0, 0].numpy(), truncate=3.0)
    inner = (slice(None), slice(halo, -halo), slice(halo, -halo))
    assert float(np.abs(batched[0][inner].double().numpy() - expected[inner]).max()) <= EXACT
