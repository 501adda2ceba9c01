"""``nn.Module`` wrappers: they store arguments (and the learnable weight) and call the ops."""

from __future__ import annotations

import math

import torch
from torch import nn

from adaptiveblur.borders import DEFAULT_BORDER
from adaptiveblur.kernels import DEFAULT_TRUNCATE
from adaptiveblur.nn.functional import spatially_varying_conv2d
from adaptiveblur.ops import adaptive_blur


class AdaptiveGaussianBlur(nn.Module):
    """Per-pixel Gaussian blur: ``forward(x, sigma)`` is :func:`adaptiveblur.adaptive_blur`.

    Differentiable in ``x`` and ``sigma``; the kernel size follows ``sigma`` on every call.
    With ``sigma_bound`` (a number no sigma exceeds) nothing is read back from the map,
    so a call can be recorded in a CUDA graph (see ``adaptive_blur``).

    Example:
        >>> blur = AdaptiveGaussianBlur()
        >>> blur(torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(
        self,
        *,
        truncate: float = DEFAULT_TRUNCATE,
        border: str = DEFAULT_BORDER,
        max_memory: int | None = None,
        sigma_bound: float | None = None,
    ) -> None:
        super().__init__()
        self.truncate = truncate
        self.border = border
        self.max_memory = max_memory
        self.sigma_bound = sigma_bound

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return adaptive_blur(
            x,
            sigma,
            truncate=self.truncate,
            border=self.border,
            max_memory=self.max_memory,
            sigma_bound=self.sigma_bound,
        )


class SpatiallyVaryingConv2d(nn.Module):
    """A learnable ``(C_out, C_in, k, k)`` kernel modulated per location: ``forward(x, modulation)``.

    ``modulation`` is ``(B, k*k, H, W)`` (or ``None`` for a plain "same" convolution).

    Example:
        >>> conv = SpatiallyVaryingConv2d(3, 8, kernel_size=3)
        >>> conv(torch.rand(2, 3, 10, 10), torch.rand(2, 9, 10, 10)).shape
        torch.Size([2, 8, 10, 10])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        bias: bool = True,
        padding_mode: str = "zeros",
        max_memory: int | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.padding_mode = padding_mode
        self.max_memory = max_memory
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Conv2d``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor, modulation: torch.Tensor | None = None) -> torch.Tensor:
        return spatially_varying_conv2d(
            x,
            self.weight,
            modulation=modulation,
            bias=self.bias,
            padding_mode=self.padding_mode,
            max_memory=self.max_memory,
        )
