"""Compiled (numba) difference-of-Gaussians blob search: the scale space behind ``fingerprint.blob_windows``.

``blob_pyramid`` runs one search in one compiled call: the image halved to the first octave,
each octave's blurs (``copyhunt.kernels.blurs``) and halvings, its DoG peaks, and the strongest
blobs refined to sub-pixel position and scale. The blob parameters below are compiled into these
kernels as constants, which is why they are defined here; ``fingerprint`` imports them.
"""

from __future__ import annotations

import math
from typing import Iterable

import cv2
import numpy as np
from numba import njit

from copyhunt.kernels.blurs import symmetric_blur
from copyhunt.kernels.pixels import half_size_u8

MIN_WINDOW_PX = 24  # below this a pHash describes blur, not content
BLOB_SIDE = 2.0
BLOB_FIRST_OCTAVE = 1
BLOB_OCTAVES = 4  # blob scales 4.5..57 px on the working image (windows 18..228 px, under 24 dropped)
BLOB_PER_OCTAVE = 3
BLOB_BALANCED = True
BLOB_MIN_RESPONSE = 1.5  # |DoG| in grey levels; weaker blobs are texture noise
_OCTAVE_SIGMAS = tuple(2.0 * 2 ** (i / BLOB_PER_OCTAVE) for i in range(-1, BLOB_PER_OCTAVE + 2))
# _OCTAVE_STEPS[i]: the blur that takes an octave's level i - 1 to level i (entry 0: the image to
# level 0). A search blurs its first level straight from the image (blob_windows).
_OCTAVE_STEPS = [_OCTAVE_SIGMAS[0]] + [float(np.sqrt(b * b - a * a)) for a, b in zip(_OCTAVE_SIGMAS, _OCTAVE_SIGMAS[1:])]


def _kernel_size(sigma: float) -> tuple[int, int]:
    """A Gaussian blur's kernel, reaching 3 sigma (OpenCV's default for float images is 4: a fifth
    more taps for the last 0.3% of the weight; the blurs are most of a blob search's time)."""
    return (2 * math.ceil(3 * sigma) + 1,) * 2


