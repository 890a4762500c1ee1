"""The digest stage: each customer's new hits as an e-mail in the outbox (``copyhunt.hitsdb.digest``)."""

from __future__ import annotations

import datetime as dt

from copyhunt.config import Settings


def digest(settings: Settings, run_date: dt.date) -> dict:
    from copyhunt.hitsdb.digest import send_digests
    from copyhunt.hitsdb.store import make_engine

    engine = make_engine(settings.database_url)
    try:
        results = send_digests(engine, run_date, settings, settings.blob_root)
    finally:
        engine.dispose()
    return {"digests": len(results)}
