"""Crawler middlewares: the safety guard, polite retries, and the crawl policy.

* :class:`SafetyMiddleware` (downloader) refuses anything but http(s) and any host that is, or
  resolves to, a non-public address (loopback, private, link-local, reserved, cloud metadata),
  on every request including each redirect hop and robots.txt fetches. It also routes every
  request through the configured proxy.
* :class:`BackoffRetryMiddleware` (downloader) replaces Scrapy's RetryMiddleware: same retry
  rules, but it waits first, honouring ``Retry-After`` on 429/503 and backing off exponentially
  otherwise.
* :class:`ConditionalRequestMiddleware` (downloader) turns an image request into a conditional
  one (``If-None-Match`` / ``If-Modified-Since``) when an earlier run stored that image, so an
  unchanged image costs a 304 instead of a download.
* :class:`CrawlPolicyMiddleware` (spider) filters what the spider wants to fetch: page links
  stay inside the seeds' domains, within the depth limit and the per-domain page budget, and
  away from URL traps (including calendars); each page and each image URL is requested once per
  run (images once across all spiders of the run).

The decisions themselves are pure functions (:func:`address_block_reason`,
:func:`retry_after_seconds`, :func:`backoff_delay`, and those in :mod:`copyhunt.crawl.urls`).
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from scrapy import Request
from scrapy.downloadermiddlewares.redirect import MetaRefreshMiddleware, RedirectMiddleware
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.logformatter import LogFormatter
from scrapy.utils.asyncio import sleep
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.response import response_status_message

from copyhunt.crawl.items import BlockedRequest, ErrorItem
from copyhunt.crawl.urls import (
    HTTP_SCHEMES,
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

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Instance-metadata services hand out cloud credentials. Most sit in ranges refused anyway
# (169.254/16 link-local, 100.64/10 shared, fd00::/8 unique-local); listed so the detail says so.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "fd00:ec2::254")
)
# Names that reach a metadata service without resolving in public DNS.
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"})
BLOCKED_ADDRESS = "blocked:private-address"


# ---- pure decisions ----------------------------------------------------------------------------
def address_block_reason(ip: IPAddress) -> str | None:
    """Why a crawler must not connect to ``ip`` (a human detail), or None if it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address wrapped in IPv6 reaches the IPv4 host; judge the address inside.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            inner = address_block_reason(embedded)
            return f"{ip} embeds {inner}" if inner else None
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    for attr in ("is_loopback", "is_private", "is_link_local", "is_multicast", "is_unspecified", "is_reserved"):
        if getattr(ip, attr):
            return f"{ip} is {attr[3:].replace('_', '-')}"
    if not ip.is_global:  # shared address space (100.64/10), benchmarking, documentation ranges...
        return f"{ip} is not globally routable"
    return None


def parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def retry_after_seconds(value: bytes | str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent/bad."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff: ``base * 2**(attempt-1)`` seconds, at most ``cap``."""
    return min(cap, base * (2 ** max(0, attempt - 1)))


def request_host(parts: Any, url: str) -> str:
    """The host a request for ``url`` goes to (lower case, no trailing dot), from its parsed
    ``parts`` (anything with ``scheme`` and ``hostname``); BlockedRequest unless it is http(s)
    with a host. Shared by :class:`SafetyMiddleware` and the image fetcher, on every hop."""
    if parts.scheme not in HTTP_SCHEMES:
        raise BlockedRequest("blocked:scheme", f"{parts.scheme or '(none)'}: {url}")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise BlockedRequest("blocked:no-host", url)
    return host


async def check_host(host: str, *, proxy: str, resolve: Callable[[str], Awaitable[IPAddress | None]]) -> None:
    """Raise BlockedRequest unless a crawler may connect to ``host`` (lower case, no port).

    ``resolve`` gives the address the crawler will connect to (None: the name does not resolve);
    it must share its cache with the connecting code, so the address checked is the address used.
    With a ``proxy``, a name that does not resolve here is the proxy's to resolve.
    Shared by :class:`SafetyMiddleware` and the image fetcher (:mod:`copyhunt.crawl.imageclient`).
    """
    if host in METADATA_HOSTS:
        raise BlockedRequest(BLOCKED_ADDRESS, f"{host} is a cloud metadata host name")
    ip = parse_ip(host)
    if ip is None:
        ip = await resolve(host)
        if ip is None:
            if proxy:
                return
            raise BlockedRequest("dns-error", f"{host} does not resolve")
    why = address_block_reason(ip)
    if why:
        raise BlockedRequest(BLOCKED_ADDRESS, why if str(ip) == host else f"{host} -> {why}")


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
        s = crawler.settings
        return cls(allow_private=s.getbool("COPYHUNT_ALLOW_PRIVATE"), proxy=s.get("COPYHUNT_PROXY") or "")

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
    """Scrapy's retry rules with waiting: Retry-After when given, exponential backoff otherwise.

    A Retry-After longer than COPYHUNT_RETRY_AFTER_MAX is not waited for: the response goes
    through and is reported (``http-429``), rather than stalling the run. A Retry-After also
    slows down the whole host's download slot, not only the retried request.
    """

    def __init__(self, settings: BaseSettings):
        super().__init__(settings)
        self.backoff_base = settings.getfloat("COPYHUNT_RETRY_BACKOFF_BASE", 1.0)
        self.backoff_max = settings.getfloat("COPYHUNT_RETRY_BACKOFF_MAX", 30.0)
        self.retry_after_max = settings.getfloat("COPYHUNT_RETRY_AFTER_MAX", 120.0)

    async def process_response(self, request: Request, response: Response) -> Request | Response:  # type: ignore[override]
        if request.meta.get("dont_retry", False) or response.status not in self.retry_http_codes:
            return response
        wait = retry_after_seconds(response.headers.get(b"Retry-After"), now=time.time())
        if wait is not None and wait > self.retry_after_max:
            logger.info("Not retrying %s: Retry-After %.0fs exceeds %.0fs", request, wait, self.retry_after_max)
            return response
        retry = self._retry(request, response_status_message(response.status))
        if retry is None:
            return response
        if wait is None:
            wait = backoff_delay(retry.meta["retry_times"], self.backoff_base, self.backoff_max)
        else:
            self._slow_down(request, wait)
        await sleep(wait)
        return retry

    async def process_exception(self, request: Request, exception: Exception) -> Request | None:  # type: ignore[override]
        if request.meta.get("dont_retry", False) or not isinstance(exception, self.exceptions_to_retry):
            return None
        retry = self._retry(request, exception)
        if retry is not None:
            await sleep(backoff_delay(retry.meta["retry_times"], self.backoff_base, self.backoff_max))
        return retry

    def _slow_down(self, request: Request, delay: float) -> None:
        engine = getattr(self.crawler, "engine", None)
        downloader = getattr(engine, "downloader", None)
        slot = getattr(downloader, "slots", {}).get(request.meta.get("download_slot", ""))
        if slot is not None:
            # AutoThrottle eases it back down as the host answers 200s again.
            slot.delay = max(slot.delay, delay)


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


class _KeepReferer:
    """On a redirect, keep the Referer the spider set (the page), as browsers do, except from an
    https page to an http URL. Scrapy's version needs its RefererMiddleware, which the spiders
    replace (see ``settings.SPIDER_MIDDLEWARES``)."""

    def _engine_started(self) -> None:
        pass  # Scrapy's check would warn that its RefererMiddleware is missing; it is meant to be

    def handle_referer(self, request: Request, response: Response) -> None:
        referer = request.headers.get(b"Referer")
        if referer is not None and referer.startswith(b"https:") and not request.url.startswith("https:"):
            del request.headers[b"Referer"]


class KeepRefererRedirectMiddleware(_KeepReferer, RedirectMiddleware):
    pass


class KeepRefererMetaRefreshMiddleware(_KeepReferer, MetaRefreshMiddleware):
    pass


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
