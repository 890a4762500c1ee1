"""Compiled (numba) Gaussian blur for the blob search: any symmetric kernel, OpenCV's borders.

``symmetric_blur`` is the one blur the blob search (``copyhunt.kernels.blobs``) makes, rows then
columns. A plain loop for every radius: versions with each radius' taps written out (source
generated and ``exec``-ed) gave the same bits but not the 10% of the fingerprint rate that
generated code must buy (docs/performance.md). tests/test_fingerprint_index.py holds it to
``cv2.GaussianBlur``.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _reflect101(i: int, n: int) -> int:
    """Where index ``i`` of a line of ``n`` reads, reflected at the ends without repeating them
    (OpenCV's default border: ...2 1 | 0 1 2 ... n-1 | n-2...), however far outside."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i %= period
    return period - i if i >= n else i


@njit(cache=True, nogil=True)
def _border_tables(h: int, w: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    """A blur's reflected borders (``_reflect101``) for radius ``r`` on an h x w image:
    ``reflected[y + r]``, the row that row y (-r..h + r - 1) reads; and ``ends``, the columns
    a padded row's r reflected cells on the left, then the r on the right, copy (the same for
    every row)."""
    reflected = np.empty(h + 2 * r, np.int64)
    for y in range(-r, h + r):
        reflected[y + r] = _reflect101(y, h)
    ends = np.empty(2 * r, np.int64)
    for i in range(r):
        ends[i], ends[r + i] = _reflect101(-r + i, w), _reflect101(w + i, w)
    return reflected, ends


@njit(cache=True, nogil=True)
def symmetric_blur(src: np.ndarray, dst: np.ndarray, half_kernel: np.ndarray, rows: np.ndarray, line: np.ndarray) -> None:
    """``dst``: ``src`` (float32, h x w) blurred by the symmetric kernel whose right half (centre
    first) is ``half_kernel``, rows then columns, borders as OpenCV's default (``_reflect101``):
    within float rounding (1e-4) of ``cv2.GaussianBlur`` with the same kernel. ``rows`` (h x w)
    and ``line`` (w + 2 x radius or more) are scratch space.

    Each output line adds up mirrored pairs of taps, two pairs at a time, as whole-line slices
    (loops LLVM vectorises). Not fastmath: fused multiply-adds would round differently with the
    CPU and with numba's bounds checking, and fingerprints must not depend on either. The two
    passes are written out alike, though they differ only in where a tap's line comes from: a
    shared helper over a strided view of the padded line (numba's any-layout arrays) does not
    vectorise, and helpers for the inner loops, even inlined, keep the sum from staying in
    registers; both are slower than the loops written out here, for the same bits."""
    h, w = src.shape
    r = len(half_kernel) - 1
    k = half_kernel
    reflected, ends = _border_tables(h, w, r)
    for y in range(h):  # along rows, from a copy of the row with its reflected ends
        row = src[y]
        centre = line[r:r + w]
        for x in range(w):
            centre[x] = row[x]
        for i in range(r):
            line[i], line[r + w + i] = row[ends[i]], row[ends[r + i]]
        out = rows[y]
        j = 1
        if r % 2:
            a, b = line[r - 1:r - 1 + w], line[r + 1:r + 1 + w]
            for x in range(w):
                out[x] = k[0] * centre[x] + k[1] * (a[x] + b[x])
            j = 2
        else:
            for x in range(w):
                out[x] = k[0] * centre[x]
        while j < r:
            a, b, c, d = line[r - j:r - j + w], line[r + j:r + j + w], line[r - j - 1:r - j - 1 + w], line[r + j + 1:r + j + 1 + w]
            for x in range(w):
                out[x] += k[j] * (a[x] + b[x]) + k[j + 1] * (c[x] + d[x])
            j += 2
    for y in range(h):  # along columns: whole rows of the first pass
        centre, out = rows[y], dst[y]
        j = 1
        if r % 2:
            a, b = rows[reflected[y + r - 1]], rows[reflected[y + r + 1]]
            for x in range(w):
                out[x] = k[0] * centre[x] + k[1] * (a[x] + b[x])
            j = 2
        else:
            for x in range(w):
                out[x] = k[0] * centre[x]
        while j < r:
            a, b = rows[reflected[y + r - j]], rows[reflected[y + r + j]]
            c, d = rows[reflected[y + r - j - 1]], rows[reflected[y + r + j + 1]]
            for x in range(w):
                out[x] += k[j] * (a[x] + b[x]) + k[j + 1] * (c[x] + d[x])
            j += 2
