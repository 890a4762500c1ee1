"""The load stage: the day's priced hits into the hits database (``copyhunt.hitsdb.store``); new
hits on a customer's own sites are authorised (``copyhunt.coverage``)."""

from __future__ import annotations

import datetime as dt

from copyhunt.config import Settings
from copyhunt.lake import Lake
from copyhunt.stages.registry_snapshot import run_customers


def load(settings: Settings, run_date: dt.date) -> dict:
    from copyhunt.coverage import authorise_own_site_hits
    from copyhunt.hitsdb.store import create_schema, load_hits, make_engine, sync_customers

    engine = make_engine(settings.database_url)
    try:
        create_schema(engine)
        registered = run_customers(settings, run_date)
        sync_customers(engine, registered, only_missing=True)  # the hits' customers and images exist
        # The day's crawl covered every seed for every customer: a hit not found again is offline.
        stats = load_hits(engine, Lake(settings.lake).read_frame("priced", run_date), run_date, complete_for=[c.id for c in registered])
        # Its own transaction after the load's: a crash in between leaves open hits that the task's
        # retry authorises, and the digest (the next task) only runs after this one succeeded.
        authorised = authorise_own_site_hits(engine, [c.id for c in registered], run_date)
    finally:
        engine.dispose()
    return {**stats._asdict(), "own_site_hits_authorised": authorised}
