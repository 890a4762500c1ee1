"""Library thumbnails: a small JPEG of each registered image, made when it is uploaded.

A thumbnail's place follows from the original's content hash (``thumbs/ab/<sha256>-240.jpg``
under the blob root), so it needs no column of its own and two customers with the same bytes share
one. ``registry.add_image`` makes it; ``ensure`` makes a missing one (an image registered before
thumbnails existed) when it is first asked for, and ``backfill`` makes them all; both are
idempotent, and every write is atomic. The JPEG is encoded here by Pillow from the decoded pixels,
never the uploaded bytes themselves, so what a browser receives is always a fresh, plain JPEG.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

from PIL import Image, ImageOps

from copyhunt.blobs import LocalBlobStore, atomic_write_bytes

__all__ = ["THUMB_PX", "Thumbnails", "render_thumbnail"]

THUMB_PX = 240  # longest side; the library grid shows them at up to 200 px wide
JPEG_QUALITY = 82


def render_jpeg(data: bytes, max_px: int, max_pixels: int, min_px: int = 0, quality: int = JPEG_QUALITY) -> bytes | None:
    """A JPEG of at most ``max_px`` (and, scaled up if needed, at least ``min_px``) on its long side,
    upright (EXIF orientation applied), on white where the original is transparent; None for bytes
    that do not decode within ``max_pixels``. The inbox's previews and the library's thumbnails."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > max_pixels:
                return None
            im.draft("RGB", (max_px, max_px))  # JPEG: decode at a fraction of the size
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
            out_im.save(buf, "JPEG", quality=quality)
            return buf.getvalue()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def render_thumbnail(data: bytes, max_pixels: int, max_px: int = THUMB_PX) -> bytes | None:
    """The library's thumbnail: a JPEG of at most ``max_px`` on its long side (see render_jpeg)."""
    return render_jpeg(data, max_px, max_pixels)


class Thumbnails:
    """The thumbnails beside a blob store: ``path``, ``make`` (from bytes), ``ensure`` (from the blob)."""

    def __init__(self, blob_root: Path | str, max_pixels: int):
        self.blobs = LocalBlobStore(blob_root)
        self.root = Path(blob_root) / "thumbs"
        self.max_pixels = max_pixels

    def path(self, sha256: str) -> Path:
        self.blobs.path(sha256)  # refuses anything that is not a sha256 hex digest
        return self.root / sha256[:2] / f"{sha256}-{THUMB_PX}.jpg"

    def make(self, sha256: str, data: bytes) -> Path | None:
        """The thumbnail of ``data`` (whose hash is ``sha256``), made unless it exists."""
        target = self.path(sha256)
        if target.exists():
            return target
        rendered = render_thumbnail(data, self.max_pixels)
        if rendered is None:
            return None
        atomic_write_bytes(target, rendered)
        return target

    def ensure(self, sha256: str) -> Path | None:
        """The thumbnail of the blob ``sha256``, made from the blob if it is missing; None when
        neither exists or the blob does not decode."""
        target = self.path(sha256)
        if target.exists():
            return target
        try:
            data = self.blobs.get(sha256)
        except KeyError:
            return None
        return self.make(sha256, data)

    def backfill(self, sha256s: Iterable[str]) -> int:
        """Make the missing thumbnails of these blobs; the number made (0 on a second run)."""
        made = 0
        for sha in sorted(set(sha256s)):
            if not self.path(sha).exists() and self.ensure(sha) is not None:
                made += 1
        return made
