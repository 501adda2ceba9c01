"""The tile contract: what the engine hands every backend's ``blur_tile``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from adaptiveblur.kernels import DEFAULT_TRUNCATE
from adaptiveblur.tiling import DEFAULT_MAX_MEMORY


@dataclass(frozen=True)
class TileInput:
    """One output tile of ``h x w`` pixels and the input around it.

    Attributes:
        padded: ``(B, C, h + 2*halo, w + 2*halo)`` float input, borders already filled.
        sigma: ``(B, 1, h, w)`` per-pixel sigma of the tile's output pixels (any strides).
        radius: ``(B, 1, h, w)`` int64 per-pixel window radius, all in ``[0, halo]``.
        halo: the input's margin on each side (``>= 0``); no radius exceeds it.
        truncate: the window radius in sigmas that gave ``radius``.
        budget: bytes the backend's temporaries may take at once.
        reread: where given, reads :attr:`padded` again (without autograd), so that a
            backward pass may keep this instead of the window itself.

    Raises:
        ValueError: on construction, when the shapes or the radius dtype do not fit
            together (values are not read: that would wait on a GPU).

    Example:
        >>> tile = TileInput(torch.zeros(1, 3, 8, 10), torch.ones(1, 1, 4, 6),
        ...                  torch.full((1, 1, 4, 6), 2), halo=2)
        >>> tile.height, tile.width, tile.around(1).shape
        (4, 6, torch.Size([1, 3, 6, 8]))
    """

    padded: torch.Tensor
    sigma: torch.Tensor
    radius: torch.Tensor
    halo: int
    truncate: float = DEFAULT_TRUNCATE
    budget: int = DEFAULT_MAX_MEMORY
    reread: Callable[[], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        padded, sigma, radius, halo = self.padded, self.sigma, self.radius, self.halo
        if padded.dim() != 4 or sigma.dim() != 4 or radius.dim() != 4:
            raise ValueError(
                f"expected 4-D padded, sigma and radius, got {padded.dim()}, {sigma.dim()}, "
                f"{radius.dim()} dims"
            )
        batch, _, padded_h, padded_w = padded.shape
        expected = (batch, 1, padded_h - 2 * halo, padded_w - 2 * halo)
        if (
            halo < 0
            or min(expected[2:]) < 1
            or tuple(sigma.shape) != expected
            or tuple(radius.shape) != expected
        ):
            raise ValueError(
                f"expected padded (B, C, h + 2*{halo}, w + 2*{halo}) and sigma, radius of shape "
                f"(B, 1, h, w), got {tuple(padded.shape)}, {tuple(sigma.shape)}, "
                f"{tuple(radius.shape)}"
            )
        if radius.dtype != torch.int64:
            raise ValueError(f"expected an int64 radius, got {radius.dtype}")

    @property
    def height(self) -> int:
        """Output rows ``h``."""
        return int(self.sigma.shape[-2])

    @property
    def width(self) -> int:
        """Output columns ``w``."""
        return int(self.sigma.shape[-1])

    def around(
        self, reach: int, rows: tuple[int, int] | None = None, cols: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """The input of output ``rows`` x ``cols`` (default: all) with a margin of ``reach``.

        A view of :attr:`padded`; ``reach`` must not exceed :attr:`halo`.
        """
        y0, y1 = (0, self.height) if rows is None else rows
        x0, x1 = (0, self.width) if cols is None else cols
        low, high = self.halo - reach, self.halo + reach
        return self.padded[..., low + y0 : high + y1, low + x0 : high + x1]
