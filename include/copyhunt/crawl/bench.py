"""``copyhunt bench crawl``: crawl throughput on a generated local site, next to ``scrapy bench``.

A generated site of ``pages`` HTML pages and two unique images per page (plus one logo every
page shows) is served on 127.0.0.1 by a small asyncio HTTP/1.1 server (uvloop) in its own
process, generated on the fly: page ``k`` links to its ten children ``10k+1..10k+10`` (a tree four
levels deep for 5,000 pages), its parent, its neighbours and home, and shows its images as
``<img src>``, as the largest ``srcset`` candidate (the smaller one is never fetched) and in a
lazy ``data-src``. Every image is a distinct valid JPEG, so each costs a download, a magic-byte
check, a header parse and a blob write, like a real crawl.

The crawl is the production one (:func:`copyhunt.crawl.runner.run_crawl`: a subprocess, the same
spiders, middlewares, pipeline and Parquet outputs) with politeness lifted for loopback:
no download delay, no AutoThrottle, higher concurrency. Figures come from the crawl's own clock
(``crawl.json``: Scrapy start to tables written) and the wall clock (including the interpreter
start). ``scrapy bench`` then runs in the same session on the same machine; its pages per second
are the baseline: Scrapy's own spider on Scrapy's own local server, link extraction only.

    copyhunt bench crawl [--pages 5000] [--concurrency 32] [--scrapy-bench-seconds 10]
    python -m copyhunt.crawl.bench [--ceilings]

``--ceilings`` first measures what the machine leaves room for: the requests per second the site
answers to a lean aiohttp client (:func:`server_ceiling`) and the pages per second a bare Scrapy
spider fetches from it (:func:`noop_scrapy_ceiling`).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_PAGES = 5000
IMAGES_PER_PAGE = 2
DEFAULT_CONCURRENCY = 32
TARGET_PAGES_PER_SECOND = 300.0  # the target for a loopback crawl with politeness lifted
FANOUT = 10

_PARAGRAPH = (
    "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris "
    "nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate.</p>"
)


# ---- the generated site --------------------------------------------------------------------------
class GeneratedSite:
    """Pages and images of the benchmark site, made on request from their number."""

    def __init__(self, pages: int):
        if pages < 1:
            raise ValueError("the site needs at least one page")
        self.pages = pages
        self._jpeg = _base_jpeg()
        self._logo = _base_jpeg(size=(64, 32), seed=99)

    @staticmethod
    def page_path(k: int) -> str:
        return "/" if k == 0 else f"/p/{k}"

    def page(self, k: int) -> bytes:
        links = [FANOUT * k + i for i in range(1, FANOUT + 1) if FANOUT * k + i < self.pages]
        links += [n for n in ((k - 1) // FANOUT if k else None, k - 1, k + 1, 0) if n is not None and 0 <= n < self.pages]
        nav = "".join(f'<li><a href="{self.page_path(n)}">Page {n}</a></li>' for n in links)
        return (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Page {k}</title>'
            f'<meta property="article:published_time" content="2026-01-{k % 28 + 1:02d}T08:00:00Z">'
            f'<meta property="og:image" content="/img/{k}-a.jpg"></head><body>'
            f'<header><img src="/img/logo.jpg" alt="Logo"></header><article><h1>Page {k}</h1>'
            f'<img src="/img/{k}-a.jpg" alt="Photo {k}">{_PARAGRAPH}'
            f'<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="/img/{k}-b.jpg" '
            f'srcset="/img/{k}-b-small.jpg 320w, /img/{k}-b.jpg 1280w" alt="Detail {k}">{_PARAGRAPH}'
            f"</article><nav><ul>{nav}</ul></nav></body></html>"
        ).encode()

    def image(self, name: str) -> bytes:
        # A COM segment right after SOI makes every image distinct and still a valid JPEG.
        base = self._logo if name == "logo" else self._jpeg
        comment = name.encode()
        return base[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + base[2:]

    def respond(self, path: str) -> tuple[int, bytes, bytes]:
        """(status, content type, body) for a request path."""
        if path == "/":
            return 200, b"text/html; charset=utf-8", self.page(0)
        if path == "/robots.txt":
            return 200, b"text/plain", b"User-agent: *\nAllow: /\n"
        if path.startswith("/p/"):
            k = path[3:]
            if k.isdigit() and 0 < int(k) < self.pages:
                return 200, b"text/html; charset=utf-8", self.page(int(k))
        elif path.startswith("/img/") and path.endswith(".jpg"):
            return 200, b"image/jpeg", self.image(path[5:-4])
        return 404, b"text/html", b"<h1>not found</h1>"


def _base_jpeg(size: tuple[int, int] = (160, 120), seed: int = 7) -> bytes:
    import random

    from PIL import Image

    rng = random.Random(seed)
    im = Image.new("RGB", size)
    im.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(size[0] * size[1])])
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=75)
    return buf.getvalue()


class _HttpProtocol(asyncio.Protocol):
    """Just enough HTTP/1.1 for a crawler: GET, keep-alive, absolute or origin-form targets."""

    def __init__(self, site: GeneratedSite, counts: dict[str, int]):
        self.site = site
        self.counts = counts
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            target = parts[1] if len(parts) == 3 else "/"
            if target.startswith("http"):
                target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
            status, ctype, body = self.site.respond(target.split("?", 1)[0])
            kind = "images" if ctype == b"image/jpeg" else "pages"
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.counts["bytes"] = self.counts.get("bytes", 0) + len(body)
            reason = b"OK" if status == 200 else b"Not Found"
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (status, reason, ctype, len(body)) + body
            )


def serve_site(pages: int) -> None:
    """Serve the site on a free loopback port: print the port, stop when stdin closes, then print
    the request counts (one JSON line). Runs in the child process SiteServer starts."""
    from copyhunt.crawl.imageclient import run_event_loop

    async def main() -> None:
        site = GeneratedSite(pages)
        counts: dict[str, int] = {}
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _HttpProtocol(site, counts), "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # EOF: stop
        server.close()
        print(json.dumps(counts), flush=True)

    run_event_loop(main())


class SiteServer:
    """The generated site in a child process, so it does not compete for the crawler's GIL."""

    def __init__(self, pages: int):
        cmd = [sys.executable, "-m", "copyhunt.crawl.bench", "--serve", str(pages)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None and self._proc.stdin is not None
        line = self._proc.stdout.readline().strip()
        if not line.isdigit():
            self._proc.kill()
            raise RuntimeError(f"the benchmark site did not start (it said {line!r})")
        self.port = int(line)
        self.counts: dict[str, int] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> dict[str, int]:
        if self._proc.poll() is None:
            try:
                out, _ = self._proc.communicate(input="", timeout=10)
                self.counts = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self.counts

    def __enter__(self) -> SiteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- the runs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CrawlFigures:
    pages: int
    images: int  # distinct images stored
    image_rows: int  # (page, image) pairs
    errors: int
    seconds: float  # the crawl's own clock: Scrapy start to tables written
    wall_seconds: float  # including the subprocess's interpreter start and imports
    served_pages: int
    served_images: int
    concurrency: int
    cpu_seconds: dict[str, float]  # per crawler process (page crawler, image fetcher), imports included
    images_by_page_crawler: int  # overflow the page crawler fetched while the image fetcher was busy
    load_before: float  # 1-minute load average: the machine is shared, so say how busy it was
    load_after: float

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.seconds if self.seconds else 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def requests_per_s(self) -> float:
        return (self.served_pages + self.served_images) / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class ScrapyBenchFigures:
    pages: int
    seconds: float
    available: bool = True
    note: str = ""

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.seconds if self.seconds else 0.0


def run_crawl_bench(pages: int = DEFAULT_PAGES, concurrency: int = DEFAULT_CONCURRENCY, work_dir: Path | None = None) -> CrawlFigures:
    """Serve the generated site and crawl it with copyhunt's crawler; returns the figures."""
    from copyhunt.config import Settings
    from copyhunt.crawl.runner import run_crawl

    tmp = Path(tempfile.mkdtemp(prefix="copyhunt-bench-crawl-", dir=work_dir))
    try:
        settings = Settings(
            home=tmp,
            crawl_download_delay=0.0,
            crawl_autothrottle=False,
            crawl_concurrency_per_domain=concurrency,
            crawl_max_pages_per_domain=pages,
            crawl_allow_private=True,
        )
        overrides = {"CONCURRENT_REQUESTS": concurrency, "LOG_LEVEL": "WARNING"}
        load_before = os.getloadavg()[0]
        with SiteServer(pages) as server:
            started = time.monotonic()
            summary = run_crawl([server.url], tmp / "crawl", settings, timeout_s=1800, scrapy_overrides=overrides)
            wall = time.monotonic() - started
            counts = server.stop()
        meta = json.loads((tmp / "crawl" / "crawl.json").read_text())
        fetcher = meta.get("image_fetcher") or {}
        cpu = {"pages": float(meta.get("cpu_s", 0.0))}
        if "cpu_s" in fetcher:
            cpu["images"] = float(fetcher["cpu_s"])
        return CrawlFigures(
            pages=summary.pages,
            images=summary.images_stored,
            image_rows=summary.images,
            errors=summary.errors,
            seconds=float(meta["duration_s"]),
            wall_seconds=round(wall, 3),
            served_pages=counts.get("pages", 0),
            served_images=counts.get("images", 0),
            concurrency=concurrency,
            cpu_seconds=cpu,
            images_by_page_crawler=int(fetcher.get("kept", 0)),
            load_before=round(load_before, 2),
            load_after=round(os.getloadavg()[0], 2),
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_STAT = re.compile(r"'(response_received_count|elapsed_time_seconds)':\s*([0-9.]+)")


def parse_scrapy_bench_stats(log: str) -> tuple[int, float] | None:
    """(responses, elapsed seconds) from the stats Scrapy dumps at the end of ``scrapy bench``."""
    found = dict(_STAT.findall(log))
    if "response_received_count" not in found or "elapsed_time_seconds" not in found:
        return None
    return int(float(found["response_received_count"])), float(found["elapsed_time_seconds"])


def run_scrapy_bench(seconds: float = 10.0) -> ScrapyBenchFigures:
    """``scrapy bench`` for about ``seconds`` seconds, in a clean directory; its final stats."""
    scrapy_bin = Path(sys.executable).with_name("scrapy")
    cmd = [str(scrapy_bin) if scrapy_bin.exists() else "scrapy", "bench", "-s", f"CLOSESPIDER_TIMEOUT={seconds:g}", "-s", "LOG_LEVEL=INFO"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPY_")}
    with tempfile.TemporaryDirectory(prefix="copyhunt-scrapy-bench-") as cwd:
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=seconds + 120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return ScrapyBenchFigures(0, 0.0, available=False, note=f"scrapy bench did not run: {exc}")
    parsed = parse_scrapy_bench_stats(proc.stdout + proc.stderr)
    if parsed is None:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return ScrapyBenchFigures(0, 0.0, available=False, note=f"scrapy bench exited {proc.returncode}: {tail}")
    return ScrapyBenchFigures(*parsed)


# ---- ceilings: what the machine allows the crawl -----------------------------------------------------
def server_ceiling(pages: int = DEFAULT_PAGES, concurrency: int = DEFAULT_CONCURRENCY, requests: int = 15000) -> float:
    """Requests per second the benchmark site answers to a lean client (aiohttp on uvloop, in this
    process), fetching its pages and images in the crawl's proportions (one page, two images).

    Server and client share the machine, as in the crawl; the figure is what serving and the
    barest HTTP client leave room for, the crawl's upper bound on these cores.
    """
    import aiohttp

    def path(i: int) -> str:
        k = (i // (1 + IMAGES_PER_PAGE)) % pages
        part = i % (1 + IMAGES_PER_PAGE)
        return GeneratedSite.page_path(k) if part == 0 else f"/img/{k}-{'ab'[part - 1]}.jpg"

    async def run(base: str) -> float:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            counter = iter(range(requests))

            async def worker() -> None:
                for i in counter:
                    async with session.get(base + path(i).lstrip("/")) as resp:
                        await resp.read()

            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return requests / (time.monotonic() - started)

    from copyhunt.crawl.imageclient import run_event_loop

    with SiteServer(pages) as server:
        return run_event_loop(run(server.url))


def noop_scrapy_ceiling(pages: int = DEFAULT_PAGES, concurrency: int = DEFAULT_CONCURRENCY) -> float:
    """Pages per second a bare Scrapy spider fetches from the benchmark site: every page URL
    requested up front, nothing parsed or stored, the crawl's reactor and loop (uvloop), default
    middlewares. The most a Scrapy page crawler can do here."""
    with SiteServer(pages) as server:
        cmd = [sys.executable, "-m", "copyhunt.crawl.bench", "--noop-spider", server.url, "--pages", str(pages), "--concurrency", str(concurrency)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    return float(out.strip().splitlines()[-1])


def _run_noop_spider(url: str, pages: int, concurrency: int) -> float:
    import scrapy
    from scrapy.crawler import AsyncCrawlerProcess

    from copyhunt.crawl import settings as crawl_settings

    class NoopSpider(scrapy.Spider):
        name = "noop"

        async def start(self):  # type: ignore[override]
            for k in range(pages):
                yield scrapy.Request(url.rstrip("/") + GeneratedSite.page_path(k), callback=self.parse, dont_filter=True)

        def parse(self, response: Any) -> None:
            return None

    settings = {"LOG_LEVEL": "WARNING", "CONCURRENT_REQUESTS": concurrency, "CONCURRENT_REQUESTS_PER_DOMAIN": concurrency,
                "TELNETCONSOLE_ENABLED": False, "ASYNCIO_EVENT_LOOP": getattr(crawl_settings, "ASYNCIO_EVENT_LOOP", None)}
    process = AsyncCrawlerProcess({k: v for k, v in settings.items() if v is not None})
    crawler = process.create_crawler(NoopSpider)
    process.crawl(crawler)
    process.start()
    stats = crawler.stats.get_stats() if crawler.stats else {}
    return stats.get("response_received_count", 0) / max(1e-9, stats.get("elapsed_time_seconds", 0.0))


def report(crawl: CrawlFigures, scrapy: ScrapyBenchFigures) -> str:
    """The side-by-side table and the verdict against the target, as text."""
    cores = os.cpu_count() or 1
    rows = [
        ("", "copyhunt crawl", "scrapy bench"),
        ("pages", f"{crawl.pages:,}", f"{scrapy.pages:,}" if scrapy.available else "n/a"),
        ("images stored", f"{crawl.images:,}", "-"),
        ("seconds", f"{crawl.seconds:.1f} (wall {crawl.wall_seconds:.1f})", f"{scrapy.seconds:.1f}" if scrapy.available else "n/a"),
        ("pages/s", f"{crawl.pages_per_s:,.0f}", f"{scrapy.pages_per_s:,.0f}" if scrapy.available else "n/a"),
        ("images/s", f"{crawl.images_per_s:,.0f}", "-"),
        ("requests/s", f"{crawl.requests_per_s:,.0f}", f"{scrapy.pages_per_s:,.0f}" if scrapy.available else "n/a"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"crawl benchmark on {cores} core(s), concurrency {crawl.concurrency}, loopback, politeness lifted"]
    lines += ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(r)) for r in rows]
    if scrapy.available and scrapy.pages_per_s:
        lines.append(f"copyhunt pages/s = {crawl.pages_per_s / scrapy.pages_per_s:.2f} x scrapy bench pages/s")
    elif scrapy.note:
        lines.append(scrapy.note)
    verdict = "meets" if crawl.pages_per_s >= TARGET_PAGES_PER_SECOND else "MISSES"
    lines.append(f"target {TARGET_PAGES_PER_SECOND:.0f} pages/s: {verdict} ({crawl.pages_per_s:,.0f} pages/s)")
    lines.append(f"served: {crawl.served_pages:,} page requests, {crawl.served_images:,} image requests; crawl errors: {crawl.errors}")
    cpu = ", ".join(f"{name} {sec:.1f}" for name, sec in crawl.cpu_seconds.items())
    lines.append(f"CPU seconds per crawler process: {cpu}; images the page crawler took over: {crawl.images_by_page_crawler:,}")
    lines.append(f"load average (1 min) before/after the crawl: {crawl.load_before:.2f}/{crawl.load_after:.2f} on {cores} cores")
    return "\n".join(lines)


def run(pages: int = DEFAULT_PAGES, concurrency: int = DEFAULT_CONCURRENCY, scrapy_bench_seconds: float = 10.0,
        log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Both benchmarks, one after the other; logs the report and returns the figures."""
    log(f"crawling a generated site of {pages:,} pages and {pages * IMAGES_PER_PAGE:,} images on 127.0.0.1 ...")
    crawl = run_crawl_bench(pages, concurrency)
    scrapy = ScrapyBenchFigures(0, 0.0, available=False, note="scrapy bench skipped")
    if scrapy_bench_seconds > 0:
        log(f"running scrapy bench for {scrapy_bench_seconds:g} s ...")
        scrapy = run_scrapy_bench(scrapy_bench_seconds)
    text = report(crawl, scrapy)
    log(text)
    return {
        "crawl": {**asdict(crawl), "pages_per_s": round(crawl.pages_per_s, 1), "images_per_s": round(crawl.images_per_s, 1)},
        "scrapy_bench": {**asdict(scrapy), "pages_per_s": round(scrapy.pages_per_s, 1)},
        "target_pages_per_s": TARGET_PAGES_PER_SECOND,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m copyhunt.crawl.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--pages", type=int, default=DEFAULT_PAGES)
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    p.add_argument("--scrapy-bench-seconds", type=float, default=10.0, help="0 skips scrapy bench")
    p.add_argument("--json", action="store_true", help="print the figures as JSON after the report")
    p.add_argument("--ceilings", action="store_true", help="also measure the server's and a bare Scrapy spider's requests/s on this site")
    p.add_argument("--serve", type=int, metavar="PAGES", help=argparse.SUPPRESS)  # the site's own process
    p.add_argument("--noop-spider", metavar="URL", help=argparse.SUPPRESS)  # noop_scrapy_ceiling's process
    args = p.parse_args(argv)
    if args.serve:
        serve_site(args.serve)
        return 0
    if args.noop_spider:
        print(f"{_run_noop_spider(args.noop_spider, args.pages, args.concurrency):.1f}")
        return 0
    if args.ceilings:
        print(f"load average (1 min) {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        print(f"server ceiling (aiohttp client, pages and images): {server_ceiling(args.pages, args.concurrency):,.0f} requests/s")
        print(f"bare Scrapy spider (pages, no parsing): {noop_scrapy_ceiling(args.pages, args.concurrency):,.0f} pages/s")
        print(f"load average (1 min) {os.getloadavg()[0]:.2f}")
    figures = run(args.pages, args.concurrency, args.scrapy_bench_seconds)
    if args.json:
        print(json.dumps(figures, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
