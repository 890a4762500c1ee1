"""The daily_hunt run: its stages in order, and what the run reports at its end.

Each stage's logic is a module of ``copyhunt.stages``; this module only lists them, so the DAG,
the CLI (``copyhunt stage``) and replay run the same functions in the same order.

    crawl -> fingerprint -> match (spark-submit) -> enrich -> price -> load -> digest
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

from copyhunt.config import Settings
from copyhunt.lake import Lake
from copyhunt.stages.crawl import crawl
from copyhunt.stages.digest import digest
from copyhunt.stages.enrich import enrich
from copyhunt.stages.fingerprint import fingerprint
from copyhunt.stages.load import load
from copyhunt.stages.match import match
from copyhunt.stages.price import price

Stage = Callable[[Settings, dt.date], dict]

# The daily stages in the order a run takes them; each reads only partitions the earlier ones wrote.
DAILY_STAGES: dict[str, Stage] = {
    "crawl": crawl,
    "fingerprint": fingerprint,
    "match": match,
    "enrich": enrich,
    "price": price,
    "load": load,
    "digest": digest,
}


def daily_stage(name: str) -> Stage:
    """The daily stage called ``name``; a clear error naming the stages for any other name."""
    try:
        return DAILY_STAGES[name]
    except KeyError:
        raise ValueError(f"no daily stage {name!r}; one of {', '.join(DAILY_STAGES)}") from None


def summary(settings: Settings, run_date: dt.date) -> dict:
    """Figures for the end of a run: what was crawled, matched and loaded, and where to look."""
    from copyhunt.hitsdb.store import count_hits, make_engine

    lake = Lake(settings.lake)
    m = lake.manifest(run_date)["datasets"]
    engine = make_engine(settings.database_url)
    try:
        hits = count_hits(engine)
    finally:
        engine.dispose()
    outbox = settings.outbox / run_date.isoformat()
    return {
        "run_date": run_date.isoformat(),
        "pages": m.get("pages", {}).get("rows", 0),
        "images": m.get("images", {}).get("rows", 0),
        "crawl_errors": m.get("crawl_errors", {}).get("rows", 0),
        "matches": m.get("matches", {}).get("rows", 0),
        "hits_per_customer": hits,
        "database": settings.database_url,
        "lake": str(lake.root),
        "manifest": str(lake.manifest_path(run_date)),
        "digests": str(outbox),
        "digest_files": sorted(p.name for p in outbox.glob("*.eml")) if outbox.exists() else [],
    }


def run_date_from_context(context: dict) -> dt.date:
    """The partition a task run writes: params.run_date, else the logical date, else run_after.

    Airflow 3 manual and asset-triggered runs may have no logical date, so it is derived here
    explicitly rather than assumed.
    """
    params = context.get("params") or {}
    if params.get("run_date"):
        from copyhunt.lake import parse_run_date

        return parse_run_date(params["run_date"])
    for key in ("logical_date", "data_interval_end"):
        value = context.get(key)
        if value is not None:
            return value.date()
    dag_run = context.get("dag_run")
    if dag_run is not None and getattr(dag_run, "run_after", None) is not None:
        return dag_run.run_after.date()
    raise ValueError("cannot derive the run date: no params.run_date, logical date or run_after")
