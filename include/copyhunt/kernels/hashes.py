"""Compiled (numba) kernels of the window hash: cell means from an integral image, bits above the
median, and the seam strengths ``fingerprint.collage_grids`` reads.

``HASH_INPUT`` lives here because the kernels compile it in as a constant; ``fingerprint``
imports it from here.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

HASH_INPUT = 32  # windows are resized to 32x32 before the DCT, as imagehash's pHash does


@njit(cache=True, nogil=True)
def cell_means(integral: np.ndarray, boxes: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32) mean of each of the HASH_INPUT x HASH_INPUT cells of each box: the integral
    image bilinearly interpolated at the cells' corners, 0..1 across a box at ``edges`` (float64,
    in the order of the numpy expression this replaced, so the hashes are the same bits); and
    the standard deviation of each box's cell means (float64 sums, as float32: it is only held
    against MIN_WINDOW_STD)."""
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    n, cells = len(boxes), HASH_INPUT
    out = np.empty((n, cells, cells), np.float32)
    std = np.empty(n, np.float32)
    corner = np.empty((cells + 1, cells + 1))
    x0s, fxs = np.empty(cells + 1, np.int64), np.empty(cells + 1)
    for i in range(n):
        bx0, by0, bx1, by1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        for c in range(cells + 1):
            x = bx0 + (bx1 - bx0) * edges[c]
            x0s[c] = min(np.int64(x), w - 1)
            fxs[c] = x - x0s[c]
        for r in range(cells + 1):
            y = by0 + (by1 - by0) * edges[r]
            y0 = min(np.int64(y), h - 1)
            fy = y - y0
            for c in range(cells + 1):
                x0, fx = x0s[c], fxs[c]
                top_left, top_right = integral[y0, x0], integral[y0, x0 + 1]
                bottom_left, bottom_right = integral[y0 + 1, x0], integral[y0 + 1, x0 + 1]
                top = top_left + (top_right - top_left) * fx
                bottom = bottom_left + (bottom_right - bottom_left) * fx
                corner[r, c] = top + (bottom - top) * fy
        cell_area = (bx1 - bx0) * (by1 - by0) / (cells * cells)
        sum_, sum_squares = 0.0, 0.0
        for r in range(cells):
            for c in range(cells):
                total = corner[r + 1, c + 1] - corner[r, c + 1] - corner[r + 1, c] + corner[r, c]
                mean = np.float32(total / cell_area)
                out[i, r, c] = mean
                sum_ += mean
                sum_squares += np.float64(mean) * mean
        average = sum_ / (cells * cells)
        std[i] = np.float32(math.sqrt(max(sum_squares / (cells * cells) - average * average, 0.0)))
    return out, std


@njit(cache=True, nogil=True)
def bits_above_median(flat: np.ndarray) -> np.ndarray:
    n, bits = flat.shape
    out = np.empty(n, np.uint64)
    scratch = np.empty(bits, np.float32)
    for i in range(n):
        median = median_by_selection(flat[i], scratch)
        value = np.uint64(0)
        for j in range(bits):
            value = (value << np.uint64(1)) | np.uint64(flat[i, j] > median)
        out[i] = value
    return out


@njit(cache=True, nogil=True)
def median_by_selection(values: np.ndarray, scratch: np.ndarray) -> np.float32:
    """``np.median`` of float32 ``values`` to the bit (the middle value, or the two middle
    values' float32 sum halved), without sorting them all (a selection does less work than a
    sort, for a hash's 64 values and for a collage search's seam medians): the lower middle value
    selected in place in ``scratch`` (Hoare's partitioning), the upper one the least of those
    above it. NaN for no values."""
    n = len(values)
    if n == 0:
        return np.float32(np.nan)
    scratch[:n] = values
    k = (n - 1) // 2
    lo, hi = 0, n - 1
    while lo < hi:
        pivot = scratch[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while scratch[i] < pivot:
                i += 1
            while scratch[j] > pivot:
                j -= 1
            if i <= j:
                scratch[i], scratch[j] = scratch[j], scratch[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    if n % 2:
        return scratch[k]
    upper = scratch[k + 1]
    for i in range(k + 2, n):
        upper = min(upper, scratch[i])
    return (scratch[k] + upper) / np.float32(2.0)


@njit(cache=True, nogil=True)
def seam_profile(gray: np.ndarray, axis: int, step_over_median: float, min_step: int) -> tuple[np.ndarray, np.ndarray]:
    """Along ``axis`` (1: columns, 0: rows) of a grey image: for each pair of neighbouring lines,
    the share of their pixel pairs that differ by more than a clear step (``step_over_median``
    times the image's median step between neighbours along the axis, and at least ``min_step``
    grey levels); and the standard deviation of each line's pixels (a gutter's line is flat).

    Two photos side by side differ across their whole seam; a photo's own edges run along part
    of a line at most."""
    h, w = gray.shape
    length, across = (w, h) if axis == 1 else (h, w)
    counts = np.zeros(256, np.int64)
    steps = np.empty((max(length - 1, 0), across), np.uint8)
    sums = np.zeros(length, np.int64)
    squares = np.zeros(length, np.int64)
    for y in range(h):
        for x in range(w):
            v = np.int64(gray[y, x])
            line, at = (x, y) if axis == 1 else (y, x)
            sums[line] += v
            squares[line] += v * v
            if line + 1 < length:
                step = abs(np.int64(gray[y + (axis == 0), x + (axis == 1)]) - v)
                steps[line, at] = step
                counts[step] += 1
    total, seen, median = len(steps) * across, 0, 0
    for value in range(256):  # the lower middle step
        seen += counts[value]
        if 2 * seen >= total:
            median = value
            break
    clear = max(float(min_step), step_over_median * median)
    share = np.empty(len(steps), np.float32)
    for line in range(len(steps)):
        above = 0
        for at in range(across):
            above += steps[line, at] > clear
        share[line] = np.float32(above / across)
    spread = np.empty(length, np.float32)
    for i in range(length):
        mean = sums[i] / across
        spread[i] = np.float32(math.sqrt(max(squares[i] / across - mean * mean, 0.0)))
    return share, spread
