"""Tests of the crawler: pure functions first, then real Scrapy crawls in a subprocess.

The integration tests serve small sites from ``http.server`` on 127.0.0.1 (so they pass
``allow_private=True``, except where the guard itself is under test) and one test plays the demo
web's role: an HTTP forward proxy serving ``*.test`` host names that do not resolve in DNS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import io
import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from copyhunt.blobs import LocalBlobStore
from copyhunt.config import Settings
from copyhunt.crawl.images import DISCOVERY_KINDS, discover_images, inspect_image, join_url, largest_candidate, parse_srcset
from copyhunt.crawl.market import MAX_NAME_LENGTH, ProductSeller, is_pagination_of, is_product_page, listing_key, pagination_links, product_sellers
from copyhunt.crawl.politeness import Politeness, Retry, RobotsRules, address_block_reason, backoff_delay, referer_after_redirect, retry_after_seconds
from copyhunt.crawl.outputs import write_table
from copyhunt.crawl.pages import extract_links, page_meta
from copyhunt.crawl.runner import CrawlSummary, run_crawl
from copyhunt.crawl.seeds import SeedError, assign_spiders, parse_hosts, parse_seed
from copyhunt.crawl.spiders.site import referer_for
from copyhunt.crawl.urls import MAX_PAGES_PER_DATE_PATTERN, canonical_url, date_pattern, in_scope, scope_hosts, trap_reason
from copyhunt.crawl.imagefetch import merge_fetch_results
from copyhunt.crawl.results import CrawlResults
from copyhunt.crawl.validators import VALIDATORS_SCHEMA, Validator, clean_validator, validators_table

# A local server answers in milliseconds: no politeness delays, short backoff.
FAST = {"DOWNLOAD_DELAY": 0, "AUTOTHROTTLE_START_DELAY": 0.01, "COPYHUNT_RETRY_BACKOFF_BASE": 0.1}


# ---- fixtures: images ----------------------------------------------------------------------------
def make_image(fmt: str, size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A valid 30000x30000 1-bit PNG of ~110 kB that decodes to 900 MB of pixels in PIL."""
    width = height = 30_000
    row = bytes(1 + width // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


# ---- pure: image discovery -----------------------------------------------------------------------
DISCOVERY_HTML = """<!doctype html>
<html lang="en"><head>
<title>Every kind</title>
<base href="/blog/">
<meta property="og:image" content="https://cdn.example.com/og.jpg">
<meta name="twitter:image" content="/twitter.jpg">
<script type="application/ld+json">
{"@context": "https://schema.org", "@graph": [
  {"@type": "Article", "datePublished": "2024-01-01",
   "image": [{"@type": "ImageObject", "url": "/ld-object.jpg"}, "/ld-string.jpg"]}]}
</script>
<script type="application/ld+json">{ not json at all</script>
<style>.hero { background: #fff url("/style-block.png") no-repeat } @font-face { src: url(/font.woff) }</style>
</head><body>
<img src="plain.jpg?PHPSESSID=abc&amp;b=2&amp;a=1#top" alt="  Plain   photo ">
<img src="fallback.jpg" srcset="/w_100,h_100/small.jpg 100w, large.jpg 1600w, medium.jpg 800w" alt="Sized">
<picture>
  <source srcset="pic-1x.webp 1x, pic-2x.webp 2x">
  <source data-srcset="lazy-pic-300.jpg 300w, lazy-pic-900.jpg 900w">
  <img src="pic-fallback.jpg" alt="In a picture">
</picture>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="lazy.jpg" alt="Lazy">
<div data-lazy-src="lazy-div.jpg"></div>
<div style="color: red; background-image: url('inline-bg.jpg')"></div>
<a href="full-size.JPEG">Full size</a>
<a href="article.html">not an image</a>
<a href="logo.svg">vector</a>
<img src="plain.jpg?a=1&amp;b=2" alt="duplicate of the first">
<img src="javascript:alert(1)">
</body></html>
"""


def test_discover_images_covers_every_kind() -> None:
    refs = discover_images(DISCOVERY_HTML, "http://Example.com/blog/post.html?id=7")
    got = {(r.url, r.discovered_via): r.alt for r in refs}
    base = "http://example.com"
    assert got == {
        ("https://cdn.example.com/og.jpg", "og:image"): None,
        (f"{base}/twitter.jpg", "twitter:image"): None,
        (f"{base}/style-block.png", "css"): None,
        # session id stripped, query sorted, fragment dropped; whitespace in alt collapsed
        (f"{base}/blog/plain.jpg?a=1&b=2", "img"): "Plain photo",
        (f"{base}/blog/fallback.jpg", "img"): "Sized",
        (f"{base}/blog/large.jpg", "srcset"): "Sized",  # the widest candidate only
        (f"{base}/blog/pic-2x.webp", "picture"): "In a picture",
        (f"{base}/blog/lazy-pic-900.jpg", "data-srcset"): "In a picture",
        (f"{base}/blog/pic-fallback.jpg", "img"): "In a picture",
        (f"{base}/blog/lazy.jpg", "data-src"): "Lazy",
        (f"{base}/blog/lazy-div.jpg", "data-lazy-src"): None,
        (f"{base}/blog/inline-bg.jpg", "css"): None,
        (f"{base}/blog/full-size.JPEG", "a-href"): "Full size",
        (f"{base}/ld-object.jpg", "json-ld"): None,
        (f"{base}/ld-string.jpg", "json-ld"): None,
    }
    assert len(refs) == len(got)  # each URL once
    assert {r.discovered_via for r in refs} == set(DISCOVERY_KINDS)
    # document order, with JSON-LD after the elements
    assert refs[0].discovered_via == "og:image" and refs[-1].discovered_via == "json-ld"


def test_discover_images_edge_cases() -> None:
    assert discover_images("", "http://example.com/") == []
    assert discover_images(b"   ", "http://example.com/") == []
    # bytes with their own encoding; relative URL without <base>
    html = '<meta charset="latin-1"><img src="caf\xe9.jpg" alt="caf\xe9">'.encode("latin-1")
    (ref,) = discover_images(html, "https://example.com/a/b.html")
    assert ref.url == "https://example.com/a/caf%C3%A9.jpg" and ref.alt == "café"
    # a later discovery fills a missing alt
    (ref,) = discover_images('<meta property="og:image" content="/x.jpg"><img src="/x.jpg" alt="X">', "http://e.com/")
    assert ref == ("http://e.com/x.jpg", "og:image", "X")


def test_fast_url_join_agrees_with_urljoin() -> None:
    bases = ["http://e.test/a/b.html?x=1#f", "https://E.test:8443/", "http://e.test", "http://[::1]:80/x/", "http://u:p@e.test/a/"]
    raws = ["/p/1", "/p/1?q=2#z", "http://o.test/../x", "https://o.test/a/./b", "/a//b", "/%7Euser/", "/p/ü.jpg", "/x?y=/.z",
            "/.hidden", "/a/../b", "//cdn.test/x", "x.jpg", "../y", "?q", "/p\\q", "/ spaced", "HTTP://O.test/x", ""]
    for base in bases:
        for raw in raws:
            assert join_url(base, raw) == urljoin(base, raw), (base, raw)


def test_referer() -> None:
    assert referer_for("http://u:pw@e.test/a?b=1", "http://cdn.test/x.jpg") == "http://e.test/a?b=1"
    assert referer_for("https://e.test/a", "https://cdn.test/x.jpg") == "https://e.test/a"
    assert referer_for("https://e.test/a", "http://cdn.test/x.jpg") is None  # never downgrade


def test_srcset_parsing() -> None:
    assert parse_srcset("/w_100,h_100/a.jpg 100w, b.jpg 2x") == [("/w_100,h_100/a.jpg", 100.0, None), ("b.jpg", None, 2.0)]
    assert largest_candidate("a.jpg, b.jpg 2x, c.jpg 1.5x") == "b.jpg"
    assert largest_candidate("a.jpg 480w,b.jpg 1080w,c.jpg 720w") == "b.jpg"
    assert largest_candidate("only.jpg") == "only.jpg"
    assert largest_candidate("") is None and largest_candidate(None) is None


# ---- pure: pages and URL policy ------------------------------------------------------------------
def test_page_meta_and_links() -> None:
    html = """<html lang=" de-AT "><head><title>
      Ein   Beitrag</title>
      <meta property="article:published_time" content="2024-03-01T10:00:00+01:00">
      <meta property="article:modified_time" content="2024-03-02">
      <script type="application/ld+json">{"@type": "BlogPosting", "datePublished": "2024-03-01",
        "dateModified": "2024-03-02", "author": {"@type": "Person", "name": "A"}}</script></head>
      <body><svg><title>icon</title></svg><time datetime="2024-02-29">gestern</time><time>no attr</time>
      <a href="/next?jsessionid=1">n</a><a href="/next">dup</a><a href="photo.jpg">img</a>
      <a href="doc.pdf">pdf</a><a href="mailto:x@y.z">mail</a><a href="https://other.example/">out</a>
      <map><area href="/area"></map></body></html>"""
    meta = page_meta(html)
    assert meta.title == "Ein Beitrag"
    assert meta.language == "de-AT"
    assert meta.date_candidates == ["2024-03-01T10:00:00+01:00", "2024-03-02", "2024-02-29", "2024-03-01"]
    assert json.loads(meta.date_candidates_json) == meta.date_candidates
    # links: canonical, deduplicated, no images/documents/mailto; scope is decided elsewhere
    assert extract_links(html, "http://site.example/dir/page") == [
        "http://site.example/next",
        "https://other.example/",
        "http://site.example/area",
    ]
    assert page_meta("<p>no head</p>") == type(meta)(None, None, [])


def test_url_policy() -> None:
    assert canonical_url("HTTP://Example.COM/a;jsessionid=XYZ?b=2&SID=1&a=1#f") == "http://example.com/a?a=1&b=2"
    assert canonical_url("ftp://example.com/") is None and canonical_url("http:///nohost") is None
    assert canonical_url("http://example.com:notaport/") is None
    assert trap_reason("http://e.com/" + "a" * 2000) == "trap:url-too-long"
    assert trap_reason("http://e.com/?" + "&".join(f"p{i}=1" for i in range(9))) == "trap:too-many-params"
    assert trap_reason("http://e.com/a/b/a/b/a/b/") == "trap:repeating-path"
    assert trap_reason("http://e.com/2024/01/01/post") is None
    hosts = scope_hosts(["http://www.alpine-blog.test/", "https://shop.example:8443/x"])
    assert hosts == {"alpine-blog.test", "shop.example"}
    assert in_scope("http://alpine-blog.test/p", hosts) and in_scope("http://img.www.alpine-blog.test/", hosts)
    assert not in_scope("http://evil-alpine-blog.test/", hosts)


def test_address_rules() -> None:
    blocked = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.100.100.200",
               "0.0.0.0", "224.0.0.1", "240.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "2002:7f00:1::"]  # fmt: skip
    for a in blocked:
        assert address_block_reason(ip_address(a)), a
    assert "metadata" in (address_block_reason(ip_address("169.254.169.254")) or "")
    for a in ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]:
        assert address_block_reason(ip_address(a)) is None, a


