"""Run a crawl from Python (an Airflow task, the CLI) in a subprocess, and read back its counts.

Twisted's reactor cannot be restarted inside a long-lived worker, so :func:`run_crawl` launches
``python -m copyhunt.crawl.process`` with the same interpreter and hands it the Settings as
COPYHUNT_* environment variables. The child writes ``pages.parquet``, ``images.parquet``,
``errors.parquet`` (see :mod:`copyhunt.crawl.outputs`), ``crawl.json``, ``crawl.log`` (and
``crawl-images.log`` from its image fetcher, see :mod:`copyhunt.crawl.imagefetch`) and the
``seeds.txt`` it was given into ``out_dir``; HTML and images go to the blob store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

import copyhunt
from copyhunt.config import ENV_PREFIX, Settings
from copyhunt.lake import atomic_write_bytes
from copyhunt.crawl.outputs import output_path, outputs_complete, row_count

SEEDS_FILE = "seeds.txt"
LOG_FILE = "crawl.log"
SUMMARY_FILE = "crawl.json"


class CrawlError(RuntimeError):
    """The crawl could not run (bad arguments, crash, hard timeout); failed pages are not this."""


@dataclass(frozen=True)
class CrawlSummary:
    out_dir: Path
    pages: int  # rows in pages.parquet (HTML pages fetched)
    images: int  # rows in images.parquet ((page, image) pairs)
    images_stored: int  # distinct image blobs stored
    errors: int  # rows in errors.parquet
    finish_reason: str | None  # Scrapy's: "finished", "closespider_timeout", ...
    duration_s: float
    images_not_modified: int = 0  # distinct images answered 304 and reused from the blob store

    @property
    def pages_path(self) -> Path:
        return output_path(self.out_dir, "pages")

    @property
    def images_path(self) -> Path:
        return output_path(self.out_dir, "images")

    @property
    def errors_path(self) -> Path:
        return output_path(self.out_dir, "errors")


def read_summary(out_dir: Path, duration_s: float | None = None) -> CrawlSummary:
    """Counts of a finished crawl, read from its output tables."""
    out_dir = Path(out_dir)
    if not outputs_complete(out_dir):
        raise CrawlError(f"no complete crawl output in {out_dir}")
    meta: dict[str, Any] = {}
    if (out_dir / SUMMARY_FILE).exists():
        meta = json.loads((out_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    images = pq.read_table(output_path(out_dir, "images"), columns=["image_url", "blob_sha256", "not_modified"])
    blobs = images.column("blob_sha256")
    reused = images.filter(pc.fill_null(images.column("not_modified"), False)).column("image_url")
    return CrawlSummary(
        out_dir=out_dir,
        pages=row_count(out_dir, "pages"),
        images=row_count(out_dir, "images"),
        images_stored=pc.count_distinct(blobs, mode="only_valid").as_py(),
        errors=row_count(out_dir, "errors"),
        finish_reason=meta.get("finish_reason"),
        duration_s=float(duration_s if duration_s is not None else meta.get("duration_s", 0.0)),
        images_not_modified=pc.count_distinct(reused).as_py(),
    )


def _child_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(settings.as_env())  # every field explicit: the child sees exactly these Settings
    # Make the package importable even where it is on sys.path but not installed (Airflow's include/).
    package_root = str(Path(copyhunt.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_crawl(
    seeds: list[str],
    out_dir: Path,
    settings: Settings,
    max_pages: int | None = None,
    allow_private: bool | None = None,
    timeout_s: float = 900,
    *,
    scrapy_overrides: Mapping[str, Any] | None = None,
    validators: Path | None = None,
) -> CrawlSummary:
    """Crawl from ``seeds`` into ``out_dir`` in a subprocess and return the counts.

    ``max_pages`` is the page budget per domain (default ``settings.crawl_max_pages_per_domain``);
    ``allow_private`` overrides ``settings.crawl_allow_private``. The crawl closes itself after
    about 0.8 x ``timeout_s`` and writes what it has; the process is killed (CrawlError) if it is
    still running at ``timeout_s``. ``scrapy_overrides`` sets Scrapy settings for this run
    (values must be JSON-serialisable), e.g. a shorter ``DOWNLOAD_DELAY`` against a local server.
    ``validators`` is a file from :func:`copyhunt.crawl.validators.validators_from_lake`: the
    images it lists are requested conditionally, and those the server reports unchanged (304)
    are not downloaded again.

    Seeds are ``URL`` or ``SPIDER URL`` lines (:mod:`copyhunt.crawl.seeds`); hosts in
    ``settings.crawl_marketplace_hosts`` go to the marketplace spider.

    Raises CrawlError if the crawl cannot run; failed pages and images are reported in
    errors.parquet and do not raise.
    """
    seeds = [s.strip() for s in seeds if s and s.strip()]
    if not seeds:
        raise ValueError("run_crawl needs at least one seed URL")
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds_path = out_dir / SEEDS_FILE
    atomic_write_bytes(seeds_path, ("\n".join(seeds) + "\n").encode("utf-8"))

    cmd = [
        sys.executable, "-m", "copyhunt.crawl.process",
        "--seeds-file", str(seeds_path),
        "--out", str(out_dir),
        "--timeout", str(timeout_s),
        "--log-file", str(out_dir / LOG_FILE),
    ]  # fmt: skip
    if max_pages is not None:
        cmd += ["--max-pages", str(max_pages)]
    if allow_private is not None:
        cmd.append("--allow-private" if allow_private else "--no-allow-private")
    if validators is not None:
        cmd += ["--validators", str(Path(validators).resolve())]
    for key, value in sorted((scrapy_overrides or {}).items()):
        cmd += ["-s", f"{key}={json.dumps(value)}"]

    started = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, env=_child_env(settings), capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as exc:
        raise CrawlError(f"crawl killed after {timeout_s:.0f}s; log: {out_dir / LOG_FILE}") from exc
    if proc.returncode != 0:
        raise CrawlError(f"crawl exited with status {proc.returncode}; log: {out_dir / LOG_FILE}\n{_tail(proc.stderr)}")
    return read_summary(out_dir, duration_s=time.monotonic() - started)
