"""Compiled (numba) kernels of the pasted-picture proposals (``copyhunt.proposals``).

``find_paste_boxes`` runs the whole search in one compiled call: the capped steps and their
prefix sums (``_step_sums``), corners on the half-size image (``_corners``), rectangles from them
(``_rectangles``), their scores (``_score``) and the choice among them (``_chosen``). The
parameters below are compiled into these kernels as constants, which is why they are defined
here; the two that ``paste_boxes`` passes at call time stay in ``copyhunt.proposals``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from copyhunt.kernels.pixels import half_size_u8

STEP_CAP = 24.0  # grey levels: a step of at least this counts fully; smaller ones in proportion
CORNER_ARM = 16  # px along each side a corner is judged on (and twice that)
LONGEST_ARM_WEIGHT = 1.0  # corner response: and over 4x the arm (pasted pictures have long sides; window frames do not)
CORNERS_PER_KIND = 16  # corners of each of the four kinds kept as rectangle vertices
MIN_SIDE = 0.35  # mean capped step along a side, 0..1, below which the side is faint
MAX_FAINT_SIDES = 1
SIDE_BASELINE = 0.3  # what a side of no boundary scores on textured backgrounds
OUTSIDE_WEIGHT = 0.25  # corner: weight of the sides' continuation past it
EXTENSION_WEIGHT = 0.5  # rectangle: weight of the steps along its sides' continuations
RIDGE_WEIGHT = 0.5  # side evidence less this times the stronger parallel line RIDGE_PX away
RIDGE_PX = 3  # px: past a boundary blurred over two pixels by resampling
ALTERNATIVE_MIN_MOVE = 3  # px: a side's other position is another line, not the same one
# Scores are in pixels of side evidence; as fractions of the image's width + height:
MIN_SCORE = 0.05  # below this a rectangle is not worth a window hash, unless dense (copyhunt.proposals)
MIN_SCORE_FOR_ALTERNATIVES = 0.1  # 9 pasted pictures in 10 score over 0.14 (suite, calibration seed); photos mostly under 0.03
MAX_AREA = 0.8  # of the image: larger boxes are the whole image's business
TRIES_PER_PROPOSAL = 8  # best rectangles placed per proposal wanted (many are near-duplicates)
DUPLICATE_IOU = 0.7  # a proposal overlapping a better one more than this is the same rectangle


@njit(cache=True, nogil=True)
def find_paste_boxes(gray: np.ndarray, count: int, min_side: int, least: float, dense_evidence: float) -> np.ndarray:
    """``paste_boxes`` of ``gray`` (uint8) as (k, 4) boxes, in one compiled call (calling its nine
    kernels from Python would add their wrappers' overhead to each); no rectangle scoring under
    ``least``."""
    vsum, hsum = _step_sums(gray, int(STEP_CAP))
    xs, ys, counts = _corners(half_size_u8(gray), vsum, hsum)
    boxes = _rectangles(vsum, hsum, xs, ys, counts, min_side)
    if boxes.shape[1] == 0:
        return np.empty((0, 4), np.int64)
    x0, y0, x1, y1 = np.ascontiguousarray(boxes[0]), np.ascontiguousarray(boxes[1]), np.ascontiguousarray(boxes[2]), np.ascontiguousarray(boxes[3])
    score = _score(vsum, hsum, x0, y0, x1, y1, least)
    return _chosen(vsum, hsum, x0, y0, x1, y1, score, least, count, min_side, dense_evidence)


@njit(cache=True, nogil=True)
def _chosen(vsum: np.ndarray, hsum: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray, score: np.ndarray,
            least: float, count: int, min_side: int, dense_evidence: float) -> np.ndarray:
    """(k, 4) boxes proposed of the scored rectangles (none scoring under ``least``): up to
    ``count`` best, refined, without near-duplicates; then, when the best is confident, its
    ``_alternative`` placements not already chosen. Compiled, like the rest: as numpy calls and
    Python loops over a handful of rectangles it would cost more in overhead than in arithmetic."""
    h, w = vsum.shape[0] - 1, vsum.shape[1] - 1
    # Under MIN_SCORE only rectangles whose sides are clear along most of their length (a wide
    # picture has short sides for its width).
    worth = np.empty(len(score), np.int64)
    n = 0
    for i in range(len(score)):
        dense = score[i] >= dense_evidence * ((x1[i] - x0[i]) + (y1[i] - y0[i]))
        if (dense or score[i] >= MIN_SCORE * (w + h)) and score[i] >= least:
            worth[n] = i
            n += 1
    # Best first, ties by x0, y0, x1, y1 (stable sorts from the last key; usually a handful of
    # some 1,700 rectangles can be chosen at all).
    order = worth[:n]
    for key in (y1, x1, y0, x0):
        order = order[np.argsort(key[order], kind="mergesort")]
    order = order[np.argsort(-score[order], kind="mergesort")][:count * TRIES_PER_PROPOSAL]
    chosen = np.empty((count + 4, 4), np.int64)
    k = 0
    for i in order:
        if k == count:
            break
        box = _refine(vsum, hsum, x0[i], y0[i], x1[i], y1[i])
        unique = True
        for j in range(k):
            unique = unique and _iou(box, chosen[j]) < DUPLICATE_IOU
        if unique:
            chosen[k] = box
            k += 1
    if k and score[order[0]] >= MIN_SCORE_FOR_ALTERNATIVES * (w + h):
        first = chosen[0].copy()
        for side in range(4):
            other = _alternative(vsum, hsum, first, side, min_side)
            if other[0] < 0:
                continue
            new = True
            for j in range(k):
                new = new and not (chosen[j] == other).all()
            if new:
                chosen[k] = other
                k += 1
    return chosen[:k]


@njit(cache=True, nogil=True)
def _alternative(vsum: np.ndarray, hsum: np.ndarray, box: np.ndarray, side: int, min_side: int) -> np.ndarray:
    """The box with ``side`` moved to its best other position (judged by the side and the two
    corners it makes), refined; all -1 when no position is at least ALTERNATIVE_MIN_MOVE px away
    and leaves the box ``min_side`` on a side, or none scores over 0."""
    h, w = vsum.shape[0] - 1, vsum.shape[1] - 1
    limit = w if side in (0, 2) else h
    boxes = np.empty((limit + 1, 4), np.int64)
    n = 0
    for position in range(limit + 1):
        boxes[n] = box
        boxes[n, side] = position
        if (boxes[n, 2] - boxes[n, 0] >= min_side and boxes[n, 3] - boxes[n, 1] >= min_side
                and abs(position - box[side]) > ALTERNATIVE_MIN_MOVE):
            n += 1
    none = np.full(4, -1, np.int64)
    if n == 0:
        return none
    score = _side_with_corners(vsum, hsum, boxes[:n], side)
    best = np.argmax(score)
    if not score[best] > 0:
        return none
    return _refine(vsum, hsum, boxes[best, 0], boxes[best, 1], boxes[best, 2], boxes[best, 3])


@njit(cache=True, nogil=True)
def _side_with_corners(vsum: np.ndarray, hsum: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
    """How much one side of each box looks like a pasted picture's edge: its mean step above the
    baseline, plus half the quality of the two corners at its ends."""
    out = np.empty(len(boxes))
    for i in range(len(boxes)):
        x0, y0, x1, y1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        if side == 0 or side == 2:
            x, across = (x0, 1) if side == 0 else (x1, -1)
            mean = np.float64(vsum[y1, x] - vsum[y0, x]) / (y1 - y0)
            ends = _corner_quality(vsum, hsum, x, y0, 1, across) + _corner_quality(vsum, hsum, x, y1, -1, across)
        else:
            y, down = (y0, 1) if side == 1 else (y1, -1)
            mean = np.float64(hsum[y, x1] - hsum[y, x0]) / (x1 - x0)
            ends = _corner_quality(vsum, hsum, x0, y, down, 1) + _corner_quality(vsum, hsum, x1, y, down, -1)
        out[i] = mean - SIDE_BASELINE + np.float32(0.5) * ends
    return out


@njit(cache=True, nogil=True)
def _step_sums(gray: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Prefix sums of the steps across vertical and horizontal pixel boundaries of ``gray``
    (uint8), capped at ``cap`` and scaled to 0..1 (STEP_CAP: any clear step counts fully).

    ``vsum[y, x]``: steps across the boundary left of column x (0 < x < w), rows 0..y-1;
    ``hsum[y, x]``: steps across the boundary above row y (0 < y < h), columns 0..x-1.
    """
    h, w = gray.shape
    scale = np.float32(1.0 / cap)
    # Only the borders that no step sum is written to are zeroed: the rest is written anyway, and
    # clearing both arrays whole is a noticeable share of this kernel's memory traffic.
    vsum = np.empty((h + 1, w + 1), np.float32)
    hsum = np.empty((h + 1, w + 1), np.float32)
    vsum[0, :], hsum[0, :], hsum[h, :] = 0, 0, 0
    for y in range(1, h + 1):
        vsum[y, 0], vsum[y, w], hsum[y, 0] = 0, 0, 0
    column = np.zeros(w + 1, np.int32)  # integer running sums: exact, then scaled as float32
    for y in range(h):
        left, right, running, out = gray[y, :w - 1], gray[y, 1:], column[1:w], vsum[y + 1, 1:w]
        for x in range(w - 1):
            running[x] += min(abs(np.int32(right[x]) - np.int32(left[x])), cap)
            out[x] = np.float32(running[x]) * scale
    # Each row's steps across the boundary above it in a loop of their own, then their running sum
    # along the row, which is serial.
    steps = np.empty(w, np.int32)
    for y in range(1, h):
        above, below, out = gray[y - 1], gray[y], hsum[y, 1:]
        for x in range(w):
            steps[x] = min(abs(np.int32(below[x]) - np.int32(above[x])), cap)
        row = np.int32(0)
        for x in range(w):
            row += steps[x]
            out[x] = np.float32(row) * scale
    return vsum, hsum


@njit(cache=True, nogil=True)
def _horizontal_arms(row: np.ndarray, k: int, inverse: np.float32, right: np.ndarray, left: np.ndarray) -> None:
    """``right`` and ``left``: the mean step along the k px right and left of every lattice point
    of a row of ``hsum``, 0 where the arm would leave the image."""
    w = len(row) - 1
    right[:] = 0
    left[:] = 0
    if k <= w:
        # Slices: an index at a run-time offset (x + k), which numba checks for wrap-around,
        # keeps LLVM from vectorising the loop.
        ahead, here, r, l = row[k:], row[:w + 1 - k], right[:w + 1 - k], left[k:]
        for x in range(w + 1 - k):
            mean = (ahead[x] - here[x]) * inverse
            r[x] = mean
            l[x] = mean


@njit(cache=True, nogil=True)
def _corner_responses(vsum: np.ndarray, hsum: np.ndarray, arm: int, longest_weight: float, outside_weight: float) -> np.ndarray:
    """(4, h + 1, w + 1) corner response of each kind (top-left, top-right, bottom-left,
    bottom-right) at every lattice point, 0 on the border: both sides leave the corner, over the
    arm and longer ones, and neither goes on past it.

    An arm is the mean step over its k px (0 where it would leave the image). A row at a time:
    its vertical arms are read straight from the rows of ``vsum`` k px away, its horizontal arms
    are made into a few lines that stay in cache, and all four kinds are written in one pass
    (stacks of every arm over the whole image cost more in memory traffic than in arithmetic),
    over whole rows from index 0, so that LLVM vectorises the loops."""
    h, w = vsum.shape[0] - 1, vsum.shape[1] - 1
    longest_weight32, outside_weight32 = np.float32(longest_weight), np.float32(outside_weight)
    out = np.empty((4, h + 1, w + 1), np.float32)
    out[:, 0, :], out[:, h, :] = 0, 0
    k1, k2, k4 = arm, 2 * arm, 4 * arm
    i1, i2, i4 = np.float32(1.0 / k1), np.float32(1.0 / k2), np.float32(1.0 / k4)
    horizontal = np.empty((6, w + 1), np.float32)
    for y in range(1, h):
        here = vsum[y]
        # A vertical arm leaving the image reads its own row: a mean of 0.
        down1 = vsum[y + k1] if y + k1 <= h else here
        down2 = vsum[y + k2] if y + k2 <= h else here
        down4 = vsum[y + k4] if y + k4 <= h else here
        up1 = vsum[y - k1] if y >= k1 else here
        up2 = vsum[y - k2] if y >= k2 else here
        up4 = vsum[y - k4] if y >= k4 else here
        row = hsum[y]
        _horizontal_arms(row, k1, i1, horizontal[0], horizontal[1])
        _horizontal_arms(row, k2, i2, horizontal[2], horizontal[3])
        _horizontal_arms(row, k4, i4, horizontal[4], horizontal[5])
        right1, left1, right2, left2, right4, left4 = horizontal[0], horizontal[1], horizontal[2], horizontal[3], horizontal[4], horizontal[5]
        top_left, top_right, bottom_left, bottom_right = out[0, y], out[1, y], out[2, y], out[3, y]
        for x in range(w + 1):  # from 0: an index from a run-time offset does not vectorise
            centre = here[x]
            d1, d2, d4 = (down1[x] - centre) * i1, (down2[x] - centre) * i2, (down4[x] - centre) * i4
            u1, u2, u4 = (centre - up1[x]) * i1, (centre - up2[x]) * i2, (centre - up4[x]) * i4
            r1, r2, r4, l1, l2, l4 = right1[x], right2[x], right4[x], left1[x], left2[x], left4[x]
            top_left[x] = _corner_response(d1, r1, d2, r2, d4, r4, u1, l1, longest_weight32, outside_weight32)
            top_right[x] = _corner_response(d1, l1, d2, l2, d4, l4, u1, r1, longest_weight32, outside_weight32)
            bottom_left[x] = _corner_response(u1, r1, u2, r2, u4, r4, d1, l1, longest_weight32, outside_weight32)
            bottom_right[x] = _corner_response(u1, l1, u2, l2, u4, l4, d1, r1, longest_weight32, outside_weight32)
    out[:, :, 0], out[:, :, w] = 0, 0
    return out


@njit(cache=True, nogil=True, inline="always")
def _corner_response(vertical, horizontal, vertical2, horizontal2, vertical4, horizontal4, past_vertical, past_horizontal,
                     longest_weight, outside_weight):
    """Both sides over the arm, twice it and four times it (weighted), less the stronger of their
    continuations past the corner (float32 throughout)."""
    response = min(vertical, horizontal)
    response += min(vertical2, horizontal2)
    response += longest_weight * min(vertical4, horizontal4)
    response -= outside_weight * max(past_vertical, past_horizontal)
    return response


@njit(cache=True, nogil=True)
def _corners(thumb: np.ndarray, vsum: np.ndarray, hsum: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Corners found on the half-size image ``thumb`` (a quarter of the work), then placed on the
    working image whose step sums are ``vsum`` and ``hsum``: (x, y, count), x and y
    (4, CORNERS_PER_KIND) by kind (top-left, top-right, bottom-left, bottom-right), strongest
    first; ``count`` of each kind are set."""
    thumb_vsum, thumb_hsum = _step_sums(thumb, int(STEP_CAP))
    responses = _corner_responses(thumb_vsum, thumb_hsum, CORNER_ARM // 2, LONGEST_ARM_WEIGHT, OUTSIDE_WEIGHT)
    xs, ys, counts = _strongest_corners(responses)
    return _placed_corners(vsum, hsum, 2 * xs, 2 * ys, counts)


@njit(cache=True, nogil=True)
def _strongest_corners(responses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of each kind, up to CORNERS_PER_KIND points over MIN_SIDE and at least every response in
    their 5x5 neighbourhood (inside the image): strongest first, ties in (y, x) order.

    The neighbourhoods' maxima first, in flat loops over the whole thumbnail, then the points
    that pass, eight at a time (few do): short loops per row, and testing each point against its
    neighbours, cost more in overhead than the arithmetic."""
    kinds, h, w = responses.shape
    keep = CORNERS_PER_KIND
    xs, ys = np.zeros((kinds, keep), np.int64), np.zeros((kinds, keep), np.int64)
    values = np.zeros(keep, np.float32)
    counts = np.zeros(kinds, np.int64)
    across, around = np.empty((h, w), np.float32), np.empty((h, w), np.float32)
    n = h * w
    words = (n + 7) // 8
    passes = np.zeros(8 * words, np.uint8)
    packed = passes.view(np.uint64)
    for kind in range(kinds):
        response = responses[kind]
        _neighbourhood_maxima(response, across, around)
        flat, most = response.reshape(-1), around.reshape(-1)
        for i in range(n):
            passes[i] = (flat[i] > MIN_SIDE) & (flat[i] >= most[i])
        found = 0  # the strongest so far, in order, taken in (y, x) order: a tie stays behind
        for word in range(words):
            if packed[word] == 0:
                continue
            for i in range(8 * word, min(8 * word + 8, n)):
                if not passes[i]:
                    continue
                value = flat[i]
                if found == keep and not value > values[keep - 1]:
                    continue
                at = min(found, keep - 1)
                while at > 0 and value > values[at - 1]:
                    values[at], xs[kind, at], ys[kind, at] = values[at - 1], xs[kind, at - 1], ys[kind, at - 1]
                    at -= 1
                values[at], xs[kind, at], ys[kind, at] = value, i % w, i // w
                found = min(found + 1, keep)
        counts[kind] = found
    return xs, ys, counts


@njit(cache=True, nogil=True)
def _neighbourhood_maxima(response: np.ndarray, across: np.ndarray, around: np.ndarray) -> None:
    """``around[y, x]``: the maximum of ``response`` over the 5x5 points around (y, x) inside
    the image, by way of ``across`` (the maximum along the row, x - 2..x + 2). Each pass is one
    flat loop over the whole image, as if rows ran on into the next; the points whose window
    crosses a row's end, or the image's top or bottom, are then done again by row."""
    h, w = response.shape
    _five_maxima(response.reshape(-1), across.reshape(-1), 1)
    for y in range(h):
        row, out = response[y], across[y]
        for end in range(4):
            x = end if end < 2 else w - 4 + end
            if 0 <= x < w:
                most = row[x]
                for j in range(max(x - 2, 0), min(x + 3, w)):
                    most = max(most, row[j])
                out[x] = most
    _five_maxima(across.reshape(-1), around.reshape(-1), w)
    for end in range(4):
        y = end if end < 2 else h - 4 + end
        if 0 <= y < h:
            out = around[y]
            out[:] = across[max(y - 2, 0)]
            for other in range(max(y - 2, 0) + 1, min(y + 3, h)):
                row = across[other]
                for x in range(w):
                    out[x] = max(out[x], row[x])


@njit(cache=True, nogil=True)
def _five_maxima(values: np.ndarray, out: np.ndarray, step: int) -> None:
    """``out[i]``: the maximum of ``values[i + j x step]``, j = -2..2, wherever all five exist."""
    n = len(values) - 4 * step
    if n <= 0:
        return
    a, b, c, d, e = values[:n], values[step:step + n], values[2 * step:2 * step + n], values[3 * step:3 * step + n], values[4 * step:]
    centre = out[2 * step:2 * step + n]
    for i in range(n):
        centre[i] = max(max(a[i], b[i]), max(max(c[i], d[i]), e[i]))


@njit(cache=True, nogil=True)
def _placed_corners(vsum: np.ndarray, hsum: np.ndarray, xs: np.ndarray, ys: np.ndarray, counts: np.ndarray):
    """Each corner moved, within two pixels, to the column where its vertical side (over the
    CORNER_ARM px it runs from the corner) steps most and the row where its horizontal side does."""
    h, w = vsum.shape[0] - 1, vsum.shape[1] - 1
    k = CORNER_ARM
    out_x, out_y = np.zeros_like(xs), np.zeros_like(ys)
    for kind in range(4):
        down, right = kind < 2, kind % 2 == 0
        for i in range(counts[kind]):
            x, y = xs[kind, i], ys[kind, i]
            a, b = (y, min(y + k, h)) if down else (max(y - k, 0), y)
            out_x[kind, i] = _strongest_line_near(vsum, x, a, b, w)
            a, b = (x, min(x + k, w)) if right else (max(x - k, 0), x)
            out_y[kind, i] = _strongest_line_near(hsum.T, y, a, b, h)  # rows of hsum are columns of its transpose
    return out_x, out_y, counts


@njit(cache=True, nogil=True)
def _strongest_line_near(prefix: np.ndarray, at: int, a: int, b: int, limit: int) -> int:
    """Of the lines within two of ``at`` (kept inside 1..limit-1), the one whose steps from ``a``
    to ``b`` sum highest (the first of equals); ``prefix[i, line]``: the line's steps before i."""
    best, best_line = np.float32(-np.inf), 0
    for offset in range(-2, 3):
        line = min(max(at + offset, 1), limit - 1)
        value = prefix[b, line] - prefix[a, line]
        if value > best:
            best, best_line = value, line
    return best_line


@njit(cache=True, nogil=True)
def _rectangles(vsum: np.ndarray, hsum: np.ndarray, xs: np.ndarray, ys: np.ndarray, counts: np.ndarray, min_side: int):
    """Candidate boxes (x0, y0, x1, y1) from the corners (``_corners``): opposite
    corners; one corner and the image's edges (a picture in a corner of the page); two corners
    on one side (same row or column, within a pixel) and the opposite side wherever the step
    along it peaks (it may be too faint to make corners: sky pasted on a pale wall), or lies on
    the image's edge. Only boxes at least ``min_side`` on a side and under MAX_AREA of the image."""
    h, w = vsum.shape[0] - 1, vsum.shape[1] - 1
    TL, TR, BL, BR = 0, 1, 2, 3
    # Written into an array sized for every box the corners can make (a list of tuples costs
    # more than the rest together), in the order they are made.
    capacity = counts[TL] * counts[BR] + counts[BL] * counts[TR] + counts.sum()
    for a_kind, b_kind, side in _SIDE_PAIRS:
        for i in range(counts[a_kind]):
            for j in range(counts[b_kind]):
                if _pair_on_side(xs, ys, a_kind, i, b_kind, j, side, min_side):
                    capacity += h + 1 if side < 2 else w + 1
    out = np.empty((4, capacity), np.int64)
    largest = MAX_AREA * w * h
    n = 0
    for i in range(counts[TL]):
        for j in range(counts[BR]):
            n = _add_box(out, n, xs[TL, i], ys[TL, i], xs[BR, j], ys[BR, j], min_side, largest)
    for i in range(counts[BL]):
        for j in range(counts[TR]):
            n = _add_box(out, n, xs[BL, i], ys[TR, j], xs[TR, j], ys[BL, i], min_side, largest)
    for i in range(counts[TL]):
        n = _add_box(out, n, xs[TL, i], ys[TL, i], w, h, min_side, largest)
    for i in range(counts[TR]):
        n = _add_box(out, n, 0, ys[TR, i], xs[TR, i], h, min_side, largest)
    for i in range(counts[BL]):
        n = _add_box(out, n, xs[BL, i], 0, w, ys[BL, i], min_side, largest)
    for i in range(counts[BR]):
        n = _add_box(out, n, 0, 0, xs[BR, i], ys[BR, i], min_side, largest)
    # Two corners on one side.
    line = np.empty(max(h, w) + 1, np.float32)  # the steps along each parallel line, between the corners
    for a_kind, b_kind, side in _SIDE_PAIRS:
        for i in range(counts[a_kind]):
            ax, ay = xs[a_kind, i], ys[a_kind, i]
            for j in range(counts[b_kind]):
                if not _pair_on_side(xs, ys, a_kind, i, b_kind, j, side, min_side):
                    continue
                bx, by = xs[b_kind, j], ys[b_kind, j]
                if side < 2:  # top or bottom: the other side is a row
                    limit = h
                    for other in range(h + 1):
                        line[other] = hsum[other, bx] - hsum[other, ax]
                else:  # left or right: the other side is a column
                    limit = w
                    for other in range(w + 1):
                        line[other] = vsum[by, other] - vsum[ay, other]
                for other in range(limit + 1):
                    # Where the step along the line peaks; the image's edges always count.
                    if 0 < other < limit and (line[other] < line[other - 1] or line[other] < line[other + 1]):
                        continue
                    if side == 0:
                        n = _add_box(out, n, ax, ay, bx, other, min_side, largest)
                    elif side == 1:
                        n = _add_box(out, n, ax, other, bx, ay, min_side, largest)
                    elif side == 2:
                        n = _add_box(out, n, ax, ay, other, by, min_side, largest)
                    else:
                        n = _add_box(out, n, other, ay, ax, by, min_side, largest)
    return out[:, :n]


# (first corner kind, second corner kind, side) of the corner pairs _rectangles completes with a
# fourth side: top (TL, TR), bottom (BL, BR), left (TL, BL), right (TR, BR).
_SIDE_PAIRS = ((0, 1, 0), (2, 3, 1), (0, 2, 2), (1, 3, 3))


@njit(cache=True, nogil=True)
def _pair_on_side(xs: np.ndarray, ys: np.ndarray, a_kind: int, i: int, b_kind: int, j: int, side: int, min_side: int) -> bool:
    """Whether corner i of a_kind and corner j of b_kind make one side (top or bottom: in the same
    row within a pixel; left or right: the same column) at least ``min_side`` long."""
    ax, ay, bx, by = xs[a_kind, i], ys[a_kind, i], xs[b_kind, j], ys[b_kind, j]
    if side < 2:
        return abs(ay - by) <= 1 and bx - ax >= min_side
    return abs(ax - bx) <= 1 and by - ay >= min_side


@njit(cache=True, nogil=True)
def _add_box(out: np.ndarray, n: int, x0: int, y0: int, x1: int, y1: int, min_side: int, largest: float) -> int:
    """Box n of ``out`` set, if at least ``min_side`` on a side and no larger than ``largest``
    px; the number of boxes after it."""
    if x1 - x0 >= min_side and y1 - y0 >= min_side and (x1 - x0) * (y1 - y0) <= largest:
        out[0, n], out[1, n], out[2, n], out[3, n] = x0, y0, x1, y1
        return n + 1
    return n


@njit(cache=True, nogil=True)
def _score(vsum: np.ndarray, hsum: np.ndarray, x0s: np.ndarray, y0s: np.ndarray, x1s: np.ndarray, y1s: np.ndarray, floor: float) -> np.ndarray:
    """Evidence that each box (int64 corners) is a pasted picture's outline; negative: not a
    proposal (nor is a box that cannot reach ``floor``, which is not scored in full).

    Per box: the mean step along each side inside the image less RIDGE_WEIGHT times the
    stronger parallel line RIDGE_PX away (a boundary is a ridge; in a striped or diagonal texture
    every line steps alike), above SIDE_BASELINE, times the side's length; less EXTENSION_WEIGHT
    times the steps along the sides' continuations past the corners; all times the square root of
    the mean quality of its inner corners (both their sides inside the image). Possible only
    with three sides inside the image, one of them maybe faint, or two clear ones meeting at a
    corner.
    """
    # Mirrors the vectorised numpy arithmetic this replaced, dtype for dtype (steps and corner
    # qualities in float32, the rest in float64), so the same boxes win.
    h, w = vsum.shape[0] - 1, vsum.shape[1] - 1
    k, d = CORNER_ARM, RIDGE_PX
    out = np.full(len(x0s), -1.0)
    sides = np.empty(4)
    inside = np.empty(4, np.bool_)
    lengths = np.empty(4)
    for i in range(len(x0s)):
        x0, y0, x1, y1 = x0s[i], y0s[i], x1s[i], y1s[i]
        height, width = y1 - y0, x1 - x0
        sides[0] = np.float64(vsum[y1, x0] - vsum[y0, x0]) / height
        sides[1] = np.float64(vsum[y1, x1] - vsum[y0, x1]) / height
        sides[2] = np.float64(hsum[y0, x1] - hsum[y0, x0]) / width
        sides[3] = np.float64(hsum[y1, x1] - hsum[y1, x0]) / width
        inside[0], inside[1], inside[2], inside[3] = x0 > 0, x1 < w, y0 > 0, y1 < h
        lengths[0], lengths[1], lengths[2], lengths[3] = height, height, width, width
        faint, inner_sides = 0, 0
        for j in range(4):
            if inside[j]:
                inner_sides += 1
                if sides[j] < MIN_SIDE:
                    faint += 1
        corner_case = inner_sides == 2 and (inside[0] or inside[1]) and (inside[2] or inside[3]) and faint == 0
        if not ((inner_sides >= 3 and faint <= MAX_FAINT_SIDES) or corner_case):
            continue
        # Everything below only lowers a positive score: the sides' raw steps bound it, and most
        # boxes cannot reach ``floor`` even so.
        bound = 0.0
        for j in range(4):
            bound += (sides[j] - SIDE_BASELINE) * lengths[j] if inside[j] else 0.0
        if not bound >= floor:
            continue
        xl0, xr0, xl1, xr1 = max(x0 - d, 0), min(x0 + d, w), max(x1 - d, 0), min(x1 + d, w)
        yl0, yr0, yl1, yr1 = max(y0 - d, 0), min(y0 + d, h), max(y1 - d, 0), min(y1 + d, h)
        sides[0] -= RIDGE_WEIGHT * (np.float64(max(vsum[y1, xl0] - vsum[y0, xl0], vsum[y1, xr0] - vsum[y0, xr0])) / height)
        sides[1] -= RIDGE_WEIGHT * (np.float64(max(vsum[y1, xl1] - vsum[y0, xl1], vsum[y1, xr1] - vsum[y0, xr1])) / height)
        sides[2] -= RIDGE_WEIGHT * (np.float64(max(hsum[yl0, x1] - hsum[yl0, x0], hsum[yr0, x1] - hsum[yr0, x0])) / width)
        sides[3] -= RIDGE_WEIGHT * (np.float64(max(hsum[yl1, x1] - hsum[yl1, x0], hsum[yr1, x1] - hsum[yr1, x0])) / width)
        reach = 0.0
        for j in range(4):
            reach += (sides[j] - SIDE_BASELINE) * lengths[j] if inside[j] else 0.0
        if not reach >= floor:
            continue
        beyond0 = _along_column(vsum, x0, y0 - k, y0) + _along_column(vsum, x0, y1, y1 + k)
        beyond1 = _along_column(vsum, x1, y0 - k, y0) + _along_column(vsum, x1, y1, y1 + k)
        beyond2 = _along_row(hsum, y0, x0 - k, x0) + _along_row(hsum, y0, x1, x1 + k)
        beyond3 = _along_row(hsum, y1, x0 - k, x0) + _along_row(hsum, y1, x1, x1 + k)
        total = 0.0
        total += (sides[0] - SIDE_BASELINE) * lengths[0] - np.float32(EXTENSION_WEIGHT) * beyond0 if inside[0] else 0.0
        total += (sides[1] - SIDE_BASELINE) * lengths[1] - np.float32(EXTENSION_WEIGHT) * beyond1 if inside[1] else 0.0
        total += (sides[2] - SIDE_BASELINE) * lengths[2] - np.float32(EXTENSION_WEIGHT) * beyond2 if inside[2] else 0.0
        total += (sides[3] - SIDE_BASELINE) * lengths[3] - np.float32(EXTENSION_WEIGHT) * beyond3 if inside[3] else 0.0
        quality, corners = np.float32(0.0), 0
        if inside[0] and inside[2]:
            quality += _corner_quality(vsum, hsum, x0, y0, 1, 1)
            corners += 1
        if inside[1] and inside[2]:
            quality += _corner_quality(vsum, hsum, x1, y0, 1, -1)
            corners += 1
        if inside[0] and inside[3]:
            quality += _corner_quality(vsum, hsum, x0, y1, -1, 1)
            corners += 1
        if inside[1] and inside[3]:
            quality += _corner_quality(vsum, hsum, x1, y1, -1, -1)
            corners += 1
        mean_quality = np.float64(quality) / max(corners, 1)
        out[i] = total * math.sqrt(min(max(mean_quality, 0.0), 1.0))
    return out


@njit(cache=True, nogil=True)
def _along_column(vsum: np.ndarray, x: int, a: int, b: int) -> np.float32:
    """Summed steps across column boundary ``x`` over rows ``a``..``b``, clipped to the image."""
    h = vsum.shape[0] - 1
    return vsum[min(max(b, 0), h), x] - vsum[min(max(a, 0), h), x]


@njit(cache=True, nogil=True)
def _along_row(hsum: np.ndarray, y: int, a: int, b: int) -> np.float32:
    """Summed steps across row boundary ``y`` over columns ``a``..``b``, clipped to the image."""
    w = hsum.shape[1] - 1
    return hsum[y, min(max(b, 0), w)] - hsum[y, min(max(a, 0), w)]


@njit(cache=True, nogil=True)
def _corner_quality(vsum: np.ndarray, hsum: np.ndarray, x: int, y: int, down: int, right: int) -> np.float32:
    """-1..1 at lattice point (x, y): the weaker of the two sides leaving the point (downwards
    if ``down`` > 0, else upwards; rightwards if ``right`` > 0) less the stronger of their
    continuations past it, each the mean step over CORNER_ARM px (clipped at the image edge)."""
    k = CORNER_ARM
    scale = np.float32(k)
    below, above = _along_column(vsum, x, y, y + k) / scale, _along_column(vsum, x, y - k, y) / scale
    after, before = _along_row(hsum, y, x, x + k) / scale, _along_row(hsum, y, x - k, x) / scale
    vertical, past_v = (below, above) if down > 0 else (above, below)
    horizontal, past_h = (after, before) if right > 0 else (before, after)
    return min(vertical, horizontal) - max(past_v, past_h)


@njit(cache=True, nogil=True)
def _refine(vsum: np.ndarray, hsum: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Each inner side moved by up to a pixel to where its step is strongest (corners found on a
    5x5 grid of maxima, and a boundary resampled between two pixels, can be a pixel off). Means
    in float32, as the numpy scalars this replaced computed them."""
    h, w = vsum.shape[0] - 1, vsum.shape[1] - 1
    b = np.array([x0, y0, x1, y1], np.int64)
    for side in range(4):
        limit = w if side in (0, 2) else h
        if not 0 < b[side] < limit:
            continue
        best_value, best_at = np.float32(-1.0), b[side]
        for at in (b[side] - 1, b[side], b[side] + 1):
            if not 0 < at < limit:
                continue
            if side in (0, 2):
                value = np.float32(vsum[b[3], at] - vsum[b[1], at]) / np.float32(b[3] - b[1])
            else:
                value = np.float32(hsum[at, b[2]] - hsum[at, b[0]]) / np.float32(b[2] - b[0])
            if value > best_value + np.float32(1e-6):
                best_value, best_at = value, at
        b[side] = best_at
    return b


@njit(cache=True, nogil=True)
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
