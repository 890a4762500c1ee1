"""End to end: both DAGs run by `airflow dags test` on the demo web, twice for the same date.

Asserts that the planted copies are found in the hits database with the right page URLs, that
licensed use is recognised, and that re-running the day leaves the same Parquet bytes and the same
database rows.
"""

import json

import pytest
import sqlalchemy as sa

from conftest import DEMO_RUN_DATE

pytestmark = pytest.mark.slow


def test_planted_copies_are_found_with_their_page_urls(demo_runs):
    settings, passes = demo_runs
    first = passes[0][0]
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
    settings, _ = demo_runs
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT domain, licensed, licence_id, license_value_cents FROM hits WHERE customer_id = 'alpine-lens'")).all()
    courier = [r for r in rows if r.domain == "daily-courier.test"]
    assert courier and all(r.licensed and r.licence_id == "lic-alp-courier-2026" and r.license_value_cents == 0 for r in courier)
    assert any(not r.licensed and r.license_value_cents > 0 for r in rows)


def test_rerunning_the_day_changes_nothing(demo_runs):
    _, ((first, snap1, rows1, eml1), (second, snap2, rows2, eml2)) = demo_runs
    for dataset in ("pages", "images", "image_fingerprints", "matches", "enriched", "priced"):
        assert any(k.startswith(dataset + "/") for k in snap1), dataset
    assert snap1 == snap2
    assert rows1 == rows2
    assert eml1 == eml2 and len(eml1) == 2
    assert first["hits_per_customer"] == second["hits_per_customer"]


def test_manifest_and_run_report(demo_runs):
    settings, _ = demo_runs
    manifest = json.loads((settings.lake / "_manifests" / f"run_date={DEMO_RUN_DATE.isoformat()}" / "manifest.json").read_text())
    for dataset in ("pages", "images", "matches", "priced", "reference_fingerprints", "index_versions"):
        entry = manifest["datasets"][dataset]
        assert entry["files"][0]["sha256"] and entry["rows"] >= 1
    facts = manifest["run"]
    assert facts["index_version"] and facts["code_version"] and facts["config_sha256"] and facts["rate_card_sha256"]
    report = json.loads((settings.lake / "_runs" / f"run_date={DEMO_RUN_DATE.isoformat()}" / "report.json").read_text())
    assert {"crawl", "fingerprint", "match", "enrich", "price", "load", "digest"} <= set(report["stages"])
    assert all(s["status"] == "success" and s["seconds"] >= 0 for s in report["stages"].values())
    assert report["rows"]["pages"] == manifest["datasets"]["pages"]["rows"]
    assert "crawl_errors" in report["errors_by_reason"]


def test_hits_db_holds_the_whole_enrichment_of_the_priced_partition(demo_runs):
    """Every enrichment column of the day's priced Parquet reaches its hit row (bounded, typed)."""
    from copyhunt.hitsdb.store import BOUNDED_TEXT_COLUMNS, bound_text, hits_for_customer, make_engine
    from copyhunt.lake import Lake

    settings, _ = demo_runs
    priced = Lake(settings.lake).read_frame("priced", DEMO_RUN_DATE)
    engine = make_engine(settings.database_url)
    key = ("customer_id", "image_id", "page_url", "image_url")
    hits = {tuple(h[k] for k in key): h for cid in set(priced["customer_id"]) for h in hits_for_customer(engine, cid)}
    engine.dispose()
    assert len(hits) == len(priced)
    text_columns = ("operator_address", "operator_email", "operator_phone", "operator_role", "usage_since_source",
                    "attribution_evidence")
    for rec in priced.to_dict("records"):
        hit = hits[tuple(rec[k] for k in key)]
        for column in text_columns:
            assert hit[column] == bound_text(rec[column], BOUNDED_TEXT_COLUMNS[column]), column
        assert hit["usage_since"].isoformat() == rec["usage_since"] and hit["usage_days"] == rec["usage_days"]
        assert (hit["page_status"], hit["page_online"]) == (rec["page_status"], rec["page_online"])
        assert hit["attribution_found"] == rec["attribution_found"]
        assert json.loads(hit["licence_match"]) == json.loads(rec["licence_match"])
    # The demo's imprints give addresses, e-mail and phone numbers; sellers are told from site operators.
    for column in ("operator_address", "operator_email", "operator_phone"):
        assert any(h[column] for h in hits.values()), column
    assert {"site-operator", "marketplace-seller"} <= {h["operator_role"] for h in hits.values()}
    assert {h["page_status"] for h in hits.values()} == {200} and all(h["usage_days"] >= 1 for h in hits.values())
    assert any(json.loads(h["licence_match"]).get("licensed") for h in hits.values())
