"""The customer_index stages: register customer images, fingerprint them, build Annoy shards.

Each function takes settings and a run date, writes one lake partition and returns its path.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from copyhunt.blobs import LocalBlobStore
from copyhunt.config import Settings
from copyhunt.fingerprint import HASH_WORKING_SIZE, WindowHash, fingerprint_key, reference_hashes
from copyhunt.imaging import BadImage, load_gray, probe
from copyhunt.index import ENTRY_COLUMNS, build_index, compact_index, small_shards
from copyhunt.lake import Lake
from copyhunt.verify import VERIFY_WORKING_SIZE, FeatureStore, reference_features

Progress = Callable[[Iterable], Iterable]


def _plain(items: Iterable, **_: object) -> Iterable:
    return items


def register_references(settings: Settings, run_date: dt.date, customers: list, progress: Progress = _plain) -> Path:
    """Copy every registered image into the blob store; one row per image, errors included.

    A duplicate upload (same bytes registered twice by one customer) is kept once and reported.
    """
    blobs = LocalBlobStore(settings.blob_root)
    rows = []
    seen: dict[tuple[str, str], str] = {}
    for customer in customers:
        for img in progress(customer.images, description=f"register {customer.id}"):
            row = {"customer_id": customer.id, "image_id": img.image_id, "title": img.title, "path": str(img.path),
                   "ref_sha256": None, "format": None, "width": None, "height": None, "error": None}
            try:
                data = Path(img.path).read_bytes()
                info = probe(data, settings.max_image_pixels)
                sha = blobs.put(data)
                key = (customer.id, sha)
                if key in seen:
                    row["error"] = f"duplicate-upload: same bytes as {seen[key]}"
                else:
                    seen[key] = img.image_id
                row.update(ref_sha256=sha, format=info.format, width=info.width, height=info.height)
            except BadImage as exc:
                row["error"] = str(exc)
            except OSError as exc:
                row["error"] = f"unreadable: {exc.strerror or exc}"
            rows.append(row)
    frame = pd.DataFrame(rows, columns=["customer_id", "image_id", "title", "path", "ref_sha256", "format", "width", "height", "error"])
    frame = frame.astype({"width": "Int64", "height": "Int64"})
    return Lake(settings.lake).write_partition("reference_images", run_date, frame, sort_by=["customer_id", "image_id"])


def describe_reference(data: bytes, sha: str, max_pixels: int, features: FeatureStore) -> list[WindowHash]:
    """A reference's index entries; its verification features go into ``features`` (once)."""
    hashes = reference_hashes(load_gray(data, max_pixels, HASH_WORKING_SIZE)[0])
    if not features.has(sha):
        features.put(sha, reference_features(load_gray(data, max_pixels, VERIFY_WORKING_SIZE)[0]))
    return hashes


def features_store(index_root: Path) -> FeatureStore:
    return FeatureStore(Path(index_root) / "features")


# In a reference_fingerprints partition: the key its rows were made under (as for found images).
REFERENCE_KEY_FILE = "_FINGERPRINT_KEY"


def reference_fingerprint_key(max_pixels: int) -> str:
    """Everything a reference's index entries depend on besides its bytes (the hunt's key for
    found images covers the same code and libraries)."""
    return "reference:" + fingerprint_key(max_pixels)


def earlier_reference_entries(lake: Lake, run_date: dt.date, key: str) -> dict[str, pd.DataFrame]:
    """Index entries by reference sha256 from the latest reference_fingerprints partition on or
    before ``run_date`` made under ``key`` (the same day counts: customer_index runs hourly).
    Read through ``lake``, so the file is checked against its manifest."""
    for day in reversed(lake.run_dates("reference_fingerprints")):
        marker = lake.partition_dir("reference_fingerprints", day) / REFERENCE_KEY_FILE
        if day <= run_date and marker.exists() and marker.read_text() == key:
            frame = lake.read_frame("reference_fingerprints", day)
            return {sha: rows for sha, rows in frame.groupby("ref_sha256", sort=False)}
    return {}


def fingerprint_references(settings: Settings, run_date: dt.date, progress: Progress = _plain) -> Path:
    """The reference_fingerprints partition for ``run_date`` (see ``fingerprint_references_counted``)."""
    return fingerprint_references_counted(settings, run_date, progress)[0]


def fingerprint_references_counted(settings: Settings, run_date: dt.date, progress: Progress = _plain) -> tuple[Path, dict[str, int]]:
    """Window hashes (whole image in eight orientations, mirrored blob windows) of every usable
    registered image; their verification features go to the index's feature store.

    A reference fingerprinted before under the same key (same bytes, same code) takes its earlier
    entries instead of a new decode, so a run after an upload decodes the new images only."""
    lake = Lake(settings.lake)
    refs = lake.read_frame("reference_images", run_date)
    refs = refs[refs["error"].isna()]
    blobs = LocalBlobStore(settings.blob_root)
    features = features_store(settings.index_root)
    key = reference_fingerprint_key(settings.max_image_pixels)
    earlier = earlier_reference_entries(lake, run_date, key)
    rows, errors, reused = [], [], []
    todo = []
    for ref in refs.itertuples(index=False):
        known = earlier.get(ref.ref_sha256)
        if known is not None and features.has(ref.ref_sha256):
            reused.append(known.assign(customer_id=ref.customer_id, image_id=ref.image_id))
        else:
            todo.append(ref)
    for ref in progress(todo, description="fingerprint references"):
        try:
            found = describe_reference(blobs.get(ref.ref_sha256), ref.ref_sha256, settings.max_image_pixels, features)
        except BadImage as exc:  # a header that probes fine but does not decode
            errors.append({"customer_id": ref.customer_id, "image_id": ref.image_id, "reason": exc.reason})
            continue
        if not found:
            errors.append({"customer_id": ref.customer_id, "image_id": ref.image_id, "reason": "no-detail"})
        for wh in found:
            rows.append({"customer_id": ref.customer_id, "image_id": ref.image_id, "ref_sha256": ref.ref_sha256,
                         "window": wh.window, "mirrored": wh.mirrored, "x0": wh.x0, "y0": wh.y0, "x1": wh.x1, "y1": wh.y1, "phash": wh.phash})
    lake.write_partition("reference_fingerprint_errors", run_date, pd.DataFrame(errors, columns=["customer_id", "image_id", "reason"]),
                         sort_by=["customer_id", "image_id"])
    parts = [part for part in (pd.DataFrame(rows, columns=ENTRY_COLUMNS), *(r[ENTRY_COLUMNS] for r in reused)) if not part.empty]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=ENTRY_COLUMNS)
    frame = frame.astype({"phash": "int64", "mirrored": "bool", "x0": "float64", "y0": "float64", "x1": "float64", "y1": "float64"})
    path = lake.write_partition("reference_fingerprints", run_date, frame, sort_by=["customer_id", "image_id", "mirrored", "window"],
                                extra_files={REFERENCE_KEY_FILE: key.encode()})
    return path, {"fingerprinted": len(todo), "reused": len(reused)}


