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
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

# PIL's own bomb check only warns below 2x its limit; we check ourselves before decoding.
Image.MAX_IMAGE_PIXELS = None

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
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Exception as exc:  # PIL raises many types for corrupt headers
        raise BadImage("corrupt-image", type(exc).__name__) from None
    if width <= 0 or height <= 0:
        raise BadImage("corrupt-image", "zero size")
    if width * height > max_pixels:
        raise BadImage("decompression-bomb", f"{width}x{height} exceeds {max_pixels} pixels")
    return ImageInfo(fmt, width, height)


def load_normalised(data: bytes, max_pixels: int = 64_000_000, working_size: int = WORKING_SIZE, trim: bool = True) -> Image.Image:
    """Decode ``data`` into an RGB image of at most ~``working_size`` px on its long side."""
    return load_normalised_with_box(data, max_pixels, working_size, trim)[0]


def load_normalised_with_box(
    data: bytes, max_pixels: int = 64_000_000, working_size: int = WORKING_SIZE, trim: bool = True
) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """The normalised image and the box it keeps of the (oriented) original, relative 0..1."""
    probe(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            if im.format == "JPEG":
                # DCT scaling: decode at 1/2, 1/4 or 1/8 size directly, far cheaper than a resize.
                im.draft("RGB", (working_size, working_size))
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = to_rgb(im)
    except BadImage:
        raise
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


def content_box(im: Image.Image, tolerance: int = BORDER_TOLERANCE, keep_min: float = 0.2) -> tuple[int, int, int, int] | None:
    """The box inside uniform padding, or None when there is no padding to remove.

    Gives up rather than keep less than ``keep_min`` of either side, so a mostly uniform photo
    (sky, studio backdrop) is not trimmed to nothing.
    """
    arr = np.asarray(im, dtype=np.int16)
    h, w = arr.shape[:2]
    if h < 8 or w < 8:
        return None
    corners = np.array([arr[0, 0], arr[0, -1], arr[-1, 0], arr[-1, -1]])
    colour = np.median(corners, axis=0)
    diff = np.abs(arr - colour).max(axis=2) > tolerance  # True where content differs from padding
    rows = np.flatnonzero(diff.mean(axis=1) > 0.01)
    cols = np.flatnonzero(diff.mean(axis=0) > 0.01)
    if rows.size == 0 or cols.size == 0:
        return None
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if (bottom - top) < keep_min * h or (right - left) < keep_min * w:
        return None
    if (top, bottom, left, right) == (0, h, 0, w):
        return None
    return (int(left), int(top), int(right), int(bottom))
