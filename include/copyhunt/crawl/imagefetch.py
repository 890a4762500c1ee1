"""Images downloaded by a second process, so a crawl uses two cores.

Scrapy runs on one thread, and most of a crawl's requests are images. With
``settings.crawl_image_processes = 1`` the page crawler (the site and marketplace spiders) hands
every image request that passed its policy (once per run, URL-length guard) to a child process,
``python -m copyhunt.crawl.process --image-fetcher``, over the child's stdin: one
``URL<TAB>REFERER`` line per image. The child (:func:`run_image_fetcher`) downloads them with
:class:`copyhunt.crawl.imageclient.ImageClient`, a lean asyncio client that applies the crawl's
rules from the same settings (safety guard, robots.txt, retries and Retry-After, redirects,
conditional requests, size cap), and passes what it got through the same output pipeline as the
spiders (magic bytes, bomb guard, blob store). It writes what it fetched (``fetched.parquet``) and
what failed (``errors.parquet``) when its stdin closes and its fetches are done. The page crawler
merges both into its results before writing the output tables.

The per-host politeness budget is split between the two processes (see
:func:`copyhunt.crawl.politeness.split_politeness`), so a host sees the configured rate in total.
If the fetcher falls behind, the pipe fills and the page crawler downloads the overflow itself;
if the child cannot be started or dies, the page crawler downloads the remaining images itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from copyhunt.crawl.blobwriter import grow_pipe
from copyhunt.crawl.results import CrawlResults, CrawlRun, FetchedImage
from copyhunt.crawl.outputs import ERRORS_SCHEMA
from copyhunt.crawl.validators import VALIDATORS_SCHEMA, read_image_rows
from copyhunt.lake import to_table, write_parquet_atomically

logger = logging.getLogger(__name__)

FETCHED_FILE = "fetched.parquet"
ERRORS_FILE = "errors.parquet"
# What the fetcher reports of each image: the validators' columns (the same fields, so the
# validators file can be written from it) plus where a redirect ended and whether a 304 came back.
FETCHED_SCHEMA = pa.schema([VALIDATORS_SCHEMA.field("image_url"), ("final_url", pa.string()),
                            *[f for f in VALIDATORS_SCHEMA if f.name != "image_url"], ("not_modified", pa.bool_())])
READ_LIMIT = 8192  # bytes of requests the fetcher reads ahead of its fetches (a line is at most MAX_LINE)
POLL_INTERVAL = 0.01  # seconds between looks at an empty pipe (the pipe holds far more than this)
MAX_LINE = 4096  # PIPE_BUF: writes up to this size are atomic, so a line is never split
# The pipe holds about a thousand requests: enough to ride out the fetcher's short stalls (a slow
# fsync, the scheduler) without the page crawler taking images over, which costs it several times
# the CPU the fetcher spends on one; a fetcher that stays behind still fills it, and the page
# crawler then downloads the overflow itself (both processes stay busy).
PIPE_BUFFER = 64 * 1024


# ---- the child's side ----------------------------------------------------------------------------
async def pipe_requests(stream: IO[bytes] | None = None, poll_interval: float = POLL_INTERVAL) -> AsyncIterator[tuple[str, str]]:
    """``(url, referer)`` for each line of ``stream`` (stdin), as they arrive, until EOF.

    Read only when the consumer asks for more, so a fetcher that falls behind leaves the backlog
    in the pipe, where the page crawler notices it. An empty pipe is looked at again after
    ``poll_interval`` rather than waited on: a reader waiting on the pipe is woken by every write,
    and on a busy machine each wake-up takes the page crawler off its core.
    """
    stream = stream if stream is not None else sys.stdin.buffer
    fd = stream.fileno()
    os.set_blocking(fd, False)
    pending = b""
    eof = False
    while not eof:
        try:
            chunk = os.read(fd, READ_LIMIT)
        except BlockingIOError:
            await asyncio.sleep(poll_interval)
            continue
        eof = not chunk  # the page crawler is done
        lines = (pending + chunk).split(b"\n")
        pending = b"" if eof else lines.pop()
        if len(pending) > MAX_LINE:  # longer than any line the page crawler writes: not a request
            pending = b""
        for line in lines:
            url, _, referer = line.decode("utf-8", "replace").rstrip("\r").partition("\t")
            if url:
                yield url, referer


def run_image_fetcher(settings: Any, run: CrawlRun, out_dir: Path, source: Callable[[], AsyncIterator[tuple[str, str]]] = pipe_requests) -> dict[str, Any]:
    """The child process's work: fetch what ``source`` sends, write the results into ``out_dir``
    (:func:`write_fetch_results`), and return the summary (finish reason, request counts).

    ``settings`` are the run's Scrapy settings (already given the images' politeness share);
    ``run.validators`` the earlier downloads to revalidate. Stops taking requests after
    ``CLOSESPIDER_TIMEOUT`` seconds; what was in flight or still queued is reported ``cancelled``.
    """
    from copyhunt.crawl.imageclient import FetchPolicy, ImageClient, fetch_all, run_event_loop
    from copyhunt.crawl.pipelines import CrawlOutputPipeline

    policy = FetchPolicy.from_settings(settings)
    pipeline = CrawlOutputPipeline(
        run=run, out_dir=out_dir, blob_root=Path(settings.get("COPYHUNT_BLOB_ROOT")),
        max_image_bytes=policy.max_image_bytes, max_image_pixels=settings.getint("COPYHUNT_MAX_IMAGE_PIXELS"),
    )  # fmt: skip

    async def main() -> tuple[str, Counter[str]]:
        async with ImageClient(policy, pipeline.process_item, run.validators) as client:
            finish_reason = await fetch_all(source(), client, policy.close_after)
        return finish_reason, client.stats

    finish_reason, stats = run_event_loop(main())
    pipeline.close_spider()
    write_fetch_results(run.results, out_dir)
    logger.info("image fetcher: %s; %d images fetched, %d errors; %s", finish_reason, len(run.results.fetched), len(run.results.errors), dict(stats))
    return {
        "finish_reason": finish_reason,
        "requests": stats["requests"],
        "responses": stats["responses"],
        "conditional_requests": stats["conditional_requests"],
        "dropped": {},
    }


def write_fetch_results(results: CrawlResults, out_dir: Path) -> None:
    """The child's output: what it fetched and what failed (atomic files in ``out_dir``)."""
    fetched = [{"image_url": url, **{k: getattr(f, k) for k in FETCHED_SCHEMA.names if k != "image_url"}} for url, f in results.fetched.items()]
    errors = [{"url": u, "reason": r, "detail": d} for u, r, d in results.errors]
    for name, rows, schema, keys in ((FETCHED_FILE, fetched, FETCHED_SCHEMA, ["image_url"]), (ERRORS_FILE, errors, ERRORS_SCHEMA, ["url"])):
        write_parquet_atomically(to_table(pa.Table.from_pylist(rows, schema=schema), sort_by=keys), out_dir / name)


