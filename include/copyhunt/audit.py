"""Audit: what a run was made from, checking its stored snapshot, and replaying it.

Every stage records in the run's manifest the facts that decide its outputs: the code version (a
hash of the library and job sources, plus the git commit when there is one), a hash of the
result-relevant configuration, the rate card's hash, the index version and the sha256 of each
index file it used, and the partitions it read (``run.reads``: dataset, run date, sha256), then
seals the manifest (``sealing``: chain link and ed25519 signature).

``verify_run`` checks a day's whole stored snapshot against its manifest (``copyhunt audit
verify``); ``replay`` checks the same, then recomputes the stages from ``from_stage`` on into a
separate lake holding exactly the partitions the run read, and compares each output's sha256
with the manifest (``copyhunt replay``).
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
from copyhunt.lake import Lake, parse_run_date, sha256_file
from copyhunt.sealing import check_seal, seal_manifest

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
    """Stamp the run manifest with what its outputs were computed from, and seal it."""
    lake = Lake(settings.lake)
    lake.write_manifest(run_date, extra={
        "code_version": code_version()["source_sha256"],
        "config_sha256": config_hash(settings),
        "rate_card_sha256": rate_card_hash(),
        **extra,
    })
    seal_manifest(lake, run_date, settings.manifest_key_path)


# ---- verify --------------------------------------------------------------------------------------
@dataclass
class Finding:
    """One row of ``audit verify``: a check of one thing of a run date; ``problem`` None is ok."""

    run_date: str
    check: str  # manifest, signature, chain, partition, blobs, index, reads
    subject: str
    problem: str | None = None
    detail: str = ""


def _blob_findings(settings: Settings, lake: Lake, rd: str, manifest: dict) -> list[Finding]:
    """Every HTML and image blob the day's pages and images reference: present, content = name."""
    import pyarrow.parquet as pq

    referenced: set[str] = set()
    for dataset, column in (("images", "blob_sha256"), ("pages", "html_sha256")):
        entry = _manifest_file(manifest, dataset)
        if entry is None:
            continue
        table = pq.read_table(lake.root / entry["path"], columns=[column])  # its sha256 was checked just before
        referenced |= {v for v in table.column(column).to_pylist() if v}
    blobs = LocalBlobStore(settings.blob_root)
    out = []
    for sha in sorted(referenced):
        p = blobs.path(sha)
        if not p.exists():
            out.append(Finding(rd, "blobs", str(p), "missing"))
        elif sha256_file(p) != sha:
            out.append(Finding(rd, "blobs", str(p), f"content does not match its name: expected sha256 {sha}, actual sha256 {sha256_file(p)} (tampered)"))
    if not out:
        out.append(Finding(rd, "blobs", str(settings.blob_root), None, f"{len(referenced)} referenced blobs"))
    return out


