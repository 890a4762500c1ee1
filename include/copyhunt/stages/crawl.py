"""The crawl stage: the seeds into the day's ``pages``, ``images`` and ``crawl_errors`` partitions.

The crawler itself (spiders, politeness, image downloads) is ``copyhunt.crawl``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path

import pyarrow.parquet as pq

from copyhunt.config import Settings
from copyhunt.lake import Lake


def read_seeds(path: Path) -> list[str]:
    if not path.exists():
        raise FileNotFoundError(f"seeds file {path} does not exist (set COPYHUNT_SEEDS_FILE)")
    seeds = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            seeds.append(line)
    if not seeds:
        raise ValueError(f"seeds file {path} names no URL")
    return seeds


def crawl(settings: Settings, run_date: dt.date, force: bool = False) -> dict:
    """Crawl the seeds into the ``pages``, ``images`` and ``crawl_errors`` partitions.

    A day's crawl is its evidence snapshot: once complete it is kept (re-running the task is a
    no-op) unless ``force`` is given; every later stage recomputes from it.
    """
    from copyhunt.crawl.runner import run_crawl
    from copyhunt.crawl.validators import validators_from_lake

    lake = Lake(settings.lake)
    # A crawl killed mid-run leaves its staging directory: the day's next run removes them.
    for leftover in (settings.lake / ".crawl-staging").glob(f"{run_date.isoformat()}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if not force and all(lake.has_partition(d, run_date) for d in ("pages", "images", "crawl_errors")):
        return {"skipped": True, **_crawl_counts(lake, run_date)}
    staging = settings.lake / ".crawl-staging" / f"{run_date.isoformat()}-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        # The previous day's ETag/Last-Modified: unchanged images get a 304, not a second download.
        validators = validators_from_lake(settings.lake, run_date, staging / "validators.parquet")
        run_crawl(read_seeds(settings.seeds_path), staging, settings, validators=validators)
        for dataset, name, keys in (("pages", "pages.parquet", ["url"]), ("images", "images.parquet", ["page_url", "image_url"]), ("crawl_errors", "errors.parquet", ["url"])):
            lake.write_partition(dataset, run_date, pq.read_table(staging / name), sort_by=keys)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"skipped": False, **_crawl_counts(lake, run_date)}


def _crawl_counts(lake: Lake, run_date: dt.date) -> dict:
    m = lake.manifest(run_date)["datasets"]
    return {k: m.get(d, {}).get("rows", 0) for k, d in (("pages", "pages"), ("images", "images"), ("errors", "crawl_errors"))}
