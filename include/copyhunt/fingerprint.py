"""Fingerprints: 64-bit perceptual hashes of windows of an image.

A copy on the web is rarely the whole registered picture, untouched. So both sides are hashed over
windows, and a match is a pair of windows whose hashes are close (then confirmed by ``verify``):

* references: the whole image in all eight orientations (so a mirrored, rotated or flipped copy
  hashes like its original), *blob windows* in a canonical orientation, and, for a picture whose
  own edges lean, the blob windows of its view turned upright;
* found images: the whole image; the cells of a collage of 2 to 5 photos a side, cut where the
  image's seams and gutters are (``collage_cells``), with a few blob windows each; rectangles
  that look like a picture pasted into the image (``copyhunt.proposals``) and blob windows found
  inside the best of them; the same blob windows as a reference's; the picture warped upright
  when it was turned or keystoned onto a plain background (``plain_background_quad``); and the
  blob windows of the image turned upright when its edges lean (``tilt_view``).

Blob windows make crops work. They are squares centred on the strongest blobs of a
difference-of-Gaussians scale space, sized by the blob's scale. They depend only on the pixels
around the blob, so a crop, a scaled copy or a picture pasted into another keeps the windows whose
blobs it keeps, at the same place in the picture, and they hash alike. Grid windows of the
reference instead would have to line up with wherever the crop happened to cut.

The hash is pHash: the 8x8 lowest frequencies of the DCT of the window resized to 32x32, one bit
per coefficient (above the median or not). It is computed for all windows at once with two matrix
products, which is far cheaper than hashing window by window. Mirroring and quarter turns of a
window only flip signs of, or transpose, the DCT coefficients, so the eight orientations of the
whole image come from one DCT, and a blob window is hashed in the orientation its two lowest
frequencies single out (``canonical_orientations``): a crop that was turned or mirrored as well
hashes like the reference's windows without searching its windows eight ways. A window's name
carries the orientation it was hashed in (``blob03-rot90-mirror``), from which
``pair_orientation`` tells how a copy was turned. A hash is stored as a signed int64 (Spark and
Parquet have no unsigned 64-bit integers).

Windows of a view (the rectified picture, a tilt view) have their boxes in that view; the view is
made again from the image and the window's name when the pair is verified (``found_image_view``).

This module is the method; the loops over pixels it calls are compiled numba kernels in
``copyhunt.kernels`` (cell means and median bits, the blob search, the pasted-picture search).
``fingerprint_images`` turns found images' bytes into fingerprint rows (the fingerprint stage's
pool workers call it); ``reference_hashes`` hashes a registered picture for the index.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Iterable, NamedTuple, Protocol, Sequence

import cv2
import numpy as np
from PIL import Image

from copyhunt.allocator import tune_allocator
from copyhunt.imaging import PAD_DARK, PAD_LIGHT, BadImage, content_box, load_gray
# The blob and hash kernels compile their parameters in as constants, so those parameters are
# defined beside them and imported here.
from copyhunt.kernels.blobs import FIRST_BLUR_LEVEL, MIN_WINDOW_PX, blob_pyramid
from copyhunt.kernels.hashes import HASH_INPUT, bits_above_median, cell_means, seam_profile
from copyhunt.proposals import paste_boxes


# Changes whenever the hashes of the same pixels change: index shards are keyed by it, so an old
# index is rebuilt rather than searched with hashes made another way.
FINGERPRINT_VERSION = 6  # 2: windows shrunk by exact area averaging from an integral image; 3: blob octaves halved exactly, blurs to 3 sigma; 4: an octave's first blurs are the previous octave's halved; 5: blob blurs compiled (float rounding differs from OpenCV's); 6: blob windows in a canonical orientation, 24 of a reference's, collage cells of 2 to 5 a side at detected seams, pictures on a plain background warped upright, tilt views of found images and references
HASH_BITS = 64
PART_WINDOW = "blob"  # the names of windows that hold a part of a picture (blob windows); the others may hold a whole one
RECTIFIED_WINDOW = "rectified"  # a picture turned or keystoned onto a plain background, warped upright (plain_background_quad)
DCT_KEEP = 8  # the 8x8 lowest frequencies give the 64 bits
# Long side of the grey image windows are cut from. Crop windows need a few dozen pixels; the
# 3x3 collage cells get ~100 px. Larger costs decode and blob-detection time for nothing.
HASH_WORKING_SIZE = 320
# A window this flat (std of its 32x32 grey pixels, 0-255) hashes noise: a clear sky, a white
# page. Its bits would match any other flat window, so it is not hashed.
MIN_WINDOW_STD = 6.0
# Blob windows: the strongest blobs of a difference-of-Gaussians scale space, side = 2 * BLOB_SIDE * sigma
# (the scale space's parameters, BLOB_*, are in copyhunt.kernels.blobs).
# A reference keeps more than a found image searches: a crop keeping a quarter of a small photo
# holds few of its blobs, and each reference window costs an index entry, not a lookup (tuning
# part, crops: 80 of 84 found with 24, 75 with 16).
REFERENCE_BLOBS = 24
QUERY_BLOBS = 16
# Blob windows are hashed in a canonical orientation of the eight a square has (turned by
# quarter turns, mirrored), fixed by the signs and sizes of their two lowest frequencies
# (``canonical_orientations``): a window whose copy was turned or mirrored with the picture hashes
# alike in it, at no cost in index entries or lookups. Within a margin of the bounds (of the
# block's mean |AC coefficient|) a window is hashed in each orientation that passes. The margins
# of both sides add up, so the reference, hashed once, takes the wider one and a found image,
# whose every hash is a lookup, the narrower: 1.12 and 1.05 hashes a window. On the tuning part's
# crops, chains, embeds, screenshots, thumbnails, blurs, noise and watermarks that keeps as many
# copies within 10 bits of a reference window as margins of 0.2 on both sides did, and as plain
# and mirrored hashes had.
CANONICAL_MARGIN = 0.2  # reference windows
QUERY_CANONICAL_MARGIN = 0.1  # found images' windows
# A found image whose edges lean (``image_tilt``) at least this far from upright is also searched
# turned back upright: a tilted copy cropped inside its own outline has no plain corners to find
# the tilt by, but its straight edges (horizons, walls, frames), which most photos keep upright,
# give it. Blob windows of that view, at most TILT_BLOBS, are searched beside the found image's.
MIN_TILT_DEGREES = 3.0
TILT_BLOBS = 12
TILT_WINDOW = "blob-t"  # blob windows found in the view turned upright (named with its tilt: tilt_prefix); their boxes are the view's
# A picture turned or keystoned onto a plain background (``plain_background_quad``) is warped back
# upright when a corner of it lies this far (of the image's long side) inside the image's, and it
# covers at least this share of the image.
MIN_QUAD_INSET = 0.03
MIN_QUAD_AREA = 0.3
MIN_PLAIN_SHARE = 0.9  # of the pixels outside the picture that are the background colour
MAX_FILL_STD = 4.0  # of those pixels' grey levels: a fill is flat to a JPEG's noise
# Collages in found images: each side split into 2 to 5 equal parts at seams (two photos meeting)
# or gutters. A line is a seam by the share of its pixels that step clearly (more than
# SEAM_STEP_OVER_MEDIAN x the image's median step, and MIN_SEAM_STEP grey levels) to the next
# line; where an equal split puts an inner line, the best line within SEAM_REACH of the side
# counts. A collage of rows x columns is searched where every inner line of both splits reaches
# SEAM_SHARE and those of one of them CLEAR_SEAM_SHARE; a side split alone (photos side by side)
# where its lines reach CLEAR_SEAM_SHARE. Tuning part of the held-out suite (seeds 1-6): every
# grid of 2 to 5 a side is found so, and 3% of its photos under other edits (meme bars,
# letterboxes, screenshots and embeds apart) show a split, 0.16 cells a photo. The cells are cut
# in the middle of a flat gutter, or at the seam, and trimmed of gutters and padding.
COLLAGE_PARTS = (2, 3, 4, 5)
SEAM_STEP_OVER_MEDIAN = 1.5
MIN_SEAM_STEP = 8
SEAM_REACH = 0.03
SEAM_SHARE = 0.5
CLEAR_SEAM_SHARE = 0.7
FLAT_LINE_STD = 4.0  # a gutter's line: its pixels' standard deviation (0-255) under this
GUTTER_BLEND = 2  # lines of a gutter's edge blended with the photo beside it, at most
CELL_EDGE_PX = 2  # of a neighbour a cell cut at a seam may keep, at most
# Pasted-picture rectangles hashed per found image (see copyhunt.proposals), plus up to four
# placements of the best one with a side moved: the first is right for most insets, the others
# when a natural rectangle (window, screen) or a line through the picture ranked above it. Most
# photos have none, so these cost few windows.
PASTE_PROPOSALS = 3
# Blob windows found inside the best pasted-picture rectangles alone, each grown by a margin:
# the picture's own blobs, which the found image's strongest blobs (mostly the background's)
# leave out, and which match the reference's blob windows even when the rectangle is a few
# pixels off (a whole-picture hash then is not). Each rectangle is searched twice: at the found
# image's size, and cut out and enlarged to the working size (the reference's blobs were found at
# that size). They raise paste recall on the robustness suite, seeds held out included, for a few
# dozen more windows on a found image with proposals.
PASTE_BLOB_PROPOSALS = 2
PASTE_BLOBS = 8  # per rectangle and size
PASTE_BLOB_MARGIN = 0.05  # of the rectangle's side, on each side
# A rectangle whose enlargement to the working size would be under this factor (it spans most of
# the found image) is not searched enlarged: at nearly the same size the search finds the same
# blobs (many rectangles on 1-MP photos would be enlarged by little more than 1.1x).
PASTE_BLOB_MIN_UPSAMPLE = 1.25
# Blob windows searched in each collage cell (``cell_blob_hashes``): a photo cropped to its
# cell's shape matches by them. Few a cell: a 5x5 collage has 25 cells.
CELL_BLOBS = 3

_DCT = np.array([[np.cos(np.pi * (2 * n + 1) * k / (2 * HASH_INPUT)) for n in range(HASH_INPUT)] for k in range(DCT_KEEP)], dtype=np.float32)
_ALTERNATING = np.array([(-1.0) ** k for k in range(DCT_KEEP)], dtype=np.float32)
_CELL_EDGES = np.linspace(0.0, 1.0, HASH_INPUT + 1)  # edges of the 32x32 cells across a window, 0..1


class Hasher(Protocol):
    name: str
    bits: int

    def hash_windows(self, gray: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hashes as int64, usable mask) for pixel boxes (x0, y0, x1, y1) of a grey image."""

    def hash_window_kinds(self, gray: np.ndarray, windows: Sequence["Window"], boxes: np.ndarray, margin: float) -> list["WindowHash"]:
        """Rows of the usable windows: parts of a picture in their canonical orientations."""


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
    small, std = cell_means(cv2.integral(gray, sdepth=cv2.CV_64F), np.ascontiguousarray(boxes, np.float64), _CELL_EDGES)
    return _DCT @ small @ _DCT.T, std