def verify_run(settings: Settings, run_date: dt.date, seal: bool = True) -> list[Finding]:
    """Check one run date's stored snapshot: the manifest's signature and chain link (``seal``),
    every partition of every dataset it lists (so any dataset, such as the customer registry
    snapshot, is covered once it is in the manifest), partitions of that date it does not list,
    every referenced blob, the index files the match used, and the other days' partitions the
    stages read."""
    lake = Lake(settings.lake)
    rd = parse_run_date(run_date).isoformat()
    path = lake.manifest_path(rd)
    if not path.exists():
        return [Finding(rd, "manifest", str(path), "no manifest for this run date")]
    try:
        manifest = lake.read_manifest(rd)
    except ValueError as exc:
        return [Finding(rd, "manifest", str(path), f"not valid JSON: {exc}")]
    out = [Finding(rd, "manifest", str(path), None, f"sha256 {sha256_file(path)}")]
    if seal:
        out += [Finding(rd, check, str(path), None if result.startswith("ok") else result, result if result.startswith("ok") else "")
                for check, result in check_seal(lake, parse_run_date(rd), settings.manifest_key_path.parent)]
    listed = manifest.get("datasets", {})
    for dataset, entry in sorted(listed.items()):
        for f in entry.get("files", []):
            p = lake.root / f["path"]
            actual = sha256_file(p) if p.exists() else None
            problem = None if actual == f["sha256"] else ("missing" if actual is None else f"expected sha256 {f['sha256']}, actual sha256 {actual}")
            out.append(Finding(rd, "partition", str(p), problem, f"{f.get('rows', '')} rows" if "rows" in f else ""))
    for ds in sorted(p for p in lake.root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))) if lake.root.exists() else []:
        if ds.name not in listed and lake.has_partition(ds.name, rd):
            out.append(Finding(rd, "partition", str(lake.partition_file(ds.name, rd)), "a partition of this run date the manifest does not list"))
    if not any(f.problem for f in out if f.check == "partition"):
        out += _blob_findings(settings, lake, rd, manifest)
    index_files = manifest.get("run", {}).get("index_files", {})
    bad_index = []
    for rel, sha in sorted(index_files.items()):
        p = settings.index_root / rel
        actual = sha256_file(p) if p.exists() else None
        if actual != sha:
            bad_index.append(Finding(rd, "index", str(p), "missing" if actual is None else f"expected sha256 {sha}, actual sha256 {actual}"))
    if index_files:
        out += bad_index or [Finding(rd, "index", str(settings.index_root), None,
                                     f"{len(index_files)} files of version {manifest.get('run', {}).get('index_version')}")]
    for stage, reads in sorted(manifest.get("run", {}).get("reads", {}).items()):
        for read in reads:
            if read["run_date"] == rd:
                continue  # this day's own partitions: checked above
            problem = _read_problem(lake, read)
            out.append(Finding(rd, "reads", f"{stage} read {read['dataset']}/run_date={read['run_date']}", problem))
    return out


def _read_source(lake: Lake, read: dict) -> Path | None:
    """The file holding a recorded read (dataset, run date, sha256) as the run read it: the
    partition, or its superseded copy when a later re-run replaced it."""
    p = lake.partition_file(read["dataset"], read["run_date"])
    if lake.has_partition(read["dataset"], read["run_date"]) and sha256_file(p) == read["sha256"]:
        return p
    return lake.superseded_file(read["dataset"], read["run_date"], read["sha256"])


def _read_problem(lake: Lake, read: dict) -> str | None:
    """Why a recorded read cannot be read again as it was, or None."""
    if _read_source(lake, read) is not None:
        return None
    p = lake.partition_file(read["dataset"], read["run_date"])
    if not lake.has_partition(read["dataset"], read["run_date"]):
        return f"{p} is missing"
    return f"{p}: expected sha256 {read['sha256']} (as read by the run), actual sha256 {sha256_file(p)}, and no superseded copy is kept"


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


# What a stage read from other partitions before manifests recorded it (``run.reads``): replaying
# an older run falls back to every such partition present, as the stage itself did.
UNRECORDED_HISTORY: dict[str, tuple[str, bool]] = {  # stage -> (dataset, include the run date itself)
    "match": ("index_versions", True),
    "enrich": ("enriched", False),
}


def _replay_reads(lake: Lake, manifest: dict, run_date: dt.date, todo: list[str]) -> set[tuple[str, str]]:
    """(dataset, run date) of the partitions the stages ``todo`` read when the run made them."""
    recorded = manifest.get("run", {}).get("reads", {})
    out: set[tuple[str, str]] = set()
    for stage in todo:
        if stage in recorded:
            out |= {(r["dataset"], r["run_date"]) for r in recorded[stage]}
        elif stage in UNRECORDED_HISTORY:
            dataset, same_day = UNRECORDED_HISTORY[stage]
            out |= {(dataset, d.isoformat()) for d in lake.run_dates(dataset) if d < run_date or (same_day and d == run_date)}
    return out


