"""Tests of the crawler: pure functions first, then real Scrapy crawls in a subprocess.

The integration tests serve small sites from ``http.server`` on 127.0.0.1 (so they pass
``allow_private=True``, except where the guard itself is under test) and one test plays the demo
web's role: an HTTP forward proxy serving ``*.test`` host names that do not resolve in DNS.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
from PIL import Image

from copyhunt.blobs import LocalBlobStore
from copyhunt.config import Settings
from copyhunt.crawl.images import DISCOVERY_KINDS, discover_images, inspect_image, largest_candidate, parse_srcset
from copyhunt.crawl.middlewares import address_block_reason, backoff_delay, retry_after_seconds
from copyhunt.crawl.outputs import write_table
from copyhunt.crawl.pages import extract_links, page_meta
from copyhunt.crawl.runner import CrawlSummary, run_crawl
from copyhunt.crawl.urls import canonical_url, in_scope, scope_hosts, trap_reason

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


@dataclass
class FakeWeb:
    """Routes keyed by absolute URL; serves as an origin server and as a forward proxy."""

    routes: dict[str, Reply | Callable[[int], Reply]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    base: str = ""

    def add(self, url: str, body: bytes | str, content_type: str = "text/html; charset=utf-8", status: int = 200, **headers: str) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.routes[url] = (status, {"Content-Type": content_type, **headers}, data)

    def reply(self, url: str) -> Reply:
        with self.lock:
            self.hits[url] += 1
            n = self.hits[url]
        route = self.routes.get(url)
        if route is None:
            return 404, {"Content-Type": "text/html"}, b"<h1>not found</h1>"
        return route(n) if callable(route) else route


def serve(web: FakeWeb) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            # A proxy gets the absolute URL in the request line; an origin server gets a path.
            url = self.path if self.path.startswith("http") else f"http://{self.headers['Host']}{self.path}"
            parts = urlsplit(url)
            status, headers, body = web.reply(f"{parts.scheme}://{parts.netloc}{parts.path}")
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

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
    server.shutdown()
    server.server_close()


def settings_for(tmp_path: Path, **kw: object) -> Settings:
    return Settings(home=tmp_path, **kw)  # type: ignore[arg-type]


def table(summary: CrawlSummary, name: str) -> list[dict]:
    return pq.read_table(summary.out_dir / f"{name}.parquet").to_pylist()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- integration: a small site ----------------------------------------------------------------------
def test_crawl_local_site(tmp_path: Path, web: FakeWeb, bomb_png: bytes) -> None:
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

    cfg = settings_for(tmp_path)
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
    assert web.hits[f"{b}/robots.txt"] == 1
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