def hashes_from_blocks(blocks: np.ndarray) -> np.ndarray:
    """pHash bits (coefficient above the block's median), packed most significant bit first."""
    return bits_above_median(np.ascontiguousarray(blocks.reshape(len(blocks), HASH_BITS), np.float32)).view(np.int64)


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


ORIENTATION_TURNS = {"": 0, "-rot90": 1, "-rot180": 2, "-rot270": 3}
MIRROR_SUFFIX = "-mirror"


def orientation_name(window: str, turns: int, mirrored: bool) -> str:
    """A window's name with its orientation: ``blob03-rot90-mirror`` is blob window 3 turned
    clockwise once, then mirrored."""
    return window + ("", "-rot90", "-rot180", "-rot270")[turns % 4] + (MIRROR_SUFFIX if mirrored else "")


def window_orientation(window: str) -> tuple[int, bool]:
    """(clockwise quarter turns, mirrored) read from a window's name (``orientation_name``); a
    found image's grid cells, pastes and whole image are upright: (0, False)."""
    mirrored = window.endswith(MIRROR_SUFFIX)
    if mirrored:
        window = window[: -len(MIRROR_SUFFIX)]
    for suffix, turns in (("-rot90", 1), ("-rot180", 2), ("-rot270", 3)):
        if window.endswith(suffix):
            return turns, mirrored
    return 0, mirrored


