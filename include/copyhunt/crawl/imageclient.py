"""The image fetcher's HTTP client: aiohttp on an asyncio loop, with the crawl's own rules.

The page crawler (Scrapy) hands image URLs to a second process (:mod:`copyhunt.crawl.imagefetch`).
An image needs none of Scrapy's machinery (no parsing, no scheduler, no spider middlewares), and
Scrapy's per-request cost was most of that process's CPU, so the fetcher is this lean client. It
does its own I/O and asks :mod:`copyhunt.crawl.politeness` every question the Scrapy side asks
it, from the same Scrapy settings (:meth:`FetchPolicy.from_settings`):

* safety: :func:`~copyhunt.crawl.politeness.check_host` on every hop, redirects and robots.txt
  included; names are looked up once (:class:`CheckedResolver`) and the connector connects to
  the addresses that were checked;
* robots.txt per host (:class:`~copyhunt.crawl.politeness.RobotsRules`), read once;
* per-host pacing: concurrency, the randomised gap between request starts, AutoThrottle's delay
  rule; the whole-crawl concurrency;
* redirects and the Referer across them, retries with backoff or Retry-After (which also slows
  the host);
* the per-image byte cap, from Content-Length before the body and while reading without one;
* conditional requests from the previous day's validators.

What comes back goes through :class:`copyhunt.crawl.pipelines.CrawlOutputPipeline`, as from the
Scrapy spiders: magic-byte typing, the bomb guard before any decode, the blob store.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from copyhunt.crawl.items import BlockedRequest, ErrorItem, ImageFetchItem, http_error_reason
from copyhunt.crawl.politeness import (IPAddress, Politeness, Retry, RobotsRules, address_block_reason, check_host, parse_ip, referer_after_redirect,
                                      request_host)
from copyhunt.crawl.validators import Validator, clean_validator
from copyhunt.failpoints import failpoint

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
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
    """The crawl's download settings for this client: the rules (shared with the Scrapy side)
    and what only the transport needs."""

    rules: Politeness
    headers: Mapping[str, str]  # DEFAULT_REQUEST_HEADERS
    concurrency: int
    per_host: int
    timeout: float
    max_image_bytes: int
    max_page_bytes: int  # robots.txt, like any page
    close_after: float | None  # seconds; CLOSESPIDER_TIMEOUT

    @classmethod
    def from_settings(cls, s: BaseSettings) -> FetchPolicy:
        return cls(
            rules=Politeness.from_settings(s),
            headers=dict(s.getdict("DEFAULT_REQUEST_HEADERS")),
            concurrency=max(1, s.getint("CONCURRENT_REQUESTS")),
            per_host=max(1, s.getint("CONCURRENT_REQUESTS_PER_DOMAIN")),
            timeout=s.getfloat("DOWNLOAD_TIMEOUT"),
            max_image_bytes=s.getint("COPYHUNT_MAX_IMAGE_BYTES"),
            max_page_bytes=s.getint("DOWNLOAD_MAXSIZE"),
            close_after=s.getfloat("CLOSESPIDER_TIMEOUT") or None,
        )


class HostSlot:
    """One host's requests in flight and its delay, paced by the rules."""

    def __init__(self, policy: FetchPolicy):
        self.rules = policy.rules
        self.slots = asyncio.Semaphore(policy.per_host)
        self.delay = self.rules.start_delay
        self._next_start = 0.0

    async def wait_turn(self) -> None:
        """Called holding one of the host's slots: wait until this request may start."""
        if self.delay <= 0:
            return
        now = time.monotonic()
        start = max(now, self._next_start)
        self._next_start = start + self.rules.request_gap(self.delay)
        if start > now:
            await asyncio.sleep(start - now)

    def slow_down(self, retry: Retry) -> None:
        self.delay = self.rules.slowed_delay(self.delay, retry)

    def observe(self, latency: float, status: int) -> None:
        self.delay = self.rules.throttled_delay(self.delay, latency, status)


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
        self._robots: dict[str, asyncio.Future[RobotsRules | None]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ImageClient:
        connector = aiohttp.TCPConnector(resolver=self.resolver, limit=self.policy.concurrency, use_dns_cache=False)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={**self.policy.headers, "User-Agent": self.policy.rules.user_agent},
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
        rules = self.policy.rules
        redirects = retries = 0
        current = url
        while True:
            try:
                await self._check(current)
                if robots and not await self._robots_allow(current):
                    raise FetchFailed("robots", "Forbidden by robots.txt")
                reply = await self._send(current, headers, max_bytes)
            except RETRYABLE as exc:
                retry = rules.retry_after_failure(retries)
                if retry is None:
                    raise self._at(exc, url, current) from exc
                retries += 1
                await asyncio.sleep(retry.wait)
                continue
            except (FetchFailed, BlockedRequest) as exc:
                raise self._at(exc, url, current) from exc
            target = rules.redirect_target(current, reply.status, reply.headers.get("Location"))
            if target is not None:
                if not rules.may_redirect(redirects):
                    raise rules.too_many_redirects(current)
                redirects += 1
                referer = referer_after_redirect(headers.get("Referer"), target)
                if referer is None:
                    headers.pop("Referer", None)
                current = target
                continue
            retry = rules.retry_after_response(current, reply.status, retries, reply.headers.get("Retry-After"), now=time.time())
            if retry is not None:
                retries += 1
                self._slot(current).slow_down(retry)
                await asyncio.sleep(retry.wait)
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
        if not self.policy.rules.allow_private:
            await check_host(host, proxy=self.policy.rules.proxy, resolve=self.resolver.first_refused)

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
            async with self._session.get(url, headers=headers, allow_redirects=False, proxy=self.policy.rules.proxy or None) as resp:
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
        if not self.policy.rules.obey_robots:
            return True
        parts = urlsplit(url)
        key = parts.netloc
        if key not in self._robots:
            future = self._robots[key] = asyncio.get_running_loop().create_future()
            parsed: RobotsRules | None = None
            try:
                reply = await self.get(f"{parts.scheme}://{parts.netloc}/robots.txt", {}, self.policy.max_page_bytes, robots=False)
                parsed = RobotsRules(reply.body)
                self.stats["robots_fetched"] += 1
            except asyncio.CancelledError:
                future.set_result(None)
                raise
            except Exception as exc:  # noqa: BLE001 - as Scrapy: a robots.txt we cannot read allows all
                logger.info("robots.txt of %s not read (%s); allowing all", key, exc)
            future.set_result(parsed)
        return self.policy.rules.robots_allow(await asyncio.shield(self._robots[key]), url)


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