def build_reference_index(settings: Settings, run_date: dt.date) -> dict:
    """Publish an index version for this run date: unchanged shards are kept, the images not in
    one go into new shards, and once more than ``index_max_small_shards`` small shards pile up
    they are compacted. Re-running with an unchanged registry publishes the same version."""
    lake = Lake(settings.lake)
    entries = lake.read_frame("reference_fingerprints", run_date)
    result = build_index(entries, settings.index_root, settings.shard_size)
    version, shards, compacted = result.version, result.shards, None
    if len(small_shards(settings.index_root, settings.shard_size, version)) > settings.index_max_small_shards:
        compacted = compact_index(settings.index_root, settings.shard_size)
        version, shards = compacted.version, compacted.shards
    frame = pd.DataFrame([{"version": version, "shards": json.dumps(shards), "entries": result.entries}])
    lake.write_partition("index_versions", run_date, frame)
    lake.write_manifest(run_date, extra={"index_version": version})
    return {"version": version, "shards": len(shards), "built": len(result.built) + (len(compacted.built) if compacted else 0),
            "reused": len(result.reused), "entries": result.entries, "compacted": len(compacted.merged) if compacted else 0}


def register_stage(settings: Settings, run_date: dt.date) -> dict:
    """The customer_index ``register`` task: snapshot the registry (the hits database) into the
    lake, and register the snapshot's images that are not withdrawn.

    The customers file, where there is one, seeds the registry first (the demo's customers)
    through the same path as an upload; seeding again adds nothing."""
    from copyhunt import registry
    from copyhunt.hitsdb.store import create_schema, make_engine

    engine = make_engine(settings.database_url)
    try:
        create_schema(engine)
        seeded = registry.seed_from_file(engine, settings) if settings.customers_path.exists() else []
        snapshot = registry.write_snapshot(engine, settings, run_date)
    finally:
        engine.dispose()
    path = register_references(settings, run_date, registry.customers_from_snapshot(settings, run_date))
    return {"path": str(path), "snapshot": {name: str(p) for name, p in snapshot.items()},
            "seeded": sum(1 for r in seeded if r.status == "created"), "seed_rejected": [r.as_dict() for r in seeded if r.status == "rejected"]}


def fingerprint_stage(settings: Settings, run_date: dt.date) -> dict:
    """The customer_index ``fingerprint`` task, as figures for the task."""
    path, counts = fingerprint_references_counted(settings, run_date)
    return {"path": str(path), **counts}


def index_date_for(settings: Settings, run_date: dt.date, lake: Lake | None = None) -> dt.date:
    """The customer_index run a hunt on ``run_date`` uses: the newest on or before it."""
    lake = lake or Lake(settings.lake)
    dates = [d for d in lake.run_dates("index_versions") if d <= run_date]
    if not dates:
        raise FileNotFoundError(f"no customer index built on or before {run_date}; run the customer_index DAG first")
    return dates[-1]


def index_version_for(settings: Settings, run_date: dt.date, lake: Lake | None = None) -> str:
    """The index version a hunt on ``run_date`` matches against: the newest built on or before it
    (read through ``lake`` when given, which remembers the partition read)."""
    lake = lake or Lake(settings.lake)
    frame = lake.read_frame("index_versions", index_date_for(settings, run_date, lake))
    return str(frame["version"].iloc[0])


class IndexChangedDuringRun(RuntimeError):
    """customer_index published a new version for the day after the hunt matched against the old one."""


def check_index_as_matched(lake: Lake, run_date: dt.date, index_date: dt.date) -> None:
    """Refuse to go on with a hunt whose match stage read another ``index_versions`` partition than
    the one there now: customer_index runs hourly, and a run between match and price would hand
    the later stages another registry than the one matched against. Re-running from match (or
    the whole day) reads the new version throughout; a replay reads the recorded one."""
    reads = lake.read_manifest(run_date).get("run", {}).get("reads", {}).get("match", [])
    matched = {r["sha256"] for r in reads if r["dataset"] == "index_versions" and r["run_date"] == index_date.isoformat()}
    now = lake.recorded_sha256("index_versions", index_date)
    if matched and now not in matched:
        raise IndexChangedDuringRun(f"the customer index of {index_date} changed after the {run_date} hunt matched against it "
                                    f"(customer_index ran in between): re-run the {run_date} hunt from its match task")
