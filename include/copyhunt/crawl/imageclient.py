"""The image fetcher's HTTP client: aiohttp on an asyncio loop, with the crawl's own policy.

The page crawler (Scrapy) hands image URLs to a second process (:mod:`copyhunt.crawl.imagefetch`).
An image needs none of Scrapy's machinery (no parsing, no scheduler, no spider middlewares), and
Scrapy's per-request cost was most of that process's CPU, so the fetcher is this lean client. It
applies the same rules as the Scrapy downloader middlewares, read from the same Scrapy settings
(:meth:`FetchPolicy.from_settings`), and the same decisions (shared functions):

* safety: http(s) only, and :func:`copyhunt.crawl.middlewares.check_host` on every hop, redirects
  and robots.txt included; names are looked up once (:class:`CheckedResolver`) and the connector
  connects to the addresses that were checked;
* robots.txt per host (Protego, as Scrapy's default parser; a robots.txt that cannot be fetched
  allows everything, as in Scrapy);
* per-host politeness: concurrency, download delay (randomised 0.5-1.5x) and AutoThrottle's
  delay rule; the whole-crawl concurrency;
* redirects (at most ``REDIRECT_MAX_TIMES``; the page stays the Referer except https to http);
* retries of ``RETRY_HTTP_CODES`` and network errors with exponential backoff, Retry-After on
  429/503 (:func:`~copyhunt.crawl.middlewares.retry_after_seconds`), which also slows the host;
* the per-image byte cap, from Content-Length before the body and while reading without one;
* conditional requests from the previous day's validators.

What comes back goes through :class:`copyhunt.crawl.pipelines.CrawlOutputPipeline`, as from the
Scrapy spiders: magic-byte typing, the bomb guard before any decode, the blob store.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from protego import Protego

from copyhunt.crawl.items import BlockedRequest, ErrorItem, ImageFetchItem, http_error_reason
from copyhunt.crawl.middlewares import address_block_reason, backoff_delay, check_host, parse_ip, request_host, retry_after_seconds
from copyhunt.crawl.validators import Validator, clean_validator
from copyhunt.failpoints import failpoint

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

    from copyhunt.crawl.middlewares import IPAddress

logger = logging.getLogger(__name__)

T = TypeVar("T")
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
READ_CHUNK = 256 * 1024


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop where it is installed (faster), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - plain asyncio is slower but works
        return asyncio.run(main)
    return uvloop.run(main)


class FetchFailed(Exception):
    """A fetch that ended without a usable response: ``reason`` as in errors.parquet."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# aiohttp's failures that Scrapy's RETRY_EXCEPTIONS also retry (timeouts, refused connections,
# failed lookups, connections lost mid-response).
RETRYABLE = (asyncio.TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)


def failure_reason(exc: BaseException) -> tuple[str, str]:
    """``(reason, detail)`` for an exception that ended one attempt, in the Scrapy crawl's terms."""
    detail = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    if isinstance(exc, (FetchFailed, BlockedRequest)):
        return exc.reason, exc.detail
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout", detail or "TimeoutError"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns-error", detail
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, ConnectionRefusedError):
        return "connection-refused", detail
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "data-loss", detail
    return "download-error", detail


