"""``copyhunt bench sameday``: how long an upload takes to become searchable.

A customer with ``references`` registered 1-MP photos is indexed by a customer_index run (the
three stages through ``run_stage``, as the DAG's tasks run them, on the embedded default: SQLite
and the local lake). Then one more photo is uploaded through the registry's upload path and the
next customer_index run makes it searchable. Measured in the same run, for comparison: the full
rebuild of that registry in a fresh lake (what every run would cost without reuse), and a run
with nothing new.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from copyhunt.bench.docs import Figure
from copyhunt.config import Settings

BENCH_CUSTOMER = "bench-photographer"
RUN_DATE_ISO = "2026-11-24"


@dataclass(frozen=True)
class SameDayReport:
    references: int
    initial_seconds: float  # the first customer_index run: every reference fingerprinted
    upload_seconds: float  # the upload itself (checks, scaling, blob store)
    incremental_seconds: float  # the next customer_index run after the upload
    full_rebuild_seconds: float  # the same registry in a fresh lake
    idle_seconds: float  # a run with nothing new
    incremental_fingerprinted: int
    incremental_built_shards: int

    @property
    def upload_to_searchable_seconds(self) -> float:
        return self.upload_seconds + self.incremental_seconds


CUSTOMER_INDEX_STAGES = ("register", "fingerprint_references", "build_index")


def _customer_index(settings: Settings, run_date) -> dict:
    from copyhunt import references
    from copyhunt.runlog import run_stage

    stages = {"register": references.register_stage, "fingerprint_references": references.fingerprint_stage,
              "build_index": references.build_reference_index}
    return {name: run_stage(name, stages[name], settings, run_date) for name in CUSTOMER_INDEX_STAGES}


def run_sameday(base: Settings, work: Path, assets: Path, references: int) -> SameDayReport:
    """Measure in ``work`` (emptied first) with ``references`` photos already registered."""
    import datetime as dt

    from copyhunt import registry
    from copyhunt.bench.throughput import megapixel_jpegs
    from copyhunt.hitsdb.store import create_schema, make_engine

    if references < 1:
        raise ValueError("references must be at least 1")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    run_date = dt.date.fromisoformat(RUN_DATE_ISO)
    settings = dataclasses.replace(base, home=work, lake_root=Path("lake"), hits_db_url=None,
                                   customers_file=Path("no-customers-file.toml"), shard_size=base.shard_size)
    # Some crops of the repository's photos are too flat to register: make spares, keep the first
    # ``references`` the upload path accepts, and upload the next accepted one.
    photos = iter(megapixel_jpegs(assets, 2 * references + 20))
    engine = make_engine(settings.database_url)
    try:
        create_schema(engine)
        registry.add_customer(engine, BENCH_CUSTOMER, "bench@example.org", "Bench Photographer")
        registered = 0
        for i, data in enumerate(photos):
            if registry.add_image(engine, settings, BENCH_CUSTOMER, io.BytesIO(data), f"photo-{i:05d}.jpg").status == "created":
                registered += 1
                if registered == references:
                    break
        if registered < references:
            raise RuntimeError(f"only {registered} of the bench photos could be registered")
        last = next(p for p in photos if not _rejected(settings, p))
        started = time.monotonic()
        _customer_index(settings, run_date)
        initial = time.monotonic() - started

        started = time.monotonic()
        upload = registry.add_image(engine, settings, BENCH_CUSTOMER, io.BytesIO(last), "the-new-one.jpg")
        uploaded = time.monotonic() - started
        if upload.status != "created":
            raise RuntimeError(f"the bench upload was not registered: {upload.as_dict()}")
        started = time.monotonic()
        grown = _customer_index(settings, run_date)
        incremental = time.monotonic() - started

        started = time.monotonic()
        _customer_index(settings, run_date)
        idle = time.monotonic() - started

        fresh = dataclasses.replace(settings, lake_root=Path("rebuild-lake"))
        shutil.copytree(settings.blob_root, fresh.blob_root)  # the originals, as stored at upload
        started = time.monotonic()
        _customer_index(fresh, run_date)
        full = time.monotonic() - started
    finally:
        engine.dispose()
    return SameDayReport(references, initial, uploaded, incremental, full, idle,
                         int(grown["fingerprint_references"].get("fingerprinted", -1)), int(grown["build_index"]["built"]))


def _rejected(settings: Settings, data: bytes) -> bool:
    """Whether the upload path would refuse this photo (too flat, too small), without registering it."""
    from copyhunt.fingerprint import HASH_WORKING_SIZE, reference_hashes
    from copyhunt.imaging import BadImage, load_gray

    try:
        return not reference_hashes(load_gray(data, settings.max_image_pixels, HASH_WORKING_SIZE)[0])
    except BadImage:
        return True


def figures(report: SameDayReport) -> list[Figure]:
    n = f"{report.references:,} registered 1-MP photos"
    return [
        Figure(f"upload to searchable: upload + incremental customer_index, {n}", f"{report.upload_to_searchable_seconds:.1f} s",
               f"full rebuild of the same registry {report.full_rebuild_seconds:.1f} s "
               f"({report.full_rebuild_seconds / max(report.incremental_seconds, 1e-9):.1f}x the incremental run)"),
        Figure(f"incremental customer_index after one upload, {n}", f"{report.incremental_seconds:.1f} s",
               f"{report.incremental_fingerprinted} image fingerprinted, {report.incremental_built_shards} shard built"),
        Figure(f"customer_index with nothing new (the hourly no-op), {n}", f"{report.idle_seconds:.1f} s"),
    ]
