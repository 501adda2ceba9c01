"""Independent float64 references for the blur, written plainly and separately from the library.

``loop_blur`` visits every pixel and its window with numpy; ``unfold_blur`` is the
"seed" approach from the forum question this project grew from (pad the whole image,
``F.unfold`` every window at the largest radius, weight, sum). Beside them: Rec. 709
luma, the sRGB transfer functions and a 16-bit PNG writer, from their formulas and the
PNG specification. Nothing here imports ``adaptiveblur``.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import torch
import torch.nn.functional as F

LUMA = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709, written out here on purpose
SCIPY_MODE = {"reflect": "mirror", "replicate": "nearest", "constant": "constant"}
NUMPY_PAD = {"reflect": "reflect", "replicate": "edge", "constant": "constant"}


def loop_blur(
    image: np.ndarray,
    sigma: np.ndarray,
    truncate: float = 3.0,
    border: str = "reflect",
    max_radius: int | None = None,
) -> np.ndarray:
    """``image (C, H, W)``, ``sigma (H, W)`` -> ``(C, H, W)`` float64, one pixel at a time.

    ``max_radius`` cuts every window to that radius (the weights stay each pixel's own).
    """
    image = np.asarray(image, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    channels, height, width = image.shape
    big = int(math.floor(truncate * float(sigma.max()) + 0.5))
    padded = np.pad(image, ((0, 0), (big, big), (big, big)), mode=NUMPY_PAD[border])
    out = np.empty_like(image)
    for y in range(height):
        for x in range(width):
            s = float(sigma[y, x])
            r = int(math.floor(truncate * s + 0.5))
            if max_radius is not None:
                r = min(r, max_radius)
            if r == 0:
                out[:, y, x] = image[:, y, x]
                continue
            d = np.arange(-r, r + 1, dtype=np.float64)
            w = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * s * s))
            window = padded[:, y + big - r : y + big + r + 1, x + big - r : x + big + r + 1]
            out[:, y, x] = (window * w).sum(axis=(1, 2)) / w.sum()
    return out


def loop_blur_batch(
    image: np.ndarray, sigma: np.ndarray, truncate: float = 3.0, border: str = "reflect"
) -> np.ndarray:
    """:func:`loop_blur` of ``image (B, C, H, W)`` with ``sigma (B, 1, H, W)``, item by item."""
    return np.stack([loop_blur(image[i], sigma[i, 0], truncate, border) for i in range(len(image))])


def scipy_blur(
    image: np.ndarray, sigma: float, truncate: float = 3.0, border: str = "reflect"
) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter`` of every 2-D plane of ``image (..., H, W)``, float64.

    The constant-sigma promise: ``mode='mirror'`` is our ``reflect``.
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    planes = image.reshape(-1, *image.shape[-2:])
    blurred = [
        ndimage.gaussian_filter(plane, sigma, mode=SCIPY_MODE[border], truncate=truncate)
        for plane in planes
    ]
    return np.stack(blurred).reshape(image.shape)


def unfold_blur(image: torch.Tensor, sigma: torch.Tensor, truncate: float = 3.0) -> torch.Tensor:
    """Seed-style whole-image unfold: ``image (B, C, H, W)``, ``sigma (B, 1, H, W)``, reflect border.

    Only valid while the largest radius is smaller than the image (``F.pad`` reflect limit).
    """
    image = image.double()
    sigma = sigma.double()
    b, c, h, w = image.shape
    big = int(math.floor(truncate * float(sigma.max()) + 0.5))
    k = 2 * big + 1
    cols = F.unfold(F.pad(image, (big, big, big, big), mode="reflect"), k)  # (B, C*k*k, H*W)
    cols = cols.view(b, c, k * k, h * w)
    dy, dx = torch.meshgrid(torch.arange(-big, big + 1), torch.arange(-big, big + 1), indexing="ij")
    d2 = (dy**2 + dx**2).reshape(1, k * k, 1).double()
    cheb = torch.maximum(dy.abs(), dx.abs()).reshape(1, k * k, 1)
    s = sigma.view(b, 1, h * w)
    r = torch.floor(truncate * s + 0.5)
    weights = torch.exp(-d2 / (2 * s.clamp_min(1e-12) ** 2)) * (cheb <= r)
    out = (cols * weights[:, None]).sum(2) / weights.sum(1, keepdim=True)
    return out.view(b, c, h, w)


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 decoding, float64."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 encoding, float64."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * values ** (1 / 2.4) - 0.055)


def luma(pixels: np.ndarray) -> np.ndarray:
    """Rec. 709 luma of ``(H, W, 3+)`` float pixels, float64, clipped to [0, 1]."""
    return np.clip(np.asarray(pixels[..., :3], dtype=np.float64) @ LUMA, 0.0, 1.0)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC (PNG specification, section 5.3)."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png16_bytes(values: np.ndarray) -> bytes:
    """A 16-bit PNG of uint16 ``(H, W, 3)`` RGB samples, filter type 0 on every row."""
    height, width, _ = values.shape
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )
