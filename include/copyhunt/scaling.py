"""How the daily run's time grows with crawled images and index size: a model fitted to a real run.

``project`` reads a finished run's report (seconds per stage, rows per stage) and fits per-unit
costs: crawl seconds per page, fingerprint seconds per image, match seconds per image (search plus
verification) and a fixed cost per stage (process and Spark start-up). It then projects the daily
run's wall time for larger crawls and indexes on W parallel workers.

Assumptions, stated so they can be checked against the throughput benchmark:
  * crawling, fingerprinting and verification scale linearly in images and divide over workers;
  * an Annoy query costs O(log R) per shard-tree walk and shards are searched in parallel
    batches, so the search term grows with log(R) / log(R0) from the measured index size R0;
  * enrich/price/load are linear in hits, which are a small fraction of images.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from copyhunt.config import Settings
from copyhunt.runlog import run_report

FIXED_STAGES = ("enrich", "price", "load", "digest")


@dataclass(frozen=True)
class CostModel:
    images: int
    pages: int
    index_entries: int
    crawl_per_page: float
    fingerprint_per_image: float
    match_per_image: float
    fixed_seconds: float

    def seconds(self, images: int, index_entries: int, workers: int) -> float:
        pages = images * (self.pages / max(self.images, 1))
        search_growth = math.log(max(index_entries, 2)) / math.log(max(self.index_entries, 2))
        per_worker = (pages * self.crawl_per_page + images * self.fingerprint_per_image
                      + images * self.match_per_image * search_growth) / max(workers, 1)
        return self.fixed_seconds + per_worker


def fit(settings: Settings, run_date: dt.date) -> CostModel:
    report = run_report(settings, run_date)
    stages = report["stages"]
    rows = report["rows"]
    missing = [s for s in ("crawl", "fingerprint", "match") if s not in stages]
    if missing:
        raise ValueError(f"run {run_date} has no timings for {missing}: run daily_hunt for that date first")
    images = max(int(stages["fingerprint"].get("figures", {}).get("images", 0)), 1)
    pages = max(int(rows.get("pages", 0)), 1)
    entries = _index_entries(settings, report["facts"].get("index_version"))
    # Spark start-up is a fixed cost of the match stage: measured once per run, not per image.
    spark_startup = 12.0
    match_seconds = max(stages["match"]["seconds"] - spark_startup, 0.0)
    fixed = spark_startup + sum(stages[s]["seconds"] for s in FIXED_STAGES if s in stages)
    return CostModel(images=images, pages=pages, index_entries=entries,
                     crawl_per_page=stages["crawl"]["seconds"] / pages,
                     fingerprint_per_image=stages["fingerprint"]["seconds"] / images,
                     match_per_image=match_seconds / images, fixed_seconds=fixed)


def _index_entries(settings: Settings, version: str | None) -> int:
    import json

    path = settings.index_root / "versions" / f"{version}.json"
    if not version or not path.exists():
        raise ValueError("the run's manifest names no index version; it cannot be fitted")
    return int(json.loads(path.read_text()).get("entries", 0)) or 1


def project(model: CostModel, images: list[int], index_entries: list[int], workers: list[int]) -> list[dict]:
    out = []
    for n in images:
        for r in index_entries:
            for w in workers:
                s = model.seconds(n, r, w)
                out.append({"images": n, "index_entries": r, "workers": w, "hours": round(s / 3600, 2), "fits_in_a_day": s < 86_400})
    return out
