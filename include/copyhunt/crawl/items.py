"""What flows from the spider to the output pipeline, and how download failures get a reason.

Items are plain dataclasses (Scrapy handles them through itemadapter). ``reason`` values are short
and machine-readable (``http-404``, ``timeout``, ``robots``, ``blocked:private-address``...);
``detail`` is for humans.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadTimeoutError,
    IgnoreRequest,
    ResponseDataLossError,
)
from twisted.internet import defer, error as txerror

from copyhunt.crawl.images import DiscoveredImage
from copyhunt.crawl.pages import page_meta
from copyhunt.crawl.urls import host_of
from copyhunt.crawl.validators import Validator

if TYPE_CHECKING:
    from lxml import etree
    from scrapy.http import Response


@dataclass
class PageItem:
    url: str  # as requested (canonical); the key images.page_url refers to
    final_url: str  # after redirects
    status: int
    fetched_at: dt.datetime
    domain: str
    title: str | None
    language: str | None
    content_type: str | None
    last_modified: str | None
    date_candidates: str  # JSON list of raw strings
    depth: int
    body: bytes = field(repr=False)  # stored as evidence in the blob store
    # The images the page shows: one item per page rather than one per image keeps the per-item
    # cost of Scrapy's machinery (middleware chain, signals) off the hot path.
    images: list[DiscoveredImage] = field(default_factory=list, repr=False)
    spider: str = "site"
    page_kind: str | None = None  # marketplace: "product" or "listing"
    seller_name: str | None = None
    seller_url: str | None = None
    seller_source: str | None = None

    @classmethod
    def from_response(cls, response: Response, url: str, doc: etree._Element, spider: str = "site") -> PageItem:
        meta = page_meta(doc)

        def header(name: bytes) -> str | None:
            value = response.headers.get(name)
            return value.decode("latin-1") if value is not None else None

        return cls(
            url=url,
            final_url=response.url,
            status=response.status,
            # When we observed the page: a fact of this fetch, not run logic.
            fetched_at=dt.datetime.now(dt.timezone.utc),
            domain=host_of(response.url),
            title=meta.title,
            language=meta.language,
            content_type=header(b"Content-Type"),
            last_modified=header(b"Last-Modified"),
            date_candidates=meta.date_candidates_json,
            depth=int(response.meta.get("depth", 0)),
            body=response.body,
            spider=spider,
        )


@dataclass
class ImageFetchItem:
    image_url: str  # as requested (canonical), the join key with PageItem.images
    final_url: str
    body: bytes = field(repr=False)
    etag: str | None = None
    last_modified: str | None = None
    # Set when the server answered 304 to a conditional request: the earlier download to reuse.
    not_modified: Validator | None = None


@dataclass
class ErrorItem:
    url: str
    reason: str
    detail: str = ""


class BlockedRequest(IgnoreRequest):
    """A request the crawler refused to send (safety rules); ``reason`` goes to errors.parquet."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def classify_exception(exc: BaseException) -> tuple[str, str]:
    """``(reason, detail)`` for an exception that ended a request."""
    detail = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    if isinstance(exc, BlockedRequest):
        return exc.reason, exc.detail
    if isinstance(exc, IgnoreRequest):
        text = str(exc)
        if "robots.txt" in text:
            return "robots", text
        if "max redirections" in text:
            return "too-many-redirects", text
        if "DOWNLOAD_MAXSIZE" in text or "max size" in text:
            return "too-large", text
        return "ignored", text
    if isinstance(exc, (DownloadTimeoutError, txerror.TimeoutError, txerror.TCPTimedOutError)):
        return "timeout", detail
    # Scrapy's handler raises this only when a body outgrows download_maxsize (message optional).
    if isinstance(exc, DownloadCancelledError):
        return "too-large", str(exc) or "body exceeded the download size limit"
    if isinstance(exc, defer.CancelledError):  # e.g. in flight when the crawl was closed
        return "cancelled", detail
    if isinstance(exc, (CannotResolveHostError, txerror.DNSLookupError)):
        return "dns-error", detail
    if isinstance(exc, (DownloadConnectionRefusedError, txerror.ConnectionRefusedError)):
        return "connection-refused", detail
    if isinstance(exc, ResponseDataLossError):
        return "data-loss", detail
    return "download-error", detail


def http_error_reason(status: int) -> str:
    return f"http-{status}"
