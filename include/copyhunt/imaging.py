"""Safe image decoding and normalisation, shared by references and crawled images.

Every image passes through ``load_normalised``: the type is decided by magic bytes, the pixel
count is checked from the header before any decode (decompression-bomb guard), JPEGs are decoded
at reduced size with the DCT draft mode, EXIF orientation is applied, every colour mode (palette,
alpha, CMYK, 16-bit, float) becomes RGB over white, and uniform borders (padding) are trimmed.
Failures raise ``BadImage`` with a short machine reason, so callers count and report them.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps

# Two guards against decompression bombs: our own check of the header's size against the
# configured limit, before any decode; and Pillow's, whose warning (it only warns between its
# limit and twice that) is turned into an error wherever an image is opened. Pillow's limit is
# the default one, so a configured limit above 64 Mpx is capped by it.
PILLOW_MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = PILLOW_MAX_PIXELS

MAGIC = [
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
]
WORKING_SIZE = 512  # decode no larger than needed: hashes use 32-64 px, verification ~512 px
# Border pixels within this distance (0-255, max over channels) of the corner colour count as padding.
BORDER_TOLERANCE = 18
# Padding is near-black or near-white (or grey-white, like a page). A coloured or mid-grey border
# is more likely sky, wall or studio backdrop, part of the photo: trimming it would make a copy
# and its original hash differently.
PAD_DARK, PAD_LIGHT = 45, 210
# Smaller than this on a side (after orientation and trimming) there is nothing to recognise: a
# tracking pixel, a spacer, an icon.
MIN_SIDE = 16
# Longer than this many times its short side it is a banner, a rule or a sprite strip, not a photo.
MAX_ASPECT = 8.0
DRAFT_SLACK = 0.7


class BadImage(ValueError):
    """An image that cannot be used; ``reason`` is a short machine-readable cause."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def sniff_format(data: bytes) -> str | None:
    """The image format from magic bytes, or None if the bytes are not an image we read."""
    for magic, name in MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def probe(data: bytes, max_pixels: int) -> ImageInfo:
    """Format and size from the header only; raises BadImage for non-images and bombs."""
    fmt = sniff_format(data)
    if fmt is None:
        raise BadImage("not-an-image", "magic bytes match no supported image format")
    with _pil_errors(), _open_header(data, max_pixels) as im:
        width, height = im.size
    return ImageInfo(fmt, width, height)


def _open_header(data: bytes, max_pixels: int) -> Image.Image:
    """The image opened (header parsed, pixels not decoded) and its size checked against the
    bomb limit. Call it inside ``_pil_errors`` (Pillow's bomb warning must be an error)."""
    try:
        im = Image.open(io.BytesIO(data))
        width, height = im.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage("decompression-bomb", str(exc)[:200]) from None
    except Exception as exc:  # PIL raises many types for corrupt headers
        raise BadImage("corrupt-image", type(exc).__name__) from None
    if width <= 0 or height <= 0:
        raise BadImage("corrupt-image", "zero size")
    if width * height > max_pixels:
        raise BadImage("decompression-bomb", f"{width}x{height} exceeds {max_pixels} pixels")
    return im


def check_shape(width: int, height: int) -> None:
    """Raise BadImage for images too small or too elongated to carry a photo."""
    if min(width, height) < MIN_SIDE:
        raise BadImage("too-small", f"{width}x{height} is under {MIN_SIDE} px on a side")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise BadImage("extreme-aspect", f"{width}x{height} is more than {MAX_ASPECT:g}:1")


@contextmanager
def _pil_errors() -> Iterator[None]:
    """Pillow's failures as BadImage: its bomb warning (an error here) and limit as
    ``decompression-bomb``, anything else it raises on corrupt or truncated data as ``corrupt-image``.
    A BadImage raised inside passes through."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except BadImage:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage("decompression-bomb", str(exc)[:200]) from None
    except Exception as exc:  # PIL raises many types for corrupt and truncated data
        raise BadImage("corrupt-image", f"{type(exc).__name__}: {exc}"[:200]) from None


def _decode_first_frame(im: Image.Image, draft_mode: str, draft_size: tuple[int, int] | None) -> Image.Image:
    """Decode an opened image (inside ``_pil_errors``): the first frame, EXIF orientation applied."""
    if im.format == "JPEG" and draft_size and im.mode in ("RGB", "L"):
        # DCT scaling: decode at 1/2, 1/4 or 1/8 size directly, far cheaper than a resize.
        im.draft(draft_mode, draft_size)
    im.load()  # an animated GIF, PNG or WebP loads its first frame
    ImageOps.exif_transpose(im, in_place=True)
    return im


def _open_decoded(data: bytes, draft_mode: str, draft_size: tuple[int, int] | None) -> Image.Image:
    """Decode the first frame, EXIF orientation applied; PIL's bomb warning is an error."""
    with _pil_errors():
        return _decode_first_frame(Image.open(io.BytesIO(data)), draft_mode, draft_size)


def _open_gray_draft(data: bytes, max_pixels: int, working_size: int) -> tuple[Image.Image, int]:
    """``probe``, ``check_shape`` and ``_open_decoded`` in one pass over the header: parsing a
    JPEG header is a good share of decoding one at a fraction of its size. Returns the decoded
    image and the long side of the original."""
    if sniff_format(data) is None:
        raise BadImage("not-an-image", "magic bytes match no supported image format")
    with _pil_errors():
        im = _open_header(data, max_pixels)
        width, height = im.size
        check_shape(width, height)
        long_side = max(width, height)
        # Let the DCT scaling go down to 70% of the working size: decoding at 1/4 instead of 1/2
        # of a megapixel JPEG saves more than the slightly smaller image costs in precision.
        scale = min(1.0, DRAFT_SLACK * working_size / long_side)
        # All the data in one call to the decoder, rather than in Pillow's 64 KB blocks: a JPEG
        # decode that runs out of data suspends and is resumed from Python (the data is in
        # memory already).
        im.decodermaxblock = max(len(data), ImageFile.MAXBLOCK)
        _decode_first_frame(im, "L", (max(1, int(width * scale)), max(1, int(height * scale))))
    return im, long_side


