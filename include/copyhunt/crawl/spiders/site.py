"""The site spider: start at the seeds, record pages, request their images, follow their links.

Deliberately thin. What to follow is decided by CrawlPolicyMiddleware, what is safe to fetch by
SafetyMiddleware, what the HTML contains by pure functions (pages.py, images.py), and storage
and validation by the output pipeline. The marketplace spider (marketplace.py) is this spider
with listing pagination and sellers on top; both share the run's state (``crawl_run``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import scrapy
from lxml import etree
from scrapy.http import HtmlResponse, Response
from twisted.python.failure import Failure

from copyhunt.crawl.images import discover_images
from copyhunt.crawl.items import ErrorItem, ImageFetchItem, PageItem, classify_exception, http_error_reason
from copyhunt.crawl.middlewares import META_KIND, META_URL, META_VALIDATOR
from copyhunt.crawl.pages import extract_links
from copyhunt.crawl.results import CrawlRun
from copyhunt.crawl.urls import canonical_url
from copyhunt.crawl.validators import clean_validator


class SiteSpider(scrapy.Spider):
    name = "site"

    def __init__(self, seeds: Iterable[str] = (), crawl_run: CrawlRun | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(seeds, str):  # `scrapy crawl site -a seeds=URL,URL`
            seeds = seeds.split(",")
        seeds = [s.strip() for s in seeds if s and s.strip()]
        self.bad_seeds = [s for s in seeds if canonical_url(s) is None]
        self.seeds = list(dict.fromkeys(u for s in seeds if (u := canonical_url(s)) is not None))
        # A spider run alone owns its results and writes them when it closes; process.py shares
        # one CrawlRun between the spiders of a run and writes the tables itself.
        self.owns_run = crawl_run is None
        self.crawl_run = crawl_run if crawl_run is not None else CrawlRun()
        # Pages whose HTML was already seen under another URL: their links are followed once.
        self.seen_bodies: set[bytes] = set()
        # Page URLs requested (or refused for good) so far; kept by CrawlPolicyMiddleware.
        self.seen_pages: set[str] = set()

    async def start(self) -> AsyncIterator[Any]:
        for seed in self.bad_seeds:
            yield ErrorItem(seed, "bad-url", "not an absolute http(s) URL")
        for url in self.seeds:
            yield self.page_request(url)

    # dont_filter: CrawlPolicyMiddleware dedupes by (kind, canonical URL); Scrapy's filter would
    # also drop a page whose URL was first seen as an image, and vice versa.
    #
    # Depth, its priority and the Referer are set here rather than by Scrapy's Depth and Referer
    # middlewares: every spider middleware wraps every object a page yields in one more async
    # generator, and those layers cost more CPU than parsing the page.
    def page_request(self, url: str, parent: Response | None = None, **meta: Any) -> scrapy.Request:
        return self._request(url, parent, self.parse, {META_KIND: "page", META_URL: url, **meta})

    def image_request(self, url: str, parent: Response | None = None) -> scrapy.Request:
        meta = {META_KIND: "image", META_URL: url, "download_maxsize": self._max_image_bytes}
        return self._request(url, parent, self.parse_image, meta)

    def _request(self, url: str, parent: Response | None, callback: Any, meta: dict[str, Any]) -> scrapy.Request:
        depth = parent.meta.get("depth", 0) + 1 if parent is not None else 0
        meta["depth"] = depth
        request = scrapy.Request(url, callback=callback, errback=self.on_error, dont_filter=True, meta=meta, priority=-depth * self._depth_priority)
        if parent is not None and (referer := referer_for(parent.url, url)):
            request.headers[b"Referer"] = referer
        return request

    @functools.cached_property
    def _max_image_bytes(self) -> int:
        return self.settings.getint("COPYHUNT_MAX_IMAGE_BYTES")

    @functools.cached_property
    def _depth_priority(self) -> int:
        return self.settings.getint("DEPTH_PRIORITY")

    def parse(self, response: Response) -> Iterator[Any]:
        url = response.meta[META_URL]
        if not 200 <= response.status < 300:
            yield ErrorItem(url, http_error_reason(response.status), response.url)
            return
        if not isinstance(response, HtmlResponse):
            yield ErrorItem(url, "not-html", response.headers.get(b"Content-Type", b"").decode("latin-1"))
            return
        doc = response.selector.root  # parsed once by Scrapy, shared by every extractor below
        page = self.page_item(response, url, doc)
        page.images = discover_images(doc, response.url)
        yield page
        requested = self.crawl_run.seen_images
        for ref in page.images:
            # Each image once per run (the policy middleware decides; skipping the ones it has
            # already seen here saves their trip through the middleware chain).
            if ref.url not in requested:
                yield self.image_request(ref.url, response)
        digest = hashlib.sha256(response.body).digest()
        if digest in self.seen_bodies:
            # The same HTML under another URL (?page=999 repeating the last page, a session URL):
            # its links were followed already; following them again only feeds a trap.
            if self.crawler.stats is not None:
                self.crawler.stats.inc_value("copyhunt/dropped/duplicate-content")
            return
        self.seen_bodies.add(digest)
        yield from self.follow(response, url, doc)

    def page_item(self, response: Response, url: str, doc: etree._Element) -> PageItem:
        return PageItem.from_response(response, url, doc, spider=self.name)

    def follow(self, response: Response, url: str, doc: etree._Element) -> Iterator[Any]:
        """Requests for the pages this page links to (the policy decides which are made)."""
        for link in extract_links(doc, response.url):
            if link not in self.seen_pages:
                yield self.page_request(link, response)

    def parse_image(self, response: Response) -> Iterator[Any]:
        url = response.meta[META_URL]
        etag = clean_validator(response.headers.get(b"ETag"))
        last_modified = clean_validator(response.headers.get(b"Last-Modified"))
        earlier = response.meta.get(META_VALIDATOR)
        if response.status == 304 and earlier is not None:
            yield ImageFetchItem(image_url=url, final_url=response.url, body=b"", etag=etag, last_modified=last_modified, not_modified=earlier)
            return
        if not 200 <= response.status < 300:
            yield ErrorItem(url, http_error_reason(response.status), response.url)
            return
        yield ImageFetchItem(image_url=url, final_url=response.url, body=response.body, etag=etag, last_modified=last_modified)

    def on_error(self, failure: Failure) -> Iterator[ErrorItem]:
        request = failure.request  # type: ignore[attr-defined]  # set by Scrapy for errbacks
        url = request.meta.get(META_URL, request.url)
        reason, detail = classify_exception(failure.value)
        if request.url != url:  # failed on a redirect hop: say which
            detail = f"{detail} (at {request.url})"
        yield ErrorItem(url, reason, detail)


def referer_for(page_url: str, target_url: str) -> str | None:
    """The Referer a browser sends from ``page_url`` (no-referrer-when-downgrade): the page's URL
    without credentials or fragment, and nothing from an https page to an http URL."""
    page = urlsplit(page_url)
    if page.scheme == "https" and not target_url.startswith("https:"):
        return None
    netloc = page.netloc.rsplit("@", 1)[-1]
    return urlunsplit((page.scheme, netloc, page.path, page.query, ""))

