"""The customer index as hunts see it when customer_index runs hourly."""

from __future__ import annotations

import datetime as dt
import random

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


def test_customer_index_compacts_once_small_shards_exceed_the_configured_count(tmp_path):
    import dataclasses

    from copyhunt.config import load_settings
    from copyhunt.index import ENTRY_COLUMNS, ShardSearcher, current_shards, small_shards
    from copyhunt.references import build_reference_index
    from copyhunt.runlog import run_stage

    settings = dataclasses.replace(load_settings(env={"COPYHUNT_HOME": str(tmp_path)}), shard_size=100, index_max_small_shards=2)
    lake = Lake(settings.lake)
    registered = pd.DataFrame(columns=ENTRY_COLUMNS)
    rng = random.Random(3)
    published = []
    for upload in range(4):  # an hourly run after each of four uploads, 20 windows an image
        new = pd.DataFrame([{"customer_id": "c1", "image_id": f"img{upload}", "ref_sha256": f"{upload:064x}", "window": f"w{w:02d}",
                             "mirrored": False, "x0": 0.0, "y0": 0.0, "x1": 1.0, "y1": 1.0, "phash": rng.getrandbits(64) - (1 << 63)}
                            for w in range(20)])
        registered = pd.concat([registered, new], ignore_index=True) if len(registered) else new
        lake.write_partition("reference_fingerprints", DAY, registered, sort_by=["customer_id", "image_id", "window"])
        published.append(run_stage("build_index", build_reference_index, settings, DAY))
    assert [p["compacted"] for p in published] == [0, 0, 3, 0]  # the third small shard triggers it
    # Three images (60 entries) fill one shard past half full; the fourth upload is the one small shard.
    assert len(small_shards(settings.index_root, 100)) == 1 and len(current_shards(settings.index_root)) == 2
    version = lake.read_frame("index_versions", DAY)["version"].iloc[0]
    found = ShardSearcher(settings.index_root, version=version).query(registered["phash"].tolist(), k=2, max_distance=0)
    assert set(found["image_id"]) == {"img0", "img1", "img2", "img3"}
