"""Compiled (numba) pixel kernels that more than one module's kernels call (blobs, proposals).

``imaging`` keeps OpenCV and Pillow for code called from Python; these are for numba code, where a
call back into Python or OpenCV would cost more than the work.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def half_size_u8(gray: np.ndarray) -> np.ndarray:
    """``imaging.half_size`` in numba, to the bit: each pixel the mean of a 2x2 block of the uint8
    image rounded half up (OpenCV's area resize at exactly half), an odd last row or column
    dropped."""
    h, w = gray.shape
    out = np.empty((h // 2, w // 2), np.uint8)
    for y in range(h // 2):
        top, bottom, row = gray[2 * y], gray[2 * y + 1], out[y]
        for x in range(w // 2):
            total = np.int32(top[2 * x]) + np.int32(top[2 * x + 1]) + np.int32(bottom[2 * x]) + np.int32(bottom[2 * x + 1])
            row[x] = (total + 2) >> 2
    return out
