"""Fingerprints: 64-bit perceptual hashes of windows of an image.

A copy on the web is rarely the whole registered picture, untouched. So both sides are hashed over
windows, and a match is a pair of windows whose hashes are close (then confirmed by ``verify``):

* references: the whole image in all eight orientations (so a mirrored, rotated or flipped copy
  hashes like its original), and *blob windows* with their mirror images;
* found images: the whole image, collage grid cells (2x1, 1x2, 2x2, 3x3, trimmed of gutters; only
  the grids whose inner lines lie on seams of the image),
  rectangles that look like a picture pasted into the image (``copyhunt.proposals``), the same
  blob windows, and blob windows found inside the best of those rectangles alone (at the found
  image's size, and enlarged to the working size like a reference).

Blob windows make crops work. They are squares centred on the strongest blobs of a
difference-of-Gaussians scale space, sized by the blob's scale. They depend only on the pixels
around the blob, so a crop, a scaled copy or a picture pasted into another keeps the windows whose
blobs it keeps, at the same place in the picture, and they hash alike. Grid windows of the
reference instead would have to line up with wherever the crop happened to cut.

The hash is pHash: the 8x8 lowest frequencies of the DCT of the window resized to 32x32, one bit
per coefficient (above the median or not). It is computed for all windows at once with two matrix
products, which is far cheaper than hashing window by window. Mirroring and quarter turns of a
window only flip signs of, or transpose, the DCT coefficients, so the eight orientations of the
whole image come from one DCT. A hash is stored as a signed int64 (Spark and Parquet have no
unsigned 64-bit integers).
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple, Protocol, Sequence

import cv2
import numpy as np
from numba import njit
from PIL import Image

from copyhunt.allocator import tune_allocator
from copyhunt.imaging import PAD_DARK, PAD_LIGHT, BadImage, content_box, load_gray
from copyhunt.kernels import half_size_u8
from copyhunt.proposals import paste_boxes


# Changes whenever the hashes of the same pixels change: index shards are keyed by it, so an old
# index is rebuilt rather than searched with hashes made another way.
FINGERPRINT_VERSION = 5  # 2: windows shrunk by exact area averaging from an integral image; 3: blob octaves halved exactly, blurs to 3 sigma; 4: an octave's first blurs are the previous octave's halved; 5: blob blurs compiled (float rounding differs from OpenCV's)
HASH_BITS = 64
HASH_INPUT = 32  # windows are resized to 32x32 before the DCT, as imagehash's pHash does
DCT_KEEP = 8  # the 8x8 lowest frequencies give the 64 bits
# Long side of the grey image windows are cut from. Crop windows need a few dozen pixels; the
# 3x3 collage cells get ~100 px. Larger costs decode and blob-detection time for nothing.
HASH_WORKING_SIZE = 320
MIN_WINDOW_PX = 24  # below this a pHash describes blur, not content
# A window this flat (std of its 32x32 grey pixels, 0-255) hashes noise: a clear sky, a white
# page. Its bits would match any other flat window, so it is not hashed.
MIN_WINDOW_STD = 6.0
# Blob windows: the strongest blobs of a difference-of-Gaussians scale space, side = 2 * BLOB_SIDE * sigma.
REFERENCE_BLOBS = 16
QUERY_BLOBS = 16
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
    (``_blur`` takes a row cut to its radius)."""
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
MAX_DEROTATION_DEGREES = 20  # tilted copies beyond this are rare; blob windows still see them
# Collage proposals in found images: (rows, columns) grids; cells are trimmed of gutters.
QUERY_GRIDS = ((1, 2), (2, 1), (2, 2), (3, 3))
# A grid is hashed only where the image has seams on its inner lines at least this many times its
# median step between neighbouring rows/columns. Robustness suite (seed 20261122): every 2x2 and
# 3x3 collage scores 3.1 or more on its own grid; 83-89% of unrelated 1-MP photos score under 2.5.
MIN_SEAM = 2.5
# Pasted-picture rectangles hashed per found image (see copyhunt.proposals), plus up to four
# placements of the best one with a side moved: the first is right for most insets, the others
# when a natural rectangle (window, screen) or a line through the picture ranked above it. Most
# photos have none: 0.5 windows per 1-MP photo on average.
PASTE_PROPOSALS = 3
# Blob windows found inside the best pasted-picture rectangles alone, each grown by a margin:
# the picture's own blobs, which the found image's strongest blobs (mostly the background's)
# leave out, and which match the reference's blob windows even when the rectangle is a few
# pixels off (a whole-picture hash then is not). Each rectangle is searched twice: at the found
# image's size, and cut out and enlarged to the working size (the reference's blobs were found at
# that size). Paste recall on suite seeds 5, 7, 11: 0.939 -> 0.970; held out 3, 13, 17: 0.919 ->
# 0.949; about 25 more windows on a found image with proposals.
PASTE_BLOB_PROPOSALS = 2
PASTE_BLOBS = 8  # per rectangle and size
PASTE_BLOB_MARGIN = 0.05  # of the rectangle's side, on each side
# A rectangle whose enlargement to the working size would be under this factor (it spans most of
# the found image) is not searched enlarged: at nearly the same size the search finds the same
# blobs. A quarter of the searches on 1-MP photos with proposals were at 1.11x.
PASTE_BLOB_MIN_UPSAMPLE = 1.25

