"""The customer registry a run uses, shared by the enrich, price and load stages."""

from __future__ import annotations

import datetime as dt

from copyhunt.config import Settings
from copyhunt.lake import Lake
from copyhunt.registry import customers_from_snapshot


def run_customers(settings: Settings, run_date: dt.date, lake: Lake | None = None) -> list:
    """The registry a run on ``run_date`` uses: the snapshot taken with the index it matches
    against (the newest customer_index run on or before that day), not the database as it is now.
    Read through the stage's ``lake``, which records the partitions for replay."""
    from copyhunt.references import check_index_as_matched, index_date_for

    lake = lake or Lake(settings.lake)
    snapshot_date = index_date_for(settings, run_date, lake)
    check_index_as_matched(lake, run_date, snapshot_date)
    # Read the index version too, not only its date: the read is recorded, so a replay of this
    # stage links that partition and finds the same customer_index run.
    lake.read_frame("index_versions", snapshot_date)
    return customers_from_snapshot(settings, snapshot_date, lake)
