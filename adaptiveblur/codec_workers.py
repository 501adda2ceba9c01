"""Where a batch decodes and encodes: in its own threads, or in worker processes.

When the blur runs on GPUs, what is left for the CPUs is decoding and encoding, and in one
Python process those threads contend for the interpreter lock: on a 16-core GPU host a
thread pool tops out below what the cores can decode and encode. :class:`Codecs` with
``processes=N`` hands each file's decode and encode to N worker processes (started on
demand with ``spawn``, so no GPU state is inherited), while the calling threads keep the
blur; pixels travel between them as 8-bit (or 16-bit) samples. Errors come back as the
same exceptions. Worker processes ignore Ctrl-C: the batch decides when to stop, and a
file being written is finished (atomically) or not written at all.
"""

from __future__ import annotations

import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor

from adaptiveblur import io


class Codecs:
    """Load and save images, in this process (``processes=0``) or in worker processes."""

    def __init__(self, processes: int = 0) -> None:
        self._pool = (
            ProcessPoolExecutor(
                max_workers=processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_ignore_interrupts,
            )
            if processes > 0
            else None
        )

    def load(self, path: str, max_pixels: int | None) -> io.Image:
        """:func:`io.load_image` with ``integers=True``."""
        if self._pool is None:
            return _load(path, max_pixels)
        return self._pool.submit(_load, path, max_pixels).result()

    def save(self, image: io.Image, dest: str, fmt: str, quality: int) -> None:
        """:func:`io.save_image` (atomic)."""
        if self._pool is None:
            io.save_image(image, dest, format=fmt, quality=quality)
        else:
            self._pool.submit(io.save_image, image, dest, format=fmt, quality=quality).result()

    def close(self) -> None:
        """Stop the workers once the files they are on are done; queued work is dropped."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _load(path: str, max_pixels: int | None) -> io.Image:
    return io.load_image(path, max_pixels=max_pixels, integers=True)


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
