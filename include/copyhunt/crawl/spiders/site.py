"""The site spider: start at the seeds, record pages, request their images, follow their links.

Deliberately thin. What to follow is decided by CrawlPolicyMiddleware, what is safe to fetch by
SafetyMiddleware, what the HTML contains by pure functions (pages.py, images.py), and storage
and validation by the output pipeline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import scrapy
from scrapy.http import HtmlResponse, Response
from twisted.python.failure import Failure

from copyhunt.crawl.images import discover_images
from copyhunt.crawl.items import ErrorItem, ImageFetchItem, ImageRefItem, PageItem, classify_exception, http_error_reason
from copyhunt.crawl.middlewares import META_KIND, META_URL
from copyhunt.crawl.pages import extract_links
from copyhunt.crawl.urls import canonical_url


class SiteSpider(scrapy.Spider):
    name = "site"

    def __init__(self, seeds: Iterable[str] = (), **kwargs: Any):
        super().__init__(**kwargs)
        seeds = [s.strip() for s in seeds if s and s.strip()]
        self.bad_seeds = [s for s in seeds if canonical_url(s) is None]
        self.seeds = list(dict.fromkeys(u for s in seeds if (u := canonical_url(s)) is not None))

    async def start(self) -> AsyncIterator[Any]:
        for seed in self.bad_seeds:
            yield ErrorItem(seed, "bad-url", "not an absolute http(s) URL")
        for url in self.seeds:
            yield self.page_request(url)

    # dont_filter: CrawlPolicyMiddleware dedupes by (kind, canonical URL); Scrapy's filter would
    # also drop a page whose URL was first seen as an image, and vice versa.
    def page_request(self, url: str) -> scrapy.Request:
        return scrapy.Request(url, callback=self.parse, errback=self.on_error, dont_filter=True, meta={META_KIND: "page", META_URL: url})

    def image_request(self, url: str) -> scrapy.Request:
        meta = {META_KIND: "image", META_URL: url, "download_maxsize": self.settings.getint("COPYHUNT_MAX_IMAGE_BYTES")}
        return scrapy.Request(url, callback=self.parse_image, errback=self.on_error, dont_filter=True, meta=meta)

    def parse(self, response: Response) -> Iterator[Any]:
        url = response.meta[META_URL]
        if not 200 <= response.status < 300:
            yield ErrorItem(url, http_error_reason(response.status), response.url)
            return
        if not isinstance(response, HtmlResponse):
            yield ErrorItem(url, "not-html", response.headers.get(b"Content-Type", b"").decode("latin-1"))
            return
        doc = response.selector.root  # parsed once by Scrapy, shared by every extractor below
        yield PageItem.from_response(response, url, doc)
        for ref in discover_images(doc, response.url):
            yield ImageRefItem(page_url=url, image_url=ref.url, alt=ref.alt, discovered_via=ref.discovered_via)
            yield self.image_request(ref.url)
        for link in extract_links(doc, response.url):
            yield self.page_request(link)

    def parse_image(self, response: Response) -> Iterator[Any]:
        url = response.meta[META_URL]
        if not 200 <= response.status < 300:
            yield ErrorItem(url, http_error_reason(response.status), response.url)
            return
        yield ImageFetchItem(image_url=url, final_url=response.url, body=response.body)

    def on_error(self, failure: Failure) -> Iterator[ErrorItem]:
        request = failure.request  # type: ignore[attr-defined]  # set by Scrapy for errbacks
        url = request.meta.get(META_URL, request.url)
        reason, detail = classify_exception(failure.value)
        if request.url != url:  # failed on a redirect hop: say which
            detail = f"{detail} (at {request.url})"
        yield ErrorItem(url, reason, detail)
