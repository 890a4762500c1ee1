"""``tune_allocator``: let glibc keep freed memory for reuse in processes that fingerprint or verify images.

Fingerprinting and verifying an image make hundreds of short-lived numpy arrays of 0.1-1 MB. By
default glibc maps each such block with mmap and unmaps it on free, so every one costs fresh
zeroed pages (page faults), a large share of the time an image takes. Fixed thresholds make those
arrays reuse the heap instead, keeping at most ``TRIM_BYTES`` of freed memory.

The setting is process-wide, so nothing calls it at import: the entry points of the processes
that do this work call it (``fingerprint_images``, which the fingerprint pool's workers and the
benchmarks run, and ``matching.match_batches``, the Spark match job's partition function). A
no-op where the C library is not glibc.
"""

from __future__ import annotations

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_BYTES = 4 << 20  # blocks up to this size come from the heap, not from their own mapping
TRIM_BYTES = 32 << 20  # freed memory kept for reuse before glibc returns it to the OS

_tuned = False


def tune_allocator() -> None:
    """Set glibc's mmap and trim thresholds for this process (once; later calls do nothing)."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES)
    except (OSError, AttributeError):
        pass
