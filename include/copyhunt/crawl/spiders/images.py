"""The image fetcher: downloads the images a page crawler in another process sends it.

Runs in the child process of :mod:`copyhunt.crawl.imagefetch`. Its requests come from stdin
(``URL<TAB>REFERER`` lines) rather than from pages, and go through the same middlewares and
pipeline as the site spider's image requests; it follows nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from scrapy import signals

from copyhunt.crawl.imagefetch import stdin_requests
from copyhunt.failpoints import failpoint
from copyhunt.crawl.results import CrawlRun
from copyhunt.crawl.spiders.site import SiteSpider


class ImageFetcherSpider(SiteSpider):
    name = "images"

    def __init__(self, crawl_run: CrawlRun | None = None, source: AsyncIterator[tuple[str, str]] | None = None, **kwargs: Any):
        super().__init__((), crawl_run, **kwargs)
        self.source = source

    async def start(self) -> AsyncIterator[Any]:
        source = self.source if self.source is not None else stdin_requests()
        async for url, referer in source:
            failpoint("crawl.image_fetcher", "request")  # tests: the fetcher dies mid-run
            request = self.image_request(url)
            if referer:
                # As a browser would send it from the page; some image hosts refuse hotlinks without.
                request.headers[b"Referer"] = referer
            yield request
            # Take the next one only when the downloader has room: a backlog is better left in the
            # pipe, where the page crawler sees it and fetches the overflow itself.
            engine = self.crawler.engine
            if engine is not None and engine.needs_backout():
                await self.crawler.signals.wait_for(signals.scheduler_empty)