@dataclass(frozen=True)
class FetchPolicy:
    """The crawl's download rules, as the Scrapy settings of the run give them."""

    user_agent: str
    headers: Mapping[str, str]  # DEFAULT_REQUEST_HEADERS
    allow_private: bool
    proxy: str
    concurrency: int
    per_host: int
    delay: float
    randomize_delay: bool
    autothrottle: bool
    autothrottle_start: float
    autothrottle_max: float
    autothrottle_target: float
    timeout: float
    max_image_bytes: int
    max_page_bytes: int  # robots.txt, like any page
    retry_times: int
    retry_codes: frozenset[int]
    backoff_base: float
    backoff_max: float
    retry_after_max: float
    max_redirects: int
    obey_robots: bool
    close_after: float | None  # seconds; CLOSESPIDER_TIMEOUT

    @classmethod
    def from_settings(cls, s: BaseSettings) -> FetchPolicy:
        return cls(
            user_agent=s.get("USER_AGENT"),
            headers=dict(s.getdict("DEFAULT_REQUEST_HEADERS")),
            allow_private=s.getbool("COPYHUNT_ALLOW_PRIVATE"),
            proxy=s.get("COPYHUNT_PROXY") or "",
            concurrency=max(1, s.getint("CONCURRENT_REQUESTS")),
            per_host=max(1, s.getint("CONCURRENT_REQUESTS_PER_DOMAIN")),
            delay=max(0.0, s.getfloat("DOWNLOAD_DELAY")),
            randomize_delay=s.getbool("RANDOMIZE_DOWNLOAD_DELAY"),
            autothrottle=s.getbool("AUTOTHROTTLE_ENABLED"),
            autothrottle_start=s.getfloat("AUTOTHROTTLE_START_DELAY"),
            autothrottle_max=s.getfloat("AUTOTHROTTLE_MAX_DELAY"),
            autothrottle_target=s.getfloat("AUTOTHROTTLE_TARGET_CONCURRENCY"),
            timeout=s.getfloat("DOWNLOAD_TIMEOUT"),
            max_image_bytes=s.getint("COPYHUNT_MAX_IMAGE_BYTES"),
            max_page_bytes=s.getint("DOWNLOAD_MAXSIZE"),
            retry_times=s.getint("RETRY_TIMES") if s.getbool("RETRY_ENABLED") else 0,
            retry_codes=frozenset(int(c) for c in s.getlist("RETRY_HTTP_CODES")),
            backoff_base=s.getfloat("COPYHUNT_RETRY_BACKOFF_BASE"),
            backoff_max=s.getfloat("COPYHUNT_RETRY_BACKOFF_MAX"),
            retry_after_max=s.getfloat("COPYHUNT_RETRY_AFTER_MAX"),
            max_redirects=s.getint("REDIRECT_MAX_TIMES") if s.getbool("REDIRECT_ENABLED") else 0,
            obey_robots=s.getbool("ROBOTSTXT_OBEY"),
            close_after=s.getfloat("CLOSESPIDER_TIMEOUT") or None,
        )


class HostSlot:
    """One host's politeness: requests in flight, and the delay between their starts."""

    def __init__(self, policy: FetchPolicy):
        self.policy = policy
        self.slots = asyncio.Semaphore(policy.per_host)
        self.delay = max(policy.delay, policy.autothrottle_start) if policy.autothrottle else policy.delay
        self._next_start = 0.0

    async def wait_turn(self) -> None:
        """Called holding one of the host's slots: wait until this request may start."""
        if self.delay <= 0:
            return
        now = time.monotonic()
        gap = self.delay * (random.uniform(0.5, 1.5) if self.policy.randomize_delay else 1.0)
        start = max(now, self._next_start)
        self._next_start = start + gap
        if start > now:
            await asyncio.sleep(start - now)

    def slow_down(self, seconds: float) -> None:
        self.delay = max(self.delay, seconds)  # Retry-After: AutoThrottle eases it back down

    def observe(self, latency: float, status: int) -> None:
        """AutoThrottle's rule (scrapy.extensions.throttle): move towards latency / target."""
        p = self.policy
        if not p.autothrottle:
            return
        target = latency / p.autothrottle_target
        new = max(target, (self.delay + target) / 2.0)
        new = min(max(p.delay, new), p.autothrottle_max)
        if status != 200 and new <= self.delay:
            return  # small error pages would otherwise speed us up
        self.delay = new


class CheckedResolver(AbstractResolver):
    """Name lookups, once per host, shared by the safety check and the connector.

    :meth:`first_refused` tells the safety check which address to judge (any non-public one among
    them, else the first), and the connector connects to these same addresses: no second lookup
    for DNS rebinding to exploit.
    """

    def __init__(self) -> None:
        self._cache: dict[str, asyncio.Future[list[ResolveResult]]] = {}

    async def _lookup(self, host: str) -> list[ResolveResult]:
        if host not in self._cache:
            loop = asyncio.get_running_loop()
            self._cache[host] = future = loop.create_future()
            try:
                infos = await loop.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
                results = [
                    ResolveResult(hostname=host, host=addr[0], port=0, family=fam, proto=proto, flags=socket.AI_NUMERICHOST)
                    for fam, _, proto, _, addr in infos
                    if fam in (socket.AF_INET, socket.AF_INET6)
                ]
                future.set_result(results)
            except Exception as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when nobody else asks
        return await asyncio.shield(self._cache[host])

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        try:
            results = await self._lookup(host)
        except OSError as exc:
            raise OSError(f"{host} does not resolve: {exc}") from exc
        if not results:
            raise OSError(f"{host} does not resolve")
        return [{**r, "port": port} for r in results]  # type: ignore[typeddict-item]

    async def first_refused(self, host: str) -> IPAddress | None:
        try:
            results = await self._lookup(host)
        except OSError:
            return None
        ips = [ip for r in results if (ip := parse_ip(r["host"])) is not None]
        return next((ip for ip in ips if address_block_reason(ip)), ips[0] if ips else None)

    async def close(self) -> None:
        self._cache.clear()


@dataclass
class Reply:
    url: str  # the URL that answered (after redirects)
    status: int
    headers: Mapping[str, str]
    body: bytes


