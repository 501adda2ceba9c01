"""Process-wide memory allocator tuning, for the command line only (the library never does it).

glibc's ``malloc`` hands out every block above 32 MiB as fresh pages from the kernel and
gives them back on ``free``; the kernel then zero-fills each page again on first touch.
The fast method allocates and frees such blocks many times per tile (FFT buffers inside
torch), so without this it spends much of its time in page faults; the exact methods
gain nothing and would hold more memory, so the command line tunes the allocator for the
fast method only (measurements in ``benchmarks/README.md``).
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_MAX = -4
_KEEP_UP_TO = 2**31 - 1  # bytes of free memory at the top of the heap kept, not returned


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` reuse freed memory instead of returning it to the kernel.

    Large blocks come from the heap instead of separate mappings (``M_MMAP_MAX`` 0), and
    freed memory at the top of the heap is kept up to 2 GiB (``M_TRIM_THRESHOLD``): a
    short-lived process doing large array work then touches each page once. Returns
    whether it applied: only glibc on Linux has these settings (elsewhere, and with
    other C libraries, nothing changes).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # glibc returns 1 on success; musl's mallopt is a stub that returns 0.
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _KEEP_UP_TO) == 1