def _d4(turns: int, mirrored: bool) -> tuple[int, int, int, int]:
    """The 2x2 map (a, b, c, d: x' = a x + b y, y' = c x + d y) of image coordinates (x right,
    y down) of "turn clockwise ``turns`` times, then mirror"."""
    a, b, c, d = 1, 0, 0, 1
    for _ in range(turns % 4):  # one clockwise turn after the map so far: (x, y) -> (-y, x)
        a, b, c, d = -c, -d, a, b
    return (-a, -b, c, d) if mirrored else (a, b, c, d)


def _composed_orientations() -> dict[tuple[int, bool, int, bool], tuple[bool, int]]:
    """(query turns, query mirrored, reference turns, reference mirrored) -> (mirrored, turns) of
    the copy: the query window hashed as (Mq Tq) Q, the reference's as (Mr Tr) R, alike, so
    Q = (Mq Tq)^-1 (Mr Tr) R. A table, looked up for each candidate verified."""
    by_map = {_d4(t, m): (m, t) for t in range(4) for m in (False, True)}
    table = {}
    for qt in range(4):
        for qm in (False, True):
            a, b, c, d = _d4(qt, qm)
            det = a * d - b * c  # +-1: a turn or a reflection
            ia, ib, ic, id_ = d * det, -b * det, -c * det, a * det
            for rt in range(4):
                for rm in (False, True):
                    e, f, g, h = _d4(rt, rm)
                    table[(qt, qm, rt, rm)] = by_map[(ia * e + ib * g, ia * f + ib * h, ic * e + id_ * g, ic * f + id_ * h)]
    return table


_PAIR_ORIENTATIONS = _composed_orientations()


def pair_orientation(query_window: str, ref_window: str, ref_mirrored: bool) -> tuple[bool, int]:
    """(mirrored, clockwise quarter turns) that take the registered reference to the copy, for a
    pair of windows with close hashes: the query window hashed in its orientation, the
    reference's in its own (its name's turns and its mirrored flag). Whole pictures are hashed
    upright on the found image's side, so the reference entry's orientation is the copy's; blob
    windows are hashed in a canonical orientation on both sides, which the pair composes."""
    q_turns, q_mirrored = window_orientation(query_window)
    r_turns, _ = window_orientation(ref_window)
    return _PAIR_ORIENTATIONS[(q_turns, q_mirrored, r_turns, bool(ref_mirrored))]


def _lowest_frequencies_moved() -> np.ndarray:
    """(8, 2, 2): for each of ORIENTATIONS, the signed map from a block's (first horizontal,
    first vertical) frequency to the turned block's, read off by turning a probe block (the
    orientations only move coefficients and flip their signs)."""
    probe = np.zeros((2, DCT_KEEP, DCT_KEEP), np.float32)
    probe[0, 0, 1] = probe[1, 1, 0] = 1.0
    return np.stack([np.stack([turn(probe)[:, 0, 1], turn(probe)[:, 1, 0]]) for _, _, turn in ORIENTATIONS])


_LOWEST_MOVED = _lowest_frequencies_moved()


def canonical_orientations(blocks: np.ndarray, margin: float) -> list[list[int]]:
    """For each window's DCT block, the orientations (indices into ORIENTATIONS) it is hashed
    in: the one where its first horizontal and first vertical frequency are both positive and the
    horizontal one the larger, and each other one that is so within ``margin`` x the block's
    mean |AC coefficient| (so that a coefficient near its bound, which a copy's edits may
    push across, does not lose the pair)."""
    if len(blocks) == 0:
        return []
    lowest = np.stack([blocks[:, 0, 1], blocks[:, 1, 0]])  # (2, n)
    moved = np.einsum("kij,jn->kin", _LOWEST_MOVED, lowest)  # (8, 2, n)
    across, down = moved[:, 0], moved[:, 1]
    slack = margin * (np.abs(blocks.reshape(len(blocks), -1)[:, 1:]).mean(axis=1) + 1e-6)
    ok = (across >= -slack) & (down >= -slack) & (np.abs(across) >= np.abs(down) - slack)
    return [np.flatnonzero(ok[:, i]).tolist() for i in range(len(blocks))]


