"""Failure recovery and audit replay, on a copy of the demo run's lake and database.

Tasks are killed with SIGKILL at their worst moment (failpoints: the output partition fully staged
but not yet renamed into place; the database load done but not committed). No partial partition
may ever be visible, re-running must give the outputs of an uninterrupted run, and no hit may be
duplicated. A replay recomputes the run from its snapshot and must match the manifest byte for
byte; a tampered snapshot must be reported.
"""

import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from PIL import Image

from conftest import DEMO_RUN_DATE, REPO, db_rows, demo_settings_for, lake_snapshot
from copyhunt.blobs import LocalBlobStore
from copyhunt.lake import Lake

pytestmark = pytest.mark.slow


@pytest.fixture
def copied_run(demo_runs, tmp_path):
    settings, _ = demo_runs
    shutil.copytree(settings.home / "data", tmp_path / "data", symlinks=True, ignore=shutil.ignore_patterns("airflow", "replay"))
    return demo_settings_for(tmp_path)


def stage(settings, name, failpoints=None):
    env = {**os.environ, **settings.as_env(), "COPYHUNT_HOME": str(settings.home)}
    env.pop("COPYHUNT_FAILPOINTS", None)
    if failpoints:
        env["COPYHUNT_FAILPOINTS"] = failpoints
    return subprocess.run([sys.executable, "-m", "copyhunt.cli", "stage", name, "--run-date", DEMO_RUN_DATE.isoformat()],
                          env=env, capture_output=True, text=True, cwd=REPO)


def test_sigkilled_tasks_leave_no_partial_output_and_rerun_equals_uninterrupted(copied_run):
    settings = copied_run
    lake = Lake(settings.lake)
    before, rows_before = lake_snapshot(settings.lake, DEMO_RUN_DATE), db_rows(settings.database_url)

    # Killed while replacing an existing partition: the old complete partition stays visible.
    proc = stage(settings, "fingerprint", "lake.before_swap:image_fingerprints")
    assert proc.returncode == -9, proc.stderr[-1000:]
    assert lake_snapshot(settings.lake, DEMO_RUN_DATE) == before
    assert list((settings.lake / "image_fingerprints").glob(".staging-*")), "the staged files of the killed task are left aside"

    # Killed on a first write: the partition is absent, never half there.
    shutil.rmtree(lake.partition_dir("enriched", DEMO_RUN_DATE))
    proc = stage(settings, "enrich", "lake.before_swap:enriched")
    assert proc.returncode == -9
    assert not lake.partition_dir("enriched", DEMO_RUN_DATE).exists() and not lake.has_partition("enriched", DEMO_RUN_DATE)

    # Killed inside the database load: the transaction never happened.
    proc = stage(settings, "load", "load.before_commit")
    assert proc.returncode == -9
    assert db_rows(settings.database_url) == rows_before

    for name in ("fingerprint", "enrich", "price", "load"):
        proc = stage(settings, name)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert lake_snapshot(settings.lake, DEMO_RUN_DATE) == before
    assert db_rows(settings.database_url) == rows_before
    assert not list((settings.lake / "image_fingerprints").glob(".staging-*"))


def test_replay_is_byte_identical_and_tampering_is_reported(copied_run):
    settings = copied_run
    env = {**os.environ, **settings.as_env(), "COPYHUNT_HOME": str(settings.home)}
    cmd = [sys.executable, "-m", "copyhunt.cli", "replay", "--run-date", DEMO_RUN_DATE.isoformat()]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for dataset in ("image_fingerprints", "matches", "enriched", "priced"):
        assert dataset in proc.stdout
    assert "NO" not in proc.stdout

    # Replaying from a later stage uses the recorded earlier outputs as inputs.
    proc = subprocess.run(cmd + ["--from-stage", "enrich"], env=env, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:]

    # Tamper with the snapshot: change one stored image, keep its content-addressed name.
    lake = Lake(settings.lake)
    sha = lake.read_frame("images", DEMO_RUN_DATE)["blob_sha256"].dropna().iloc[0]
    path = LocalBlobStore(settings.blob_root).path(sha)
    path.write_bytes(path.read_bytes() + b"tampered")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    assert "tampered" in proc.stdout and sha[:12] in proc.stdout


def test_unreadable_images_are_reported_and_the_run_completes(settings):
    """A crawl snapshot with a corrupt file, a decompression bomb and an HTML page named .jpg."""
    from copyhunt import hunt

    blobs = LocalBlobStore(settings.blob_root)
    good = blobs.put((REPO / "assets" / "images" / "labelme" / "q0291.jpg").read_bytes())
    corrupt = blobs.put(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    html = blobs.put(b"<!doctype html><html><body>not an image</body></html>")
    bomb_img = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb_img, "PNG")  # 144 Mpx, compresses to a few KB
    bomb = blobs.put(bomb_img.getvalue())
    images = pd.DataFrame({"page_url": ["http://a.test/"] * 4, "image_url": [f"http://a.test/{i}.jpg" for i in range(4)],
                           "blob_sha256": [good, corrupt, html, bomb]})
    Lake(settings.lake).write_partition("images", DEMO_RUN_DATE, images)
    result = hunt.fingerprint(settings, DEMO_RUN_DATE, workers=1)
    assert result["images"] == 4 and result["errors"] == 3
    errors = Lake(settings.lake).read_frame("fingerprint_errors", DEMO_RUN_DATE).set_index("image_sha256")["reason"].to_dict()
    assert errors == {corrupt: "corrupt-image", html: "not-an-image", bomb: "decompression-bomb"}
    fps = Lake(settings.lake).read_frame("image_fingerprints", DEMO_RUN_DATE)
    assert set(fps["image_sha256"]) == {good}