def test_retry_timing() -> None:
    assert retry_after_seconds(b"5", now=0) == 5.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_seconds(b"soon", now=0) is None and retry_after_seconds(None, now=0) is None
    assert [backoff_delay(n, 1.0, 5.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


def _project_settings(tmp_path: Path) -> Any:
    from copyhunt.crawl.settings import build_settings

    return build_settings(settings_for(tmp_path), tmp_path / "out")


def test_retry_and_redirect_rules(tmp_path: Path) -> None:
    rules = Politeness.from_settings(_project_settings(tmp_path))  # RETRY_TIMES 2, backoff 1 s doubling, Retry-After cap 120 s
    u = "http://a.test/x.jpg"
    assert [rules.retry_after_response(u, 503, n, None, now=0) for n in (0, 1, 2)] == [Retry(1.0), Retry(2.0), None]
    assert rules.retry_after_response(u, 404, 0, None, now=0) is None  # not a retried status
    assert rules.retry_after_response(u, 429, 0, b"7", now=0) == Retry(7.0, slow_host=True)
    assert rules.retry_after_response(u, 429, 0, b"600", now=0) is None  # reported, not waited for
    assert [rules.retry_after_failure(n) for n in (0, 1, 2)] == [Retry(1.0), Retry(2.0), None]
    assert Politeness.slowed_delay(0.5, Retry(7.0, slow_host=True)) == 7.0 and Politeness.slowed_delay(0.5, Retry(2.0)) == 0.5
    assert [rules.may_redirect(n) for n in (0, 4, 5)] == [True, True, False]  # REDIRECT_MAX_TIMES 5
    assert rules.too_many_redirects(u).reason == "too-many-redirects"
    assert rules.redirect_target(u, 301, "") is None  # an empty Location is not followed back to the same URL
    assert rules.redirect_target(u, 302, "javascript:alert(1)") is None  # the response stands (Scrapy's own request would not build)
    assert referer_after_redirect("https://a.test/p", "http://b.test/x.jpg") is None
    assert referer_after_redirect("https://a.test/p", "https://b.test/x.jpg") == "https://a.test/p"
    assert referer_after_redirect("http://a.test/p", "https://b.test/x.jpg") == "http://a.test/p"
    assert referer_after_redirect(None, "http://b.test/x.jpg") is None


def test_the_rules_decide_as_scrapy_would(tmp_path: Path) -> None:
    """The rules that replaced Scrapy's own code on the page side give Scrapy's answers: redirect
    targets (RedirectMiddleware), AutoThrottle's delays (through PoliteThrottle, the extension the
    page crawler runs), the randomised gap of a downloader slot, and the robots.txt parse."""
    import random

    from scrapy import Request
    from scrapy.core.downloader import Slot
    from scrapy.downloadermiddlewares.redirect import RedirectMiddleware
    from scrapy.extensions.throttle import AutoThrottle
    from scrapy.http import Response
    from scrapy.robotstxt import ProtegoRobotParser
    from scrapy.utils.test import get_crawler

    from copyhunt.crawl.extensions import PoliteThrottle

    settings = _project_settings(tmp_path)
    rules = Politeness.from_settings(settings)
    crawler = get_crawler(settings_dict={**settings.copy_to_dict(), "EXTENSIONS": {}, "DOWNLOADER_MIDDLEWARES": {}, "TWISTED_REACTOR_ENABLED": False})
    scrapy_redirects = RedirectMiddleware.from_crawler(crawler)
    cases = [("http://a.test/p/1", 301, "/p/2"), ("http://a.test/p/1", 302, "q?x=1"), ("https://a.test/p", 307, "//cdn.test/i.jpg"),
             ("http://a.test/p", 308, "http://b.test/ä ö.jpg"), ("http://a.test/p#top", 303, "/elsewhere"), ("http://a.test/p", 301, "  /spaced  "),
             ("http://a.test/p", 302, "ftp://a.test/x"), ("http://a.test/p", 200, "/x"),
             ("http://a.test/p", 304, "/x")]
    for url, status, location in cases:
        out = scrapy_redirects.process_response(Request(url), Response(url, status=status, headers={"Location": location}))
        assert rules.redirect_target(url, status, location.encode()) == (out.url if isinstance(out, Request) else None), (url, status, location)

    theirs, ours = AutoThrottle(crawler), PoliteThrottle(crawler)
    theirs.mindelay, theirs.maxdelay = theirs._min_delay(), theirs._max_delay()
    assert ours._start_delay() == rules.start_delay == max(settings.getfloat("DOWNLOAD_DELAY"), settings.getfloat("AUTOTHROTTLE_START_DELAY"))
    for delay in (0.0, 0.5, 3.0, 40.0):
        for latency in (0.001, 0.4, 2.5, 90.0):
            for status in (200, 404, 503):
                a, b = Slot(1, delay, 0.5), Slot(1, delay, 0.5)
                theirs._adjust_delay(a, latency, Response("http://a.test/", status=status))
                ours._adjust_delay(b, latency, Response("http://a.test/", status=status))
                assert b.delay == a.delay, (delay, latency, status)
    for delay in (0.0, 0.5, 2.0):
        for seed in range(5):
            random.seed(seed)
            expected = Slot(1, delay, rules.jitter).download_delay()
            random.seed(seed)
            assert rules.request_gap(delay) == expected

    body = b"\xef\xbb\xbfUser-agent: *\nDisallow: /private/\n\nUser-agent: BadBot\nDisallow: /\n"
    robots, scrapys = RobotsRules(body), ProtegoRobotParser(body, None)
    for url in ("http://a.test/", "http://a.test/private/x.jpg", "http://a.test/privately"):
        for agent in (rules.user_agent, "BadBot/1.0"):
            assert robots.allowed(url, agent) == scrapys.allowed(url, agent), (url, agent)
    assert not robots.allowed("http://a.test/private/x.jpg", rules.user_agent) and not robots.allowed("http://a.test/", "BadBot/1.0")
    assert rules.robots_allow(None, "http://a.test/private/x.jpg")  # a robots.txt that could not be read allows all
    assert settings.get("ROBOTSTXT_PARSER") == "copyhunt.crawl.politeness.RobotsRules"
    assert settings.getdict("EXTENSIONS")["copyhunt.crawl.extensions.PoliteThrottle"] == 0


# ---- pure: image bytes ---------------------------------------------------------------------------
def test_inspect_image(bomb_png: bytes) -> None:
    jpeg = make_image("JPEG", (64, 48), (200, 10, 10))
    info = inspect_image(jpeg, max_pixels=10_000)
    assert (info.ok, info.format, info.width, info.height, info.bytes) == (True, "jpeg", 64, 48, len(jpeg))
    for fmt, name in [("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tiff")]:
        assert inspect_image(make_image(fmt, (3, 2), (1, 2, 3)), max_pixels=100).format == name
    assert inspect_image(b"<html>not an image</html>", max_pixels=100).error == "not-an-image"
    assert inspect_image(b"\x89PNG\r\n\x1a\n garbage", max_pixels=100).error == "corrupt-image"
    assert inspect_image(jpeg, max_pixels=10_000, max_bytes=100).error == "too-large"
    # our limit, below PIL's own: refused with the size the header claims
    small_limit = inspect_image(jpeg, max_pixels=1000)
    assert (small_limit.error, small_limit.width, small_limit.height) == ("decompression-bomb", 64, 48)
    # a real bomb: refused from its header in well under the time (and 900 MB) decoding would take
    assert inspect_image(bomb_png, max_pixels=64_000_000).error == "decompression-bomb"


def test_output_tables_are_deterministic(tmp_path: Path) -> None:
    rows = [{"url": f"http://e.com/{i}", "reason": "http-404", "detail": ""} for i in (3, 1, 2)]
    a = write_table(tmp_path / "a", "errors", rows).read_bytes()
    b = write_table(tmp_path / "b", "errors", list(reversed(rows))).read_bytes()
    assert a == b
    assert pq.read_table(tmp_path / "a" / "errors.parquet").column("url").to_pylist() == [f"http://e.com/{i}" for i in (1, 2, 3)]


# ---- a real HTTP server ----------------------------------------------------------------------------
Reply = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Stream:
    """A body of ``size`` bytes written in 1 MB chunks, never held in memory whole."""

    size: int
    content_type: str = "image/jpeg"
    declare_length: bool = True  # False: no Content-Length, the body ends when the connection does


HANG = "hang"  # a route that accepts the request and never answers


def socket_buffer_bytes() -> int:
    """The most a TCP connection can hold in flight here: the receiver's buffer at its largest
    (Linux grows it while the crawler reads; 32 MB on this machine) and the sender's, and a 1 MB
    write of the test server. What a server sees written past a dropped connection's cap."""
    largest = 0
    for name in ("tcp_rmem", "tcp_wmem"):
        try:
            largest += int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
        except (OSError, IndexError, ValueError):
            largest += 8 * 1024 * 1024
    return largest + 1024 * 1024


@dataclass(frozen=True)
class Served:
    """One request as the server saw it: what was asked, with which headers, and what it sent."""

    url: str
    headers: dict[str, str]
    status: int
    body_bytes: int


@dataclass
class FakeWeb:
    """Routes keyed by absolute URL (with its query, without fragment); serves as an origin server and as a forward
    proxy. Answers conditional requests for routes that carry an ETag or Last-Modified header,
    and logs every request."""

    routes: dict[str, Reply | Callable[[int], Reply] | Stream | str] = field(default_factory=dict)
    prefixes: dict[str, Callable[[str], Reply]] = field(default_factory=dict)  # URL prefix -> page maker
    hits: Counter[str] = field(default_factory=Counter)
    log: list[Served] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    base: str = ""

    def add(self, url: str, body: bytes | str, content_type: str = "text/html; charset=utf-8", status: int = 200, **headers: str) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.routes[url] = (status, {"Content-Type": content_type, **headers}, data)

    def route(self, url: str) -> Reply | Stream | str:
        with self.lock:
            self.hits[url] += 1
            n = self.hits[url]
        route = self.routes.get(url)
        if route is None:
            for prefix, make in self.prefixes.items():
                if url.startswith(prefix):
                    return make(url)
            return 404, {"Content-Type": "text/html"}, b"<h1>not found</h1>"
        return route(n) if callable(route) else route

    def record(self, served: Served) -> None:
        with self.lock:
            self.log.append(served)

    def served(self, url: str) -> list[Served]:
        with self.lock:
            return [s for s in self.log if s.url == url]


def not_modified(request_headers: Any, reply_headers: dict[str, str]) -> bool:
    etag, last_modified = reply_headers.get("ETag"), reply_headers.get("Last-Modified")
    if request_headers.get("If-None-Match") is not None:
        return etag is not None and etag in [t.strip() for t in request_headers["If-None-Match"].split(",")]
    return last_modified is not None and request_headers.get("If-Modified-Since") == last_modified


def serve(web: FakeWeb) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            # A proxy gets the absolute URL in the request line; an origin server gets a path.
            url = self.path if self.path.startswith("http") else f"http://{self.headers['Host']}{self.path}"
            parts = urlsplit(url)
            key = f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")
            route = web.route(key)
            asked = dict(self.headers.items())
            if route == HANG:
                web.record(Served(key, asked, 0, 0))
                web.stopping.wait(60)
                return
            if isinstance(route, Stream):
                web.record(Served(key, asked, 200, self.stream(route)))
                return
            status, headers, body = route  # type: ignore[misc]
            if 200 <= status < 300 and not_modified(self.headers, headers):
                status, body = 304, b""
                headers = {k: v for k, v in headers.items() if k in ("ETag", "Last-Modified")}
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            web.record(Served(key, asked, status, len(body)))

        def stream(self, route: Stream) -> int:
            self.send_response(200)
            self.send_header("Content-Type", route.content_type)
            if route.declare_length:
                self.send_header("Content-Length", str(route.size))
            self.end_headers()
            chunk = b"\xff\xd8\xff\xe0" + bytes(1024 * 1024 - 4)
            sent = 0
            try:
                while sent < route.size:
                    n = min(len(chunk), route.size - sent)
                    self.wfile.write(chunk[:n])
                    sent += n
            except OSError:  # the crawler hung up: exactly what a size cap should do
                pass
            return sent

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture()
def web() -> Iterator[FakeWeb]:
    fake = FakeWeb()
    server, fake.base = serve(fake)
    yield fake
    fake.stopping.set()  # release hanging handlers
    server.shutdown()
    server.server_close()


def settings_for(tmp_path: Path, **kw: object) -> Settings:
    # One crawler process unless a test asks for the image fetcher: a second interpreter per
    # crawl doubles the start-up cost, and the fetcher's path is covered by the tests that ask.
    kw.setdefault("crawl_image_processes", 0)
    return Settings(home=tmp_path, **kw)  # type: ignore[arg-type]


def table(summary: CrawlSummary, name: str) -> list[dict]:
    return pq.read_table(summary.out_dir / f"{name}.parquet").to_pylist()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- integration: a small site ----------------------------------------------------------------------
@pytest.mark.parametrize("image_processes", [1, 0], ids=["image-fetcher-process", "one-process"])
def test_crawl_local_site(tmp_path: Path, web: FakeWeb, bomb_png: bytes, image_processes: int) -> None:
    b = web.base
    index = f"""<!doctype html><html lang="en"><head><title>Alpine blog</title>
      <meta property="og:image" content="/img/hero.jpg">
      <meta property="article:published_time" content="2024-03-01T10:00:00Z">
      <script type="application/ld+json">{{"@type": "BlogPosting", "datePublished": "2024-03-01", "image": "/img/hero.jpg"}}</script>
      </head><body>
      <img src="/img/a.jpg" alt="Lake">
      <img src="/img/b-small.png" srcset="/img/b-small.png 320w, /img/b-large.png 1280w" alt="Peak">
      <img src="/img/fake.jpg" alt="Fake">
      <a href="/post1.html?sid=abc123">Post 1</a> <a href="/missing.html">gone</a>
      <a href="/private/secret.html">secret</a> <a href="/busy.html">busy</a>
      <a href="http://elsewhere.invalid/">offsite</a> <a href="{b}/">home</a>
      </body></html>"""
    post1 = """<html lang="de"><head><title>Post 1</title></head><body>
      <time datetime="2024-02-01">1. Februar</time>
      <img src="/img/a.jpg" alt="Lake again"><img src="/img/bomb.png"><a href="/">home</a></body></html>"""
    busy = "<html><head><title>Busy</title></head><body>made it</body></html>"
    images = {
        "hero.jpg": make_image("JPEG", (200, 100), (0, 90, 200)),
        "a.jpg": make_image("JPEG", (64, 48), (200, 10, 10)),
        "b-small.png": make_image("PNG", (80, 60), (10, 200, 10)),
        "b-large.png": make_image("PNG", (400, 300), (10, 200, 10)),
    }
    web.add(f"{b}/robots.txt", "User-agent: *\nDisallow: /private/\n", "text/plain")
    web.add(f"{b}/", index)
    web.add(f"{b}/post1.html", post1)
    web.add(f"{b}/private/secret.html", "<title>secret</title>")
    web.routes[f"{b}/busy.html"] = lambda n: (429, {"Retry-After": "1", "Content-Type": "text/html"}, b"slow down") if n == 1 else (200, {"Content-Type": "text/html"}, busy.encode())
    for name, data in images.items():
        web.add(f"{b}/img/{name}", data, "image/png" if name.endswith("png") else "image/jpeg")
    web.add(f"{b}/img/fake.jpg", "<html><body>I am HTML</body></html>", "image/jpeg")  # lies about its type
    web.add(f"{b}/img/bomb.png", bomb_png, "image/png")

    cfg = settings_for(tmp_path, crawl_image_processes=image_processes)
    summary = run_crawl([f"{b}/"], tmp_path / "crawl", cfg, allow_private=True, timeout_s=60, scrapy_overrides=FAST)

    assert (summary.pages, summary.images, summary.images_stored, summary.errors) == (3, 7, 4, 4)
    assert summary.finish_reason == "finished"

    pages = {p["url"]: p for p in table(summary, "pages")}
    assert set(pages) == {f"{b}/", f"{b}/post1.html", f"{b}/busy.html"}  # sid stripped from the link
    home = pages[f"{b}/"]
    assert (home["status"], home["title"], home["language"], home["depth"], home["domain"]) == (200, "Alpine blog", "en", 0, "127.0.0.1")
    assert home["final_url"] == f"{b}/" and home["content_type"].startswith("text/html")
    assert json.loads(home["date_candidates"]) == ["2024-03-01T10:00:00Z", "2024-03-01"]
    assert home["fetched_at"].tzinfo is not None and home["last_modified"] is None
    assert (pages[f"{b}/post1.html"]["language"], pages[f"{b}/post1.html"]["depth"]) == ("de", 1)
    assert json.loads(pages[f"{b}/post1.html"]["date_candidates"]) == ["2024-02-01"]
    assert pages[f"{b}/busy.html"]["title"] == "Busy"  # 429 + Retry-After, then success

    blobs = LocalBlobStore(cfg.blob_root)
    assert blobs.get(home["html_sha256"]) == index.encode()  # the HTML itself is kept as evidence

    rows = {(r["page_url"], r["image_url"]): r for r in table(summary, "images")}
    expected = {
        (f"{b}/", f"{b}/img/hero.jpg"): ("og:image", "hero.jpg"),
        (f"{b}/", f"{b}/img/a.jpg"): ("img", "a.jpg"),
        (f"{b}/", f"{b}/img/b-small.png"): ("img", "b-small.png"),
        (f"{b}/", f"{b}/img/b-large.png"): ("srcset", "b-large.png"),
        (f"{b}/", f"{b}/img/fake.jpg"): ("img", None),
        (f"{b}/post1.html", f"{b}/img/a.jpg"): ("img", "a.jpg"),
        (f"{b}/post1.html", f"{b}/img/bomb.png"): ("img", None),
    }
    assert set(rows) == set(expected)
    for key, (via, name) in expected.items():
        row = rows[key]
        assert row["discovered_via"] == via, key
        if name is None:
            assert row["blob_sha256"] is None, key
            continue
        data = images[name]
        assert row["blob_sha256"] == sha(data) and blobs.get(row["blob_sha256"]) == data
        with Image.open(io.BytesIO(data)) as im:
            assert (row["width"], row["height"], row["format"], row["bytes"]) == (*im.size, im.format.lower(), len(data))
    assert rows[(f"{b}/", f"{b}/img/a.jpg")]["alt"] == "Lake"
    assert rows[(f"{b}/post1.html", f"{b}/img/a.jpg")]["alt"] == "Lake again"
    assert rows[(f"{b}/post1.html", f"{b}/img/bomb.png")]["format"] == "png"

    errors = {(e["url"], e["reason"]) for e in table(summary, "errors")}
    assert errors == {
        (f"{b}/missing.html", "http-404"),
        (f"{b}/private/secret.html", "robots"),
        (f"{b}/img/fake.jpg", "not-an-image"),
        (f"{b}/img/bomb.png", "decompression-bomb"),
    }
    assert web.hits[f"{b}/img/a.jpg"] == 1  # shown on two pages, fetched once
    assert web.hits[f"{b}/private/secret.html"] == 0
    assert web.hits[f"{b}/busy.html"] == 2
    assert web.hits[f"{b}/robots.txt"] == 1 + image_processes  # each crawler process reads it once
    # Images were fetched by the process meant to, with the page as Referer.
    crawl = json.loads((summary.out_dir / "crawl.json").read_text())
    assert crawl["image_fetcher"].get("sent", 0) == (6 if image_processes else 0)
    (hero,) = web.served(f"{b}/img/hero.jpg")
    assert hero.headers.get("Referer") == f"{b}/"
    assert not any("elsewhere" in url for url in web.hits)

    # Sorted, so a re-read is stable; and the run left its seeds and log behind.
    urls = [p["url"] for p in table(summary, "pages")]
    assert urls == sorted(urls)
    assert (summary.out_dir / "seeds.txt").read_text() == f"{b}/\n" and (summary.out_dir / "crawl.log").exists()


def test_private_addresses_refused_by_default(tmp_path: Path, web: FakeWeb) -> None:
    b = web.base
    web.add(f"{b}/", "<title>should never be fetched</title>")
    summary = run_crawl([f"{b}/"], tmp_path / "crawl", settings_for(tmp_path), timeout_s=60, scrapy_overrides=FAST)
    assert (summary.pages, summary.images, summary.errors) == (0, 0, 1)
    (error,) = table(summary, "errors")
    assert (error["url"], error["reason"]) == (f"{b}/", "blocked:private-address")
    assert "loopback" in error["detail"]
    assert sum(web.hits.values()) == 0  # not even robots.txt


def test_through_proxy_like_the_demo_web(tmp_path: Path, web: FakeWeb) -> None:
    """``*.test`` names do not resolve here, so they go to the proxy; private targets never do."""
    site, cdn = "http://alpine-blog.test", "http://cdn.alpine-blog.test"
    photo = make_image("JPEG", (120, 90), (30, 30, 30))
    web.add(f"{site}/robots.txt", "User-agent: *\nAllow: /\n", "text/plain")
    web.add(f"{site}/", f"""<html><head><title>Through the proxy</title></head><body>
        <img src="{cdn}/photo.jpg" alt="Summit"><img src="http://localhost:9/internal.jpg">
        <a href="/go">go</a></body></html>""")
    web.add(f"{site}/go", "", status=302, Location="http://169.254.169.254/latest/meta-data/")
    web.add(f"{cdn}/photo.jpg", photo, "image/jpeg")

    cfg = settings_for(tmp_path, crawl_proxy=web.base, crawl_allow_private=False)
    summary = run_crawl([f"{site}/"], tmp_path / "crawl", cfg, timeout_s=60, scrapy_overrides=FAST)

    assert [p["url"] for p in table(summary, "pages")] == [f"{site}/"]
    images = {r["image_url"]: r["blob_sha256"] for r in table(summary, "images")}
    assert images == {f"{cdn}/photo.jpg": sha(photo), "http://localhost:9/internal.jpg": None}
    errors = {e["url"]: e for e in table(summary, "errors")}
    assert set(errors) == {"http://localhost:9/internal.jpg", f"{site}/go"}
    assert {e["reason"] for e in errors.values()} == {"blocked:private-address"}
    assert "169.254.169.254" in errors[f"{site}/go"]["detail"]  # refused on the redirect hop
    assert web.hits[f"{site}/go"] == 1
    assert not any(urlsplit(u).hostname in ("localhost", "169.254.169.254") for u in web.hits)


def test_budget_depth_and_traps(tmp_path: Path, web: FakeWeb) -> None:
    b = web.base
    pic = make_image("PNG", (10, 10), (1, 2, 3))
    web.add(f"{b}/", """<title>home</title><a href="/a/a/a/loop">trap</a><a href="/d1">deeper</a>
        <a href="/p1">1</a><a href="/p2">2</a><a href="/p3">3</a><a href="/p4">4</a>""")
    web.add(f"{b}/d1", '<title>d1</title><img src="/deep.png"><a href="/d2">further</a>')
    for name in ("d2", "p1", "p2", "p3", "p4"):
        web.add(f"{b}/{name}", f"<title>{name}</title>")
    web.add(f"{b}/deep.png", pic, "image/png")

    cfg = settings_for(tmp_path, crawl_depth_limit=1)
    summary = run_crawl([f"{b}/"], tmp_path / "crawl", cfg, max_pages=4, allow_private=True, timeout_s=60, scrapy_overrides=FAST)

    # Budget 4 per domain, counted in link order: home, d1, p1, p2. Depth 1 stops /d2, but the
    # images of depth-1 pages are still fetched.
    assert {p["url"] for p in table(summary, "pages")} == {f"{b}/", f"{b}/d1", f"{b}/p1", f"{b}/p2"}
    assert [(r["image_url"], r["blob_sha256"]) for r in table(summary, "images")] == [(f"{b}/deep.png", sha(pic))]
    assert [(e["url"], e["reason"]) for e in table(summary, "errors")] == [(f"{b}/a/a/a/loop", "trap:repeating-path")]
    assert web.hits[f"{b}/d2"] == web.hits[f"{b}/p3"] == web.hits[f"{b}/a/a/a/loop"] == 0


# ---- pure: marketplaces, seeds, calendars, validators ------------------------------------------------
def test_product_sellers_from_json_ld_and_microdata() -> None:
    jsonld = """<html><head><script type="application/ld+json">
      {"@context": "https://schema.org", "@type": "Product", "name": "Lamp",
       "offers": {"@type": "Offer", "price": "12.00",
                  "seller": {"@type": "Organization", "name": "  Retro   Garage ", "url": "/seller/retro"}}}
      </script></head><body><p>Lamp</p></body></html>"""
    assert product_sellers(jsonld, "http://m.test/item/1") == [ProductSeller("Retro Garage", "http://m.test/seller/retro", "json-ld")]
    assert is_product_page(jsonld)

    aggregate = """<script type="application/ld+json">{"@graph": [
      {"@type": "Product", "offers": {"@type": "AggregateOffer", "offers": [
        {"@type": "Offer", "seller": {"@type": "Person", "name": "Ana"}},
        {"@type": "Offer", "seller": "Bo's Shop"}]}},
      {"@type": "Offer", "itemOffered": {"@type": "Product", "name": "Mug"},
       "seller": {"@type": "Organization", "name": "Mugs Ltd", "url": "https://mugs.example/"}},
      {"@type": "Organization", "name": "The marketplace itself"}]}</script>"""
    assert product_sellers(aggregate, "http://m.test/") == [
        ProductSeller("Ana", None, "json-ld"),
        ProductSeller("Bo's Shop", None, "json-ld"),
        ProductSeller("Mugs Ltd", "https://mugs.example/", "json-ld"),
    ]

    microdata = """<div itemscope itemtype="https://schema.org/Product"><h1 itemprop="name">Jacket</h1>
      <div itemprop="offers" itemscope itemtype="https://schema.org/Offer"><span itemprop="price" content="9">9</span>
      Sold by <span itemprop="seller" itemscope itemtype="https://schema.org/Organization">
      <a itemprop="url" href="/seller/home-finds"><span itemprop="name">Home Finds</span></a></span></div></div>"""
    assert product_sellers(microdata, "http://m.test/item/2") == [ProductSeller("Home Finds", "http://m.test/seller/home-finds", "microdata")]
    assert is_product_page(microdata)

    # The same seller in both forms is reported once, from JSON-LD.
    both = jsonld.replace("<p>Lamp</p>", microdata.replace("Home Finds", "Retro Garage").replace("/seller/home-finds", "/seller/retro"))
    assert product_sellers(both, "http://m.test/item/1") == [ProductSeller("Retro Garage", "http://m.test/seller/retro", "json-ld")]

    # No product: no seller, even if an Organization is described; broken JSON is skipped.
    page = '<script type="application/ld+json">{"@type": "Organization", "name": "X"}</script><script type="application/ld+json">{oops</script>'
    assert product_sellers(page, "http://m.test/") == [] and not is_product_page(page)
    assert product_sellers("", "http://m.test/") == []
    long_name = '<script type="application/ld+json">{"@type": "Product", "offers": {"seller": {"name": "%s"}}}</script>' % ("x" * 5000)
    (seller,) = product_sellers(long_name, "http://m.test/")
    assert seller.name is not None and len(seller.name) == MAX_NAME_LENGTH


def test_pagination_links() -> None:
    html = """<html><head><link rel="next" href="/shop?page=3&amp;sort=new"></head><body>
      <a href="/shop?sort=new&amp;page=1">1</a> <a href="/item/9">item</a> <a href="/shop?page=4&amp;sort=new">4</a>
      <a href="/shop?page=5&amp;sort=old">other sorting</a> <a href="/other?page=2">other listing</a>
      <nav class="pagination"><a href="/shop?sort=new">first</a><a href="/help">help</a></nav></body></html>"""
    assert pagination_links(html, "http://m.test/shop?page=2&sort=new") == [
        "http://m.test/shop?page=3&sort=new",
        "http://m.test/shop?page=1&sort=new",
        "http://m.test/shop?page=4&sort=new",
        "http://m.test/shop?sort=new",
    ]
    blog = '<a href="/blog/page/3/">older</a><a href="/blog/">newest</a><a href="/blog/post">post</a>'
    assert pagination_links(blog, "http://b.test/blog/page/2/") == ["http://b.test/blog/page/3/"]
    assert listing_key("http://b.test/blog/page/7/") == listing_key("http://b.test/blog/")
    assert is_pagination_of("http://m.test/l?page=2", "http://m.test/l") and not is_pagination_of("http://m.test/item/2", "http://m.test/l")


def test_seed_assignment() -> None:
    seeds = ["http://blog.test/", "marketplace http://shop.test/", "http://shop.test/sale", "http://www.bazaar.test/",
             "site http://bazaar.test/news", "http://m.big.test/", "nonsense here", "crawl http://x.test/ now"]
    got = assign_spiders(seeds, parse_hosts("bazaar.test, BIG.test,"))
    assert got == {
        "site": ["http://blog.test/", "http://bazaar.test/news", "nonsense here", "crawl http://x.test/ now"],
        "marketplace": ["http://shop.test/", "http://shop.test/sale", "http://www.bazaar.test/", "http://m.big.test/"],
    }
    assert parse_seed(" marketplace  http://a.test/ ") == ("marketplace", "http://a.test/")
    with pytest.raises(SeedError):
        parse_seed("spider http://a.test/")


def test_date_patterns() -> None:
    calendar = {date_pattern(f"http://e.test/calendar/{y}/{m:02d}") for y in (2024, 2031) for m in (1, 12)}
    assert calendar == {"e.test/calendar/N/N?"}
    assert date_pattern("http://e.test/events?date=2026-11-21") == date_pattern("http://e.test/events?date=1999-01-01")
    assert date_pattern("http://e.test/cal?month=5&year=2024") == "e.test/cal?month=N&year=N"
    assert date_pattern("http://e.test/day/20240301") == "e.test/day/N?"
    # dated posts keep their slug, so each has its own pattern; numbers that are not dates are not
    assert date_pattern("http://e.test/2024/03/01/my-post") != date_pattern("http://e.test/2024/03/02/other-post")
    for url in ("http://e.test/item/1003-poster", "http://e.test/product/2024", "http://e.test/listings?page=2", "http://e.test/p/123456789"):
        assert date_pattern(url) is None, url


def test_validators_table() -> None:
    images = pa.Table.from_pylist(
        [
            {"image_url": "http://e.test/b.jpg", "page_url": "http://e.test/1", "blob_sha256": "b" * 64, "bytes": 10, "width": 2, "height": 1, "format": "jpeg", "etag": '"b"', "last_modified": None},
            {"image_url": "http://e.test/b.jpg", "page_url": "http://e.test/2", "blob_sha256": "b" * 64, "bytes": 10, "width": 2, "height": 1, "format": "jpeg", "etag": '"b"', "last_modified": None},
            {"image_url": "http://e.test/a.jpg", "page_url": "http://e.test/1", "blob_sha256": "a" * 64, "bytes": 5, "width": 1, "height": 1, "format": "png", "etag": None, "last_modified": "Sun, 01 Jun 2025 07:00:00 GMT"},
            {"image_url": "http://e.test/no-validator.jpg", "page_url": "http://e.test/1", "blob_sha256": "c" * 64, "bytes": 5, "width": 1, "height": 1, "format": "png", "etag": None, "last_modified": None},
            {"image_url": "http://e.test/failed.jpg", "page_url": "http://e.test/1", "blob_sha256": None, "bytes": 5, "width": None, "height": None, "format": None, "etag": '"f"', "last_modified": None},
        ]
    )
    got = validators_table(images)
    assert got.column("image_url").to_pylist() == ["http://e.test/a.jpg", "http://e.test/b.jpg"]
    assert got.schema == VALIDATORS_SCHEMA
    # a table from before validators were kept gives none, not an error
    assert validators_table(images.drop_columns(["etag", "last_modified"])).num_rows == 0


# ---- integration: failures, traps, sizes, safety -------------------------------------------------------
def test_server_errors_hangs_and_redirect_loops(tmp_path: Path, web: FakeWeb) -> None:
    b = web.base
    pic = make_image("JPEG", (20, 10), (9, 9, 9))
    web.add(f"{b}/", """<title>home</title><a href="/broken">500</a><a href="/slow">hangs</a>
        <a href="/loop-a">loop</a><a href="/fine">fine</a><img src="/img/broken.jpg"><img src="/img/ok.jpg">
        <img src="/img/moved.jpg">""")
    web.add(f"{b}/img/moved.jpg", "", status=301, Location="/img/new-home.jpg")
    web.add(f"{b}/img/new-home.jpg", pic, "image/jpeg")
    web.add(f"{b}/broken", "<h1>oops</h1>", status=500)
    web.add(f"{b}/img/broken.jpg", "oops", "text/plain", status=500)
    web.routes[f"{b}/slow"] = HANG
    web.add(f"{b}/loop-a", "", status=302, Location="/loop-b")
    web.add(f"{b}/loop-b", "", status=302, Location="/loop-a")
    web.add(f"{b}/fine", "<title>fine</title>")
    web.add(f"{b}/img/ok.jpg", pic, "image/jpeg")

    cfg = settings_for(tmp_path, crawl_timeout_seconds=1.0)
    summary = run_crawl([f"{b}/"], tmp_path / "crawl", cfg, allow_private=True, timeout_s=60, scrapy_overrides=FAST)

    assert summary.finish_reason == "finished"  # nothing above stalls or fails the run
    assert {p["url"] for p in table(summary, "pages")} == {f"{b}/", f"{b}/fine"}
    errors = {e["url"]: e["reason"] for e in table(summary, "errors")}
    assert errors == {
        f"{b}/broken": "http-500",
        f"{b}/img/broken.jpg": "http-500",
        f"{b}/slow": "timeout",
        f"{b}/loop-a": "too-many-redirects",
    }
    # 500s and timeouts are retried RETRY_TIMES (2) times with backoff, then reported
    assert web.hits[f"{b}/broken"] == web.hits[f"{b}/img/broken.jpg"] == web.hits[f"{b}/slow"] == 3
    # a redirect loop is cut after REDIRECT_MAX_TIMES (5) hops
    assert web.hits[f"{b}/loop-a"] + web.hits[f"{b}/loop-b"] == 6
    images = {r["image_url"]: (r["blob_sha256"], r["final_url"]) for r in table(summary, "images")}
    assert images == {
        f"{b}/img/broken.jpg": (None, None),
        f"{b}/img/ok.jpg": (sha(pic), f"{b}/img/ok.jpg"),
        f"{b}/img/moved.jpg": (sha(pic), f"{b}/img/new-home.jpg"),  # where the redirect led
    }
    # The page stays the Referer across the redirect, as a browser sends it.
    (moved,) = web.served(f"{b}/img/new-home.jpg")
    assert moved.headers.get("Referer") == f"{b}/"


def test_endless_calendar_is_cut(tmp_path: Path, web: FakeWeb) -> None:
    b = web.base

    def month_page(url: str) -> Reply:
        year, month = (int(x) for x in urlsplit(url).path.split("/")[2:4])
        prev_y, prev_m = (year, month - 1) if month > 1 else (year - 1, 12)
        next_y, next_m = (year, month + 1) if month < 12 else (year + 1, 1)
        body = (f"<title>{year}-{month:02d}</title><h1>Events</h1><p>No events.</p>"
                f'<a href="/calendar/{prev_y}/{prev_m:02d}">previous</a> <a href="/calendar/{next_y}/{next_m:02d}">next</a>')
        return 200, {"Content-Type": "text/html"}, body.encode()

    web.prefixes[f"{b}/calendar/"] = month_page
    web.add(f"{b}/", '<title>home</title><a href="/calendar/2026/11">events</a><a href="/about">about</a>')
    web.add(f"{b}/about", '<title>about</title><a href="/2026/03/01/a-dated-post">post</a>')
    web.add(f"{b}/2026/03/01/a-dated-post", "<title>post</title>")

    # Neither the depth limit nor the page budget is what stops it here.
    cfg = settings_for(tmp_path, crawl_depth_limit=1000)
    summary = run_crawl([f"{b}/"], tmp_path / "crawl", cfg, max_pages=1000, allow_private=True, timeout_s=120, scrapy_overrides=FAST)

    assert summary.finish_reason == "finished"
    fetched = {p["url"] for p in table(summary, "pages")}
    calendar = {u for u in fetched if "/calendar/" in u}
    assert len(calendar) == MAX_PAGES_PER_DATE_PATTERN
    assert f"{b}/calendar/2026/11" in calendar and f"{b}/2026/03/01/a-dated-post" in fetched
    assert sum(n for u, n in web.hits.items() if "/calendar/" in u) == MAX_PAGES_PER_DATE_PATTERN
    (trap,) = table(summary, "errors")  # reported once, not once per date
    assert trap["reason"] == "trap:calendar" and "/calendar/N/N" in trap["detail"]


def test_size_cap_stops_a_100mb_image(tmp_path: Path, web: FakeWeb) -> None:
    b = web.base
    hundred_mb = 100 * 1024 * 1024
    small = make_image("PNG", (30, 20), (5, 6, 7))
    web.add(f"{b}/", '<title>big</title><img src="/img/declared.jpg"><img src="/img/undeclared.jpg"><img src="/img/small.png">')
    web.routes[f"{b}/img/declared.jpg"] = Stream(hundred_mb)
    web.routes[f"{b}/img/undeclared.jpg"] = Stream(hundred_mb, declare_length=False)
    web.add(f"{b}/img/small.png", small, "image/png")

    cfg = settings_for(tmp_path)  # crawl_max_image_bytes: 20 MB
    summary = run_crawl([f"{b}/"], tmp_path / "crawl", cfg, allow_private=True, timeout_s=60, scrapy_overrides=FAST)

    errors = {e["url"]: e["reason"] for e in table(summary, "errors")}
    assert errors == {f"{b}/img/declared.jpg": "too-large", f"{b}/img/undeclared.jpg": "too-large"}
    images = {r["image_url"]: r["blob_sha256"] for r in table(summary, "images")}
    assert images[f"{b}/img/small.png"] == sha(small)
    # Refused from its Content-Length before the body; without one, cut off near the cap.
    (declared,) = web.served(f"{b}/img/declared.jpg")
    (undeclared,) = web.served(f"{b}/img/undeclared.jpg")
    assert declared.body_bytes < cfg.crawl_max_image_bytes
    assert undeclared.body_bytes < cfg.crawl_max_image_bytes + 16 * 1024 * 1024  # the cap plus socket buffers
    assert not any(p.stat().st_size > cfg.crawl_max_image_bytes for p in cfg.blob_root.rglob("*") if p.is_file())


def test_redirects_to_private_addresses_are_refused(tmp_path: Path, web: FakeWeb) -> None:
    """Seen through the proxy, as in production behind an egress proxy: the public page is
    fetched, every hop that points at a private address is refused before it is sent."""
    site = "http://news.test"
    port = urlsplit(web.base).port
    web.add(f"{site}/robots.txt", "User-agent: *\nAllow: /\n", "text/plain")
    web.add(f"{site}/", """<title>news</title><a href="/to-loopback">a</a><a href="/to-lan">b</a>
        <img src="/img/to-router.jpg"><a href="/to-localhost-name">c</a>""")
    web.add(f"{site}/to-loopback", "", status=302, Location=f"http://127.0.0.1:{port}/admin")
    web.add(f"{site}/to-lan", "", status=301, Location="http://10.0.0.7/internal")
    web.add(f"{site}/to-localhost-name", "", status=307, Location=f"http://localhost:{port}/admin")
    web.add(f"{site}/img/to-router.jpg", "", status=302, Location="http://[::ffff:192.168.1.1]/cam.jpg")
    web.add(f"http://127.0.0.1:{port}/admin", "<title>admin panel</title>")

    cfg = settings_for(tmp_path, crawl_proxy=web.base, crawl_allow_private=False)
    summary = run_crawl([f"{site}/"], tmp_path / "crawl", cfg, timeout_s=60, scrapy_overrides=FAST)

    assert [p["url"] for p in table(summary, "pages")] == [f"{site}/"]
    errors = {e["url"]: e for e in table(summary, "errors")}
    assert set(errors) == {f"{site}/to-loopback", f"{site}/to-lan", f"{site}/to-localhost-name", f"{site}/img/to-router.jpg"}
    assert {e["reason"] for e in errors.values()} == {"blocked:private-address"}
    assert "127.0.0.1" in errors[f"{site}/to-loopback"]["detail"] and "10.0.0.7" in errors[f"{site}/to-lan"]["detail"]
    # Only the public hops ever reached the network.
    assert {urlsplit(s.url).hostname for s in web.log} == {"news.test"}


DISCOVERY_PAGE = """<!doctype html><html><head><title>every form</title>
<meta property="og:image" content="/img/og.jpg">
<meta name="twitter:image" content="/img/twitter.jpg">
<script type="application/ld+json">{"@type": "Article", "image": {"@type": "ImageObject", "url": "/img/json-ld.jpg"}}</script>
<style>.hero { background-image: url('/img/css.jpg') }</style>
</head><body>
<img src="/img/img.jpg" alt="plain">
<img src="/img/img.jpg" srcset="/img/srcset-small.jpg 300w, /img/srcset.jpg 1200w" alt="sized">
<picture><source srcset="/img/picture-1x.webp 1x, /img/picture.webp 2x"><img src="/img/img.jpg" alt="plain"></picture>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="/img/data-src.jpg" alt="lazy">
<img data-lazy-src="/img/data-lazy-src.jpg">
<div data-srcset="/img/data-srcset-1.jpg 1x, /img/data-srcset.jpg 2x"></div>
<a href="/img/a-href.jpg">full size</a>
</body></html>"""


def test_every_discovery_form_end_to_end(tmp_path: Path, web: FakeWeb) -> None:
    b = web.base
    web.add(f"{b}/", DISCOVERY_PAGE)
    expected = {"img": "img.jpg", "srcset": "srcset.jpg", "picture": "picture.webp", "data-src": "data-src.jpg",
                "data-lazy-src": "data-lazy-src.jpg", "data-srcset": "data-srcset.jpg", "og:image": "og.jpg",
                "twitter:image": "twitter.jpg", "json-ld": "json-ld.jpg", "css": "css.jpg", "a-href": "a-href.jpg"}
    assert set(expected) == set(DISCOVERY_KINDS)
    served = {}
    for i, name in enumerate(sorted(expected.values())):
        fmt = "WEBP" if name.endswith("webp") else "JPEG"
        served[name] = make_image(fmt, (40 + i, 30), (20 * i, 100, 200 - 10 * i))
        web.add(f"{b}/img/{name}", served[name], "image/webp" if fmt == "WEBP" else "image/jpeg")

    summary = run_crawl([f"{b}/"], tmp_path / "crawl", settings_for(tmp_path), allow_private=True, timeout_s=60, scrapy_overrides=FAST)

    rows = {r["discovered_via"]: r for r in table(summary, "images")}
    assert set(rows) == set(DISCOVERY_KINDS)
    for via, name in expected.items():
        assert rows[via]["image_url"] == f"{b}/img/{name}", via
        assert rows[via]["blob_sha256"] == sha(served[name]), via
        assert web.hits[f"{b}/img/{name}"] == 1, via
    # the smaller srcset/picture candidates are not fetched
    assert web.hits[f"{b}/img/srcset-small.jpg"] == web.hits[f"{b}/img/picture-1x.webp"] == web.hits[f"{b}/img/data-srcset-1.jpg"] == 0
    assert (rows["img"]["alt"], rows["srcset"]["alt"], rows["data-src"]["alt"]) == ("plain", "sized", "lazy")
    assert table(summary, "errors") == []


# ---- integration: a second day, a marketplace, the command line --------------------------------------
def test_second_day_reuses_unchanged_images(tmp_path: Path, web: FakeWeb) -> None:
    """hunt.crawl on two days: day 2 sends day 1's validators and downloads only what changed."""
    from copyhunt import hunt
    from copyhunt.lake import Lake

    b = web.base
    with_etag, with_date, without = make_image("JPEG", (50, 40), (1, 2, 3)), make_image("PNG", (30, 30), (4, 5, 6)), make_image("JPEG", (20, 20), (7, 8, 9))
    changing_v1, changing_v2 = make_image("JPEG", (60, 40), (200, 0, 0)), make_image("JPEG", (60, 40), (0, 0, 200))
    web.add(f"{b}/", '<title>shop</title><img src="/img/etag.jpg"><img src="/img/date.png"><img src="/img/plain.jpg">'
                     '<img src="/img/changing.jpg"><a href="/more">more</a>')
    web.add(f"{b}/more", '<title>more</title><img src="/img/etag.jpg" alt="again">')
    web.add(f"{b}/img/etag.jpg", with_etag, "image/jpeg", ETag='"v1-etag"')
    web.add(f"{b}/img/date.png", with_date, "image/png", **{"Last-Modified": "Sun, 01 Jun 2025 07:00:00 GMT"})
    web.add(f"{b}/img/plain.jpg", without, "image/jpeg")  # no validators: always downloaded
    web.add(f"{b}/img/changing.jpg", changing_v1, "image/jpeg", ETag='"c1"')
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(f"{b}/\n")
    cfg = settings_for(tmp_path, seeds_file=seeds, crawl_allow_private=True, crawl_download_delay=0.0, crawl_autothrottle=False,
                       crawl_image_processes=1)  # as in production: 304s answered to the image fetcher
    day1, day2 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)

    hunt.crawl(cfg, day1)
    web.add(f"{b}/img/changing.jpg", changing_v2, "image/jpeg", ETag='"c2"')  # changed overnight
    web.log.clear()
    hunt.crawl(cfg, day2)

    images_day2 = {s.url.rsplit("/", 1)[-1]: s for s in web.log if "/img/" in s.url}
    assert {name: (s.status, s.body_bytes > 0) for name, s in images_day2.items()} == {
        "etag.jpg": (304, False),
        "date.png": (304, False),
        "plain.jpg": (200, True),
        "changing.jpg": (200, True),
    }
    fetched = Counter(s.url for s in web.log if not s.url.endswith("/robots.txt"))
    assert set(fetched.values()) == {1}  # still one request per URL
    assert images_day2["etag.jpg"].headers.get("If-None-Match") == '"v1-etag"'
    assert images_day2["date.png"].headers.get("If-Modified-Since") == "Sun, 01 Jun 2025 07:00:00 GMT"
    assert images_day2["changing.jpg"].headers.get("If-None-Match") == '"c1"'
    assert "If-None-Match" not in images_day2["plain.jpg"].headers and "If-Modified-Since" not in images_day2["plain.jpg"].headers

    lake = Lake(cfg.lake)
    rows = {(r["page_url"].rsplit("/", 1)[-1], r["image_url"].rsplit("/", 1)[-1]): r for r in lake.read_table("images", day2).to_pylist()}
    expected = {"etag.jpg": (with_etag, True), "date.png": (with_date, True), "plain.jpg": (without, False), "changing.jpg": (changing_v2, False)}
    for (_, name), row in rows.items():
        data, reused = expected[name]
        assert (row["blob_sha256"], row["not_modified"], row["bytes"]) == (sha(data), reused, len(data)), name
        assert LocalBlobStore(cfg.blob_root).get(row["blob_sha256"]) == data
    assert rows[("more", "etag.jpg")]["etag"] == '"v1-etag"' and rows[("more", "etag.jpg")]["alt"] == "again"
    # a third day keeps revalidating from day 2's rows
    web.log.clear()
    hunt.crawl(cfg, dt.date(2026, 11, 22))
    assert {s.url.rsplit("/", 1)[-1] for s in web.log if s.status == 304} == {"etag.jpg", "date.png", "changing.jpg"}


MARKET_PRODUCT = """<html><head><title>{title}</title>{jsonld}</head><body><h1>{title}</h1>
<img src="/img/{id}.jpg" alt="{title}">{microdata}<a href="/listings">back</a></body></html>"""


def test_marketplace_spider_walks_listings_and_records_sellers(tmp_path: Path, web: FakeWeb) -> None:
    shop, blog, cdn = "http://shop.test", "http://blog.test", "http://cdn.test"
    shared = make_image("JPEG", (64, 64), (90, 90, 90))
    web.add(f"{cdn}/shared.jpg", shared, "image/jpeg")
    for host in (shop, blog):
        web.add(f"{host}/robots.txt", "User-agent: *\nDisallow: /cart\n", "text/plain")
    web.add(f"{blog}/", f'<title>blog</title><img src="{cdn}/shared.jpg"><a href="/post">post</a>')
    web.add(f"{blog}/post", "<title>post</title>")
    web.add(f"{shop}/", f'<title>shop</title><img src="{cdn}/shared.jpg"><a href="/listings">all</a><a href="/cart">cart</a>')

    products = {n: f"item-{n}" for n in range(1, 10)}  # 3 listing pages of 3
    sellers = {1: ("json-ld", "Ana's Attic", "/seller/ana"), 2: ("microdata", "Bo & Co", "/seller/bo"), 3: (None, None, None)}

    def listing(url: str) -> Reply:
        query = urlsplit(url).query
        page = int(query.split("=")[1]) if query else 1
        items = [n for n in products if (n - 1) // 3 + 1 == page]
        cards = "".join(f'<a href="/item/{n}"><img src="/img/thumb-{n}.jpg"></a>' for n in items)
        # Past the last page the listing is empty, but "next" goes on for ever.
        return 200, {"Content-Type": "text/html"}, f'<title>page {page}</title>{cards}<a rel="next" href="/listings?page={page + 1}">next</a>'.encode()

    web.prefixes[f"{shop}/listings"] = listing
    for n in products:
        kind, name, seller_path = sellers[(n - 1) % 3 + 1]
        jsonld = microdata = ""
        if kind == "json-ld":
            jsonld = ('<script type="application/ld+json">{"@type": "Product", "name": "%s", "offers": {"@type": "Offer", '
                      '"seller": {"@type": "Organization", "name": "%s", "url": "%s"}}}</script>' % (products[n], name, seller_path))
        elif kind == "microdata":
            microdata = ('<div itemscope itemtype="https://schema.org/Product"><div itemprop="offers" itemscope itemtype="https://schema.org/Offer">'
                         f'<span itemprop="seller" itemscope itemtype="https://schema.org/Organization"><a itemprop="url" href="{seller_path}">'
                         f'<span itemprop="name">{html.escape(name)}</span></a></span></div></div>')
        web.add(f"{shop}/item/{n}", MARKET_PRODUCT.format(title=products[n], id=n, jsonld=jsonld, microdata=microdata))
        web.add(f"{shop}/img/{n}.jpg", make_image("JPEG", (40, 30), (n * 20, 0, 0)), "image/jpeg")
        web.add(f"{shop}/img/thumb-{n}.jpg", make_image("JPEG", (20, 15), (n * 20, 0, 0)), "image/jpeg")

    seeds = tmp_path / "seeds.txt"
    seeds.write_text(f"# one site, one marketplace\n{blog}/\nmarketplace {shop}/\n")
    # Depth 2 reaches /listings (1) and its items (2); page 3 of the listing is depth 3 as links
    # go, but pagination does not count, so its items are reached too.
    cfg = settings_for(tmp_path, crawl_proxy=web.base, crawl_depth_limit=2)
    summary = run_crawl(seeds.read_text().splitlines(), tmp_path / "crawl", cfg, timeout_s=60, scrapy_overrides=FAST)

    pages = {p["url"]: p for p in table(summary, "pages")}
    assert {u for u in pages if u.startswith(blog)} == {f"{blog}/", f"{blog}/post"}
    assert all(p["spider"] == ("site" if u.startswith(blog) else "marketplace") for u, p in pages.items())
    assert {u for u in pages if "/item/" in u} == {f"{shop}/item/{n}" for n in products}
    assert {u for u in pages if "/listings" in u} == {f"{shop}/listings", *(f"{shop}/listings?page={n}" for n in (2, 3, 4))}
    assert {pages[u]["page_kind"] for u in pages if "/listings" in u} == {"listing"}
    for n in products:
        kind, name, seller_path = sellers[(n - 1) % 3 + 1]
        row = pages[f"{shop}/item/{n}"]
        assert row["page_kind"] == "product" or kind is None, n
        assert (row["seller_name"], row["seller_url"], row["seller_source"]) == (name, f"{shop}{seller_path}" if seller_path else None, kind), n
    # page 4 is empty yet offers page 5: that is where the walk stops, reported once
    errors = {(e["url"], e["reason"]) for e in table(summary, "errors")}
    assert errors == {(f"{shop}/listings?page=5", "trap:endless-pagination"), (f"{shop}/cart", "robots")}
    assert web.hits[f"{shop}/listings"] == 1 and f"{shop}/listings?page=5" not in pages
    # an image both spiders' pages show is fetched once, and recorded for both pages
    assert web.hits[f"{cdn}/shared.jpg"] == 1
    shared_rows = [r for r in table(summary, "images") if r["image_url"] == f"{cdn}/shared.jpg"]
    assert {r["page_url"] for r in shared_rows} == {f"{blog}/", f"{shop}/"} and {r["blob_sha256"] for r in shared_rows} == {sha(shared)}


def test_command_line_contract(tmp_path: Path, web: FakeWeb) -> None:
    """`copyhunt crawl` as an outside evaluation runs it: a subprocess, flags, files, columns."""
    b = web.base
    pic = make_image("JPEG", (32, 32), (3, 3, 3))
    web.add(f"{b}/", '<title>home</title><img src="/a.jpg"><a href="/two">2</a><a href="/three">3</a><a href="/gone">x</a>')
    web.add(f"{b}/two", "<title>two</title>")
    web.add(f"{b}/three", "<title>three</title>")
    web.add(f"{b}/a.jpg", pic, "image/jpeg")
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(f"{b}/two\n")
    copyhunt = Path(sys.executable).with_name("copyhunt")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("COPYHUNT_")},
           "COPYHUNT_HOME": str(tmp_path), "COPYHUNT_CRAWL_DOWNLOAD_DELAY": "0", "COPYHUNT_CRAWL_AUTOTHROTTLE": "false",
           "COPYHUNT_CRAWL_IMAGE_PROCESSES": "0"}
    out = tmp_path / "out"

    cmd = [str(copyhunt), "crawl", "--seed", f"{b}/", "--seed", f"{b}/gone", "--seeds-file", str(seeds), "--out", str(out), "--max-pages", "3", "--allow-private"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

    pages, images, errors = (pq.read_table(out / f"{name}.parquet") for name in ("pages", "images", "errors"))
    assert {"url"} <= set(pages.column_names) and {"page_url", "image_url"} <= set(images.column_names)
    assert {"url", "reason"} <= set(errors.column_names)
    # --max-pages 3: the three seeds use the budget (one of them is a 404), so /three is not fetched
    assert sorted(pages.column("url").to_pylist()) == [f"{b}/", f"{b}/two"] and web.hits[f"{b}/three"] == 0
    assert images.select(["page_url", "image_url"]).to_pylist() == [{"page_url": f"{b}/", "image_url": f"{b}/a.jpg"}]
    assert errors.select(["url", "reason"]).to_pylist() == [{"url": f"{b}/gone", "reason": "http-404"}]

    # Without --allow-private, loopback is refused: the run still succeeds and says why.
    proc = subprocess.run([str(copyhunt), "crawl", "--seed", f"{b}/", "--out", str(tmp_path / "refused")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert pq.read_table(tmp_path / "refused" / "errors.parquet").column("reason").to_pylist() == ["blocked:private-address"]
    # Bad usage is a clear error, not a traceback.
    for bad in (["--out", str(tmp_path / "x")], ["--seeds-file", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x")]):
        proc = subprocess.run([str(copyhunt), "crawl", *bad], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_a_dead_image_fetcher_costs_its_images_not_the_run(tmp_path: Path, web: FakeWeb) -> None:
    b = web.base
    web.add(f"{b}/", '<title>home</title><img src="/a.jpg"><img src="/b.jpg"><a href="/two">two</a>')
    web.add(f"{b}/two", "<title>two</title>")
    for name in ("a", "b"):
        web.add(f"{b}/{name}.jpg", make_image("JPEG", (8, 8), (1, 1, 1)), "image/jpeg")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("COPYHUNT_")},
           **settings_for(tmp_path, crawl_image_processes=1).as_env(), "COPYHUNT_FAILPOINTS": "crawl.image_fetcher:request"}
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "copyhunt.crawl.process", "--seed", f"{b}/", "--out", str(out), "--allow-private",
           *(arg for k, v in FAST.items() for arg in ("-s", f"{k}={v}"))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    assert proc.returncode == 0, proc.stderr
    assert sorted(pq.read_table(out / "pages.parquet").column("url").to_pylist()) == [f"{b}/", f"{b}/two"]
    images = pq.read_table(out / "images.parquet").to_pylist()
    errors = {(e["url"], e["reason"]) for e in pq.read_table(out / "errors.parquet").to_pylist()}
    summary = json.loads((out / "crawl.json").read_text())["image_fetcher"]
    assert summary["exit_code"] == -9  # SIGKILL, like an OOM kill
    # Whatever the dead fetcher had been sent is reported lost; anything sent after its death was
    # fetched by the page crawler itself.
    for row in images:
        lost = (row["image_url"], "image-fetcher-failed") in errors
        assert lost == (row["blob_sha256"] is None), row
    assert summary["lost"] == sum(1 for row in images if row["blob_sha256"] is None) >= 1


# ---- the image fetcher's client, in process ------------------------------------------------------------
def fetch_images_here(tmp_path: Path, pairs: list[tuple[str, str]], validators: dict | None = None, **cfg: Any) -> tuple[Any, Path, dict]:
    """Run the image fetcher's work (run_image_fetcher) in this process on ``pairs``, with the
    settings the crawl gives its image fetcher; returns (results, out_dir, summary)."""
    from copyhunt.crawl.imagefetch import run_image_fetcher
    from copyhunt.crawl.results import CrawlRun
    from copyhunt.crawl.politeness import split_politeness
    from copyhunt.crawl.settings import build_settings

    async def source() -> Any:
        for pair in pairs:
            yield pair

    overrides = {**FAST, **cfg.pop("overrides", {})}
    timeout_s = cfg.pop("timeout_s", None)
    settings = build_settings(settings_for(tmp_path, **cfg), tmp_path / "out", timeout_s=timeout_s, overrides=overrides)
    split_politeness(settings, "images")
    run = CrawlRun(validators=validators or {})
    summary = run_image_fetcher(settings, run, tmp_path / "out", source=source)
    return run.results, tmp_path / "out", summary


def test_image_client_applies_the_crawl_rules(tmp_path: Path, web: FakeWeb, bomb_png: bytes) -> None:
    b = web.base
    pic, other = make_image("JPEG", (32, 24), (1, 100, 200)), make_image("PNG", (12, 10), (9, 8, 7))
    cap = 2 * 1024 * 1024
    web.add(f"{b}/robots.txt", "User-agent: *\nDisallow: /private/\n", "text/plain")
    web.add(f"{b}/img/ok.jpg", pic, "image/jpeg", ETag='"ok-1"')
    web.add(f"{b}/private/p.jpg", pic, "image/jpeg")
    web.add(f"{b}/img/broken.jpg", "oops", "text/plain", status=500)
    web.routes[f"{b}/img/busy.png"] = lambda n: (429, {"Retry-After": "1", "Content-Type": "text/plain"}, b"later") if n == 1 else (200, {"Content-Type": "image/png"}, other)
    web.routes[f"{b}/img/hang.jpg"] = HANG
    web.add(f"{b}/img/loop-a.jpg", "", status=302, Location="/img/loop-b.jpg")
    web.add(f"{b}/img/loop-b.jpg", "", status=302, Location="/img/loop-a.jpg")
    web.add(f"{b}/img/moved.jpg", "", status=301, Location="/img/new-home.jpg")
    web.add(f"{b}/img/new-home.jpg", pic, "image/jpeg")
    # Longer than the cap plus anything the kernel's socket buffers can hold, so that a body the
    # crawler read to its end cannot pass for one it dropped.
    in_flight = socket_buffer_bytes()
    web.routes[f"{b}/img/declared.jpg"] = Stream(cap + 2 * in_flight)
    web.routes[f"{b}/img/undeclared.jpg"] = Stream(cap + 2 * in_flight, declare_length=False)
    web.add(f"{b}/img/fake.jpg", "<html>I am HTML</html>", "image/jpeg")
    web.add(f"{b}/img/bomb.png", bomb_png, "image/png")
    web.add(f"{b}/img/same.png", other, "image/png", ETag='"same"')
    web.add(f"{b}/img/gone.jpg", "", status=404)
    names = ["ok.jpg", "broken.jpg", "busy.png", "hang.jpg", "loop-a.jpg", "moved.jpg", "declared.jpg", "undeclared.jpg", "fake.jpg", "bomb.png", "same.png", "gone.jpg"]
    pairs = [(f"{b}/img/{n}", f"{b}/page.html") for n in names] + [(f"{b}/private/p.jpg", ""), ("ftp://example.com/x.jpg", "")]
    stored = LocalBlobStore(settings_for(tmp_path).blob_root)
    earlier = Validator(f"{b}/img/same.png", stored.put(other), len(other), 12, 10, "png", '"same"', None)

    results, out, summary = fetch_images_here(tmp_path, pairs, {earlier.image_url: earlier}, crawl_allow_private=True,
                                              crawl_timeout_seconds=0.5, crawl_max_image_bytes=cap)

    errors = {url.rsplit("/", 1)[-1]: reason for url, reason, _ in results.errors}
    assert errors == {"broken.jpg": "http-500", "hang.jpg": "timeout", "loop-a.jpg": "too-many-redirects", "declared.jpg": "too-large",
                      "undeclared.jpg": "too-large", "fake.jpg": "not-an-image", "bomb.png": "decompression-bomb", "gone.jpg": "http-404",
                      "p.jpg": "robots", "x.jpg": "blocked:scheme"}
    got = {url.rsplit("/", 1)[-1]: f for url, f in results.fetched.items()}
    assert set(got) == {"ok.jpg", "busy.png", "moved.jpg", "same.png", "fake.jpg", "bomb.png"}
    assert (got["ok.jpg"].blob_sha256, got["ok.jpg"].etag, got["ok.jpg"].width) == (sha(pic), '"ok-1"', 32)
    assert stored.get(sha(pic)) == pic  # written by the blob writer process
    assert got["busy.png"].blob_sha256 == sha(other) and web.hits[f"{b}/img/busy.png"] == 2  # after Retry-After
    assert (got["moved.jpg"].blob_sha256, got["moved.jpg"].final_url) == (sha(pic), f"{b}/img/new-home.jpg")
    assert got["same.png"].not_modified and got["same.png"].blob_sha256 == earlier.blob_sha256  # a 304 reuses the blob
    assert got["fake.jpg"].blob_sha256 is None and got["bomb.png"].blob_sha256 is None
    # retried twice, then reported; a redirect loop cut after five hops; robots.txt read once
    assert web.hits[f"{b}/img/broken.jpg"] == web.hits[f"{b}/img/hang.jpg"] == 3
    assert web.hits[f"{b}/img/loop-a.jpg"] + web.hits[f"{b}/img/loop-b.jpg"] == 6
    assert web.hits[f"{b}/robots.txt"] == 1 and web.hits[f"{b}/private/p.jpg"] == 0
    # the page is the Referer, across the redirect too; the conditional request carried the ETag
    (moved,) = web.served(f"{b}/img/new-home.jpg")
    assert moved.headers.get("Referer") == f"{b}/page.html" and "copyhunt" in moved.headers.get("User-Agent", "")
    (same,) = web.served(f"{b}/img/same.png")
    assert (same.status, same.headers.get("If-None-Match")) == (304, '"same"')
    # refused from its Content-Length, or cut off near the cap: the connection is dropped, not read
    for name in ("declared.jpg", "undeclared.jpg"):
        (big,) = web.served(f"{b}/img/{name}")
        assert big.body_bytes < cap + in_flight, name
    assert summary["finish_reason"] == "finished" and summary["conditional_requests"] == 1
    # what the page crawler merges: the same rows, from the files
    merged = CrawlResults()
    assert merge_fetch_results(merged, out) == len(results.fetched) and merged.errors == results.errors


def test_image_client_refuses_private_hosts_on_every_hop(tmp_path: Path, web: FakeWeb) -> None:
    """As in production behind an egress proxy: hops to private addresses are refused before they
    are sent, names that resolve here to private addresses too; the proxy itself is trusted."""
    port = urlsplit(web.base).port
    photo = make_image("JPEG", (20, 20), (5, 5, 5))
    web.add("http://cdn.test/robots.txt", "User-agent: *\nAllow: /\n", "text/plain")
    web.add("http://cdn.test/photo.jpg", photo, "image/jpeg")
    web.add("http://cdn.test/to-lan.jpg", "", status=302, Location="http://10.0.0.7/cam.jpg")
    web.add("http://cdn.test/to-localhost.jpg", "", status=307, Location=f"http://localhost:{port}/x.jpg")
    web.add("http://cdn.test/to-mapped.jpg", "", status=302, Location="http://[::ffff:192.168.1.1]/cam.jpg")
    pairs = [(f"http://cdn.test/{n}", "") for n in ("photo.jpg", "to-lan.jpg", "to-localhost.jpg", "to-mapped.jpg")]
    pairs += [("http://169.254.169.254/latest/meta-data/", ""), (f"http://127.0.0.1:{port}/direct.jpg", ""), ("http://metadata.google.internal/x", "")]

    results, _, _ = fetch_images_here(tmp_path, pairs, crawl_proxy=web.base, crawl_allow_private=False)

    assert {url: f.blob_sha256 for url, f in results.fetched.items()} == {"http://cdn.test/photo.jpg": sha(photo)}
    errors = {url: (reason, detail) for url, reason, detail in results.errors}
    assert set(errors) == {url for url, _ in pairs[1:]}
    assert {reason for reason, _ in errors.values()} == {"blocked:private-address"}
    assert "10.0.0.7" in errors["http://cdn.test/to-lan.jpg"][1] and "(at http://10.0.0.7/cam.jpg)" in errors["http://cdn.test/to-lan.jpg"][1]
    assert "localhost" in errors["http://cdn.test/to-localhost.jpg"][1]
    assert {urlsplit(s.url).hostname for s in web.log} == {"cdn.test"}  # only public hops reached the network


def test_image_fetcher_time_limit_cancels_what_is_left(tmp_path: Path, web: FakeWeb) -> None:
    b = web.base
    web.routes[f"{b}/slow.jpg"] = HANG
    results, _, summary = fetch_images_here(tmp_path, [(f"{b}/slow.jpg", "")], crawl_allow_private=True, timeout_s=1.0, crawl_timeout_seconds=30.0)
    assert summary["finish_reason"] == "closespider_timeout"
    assert [(url, reason) for url, reason, _ in results.errors] == [(f"{b}/slow.jpg", "cancelled")]


def test_blob_writer_process(tmp_path: Path) -> None:
    from copyhunt.crawl.blobwriter import BlobWriter, serve

    store = LocalBlobStore(tmp_path / "blobs")
    writer = BlobWriter(store)
    blobs = [bytes([i]) * (1000 * i + 1) for i in range(1, 40)]
    assert [writer.put(b) for b in blobs + blobs[:3]] == [sha(b) for b in blobs + blobs[:3]]
    assert writer.close() == {}
    assert all(store.get(sha(b)) == b for b in blobs)

    # A writer that died: what it did not store is written here instead, nothing is lost.
    writer = BlobWriter(LocalBlobStore(tmp_path / "second"))
    writer._proc.kill()  # type: ignore[union-attr]
    writer._proc.wait()  # type: ignore[union-attr]
    digests = [writer.put(b) for b in blobs[:5]]
    assert writer.close() == {}
    assert all(LocalBlobStore(tmp_path / "second").exists(d) for d in digests)

    # The writer's side: a frame whose bytes do not match its digest is not stored, and says so.
    good, bad = b"good blob", b"tampered"
    frames = b"%s %d\n%s" % (sha(good).encode(), len(good), good) + b"%s %d\n%s" % (sha(b"original").encode(), len(bad), bad)
    assert serve(tmp_path / "third", io.BytesIO(frames)) == 1
    assert LocalBlobStore(tmp_path / "third").get(sha(good)) == good and not LocalBlobStore(tmp_path / "third").exists(sha(b"original"))
    assert serve(tmp_path / "fourth", io.BytesIO(b"abc 99\nshort")) == 1  # input ended inside a blob


def test_clean_validator() -> None:
    assert clean_validator(b' "abc" ') == '"abc"' and clean_validator("Sun, 01 Jun 2025 07:00:00 GMT") == "Sun, 01 Jun 2025 07:00:00 GMT"
    assert clean_validator(None) is None and clean_validator("") is None and clean_validator("x" * 257) is None
    assert clean_validator('"a"\r\nSet-Cookie: x=1') is None  # never echoed into a request header


def test_pipe_requests_reads_lines_across_writes() -> None:
    import asyncio

    from copyhunt.crawl.imagefetch import pipe_requests

    read_fd, write_fd = os.pipe()

    async def main() -> list[tuple[str, str]]:
        async def page_crawler() -> None:
            os.write(write_fd, b"http://a.example/1.jpg\thttp://a.example/\nhttp://a.example/2")
            await asyncio.sleep(0.03)  # the reader finds the pipe empty meanwhile, and looks again
            os.write(write_fd, b".jpg\t\n\n")
            os.close(write_fd)

        writer = asyncio.create_task(page_crawler())
        with os.fdopen(read_fd, "rb") as stream:
            got = [pair async for pair in pipe_requests(stream, poll_interval=0.005)]
        await writer
        return got

    assert asyncio.run(main()) == [("http://a.example/1.jpg", "http://a.example/"), ("http://a.example/2.jpg", "")]