def load_gray(data: bytes, max_pixels: int = 64_000_000, working_size: int = WORKING_SIZE, trim: bool = True) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The image as a grey uint8 array of at most ``working_size`` px on its long side, padding
    trimmed, and the box it keeps of the (oriented) original, relative 0..1.

    The cheap path used for fingerprints and verification: a JPEG is decoded straight to grey at
    the smallest DCT scale that still covers ``working_size``.
    """
    im, long_side = _open_gray_draft(data, max_pixels, working_size)
    gray = np.asarray(im) if im.mode == "L" else np.asarray(to_rgb(im).convert("L"))
    h, w = gray.shape
    if max(h, w) > working_size:
        s = working_size / max(h, w)
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    box = (0.0, 0.0, 1.0, 1.0)
    if trim:  # at working size: cheap, and padding is many pixels wide or it does not matter
        full_h, full_w = gray.shape
        content = content_box(gray)
        if content is not None:
            l, t, r, b = content
            box = (l / full_w, t / full_h, r / full_w, b / full_h)
            gray = gray[t:b, l:r]
            to_original = long_side / max(full_w, full_h)
            check_shape(round((r - l) * to_original), round((b - t) * to_original))
    return np.ascontiguousarray(gray), tuple(round(v, 4) for v in box)  # type: ignore[return-value]


def load_normalised(data: bytes, max_pixels: int = 64_000_000, working_size: int = WORKING_SIZE, trim: bool = True) -> Image.Image:
    """Decode ``data`` into an RGB image of at most ~``working_size`` px on its long side."""
    return load_normalised_with_box(data, max_pixels, working_size, trim)[0]


def load_normalised_with_box(
    data: bytes, max_pixels: int = 64_000_000, working_size: int = WORKING_SIZE, trim: bool = True
) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """The normalised image and the box it keeps of the (oriented) original, relative 0..1."""
    probe(data, max_pixels)
    im = _open_decoded(data, "RGB", (working_size, working_size))
    check_shape(*im.size)
    try:
        rgb = to_rgb(im)
    except Exception as exc:
        raise BadImage("corrupt-image", f"{type(exc).__name__}: {exc}"[:200]) from None
    box = (0.0, 0.0, 1.0, 1.0)
    if trim:
        full_w, full_h = rgb.size
        content = content_box(rgb)
        if content is not None:
            l, t, r, b = content
            box = (l / full_w, t / full_h, r / full_w, b / full_h)
            rgb = rgb.crop(content)
    if max(rgb.size) > working_size:
        rgb.thumbnail((working_size, working_size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return rgb, tuple(round(v, 4) for v in box)  # type: ignore[return-value]


def half_size(gray: np.ndarray) -> np.ndarray:
    """A grey image at half size, each pixel the mean of a 2x2 block; an odd last row or column
    is dropped. Exactly half, so that a pixel of the result maps to twice its coordinates: and at a
    whole factor OpenCV's area resize takes a fast path, much faster than at the factor an odd
    size gives."""
    h, w = gray.shape
    return cv2.resize(gray[: h // 2 * 2, : w // 2 * 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to RGB; transparency is composited over white (how pages show it)."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode != "RGB":
        return im.convert("RGB")
    return im


def trim_uniform_border(im: Image.Image, tolerance: int = BORDER_TOLERANCE, keep_min: float = 0.2) -> Image.Image:
    """Remove padding: rows and columns at the edges that match the corner colour."""
    box = content_box(im, tolerance, keep_min)
    return im if box is None else im.crop(box)


def content_box(im: Image.Image | np.ndarray, tolerance: int = BORDER_TOLERANCE, keep_min: float = 0.2) -> tuple[int, int, int, int] | None:
    """The box inside uniform padding, or None when there is no padding to remove.

    Gives up rather than keep less than ``keep_min`` of either side, so a mostly uniform photo
    (sky, studio backdrop) is not trimmed to nothing.
    """
    arr = np.asarray(im)
    h, w = arr.shape[:2]
    if h < 8 or w < 8:
        return None
    if arr.ndim == 2:  # grey: one cheap uint8 pass (this runs on every collage cell)
        corners = sorted((int(arr[0, 0]), int(arr[0, -1]), int(arr[-1, 0]), int(arr[-1, -1])))
        colour = (corners[1] + corners[2]) / 2
        if PAD_DARK < colour < PAD_LIGHT:
            return None
        diff = cv2.inRange(arr, max(0.0, colour - tolerance), min(255.0, colour + tolerance)) == 0  # content, not padding
    else:
        colour = np.median(np.stack([arr[0, 0], arr[0, -1], arr[-1, 0], arr[-1, -1]]).astype(np.float32), axis=0)
        if not (colour.max() <= PAD_DARK or colour.min() >= PAD_LIGHT):
            return None
        diff = np.abs(arr.astype(np.int16) - colour).max(axis=2) > tolerance
    rows = np.flatnonzero(np.count_nonzero(diff, axis=1) > 0.01 * w)
    cols = np.flatnonzero(np.count_nonzero(diff, axis=0) > 0.01 * h)
    if rows.size == 0 or cols.size == 0:
        return None
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if (bottom - top) < keep_min * h or (right - left) < keep_min * w:
        return None
    if (top, bottom, left, right) == (0, h, 0, w):
        return None
    return (int(left), int(top), int(right), int(bottom))
