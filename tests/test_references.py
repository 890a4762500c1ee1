"""The customer index as hunts see it when customer_index runs hourly."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from copyhunt.lake import Lake
from copyhunt.references import IndexChangedDuringRun, check_index_as_matched

DAY = dt.date(2026, 11, 24)


def publish(lake: Lake, version: str) -> None:
    lake.write_partition("index_versions", DAY, pd.DataFrame([{"version": version, "shards": "[]", "entries": 0}]))


def test_a_hunt_refuses_to_go_on_after_customer_index_replaced_the_version_it_matched(tmp_path):
    lake = Lake(tmp_path / "lake")
    publish(lake, "morning")
    match_lake = Lake(lake.root)  # the match stage reads the version through its own lake and records it
    match_lake.read_frame("index_versions", DAY)
    match_lake.record_reads(DAY, "match")
    check_index_as_matched(Lake(lake.root), DAY, DAY)  # nothing changed: enrich goes on

    publish(lake, "after-an-upload")  # the hourly customer_index run, between match and enrich
    with pytest.raises(IndexChangedDuringRun, match="re-run the 2026-11-24 hunt from its match task"):
        check_index_as_matched(Lake(lake.root), DAY, DAY)
    # The replaced version stays readable by its sha256 (a replay of the hunt reads it).
    recorded = lake.read_manifest(DAY)["run"]["reads"]["match"][0]["sha256"]
    assert lake.superseded_file("index_versions", DAY, recorded) is not None

    rematched = Lake(lake.root)  # re-running from match reads the new version throughout
    rematched.read_frame("index_versions", DAY)
    rematched.record_reads(DAY, "match")
    check_index_as_matched(Lake(lake.root), DAY, DAY)


def test_a_day_whose_hunt_has_not_matched_yet_takes_the_newest_version(tmp_path):
    lake = Lake(tmp_path / "lake")
    publish(lake, "morning")
    publish(lake, "after-an-upload")
    check_index_as_matched(lake, DAY, DAY)
