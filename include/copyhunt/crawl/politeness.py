"""The crawl's rules of conduct, written once for both of its downloaders.

A crawl downloads through two clients: Scrapy fetches the pages (:mod:`copyhunt.crawl.middlewares`,
:class:`copyhunt.crawl.extensions.PoliteThrottle` and the robots.txt parser named in
:mod:`copyhunt.crawl.settings`), and a lean aiohttp client fetches the images in a second
process (:mod:`copyhunt.crawl.imageclient`). Each does its own I/O; every decision about how
to behave towards a site is made here, from the run's Scrapy settings
(:meth:`Politeness.from_settings`), so the two cannot drift apart:

* **where not to go** (:func:`request_host`, :func:`check_host`): http(s) only, and no host that
  is, or resolves to, a non-public address (loopback, private, link-local, cloud metadata), on
  every request, every redirect hop and every robots.txt fetch;
* **robots.txt** (:class:`RobotsRules`, also Scrapy's ``ROBOTSTXT_PARSER``): read once per host
  with Protego; a robots.txt that cannot be fetched allows everything, as in Scrapy;
* **retries** (:meth:`Politeness.retry_after_response`, :meth:`Politeness.retry_after_failure`):
  which statuses, how many times, how long to wait (Retry-After when given, which also slows the
  host; exponential backoff otherwise; a Retry-After past the cap is reported, not waited for);
* **redirects** (:meth:`Politeness.redirect_target`, :meth:`Politeness.may_redirect`,
  :func:`referer_after_redirect`): which responses are followed, to where, how many hops, and
  the Referer across a hop;
* **pacing per host** (:meth:`Politeness.request_gap`, :meth:`Politeness.throttled_delay`):
  the randomised gap between request starts and AutoThrottle's adjustment of the delay;
* **two processes, one budget** (:func:`split_politeness`): each crawler process gets its share
  of a host's concurrency and rate.

Everything here is a pure decision (no I/O but the ``resolve`` callable :func:`check_host` is
given); tests/test_crawl.py holds both clients to these rules against a real local server.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from protego import Protego
from w3lib.url import safe_url_string

from copyhunt.crawl.items import BlockedRequest
from copyhunt.crawl.urls import HTTP_SCHEMES

if TYPE_CHECKING:
    from typing_extensions import Self

    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

# ---- where not to go -----------------------------------------------------------------------------
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Instance-metadata services hand out cloud credentials. Most sit in ranges refused anyway
# (169.254/16 link-local, 100.64/10 shared, fd00::/8 unique-local); listed so the detail says so.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "fd00:ec2::254")
)
# Names that reach a metadata service without resolving in public DNS.
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"})
BLOCKED_ADDRESS = "blocked:private-address"


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
    """``host`` as an IP address (brackets of an IPv6 literal allowed), or None if it is a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def request_host(parts: Any, url: str) -> str:
    """The host a request for ``url`` goes to (lower case, no trailing dot), from its parsed
    ``parts`` (anything with ``scheme`` and ``hostname``); BlockedRequest unless it is http(s)
    with a host."""
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


# ---- robots.txt ------------------------------------------------------------------------------------
class RobotsRules:
    """One host's robots.txt, parsed as both crawlers read it (Protego, as Scrapy's default).

    It is also the page crawler's ``ROBOTSTXT_PARSER`` (Scrapy's robots.txt middleware builds it
    with :meth:`from_crawler`), so both processes decide from the same parse of the same bytes.
    """

    def __init__(self, body: bytes):
        # A byte-order mark is not part of the first rule; undecodable bytes never are rules.
        self._parser = Protego.parse(body.decode("utf-8-sig", errors="ignore"))

    @classmethod
    def from_crawler(cls, crawler: Crawler, robotstxt_body: bytes) -> Self:
        return cls(robotstxt_body)

    def allowed(self, url: str | bytes, user_agent: str | bytes) -> bool:
        return bool(self._parser.can_fetch(_text(url), _text(user_agent)))

    def crawl_delay(self, user_agent: str | bytes) -> float | None:
        delay = self._parser.crawl_delay(_text(user_agent))
        return None if delay is None else float(delay)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


# ---- retries, redirects and pacing -----------------------------------------------------------------
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TOO_MANY_REDIRECTS = "too-many-redirects"


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


