"""Images for the inbox, re-encoded on the server before they reach a browser.

Found images are web content: their bytes may be anything (an SVG with script, HTML that claims to
be a JPEG, a decompression bomb). The inbox never serves them as stored; it decodes them with Pillow
under the pixel limit, applies the EXIF orientation (match regions are given in the oriented
image), shrinks them, and sends a fresh JPEG. Rendered images are kept in a small LRU cache keyed by
content hash and size, so a page of thumbnails is decoded once.
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock

from copyhunt.blobs import LocalBlobStore
from copyhunt.thumbnails import render_jpeg

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
        rendered = render_jpeg(data, SIZES[size], self.max_pixels, MIN_FULL_PX if size == "full" else 0, JPEG_QUALITY)
        with self._lock:
            self._cache[key] = rendered
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return rendered