def replay(settings: Settings, run_date: dt.date, from_stage: str = "fingerprint", out_dir: Path | None = None,
           log: Callable[[str], None] = lambda _: None) -> ReplayReport:
    """Check the day's stored snapshot against its manifest, then recompute the stages from
    ``from_stage`` on into ``out_dir``, from exactly the partitions they read when the run made
    them, and compare with the manifest."""
    from copyhunt.hunt import daily_stage

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
    rd = run_date.isoformat()
    recomputed = {(d, rd) for s in todo for d in REPLAY_STAGES[s]}
    # Every stored output of the day, not only the inputs: a tampered output is refused even when
    # its stage is recomputed (the recomputation would otherwise hide it). The seal is audit
    # verify's; replay is about the data.
    report.snapshot_problems = [f"{f.subject}: {f.problem}" for f in verify_run(settings, run_date, seal=False)
                                if f.problem and f.check in ("manifest", "partition", "blobs")]
    # Inputs: the crawl snapshot, the outputs of the stages we do not recompute, and what the
    # recomputed stages read from other partitions (each linked once).
    inputs = {(d, rd) for d in SNAPSHOT_DATASETS + tuple(d for s in stages[: stages.index(from_stage)] for d in REPLAY_STAGES[s])}
    for dataset, _ in inputs:
        if _manifest_file(manifest, dataset) is None:
            report.snapshot_problems.append(f"{dataset}: not in the manifest")
    history = _replay_reads(lake, manifest, run_date, todo) - recomputed - inputs
    sources: dict[tuple[str, str], Path] = {}  # recorded reads whose partition was replaced since
    for stage in todo:
        for read in manifest.get("run", {}).get("reads", {}).get(stage, []):
            if (read["dataset"], read["run_date"]) in history:
                problem = _read_problem(lake, read)
                if problem:
                    report.snapshot_problems.append(f"{stage} read {read['dataset']}/run_date={read['run_date']}: {problem}")
                elif _read_source(lake, read) != lake.partition_file(read["dataset"], read["run_date"]):
                    sources[(read["dataset"], read["run_date"])] = _read_source(lake, read)
    if report.snapshot_problems:
        return report

    if out_dir.exists():
        shutil.rmtree(out_dir)
    replay_lake = Lake(out_dir / "lake")
    replay_lake.root.mkdir(parents=True)
    for dataset, d in sorted(inputs | history):
        _link_partition(lake, replay_lake, dataset, parse_run_date(d))
    # Then, with every partition of a date and its manifest in place, the earlier contents that
    # later re-runs replaced (recorded in the replay lake's manifest of that date).
    for (dataset, d), source in sorted(sources.items()):
        shutil.copyfile(source, replay_lake.partition_file(dataset, d))
        replay_lake.write_manifest(d, written=[dataset])
    # Blobs and index shards are content-addressed and only read: share them.
    os.symlink(settings.blob_root.resolve(), replay_lake.root / "_blobs")
    os.symlink(settings.index_root.resolve(), replay_lake.root / "index")
    replay_settings = dataclasses.replace(settings, lake_root=replay_lake.root, hits_db_url=f"sqlite:///{out_dir / 'replay.db'}",
                                          outbox_dir=out_dir / "outbox")
    for stage in todo:
        log(f"replaying {stage}")
        daily_stage(stage)(replay_settings, run_date)
        for dataset in REPLAY_STAGES[stage]:
            expected = _manifest_file(manifest, dataset)
            path = replay_lake.partition_file(dataset, run_date)
            actual = sha256_file(path) if path.exists() else None
            rows = replay_lake.manifest(run_date)["datasets"].get(dataset, {}).get("rows")
            report.checks.append(StageCheck(stage, dataset, rows, expected["sha256"] if expected else None, actual))
    return report


def _link_partition(src_lake: Lake, dst_lake: Lake, dataset: str, run_date: dt.date) -> None:
    """Copy one partition into the replay lake, with its run date's manifest (reads there are
    checked against it, as in the lake it came from)."""
    src, dst = src_lake.partition_dir(dataset, run_date), dst_lake.partition_dir(dataset, run_date)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst)
    manifest = dst_lake.manifest_path(run_date)
    if not manifest.exists():
        manifest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_lake.manifest_path(run_date), manifest)
