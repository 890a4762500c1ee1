"""What one crawl run collects, shared by every spider of the run, and written once at its end.

A run may start two spiders at once (the site crawler and the marketplace crawler, each with its
own seeds); they share one :class:`CrawlRun`: the rows collected so far, the image URLs already
requested (so an image shown on a blog and on a marketplace is still fetched once), and the
validators (ETag, Last-Modified) of images stored by earlier runs. The rows become the three output
tables with :meth:`CrawlResults.write`.

No Scrapy here: the pipeline and the spiders fill it, ``process.py`` writes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from copyhunt.crawl.outputs import write_table
from copyhunt.crawl.validators import Validator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchedImage:
    """The outcome of one image download (or of a 304 that reused an earlier download)."""

    blob_sha256: str | None  # None: refused (not an image, too large, bomb...)
    bytes: int | None
    width: int | None
    height: int | None
    format: str | None
    etag: str | None
    last_modified: str | None
    not_modified: bool  # True: the server answered 304 and the stored blob was reused
    final_url: str | None = None  # after redirects


@dataclass(frozen=True)
class ImageRef:
    page_url: str
    image_url: str
    alt: str | None
    discovered_via: str


@dataclass
class CrawlResults:
    pages: dict[str, dict[str, Any]] = field(default_factory=dict)  # url -> pages row
    refs: dict[tuple[str, str], ImageRef] = field(default_factory=dict)  # (page, image) -> ref
    fetched: dict[str, FetchedImage] = field(default_factory=dict)  # image_url -> outcome
    errors: set[tuple[str, str, str]] = field(default_factory=set)  # (url, reason, detail)

    def add_page(self, row: dict[str, Any]) -> None:
        self.pages.setdefault(row["url"], row)

    def add_ref(self, ref: ImageRef) -> None:
        self.refs.setdefault((ref.page_url, ref.image_url), ref)

    def add_image(self, image_url: str, outcome: FetchedImage) -> None:
        self.fetched.setdefault(image_url, outcome)

    def add_error(self, url: str, reason: str, detail: str = "") -> None:
        self.errors.add((url, reason, detail))

    def drop_blobs(self, failed: dict[str, str]) -> None:
        """Forget blobs that could not be stored: their rows lose the sha256 and get an error."""
        for url, row in self.pages.items():
            if row.get("html_sha256") in failed:
                self.add_error(url, "blob-write-failed", failed[row["html_sha256"]])
                row["html_sha256"] = None
        for url, got in list(self.fetched.items()):
            if got.blob_sha256 in failed and not got.not_modified:
                self.add_error(url, "blob-write-failed", failed[got.blob_sha256])
                self.fetched[url] = replace(got, blob_sha256=None, etag=None, last_modified=None)

    def image_rows(self) -> list[dict[str, Any]]:
        rows = []
        for (page_url, image_url), ref in self.refs.items():
            got = self.fetched.get(image_url)
            rows.append(
                {
                    "image_url": image_url,
                    "page_url": page_url,
                    "final_url": got.final_url if got else None,
                    "blob_sha256": got.blob_sha256 if got else None,
                    "bytes": got.bytes if got else None,
                    "width": got.width if got else None,
                    "height": got.height if got else None,
                    "format": got.format if got else None,
                    "alt": ref.alt,
                    "discovered_via": ref.discovered_via,
                    "etag": got.etag if got else None,
                    "last_modified": got.last_modified if got else None,
                    "not_modified": got.not_modified if got else None,
                }
            )
        return rows

    def write(self, out_dir: Path) -> None:
        """Write pages, images and errors tables (sorted, atomic) into ``out_dir``."""
        write_table(out_dir, "pages", self.pages.values())
        write_table(out_dir, "images", self.image_rows())
        write_table(out_dir, "errors", ({"url": u, "reason": r, "detail": d} for u, r, d in self.errors))
        logger.info(
            "Crawl output in %s: %d pages, %d page-image pairs, %d images stored (%d not modified), %d errors",
            out_dir,
            len(self.pages),
            len(self.refs),
            sum(1 for f in self.fetched.values() if f.blob_sha256),
            sum(1 for f in self.fetched.values() if f.not_modified),
            len(self.errors),
        )


@dataclass
class CrawlRun:
    """State shared by the spiders of one run."""

    results: CrawlResults = field(default_factory=CrawlResults)
    seen_images: set[str] = field(default_factory=set)  # image URLs requested (or refused) so far
    validators: dict[str, Validator] = field(default_factory=dict)  # image_url -> earlier download
    # The image fetcher process (copyhunt.crawl.imagefetch.ImageFetcherProcess) image requests
    # are handed to, if the run has one.
    image_fetcher: Any = None
