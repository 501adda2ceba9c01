"""PNG: the encoder for every PNG adaptiveblur writes, and a decoder for 16-bit colour PNGs.

Pillow reads 16-bit RGB, RGBA and grey+alpha PNGs as 8 bits, so those are decoded here
(numpy un-filtering, Adam7 included). Every PNG is written here: 8 or 16 bits, L/LA/RGB/RGBA,
the Up filter on every row, and the deflate of large images cut into pieces that run on all
cores (as pigz does). No :class:`adaptiveblur.io.image.Image` here: samples in, bytes out (and back).
"""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from adaptiveblur.cpus import usable_cpus

# zlib level: several times faster to encode than pillow's default 6, for files slightly
# larger. Level 2 (one below GEGL's 3) deflates photos a third faster than 3 for files
# about 2 % larger, a trade a command that waits on its encoder should take.
COMPRESS_LEVEL = 2
# Image data larger than two of these is deflated in pieces on several threads (deflate()).
PARALLEL_DEFLATE_PIECE = 4 << 20
_DEFLATE_WINDOW = 32 << 10  # zlib's window: each piece is primed with the bytes before it

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {2: "RGB", 4: "LA", 6: "RGBA"}  # 16-bit types pillow would reduce
_PNG_TYPE_FOR_MODE = {"L": 0, "LA": 4, "RGB": 2, "RGBA": 6}
# Adam7 passes: (x0, y0, dx, dy)
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_IDAT_SIZE = 1 << 20
_WAVEFRONT_ROWS = 512  # rows un-filtered together; bounds the skewed buffers' memory
_WAVEFRONT_BYTES = 64 << 20


class PngError(ValueError):
    """A 16-bit PNG is malformed; the message is the one-line reason."""


@dataclass
class _PngChunks:
    """What the 16-bit reader needs from a PNG's chunks."""

    width: int
    height: int
    colour_type: int
    interlaced: bool
    idat: list[memoryview]
    icc_profile: bytes | None = None
    exif: bytes | None = None
    transparent: bytes | None = None  # tRNS of an RGB image: one 16-bit colour


def is_16_bit_colour(head: bytes) -> bool:
    """Whether the first bytes are those of a 16-bit RGB, RGBA or grey+alpha PNG."""
    return (
        len(head) >= 26
        and head.startswith(SIGNATURE)
        and head[12:16] == b"IHDR"
        and head[24] == 16
        and head[25] in _PNG_COLOUR_TYPES
    )


@dataclass
class Decoded:
    """A decoded 16-bit colour PNG: uint16 ``(H, W, C)`` samples and its metadata."""

    samples: np.ndarray
    mode: str  # "LA", "RGB" or "RGBA" (an RGB image with a tRNS colour becomes RGBA)
    icc_profile: bytes | None
    exif: bytes | None  # the eXIf chunk as stored (TIFF header first)


def decode_16_bit(data: bytes, check_size: Callable[[int, int], None]) -> Decoded:
    """Decode a 16-bit RGB, RGBA or grey+alpha PNG (see :func:`is_16_bit_colour`).

    ``check_size(width, height)`` runs on the header, before any pixel is decompressed
    (it raises to refuse the image).

    Raises:
        PngError: the file is truncated or corrupt.
    """
    chunks = _read_png_chunks(data)
    check_size(chunks.width, chunks.height)
    samples = _png16_samples(chunks)
    mode = _PNG_COLOUR_TYPES[chunks.colour_type]
    if chunks.transparent is not None:
        samples, mode = _add_alpha_for_key(samples, chunks.transparent), "RGBA"
    return Decoded(samples, mode, chunks.icc_profile, chunks.exif)


def _read_png_chunks(data: bytes) -> _PngChunks:
    """Walk the chunks of a PNG file.

    CRCs of critical chunks are checked (a mismatch is corruption); ancillary chunks with a
    bad CRC are skipped, as their content is only metadata.
    """
    view = memoryview(data)
    position = len(SIGNATURE)
    chunks: _PngChunks | None = None
    while True:
        if position + 12 > len(data):
            raise PngError("file is truncated")
        length, kind = struct.unpack_from(">I4s", data, position)
        body = view[position + 8 : position + 8 + length]
        end = position + 12 + length
        if end > len(data):
            raise PngError("file is truncated")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        critical = not kind[0] & 0x20
        position = end
        if zlib.crc32(body, zlib.crc32(kind)) != crc:
            if critical:
                raise PngError(f"file is corrupt (bad CRC in {kind.decode('latin-1')} chunk)")
            continue
        if chunks is None:
            chunks = _png_header(kind, bytes(body))
        elif kind == b"IDAT":
            chunks.idat.append(body)
        elif kind == b"IEND":
            return chunks
        else:
            _png_ancillary(chunks, kind, bytes(body))


