"""The daily_hunt stages. Each takes settings and a run date, reads the partitions it needs and
writes its own, and returns a small dict of figures (what the Airflow task logs and returns).

    crawl -> fingerprint -> match (spark-submit) -> enrich -> price -> load -> digest
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from copyhunt.blobs import LocalBlobStore
from copyhunt.config import Settings
from copyhunt.fingerprint import FINGERPRINT_BATCH, FINGERPRINT_COLUMNS, compile_kernels, fingerprint_images
from copyhunt.imaging import BadImage
from copyhunt.lake import Lake, to_table
from copyhunt.registry import customers_from_snapshot
from copyhunt.sparkjob import run_job


Progress = Callable[..., Iterable]


def _plain(items: Iterable, **_: object) -> Iterable:
    return items


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


def read_seeds(path: Path) -> list[str]:
    if not path.exists():
        raise FileNotFoundError(f"seeds file {path} does not exist (set COPYHUNT_SEEDS_FILE)")
    seeds = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            seeds.append(line)
    if not seeds:
        raise ValueError(f"seeds file {path} names no URL")
    return seeds


# ---- crawl -------------------------------------------------------------------------------------
def crawl(settings: Settings, run_date: dt.date, force: bool = False) -> dict:
    """Crawl the seeds into the ``pages``, ``images`` and ``crawl_errors`` partitions.

    A day's crawl is its evidence snapshot: once complete it is kept (re-running the task is a
    no-op) unless ``force`` is given; every later stage recomputes from it.
    """
    from copyhunt.crawl.runner import run_crawl
    from copyhunt.crawl.validators import validators_from_lake

    lake = Lake(settings.lake)
    # A crawl killed mid-run leaves its staging directory: the day's next run removes them.
    for leftover in (settings.lake / ".crawl-staging").glob(f"{run_date.isoformat()}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if not force and all(lake.has_partition(d, run_date) for d in ("pages", "images", "crawl_errors")):
        return {"skipped": True, **_crawl_counts(lake, run_date)}
    staging = settings.lake / ".crawl-staging" / f"{run_date.isoformat()}-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        # The previous day's ETag/Last-Modified: unchanged images get a 304, not a second download.
        validators = validators_from_lake(settings.lake, run_date, staging / "validators.parquet")
        run_crawl(read_seeds(settings.seeds_path), staging, settings, validators=validators)
        for dataset, name, keys in (("pages", "pages.parquet", ["url"]), ("images", "images.parquet", ["page_url", "image_url"]), ("crawl_errors", "errors.parquet", ["url"])):
            lake.write_partition(dataset, run_date, pq.read_table(staging / name), sort_by=keys)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"skipped": False, **_crawl_counts(lake, run_date)}


def _crawl_counts(lake: Lake, run_date: dt.date) -> dict:
    m = lake.manifest(run_date)["datasets"]
    return {k: m.get(d, {}).get("rows", 0) for k, d in (("pages", "pages"), ("images", "images"), ("errors", "crawl_errors"))}


# ---- fingerprint -------------------------------------------------------------------------------
def fingerprint_batch(args: tuple[str, list[str], int]) -> list[tuple[str, list[dict], str | None]]:
    """(sha256, rows, reason) of each blob of a batch (``fingerprint_images``): a pool task."""
    blob_root, shas, max_pixels = args
    store = LocalBlobStore(blob_root)

    def blobs() -> Iterator[tuple[str, bytes | BadImage]]:  # read as the batch decodes them
        for sha in shas:
            try:
                yield sha, store.get(sha)
            except KeyError:
                yield sha, BadImage("missing-blob")

    return [(sha, rows, error) for sha, (rows, error) in zip(shas, fingerprint_images(blobs(), max_pixels))]


# Images fingerprinted per chunk: the rows of one chunk are held, sorted and written at a time, so
# a day of millions of images (~20 rows each) never sits in memory whole.
FINGERPRINT_CHUNK = 4096
FINGERPRINT_SCHEMA = pa.schema([(c, pa.string() if c in ("image_sha256", "window") else pa.int64() if c == "phash" else pa.float64())
                                for c in FINGERPRINT_COLUMNS])
FINGERPRINT_SORT = ["image_sha256", "window"]


# In an image_fingerprints partition: the key its rows were made under (fingerprint_key).
FINGERPRINT_KEY_FILE = "_FINGERPRINT_KEY"


def fingerprint_key(max_pixels: int) -> str:
    """Everything a found image's fingerprint rows depend on besides its bytes: the code that makes
    them, the libraries that decode and filter its pixels (and numba, which compiles the kernels),
    and the pixel limit."""
    import cv2
    import numba
    import numpy
    import PIL

    from copyhunt import fingerprint, imaging, kernels, proposals

    h = hashlib.sha256()
    # The method's modules and every kernel module (the kernels decide the bits).
    sources = [Path(m.__file__) for m in (fingerprint, imaging, proposals)] + sorted(Path(kernels.__file__).parent.glob("*.py"))
    for source in sources:
        h.update(source.read_bytes())
    h.update(json.dumps({"pillow": PIL.__version__, "opencv": cv2.__version__, "numpy": numpy.__version__, "numba": numba.__version__,
                        "max_pixels": max_pixels},
                        sort_keys=True).encode())
    return h.hexdigest()


@dataclass
class EarlierFingerprints:
    """The fingerprints of an earlier day, made under the same key: an image crawled again (the
    same bytes, so the same sha256) gets the rows or the reason it had then, not a new decode.
    A daily crawl revisits the same pages, so most of its images are repeats."""

    path: Path  # that day's image_fingerprints file, sorted by image
    errors: dict[str, str]  # that day's fingerprint_errors
    reused: int = 0

    def known(self, chunk: list[str]) -> dict[str, tuple[list[dict], str | None]]:
        """(rows, reason) of the images of ``chunk`` (sorted) that day had; its file is sorted,
        so only the row groups spanning the chunk are read."""
        table = pq.read_table(self.path, filters=[("image_sha256", ">=", chunk[0]), ("image_sha256", "<=", chunk[-1])])
        wanted = set(chunk)
        out: dict[str, tuple[list[dict], str | None]] = {}
        for row in table.to_pylist():
            if row["image_sha256"] in wanted:
                out.setdefault(row["image_sha256"], ([], None))[0].append(row)
        for sha in chunk:
            # A blob missing then may be stored now; every other reason follows from the bytes.
            if sha in self.errors and self.errors[sha] != "missing-blob":
                out[sha] = ([], self.errors[sha])
        self.reused += len(out)
        return out


def earlier_fingerprints(lake: Lake, run_date: dt.date, key: str) -> EarlierFingerprints | None:
    """The latest day before ``run_date`` whose fingerprints were made under ``key``."""
    for day in reversed(lake.run_dates("image_fingerprints")):
        marker = lake.partition_dir("image_fingerprints", day) / FINGERPRINT_KEY_FILE
        if day < run_date and marker.exists() and marker.read_text() == key and lake.has_partition("fingerprint_errors", day):
            errors = lake.read_frame("fingerprint_errors", day)
            return EarlierFingerprints(lake.verified_file("image_fingerprints", day), dict(zip(errors["image_sha256"], errors["reason"])))
    return None


def fingerprint_chunks(blob_root: str, shas: list[str], max_pixels: int, workers: int | None = None, progress: Progress = _plain,
                       description: str = "fingerprint images", earlier: EarlierFingerprints | None = None
                       ) -> Iterator[tuple[pa.Table, dict[str, str]]]:
    """Fingerprint the blobs ``shas`` (sorted) in a process pool (default: a worker per core):
    per chunk of FINGERPRINT_CHUNK images, their rows as a sorted table, and the reason for each
    that could not be used. Concatenated, the tables are the rows of all ``shas`` sorted by
    FINGERPRINT_SORT. Images ``earlier`` knows are taken from there."""
    from concurrent.futures import ProcessPoolExecutor

    workers = workers or min(len(shas), os.cpu_count() or 1) or 1

    def results():
        compiled = False
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(shas), FINGERPRINT_CHUNK):
                chunk = shas[start:start + FINGERPRINT_CHUNK]
                known = earlier.known(chunk) if earlier is not None else {}
                todo = [sha for sha in chunk if sha not in known]
                if todo and not compiled:
                    # Here, before the pool's first task forks its workers: they inherit the
                    # kernels instead of each compiling them. A day taken whole from an earlier
                    # one needs none.
                    compile_kernels()
                    compiled = True
                batches = [(blob_root, todo[at:at + FINGERPRINT_BATCH], max_pixels) for at in range(0, len(todo), FINGERPRINT_BATCH)]
                computed = (result for batch in pool.map(fingerprint_batch, batches) for result in batch)
                for sha in chunk:
                    yield (sha, *known[sha]) if sha in known else next(computed)

    rows: list[dict] = []
    errors: dict[str, str] = {}
    for done, (sha, found, error) in enumerate(progress(results(), total=len(shas), description=description), 1):
        rows.extend(found)
        if error:
            errors[sha] = error
        if done % FINGERPRINT_CHUNK == 0 or done == len(shas):
            yield to_table(pd.DataFrame(rows, columns=FINGERPRINT_COLUMNS), FINGERPRINT_SORT, FINGERPRINT_SCHEMA), errors
            rows, errors = [], {}


def fingerprint(settings: Settings, run_date: dt.date, progress: Progress = _plain, workers: int | None = None) -> dict:
    """Window hashes of every distinct image downloaded by the crawl (each blob hashed once; an
    image an earlier day already fingerprinted under the same key is not decoded again)."""
    lake = Lake(settings.lake)
    images = lake.read_frame("images", run_date, columns=["blob_sha256"])
    shas = sorted(set(images["blob_sha256"].dropna()))
    key = fingerprint_key(settings.max_image_pixels)
    earlier = earlier_fingerprints(lake, run_date, key)
    errors: list[dict] = []
    windows = 0

    def tables() -> Iterator[pa.Table]:
        nonlocal windows
        for table, bad in fingerprint_chunks(str(settings.blob_root), shas, settings.max_image_pixels, workers, progress, earlier=earlier):
            windows += table.num_rows
            errors.extend({"image_sha256": sha, "reason": reason} for sha, reason in bad.items())
            yield table

    lake.write_partition_chunks("image_fingerprints", run_date, tables(), FINGERPRINT_SCHEMA, extra_files={FINGERPRINT_KEY_FILE: key.encode()})
    lake.write_partition("fingerprint_errors", run_date, pd.DataFrame(errors, columns=["image_sha256", "reason"]), sort_by=["image_sha256"])
    lake.record_reads(run_date, "fingerprint")
    return {"images": len(shas), "windows": windows, "errors": len(errors), "reused": earlier.reused if earlier else 0}


# ---- match -------------------------------------------------------------------------------------
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


# ---- enrich and price --------------------------------------------------------------------------
def _html_reader(settings: Settings):
    blobs = LocalBlobStore(settings.blob_root)

    def read(sha: str | None) -> bytes | None:
        if not isinstance(sha, str):
            return None
        try:
            return blobs.get(sha)
        except (KeyError, ValueError):
            return None

    return read


def enrich(settings: Settings, run_date: dt.date) -> dict:
    from copyhunt.enrich import enrich_matches

    lake = Lake(settings.lake)
    frame = enrich_matches(lake.read_frame("matches", run_date), lake.read_frame("images", run_date), lake.read_frame("pages", run_date),
                           run_customers(settings, run_date, lake), _html_reader(settings), run_date, first_seen_history(settings, run_date, lake))
    lake.write_partition("enriched", run_date, frame, sort_by=["customer_id", "image_id", "page_url", "image_url"])
    lake.record_reads(run_date, "enrich")  # the earlier days' history: what a replay must read
    return {"enriched": len(frame), "with_operator": int(frame["operator_name"].notna().sum()), "with_date": int(frame["published_at"].notna().sum()),
            "seen_before": int((frame["first_seen"] < run_date.isoformat()).sum()) if len(frame) else 0,
            "errors": int(frame["enrich_error"].notna().sum()) if len(frame) else 0}


def first_seen_history(settings: Settings, run_date: dt.date, lake: Lake | None = None) -> dict:
    """(customer, image, page, image URL) -> first run date it was found, from earlier partitions
    (read through ``lake``, which remembers them, so the stage can record which)."""
    lake = lake or Lake(settings.lake)
    seen: dict = {}
    for d in lake.run_dates("enriched"):
        if d >= run_date:
            break
        # Partitions written since enrichment records first_seen carry history older than themselves.
        has_first_seen = "first_seen" in pq.read_schema(lake.verified_file("enriched", d)).names
        f = lake.read_frame("enriched", d, columns=["customer_id", "image_id", "page_url", "image_url"] + (["first_seen"] if has_first_seen else []))
        for key, first in zip(f[["customer_id", "image_id", "page_url", "image_url"]].itertuples(index=False, name=None),
                              f["first_seen"] if has_first_seen else [None] * len(f)):
            earliest = min(d.isoformat(), first) if isinstance(first, str) and first else d.isoformat()
            seen[key] = min(seen.get(key, earliest), earliest)
    return seen


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


# ---- load and digest ---------------------------------------------------------------------------
def load(settings: Settings, run_date: dt.date) -> dict:
    from copyhunt.hitsdb.store import create_schema, load_hits, make_engine, sync_customers

    engine = make_engine(settings.database_url)
    try:
        create_schema(engine)
        registered = run_customers(settings, run_date)
        sync_customers(engine, registered, only_missing=True)  # the hits' customers and images exist
        # The day's crawl covered every seed for every customer: a hit not found again is offline.
        stats = load_hits(engine, Lake(settings.lake).read_frame("priced", run_date), run_date, complete_for=[c.id for c in registered])
    finally:
        engine.dispose()
    return dict(stats._asdict())


def digest(settings: Settings, run_date: dt.date) -> dict:
    from copyhunt.hitsdb.digest import send_digests
    from copyhunt.hitsdb.store import make_engine

    engine = make_engine(settings.database_url)
    try:
        results = send_digests(engine, run_date, settings, settings.blob_root)
    finally:
        engine.dispose()
    return {"digests": len(results)}


def summary(settings: Settings, run_date: dt.date) -> dict:
    """Figures for the end of a run: what was crawled, matched and loaded, and where to look."""
    from copyhunt.hitsdb.store import count_hits, make_engine

    lake = Lake(settings.lake)
    m = lake.manifest(run_date)["datasets"]
    engine = make_engine(settings.database_url)
    try:
        hits = count_hits(engine)
    finally:
        engine.dispose()
    outbox = settings.outbox / run_date.isoformat()
    return {
        "run_date": run_date.isoformat(),
        "pages": m.get("pages", {}).get("rows", 0),
        "images": m.get("images", {}).get("rows", 0),
        "crawl_errors": m.get("crawl_errors", {}).get("rows", 0),
        "matches": m.get("matches", {}).get("rows", 0),
        "hits_per_customer": hits,
        "database": settings.database_url,
        "lake": str(lake.root),
        "manifest": str(lake.manifest_path(run_date)),
        "digests": str(outbox),
        "digest_files": sorted(p.name for p in outbox.glob("*.eml")) if outbox.exists() else [],
    }


def run_date_from_context(context: dict) -> dt.date:
    """The partition a task run writes: params.run_date, else the logical date, else run_after.

    Airflow 3 manual and asset-triggered runs may have no logical date, so it is derived here
    explicitly rather than assumed.
    """
    params = context.get("params") or {}
    if params.get("run_date"):
        from copyhunt.lake import parse_run_date

        return parse_run_date(params["run_date"])
    for key in ("logical_date", "data_interval_end"):
        value = context.get(key)
        if value is not None:
            return value.date()
    dag_run = context.get("dag_run")
    if dag_run is not None and getattr(dag_run, "run_after", None) is not None:
        return dag_run.run_after.date()
    raise ValueError("cannot derive the run date: no params.run_date, logical date or run_after")


def result_json(obj: dict) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
