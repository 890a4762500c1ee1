"""The enrich stage: each match with its page's operator, dates, credit and first sighting, into
``enriched``. The rules are the ``copyhunt.enrich`` package."""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq

from copyhunt.blobs import LocalBlobStore
from copyhunt.config import Settings
from copyhunt.lake import Lake
from copyhunt.stages.registry_snapshot import run_customers


def _html_reader(settings: Settings):
    blobs = LocalBlobStore(settings.blob_root)

    def read(sha: str | None) -> bytes | None:
        if not isinstance(sha, str):
            return None
        try:
            return blobs.get(sha)
        except (KeyError, ValueError):
            return None

    return read


def enrich(settings: Settings, run_date: dt.date) -> dict:
    from copyhunt.enrich import enrich_matches

    lake = Lake(settings.lake)
    frame = enrich_matches(lake.read_frame("matches", run_date), lake.read_frame("images", run_date), lake.read_frame("pages", run_date),
                           run_customers(settings, run_date, lake), _html_reader(settings), run_date, first_seen_history(settings, run_date, lake))
    lake.write_partition("enriched", run_date, frame, sort_by=["customer_id", "image_id", "page_url", "image_url"])
    lake.record_reads(run_date, "enrich")  # the earlier days' history: what a replay must read
    return {"enriched": len(frame), "with_operator": int(frame["operator_name"].notna().sum()), "with_date": int(frame["published_at"].notna().sum()),
            "seen_before": int((frame["first_seen"] < run_date.isoformat()).sum()) if len(frame) else 0,
            "errors": int(frame["enrich_error"].notna().sum()) if len(frame) else 0}


def first_seen_history(settings: Settings, run_date: dt.date, lake: Lake | None = None) -> dict:
    """(customer, image, page, image URL) -> first run date it was found, from earlier partitions
    (read through ``lake``, which remembers them, so the stage can record which)."""
    lake = lake or Lake(settings.lake)
    seen: dict = {}
    for d in lake.run_dates("enriched"):
        if d >= run_date:
            break
        # Partitions written since enrichment records first_seen carry history older than themselves.
        has_first_seen = "first_seen" in pq.read_schema(lake.verified_file("enriched", d)).names
        f = lake.read_frame("enriched", d, columns=["customer_id", "image_id", "page_url", "image_url"] + (["first_seen"] if has_first_seen else []))
        for key, first in zip(f[["customer_id", "image_id", "page_url", "image_url"]].itertuples(index=False, name=None),
                              f["first_seen"] if has_first_seen else [None] * len(f)):
            earliest = min(d.isoformat(), first) if isinstance(first, str) and first else d.isoformat()
            seen[key] = min(seen.get(key, earliest), earliest)
    return seen