def _png_header(kind: bytes, body: bytes) -> _PngChunks:
    """Parse IHDR, which must come first."""
    if kind != b"IHDR" or len(body) != 13:
        raise PngError("file is corrupt (no IHDR chunk)")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", body
    )
    unsupported = depth != 16 or colour not in _PNG_COLOUR_TYPES
    if not width or not height or compression or filtering or interlace > 1 or unsupported:
        raise PngError("file is corrupt (invalid IHDR chunk)")
    return _PngChunks(width, height, colour, bool(interlace), [])


def _png_ancillary(chunks: _PngChunks, kind: bytes, body: bytes) -> None:
    """Keep the ancillary chunks that matter: iCCP, eXIf and an RGB tRNS."""
    if kind == b"iCCP":
        name_end = body.find(b"\x00")
        if name_end > 0 and body[name_end + 1 : name_end + 2] == b"\x00":
            with contextlib.suppress(zlib.error):  # a broken profile is dropped
                chunks.icc_profile = zlib.decompress(body[name_end + 2 :])
    elif kind == b"eXIf":
        chunks.exif = body or None
    elif kind == b"tRNS" and chunks.colour_type == 2 and len(body) == 6:
        chunks.transparent = body


def _png16_samples(chunks: _PngChunks) -> np.ndarray:
    """Decompress and un-filter the image data into uint16 ``(H, W, C)`` samples."""
    channels = len(_PNG_COLOUR_TYPES[chunks.colour_type])
    bpp = 2 * channels  # bytes per pixel: the filters' left-neighbour distance
    passes = _png_passes(chunks.width, chunks.height, chunks.interlaced)
    expected = sum(h * (1 + w * bpp) for _, _, _, _, w, h in passes)
    raw = np.frombuffer(_png_inflate(chunks.idat, expected), dtype=np.uint8)
    samples = np.empty((chunks.height, chunks.width, channels), dtype=np.uint16)
    offset = 0
    for x0, y0, dx, dy, w, h in passes:
        size = h * (1 + w * bpp)
        rows = _unfilter(raw[offset : offset + size].reshape(h, 1 + w * bpp), bpp)
        samples[y0::dy, x0::dx] = rows.view(">u2").reshape(h, w, channels)
        offset += size
    return samples


def _png_passes(
    width: int, height: int, interlaced: bool
) -> list[tuple[int, int, int, int, int, int]]:
    """Sub-images of the data: ``(x0, y0, dx, dy, width, height)``, empty ones left out."""
    if not interlaced:
        return [(0, 0, 1, 1, width, height)]
    passes = []
    for x0, y0, dx, dy in _ADAM7:
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if w > 0 and h > 0:
            passes.append((x0, y0, dx, dy, w, h))
    return passes


def _png_inflate(pieces: list[memoryview], expected: int) -> bytes:
    """Decompress concatenated IDAT data, refusing more than ``expected`` bytes."""
    inflater = zlib.decompressobj()
    parts: list[bytes] = []
    produced = 0
    try:
        for piece in pieces:
            pending: bytes | memoryview = piece
            while pending and produced <= expected:
                part = inflater.decompress(pending, expected + 1 - produced)
                parts.append(part)
                produced += len(part)
                pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise PngError(f"file is corrupt (image data: {exc})") from None
    if produced > expected:
        raise PngError("file is corrupt (too much image data)")
    if produced < expected:
        reason = "file is corrupt (too little image data)" if inflater.eof else "file is truncated"
        raise PngError(reason)
    return b"".join(parts)


