"""End to end: both DAGs run by `airflow dags test` on the demo web, twice for the same date.

Asserts that the planted copies are found in the hits database with the right page URLs, that
licensed use is recognised, and that re-running the day leaves the same Parquet bytes and the same
database rows.
"""

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import REPO
from copyhunt.config import load_settings

pytestmark = pytest.mark.slow
RUN_DATE = dt.date(2026, 11, 20)


def lake_snapshot(lake: Path, run_date: dt.date) -> dict[str, str]:
    files = {}
    for p in sorted(lake.glob(f"*/run_date={run_date.isoformat()}/*")):
        # Data partitions and the manifest must be identical; _runs holds durations, which are not.
        if p.is_file() and not p.parts[-3].startswith("_runs"):
            files[str(p.relative_to(lake))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def db_rows(url: str) -> dict[str, list]:
    engine = sa.create_engine(url)
    out = {}
    with engine.connect() as conn:
        for table in ("customers", "images", "licences", "hits", "runs", "digests"):
            rows = conn.execute(sa.text(f"SELECT * FROM {table}")).mappings().all()
            out[table] = sorted((json.dumps(dict(r), sort_keys=True, default=str) for r in rows))
    engine.dispose()
    return out


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    from copyhunt.demo_run import run_demo

    home = tmp_path_factory.mktemp("home")
    settings = load_settings(env={"COPYHUNT_HOME": str(home), "COPYHUNT_CUSTOMERS_FILE": str(REPO / "demo" / "customers.toml")})
    first = run_demo(settings, RUN_DATE, log=lambda *_: None)
    snap1, rows1 = lake_snapshot(settings.lake, RUN_DATE), db_rows(settings.database_url)
    eml1 = {p.name: p.read_bytes() for p in (settings.outbox / RUN_DATE.isoformat()).glob("*.eml")}
    second = run_demo(settings, RUN_DATE, log=lambda *_: None)
    snap2, rows2 = lake_snapshot(settings.lake, RUN_DATE), db_rows(settings.database_url)
    eml2 = {p.name: p.read_bytes() for p in (settings.outbox / RUN_DATE.isoformat()).glob("*.eml")}
    return settings, first, second, (snap1, rows1, eml1), (snap2, rows2, eml2)


def test_planted_copies_are_found_with_their_page_urls(demo_runs):
    settings, first, *_ = demo_runs
    truth = json.loads((settings.resolve("data/demo-web") / "truth.json").read_text())
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:
        hits = {(r.customer_id, r.image_id, r.page_url) for r in conn.execute(sa.text("SELECT customer_id, image_id, page_url FROM hits"))}
    planted = {(t["customer_id"], t["image_id"], t["page_url"]) for t in truth}
    missed = planted - hits
    assert not missed, f"{len(missed)} of {len(planted)} planted copies not found: {sorted(missed)[:5]}"
    false_hits = hits - planted
    assert not false_hits, f"hits on pages where nothing was planted: {sorted(false_hits)[:5]}"
    assert first["pages"] >= 30 and first["images"] >= 30
    assert set(first["hits_per_customer"]) == {"alpine-lens", "jana-novak"}


def test_licensed_use_is_recognised_and_not_priced(demo_runs):
    settings, *_ = demo_runs
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT domain, licensed, licence_id, license_value_cents FROM hits WHERE customer_id = 'alpine-lens'")).all()
    courier = [r for r in rows if r.domain == "daily-courier.test"]
    assert courier and all(r.licensed and r.licence_id == "lic-alp-courier-2026" and r.license_value_cents == 0 for r in courier)
    assert any(not r.licensed and r.license_value_cents > 0 for r in rows)


def test_rerunning_the_day_changes_nothing(demo_runs):
    settings, first, second, (snap1, rows1, eml1), (snap2, rows2, eml2) = demo_runs
    assert snap1 == snap2
    for dataset in ("pages", "images", "image_fingerprints", "matches", "enriched", "priced"):
        assert any(k.startswith(dataset + "/") for k in snap1), dataset
    assert rows1 == rows2
    assert eml1 == eml2 and len(eml1) == 2
    assert first["hits_per_customer"] == second["hits_per_customer"]


def test_manifest_lists_every_output(demo_runs):
    settings, *_ = demo_runs
    manifest = json.loads((settings.lake / "_manifests" / f"run_date={RUN_DATE.isoformat()}" / "manifest.json").read_text())
    for dataset in ("pages", "images", "matches", "priced", "reference_fingerprints", "index_versions"):
        entry = manifest["datasets"][dataset]
        assert entry["files"][0]["sha256"] and entry["rows"] >= 1
    assert manifest["run"]["index_version"]
