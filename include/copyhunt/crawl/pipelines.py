"""The output pipeline: store evidence and images in the blob store, write the tables at close.

Pages' HTML and accepted images go to ``LocalBlobStore(settings.blob_root)`` keyed by sha256.
Images are judged by :func:`copyhunt.crawl.images.inspect_image` (magic bytes, header-only size,
byte and pixel limits) before anything is stored. Rows are kept in memory (a crawl is bounded by
its per-domain page budget) and written once, sorted, when the spider closes; see
:mod:`copyhunt.crawl.outputs`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from copyhunt.blobs import LocalBlobStore
from copyhunt.crawl.images import ImageInfo, inspect_image
from copyhunt.crawl.items import ErrorItem, ImageFetchItem, ImageRefItem, PageItem
from copyhunt.crawl.outputs import write_table

if TYPE_CHECKING:
    from typing_extensions import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class CrawlOutputPipeline:
    def __init__(self, *, out_dir: Path, blob_root: Path, max_image_bytes: int, max_image_pixels: int):
        self.out_dir = Path(out_dir)
        self.blobs = LocalBlobStore(blob_root)
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self.pages: dict[str, dict[str, Any]] = {}
        self.refs: dict[tuple[str, str], ImageRefItem] = {}
        self.fetched: dict[str, tuple[str | None, ImageInfo]] = {}  # image_url -> (blob sha, info)
        self.errors: set[tuple[str, str, str]] = set()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        s = crawler.settings
        out_dir = s.get("COPYHUNT_OUT_DIR")
        blob_root = s.get("COPYHUNT_BLOB_ROOT")
        if not out_dir or not blob_root:
            raise ValueError("COPYHUNT_OUT_DIR and COPYHUNT_BLOB_ROOT must be set")
        return cls(
            out_dir=Path(out_dir),
            blob_root=Path(blob_root),
            max_image_bytes=s.getint("COPYHUNT_MAX_IMAGE_BYTES"),
            max_image_pixels=s.getint("COPYHUNT_MAX_IMAGE_PIXELS"),
        )

    def process_item(self, item: Any) -> Any:
        if isinstance(item, PageItem):
            self._page(item)
        elif isinstance(item, ImageRefItem):
            self.refs.setdefault((item.page_url, item.image_url), item)
        elif isinstance(item, ImageFetchItem):
            self._image(item)
        elif isinstance(item, ErrorItem):
            self.errors.add((item.url, item.reason, item.detail))
        return item

    def _page(self, item: PageItem) -> None:
        row = {k: v for k, v in vars(item).items() if k != "body"}
        row["html_sha256"] = self.blobs.put(item.body)
        self.pages.setdefault(item.url, row)

    def _image(self, item: ImageFetchItem) -> None:
        if item.image_url in self.fetched:  # the policy requests each image once; be safe anyway
            return
        info = inspect_image(item.body, max_pixels=self.max_image_pixels, max_bytes=self.max_image_bytes)
        sha = None
        if info.ok:
            sha = self.blobs.put(item.body)
        else:
            detail = info.detail if item.final_url == item.image_url else f"{info.detail} (at {item.final_url})"
            self.errors.add((item.image_url, info.error or "", detail))
        self.fetched[item.image_url] = (sha, info)

    def image_rows(self) -> list[dict[str, Any]]:
        rows = []
        for (page_url, image_url), ref in self.refs.items():
            sha, info = self.fetched.get(image_url, (None, None))
            rows.append(
                {
                    "image_url": image_url,
                    "page_url": page_url,
                    "blob_sha256": sha,
                    "bytes": info.bytes if info else None,
                    "width": info.width if info else None,
                    "height": info.height if info else None,
                    "format": info.format if info else None,
                    "alt": ref.alt,
                    "discovered_via": ref.discovered_via,
                }
            )
        return rows

    def close_spider(self) -> None:
        write_table(self.out_dir, "pages", self.pages.values())
        write_table(self.out_dir, "images", self.image_rows())
        write_table(self.out_dir, "errors", ({"url": u, "reason": r, "detail": d} for u, r, d in self.errors))
        logger.info(
            "Crawl output in %s: %d pages, %d page-image pairs, %d images stored, %d errors",
            self.out_dir,
            len(self.pages),
            len(self.refs),
            sum(1 for sha, _ in self.fetched.values() if sha),
            len(self.errors),
        )
