"""The output pipeline: store evidence and images in the blob store, collect the rows.

Pages' HTML and accepted images go to ``LocalBlobStore(settings.blob_root)`` keyed by sha256.
Images are judged by :func:`copyhunt.crawl.images.inspect_image` (magic bytes, header-only size,
byte and pixel limits) before anything is stored; an image the server reported unchanged (304)
reuses the blob of the earlier download. Rows go into the run's
:class:`copyhunt.crawl.results.CrawlResults` (shared by every spider of the run; a crawl is bounded
by its per-domain page budget, so they fit in memory). ``process.py`` writes the tables once all
spiders are done; a spider started on its own (``scrapy crawl``) writes them when it closes.

Blob writes (mkdir, write, fsync, rename) happen in a helper process
(:class:`copyhunt.crawl.blobwriter.BlobWriter`), so the event loop keeps downloading while the
disk works and shares its GIL with no thread; the digest is computed up front, and the tables are
written only after every write has finished. A blob that could not be written is reported
(``blob-write-failed``) and its rows lose their ``sha256``, so no row points at a missing blob.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from copyhunt.blobs import LocalBlobStore
from copyhunt.crawl.blobwriter import BlobWriter
from copyhunt.crawl.images import inspect_image
from copyhunt.crawl.items import ErrorItem, ImageFetchItem, PageItem
from copyhunt.crawl.results import CrawlRun, FetchedImage, ImageRef

if TYPE_CHECKING:
    from typing_extensions import Self

    from scrapy import Spider
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

ITEMS_STAT = "item_scraped_count"  # Scrapy's name; counted here, not from its per-item signal (copyhunt.crawl.extensions)


class CrawlOutputPipeline:
    def __init__(self, *, run: CrawlRun, out_dir: Path, blob_root: Path, max_image_bytes: int, max_image_pixels: int, owns_run: bool = False,
                 stats: Any = None):
        self.run = run
        self.stats = stats  # Scrapy's, if any: counts items (see copyhunt.crawl.extensions)
        self.results = run.results
        self.out_dir = Path(out_dir)
        self.blobs = BlobWriter(LocalBlobStore(blob_root))
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self.owns_run = owns_run

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        s = crawler.settings
        out_dir = s.get("COPYHUNT_OUT_DIR")
        blob_root = s.get("COPYHUNT_BLOB_ROOT")
        if not out_dir or not blob_root:
            raise ValueError("COPYHUNT_OUT_DIR and COPYHUNT_BLOB_ROOT must be set")
        spider = crawler.spider
        run = getattr(spider, "crawl_run", None)
        return cls(
            run=run if run is not None else CrawlRun(),
            out_dir=Path(out_dir),
            blob_root=Path(blob_root),
            max_image_bytes=s.getint("COPYHUNT_MAX_IMAGE_BYTES"),
            max_image_pixels=s.getint("COPYHUNT_MAX_IMAGE_PIXELS"),
            owns_run=run is None or bool(getattr(spider, "owns_run", False)),
            stats=crawler.stats,
        )

    def process_item(self, item: Any) -> Any:
        if self.stats is not None:
            self.stats.inc_value(ITEMS_STAT)
        if isinstance(item, PageItem):
            self._page(item)
        elif isinstance(item, ImageFetchItem):
            self._image(item)
        elif isinstance(item, ErrorItem):
            self.results.add_error(item.url, item.reason, item.detail)
        return item

    def _page(self, item: PageItem) -> None:
        if item.url in self.results.pages:
            return
        row = {k: v for k, v in vars(item).items() if k not in ("body", "images")}
        row["html_sha256"] = self.blobs.put(item.body)
        self.results.add_page(row)
        for ref in item.images:
            self.results.add_ref(ImageRef(item.url, ref.url, ref.alt, ref.discovered_via))

    def _image(self, item: ImageFetchItem) -> None:
        if item.image_url in self.results.fetched:  # the policy requests each image once; be safe anyway
            return
        earlier = item.not_modified
        if earlier is not None:
            self.results.add_image(
                item.image_url,
                FetchedImage(earlier.blob_sha256, earlier.bytes, earlier.width, earlier.height, earlier.format,
                             item.etag or earlier.etag, item.last_modified or earlier.last_modified, not_modified=True,
                             final_url=item.final_url),
            )
            return
        info = inspect_image(item.body, max_pixels=self.max_image_pixels, max_bytes=self.max_image_bytes)
        sha = None
        if info.ok:
            sha = self.blobs.put(item.body)
        else:
            detail = info.detail if item.final_url == item.image_url else f"{info.detail} (at {item.final_url})"
            self.results.add_error(item.image_url, info.error or "", detail)
        self.results.add_image(
            item.image_url,
            FetchedImage(sha, info.bytes, info.width, info.height, info.format,
                         item.etag if sha else None, item.last_modified if sha else None, not_modified=False,
                         final_url=item.final_url),
        )

    def close_spider(self, spider: Spider | None = None) -> None:
        failed = self.blobs.close()
        if failed:
            logger.error("%d blobs could not be written; their rows are kept without a sha256", len(failed))
            self.results.drop_blobs(failed)
        if self.owns_run:
            self.results.write(self.out_dir)
