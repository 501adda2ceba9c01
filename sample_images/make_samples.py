#!/usr/bin/env python3
"""Generate the synthetic sample images bundled in ``sample_images/``.

Only numpy and Pillow are needed.  Everything here is deterministic: the one
random element (the sticker's confetti) uses a fixed seed, and the output
bytes depend only on the numpy/Pillow/zlib versions in use.

Usage::

    python sample_images/make_samples.py            # write into this folder
    python sample_images/make_samples.py --out DIR  # write somewhere else
    python sample_images/make_samples.py --photos SKIMAGE_DATA_DIR
        # also re-derive astronaut.jpg and chelsea.jpg from the PNGs that ship in
        # scikit-image's ``skimage/data/`` folder (see README.md for provenance)

Files written (see README.md for details):

* ``depth.png``      8-bit grayscale depth-like map, 512x512 (matches astronaut.jpg)
* ``sticker.png``    RGBA 384x256, saturated antialiased shapes on a fully
                     transparent background
* ``gradient16.png`` 16-bit-per-channel RGB 256x192, written byte by byte
                     (Pillow cannot write 16-bit RGB PNGs)
* ``gray16.png``     16-bit grayscale 128x96 (Pillow mode ``I;16``)
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 20240521
HERE = Path(__file__).resolve().parent

# sha256 of the source PNGs as listed in scikit-image 0.26.0's skimage/data/_registry.py
PHOTO_SOURCES = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
}
JPEG_QUALITY = 92


# --------------------------------------------------------------------------- helpers


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def pixel_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y), float64, shape (height, width)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    return x + 0.5, y + 0.5


def to_u16(a: np.ndarray) -> np.ndarray:
    return np.round(np.clip(a, 0.0, 1.0) * 65535.0).astype(np.uint16)


def to_u8(a: np.ndarray) -> np.ndarray:
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------- depth map


def make_depth(width: int = 512, height: int = 512) -> np.ndarray:
    """Smooth depth-like map, uint8 (height, width); bright = far = more blur.

    Dark (near, in focus) around the upper-middle where the astronaut's face
    is in astronaut.jpg, darkish along the bottom (her body and the helmet are
    close to the camera), brightening smoothly towards the top corners
    (flag, wall, shuttle model).
    """
    x, y = pixel_grid(width, height)
    u, v = x / width, y / height
    # elliptical distance from the focus point
    r = np.hypot((u - 0.44) / 0.42, (v - 0.30) / 0.55)
    far = smoothstep(0.30, 1.25, r)
    # the lower part of the frame is near: pull it back towards dark
    near_floor = smoothstep(0.55, 1.0, v)
    depth = far * (1.0 - 0.75 * near_floor)
    # gentle overall vertical trend (top a little farther than bottom)
    depth = 0.85 * depth + 0.15 * (1.0 - v)
    depth = (depth - depth.min()) / (depth.max() - depth.min())
    return to_u8(depth)


# --------------------------------------------------------------------------- sticker


def _coverage(sdf: np.ndarray, soft: float = 1.0) -> np.ndarray:
    """Antialiased coverage from a signed distance (pixels, negative inside).

    ``soft`` ~1 gives a crisp one-pixel antialiased edge; larger values
    give a feathered edge ``soft`` pixels wide.
    """
    if soft <= 1.0:
        return np.clip(0.5 - sdf, 0.0, 1.0)
    return 1.0 - smoothstep(-soft / 2.0, soft / 2.0, sdf)


def _sdf_circle(x, y, cx, cy, r):
    return np.hypot(x - cx, y - cy) - r


def _sdf_round_box(x, y, cx, cy, hw, hh, rad):
    qx = np.abs(x - cx) - (hw - rad)
    qy = np.abs(y - cy) - (hh - rad)
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return outside + inside - rad


def _sdf_polygon(x, y, pts):
    """Signed distance to a closed polygon (even-odd inside test)."""
    pts = np.asarray(pts, dtype=np.float64)
    d2 = np.full(x.shape, np.inf)
    inside = np.zeros(x.shape, dtype=bool)
    n = len(pts)
    for i in range(n):
        ax, ay = pts[i]
        bx, by = pts[(i + 1) % n]
        ex, ey = bx - ax, by - ay
        wx, wy = x - ax, y - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        dx, dy = wx - ex * t, wy - ey * t
        d2 = np.minimum(d2, dx * dx + dy * dy)
        crosses = ((ay > y) != (by > y)) & (x < ax + (y - ay) * ex / (ey if ey else 1e-300))
        inside ^= crosses
    d = np.sqrt(d2)
    return np.where(inside, -d, d)


def _star(cx, cy, r_out, r_in, n=5, rot=-np.pi / 2):
    pts = []
    for k in range(2 * n):
        r = r_out if k % 2 == 0 else r_in
        a = rot + k * np.pi / n
        pts.append((cx + r * np.cos(a), cy + r * np.sin(a)))
    return pts


def make_sticker(width: int = 384, height: int = 256, seed: int = SEED) -> np.ndarray:
    """RGBA uint8 (height, width, 4), straight (non-premultiplied) alpha.

    Fully transparent pixels are stored as (0, 0, 0, 0), so a filter that
    blurs straight-alpha RGB without premultiplying pulls black into every
    edge and shows dark halos around the saturated shapes.
    """
    x, y = pixel_grid(width, height)
    # accumulate in premultiplied float RGBA with the "over" operator
    acc_rgb = np.zeros((height, width, 3))
    acc_a = np.zeros((height, width))

    def over(colour, coverage, opacity=1.0):
        nonlocal acc_rgb, acc_a
        a = coverage * opacity
        c = np.asarray(colour, dtype=np.float64) / 255.0
        acc_rgb = c * a[..., None] + acc_rgb * (1.0 - a[..., None])
        acc_a = a + acc_a * (1.0 - a)

    # feathered magenta glow (wide soft edge, partially transparent everywhere)
    over((255, 0, 200), _coverage(_sdf_circle(x, y, 300, 70, 44), soft=28.0), 0.85)
    # crisp saturated red disc
    over((255, 24, 24), _coverage(_sdf_circle(x, y, 92, 108, 62)))
    # pure blue rounded box overlapping the disc
    over((16, 48, 255), _coverage(_sdf_round_box(x, y, 168, 170, 70, 44, 18)))
    # green star with a slightly soft edge
    over((0, 230, 40), _coverage(_sdf_polygon(x, y, _star(292, 168, 72, 30)), soft=3.0))
    # half-transparent cyan bar across the blue box and the star
    over((0, 230, 255), _coverage(_sdf_round_box(x, y, 236, 214, 120, 12, 12)), 0.5)
    # thin yellow ring (tests thin features and holes)
    ring = np.abs(np.hypot(x - 58, y - 212) - 26) - 4.0
    over((255, 224, 0), _coverage(ring))
    # confetti: small antialiased dots at seeded random places
    rng = np.random.default_rng(seed)
    palette = [(255, 24, 24), (16, 48, 255), (0, 230, 40), (255, 224, 0), (255, 0, 200)]
    for _ in range(14):
        cx = rng.uniform(12, width - 12)
        cy = rng.uniform(10, 44)
        r = rng.uniform(2.0, 6.0)
        col = palette[int(rng.integers(len(palette)))]
        over(col, _coverage(_sdf_circle(x, y, cx, cy, r)))

    a8 = to_u8(acc_a)
    safe = np.where(acc_a > 0, acc_a, 1.0)
    rgb = acc_rgb / safe[..., None]
    rgb8 = to_u8(rgb)
    rgb8[a8 == 0] = 0
    return np.dstack([rgb8, a8])


# --------------------------------------------------------------------------- 16-bit RGB


def make_gradient16(width: int = 256, height: int = 192) -> np.ndarray:
    """uint16 (height, width, 3): smooth low-contrast gradients plus hard edges.

    The top band is a dim, low-contrast dusk-sky ramp: across its width each
    channel spans only ~2000-5000 of 65535, i.e. 8-20 steps in 8 bits, so
    an 8-bit version (or an 8-bit pipeline) shows clear banding.
    """
    x, y = pixel_grid(width, height)
    u, v = x / width, y / height
    img = np.zeros((height, width, 3))

    # top 2/3: dim diagonal sky gradient (smooth in both directions)
    t = 0.7 * u + 0.3 * v
    img[..., 0] = 0.06 + 0.05 * t
    img[..., 1] = 0.09 + 0.04 * t
    img[..., 2] = 0.22 + 0.08 * t

    # hard-edged disc ("moon") with a smooth internal radial shading
    r = np.hypot(x - 0.72 * width, y - 0.30 * height)
    disc = r < 0.16 * height
    shade = 0.80 + 0.15 * (1.0 - r / (0.16 * height))
    for c, k in enumerate((1.0, 0.97, 0.85)):
        img[..., c] = np.where(disc, shade * k, img[..., c])

    # bottom third: full-range horizontal grey ramp (0 .. 65535), rows identical
    band = v >= 2.0 / 3.0
    img[band] = u[band][:, None]

    # hard vertical bars crossing the grey ramp (sharp edges on both sides)
    bars = band & (v >= 0.80) & (v < 0.90) & ((x // 16) % 2 == 0)
    img[bars] = np.array([0.95, 0.10, 0.05])

    # single-pixel-wide black rule between sky and ramp
    rule = (y >= 2.0 / 3.0 * height - 1.0) & (y < 2.0 / 3.0 * height)
    img[rule] = 0.0
    return to_u16(img)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def encode_png_rgb16(arr: np.ndarray) -> bytes:
    """Encode uint16 (H, W, 3) as a 16-bit RGB PNG (colour type 2, filter 0)."""
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError("expected a uint16 array of shape (H, W, 3)")
    h, w, _ = arr.shape
    be = arr.astype(">u2")
    raw = b"".join(b"\x00" + be[i].tobytes() for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw, 9))
        + _png_chunk(b"IEND", b"")
    )


def decode_png_rgb16(data: bytes) -> np.ndarray:
    """Minimal independent decoder for what ``encode_png_rgb16`` writes.

    Checks the signature, every chunk CRC, the IHDR fields and that every
    row uses filter type 0; returns uint16 (H, W, 3).
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("bad PNG signature")
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"CRC mismatch in {kind!r}")
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if ihdr is None:
        raise ValueError("no IHDR")
    w, h, depth, ctype, comp, filt, interlace = ihdr
    if (depth, ctype, comp, filt, interlace) != (16, 2, 0, 0, 0):
        raise ValueError(f"unexpected IHDR {ihdr}")
    raw = zlib.decompress(b"".join(idat))
    stride = 1 + w * 6
    if len(raw) != h * stride:
        raise ValueError("wrong decompressed size")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, stride)
    if np.any(rows[:, 0] != 0):
        raise ValueError("non-zero filter byte")
    return rows[:, 1:].copy().view(">u2").reshape(h, w, 3).astype(np.uint16)