def _unfilter(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG filtering.

    Args:
        rows: uint8 ``(H, 1 + W * bpp)``: a filter-type byte, then the filtered row.
        bpp: bytes per pixel, the distance to the "left" byte.

    Returns:
        uint8 ``(H, W * bpp)`` reconstructed bytes.

    None and Up only look at the row above, so they are one vector operation per row; Sub
    is a wrapping cumulative sum along the row. Average and Paeth need the reconstructed
    left neighbour, so bands of rows containing them go through :func:`_unfilter_wavefront`.
    """
    height, stride = rows.shape
    width = (stride - 1) // bpp
    kinds = rows[:, 0]
    if kinds.size and kinds.max() > 4:
        raise PngError(f"file is corrupt (unknown filter type {int(kinds.max())})")
    filtered = rows[:, 1:].reshape(height, width, bpp)
    out = np.empty((height, width, bpp), dtype=np.uint8)
    band = min(_WAVEFRONT_ROWS, max(8, _WAVEFRONT_BYTES // (3 * bpp * (width + _WAVEFRONT_ROWS))))
    above = np.zeros((width, bpp), dtype=np.uint8)
    for y0 in range(0, height, band):
        y1 = min(height, y0 + band)
        if (kinds[y0:y1] >= 3).any():
            out[y0:y1] = _unfilter_wavefront(filtered[y0:y1], kinds[y0:y1], above)
        else:
            _unfilter_simple(filtered[y0:y1], kinds[y0:y1], above, out[y0:y1])
        above = out[y1 - 1]
    return out.reshape(height, width * bpp)


def _unfilter_simple(
    filtered: np.ndarray, kinds: np.ndarray, above: np.ndarray, out: np.ndarray
) -> None:
    """Rows filtered with None (0), Sub (1) or Up (2), one vector step per row."""
    for y in range(filtered.shape[0]):
        kind = kinds[y]
        if kind == 0:
            out[y] = filtered[y]
        elif kind == 1:
            np.cumsum(filtered[y], axis=0, dtype=np.uint8, out=out[y])  # wraps mod 256
        else:
            np.add(filtered[y], above, out=out[y])  # uint8 addition wraps mod 256
        above = out[y]


def _skewed(buffer: np.ndarray, rows: int, width: int, first: int) -> np.ndarray:
    """A ``(rows, width, bpp)`` view with ``view[r, x]`` at ``buffer[first + x + r, r]``."""
    step_k, step_r, step_c = buffer.strides
    return as_strided(
        buffer[first:],
        shape=(rows, width, buffer.shape[2]),
        strides=(step_k + step_r, step_k, step_c),
        writeable=True,
    )


def _unfilter_wavefront(filtered: np.ndarray, kinds: np.ndarray, above: np.ndarray) -> np.ndarray:
    """Un-filter a band of rows with any filter types, one anti-diagonal at a time.

    Byte ``(y, x)`` depends on ``(y, x-1)``, ``(y-1, x)`` and ``(y-1, x-1)`` only, so all
    pixels with the same ``x + y`` can be reconstructed together. The band is stored skewed
    (row ``r`` shifted right by ``r``) so that each anti-diagonal is one contiguous slice and
    its three neighbours are slices of the previous two diagonals: ``W + B`` vector steps
    for ``B`` rows instead of ``W * B`` scalar ones.

    Args:
        filtered: uint8 ``(B, W, bpp)`` filtered bytes.
        kinds: ``(B,)`` filter type per row.
        above: uint8 ``(W, bpp)`` reconstructed row above the band (zeros at the top).

    Returns:
        uint8 ``(B, W, bpp)`` reconstructed bytes.
    """
    rows, width, bpp = filtered.shape
    steps = width + rows + 1
    # Diagonal k holds pixel (r, x) with k = x + r + 2; row 0 of `recon` is the row above,
    # entries never written stay 0, which is what the filters use outside the image.
    source = np.zeros((steps, rows, bpp), dtype=np.uint8)
    recon = np.zeros((steps, rows + 1, bpp), dtype=np.int16)
    _skewed(source, rows, width, 2)[...] = filtered
    recon[1 : width + 1, 0] = above
    kinds16 = kinds.astype(np.int16)
    is_paeth = (kinds16 == 4)[:, None]
    # None, Sub, Up and Average are all (wa * left + wb * up) >> 1.
    weight_left = np.select([kinds16 == 1, kinds16 == 3], [2, 1], 0).astype(np.int16)[:, None]
    weight_up = np.select([kinds16 == 2, kinds16 == 3], [2, 1], 0).astype(np.int16)[:, None]
    any_paeth, all_paeth = bool(is_paeth.any()), bool(is_paeth.all())
    for k in range(2, steps):
        lo, hi = max(0, k - 1 - width), min(rows, k - 1)
        left = recon[k - 1, lo + 1 : hi + 1]
        up = recon[k - 1, lo:hi]
        if any_paeth:
            predicted = _paeth(left, up, recon[k - 2, lo:hi])
            if not all_paeth:
                linear = (weight_left[lo:hi] * left + weight_up[lo:hi] * up) >> 1
                predicted = np.where(is_paeth[lo:hi], predicted, linear)
        else:
            predicted = (weight_left[lo:hi] * left + weight_up[lo:hi] * up) >> 1
        predicted += source[k, lo:hi]
        predicted &= 0xFF
        recon[k, lo + 1 : hi + 1] = predicted
    return _skewed(recon[:, 1:], rows, width, 2).astype(np.uint8)


def _paeth(left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    """The PNG Paeth predictor on int16 arrays (ties: left, then up, then up-left)."""
    up_minus = up - up_left
    left_minus = left - up_left
    distance_left = np.abs(up_minus)  # |p - left| where p = left + up - up_left
    distance_up = np.abs(left_minus)
    distance_corner = np.abs(up_minus + left_minus)
    predicted = np.where(distance_up <= distance_corner, up, up_left)
    np.copyto(
        predicted,
        left,
        where=(distance_left <= distance_up) & (distance_left <= distance_corner),
    )
    return predicted


def _add_alpha_for_key(values: np.ndarray, key: bytes) -> np.ndarray:
    """RGB → RGBA, transparent where the pixel equals the tRNS colour."""
    colour = np.frombuffer(key, dtype=">u2").astype(np.uint16)
    alpha = np.where((values == colour).all(axis=2), 0, 0xFFFF).astype(np.uint16)
    return np.concatenate([values, alpha[:, :, None]], axis=2)


def encode(values: np.ndarray, mode: str, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """Encode uint8 or uint16 ``(H, W, C)`` L/LA/RGB/RGBA samples as an 8- or 16-bit PNG.

    ``icc_profile`` goes into an iCCP chunk, ``exif`` (the TIFF part, without the
    ``Exif\0\0`` prefix) into an eXIf chunk. Every row uses the Up filter: one vector
    subtraction, and on photographs within a few percent of the size Paeth or pillow's
    adaptive filters give, for much less work.
    """
    height, width, channels = values.shape
    depth = 8 * values.dtype.itemsize
    data = values.astype(">u2").view(np.uint8) if depth == 16 else values
    data = data.reshape(height, width * channels * depth // 8)
    rows = np.empty((height, 1 + data.shape[1]), dtype=np.uint8)
    rows[:, 0] = 2  # Up
    rows[0, 1:] = data[0]
    np.subtract(data[1:], data[:-1], out=rows[1:, 1:])  # uint8 subtraction wraps mod 256
    compressed = deflate(rows.data, COMPRESS_LEVEL)
    header = struct.pack(">IIBBBBB", width, height, depth, _PNG_TYPE_FOR_MODE[mode], 0, 0, 0)
    out = io.BytesIO()
    out.write(SIGNATURE)
    out.write(_png_chunk(b"IHDR", header))
    if icc_profile:
        out.write(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
    if exif:
        out.write(_png_chunk(b"eXIf", exif))
    for start in range(0, len(compressed), _IDAT_SIZE):
        out.write(_png_chunk(b"IDAT", compressed[start : start + _IDAT_SIZE]))
    out.write(_png_chunk(b"IEND", b""))
    return out.getvalue()


def deflate(buffer: memoryview, level: int) -> bytes:
    """A zlib stream of ``buffer``'s bytes; large data is deflated in pieces on several threads.

    As pigz does: each piece is primed with the 32 KiB before it (so the ratio is kept)
    and ends on a byte boundary (a sync flush), so the pieces join into one valid stream
    with one header and the Adler-32 of the whole. zlib lets go of the interpreter lock
    while it compresses.
    """
    data = buffer.cast("B") if buffer.ndim != 1 or buffer.format != "B" else buffer  # bytes
    size = data.nbytes
    pieces = min(usable_cpus(), size // PARALLEL_DEFLATE_PIECE)
    if pieces < 2:
        return zlib.compress(data, level)
    bounds = [size * index // pieces for index in range(pieces + 1)]

    def piece(index: int) -> bytes:
        start, end = bounds[index], bounds[index + 1]
        compressor = (
            zlib.compressobj(
                level, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=data[start - _DEFLATE_WINDOW : start]
            )
            if start
            else zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        )
        last = index == pieces - 1
        return compressor.compress(data[start:end]) + compressor.flush(
            zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
        )

    with ThreadPoolExecutor(max_workers=pieces) as pool:
        body = b"".join(pool.map(piece, range(pieces)))
    return _zlib_header(level) + body + struct.pack(">I", zlib.adler32(data))


def _zlib_header(level: int) -> bytes:
    """CMF and FLG bytes of a zlib stream: deflate, 32 KiB window, ``level``'s FLEVEL."""
    cmf = 0x78
    flevel = 0 if level < 2 else 1 if level < 6 else 2 if level == 6 else 3
    flg = flevel << 6
    flg |= (31 - (cmf * 256 + flg) % 31) % 31
    return bytes((cmf, flg))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC."""
    crc = zlib.crc32(body, zlib.crc32(kind))
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