def merge_fetch_results(results: CrawlResults, out_dir: Path) -> int:
    """Add the child's fetched images and errors to ``results``; returns the images merged."""
    fetched = read_image_rows(out_dir / FETCHED_FILE, FETCHED_SCHEMA)
    for row in fetched:
        url = row.pop("image_url")
        results.add_image(url, FetchedImage(**row))
    for row in read_image_rows(out_dir / ERRORS_FILE, ERRORS_SCHEMA):
        results.add_error(row["url"], row["reason"], row["detail"] or "")
    return len(fetched)


# ---- the page crawler's side ---------------------------------------------------------------------
class ImageFetcherProcess:
    """The child process, seen from the page crawler: send it image requests, then collect."""

    def __init__(self, out_dir: Path, argv: list[str], log_path: Path):
        self.out_dir = out_dir
        self.log_path = log_path
        self.sent = 0
        self.alive = True
        cmd = [sys.executable, "-m", "copyhunt.crawl.process", "--image-fetcher", "--out", str(out_dir), *argv]
        self.kept = 0  # images the page crawler fetched itself while the fetcher was busy
        self.sent_urls: list[str] = []
        self._fd: int | None = None
        self._log = open(log_path, "ab")
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT)
        except OSError as exc:
            logger.error("could not start the image fetcher (%s); images are fetched in this process", exc)
            self._proc, self.alive = None, False
            return
        assert self._proc.stdin is not None
        self._fd = self._proc.stdin.fileno()
        os.set_blocking(self._fd, False)
        grow_pipe(self._fd, PIPE_BUFFER)  # where it cannot grow, the overflow only comes sooner

    def send(self, url: str, referer: str | None) -> bool:
        """Queue one image for the child; False if it is busy or gone (fetch it yourself)."""
        return self.send_many([(url, referer)])[0]

    def send_many(self, images: list[tuple[str, str | None]]) -> list[bool]:
        """Queue ``(url, referer)`` pairs for the child, a page's worth in one write (each write
        wakes the child: one per image cost the page crawler more than the rest of the handover).
        For each pair, whether it was queued; the others are the caller's to fetch."""
        queued = [False] * len(images)
        chunk: list[int] = []
        size = 0
        lines: list[bytes] = []
        for url, referer in images:
            line = f"{url}\t{referer or ''}\n".encode("utf-8")
            if len(line) > MAX_LINE or line.count(b"\n") != 1 or line.count(b"\t") != 1:
                lines.append(b"")  # canonical URLs have no tabs or newlines; keep it here
                continue
            lines.append(line)
        for i, line in enumerate(lines):
            if not line:
                continue
            if size + len(line) > MAX_LINE:  # writes up to PIPE_BUF bytes are atomic: never a split line
                self._write(chunk, lines, images, queued)
                chunk, size = [], 0
            chunk.append(i)
            size += len(line)
        self._write(chunk, lines, images, queued)
        return queued

    def _write(self, chunk: list[int], lines: list[bytes], images: list[tuple[str, str | None]], queued: list[bool]) -> None:
        if not chunk:
            return
        if self._fd is not None:
            try:
                os.write(self._fd, b"".join(lines[i] for i in chunk))  # all or nothing (at most PIPE_BUF)
            except BlockingIOError:  # the fetcher is behind: these are the page crawler's
                pass
            except OSError:
                logger.error("the image fetcher exited early (see %s); fetching the rest here", self.log_path)
                self.alive, self._fd = False, None
            else:
                for i in chunk:
                    queued[i] = True
                self.sent += len(chunk)
                self.sent_urls.extend(images[i][0] for i in chunk)
                return
        if self.alive:
            self.kept += len(chunk)

    def finish(self, results: CrawlResults, timeout: float) -> dict[str, Any]:
        """Close the child's input, wait for it, and merge its results; returns its summary."""
        summary: dict[str, Any] = {"sent": self.sent, "kept": self.kept}
        if self._proc is None:
            return {**summary, "status": "not started"}
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError:
            pass
        self._fd = None
        try:
            code = self._proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        finally:
            self._log.close()
        summary["exit_code"] = code
        try:
            summary["merged"] = merge_fetch_results(results, self.out_dir)
        except (OSError, pa.ArrowException) as exc:
            summary["merged"] = 0
            logger.error("no results from the image fetcher (exit %s): %s; log: %s", code, exc, self.log_path)
        # Images it was sent but never reported on (it died, or was killed at the deadline) are
        # counted as errors; their rows keep a null sha256.
        reported = set(results.fetched) | {url for url, _, _ in results.errors}
        lost = [url for url in self.sent_urls if url not in reported]
        for url in lost:
            results.add_error(url, "image-fetcher-failed", f"the image fetcher exited with status {code}; log: {self.log_path}")
        summary["lost"] = len(lost)
        return summary