def _half_kernels(sigmas: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """(n, r + 1) and (n,): row i is the right half (centre first) of OpenCV's float32 Gaussian
    kernel of ``sigmas[i]``, sized by ``_kernel_size``, zeros past its radius; and the radii
    (``symmetric_blur`` takes a row cut to its radius)."""
    halves = []
    for sigma in sigmas:
        size = _kernel_size(sigma)[0]
        halves.append(cv2.getGaussianKernel(size, sigma, cv2.CV_32F)[size // 2:, 0])
    out = np.zeros((len(halves), max(len(k) for k in halves)), np.float32)
    for i, k in enumerate(halves):
        out[i, :len(k)] = k
    return out, np.array([len(k) - 1 for k in halves], np.int64)


# Row i: the kernel of _OCTAVE_STEPS[i] (level i - 1 to i), and of _OCTAVE_SIGMAS[i] (the image
# to level i), with their radii.
_STEP_KERNELS, _STEP_RADII = _half_kernels(_OCTAVE_STEPS)
_LEVEL_KERNELS, _LEVEL_RADII = _half_kernels(_OCTAVE_SIGMAS)
# (level, y, x) steps to a DoG peak, then to its neighbours left, right, above, below, one scale
# finer and one coarser: the samples its sub-pixel position and scale are fitted on.
_NEIGHBOUR_STEPS = ((0, 0, 0), (0, 0, -1), (0, 0, 1), (0, -1, 0), (0, 1, 0), (-1, 0, 0), (1, 0, 0))


@njit(cache=True, nogil=True)
def blob_pyramid(gray: np.ndarray, start: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``blob_windows``' scale space of ``gray`` (uint8), in one compiled call: its first octave's
    image (``gray`` halved BLOB_FIRST_OCTAVE times; its first blur is level ``start``), the blurs,
    halvings and DoG peaks of every octave, then the chosen blobs' centres (x, y) and half sides
    on ``gray``.

    One call, because past the first octave the images are thumbnails, on which a search's
    thirty-odd OpenCV calls would cost more in call overhead than in arithmetic."""
    h, w = gray.shape
    small = gray
    for _ in range(BLOB_FIRST_OCTAVE):
        small = half_size_u8(small)
    levels = len(_OCTAVE_SIGMAS)
    keep = count + 8  # only the strongest windows that fit can be chosen: refine no more (and a margin)
    all_samples = np.empty((len(_NEIGHBOUR_STEPS), BLOB_OCTAVES * keep), np.float32)
    all_at = np.empty((BLOB_OCTAVES * keep, 5), np.int64)
    found = 0
    radius = max(_STEP_KERNELS.shape[1], _LEVEL_KERNELS.shape[1])
    blurred = np.empty((levels, small.shape[0], small.shape[1]), np.float32)
    rows, line = np.empty(small.shape, np.float32), np.empty(small.shape[1] + 2 * radius, np.float32)  # scratch for every octave
    symmetric_blur(small.astype(np.float32), blurred[start], _LEVEL_KERNELS[start, :_LEVEL_RADII[start] + 1], rows, line)
    for octave in range(BLOB_OCTAVES):
        if octave:
            if min(blurred.shape[1], blurred.shape[2]) < 10:  # the half would be under 5 px on a side
                break
            coarse = blurred
            blurred = np.empty((levels, coarse.shape[1] // 2, coarse.shape[2] // 2), np.float32)
            for i in range(levels - BLOB_PER_OCTAVE):
                _halve(coarse[i + BLOB_PER_OCTAVE], blurred[i])
            start = levels - BLOB_PER_OCTAVE - 1
        for i in range(start + 1, levels):  # each blur from the previous one: small kernels
            symmetric_blur(blurred[i - 1], blurred[i], _STEP_KERNELS[i, :_STEP_RADII[i] + 1], rows, line)
        samples, at = _dog_peaks(blurred, octave, 2 ** (octave + BLOB_FIRST_OCTAVE), w, h, keep)
        all_samples[:, found:found + len(at)] = samples
        all_at[found:found + len(at)] = at
        found += len(at)
    return _strongest_blobs(all_samples[:, :found], all_at[:found], w, h, count)


@njit(cache=True, nogil=True)
def _halve(src: np.ndarray, dst: np.ndarray) -> None:
    """``dst``: ``src`` (float32) at half size, each pixel the mean of a 2x2 block, as
    ``imaging.half_size`` (an odd last row or column is dropped)."""
    for y in range(dst.shape[0]):
        top, bottom, out = src[2 * y], src[2 * y + 1], dst[y]
        for x in range(dst.shape[1]):
            out[x] = ((top[2 * x] + top[2 * x + 1]) + (bottom[2 * x] + bottom[2 * x + 1])) * np.float32(0.25)


@njit(cache=True, nogil=True)
def _strongest_blobs(samples: np.ndarray, at: np.ndarray, w: int, h: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (x, y) and half sides of the ``count`` blob windows chosen among the DoG peaks
    (``_dog_peaks``' samples and (octave, factor, level, y, x) of every octave): each peak refined
    to sub-pixel position and scale by fitting parabolas, those whose window fits in the image
    taken strongest first (ties broken by position and scale), and with BLOB_BALANCED in a
    round robin over octaves. Float32 and float64 steps as in the numpy code this replaced."""
    n = len(at)
    x, y, r = np.empty(n), np.empty(n), np.empty(n)
    strength, octave = np.empty(n), np.empty(n, np.int64)
    m = 0
    for i in range(n):
        centre = samples[0, i]
        dx = _parabola_peak(samples[1, i], centre, samples[2, i])
        dy = _parabola_peak(samples[3, i], centre, samples[4, i])
        ds = _parabola_peak(samples[5, i], centre, samples[6, i])
        factor, level = at[i, 1], at[i, 2]
        # DoG level i lies between blurs i and i+1: its scale is their geometric mean.
        sigma = _OCTAVE_SIGMAS[0] * 2.0 ** ((level + 0.5 + ds) / BLOB_PER_OCTAVE) * factor
        bx, by, br = (at[i, 4] + 0.5 + dx) * factor, (at[i, 3] + 0.5 + dy) * factor, BLOB_SIDE * sigma
        if 2 * br >= MIN_WINDOW_PX and bx - br >= 0 and by - br >= 0 and bx + br <= w and by + br <= h:
            x[m], y[m], r[m], strength[m], octave[m] = bx, by, br, np.float64(centre), at[i, 0]
            m += 1
    # Strongest first, then by position and scale, on rounded values (numpy's rounding: scale,
    # rint, unscale).
    keys = np.empty((m, 4))
    for i in range(m):
        keys[i, 0] = -(np.rint(strength[i] * 1e4) / 1e4)
        keys[i, 1], keys[i, 2], keys[i, 3] = np.rint(y[i] * 100.0) / 100.0, np.rint(x[i] * 100.0) / 100.0, np.rint(r[i] * 100.0) / 100.0
    order = _stable_order(keys)
    if BLOB_BALANCED:
        # Round robin over octaves, strongest first within each: small and large windows alike.
        # A picture pasted small into another keeps only the large windows of its original.
        seen = np.zeros(BLOB_OCTAVES, np.int64)
        turns = np.empty((m, 2))  # (rank within its octave, octave)
        for j in order:
            turns[j, 0], turns[j, 1] = seen[octave[j]], octave[j]
            seen[octave[j]] += 1
        order = _stable_order(turns)
    order = order[:count]
    return x[order], y[order], r[order]


@njit(cache=True, nogil=True)
def _stable_order(keys: np.ndarray) -> np.ndarray:
    """The rows of ``keys`` in ascending lexicographic order, equal rows in their order: an
    insertion sort, for the few dozen rows the blob code sorts."""
    order = np.arange(len(keys))
    for i in range(1, len(keys)):
        j = i
        while j > 0 and _key_before(keys, order[j], order[j - 1]):
            order[j], order[j - 1] = order[j - 1], order[j]
            j -= 1
    return order


@njit(cache=True, nogil=True)
def _key_before(keys: np.ndarray, a: int, b: int) -> bool:
    for k in range(keys.shape[1]):
        if keys[a, k] != keys[b, k]:
            return keys[a, k] < keys[b, k]
    return False


@njit(cache=True, nogil=True)
def _dog_peaks(blurred: np.ndarray, octave: int, factor: int, w: int, h: int, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of one octave's difference-of-Gaussians scale space (``blurred``: its blurs,
    stacked): ``samples``, (7, n) the peak and its six neighbours (_NEIGHBOUR_STEPS), which its
    sub-pixel fit uses; and ``at``, (n, 5) its octave, factor, DoG level, y and x.

    A peak is a DoG level's pixel, not on a border, at least BLOB_MIN_RESPONSE and at least its 26
    neighbours in space and scale. Only peaks whose window may fit in the w x h image are kept,
    judged leniently (before refinement moves centres and scales a little), and of those the
    ``keep`` strongest.
    """
    levels, sh, sw = blurred.shape
    if sh < 3 or sw < 3:  # no pixel off the border
        return np.empty((len(_NEIGHBOUR_STEPS), 0), np.float32), np.empty((0, 5), np.int64)
    # Peaks are sought on DoG levels 1..levels-3 whose windows can reach MIN_WINDOW_PX (on the
    # first octave only the coarsest); a level below the finest of those is never looked at.
    finest = _finest_dog_level(factor)
    # Only the levels that a peak test reads are filled. Every pass is a flat loop over a whole
    # level, indexed from 0, so that LLVM vectorises it (an index from a run-time offset, which
    # numba checks for wrap-around, keeps it from doing so; so do short loops of a row at a
    # time). A level's first and last columns, where a flat pass mixes two rows, are never read.
    n = sh * sw
    dog = np.empty((levels - 1, sh, sw), np.float32)
    spatial = np.empty((levels - 1, sh, sw), np.float32)  # each level's 3x3 maximum, inside the border
    across = np.empty(n, np.float32)  # along the rows first
    for level in range(finest - 1, levels - 1):
        finer, coarser, out = blurred[level].reshape(-1), blurred[level + 1].reshape(-1), dog[level].reshape(-1)
        for i in range(n):
            out[i] = abs(coarser[i] - finer[i])
        _three_maxima(out, across, 1)
        _three_maxima(across, spatial[level].reshape(-1), sw)
    found_level, found_y, found_x = [], [], []
    inner = n - 2 * sw  # rows 1..sh-2, from the first pixel of row 1
    words = (inner + 7) // 8
    peak = np.zeros(8 * words, np.uint8)
    packed = peak.view(np.uint64)
    for level in range(finest, levels - 2):
        radius = _peak_radius(level, factor)
        centre, here = dog[level].reshape(-1)[sw:n - sw], spatial[level].reshape(-1)[sw:n - sw]
        finer, coarser = spatial[level - 1].reshape(-1)[sw:n - sw], spatial[level + 1].reshape(-1)[sw:n - sw]
        for i in range(inner):  # without branches, so that it vectorises
            value = centre[i]
            peak[i] = (value > BLOB_MIN_RESPONSE) & (value >= here[i]) & (value >= finer[i]) & (value >= coarser[i])
        for word in range(words):
            if packed[word] == 0:  # eight pixels at a time: peaks are few
                continue
            for i in range(8 * word, min(8 * word + 8, inner)):
                y, x = i // sw + 1, i % sw
                if not peak[i] or x == 0 or x == sw - 1:
                    continue
                cy, cx = (y + 0.5) * factor, (x + 0.5) * factor
                if cy >= radius and cy + radius <= h and cx >= radius and cx + radius <= w:
                    found_level.append(level)
                    found_y.append(y)
                    found_x.append(x)
    # The strongest ``keep`` (ties broken by position: higher up, further left, then finer), or
    # all in (level, y, x) order.
    n = len(found_level)
    order = np.arange(n)
    if n > keep:
        keys = np.empty((n, 4))
        for i in range(n):
            level, y, x = found_level[i], found_y[i], found_x[i]
            keys[i, 0], keys[i, 1], keys[i, 2], keys[i, 3] = -np.float64(dog[level, y, x]), y, x, level
        order = _stable_order(keys)[:keep]
    samples = np.empty((len(_NEIGHBOUR_STEPS), len(order)), np.float32)
    at = np.empty((len(order), 5), np.int64)
    for i in range(len(order)):
        level, y, x = found_level[order[i]], found_y[order[i]], found_x[order[i]]
        at[i, 0], at[i, 1], at[i, 2], at[i, 3], at[i, 4] = octave, factor, level, y, x
        for j in range(len(_NEIGHBOUR_STEPS)):
            dl, dy, dx = _NEIGHBOUR_STEPS[j]
            samples[j, i] = dog[level + dl, y + dy, x + dx]
    return samples, at


@njit(cache=True, nogil=True)
def _three_maxima(values: np.ndarray, out: np.ndarray, step: int) -> None:
    """``out[i]``: the maximum of ``values[i - step]``, ``values[i]`` and ``values[i + step]``,
    wherever all three exist (left alone elsewhere)."""
    n = len(values) - 2 * step
    if n <= 0:
        return
    before, centre, after, middle = values[:n], values[step:step + n], values[2 * step:], out[step:step + n]
    for i in range(n):
        a, b, c = before[i], centre[i], after[i]
        ab = a if a > b else b
        middle[i] = ab if ab > c else c


@njit(cache=True, nogil=True)
def _finest_dog_level(factor: int) -> int:
    """The finest DoG level whose peaks can give a window of MIN_WINDOW_PX at ``factor``, of the
    levels searched (1..L-3, for L blurs an octave); L - 2, past them, if none can."""
    levels = len(_OCTAVE_SIGMAS)
    finest = levels - 2
    for level in range(levels - 3, 0, -1):
        if 2 * _peak_radius(level, factor) >= MIN_WINDOW_PX:
            finest = level
    return finest


@njit(cache=True, nogil=True)
def _peak_radius(level: int, factor: int) -> float:
    """A lenient (15% small) half side of the window of a peak on DoG ``level``, before refinement."""
    return BLOB_SIDE * _OCTAVE_SIGMAS[0] * 2.0 ** ((level + 0.5) / BLOB_PER_OCTAVE) * factor * 0.85


@njit(cache=True, nogil=True)
def _parabola_peak(left: np.float32, centre: np.float32, right: np.float32) -> np.float32:
    """Offset (-0.5..0.5) of the vertex of the parabola through three samples at -1, 0, 1 (float32)."""
    curvature = left - np.float32(2.0) * centre + right
    if curvature == 0:
        return np.float32(0.0)
    return min(max(np.float32(0.5) * (left - right) / curvature, np.float32(-0.5)), np.float32(0.5))


# The blur level ``blob_windows``' first octave starts at.
FIRST_BLUR_LEVEL = _finest_dog_level(2 ** BLOB_FIRST_OCTAVE) - 1
