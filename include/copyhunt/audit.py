"""Audit: what a run was made from, and replaying it from its Parquet snapshot.

Every stage records in the run's manifest the facts that decide its outputs: the code version (a
hash of the library and job sources, plus the git commit when there is one), a hash of the
result-relevant configuration, the rate card's hash and the index version. ``replay`` recomputes
every stage after the crawl from that snapshot into a separate lake and compares each output's
sha256 with the manifest.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

from copyhunt.blobs import LocalBlobStore
from copyhunt.config import Settings
from copyhunt.lake import Lake, sha256_file

REPO_ROOT = Path(__file__).resolve().parents[2]
# Stage -> the lake datasets it writes. Order is the pipeline's order after the crawl.
REPLAY_STAGES: dict[str, tuple[str, ...]] = {
    "fingerprint": ("image_fingerprints", "fingerprint_errors"),
    "match": ("matches",),
    "enrich": ("enriched",),
    "price": ("priced",),
}
SNAPSHOT_DATASETS = ("pages", "images", "crawl_errors")


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """A hash of the sources that compute results, and the git commit if this is a checkout."""
    h = hashlib.sha256()
    roots = [REPO_ROOT / "include" / "copyhunt", REPO_ROOT / "jobs"]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in {".py", ".yaml", ".j2", ".html", ".json", ".toml"} and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    out = {"source_sha256": h.hexdigest()}
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def config_hash(settings: Settings) -> str:
    return hashlib.sha256(json.dumps(settings.fingerprint(), sort_keys=True, default=str).encode()).hexdigest()


def rate_card_hash() -> str:
    return hashlib.sha256(resources.files("copyhunt").joinpath("ratecard.yaml").read_bytes()).hexdigest()


def record_run_facts(settings: Settings, run_date: dt.date, **extra: object) -> None:
    """Stamp the run manifest with what its outputs were computed from."""
    Lake(settings.lake).write_manifest(run_date, extra={
        "code_version": code_version()["source_sha256"],
        "config_sha256": config_hash(settings),
        "rate_card_sha256": rate_card_hash(),
        **extra,
    })


# ---- replay ------------------------------------------------------------------------------------
@dataclass
class StageCheck:
    stage: str
    dataset: str
    rows: int | None
    expected_sha256: str | None
    actual_sha256: str | None

    @property
    def equal(self) -> bool:
        return self.expected_sha256 is not None and self.expected_sha256 == self.actual_sha256


@dataclass
class ReplayReport:
    run_date: str
    out_dir: Path
    snapshot_problems: list[str] = field(default_factory=list)
    checks: list[StageCheck] = field(default_factory=list)
    code_version_matches: bool = True

    @property
    def ok(self) -> bool:
        return not self.snapshot_problems and all(c.equal for c in self.checks)


def _manifest_file(manifest: dict, dataset: str) -> dict | None:
    files = manifest.get("datasets", {}).get(dataset, {}).get("files", [])
    parquet = [f for f in files if f["path"].endswith(".parquet")]
    return parquet[0] if parquet else None


def verify_snapshot(settings: Settings, run_date: dt.date, manifest: dict, datasets: tuple[str, ...]) -> list[str]:
    """Each input partition and every blob it references must be exactly what the run saw."""
    lake = Lake(settings.lake)
    problems = []
    for dataset in datasets:
        expected = _manifest_file(manifest, dataset)
        if expected is None:
            problems.append(f"{dataset}: not in the manifest")
            continue
        path = lake.root / expected["path"]
        if not path.exists():
            problems.append(f"{dataset}: {expected['path']} is missing")
        elif sha256_file(path) != expected["sha256"]:
            problems.append(f"{dataset}: {expected['path']} was modified (sha256 differs from the manifest)")
    if not problems and "images" in datasets:
        blobs = LocalBlobStore(settings.blob_root)
        referenced = set(lake.read_frame("images", run_date, columns=["blob_sha256"])["blob_sha256"].dropna())
        if "pages" in datasets:
            referenced |= set(lake.read_frame("pages", run_date, columns=["html_sha256"])["html_sha256"].dropna())
        for sha in sorted(referenced):
            p = blobs.path(sha)
            if not p.exists():
                problems.append(f"blob {sha[:12]}…: missing")
            elif sha256_file(p) != sha:
                problems.append(f"blob {sha[:12]}…: content does not match its sha256 (tampered)")
    return problems


def _link_partition(src_lake: Lake, dst_lake: Lake, dataset: str, run_date: dt.date) -> None:
    src, dst = src_lake.partition_dir(dataset, run_date), dst_lake.partition_dir(dataset, run_date)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst)


def replay(settings: Settings, run_date: dt.date, from_stage: str = "fingerprint", out_dir: Path | None = None,
           log: Callable[[str], None] = lambda _: None) -> ReplayReport:
    """Recompute the stages from ``from_stage`` on into ``out_dir`` and compare with the manifest."""
    from copyhunt import hunt

    if from_stage not in REPLAY_STAGES:
        raise ValueError(f"--from-stage must be one of {', '.join(REPLAY_STAGES)}")
    lake = Lake(settings.lake)
    manifest = lake.read_manifest(run_date)
    if not manifest:
        raise FileNotFoundError(f"no manifest for run date {run_date} in {lake.root}")
    out_dir = Path(out_dir or settings.resolve("data/replay") / f"run_date={run_date.isoformat()}")
    report = ReplayReport(run_date.isoformat(), out_dir)
    recorded = manifest.get("run", {}).get("code_version")
    report.code_version_matches = recorded == code_version()["source_sha256"]

    stages = list(REPLAY_STAGES)
    todo = stages[stages.index(from_stage):]
    # Inputs: the crawl snapshot, plus the outputs of the stages we do not recompute.
    inputs = SNAPSHOT_DATASETS + tuple(d for s in stages[: stages.index(from_stage)] for d in REPLAY_STAGES[s])
    report.snapshot_problems = verify_snapshot(settings, run_date, manifest, inputs)
    if report.snapshot_problems:
        return report

    if out_dir.exists():
        shutil.rmtree(out_dir)
    replay_lake = Lake(out_dir / "lake")
    replay_lake.root.mkdir(parents=True)
    for dataset in inputs + ("index_versions",):
        for d in lake.run_dates(dataset):
            if d <= run_date:
                _link_partition(lake, replay_lake, dataset, d)
    # History the price stage reads (first seen), from earlier runs only.
    for d in lake.run_dates("enriched"):
        if d < run_date:
            _link_partition(lake, replay_lake, "enriched", d)
    # Blobs and index shards are content-addressed and only read: share them.
    os.symlink(settings.blob_root.resolve(), replay_lake.root / "_blobs")
    os.symlink(settings.index_root.resolve(), replay_lake.root / "index")
    replay_settings = dataclasses.replace(settings, lake_root=replay_lake.root, hits_db_url=f"sqlite:///{out_dir / 'replay.db'}",
                                          outbox_dir=out_dir / "outbox")
    for stage in todo:
        log(f"replaying {stage}")
        getattr(hunt, stage)(replay_settings, run_date)
        for dataset in REPLAY_STAGES[stage]:
            expected = _manifest_file(manifest, dataset)
            path = replay_lake.partition_file(dataset, run_date)
            actual = sha256_file(path) if path.exists() else None
            rows = replay_lake.manifest(run_date)["datasets"].get(dataset, {}).get("rows")
            report.checks.append(StageCheck(stage, dataset, rows, expected["sha256"] if expected else None, actual))
    return report
