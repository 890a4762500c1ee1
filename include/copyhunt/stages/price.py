"""The price stage: each enriched hit against the rate card (``copyhunt.pricing``), into ``priced``."""

from __future__ import annotations

import datetime as dt

from copyhunt.config import Settings
from copyhunt.lake import Lake
from copyhunt.stages.registry_snapshot import run_customers


def price(settings: Settings, run_date: dt.date) -> dict:
    from copyhunt.pricing import load_rate_card, price_hits

    lake = Lake(settings.lake)
    card = load_rate_card()
    frame = price_hits(lake.read_frame("enriched", run_date), run_customers(settings, run_date, lake), card, run_date)
    lake.write_partition("priced", run_date, frame, sort_by=["customer_id", "image_id", "page_url", "image_url"])
    lake.write_manifest(run_date, extra={"rate_card_version": card.version})
    lake.record_reads(run_date, "price")
    return {"priced": len(frame), "licensed": int(frame["licensed"].sum()) if len(frame) else 0,
            "claim_value_cents": int(frame["license_value_cents"].sum()) if len(frame) else 0,
            "errors": int(frame["price_status"].str.startswith("error").sum()) if len(frame) else 0}