# --------------------------------------------------------------------------- 16-bit grey


def make_gray16(width: int = 128, height: int = 96) -> np.ndarray:
    """uint16 (height, width): smooth radial ramp with a hard-edged square."""
    x, y = pixel_grid(width, height)
    r = np.hypot(x - 0.5 * width, y - 0.5 * height) / np.hypot(0.5 * width, 0.5 * height)
    img = 0.10 + 0.85 * (1.0 - r) ** 1.5
    sq = (np.abs(x - 0.25 * width) < 12) & (np.abs(y - 0.30 * height) < 12)
    img = np.where(sq, 0.98, img)
    img[:, -6:] = np.linspace(0.0, 1.0, height)[:, None]  # vertical full-range strip
    return to_u16(img)


# --------------------------------------------------------------------------- photos


def convert_photos(skimage_data: Path, out: Path) -> list[Path]:
    """Re-derive the bundled JPEG photos from scikit-image's source PNGs."""
    written = []
    for name, sha in PHOTO_SOURCES.items():
        src = skimage_data / name
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        if digest != sha:
            raise SystemExit(f"{src}: sha256 {digest} does not match the expected {sha}")
        with Image.open(src) as im:
            rgb = im.convert("RGB")  # drops the ICC profile / text chunks
        dst = out / (Path(name).stem + ".jpg")
        rgb.save(dst, quality=JPEG_QUALITY, subsampling=0, optimize=True)
        written.append(dst)
    return written


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: here)")
    ap.add_argument(
        "--photos",
        type=Path,
        metavar="SKIMAGE_DATA_DIR",
        help="also convert astronaut/chelsea from scikit-image's skimage/data folder",
    )
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    if args.photos is not None:
        written += convert_photos(args.photos, out)

    Image.fromarray(make_depth()).save(out / "depth.png", optimize=True)
    written.append(out / "depth.png")

    Image.fromarray(make_sticker()).save(out / "sticker.png", optimize=True)
    written.append(out / "sticker.png")

    g16 = make_gradient16()
    png = encode_png_rgb16(g16)
    (out / "gradient16.png").write_bytes(png)
    written.append(out / "gradient16.png")
    # verify: our own strict decode must round-trip exactly ...
    if not np.array_equal(decode_png_rgb16((out / "gradient16.png").read_bytes()), g16):
        raise SystemExit("gradient16.png: decoded IDAT does not match the array")
    # ... and Pillow (an independent decoder) must open it; it reduces to 8 bits
    with Image.open(out / "gradient16.png") as im:
        im.load()
        if im.size != (g16.shape[1], g16.shape[0]) or im.mode != "RGB":
            raise SystemExit(f"gradient16.png: Pillow reads {im.mode} {im.size}")
        if np.abs(np.asarray(im).astype(int) - (g16 >> 8)).max() > 1:
            raise SystemExit("gradient16.png: Pillow's 8-bit view disagrees with the data")

    gray = make_gray16()
    Image.fromarray(gray).save(out / "gray16.png", optimize=True)
    written.append(out / "gray16.png")
    with Image.open(out / "gray16.png") as im:
        if im.mode != "I;16" or not np.array_equal(np.asarray(im), gray):
            raise SystemExit(f"gray16.png: Pillow reads back {im.mode}, data differ")

    for p in written:
        print(f"{p.stat().st_size:8d}  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