def referer_after_redirect(referer: str | None, target: str) -> str | None:
    """The Referer a redirect hop to ``target`` carries: the page's, as a browser sends it, but
    none from an https page to an http URL."""
    if referer is not None and referer.startswith("https:") and not target.startswith("https:"):
        return None
    return referer


@dataclass(frozen=True)
class Retry:
    """Try again after ``wait`` seconds; ``slow_host``: the wait came from the server's
    Retry-After, so the host's delay rises to it too (AutoThrottle eases it back down)."""

    wait: float
    slow_host: bool = False


@dataclass(frozen=True)
class Politeness:
    """The crawl's retry, redirect, robots and pacing rules, as the run's Scrapy settings give them."""

    user_agent: str
    obey_robots: bool
    allow_private: bool
    proxy: str
    retry_times: int  # retries after the first attempt (0: RETRY_ENABLED is off)
    retry_codes: frozenset[int]
    backoff_base: float  # seconds before the first retry; doubles each time
    backoff_max: float
    retry_after_max: float  # a longer Retry-After is reported, not waited for
    follow_redirects: bool
    max_redirects: int
    delay: float  # DOWNLOAD_DELAY: the gap between request starts, and AutoThrottle's floor
    jitter: float  # the gap varies by this fraction of the delay either way (DOWNLOAD_DELAY_JITTER)
    autothrottle: bool
    autothrottle_start: float
    autothrottle_max: float
    autothrottle_target: float

    @classmethod
    def from_settings(cls, s: BaseSettings) -> Politeness:
        return cls(
            user_agent=s.get("USER_AGENT"),
            obey_robots=s.getbool("ROBOTSTXT_OBEY"),
            allow_private=s.getbool("COPYHUNT_ALLOW_PRIVATE"),
            proxy=s.get("COPYHUNT_PROXY") or "",
            retry_times=s.getint("RETRY_TIMES") if s.getbool("RETRY_ENABLED") else 0,
            retry_codes=frozenset(int(c) for c in s.getlist("RETRY_HTTP_CODES")),
            backoff_base=s.getfloat("COPYHUNT_RETRY_BACKOFF_BASE", 1.0),
            backoff_max=s.getfloat("COPYHUNT_RETRY_BACKOFF_MAX", 30.0),
            retry_after_max=s.getfloat("COPYHUNT_RETRY_AFTER_MAX", 120.0),
            follow_redirects=s.getbool("REDIRECT_ENABLED"),
            max_redirects=s.getint("REDIRECT_MAX_TIMES"),
            delay=max(0.0, s.getfloat("DOWNLOAD_DELAY")),
            jitter=max(0.0, s.getfloat("DOWNLOAD_DELAY_JITTER", 0.5)),
            autothrottle=s.getbool("AUTOTHROTTLE_ENABLED"),
            autothrottle_start=s.getfloat("AUTOTHROTTLE_START_DELAY"),
            autothrottle_max=s.getfloat("AUTOTHROTTLE_MAX_DELAY"),
            autothrottle_target=s.getfloat("AUTOTHROTTLE_TARGET_CONCURRENCY"),
        )

    # ---- retries ---------------------------------------------------------------------------------
    def retry_after_response(self, url: str, status: int, retries_done: int, retry_after: bytes | str | None, now: float) -> Retry | None:
        """Whether to ask again after a response with ``status`` (``retries_done`` retries so
        far), and after how long; None: the response stands (reported as its status)."""
        if status not in self.retry_codes or retries_done >= self.retry_times:
            return None
        wait = retry_after_seconds(retry_after, now)
        if wait is None:
            return Retry(backoff_delay(retries_done + 1, self.backoff_base, self.backoff_max))
        if wait > self.retry_after_max:
            logger.info("Not retrying %s: Retry-After %.0fs exceeds %.0fs", url, wait, self.retry_after_max)
            return None
        return Retry(wait, slow_host=True)

    def retry_after_failure(self, retries_done: int) -> Retry | None:
        """Whether to try again after a network failure (timeout, refused, lost connection),
        and after how long; None: the failure is reported."""
        if retries_done >= self.retry_times:
            return None
        return Retry(backoff_delay(retries_done + 1, self.backoff_base, self.backoff_max))

    # ---- redirects -------------------------------------------------------------------------------
    def redirect_target(self, url: str, status: int, location: bytes | str | None) -> str | None:
        """Where a ``status`` response to ``url`` with this Location sends the crawler, or None
        if it is not a redirect to follow (the response stands): not a redirect status, no
        Location, redirects off, or a target that is not http(s). As Scrapy's RedirectMiddleware
        reads a Location: made URL-safe, scheme-relative taken on the request's scheme, the
        request's fragment kept."""
        if not self.follow_redirects or status not in REDIRECT_STATUSES or not location:
            return None
        target = safe_url_string(location)
        if target.startswith("//"):
            target = urlsplit(url).scheme + "://" + target.lstrip("/")
        target = urljoin(url, target)
        fragment = urlsplit(url).fragment
        if fragment and not urlsplit(target).fragment:
            target = urljoin(target, f"#{fragment}")
        return target if urlsplit(target).scheme in HTTP_SCHEMES else None

    def may_redirect(self, redirects_done: int) -> bool:
        """Whether one more hop may be followed after ``redirects_done`` of them."""
        return redirects_done < self.max_redirects

    def too_many_redirects(self, url: str) -> BlockedRequest:
        """The refusal of one hop too many, at ``url`` (the response that asked for it)."""
        return BlockedRequest(TOO_MANY_REDIRECTS, f"max redirections ({self.max_redirects}) reached at {url}")

    # ---- robots.txt ------------------------------------------------------------------------------
    def robots_allow(self, robots: RobotsRules | None, url: str) -> bool:
        """Whether ``url`` may be fetched under its host's robots.txt (None: it could not be read,
        which allows everything, as in Scrapy)."""
        return not self.obey_robots or robots is None or robots.allowed(url, self.user_agent)

    # ---- pacing ----------------------------------------------------------------------------------
    @property
    def start_delay(self) -> float:
        """A host's delay before anything is known of it."""
        return max(self.delay, self.autothrottle_start) if self.autothrottle else self.delay

    def request_gap(self, delay: float, rng: random.Random | Any = random) -> float:
        """The gap to leave between two request starts to a host whose delay is ``delay``:
        randomised by ``jitter`` either way, as Scrapy's downloader slot does it."""
        if not self.jitter:
            return delay
        return max(0.0, delay * (1 + rng.uniform(-self.jitter, self.jitter)))

    def throttled_delay(self, delay: float, latency: float, status: int) -> float:
        """A host's delay after a response that took ``latency`` seconds (AutoThrottle's rule):
        towards latency / target concurrency, never below DOWNLOAD_DELAY or above the maximum,
        and not lowered by an error response (small error pages would speed the crawl up)."""
        if not self.autothrottle:
            return delay
        target = latency / self.autothrottle_target
        new = max(target, (delay + target) / 2.0)
        new = min(max(self.delay, new), self.autothrottle_max)
        if status != 200 and new <= delay:
            return delay
        return new

    @staticmethod
    def slowed_delay(delay: float, retry: Retry) -> float:
        """A host's delay after a Retry-After of ``retry.wait`` seconds."""
        return max(delay, retry.wait) if retry.slow_host else delay


def split_politeness(settings: Any, share: str) -> None:
    """Give one of the two crawler processes (``"pages"`` or ``"images"``) its part of each host's
    politeness budget in its Scrapy ``settings``, so that together they stay within what one
    process would be allowed.

    Per-host concurrency is divided (at least one each), the download delay of each process is
    doubled (two processes each waiting 2d send, together, one request per d), and
    AutoThrottle's target concurrency is halved.
    """
    if share not in ("pages", "images"):
        raise ValueError(f"share must be 'pages' or 'images', got {share!r}")
    per_host = settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN")
    images = max(1, per_host // 2)
    pages = max(1, per_host - per_host // 2)
    delay = settings.getfloat("DOWNLOAD_DELAY")
    target = settings.getfloat("AUTOTHROTTLE_TARGET_CONCURRENCY")
    settings.setdict(
        {
            "CONCURRENT_REQUESTS_PER_DOMAIN": pages if share == "pages" else images,
            "DOWNLOAD_DELAY": delay * 2,
            "AUTOTHROTTLE_TARGET_CONCURRENCY": max(0.5, target / 2),
        },
        priority="cmdline",
    )