class ImageClient:
    """Fetches images by the crawl's rules and hands the outcomes to ``intake`` (the pipeline's
    ``process_item``: an ImageFetchItem or an ErrorItem per image). Use ``async with``."""

    def __init__(self, policy: FetchPolicy, intake: Callable[[Any], Any], validators: Mapping[str, Validator] | None = None):
        self.policy = policy
        self.intake = intake
        self.validators = validators or {}
        self.stats: Counter[str] = Counter()
        self.resolver = CheckedResolver()
        self._slots: dict[str, HostSlot] = {}
        self._robots: dict[str, asyncio.Future[Protego | None]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ImageClient:
        connector = aiohttp.TCPConnector(resolver=self.resolver, limit=self.policy.concurrency, use_dns_cache=False)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={**self.policy.headers, "User-Agent": self.policy.user_agent},
            cookie_jar=aiohttp.DummyCookieJar(),  # no sessions, as COOKIES_ENABLED = False
            trust_env=False,  # only the configured proxy may route traffic
            timeout=aiohttp.ClientTimeout(total=self.policy.timeout),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    # ---- one image -----------------------------------------------------------------------------
    async def fetch_image(self, url: str, referer: str | None = None) -> None:
        """Fetch one image and report it; never raises (but for cancellation)."""
        headers: dict[str, str] = {}
        if referer:
            headers["Referer"] = referer
        earlier = self.validators.get(url)
        if earlier is not None:
            headers.update(earlier.conditional_headers())
            self.stats["conditional_requests"] += 1
        try:
            reply = await self.get(url, headers, self.policy.max_image_bytes)
        except asyncio.CancelledError:
            self.intake(ErrorItem(url, "cancelled", "the crawl's time limit was reached"))
            raise
        except Exception as exc:  # noqa: BLE001 - one bad image never fails the run
            reason, detail = failure_reason(exc)
            self.intake(ErrorItem(url, reason, detail))
            return
        etag = clean_validator(reply.headers.get("ETag"))
        last_modified = clean_validator(reply.headers.get("Last-Modified"))
        if reply.status == 304 and earlier is not None:
            self.intake(ImageFetchItem(image_url=url, final_url=reply.url, body=b"", etag=etag, last_modified=last_modified, not_modified=earlier))
        elif not 200 <= reply.status < 300:
            self.intake(ErrorItem(url, http_error_reason(reply.status), reply.url))
        else:
            self.intake(ImageFetchItem(image_url=url, final_url=reply.url, body=reply.body, etag=etag, last_modified=last_modified))

    # ---- a GET with the crawl's rules ----------------------------------------------------------
    async def get(self, url: str, headers: dict[str, str], max_bytes: int, *, robots: bool = True) -> Reply:
        """GET ``url`` following redirects and retrying as the crawl does; the last response.

        Raises FetchFailed/BlockedRequest (refused, too large, too many redirects, robots) or the
        network error of the last attempt.
        """
        headers = dict(headers)
        redirects = retries = 0
        current = url
        while True:
            try:
                await self._check(current)
                if robots and self.policy.obey_robots and not await self._robots_allow(current):
                    raise FetchFailed("robots", "Forbidden by robots.txt")
                reply = await self._send(current, headers, max_bytes)
            except RETRYABLE as exc:
                if retries >= self.policy.retry_times:
                    raise self._at(exc, url, current) from exc
                retries += 1
                await asyncio.sleep(backoff_delay(retries, self.policy.backoff_base, self.policy.backoff_max))
                continue
            except (FetchFailed, BlockedRequest) as exc:
                raise self._at(exc, url, current) from exc
            location = reply.headers.get("Location")
            if reply.status in REDIRECT_CODES and location:
                redirects += 1
                if redirects > self.policy.max_redirects:
                    raise FetchFailed("too-many-redirects", f"max redirections reached at {current}")
                target = urljoin(current, location.strip())
                if headers.get("Referer", "").startswith("https:") and not target.startswith("https:"):
                    del headers["Referer"]
                current = target
                continue
            if reply.status in self.policy.retry_codes and retries < self.policy.retry_times:
                wait = retry_after_seconds(reply.headers.get("Retry-After"), now=time.time())
                if wait is not None and wait > self.policy.retry_after_max:
                    return reply  # reported as its status rather than stalling the run
                retries += 1
                if wait is None:
                    wait = backoff_delay(retries, self.policy.backoff_base, self.policy.backoff_max)
                else:
                    self._slot(current).slow_down(wait)
                await asyncio.sleep(wait)
                continue
            return reply

    @staticmethod
    def _at(exc: BaseException, url: str, current: str) -> FetchFailed:
        reason, detail = failure_reason(exc)
        if current != url:  # failed on a redirect hop: say which
            detail = f"{detail} (at {current})"
        return FetchFailed(reason, detail)

    async def _check(self, url: str) -> None:
        host = request_host(urlsplit(url), url)
        if not self.policy.allow_private:
            await check_host(host, proxy=self.policy.proxy, resolve=self.resolver.first_refused)

    def _slot(self, url: str) -> HostSlot:
        host = urlsplit(url).hostname or ""
        slot = self._slots.get(host)
        if slot is None:
            slot = self._slots[host] = HostSlot(self.policy)
        return slot

    async def _send(self, url: str, headers: dict[str, str], max_bytes: int) -> Reply:
        """One request, one attempt, within the host's politeness."""
        assert self._session is not None, "use ImageClient in an async with block"
        slot = self._slot(url)
        async with slot.slots:
            await slot.wait_turn()
            self.stats["requests"] += 1
            started = time.monotonic()
            async with self._session.get(url, headers=headers, allow_redirects=False, proxy=self.policy.proxy or None) as resp:
                self.stats["responses"] += 1
                slot.observe(time.monotonic() - started, resp.status)
                declared = resp.content_length
                if declared is not None and declared > max_bytes:
                    resp.close()  # drop the connection rather than read (or drain) the body
                    raise FetchFailed("too-large", f"expected response size ({declared}) larger than download max size ({max_bytes})")
                if declared is not None and not resp.headers.get("Content-Encoding"):
                    body = await resp.read()
                else:  # no length, or compressed: count what arrives
                    chunks, size = [], 0
                    async for chunk in resp.content.iter_chunked(READ_CHUNK):
                        size += len(chunk)
                        if size > max_bytes:
                            resp.close()
                            raise FetchFailed("too-large", f"received {size} bytes of response, larger than download max size ({max_bytes})")
                        chunks.append(chunk)
                    body = b"".join(chunks)
                return Reply(str(resp.url), resp.status, resp.headers, body)  # type: ignore[arg-type]

    # ---- robots.txt --------------------------------------------------------------------------------
    async def _robots_allow(self, url: str) -> bool:
        parts = urlsplit(url)
        key = parts.netloc
        if key not in self._robots:
            future = self._robots[key] = asyncio.get_running_loop().create_future()
            parser: Protego | None = None
            try:
                reply = await self.get(f"{parts.scheme}://{parts.netloc}/robots.txt", {}, self.policy.max_page_bytes, robots=False)
                parser = Protego.parse(reply.body.decode("utf-8-sig", errors="ignore"))
                self.stats["robots_fetched"] += 1
            except asyncio.CancelledError:
                future.set_result(None)
                raise
            except Exception as exc:  # noqa: BLE001 - as Scrapy: a robots.txt we cannot read allows all
                logger.info("robots.txt of %s not read (%s); allowing all", key, exc)
            future.set_result(parser)
        parser = await asyncio.shield(self._robots[key])
        return parser is None or parser.can_fetch(url, self.policy.user_agent)


async def fetch_all(source: AsyncIterator[tuple[str, str]], client: ImageClient, close_after: float | None = None) -> str:
    """Fetch every ``(url, referer)`` from ``source``, at most ``policy.concurrency`` at a time;
    returns the finish reason (``finished`` or ``closespider_timeout``).

    The next line is read only when a fetch slot is free, so a fetcher that falls behind leaves
    its backlog in the pipe (where the page crawler notices it). After ``close_after`` seconds the
    fetches in flight are cancelled and whatever still arrives is not fetched; both are reported
    ``cancelled``.
    """
    slots = asyncio.Semaphore(client.policy.concurrency)
    tasks: set[asyncio.Task[None]] = set()
    closing = False

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        slots.release()

    def close() -> None:
        nonlocal closing
        closing = True
        logger.info("time limit of %.0fs reached: cancelling %d image downloads", close_after, len(tasks))
        for task in list(tasks):
            task.cancel()

    timer = asyncio.get_running_loop().call_later(close_after, close) if close_after else None
    try:
        async for url, referer in source:
            failpoint("crawl.image_fetcher", "request")  # tests: the fetcher dies mid-run
            if not closing:
                await slots.acquire()
            if closing:
                client.intake(ErrorItem(url, "cancelled", "the crawl's time limit was reached"))
                continue
            task = asyncio.create_task(client.fetch_image(url, referer or None))
            tasks.add(task)
            task.add_done_callback(done)
        while tasks:
            await asyncio.wait(set(tasks))
    finally:
        if timer is not None:
            timer.cancel()
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    return "closespider_timeout" if closing else "finished"