_DCT = np.array([[np.cos(np.pi * (2 * n + 1) * k / (2 * HASH_INPUT)) for n in range(HASH_INPUT)] for k in range(DCT_KEEP)], dtype=np.float32)
_ALTERNATING = np.array([(-1.0) ** k for k in range(DCT_KEEP)], dtype=np.float32)
_CELL_EDGES = np.linspace(0.0, 1.0, HASH_INPUT + 1)  # edges of the 32x32 cells across a window, 0..1


class Hasher(Protocol):
    name: str
    bits: int

    def hash_windows(self, gray: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hashes as int64, usable mask) for pixel boxes (x0, y0, x1, y1) of a grey image."""


# ---- the hash ------------------------------------------------------------------------------------
def dct_blocks(gray: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 8, 8) low-frequency DCT blocks of the pixel boxes, and the std of each resized window.

    Every window is shrunk to 32x32 by area averaging (what cv2's INTER_AREA does), all at once,
    from one integral image: the sum over any rectangle, fractional edges included, is a
    bilinear interpolation of the integral image at its corners. One compiled pass over all the
    windows instead of a resize call per window.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros((0, DCT_KEEP, DCT_KEEP), np.float32), np.zeros(0, np.float32)
    small, std = _cell_means(cv2.integral(gray, sdepth=cv2.CV_64F), np.ascontiguousarray(boxes, np.float64), _CELL_EDGES)
    return _DCT @ small @ _DCT.T, std


@njit(cache=True, nogil=True)
def _cell_means(integral: np.ndarray, boxes: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def hashes_from_blocks(blocks: np.ndarray) -> np.ndarray:
    """pHash bits (coefficient above the block's median), packed most significant bit first."""
    return _bits_above_median(np.ascontiguousarray(blocks.reshape(len(blocks), HASH_BITS), np.float32)).view(np.int64)


@njit(cache=True, nogil=True)
def _bits_above_median(flat: np.ndarray) -> np.ndarray:
    n, bits = flat.shape
    out = np.empty(n, np.uint64)
    scratch = np.empty(bits, np.float32)
    for i in range(n):
        median = _median_by_selection(flat[i], scratch)
        value = np.uint64(0)
        for j in range(bits):
            value = (value << np.uint64(1)) | np.uint64(flat[i, j] > median)
        out[i] = value
    return out


@njit(cache=True, nogil=True)
def _median_by_selection(values: np.ndarray, scratch: np.ndarray) -> np.float32:
    """``np.median`` of float32 ``values`` to the bit (the middle value, or the two middle
    values' float32 sum halved), without sorting them all (a third of the time for a hash's 64;
    3-5 us less for each of a collage search's two seam medians): the lower middle value
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


def mirror_blocks(blocks: np.ndarray) -> np.ndarray:
    """DCT blocks of the horizontally mirrored windows: odd horizontal frequencies change sign."""
    return blocks * _ALTERNATING[None, None, :]


def flip_blocks(blocks: np.ndarray) -> np.ndarray:
    """DCT blocks of the vertically flipped windows."""
    return blocks * _ALTERNATING[None, :, None]


def transpose_blocks(blocks: np.ndarray) -> np.ndarray:
    return np.transpose(blocks, (0, 2, 1))


# The eight orientations of a square's symmetry group, as (name, mirrored, DCT-domain transform).
# A copy rotated clockwise by 90 degrees is matched by the reference window rotated the same way.
ORIENTATIONS = (
    ("", False, lambda b: b),
    ("", True, mirror_blocks),
    ("-rot180", False, lambda b: flip_blocks(mirror_blocks(b))),
    ("-rot180", True, flip_blocks),
    ("-rot90", False, lambda b: mirror_blocks(transpose_blocks(b))),
    ("-rot90", True, transpose_blocks),
    ("-rot270", False, lambda b: flip_blocks(transpose_blocks(b))),
    ("-rot270", True, lambda b: flip_blocks(mirror_blocks(transpose_blocks(b)))),
)


class PHasher:
    """64-bit DCT pHash, bit-compatible with ``imagehash.phash`` on the same 32x32 pixels."""

    name = "phash64"
    bits = HASH_BITS

    def hash_windows(self, gray: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        blocks, std = dct_blocks(gray, boxes)
        return hashes_from_blocks(blocks), std >= MIN_WINDOW_STD

    def hash(self, image: Image.Image) -> int:
        gray = np.asarray(image.convert("L"))
        h, w = gray.shape
        hashes, _ = self.hash_windows(gray, np.array([[0, 0, w, h]]))
        return int(hashes[0])


def bits_to_int64(bits: np.ndarray) -> int:
    value = 0
    for b in bits:
        value = (value << 1) | int(bool(b))
    return value - (1 << 64) if value >= (1 << 63) else value


def int64_to_bits(value: int, nbits: int = HASH_BITS) -> np.ndarray:
    u = value & ((1 << nbits) - 1)
    return np.array([(u >> (nbits - 1 - i)) & 1 for i in range(nbits)], dtype=np.uint8)


def hamming(a: int, b: int) -> int:
    return bin((int(a) ^ int(b)) & 0xFFFFFFFFFFFFFFFF).count("1")


def hamming_many(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise (broadcast) Hamming distances of int64 hashes."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.int64), np.asarray(b, np.int64)).view(np.uint64)).astype(np.int64)


# ---- windows -------------------------------------------------------------------------------------
class Window(NamedTuple):
    """A window in relative coordinates (0..1) of the normalised image. (A named tuple, not a
    frozen dataclass: a fingerprint makes some eighty windows and hashes, and a frozen
    dataclass takes three times as long to make.)"""

    name: str
    x0: float
    y0: float
    x1: float
    y1: float

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        return (round(self.x0 * width), round(self.y0 * height), round(self.x1 * width), round(self.y1 * height))


FULL = Window("full", 0.0, 0.0, 1.0, 1.0)


def grid_windows(grids: Iterable[tuple[int, int]] = QUERY_GRIDS) -> list[Window]:
    windows = []
    for rows, cols in grids:
        for r in range(rows):
            for c in range(cols):
                windows.append(Window(f"grid{rows}x{cols}-{r}{c}", c / cols, r / rows, (c + 1) / cols, (r + 1) / rows))
    return windows


def query_windows(gray: np.ndarray) -> list[Window]:
    """The whole found image, and the cells of the collage grids it shows seams for (blob windows
    and paste proposals are found elsewhere)."""
    return [FULL, *grid_windows(collage_grids(gray))]


def collage_grids(gray: np.ndarray) -> list[tuple[int, int]]:
    """The QUERY_GRIDS whose inner lines all lie on seams of the image.

    Grid cells are searched for collages only, and each costs an index lookup and, now and then,
    a chance candidate to verify; a photo that is no collage has no reason to pay for 14 of them.
    """
    cols = _seam_strengths(gray, axis=1)
    rows = _seam_strengths(gray, axis=0)
    return [(r, c) for r, c in QUERY_GRIDS if (c == 1 or cols[c] >= MIN_SEAM) and (r == 1 or rows[r] >= MIN_SEAM)]


def _seam_strengths(gray: np.ndarray, axis: int) -> dict[int, float]:
    """For 2 and 3 parts along ``axis``: the weakest inner line's seam strength, i.e. the largest
    mean step between neighbouring lines within 3% of where the line should be, over the median
    step of the whole image. Tiles put side by side meet in a step; a photo changes smoothly."""
    length = gray.shape[axis]
    if length < 2 * MIN_WINDOW_PX:
        return {2: 0.0, 3: 0.0}
    two, three = _seam_strengths_kernel(gray, axis, max(2, round(0.03 * length)))
    return {2: two, 3: three}


@njit(cache=True, nogil=True)
def _seam_strengths_kernel(gray: np.ndarray, axis: int, reach: int) -> tuple[float, float]:
    # Mean |step| between neighbouring lines: integer sums (exact), divided in float32 as a
    # float32 mean would be.
    h, w = gray.shape
    length, across = (w, h) if axis == 1 else (h, w)
    steps = np.zeros(length - 1, np.float32)
    totals = np.zeros(length - 1, np.int64)
    for y in range(h - (axis == 0)):
        for x in range(w - (axis == 1)):
            step = abs(np.int32(gray[y + (axis == 0), x + (axis == 1)]) - np.int32(gray[y, x]))
            totals[x if axis == 1 else y] += step
    for i in range(length - 1):
        steps[i] = np.float32(totals[i]) / np.float32(across)
    typical = np.float64(_median_by_selection(steps, np.empty(len(steps), np.float32))) + 1e-3
    out = [np.inf, np.inf]
    for parts in (2, 3):
        for k in range(1, parts):
            at = k * length / parts
            lo, hi = max(0, int(at - reach)), min(len(steps), int(at + reach) + 1)
            out[parts - 2] = min(out[parts - 2], np.float64(steps[lo:hi].max()) / typical)
    return out[0], out[1]


def paste_windows(gray: np.ndarray, count: int | None = None) -> list[Window]:
    """Rectangles that look like a picture pasted into the found image (``copyhunt.proposals``)."""
    h, w = gray.shape
    boxes = paste_boxes(gray, PASTE_PROPOSALS if count is None else count, MIN_WINDOW_PX)
    return [Window(f"paste{i}", x0 / w, y0 / h, x1 / w, y1 / h) for i, (x0, y0, x1, y1) in enumerate(boxes)]


def _paste_blob_area(paste: Window, w: int, h: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = paste.box(w, h)
    mx, my = round(PASTE_BLOB_MARGIN * (x1 - x0)), round(PASTE_BLOB_MARGIN * (y1 - y0))
    return max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)


def _from_area(name: str, win: Window, area: tuple[int, int, int, int], w: int, h: int) -> Window:
    """``win``, relative to the pixel ``area`` of a w x h found image, relative to the whole image."""
    x0, y0, x1, y1 = area
    cw, ch = x1 - x0, y1 - y0
    return Window(name, (x0 + win.x0 * cw) / w, (y0 + win.y0 * ch) / h, (x0 + win.x1 * cw) / w, (y0 + win.y1 * ch) / h)


def paste_blob_windows(gray: np.ndarray, pastes: list[Window], count: int | None = None) -> list[Window]:
    """Blob windows of the first PASTE_BLOB_PROPOSALS pasted-picture rectangles, each searched
    alone (grown by PASTE_BLOB_MARGIN); named ``blob-p<i>-<n>``, so they pair with reference blob
    windows."""
    h, w = gray.shape
    count = PASTE_BLOBS if count is None else count
    out: list[Window] = []
    for i, paste in enumerate(pastes[:PASTE_BLOB_PROPOSALS]):
        area = x0, y0, x1, y1 = _paste_blob_area(paste, w, h)
        for blob in blob_windows(np.ascontiguousarray(gray[y0:y1, x0:x1]), count):
            out.append(_from_area(f"blob-p{i}-{blob.name[4:]}", blob, area, w, h))
    return out


def paste_blob_hashes_upsampled(gray: np.ndarray, pastes: list[Window], hasher: PHasher) -> list[WindowHash]:
    """Blob windows of the first PASTE_BLOB_PROPOSALS pasted-picture rectangles (grown by
    PASTE_BLOB_MARGIN), each cut out and enlarged to the working size first, and hashed there:
    the reference's blobs were found at that size, so the small ones of a picture pasted at 40%
    are found too (at the found image's size their windows are under MIN_WINDOW_PX). Named
    ``blob-u<i>-<n>``; boxes in the found image's coordinates."""
    h, w = gray.shape
    out = []
    for i, paste in enumerate(pastes[:PASTE_BLOB_PROPOSALS]):
        area = x0, y0, x1, y1 = _paste_blob_area(paste, w, h)
        cw, ch = x1 - x0, y1 - y0
        f = HASH_WORKING_SIZE / max(cw, ch)
        if f < PASTE_BLOB_MIN_UPSAMPLE:  # paste_blob_windows searched it at nearly this size
            continue
        up = cv2.resize(gray[y0:y1, x0:x1], (round(cw * f), round(ch * f)), interpolation=cv2.INTER_CUBIC)
        uh, uw = up.shape
        wins = blob_windows(up, PASTE_BLOBS)
        if not wins:
            continue
        boxes = np.array([win.box(uw, uh) for win in wins], np.int64)
        hv, ok = hasher.hash_windows(up, boxes)
        for win, v, good in zip(wins, hv, ok):
            if good:
                placed = _from_area(f"blob-u{i}-{win.name[4:]}", win, area, w, h)
                out.append(WindowHash(placed.name, False, placed.x0, placed.y0, placed.x1, placed.y1, int(v)))
    return out


def blob_windows(gray: np.ndarray, count: int) -> list[Window]:
    """Square windows on the ``count`` strongest difference-of-Gaussians blobs, inside the image.

    The scale space is a pyramid: each octave halves the image and blurs it a little, so the
    cost is that of a few blurs of a thumbnail. Blob centres and scales are refined to sub-pixel
    precision by fitting parabolas, which keeps windows found at coarse octaves well aligned.
    Deterministic: ties in strength are broken by position and scale.
    """
    h, w = gray.shape
    if min(h, w) < MIN_WINDOW_PX:
        return []
    # Octave o works on the image halved o + BLOB_FIRST_OCTAVE times, by f = 2^(o + BLOB_FIRST_OCTAVE);
    # its blurs sigma 2..4 there are sigma 2f..4f here. As in SIFT, an octave's first three blurs
    # are the previous octave's last three halved (their sigmas are twice the first three's), so
    # only three are blurred anew; and the first octave starts at the finest blur its DoG peaks
    # use (only the coarsest level can give a window of MIN_WINDOW_PX there).
    x, y, r = _blob_pyramid(np.ascontiguousarray(gray, np.uint8), _FIRST_BLUR_LEVEL, count)
    # As Python floats: the same values, and arithmetic and round() on numpy scalars cost ten
    # times as much (Window.box is called on every window).
    edges = zip(((x - r) / w).tolist(), ((y - r) / h).tolist(), ((x + r) / w).tolist(), ((y + r) / h).tolist())
    return [Window(f"blob{i:02d}", x0, y0, x1, y1) for i, (x0, y0, x1, y1) in enumerate(edges)]


@njit(cache=True, nogil=True)
def _blob_pyramid(gray: np.ndarray, start: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``blob_windows``' scale space of ``gray`` (uint8), in one compiled call: its first octave's
    image (``gray`` halved BLOB_FIRST_OCTAVE times; its first blur is level ``start``), the blurs,
    halvings and DoG peaks of every octave, then the chosen blobs' centres (x, y) and half sides
    on ``gray``.

    One call, because a search's thirty-odd OpenCV calls on thumbnails (under 80 px past the first
    octave) cost more in call overhead than in arithmetic: 0.34 -> 0.24 ms a search on a 1-MP
    photo."""
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
    _blur(small.astype(np.float32), blurred[start], _LEVEL_KERNELS[start, :_LEVEL_RADII[start] + 1], rows, line)
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
            _blur(blurred[i - 1], blurred[i], _STEP_KERNELS[i, :_STEP_RADII[i] + 1], rows, line)
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
def _blur_any_radius(src: np.ndarray, dst: np.ndarray, half_kernel: np.ndarray, rows: np.ndarray, line: np.ndarray) -> None:
    """``dst``: ``src`` (float32, h x w) blurred by the symmetric kernel whose right half (centre
    first) is ``half_kernel``, rows then columns, borders as OpenCV's default (``_reflect101``):
    within float rounding (1e-4) of ``cv2.GaussianBlur`` with the same kernel. ``rows`` (h x w)
    and ``line`` (w + 2 x radius or more) are scratch space. ``_blur`` runs the radii the blob
    search uses with their taps written out; this is the others', and the reference the written
    out ones are tested against, bit for bit.

    Each output line adds up mirrored pairs of taps, two pairs at a time, as whole-line slices
    (loops LLVM vectorises). Not fastmath: fused multiply-adds would round differently with the
    CPU and with numba's bounds checking, and fingerprints must not depend on either. The two
    passes are written out alike, though they differ only in where a tap's line comes from: one
    helper over a strided view of the padded line (numba's any-layout arrays) does not vectorise
    and made the blur 3x slower, and helpers for the two inner loops, called with each pass's
    lines, gave the same bits but made it 1.6-2.5x slower, or 8-10% inlined (11- to 21-tap
    blurs of 108x144)."""
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


# ``_blur`` for one radius with its taps written out: each output pixel is one expression over
# the lines its taps read, so the sum stays in a register instead of going back to the output
# line after every two pairs of taps (a loop over taps cannot do that: its trip count is not a
# constant, and the sum's order may not change); and the column pass makes two output rows at a
# time, which read all but two of their lines alike, each loaded once. The same additions in the
# same order as ``_blur_any_radius``, so the same bits; a third faster on the blob search's 13- to
# 21-tap blurs of 108x144 (21 -> 13 us, 32 -> 22 us), of which the pairs of rows are a fifth.
# Generated from this template and compiled under this file's name, so that numba caches them.
# The row's copy between its reflected ends is written here as in ``_blur_any_radius``: a helper
# called for each row made the blurs a tenth slower.
_UNROLLED_BLUR = """
def _blur_r{r}(src, dst, half_kernel, rows, line):
    h, w = src.shape
    r = {r}
{taps}
    reflected, ends = _border_tables(h, w, r)
    for y in range(h):
        row = src[y]
        centre = line[r:r + w]
        for x in range(w):
            centre[x] = row[x]
        for i in range(r):
            line[i], line[r + w + i] = row[ends[i]], row[ends[r + i]]
{row_lines}
        out = rows[y]
        for x in range(w):
            out[x] = {total}
    for y in range(0, h - 1, 2):
{pair_lines}
        out, next_out = dst[y], dst[y + 1]
        for x in range(w):
            value, next_value = {total}, {next_total}
            out[x], next_out[x] = value, next_value
    if h % 2:
        y = h - 1
{column_lines}
        out = dst[y]
        for x in range(w):
            out[x] = {total}
"""


def _unrolled_blur_source(radius: int) -> str:
    """``_UNROLLED_BLUR`` for ``radius``: ``at<k>`` is the line k taps ahead of the output's own
    (``at_<k>`` k taps back), ``k<j>`` the kernel's taps, summed as ``_blur_any_radius`` sums
    them; the second row of a pair reads its lines one further on."""
    def line(k: int) -> str:
        return f"at{k}" if k >= 0 else f"at_{-k}"

    def total(shift: int) -> str:
        def pair(j: int) -> str:
            return f"k{j} * ({line(shift - j)}[x] + {line(shift + j)}[x])"

        if radius % 2:
            expr, j = f"k0 * {line(shift)}[x] + {pair(1)}", 2
        else:
            expr, j = f"k0 * {line(shift)}[x]", 1
        while j < radius:
            expr, j = f"({expr}) + ({pair(j)} + {pair(j + 1)})", j + 2
        return expr

    indent = " " * 8
    return _UNROLLED_BLUR.format(
        r=radius,
        taps="\n".join(f"    k{j} = half_kernel[{j}]" for j in range(radius + 1)),
        row_lines="\n".join(f"{indent}{line(k)} = line[{radius + k}:{radius + k} + w]" for k in range(-radius, radius + 1)),
        pair_lines="\n".join(f"{indent}{line(k)} = rows[reflected[y + {radius + k}]]" for k in range(-radius, radius + 2)),
        column_lines="\n".join(f"{indent}{line(k)} = rows[reflected[y + {radius + k}]]" for k in range(-radius, radius + 1)),
        total=total(0), next_total=total(1))


def _compile_blurs(radii: Iterable[int]):
    """``_blur``: a compiled dispatcher to ``_blur_r<radius>`` for each of ``radii``, and to
    ``_blur_any_radius`` for any other. Defined in this module, as if written here (numba caches
    a function by the file it comes from, and loads it back by its module's name; the template is
    in this file, so a change to it is seen)."""
    dispatcher = ["def _blur(src, dst, half_kernel, rows, line):", "    r = len(half_kernel) - 1"]
    for r in sorted(set(radii)):
        exec(compile(_unrolled_blur_source(r), __file__, "exec"), globals())
        globals()[f"_blur_r{r}"] = njit(cache=True, nogil=True)(globals()[f"_blur_r{r}"])
        dispatcher += [f"    if r == {r}:", f"        return _blur_r{r}(src, dst, half_kernel, rows, line)"]
    dispatcher.append("    return _blur_any_radius(src, dst, half_kernel, rows, line)")
    exec(compile("\n".join(dispatcher) + "\n", __file__, "exec"), globals())
    return njit(cache=True, nogil=True)(globals()["_blur"])


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
    # level, indexed from 0 (an index from a run-time offset, which numba checks for wrap-around,
    # keeps LLVM from vectorising; so do the short loops of a row at a time): 29 -> 20 us on a
    # 1-MP photo's first octave. A level's first and last columns, where a flat pass mixes two
    # rows, are never read.
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


# The blur level ``blob_windows``' first octave starts at, and the radii of the blurs the blob
# search makes: that level's, and the steps to each later level (an octave after the first
# halves its levels below levels - BLOB_PER_OCTAVE from the previous octave and blurs the rest).
# Only these are worth a written-out blur; each takes a second or two to compile the first time.
_FIRST_BLUR_LEVEL = _finest_dog_level(2 ** BLOB_FIRST_OCTAVE) - 1
_FIRST_STEP = min(_FIRST_BLUR_LEVEL + 1, len(_OCTAVE_SIGMAS) - BLOB_PER_OCTAVE)
_BLOB_BLUR_RADII = {int(_LEVEL_RADII[_FIRST_BLUR_LEVEL]), *_STEP_RADII[_FIRST_STEP:].tolist()}
_blur = _compile_blurs(_BLOB_BLUR_RADII)


# ---- hashing an image ----------------------------------------------------------------------------
class WindowHash(NamedTuple):
    window: str
    mirrored: bool
    x0: float
    y0: float
    x1: float
    y1: float
    phash: int


def _as_gray(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    gray = np.asarray(image.convert("L"))
    h, w = gray.shape
    scale = HASH_WORKING_SIZE / max(h, w)
    if scale < 1:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return gray


def _pixel_boxes(windows: list[Window], w: int, h: int, trim_cells: bool, gray: np.ndarray) -> tuple[list[Window], np.ndarray]:
    kept, boxes = [], []
    for win in windows:
        box = win.box(w, h)
        if trim_cells and win.name.startswith("grid"):
            inner = content_box(gray[box[1]:box[3], box[0]:box[2]])
            if inner is not None:
                box = (box[0] + inner[0], box[1] + inner[1], box[0] + inner[2], box[1] + inner[3])
        if box[2] - box[0] >= MIN_WINDOW_PX and box[3] - box[1] >= MIN_WINDOW_PX:
            kept.append(Window(win.name, box[0] / w, box[1] / h, box[2] / w, box[3] / h))
            boxes.append(box)
    return kept, np.array(boxes, dtype=np.int64).reshape(-1, 4)


def reference_hashes(image: Image.Image | np.ndarray, hasher: PHasher | None = None) -> list[WindowHash]:
    """Index entries of a reference: the whole image in eight orientations, blob windows mirrored."""
    gray = _as_gray(image)
    h, w = gray.shape
    windows, boxes = _pixel_boxes([FULL, *blob_windows(gray, REFERENCE_BLOBS)], w, h, False, gray)
    if not windows:
        return []
    blocks, std = dct_blocks(gray, boxes)
    usable = std >= MIN_WINDOW_STD
    out: list[WindowHash] = []
    if windows[0] is not None and windows[0].name == "full" and usable[0]:
        full = blocks[:1]
        for suffix, mirrored, turn in ORIENTATIONS:
            out.append(WindowHash("full" + suffix, mirrored, 0.0, 0.0, 1.0, 1.0, int(hashes_from_blocks(turn(full))[0])))
    rest = [i for i, win in enumerate(windows) if win.name != "full" and usable[i]]
    if rest:
        plain = hashes_from_blocks(blocks[rest])
        mirrored = hashes_from_blocks(mirror_blocks(blocks[rest]))
        for j, i in enumerate(rest):
            win = windows[i]
            out.append(WindowHash(win.name, False, win.x0, win.y0, win.x1, win.y1, int(plain[j])))
            # The mirrored entry hashes the same window's pixels mirrored in place; its box is
            # where those pixels are in the registered (unmirrored) reference.
            out.append(WindowHash(win.name, True, win.x0, win.y0, win.x1, win.y1, int(mirrored[j])))
    return _rounded(out)


def query_hashes(image: Image.Image | np.ndarray, hasher: PHasher | None = None) -> list[WindowHash]:
    """Search keys of a found image: whole image, collage grid cells, pasted-picture proposals,
    blob windows, blob windows inside the best proposals, and the picture turned back upright when
    it was pasted tilted on a plain background."""
    return query_hashes_many([image], hasher)[0]


def query_hashes_many(images: Sequence[Image.Image | np.ndarray], hasher: PHasher | None = None) -> list[list[WindowHash]]:
    """``query_hashes`` of each image, made a stage at a time across them all: each stage runs
    over the whole batch with its code and branch history warm, rather than every image passing
    through some thirty kernels in turn (about 5% of a 1-MP photo's fingerprint, 32 to a
    batch). The same hashes as one image at a time."""
    grays = [_as_gray(image) for image in images]
    hasher = hasher or PHasher()
    pastes = [paste_windows(gray) for gray in grays]
    grids = [query_windows(gray) for gray in grays]
    blobs = [blob_windows(gray, QUERY_BLOBS) for gray in grays]
    paste_blobs = [paste_blob_windows(gray, found) for gray, found in zip(grays, pastes)]
    out: list[list[WindowHash] | None] = []
    for gray, *groups in zip(grays, grids, pastes, blobs, paste_blobs):
        h, w = gray.shape
        windows, boxes = _pixel_boxes([win for group in groups for win in group], w, h, True, gray)
        if not windows:  # nothing a window can be cut from
            out.append(None)
            continue
        hashes, usable = hasher.hash_windows(gray, boxes)
        out.append([WindowHash(win.name, False, win.x0, win.y0, win.x1, win.y1, int(hv)) for win, hv, ok in zip(windows, hashes, usable) if ok])
    for hashes, gray, found in zip(out, grays, pastes):
        if hashes is not None:
            hashes.extend(paste_blob_hashes_upsampled(gray, found, hasher))
    for hashes, gray in zip(out, grays):
        if hashes is None:
            continue
        for name, view in derotated_views(gray):
            vh, vw = view.shape
            if min(vh, vw) >= MIN_WINDOW_PX:
                hv, ok = hasher.hash_windows(view, np.array([[0, 0, vw, vh]]))
                if ok[0]:
                    hashes.append(WindowHash(name, False, 0.0, 0.0, 1.0, 1.0, int(hv[0])))
    return [_rounded(hashes) if hashes is not None else [] for hashes in out]


def derotated_views(gray: np.ndarray, tolerance: int = 18) -> list[tuple[str, np.ndarray]]:
    """A picture rotated by a small angle onto a plain background, turned back and cropped.

    Such a copy has four plain corner triangles, which no trimming removes and which dominate its
    whole-image hash. The triangles' legs along the top and left edges give the angle (not its
    sign, so both turns are returned); the original's size follows from the canvas size.
    """
    h, w = gray.shape
    corners = sorted((int(gray[0, 0]), int(gray[0, -1]), int(gray[-1, 0]), int(gray[-1, -1])))
    colour = (corners[1] + corners[2]) / 2
    if PAD_DARK < colour < PAD_LIGHT or min(h, w) < 2 * MIN_WINDOW_PX:
        return []

    def plain_run(line: np.ndarray) -> int:
        off = np.flatnonzero(np.abs(line.astype(np.int16) - colour) > tolerance)
        return int(off[0]) if off.size else len(line)

    legs = (plain_run(gray[0]), plain_run(gray[0, ::-1]), plain_run(gray[:, 0]), plain_run(gray[::-1, 0]))
    if min(legs) < 3 or max(legs[0], legs[1]) >= w or max(legs[2], legs[3]) >= h:
        return []
    theta = math.atan2(min(legs[0], legs[2]), max(legs[0], legs[2]))
    if theta > math.radians(MAX_DEROTATION_DEGREES):
        return []
    ct, st = math.cos(theta), math.sin(theta)
    w0, h0 = (w * ct - h * st) / (ct * ct - st * st), (h * ct - w * st) / (ct * ct - st * st)
    if min(w0, h0) < MIN_WINDOW_PX:
        return []
    views = []
    for sign, name in ((1, "derotated-ccw"), (-1, "derotated-cw")):
        turn = cv2.getRotationMatrix2D((w / 2, h / 2), sign * math.degrees(theta), 1.0)
        upright = cv2.warpAffine(gray, turn, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        x0, y0 = round((w - w0) / 2) + 1, round((h - h0) / 2) + 1
        views.append((name, np.ascontiguousarray(upright[y0:y0 + int(h0) - 2, x0:x0 + int(w0) - 2])))
    return views


def _rounded(hashes: list[WindowHash]) -> list[WindowHash]:
    # Four decimals: window coordinates are stored in Parquet and must not carry float noise.
    if not hashes:
        return []
    coords = round4(np.array([(x.x0, x.y0, x.x1, x.y1) for x in hashes], np.float64)).tolist()
    return [WindowHash(x.window, x.mirrored, *xy, x.phash) for x, xy in zip(hashes, coords)]


def round4(values: np.ndarray) -> np.ndarray:
    """``round(v, 4)`` of every value, the same floats Python's round gives, at numpy's speed
    (Python's costs about 0.5 us a value, a fingerprint rounds some 80). numpy's own rounding (scale,
    rint, unscale) agrees with it except where the scaled value is within rounding error of a half
    (0.00035 is a little under one in binary: Python gives 0.0003, numpy 0.0004); those few are
    rounded by Python."""
    scaled = values * 1e4
    out = np.rint(scaled) / 1e4
    for i in zip(*np.nonzero(np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6)):
        out[i] = round(float(values[i]), 4)
    return out


def compile_kernels() -> None:
    """Compile every numba kernel of the fingerprint, or load it from numba's on-disk cache
    (``__pycache__`` beside the source, else NUMBA_CACHE_DIR or the user's cache): a first
    compile takes seconds, a cached load a fraction of one. Called before a process pool forks,
    so that its workers inherit the kernels instead of each compiling them, and when a
    production image is built."""
    rng = np.random.default_rng(0)
    picture = cv2.GaussianBlur((rng.random((180, 240)) * 255).astype(np.uint8), (0, 0), 2.0)
    page = np.full((300, 400), 250, np.uint8)
    page[60:240, 100:340] = picture  # a pasted picture, so the proposal kernels run too
    query_hashes(page)
    reference_hashes(picture)


# ---- a found image, from bytes to rows -----------------------------------------------------------
FINGERPRINT_COLUMNS = ["image_sha256", "window", "x0", "y0", "x1", "y1", "phash", "trim_x0", "trim_y0", "trim_x1", "trim_y1"]


# Found images fingerprinted together (query_hashes_many): enough for each stage's code to stay
# warm; their grey working images are all that is held (a few MB).
FINGERPRINT_BATCH = 32


def fingerprint_image(sha: str, data: bytes, max_pixels: int) -> tuple[list[dict], str | None]:
    """Fingerprint rows of one found image, or no rows and the reason it cannot be used."""
    return fingerprint_images([(sha, data)], max_pixels)[0]


def fingerprint_images(items: Iterable[tuple[str, bytes | BadImage]], max_pixels: int) -> list[tuple[list[dict], str | None]]:
    """``fingerprint_image`` of each (sha256, bytes) of ``items``, as a batch (see
    ``query_hashes_many``). ``items`` is read one at a time and each image's bytes are dropped once
    decoded; an item may carry a BadImage instead of bytes (a blob that could not be read), which
    becomes its reason."""
    tune_allocator()  # the arrays of a fingerprint reuse freed heap memory (see copyhunt.allocator)
    results: list[tuple[list[dict], str | None] | None] = []
    decoded: list[tuple[int, str, np.ndarray, tuple[float, float, float, float]]] = []
    for sha, data in items:
        try:
            if isinstance(data, BadImage):
                raise data
            gray, box = load_gray(data, max_pixels, HASH_WORKING_SIZE)
        except BadImage as exc:
            results.append(([], exc.reason))
            continue
        decoded.append((len(results), sha, gray, box))
        results.append(None)
    for (at, sha, _, box), found in zip(decoded, query_hashes_many([gray for _, _, gray, _ in decoded])):
        if not found:
            results[at] = ([], "no-detail")  # uniformly flat: nothing a copy could be recognised by
            continue
        results[at] = ([{"image_sha256": sha, "window": x.window, "x0": x.x0, "y0": x.y0, "x1": x.x1, "y1": x.y1, "phash": x.phash,
                         "trim_x0": box[0], "trim_y0": box[1], "trim_x1": box[2], "trim_y1": box[3]} for x in found], None)
    return results  # type: ignore[return-value]
