"""Crawler middlewares: the safety guard, polite retries and redirects, and the crawl policy.

The rules they apply are :mod:`copyhunt.crawl.politeness`'s, which the image fetcher
(:mod:`copyhunt.crawl.imageclient`) applies too; these classes connect them to Scrapy.

* :class:`SafetyMiddleware` (downloader) refuses anything but http(s) and any host that is, or
  resolves to, a non-public address (:func:`~copyhunt.crawl.politeness.check_host`), on every
  request including each redirect hop and robots.txt fetches. It also routes every request
  through the configured proxy.
* :class:`BackoffRetryMiddleware` (downloader) replaces Scrapy's RetryMiddleware: it waits
  before a retry, honouring ``Retry-After`` on 429/503 and backing off exponentially otherwise.
* :class:`ConditionalRequestMiddleware` (downloader) turns an image request into a conditional
  one (``If-None-Match`` / ``If-Modified-Since``) when an earlier run stored that image, so an
  unchanged image costs a 304 instead of a download.
* :class:`PoliteRedirectMiddleware` and :class:`PoliteMetaRefreshMiddleware` (downloader):
  Scrapy's redirects, with the targets, the hop limit and the Referer decided by the rules.
* :class:`CrawlPolicyMiddleware` (spider) filters what the spider wants to fetch: page links
  stay inside the seeds' domains, within the depth limit and the per-domain page budget, and
  away from URL traps (including calendars); each page and each image URL is requested once per
  run (images once across all spiders of the run). Its decisions are in :mod:`copyhunt.crawl.urls`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from scrapy import Request
from scrapy.downloadermiddlewares.redirect import MetaRefreshMiddleware, RedirectMiddleware
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.logformatter import LogFormatter
from scrapy.utils.asyncio import sleep
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.response import response_status_message

from copyhunt.crawl.items import ErrorItem
from copyhunt.crawl.politeness import IPAddress, Politeness, Retry, check_host, parse_ip, referer_after_redirect, request_host
from copyhunt.crawl.urls import (
    MAX_PAGES_PER_DATE_PATTERN,
    MAX_URL_LENGTH,
    date_pattern,
    host_of,
    in_scope,
    scope_hosts,
    trap_reason,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

# Request.meta keys shared with the spider.
META_KIND = "copyhunt_kind"  # "page" or "image"
META_URL = "copyhunt_url"  # the canonical URL as first requested (redirects change request.url)
# Pages reached by following a listing's pagination: they do not count against the depth limit.
META_PAGINATION_HOPS = "copyhunt_pagination_hops"
META_VALIDATOR = "copyhunt_validator"  # the earlier download a conditional request revalidates


# ---- downloader middlewares --------------------------------------------------------------------
class SafetyMiddleware:
    """Refuse non-http(s) URLs and non-public hosts; send every request through the proxy.

    Names are resolved through the reactor's resolver, the same cached resolver Scrapy connects
    with, so without a proxy the address checked is the address used (no second lookup for DNS
    rebinding to exploit). With a proxy, a name that does not resolve here is the proxy's to
    resolve (the demo web's ``*.test`` hosts), and the proxy's own lookup is outside our control;
    a name that resolves here to a non-public address is refused either way.
    """

    def __init__(self, *, allow_private: bool, proxy: str = ""):
        self.allow_private = allow_private
        self.proxy = proxy
        self._resolved: dict[str, IPAddress | None] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        rules = Politeness.from_settings(crawler.settings)
        return cls(allow_private=rules.allow_private, proxy=rules.proxy)

    async def process_request(self, request: Request) -> None:
        host = request_host(urlparse_cached(request), request.url)
        if not self.allow_private:
            await self._check_host(host)
        if self.proxy:
            request.meta["proxy"] = self.proxy

    async def _check_host(self, host: str) -> None:
        await check_host(host, proxy=self.proxy, resolve=self._resolve)

    async def _resolve(self, host: str) -> IPAddress | None:
        if host not in self._resolved:
            from twisted.internet import reactor  # the installed one; importing at module top would install the default

            try:
                address = await maybe_deferred_to_future(reactor.resolve(host))  # type: ignore[attr-defined]
                self._resolved[host] = parse_ip(address)
            except Exception:  # DNSLookupError, timeouts: treated as "does not resolve"
                self._resolved[host] = None
        return self._resolved[host]


class BackoffRetryMiddleware(RetryMiddleware):
    """Retries as :class:`~copyhunt.crawl.politeness.Politeness` decides them, waiting first.

    Which statuses and failures are retried, how often and after how long are the rules'; a
    Retry-After longer than COPYHUNT_RETRY_AFTER_MAX is not waited for (the response goes
    through and is reported, ``http-429``, rather than stalling the run), and a Retry-After also
    slows down the whole host's download slot, not only the retried request. Scrapy's
    ``_retry`` builds the new request and keeps its retry statistics.
    """

    def __init__(self, settings: BaseSettings):
        super().__init__(settings)
        self.politeness = Politeness.from_settings(settings)
        self.max_retry_times = self.politeness.retry_times

    async def process_response(self, request: Request, response: Response) -> Request | Response:  # type: ignore[override]
        if request.meta.get("dont_retry", False):
            return response
        decision = self.politeness.retry_after_response(
            request.url, response.status, request.meta.get("retry_times", 0), response.headers.get(b"Retry-After"), now=time.time()
        )
        if decision is None:
            return response
        retry = self._retry(request, response_status_message(response.status))
        if retry is None:
            return response
        self._slow_down(request, decision)
        await sleep(decision.wait)
        return retry

    async def process_exception(self, request: Request, exception: Exception) -> Request | None:  # type: ignore[override]
        if request.meta.get("dont_retry", False) or not isinstance(exception, self.exceptions_to_retry):
            return None
        decision = self.politeness.retry_after_failure(request.meta.get("retry_times", 0))
        retry = self._retry(request, exception) if decision is not None else None
        if decision is not None and retry is not None:
            await sleep(decision.wait)
        return retry

    def _slow_down(self, request: Request, decision: Retry) -> None:
        engine = getattr(self.crawler, "engine", None)
        downloader = getattr(engine, "downloader", None)
        slot = getattr(downloader, "slots", {}).get(request.meta.get("download_slot", ""))
        if slot is not None:
            slot.delay = self.politeness.slowed_delay(slot.delay, decision)


class ConditionalRequestMiddleware:
    """Ask with the validators of an earlier download whether an image changed.

    The validators come from the run's shared state (``spider.crawl_run.validators``, loaded by
    ``process.py`` from the previous day's images table). The spider turns a 304 to a request
    carrying ``meta[META_VALIDATOR]`` into a reuse of the stored blob.
    """

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def process_request(self, request: Request) -> None:
        if request.meta.get(META_KIND) != "image" or META_VALIDATOR in request.meta:
            return None
        run = getattr(self.crawler.spider, "crawl_run", None)
        validator = run.validators.get(request.meta.get(META_URL, request.url)) if run is not None else None
        if validator is None:
            return None
        request.meta[META_VALIDATOR] = validator
        request.headers.update(validator.conditional_headers())
        if self.crawler.stats is not None:
            self.crawler.stats.inc_value("copyhunt/conditional_requests")
        return None


class _PoliteRedirects:
    """What both of Scrapy's redirect middlewares ask the rules: may one more hop be followed,
    and which Referer it carries (:func:`~copyhunt.crawl.politeness.referer_after_redirect`; the
    spiders set the Referer themselves, so Scrapy's RefererMiddleware is not there to ask)."""

    politeness: Politeness

    def _engine_started(self) -> None:
        pass  # Scrapy's check would warn that its RefererMiddleware is missing; it is meant to be

    def handle_referer(self, request: Request, response: Response) -> None:
        referer = request.headers.get(b"Referer")
        if referer is not None and referer_after_redirect(referer.decode("latin-1"), request.url) is None:
            del request.headers[b"Referer"]

    def _redirect(self, redirected: Request, request: Request, reason: Any) -> Request:
        if not self.politeness.may_redirect(request.meta.get("redirect_times", 0)):
            raise self.politeness.too_many_redirects(request.url)
        return super()._redirect(redirected, request, reason)  # type: ignore[misc]


class PoliteRedirectMiddleware(_PoliteRedirects, RedirectMiddleware):
    """Scrapy's RedirectMiddleware following the hops :meth:`Politeness.redirect_target` names."""

    def __init__(self, settings: BaseSettings):
        super().__init__(settings)
        self.politeness = Politeness.from_settings(settings)

    def process_response(self, request: Request, response: Response) -> Request | Response:  # type: ignore[override]
        if request.meta.get("dont_redirect", False) or request.meta.get("handle_httpstatus_all", False) or response.status in {
            *getattr(self.crawler.spider, "handle_httpstatus_list", ()), *request.meta.get("handle_httpstatus_list", ())
        }:
            return response
        target = self.politeness.redirect_target(request.url, response.status, response.headers.get(b"Location"))
        if target is None:
            return response
        if (response.status in (301, 302) and request.method == "POST") or (response.status == 303 and request.method not in ("GET", "HEAD")):
            redirected = self._redirect_request_using_get(request, response, target)
        else:
            redirected = self._build_redirect_request(request, response, url=target)
        return self._redirect(redirected, request, response.status)


class PoliteMetaRefreshMiddleware(_PoliteRedirects, MetaRefreshMiddleware):
    """Scrapy's meta-refresh redirects (pages only), within the same hop limit and Referer rule."""

    def __init__(self, settings: BaseSettings):
        super().__init__(settings)
        self.politeness = Politeness.from_settings(settings)


class CrawlLogFormatter(LogFormatter):
    """Scrapy's messages, minus the per-request and per-item DEBUG lines unless DEBUG is on.

    Scrapy builds those records for every response and item and lets the handler drop them;
    at hundreds of responses a second that is measurable CPU for nothing.
    """

    def __init__(self, debug: bool = False):
        self.debug = debug

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        level = crawler.settings.get("LOG_LEVEL", "DEBUG")
        return cls(debug=(logging.getLevelName(level) if isinstance(level, str) else level) <= logging.DEBUG)

    def crawled(self, request: Request, response: Response, spider: Any) -> Any:
        return super().crawled(request, response, spider) if self.debug else None

    def scraped(self, item: Any, response: Any, spider: Any) -> Any:
        return super().scraped(item, response, spider) if self.debug else None


# ---- spider middleware -------------------------------------------------------------------------
class CrawlPolicyMiddleware:
    """Decide which requests the spider emits are actually made.

    The spiders set ``meta["depth"]`` on the requests they build. Items
    pass through; refused trap URLs become ErrorItems; out-of-scope, too-deep, over-budget and
    repeated requests are dropped quietly (counted in the stats).
    """

    def __init__(self, crawler: Crawler):
        s = crawler.settings
        self.crawler = crawler
        self.budget = s.getint("COPYHUNT_MAX_PAGES_PER_DOMAIN", 500)
        self.depth_limit = s.getint("COPYHUNT_DEPTH_LIMIT", 8)
        self.max_url_length = s.getint("COPYHUNT_MAX_URL_LENGTH", MAX_URL_LENGTH)
        self.max_query_params = s.getint("COPYHUNT_MAX_QUERY_PARAMS", 8)
        self.max_per_date_pattern = s.getint("COPYHUNT_MAX_PAGES_PER_DATE_PATTERN", MAX_PAGES_PER_DATE_PATTERN)
        self.pages_per_host: Counter[str] = Counter()
        self.pages_per_date_pattern: Counter[str] = Counter()
        self.reported_patterns: set[str] = set()
        self._own_seen_pages: set[str] = set()
        self._own_seen_images: set[str] = set()
        self._scope: frozenset[str] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    @property
    def seen_pages(self) -> set[str]:
        # Kept on the spider, which skips links already seen before emitting them.
        seen = getattr(self.crawler.spider, "seen_pages", None)
        return seen if seen is not None else self._own_seen_pages

    @property
    def seen_images(self) -> set[str]:
        # Shared by the spiders of one run, so an image two kinds of site show is fetched once.
        run = getattr(self.crawler.spider, "crawl_run", None)
        return run.seen_images if run is not None else self._own_seen_images

    @property
    def scope(self) -> frozenset[str]:
        if self._scope is None:
            self._scope = scope_hosts(getattr(self.crawler.spider, "seeds", ()))
        return self._scope

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for o in start:
            if (o := self.filter(o)) is not None:
                yield o

    def process_spider_output(self, response: Response | None, result: Iterable[Any]) -> Iterable[Any]:
        handover: list[Request] = []
        for o in result:
            if (o := self.filter(o, response, handover)) is not None:
                yield o
        yield from self.hand_over(handover, response)

    async def process_spider_output_async(self, response: Response | None, result: AsyncIterator[Any]) -> AsyncIterator[Any]:
        handover: list[Request] = []
        async for o in result:
            if (o := self.filter(o, response, handover)) is not None:
                yield o
        for o in self.hand_over(handover, response):
            yield o

    @property
    def image_fetcher(self) -> Any:
        return getattr(getattr(self.crawler.spider, "crawl_run", None), "image_fetcher", None)

    def hand_over(self, requests: list[Request], response: Response | None) -> list[Request]:
        """Send a page's image requests to the image fetcher process in one go, with the page as
        Referer as a browser would send it; returns those it could not take (fetched here)."""
        fetcher = self.image_fetcher
        if fetcher is None or not requests:
            return requests
        referer = response.url if response is not None else None
        queued = fetcher.send_many([(r.meta.get(META_URL, r.url), referer) for r in requests])
        if self.crawler.stats is not None:
            self.crawler.stats.inc_value("copyhunt/images_to_fetcher", sum(queued))
        return [r for r, sent in zip(requests, queued) if not sent]

    def _drop(self, why: str) -> None:
        if self.crawler.stats is not None:
            self.crawler.stats.inc_value(f"copyhunt/dropped/{why}")

    def filter(self, o: Any, response: Response | None = None, handover: list[Request] | None = None) -> Any:
        """The object to pass on (the request, an ErrorItem instead of it, or an item), or None.

        Image requests meant for the image fetcher process are appended to ``handover`` (see
        :meth:`hand_over`) rather than passed on; without a list they are sent at once."""
        if not isinstance(o, Request):
            return o
        kind = o.meta.get(META_KIND)
        url = o.meta.get(META_URL, o.url)
        if kind == "image":
            if url in self.seen_images:
                return None  # each image once per run, however many pages show it
            self.seen_images.add(url)
            if len(url) > self.max_url_length:
                return ErrorItem(url, "trap:url-too-long", f"{len(url)} characters")
            if self.image_fetcher is not None:
                if handover is not None:
                    handover.append(o)
                    return None
                kept = self.hand_over([o], response)
                return kept[0] if kept else None
            return o
        if kind != "page":
            return o
        if url in self.seen_pages:
            return None
        if not in_scope(url, self.scope):
            self._drop("offsite")
            return None
        # A listing's next pages are one step along the same listing, not a step deeper into the site.
        if o.meta.get("depth", 0) - o.meta.get(META_PAGINATION_HOPS, 0) > self.depth_limit:
            # Not marked seen: a shallower path to the same page may still come.
            self._drop("depth")
            return None
        self.seen_pages.add(url)
        if reason := trap_reason(url, max_length=self.max_url_length, max_query_params=self.max_query_params):
            return ErrorItem(url, reason, "")
        pattern = date_pattern(url)
        if pattern is not None and self.pages_per_date_pattern[pattern] >= self.max_per_date_pattern:
            self._drop("calendar")
            if pattern not in self.reported_patterns:  # report each calendar once, not every date in it
                self.reported_patterns.add(pattern)
                return ErrorItem(url, "trap:calendar", f"more than {self.max_per_date_pattern} pages shaped {pattern}")
            return None
        host = host_of(url)
        if self.pages_per_host[host] >= self.budget:
            self._drop("budget")
            return None
        self.pages_per_host[host] += 1
        if pattern is not None:
            self.pages_per_date_pattern[pattern] += 1
        return o
