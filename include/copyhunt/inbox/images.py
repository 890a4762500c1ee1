"""Images for the inbox, re-encoded on the server before they reach a browser.

Found images are web content: their bytes may be anything (an SVG with script, HTML that claims to
be a JPEG, a decompression bomb). The inbox never serves them as stored; it decodes them with Pillow
under the pixel limit, applies the EXIF orientation (match regions are given in the oriented
image), shrinks them, and sends a fresh JPEG. Rendered images are kept in a small LRU cache keyed by
content hash and size, so a page of thumbnails is decoded once.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from threading import Lock

from PIL import Image, ImageOps

from copyhunt.blobs import LocalBlobStore

__all__ = ["SIZES", "RenderedImages"]

SIZES = {"thumb": 240, "full": 1200}  # longest side in px, at most
# Small images are scaled up to this long side for the side-by-side view, so that the page's CSS only
# ever shrinks images (max-width/max-height keep the aspect ratio, and the region overlay with it).
MIN_FULL_PX = 800
JPEG_QUALITY = 85
CACHE_ENTRIES = 256  # at most ~256 x 150 kB


class RenderedImages:
    """Blob -> browser-safe JPEG at one of ``SIZES``; None when missing or not decodable."""

    def __init__(self, blob_root, max_pixels: int):
        self.store = LocalBlobStore(blob_root)
        self.max_pixels = max_pixels
        self._cache: OrderedDict[tuple[str, str], bytes | None] = OrderedDict()
        self._lock = Lock()

    def available(self, sha256: str | None) -> bool:
        if not sha256:
            return False
        try:
            return self.store.exists(sha256)
        except ValueError:  # not a sha256
            return False

    def jpeg(self, sha256: str | None, size: str) -> bytes | None:
        if size not in SIZES or not self.available(sha256):
            return None
        assert sha256 is not None
        key = (sha256, size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            data = self.store.get(sha256)
        except (KeyError, ValueError, OSError):
            return None
        rendered = render_jpeg(data, SIZES[size], self.max_pixels, MIN_FULL_PX if size == "full" else 0)
        with self._lock:
            self._cache[key] = rendered
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return rendered


def render_jpeg(data: bytes, max_px: int, max_pixels: int, min_px: int = 0) -> bytes | None:
    """A JPEG of at most ``max_px`` (and, scaled up if needed, at least ``min_px``) on its long side."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > max_pixels:
                return None
            im.draft("RGB", (max_px, max_px))
            out_im = ImageOps.exif_transpose(im)
            out_im.thumbnail((max_px, max_px))
            long_side = max(out_im.size)
            if 0 < long_side < min_px:
                scale = min_px / long_side
                out_im = out_im.resize((max(1, round(out_im.width * scale)), max(1, round(out_im.height * scale))), Image.LANCZOS)
            if out_im.mode in ("RGBA", "LA", "P", "PA"):
                rgba = out_im.convert("RGBA")
                out_im = Image.new("RGB", rgba.size, (255, 255, 255))
                out_im.paste(rgba, mask=rgba.getchannel("A"))
            elif out_im.mode != "RGB":
                out_im = out_im.convert("RGB")
            buf = io.BytesIO()
            out_im.save(buf, "JPEG", quality=JPEG_QUALITY)
            return buf.getvalue()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
