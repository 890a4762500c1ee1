"""The match stage: the day's fingerprints against the index version of its run date, on Spark
(``copyhunt.jobs.match``), into ``matches``."""

from __future__ import annotations

import datetime as dt

from copyhunt.config import Settings
from copyhunt.lake import Lake
from copyhunt.sparkjob import run_job


def match(settings: Settings, run_date: dt.date) -> dict:
    """Spark-parallel ANN search against the index version of this run date, then verification."""
    from copyhunt.index import index_file_hashes
    from copyhunt.references import index_version_for

    lake = Lake(settings.lake)
    version = index_version_for(settings, run_date, lake)
    if not lake.has_partition("image_fingerprints", run_date):
        raise FileNotFoundError(f"no fingerprints for {run_date}: run the fingerprint task first")
    fingerprints = lake.verified_file("image_fingerprints", run_date)  # Spark reads the file: check it here
    args = ["--fingerprints", str(fingerprints), "--index-dir", str(settings.index_root), "--index-version", version,
            "--query-blobs", str(settings.blob_root), "--ref-blobs", str(settings.blob_root),
            "--lake", str(settings.lake), "--run-date", run_date.isoformat()]
    run_job(settings, "match", args, settings.resolve("data/logs") / f"run_date={run_date.isoformat()}" / "match-spark.log")
    lake.write_manifest(run_date, extra={"index_version": version, "index_files": index_file_hashes(settings.index_root, version)})
    lake.record_reads(run_date, "match")
    matches = lake.read_frame("matches", run_date)
    return {"matches": len(matches), "index_version": version}