def canonical_hashes(names: Sequence[str], blocks: np.ndarray, margin: float) -> list[tuple[int, str, bool, int]]:
    """(window's index, name with orientation, mirrored, hash) of blob windows in their canonical
    orientations (``canonical_orientations`` with ``margin``), in window order."""
    if len(blocks) == 0:
        return []
    chosen = canonical_orientations(blocks, margin)
    pairs = [(i, k) for i, ks in enumerate(chosen) for k in ks]
    hashes: dict[tuple[int, int], int] = {}
    for k in sorted({k for _, k in pairs}):  # each orientation's windows hashed together
        rows = [i for i, kk in pairs if kk == k]
        for i, value in zip(rows, hashes_from_blocks(np.ascontiguousarray(ORIENTATIONS[k][2](blocks[rows]))).tolist()):
            hashes[(i, k)] = value
    out = []
    for i, k in pairs:
        suffix, mirrored, _ = ORIENTATIONS[k]
        out.append((i, orientation_name(names[i], ORIENTATION_TURNS[suffix], mirrored), mirrored, hashes[(i, k)]))
    return out


class PHasher:
    """64-bit DCT pHash, bit-compatible with ``imagehash.phash`` on the same 32x32 pixels."""

    name = "phash64"
    bits = HASH_BITS

    def hash_windows(self, gray: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        blocks, std = dct_blocks(gray, boxes)
        return hashes_from_blocks(blocks), std >= MIN_WINDOW_STD

    def hash_window_kinds(self, gray: np.ndarray, windows: Sequence[Window], boxes: np.ndarray,
                          margin: float = QUERY_CANONICAL_MARGIN) -> list[WindowHash]:
        """WindowHash rows of ``windows`` (their pixel ``boxes``): blob windows (parts of a
        picture) in their canonical orientations (within ``margin``), named with them and
        mirrored as hashed, the others (whole pictures) upright; flat windows are left out."""
        blocks, std = dct_blocks(gray, boxes)
        usable = std >= MIN_WINDOW_STD
        whole = [i for i, win in enumerate(windows) if usable[i] and not win.name.startswith(PART_WINDOW)]
        parts = [i for i, win in enumerate(windows) if usable[i] and win.name.startswith(PART_WINDOW)]
        rows: list[tuple[int, WindowHash]] = []
        for i, value in zip(whole, hashes_from_blocks(blocks[whole]).tolist() if whole else []):
            win = windows[i]
            rows.append((i, WindowHash(win.name, False, win.x0, win.y0, win.x1, win.y1, int(value))))
        for j, name, mirrored, value in canonical_hashes([windows[i].name for i in parts], blocks[parts], margin):
            win = windows[parts[j]]
            rows.append((parts[j], WindowHash(name, mirrored, win.x0, win.y0, win.x1, win.y1, value)))
        return [row for _, row in sorted(rows, key=lambda r: r[0])]

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


def query_windows(gray: np.ndarray) -> list[Window]:
    """The whole found image, and the cells of the collage it shows seams for (blob windows
    and paste proposals are found elsewhere)."""
    return [FULL, *collage_cells(gray)]


def collage_cells(gray: np.ndarray) -> list[Window]:
    """The cells of every collage the image shows seams for (``collage_splits``), named
    ``grid<rows>x<columns>-<row><column>``; none for an image without seams.

    Cells are searched for collages only, and each costs an index lookup and, now and then, a
    chance candidate to verify; a photo that is no collage has no reason to pay for them."""
    h, w = gray.shape
    rows, cols = (_clearest(collage_splits(gray, axis)) for axis in (0, 1))
    grids = [(r, c) for r in rows for c in cols if max(r.share, c.share) >= CLEAR_SEAM_SHARE]
    if not grids:  # photos side by side, or stacked
        grids = [(r, _NO_SPLIT) for r in rows if r.share >= CLEAR_SEAM_SHARE] + [(_NO_SPLIT, c) for c in cols if c.share >= CLEAR_SEAM_SHARE]
    windows = []
    for row_split, col_split in grids:
        # Each cell from where the previous one's gutter ends to where its own begins.
        ys = [(start, end) for (_, start), (end, _) in zip([(0, 0), *row_split.cuts], [*row_split.cuts, (h, h)])]
        xs = [(start, end) for (_, start), (end, _) in zip([(0, 0), *col_split.cuts], [*col_split.cuts, (w, w)])]
        for r, (y0, y1) in enumerate(ys):
            for c, (x0, x1) in enumerate(xs):
                windows.append(Window(f"grid{len(ys)}x{len(xs)}-{r}{c}", x0 / w, y0 / h, x1 / w, y1 / h))
    return windows


def _clearest(splits: list["Split"]) -> list["Split"]:
    """The clear splits of a side if it has any (a collage's own lines are clear; fainter ones at
    other counts are lines of its photos), else its faint ones."""
    clear = [split for split in splits if split.share >= CLEAR_SEAM_SHARE]
    return clear or splits


class Split(NamedTuple):
    """A side of an image split into equal parts: where each inner gutter starts and ends
    (pixels; the same line where photos meet without one), and the share of clear steps along
    its weakest inner line."""

    cuts: tuple[tuple[int, int], ...]
    share: float


_NO_SPLIT = Split((), 1.0)


def collage_splits(gray: np.ndarray, axis: int) -> list[Split]:
    """The splits of COLLAGE_PARTS along ``axis`` (1: columns, 0: rows) whose every inner line
    lies on a seam of at least SEAM_SHARE clear steps (``seam_profile``; the best line within
    SEAM_REACH of where an equal split puts it). A split whose parts' count divides another
    found split's is dropped: a 4x4 grid has the lines of a 2x2 one, whose cells would be four
    photos."""
    length = gray.shape[1 if axis == 1 else 0]
    if length < 2 * MIN_WINDOW_PX:
        return []
    share, spread = seam_profile(np.ascontiguousarray(gray), axis, SEAM_STEP_OVER_MEDIAN, MIN_SEAM_STEP)
    reach = max(2, round(SEAM_REACH * length))
    found: dict[int, Split] = {}
    for parts in COLLAGE_PARTS:
        if length / parts < MIN_WINDOW_PX:
            break
        cuts, weakest = [], 1.0
        for k in range(1, parts):
            cut, clear = _inner_line(share, spread, k * length / parts, reach)
            cuts.append(cut)
            weakest = min(weakest, clear)
        if weakest >= SEAM_SHARE:
            found[parts] = Split(tuple(cuts), weakest)
    return [split for parts, split in found.items() if not any(other != parts and other % parts == 0 for other in found)]


def _inner_line(share: np.ndarray, spread: np.ndarray, at: float, reach: int) -> tuple[tuple[int, int], float]:
    """Where cells meet near line ``at``: the gutter there (the first and one past the last of
    its flat lines; the run of flat lines nearest ``at`` within ``reach``), else the seam (the
    line pair with the most clear steps, (step + 1, step + 1)); and the share of clear steps
    there (into the gutter from either side, a resized gutter's edges blended over at most
    GUTTER_BLEND lines). A gutter decides over a stronger step nearby: tiles of similar photos
    side by side line up edges of their own."""
    lo, hi = max(0, int(at - reach)), min(len(share), int(at + reach) + 1)
    flat = [i for i in range(lo, hi + 1) if spread[i] < FLAT_LINE_STD]
    if flat:
        start = min(flat, key=lambda i: (abs(i + 0.5 - at), i))
        a = b = start
        while a - 1 >= lo and spread[a - 1] < FLAT_LINE_STD:
            a -= 1
        while b + 1 <= hi and spread[b + 1] < FLAT_LINE_STD:
            b += 1
        edges = [*share[max(0, a - 1 - GUTTER_BLEND):a], *share[b:b + 1 + GUTTER_BLEND]]
        return (a, b + 1), float(max(edges, default=0.0))
    step = lo + int(np.argmax(share[lo:hi]))
    return (step + 1, step + 1), float(share[step])


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
    areas = [(f"blob-u{i}-", _paste_blob_area(paste, w, h)) for i, paste in enumerate(pastes[:PASTE_BLOB_PROPOSALS])]
    return _enlarged_blob_hashes(gray, areas, PASTE_BLOBS, hasher)


def cell_blob_hashes(gray: np.ndarray, cells: list[Window], hasher: PHasher) -> list[WindowHash]:
    """Blob windows of each collage cell (its trimmed box), enlarged to the working size like a
    pasted picture's: a photo cropped to its cell's shape hashes like no whole reference, but its
    blobs are the reference's. CELL_BLOBS a cell, named ``blob-c<row><column>-<n>``."""
    h, w = gray.shape
    areas = [(f"blob-c{cell.name.split('-')[1]}-", cell.box(w, h)) for cell in cells]
    return _enlarged_blob_hashes(gray, areas, CELL_BLOBS, hasher)


def _enlarged_blob_hashes(gray: np.ndarray, areas: list[tuple[str, tuple[int, int, int, int]]], count: int, hasher: PHasher) -> list[WindowHash]:
    """The ``count`` strongest blob windows of each pixel area of ``gray``, cut out and enlarged
    to the working size (areas that would grow by less than PASTE_BLOB_MIN_UPSAMPLE are left to
    the found image's own search), named with each area's prefix; boxes in ``gray``'s coordinates."""
    h, w = gray.shape
    out = []
    for prefix, area in areas:
        x0, y0, x1, y1 = area
        cw, ch = x1 - x0, y1 - y0
        if min(cw, ch) < MIN_WINDOW_PX:
            continue
        f = HASH_WORKING_SIZE / max(cw, ch)
        if f < PASTE_BLOB_MIN_UPSAMPLE:
            continue
        up = cv2.resize(gray[y0:y1, x0:x1], (round(cw * f), round(ch * f)), interpolation=cv2.INTER_CUBIC)
        uh, uw = up.shape
        wins = blob_windows(up, count)
        if not wins:
            continue
        boxes = np.array([win.box(uw, uh) for win in wins], np.int64)
        for row in hasher.hash_window_kinds(up, [win._replace(name=f"{prefix}{win.name[4:]}") for win in wins], boxes):
            placed = _from_area(row.window, Window(row.window, row.x0, row.y0, row.x1, row.y1), area, w, h)
            out.append(WindowHash(placed.name, False, placed.x0, placed.y0, placed.x1, placed.y1, row.phash))
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
    x, y, r = blob_pyramid(np.ascontiguousarray(gray, np.uint8), FIRST_BLUR_LEVEL, count)
    # As Python floats: the same values, and arithmetic and round() on numpy scalars cost ten
    # times as much (Window.box is called on every window).
    edges = zip(((x - r) / w).tolist(), ((y - r) / h).tolist(), ((x + r) / w).tolist(), ((y + r) / h).tolist())
    return [Window(f"blob{i:02d}", x0, y0, x1, y1) for i, (x0, y0, x1, y1) in enumerate(edges)]


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


def _trimmed_cell(gray: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A collage cell's pixel box without the padding around its photo: looked for inside the
    cell less CELL_EDGE_PX on each side first, since a cut at a seam may keep a sliver of the
    neighbour, whose pixels in the cell's corners would hide the padding (and would count as
    content along every line)."""
    x0, y0, x1, y1 = box
    for inset in (CELL_EDGE_PX, 0):
        if x1 - x0 <= 4 * inset or y1 - y0 <= 4 * inset:
            break
        inner = content_box(gray[y0 + inset:y1 - inset, x0 + inset:x1 - inset])
        if inner is not None:
            # A side where the photo reaches the inset's edge keeps the cell's own.
            w, h = x1 - x0 - 2 * inset, y1 - y0 - 2 * inset
            return (x0 + inset + inner[0] if inner[0] else x0, y0 + inset + inner[1] if inner[1] else y0,
                    x0 + inset + inner[2] if inner[2] < w else x1, y0 + inset + inner[3] if inner[3] < h else y1)
    return box


def _pixel_boxes(windows: list[Window], w: int, h: int, trim_cells: bool, gray: np.ndarray) -> tuple[list[Window], np.ndarray]:
    kept, boxes = [], []
    for win in windows:
        box = win.box(w, h)
        if trim_cells and win.name.startswith("grid"):
            box = _trimmed_cell(gray, box)
        if box[2] - box[0] >= MIN_WINDOW_PX and box[3] - box[1] >= MIN_WINDOW_PX:
            kept.append(Window(win.name, box[0] / w, box[1] / h, box[2] / w, box[3] / h))
            boxes.append(box)
    return kept, np.array(boxes, dtype=np.int64).reshape(-1, 4)


def reference_hashes(image: Image.Image | np.ndarray, hasher: PHasher | None = None) -> list[WindowHash]:
    """Index entries of a reference: the whole image in eight orientations, blob windows in their
    canonical orientations, and those of its tilt view when its edges lean."""
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
        # An entry's box is where its pixels are in the registered (upright, unmirrored)
        # reference, whichever orientation they were hashed in.
        for j, name, mirrored, value in canonical_hashes([windows[i].name for i in rest], blocks[rest], CANONICAL_MARGIN):
            win = windows[rest[j]]
            out.append(WindowHash(name, mirrored, win.x0, win.y0, win.x1, win.y1, value))
    # A reference whose own edges lean is also described turned upright, as a tilted copy of it
    # will be searched: the tilt is in the windows' names, their boxes relative to that view.
    tilt = image_tilt(gray)
    tilted = tilt_view(gray, tilt)
    if tilted is not None:
        out.extend(tilt_view_windows(gray, tilted, tilt_prefix(tilt), PHasher(), CANONICAL_MARGIN))
    return _rounded(out)


def query_hashes(image: Image.Image | np.ndarray, hasher: PHasher | None = None) -> list[WindowHash]:
    """Search keys of a found image: the whole image, collage cells and their blob windows,
    pasted-picture proposals and the blob windows inside the best of them, the image's own blob
    windows, the picture warped upright off a plain background, and the blob windows of the
    image turned upright when its edges lean."""
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
        out.append(hasher.hash_window_kinds(gray, windows, boxes))
    for hashes, gray, found in zip(out, grays, pastes):
        if hashes is not None:
            hashes.extend(paste_blob_hashes_upsampled(gray, found, hasher))
            cells = [Window(x.window, x.x0, x.y0, x.x1, x.y1) for x in hashes if x.window.startswith("grid")]
            hashes.extend(cell_blob_hashes(gray, cells, hasher))
    for hashes, gray in zip(out, grays):
        if hashes is None:
            continue
        tilt = image_tilt(gray)
        tilted = tilt_view(gray, tilt)
        if tilted is not None:
            hashes.extend(tilt_view_windows(gray, tilted, tilt_prefix(tilt), hasher, QUERY_CANONICAL_MARGIN))
        quad = plain_background_quad(gray)
        if quad is not None:
            view = rectified(gray, quad)[0]
            vh, vw = view.shape
            if min(vh, vw) >= MIN_WINDOW_PX:
                hv, ok = hasher.hash_windows(view, np.array([[0, 0, vw, vh]]))
                if ok[0]:
                    hashes.append(WindowHash(RECTIFIED_WINDOW, False, 0.0, 0.0, 1.0, 1.0, int(hv[0])))
    return [_rounded(hashes) if hashes is not None else [] for hashes in out]


def image_tilt(gray: np.ndarray) -> float:
    """How far, in degrees (-45..45, counter-clockwise positive), the image's edges lean from
    upright: the phase of the gradients' directions taken four times over (so that horizontal and
    vertical edges, either way up, agree), weighted by their strength to the fourth power, so
    that the few long straight edges decide over the many faint ones in other directions (on
    the tuning part's tilted crops: within 2 degrees of their tilt for 87%, against 80% for
    squared strengths)."""
    f = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 1.0)
    gx, gy = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3)
    # sum of (gx + i gy)^4, without complex arrays: (gx + i gy)^2 = re2 + i im2.
    re2, im2 = gx * gx - gy * gy, 2 * gx * gy
    re4, im4 = float((re2 * re2 - im2 * im2).sum(dtype=np.float64)), float((2 * re2 * im2).sum(dtype=np.float64))
    # Image rows run downwards: an edge turned counter-clockwise on screen has its gradient
    # angle lowered, hence the sign.
    return -math.degrees(math.atan2(im4, re4)) / 4


def tilt_view(gray: np.ndarray, tilt: float | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The image turned upright by its ``image_tilt`` (or by ``tilt``), on a canvas holding all of
    it (the corners outside it repeat its edges), and the affine map from the canvas's pixels to
    ``gray``'s; None when it leans by less than MIN_TILT_DEGREES. Windows are taken only where
    the canvas shows the image (``inside_tilt_view``)."""
    h, w = gray.shape
    tilt = image_tilt(gray) if tilt is None else tilt
    if abs(tilt) < MIN_TILT_DEGREES or min(h, w) < 2 * MIN_WINDOW_PX:
        return None
    (vw, vh), to_gray = tilt_canvas(w, h, tilt)
    view = cv2.warpAffine(gray, to_gray, (vw, vh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(view), to_gray


def tilt_canvas(w: int, h: int, tilt: float) -> tuple[tuple[int, int], np.ndarray]:
    """(width, height) of the canvas holding a w x h image turned by ``tilt`` degrees, and the
    affine map (2x3) from the canvas's pixels to the image's: about the centres."""
    a = math.radians(abs(tilt))
    vw, vh = int(math.ceil(w * math.cos(a) + h * math.sin(a))), int(math.ceil(w * math.sin(a) + h * math.cos(a)))
    to_image = cv2.getRotationMatrix2D((vw / 2, vh / 2), tilt, 1.0)
    to_image[:, 2] += (w / 2 - vw / 2, h / 2 - vh / 2)
    return (vw, vh), to_image


def tilt_view_windows(gray: np.ndarray, tilted: tuple[np.ndarray, np.ndarray], prefix: str, hasher: "PHasher", margin: float) -> list[WindowHash]:
    """Rows of the TILT_BLOBS strongest blob windows of a tilt view that lie wholly on the image
    (the canvas's repeated edges make blobs of their own), named ``prefix`` + their number,
    boxes relative to the canvas."""
    view, to_gray = tilted
    vh, vw = view.shape
    wins = blob_windows(view, 2 * TILT_BLOBS)
    boxes = np.array([win.box(vw, vh) for win in wins], np.int64).reshape(-1, 4)
    keep = np.flatnonzero(inside_tilt_view(boxes, to_gray, gray.shape))[:TILT_BLOBS]
    if not len(keep):
        return []
    return hasher.hash_window_kinds(view, [wins[i]._replace(name=f"{prefix}{wins[i].name[4:]}") for i in keep], boxes[keep], margin)


def tilt_prefix(tilt: float) -> str:
    """The start of the names of a tilt view's windows: the view is made again from the image
    and its name (at another size the image's tilt may come out otherwise)."""
    return f"{TILT_WINDOW}@{tilt:+.2f}#"


def window_tilt(window: str) -> float | None:
    """The tilt (degrees) a tilt view's window was found at, from its name
    (``blob-t@-9.36#03-rot90``), or None for other windows."""
    if not window.startswith(TILT_WINDOW + "@"):
        return None
    return float(window[len(TILT_WINDOW) + 1:].split("#")[0])


def inside_tilt_view(boxes: np.ndarray, to_gray: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Which pixel boxes of a tilt view's canvas lie wholly on the image (their four corners
    inside it: the image's outline on the canvas is convex)."""
    h, w = shape
    x0, y0, x1, y1 = (boxes[:, i].astype(np.float64) for i in range(4))
    ok = np.ones(len(boxes), bool)
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
        gx = to_gray[0, 0] * x + to_gray[0, 1] * y + to_gray[0, 2]
        gy = to_gray[1, 0] * x + to_gray[1, 1] * y + to_gray[1, 2]
        ok &= (gx >= -0.5) & (gx <= w + 0.5) & (gy >= -0.5) & (gy <= h + 0.5)
    return ok


def found_image_view(gray: np.ndarray, window: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The view of a found image that ``window``'s box is relative to, and the 3x3 map from the
    view's pixels to ``gray``'s: the picture warped upright off a plain background for the
    rectified window, the image turned upright for the tilt view's blob windows; None for the
    other windows (their boxes are the image's), and when the view cannot be made again."""
    if window == RECTIFIED_WINDOW:
        quad = plain_background_quad(gray)
        return None if quad is None else rectified(gray, quad)
    tilt = window_tilt(window)
    if tilt is not None:
        tilted = tilt_view(gray, tilt)
        return None if tilted is None else (tilted[0], np.vstack([tilted[1], [0.0, 0.0, 1.0]]))
    return None


def plain_background_quad(gray: np.ndarray, tolerance: int = 18) -> np.ndarray | None:
    """The corners (top-left, top-right, bottom-right, bottom-left; x, y in pixels) of a picture
    turned or keystoned onto a plain background, or None when the image is no such thing.

    Such a copy's outline is a quadrilateral, not the image's rectangle: the background shows in
    its four corners, which dominate a whole-image hash. The background is the colour the image's
    corners share; the picture's corners are the points of its convex hull furthest towards the
    image's corners (a picture's own background-coloured patches, inside it or along a side, do
    not move them). The quad must leave background in at least one corner and hold most of the
    image."""
    h, w = gray.shape
    if min(h, w) < 2 * MIN_WINDOW_PX:
        return None
    # The background: the colour most of the image's corners share (a keystoned picture may
    # reach one or two of them once its padding is trimmed).
    corner_px = [int(gray[0, 0]), int(gray[0, -1]), int(gray[-1, 0]), int(gray[-1, -1])]
    agreeing = max(([c for c in corner_px if abs(c - colour) <= tolerance] for colour in corner_px), key=len)
    if len(agreeing) < 2:
        return None
    colour = float(np.median(agreeing))
    background = cv2.inRange(gray, max(0.0, colour - tolerance), min(255.0, colour + tolerance))
    content = background == 0
    # The hull of the content is the hull of each row's first and last content pixel (a few
    # hundred points, not every pixel: a hull of a whole photo's pixels costs milliseconds).
    rows = np.flatnonzero(content.any(axis=1))
    if len(rows) < 2:
        return None
    first = content[rows].argmax(axis=1)
    last = w - 1 - content[rows, ::-1].argmax(axis=1)
    points = np.concatenate([np.stack([first, rows], axis=1), np.stack([last, rows], axis=1)]).astype(np.int32)
    hull = cv2.convexHull(points).reshape(-1, 2).astype(np.float64)
    s, d = hull[:, 0] + hull[:, 1], hull[:, 0] - hull[:, 1]
    quad = np.array([hull[np.argmin(s)], hull[np.argmax(d)], hull[np.argmax(s)], hull[np.argmin(d)]])
    quad += [[0, 0], [1, 0], [1, 1], [0, 1]]  # pixel centres to the outline's outer edges
    image = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    inset = np.abs(quad - image).max(axis=1)
    if inset.max() < MIN_QUAD_INSET * max(w, h):  # the picture fills the image: nothing to undo
        return None
    if cv2.contourArea(quad.astype(np.float32)) < MIN_QUAD_AREA * w * h:
        return None
    # Plain: what lies outside the picture is the background colour (not sky in two corners).
    outside = np.full((h, w), 255, np.uint8)
    outline = np.round(quad - [[0, 0], [1, 0], [1, 1], [0, 1]]).astype(np.int32)
    cv2.fillConvexPoly(outside, outline, 0)
    cv2.polylines(outside, [outline], True, 0, thickness=7)  # the outline's blended pixels, and a hull a little inside it
    if cv2.countNonZero(outside) and cv2.countNonZero(outside & background) < MIN_PLAIN_SHARE * cv2.countNonZero(outside):
        return None
    _, spread = cv2.meanStdDev(gray, mask=outside & background)
    if float(spread[0, 0]) > MAX_FILL_STD:  # sky in two corners is not a fill
        return None
    return quad


def rectified(gray: np.ndarray, quad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The quadrilateral ``quad`` of ``gray`` warped to an upright rectangle (its sides' mean
    lengths), and the homography from the rectangle's pixels to ``gray``'s."""
    tl, tr, br, bl = quad
    width = max(2, round((np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2))
    height = max(2, round((np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2))
    # One pixel in from each side: the outline's pixels are blended with the background.
    target = np.float32([[-1, -1], [width + 1, -1], [width + 1, height + 1], [-1, height + 1]])
    to_gray = cv2.getPerspectiveTransform(target, quad.astype(np.float32))
    view = cv2.warpPerspective(gray, to_gray, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(view), to_gray


def _rounded(hashes: list[WindowHash]) -> list[WindowHash]:
    # Four decimals: window coordinates are stored in Parquet and must not carry float noise.
    if not hashes:
        return []
    coords = round4(np.array([(x.x0, x.y0, x.x1, x.y1) for x in hashes], np.float64)).tolist()
    return [WindowHash(x.window, x.mirrored, *xy, x.phash) for x, xy in zip(hashes, coords)]


def round4(values: np.ndarray) -> np.ndarray:
    """``round(v, 4)`` of every value, the same floats Python's round gives, at numpy's speed
    (a fingerprint rounds some 80 values, and Python's round is slow per value). numpy's own
    rounding (scale, rint, unscale) agrees with it except where the scaled value is within
    rounding error of a half (0.00035 is a little under one in binary: Python gives 0.0003, numpy
    0.0004); those few are rounded by Python."""
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


def fingerprint_key(max_pixels: int) -> str:
    """Everything a found image's fingerprint rows depend on besides its bytes: the code that makes
    them, the libraries that decode and filter its pixels (and numba, which compiles the kernels),
    and the pixel limit."""
    import numba
    import PIL

    from copyhunt import imaging, kernels, proposals

    h = hashlib.sha256()
    # The method's modules and every kernel module (the kernels decide the bits).
    sources = [Path(__file__)] + [Path(m.__file__) for m in (imaging, proposals)] + sorted(Path(kernels.__file__).parent.glob("*.py"))
    for source in sources:
        h.update(source.read_bytes())
    h.update(json.dumps({"pillow": PIL.__version__, "opencv": cv2.__version__, "numpy": np.__version__, "numba": numba.__version__,
                        "max_pixels": max_pixels},
                        sort_keys=True).encode())
    return h.hexdigest()
