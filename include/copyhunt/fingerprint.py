"""Fingerprints: perceptual hashes of whole images and of windows inside them.

References (customer images) are hashed whole and over sub-windows (a crop of the original then
matches the window it kept), each also mirrored (a flipped copy matches the mirrored hashes).
Found images are hashed whole and over region proposals: grid cells, which is where the pieces of
a collage sit. A match is a pair of windows whose hashes are close; geometric verification then
confirms it (see ``verify``).

A hash is a 64-bit pHash stored as a signed int64 (Spark and Parquet have no unsigned 64-bit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

import imagehash
import numpy as np
from PIL import Image, ImageOps

from copyhunt.imaging import trim_uniform_border

HASH_BITS = 64


class Hasher(Protocol):
    name: str
    bits: int

    def hash(self, image: Image.Image) -> int:
        """A ``bits``-bit hash as a signed int64."""


class PHasher:
    """imagehash's DCT pHash on an 8x8 low-frequency block (64 bits)."""

    name = "phash64"
    bits = HASH_BITS

    def hash(self, image: Image.Image) -> int:
        bits = imagehash.phash(image, hash_size=8).hash.flatten()
        return bits_to_int64(bits)


def bits_to_int64(bits: np.ndarray) -> int:
    value = 0
    for b in bits:
        value = (value << 1) | int(bool(b))
    return value - (1 << 64) if value >= (1 << 63) else value


def int64_to_bits(value: int, nbits: int = HASH_BITS) -> np.ndarray:
    u = value & ((1 << nbits) - 1)
    return np.array([(u >> (nbits - 1 - i)) & 1 for i in range(nbits)], dtype=np.uint8)


def hamming(a: int, b: int) -> int:
    return bin((a ^ b) & 0xFFFFFFFFFFFFFFFF).count("1")


@dataclass(frozen=True)
class Window:
    """A window in relative coordinates (0..1) of the normalised image."""

    name: str
    x0: float
    y0: float
    x1: float
    y1: float

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        return (round(self.x0 * width), round(self.y0 * height), round(self.x1 * width), round(self.y1 * height))


FULL = Window("full", 0.0, 0.0, 1.0, 1.0)
# Reference windows: crops keeping 84% or 71% of each side (or all of one side), anchored at the
# corners, edges and centre. Crops that change the aspect ratio need the rectangular ones.
REFERENCE_CROP_SIDES = (1.0, 0.84, 0.71)
# Query proposals: collage grids. Cells are trimmed of gutters before hashing.
QUERY_GRIDS = ((1, 2), (2, 1), (2, 2), (3, 3))


def reference_windows() -> list[Window]:
    windows = [FULL]
    for sx in REFERENCE_CROP_SIDES:
        for sy in REFERENCE_CROP_SIDES:
            if sx == sy == 1.0:
                continue
            xs = (0.0,) if sx == 1.0 else (0.0, 0.5, 1.0)
            ys = (0.0,) if sy == 1.0 else (0.0, 0.5, 1.0)
            for iy, fy in enumerate(ys):
                for ix, fx in enumerate(xs):
                    x0, y0 = (1 - sx) * fx, (1 - sy) * fy
                    windows.append(Window(f"crop{int(sx * 100)}x{int(sy * 100)}-{iy}{ix}", x0, y0, x0 + sx, y0 + sy))
    return windows


def query_windows() -> list[Window]:
    windows = [FULL]
    for rows, cols in QUERY_GRIDS:
        for r in range(rows):
            for c in range(cols):
                windows.append(Window(f"grid{rows}x{cols}-{r}{c}", c / cols, r / rows, (c + 1) / cols, (r + 1) / rows))
    return windows


@dataclass(frozen=True)
class WindowHash:
    window: str
    mirrored: bool
    x0: float
    y0: float
    x1: float
    y1: float
    phash: int


MIN_WINDOW_PX = 24  # below this a pHash describes blur, not content


def hash_windows(image: Image.Image, windows: Iterable[Window], hasher: Hasher, mirror: bool, trim_cells: bool = False) -> Iterator[WindowHash]:
    """Hash each window of ``image`` (and of its mirror image when ``mirror``)."""
    w, h = image.size
    variants = [(False, image)]
    if mirror:
        variants.append((True, ImageOps.mirror(image)))
    for mirrored, im in variants:
        for win in windows:
            box = win.box(w, h)
            if box[2] - box[0] < MIN_WINDOW_PX or box[3] - box[1] < MIN_WINDOW_PX:
                continue
            crop = im if win is FULL else im.crop(box)
            if trim_cells and win is not FULL:
                crop = trim_uniform_border(crop)
            # Coordinates always refer to the unmirrored image, so regions can be drawn later.
            x0, x1 = (1 - win.x1, 1 - win.x0) if mirrored else (win.x0, win.x1)
            yield WindowHash(win.name, mirrored, x0, win.y0, x1, win.y1, hasher.hash(crop))


def reference_hashes(image: Image.Image, hasher: Hasher | None = None) -> list[WindowHash]:
    return list(hash_windows(image, reference_windows(), hasher or PHasher(), mirror=True))


def query_hashes(image: Image.Image, hasher: Hasher | None = None) -> list[WindowHash]:
    return list(hash_windows(image, query_windows(), hasher or PHasher(), mirror=False, trim_cells=True))
