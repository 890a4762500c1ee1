"""Signed, chained run manifests: a rewritten manifest is caught by its signature, a rewritten or
deleted earlier manifest by the chain link of the day sealed after it."""

import datetime as dt
import json
import stat

import pandas as pd
import pytest

from copyhunt.lake import Lake
from copyhunt.sealing import check_seal, create_key, ensure_key, seal_manifest

D1, D2, D3 = dt.date(2026, 11, 18), dt.date(2026, 11, 19), dt.date(2026, 11, 20)


def day(lake, d, n=3):
    lake.write_partition("pages", d, pd.DataFrame({"url": [f"http://a.test/{i}" for i in range(n)]}))


def results(lake, d, key_dir):
    return dict(check_seal(lake, d, key_dir))


@pytest.fixture
def sealed(tmp_path):
    key = tmp_path / "keys" / "manifest-signing.key"
    kid = ensure_key(key)
    lake = Lake(tmp_path / "lake")
    for d in (D1, D3):
        day(lake, d)
        seal_manifest(lake, d, key)
    return lake, key, kid


def test_the_key_is_private_and_its_public_key_sits_beside_it(sealed):
    lake, key, kid = sealed
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (key.parent / f"{kid}.pub").exists()
    assert ensure_key(key) == kid  # made once, then kept


def test_sealed_manifests_verify_and_link_to_the_previous_day(sealed):
    lake, key, kid = sealed
    assert results(lake, D1, key.parent) == {"signature": "ok", "chain": "ok (first run date when sealed)"}
    assert results(lake, D3, key.parent) == {"signature": "ok", "chain": f"ok (previous {D1})"}
    m = lake.read_manifest(D3)
    assert m["signature"]["key_id"] == kid and m["chain"]["previous_run_date"] == D1.isoformat()
    before = lake.manifest_path(D3).read_bytes()
    seal_manifest(lake, D3, key)
    assert lake.manifest_path(D3).read_bytes() == before  # sealing is deterministic: re-runs give the same bytes


def test_a_backfilled_day_links_to_its_nearest_earlier_day_and_leaves_later_links_alone(sealed):
    lake, key, _ = sealed
    day(lake, D2)
    seal_manifest(lake, D2, key)
    assert lake.read_manifest(D2)["chain"]["previous_run_date"] == D1.isoformat()
    assert lake.read_manifest(D3)["chain"]["previous_run_date"] == D1.isoformat()
    # D3 re-run after the backfill keeps the link it was first sealed with.
    day(lake, D3)
    seal_manifest(lake, D3, key)
    assert lake.read_manifest(D3)["chain"]["previous_run_date"] == D1.isoformat()
    assert all(v.startswith("ok") for d in (D1, D2, D3) for v in results(lake, d, key.parent).values())


def test_a_rewritten_manifest_fails_its_signature_and_breaks_the_next_days_chain(sealed):
    lake, key, _ = sealed
    path = lake.manifest_path(D1)
    m = json.loads(path.read_text())
    m["datasets"]["pages"]["files"][0]["sha256"] = "0" * 64  # the forger's new file's sha256
    path.write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    assert "changed after signing" in results(lake, D1, key.parent)["signature"]
    assert str(path) in results(lake, D3, key.parent)["chain"]
    # Dropping the signature does not help either.
    m.pop("signature")
    path.write_text(json.dumps(m))
    assert results(lake, D1, key.parent)["signature"] == "the manifest is not signed"


def test_a_deleted_earlier_manifest_breaks_the_chain(sealed):
    lake, key, _ = sealed
    lake.manifest_path(D1).unlink()
    assert "missing" in results(lake, D3, key.parent)["chain"]


def test_after_a_key_rotation_old_manifests_still_verify(sealed):
    lake, key, old = sealed
    new = create_key(key, replace=True)
    assert new != old and (key.parent / f"{old}.pub").exists()
    day(lake, D2)
    seal_manifest(lake, D2, key)
    assert lake.read_manifest(D2)["signature"]["key_id"] == new
    assert results(lake, D1, key.parent)["signature"] == "ok" and results(lake, D2, key.parent)["signature"] == "ok"
    (key.parent / f"{old}.pub").unlink()
    assert "no public key" in results(lake, D1, key.parent)["signature"]


def test_a_re_run_of_an_earlier_day_keeps_the_sealed_manifest_later_days_link_to(sealed):
    lake, key, _ = sealed
    day(lake, D1, n=5)  # a legitimate re-run with different outputs, sealed by the pipeline
    seal_manifest(lake, D1, key)
    assert results(lake, D3, key.parent)["chain"].startswith("ok (previous 2026-11-18, re-run since")
    # A forger's replacement of the kept copy does not pass.
    kept = next((lake.root / "_manifests" / "_superseded").rglob("*.json"))
    kept.write_text(kept.read_text().replace('"rows": 3', '"rows": 4'))
    assert "expected sha256" in results(lake, D3, key.parent)["chain"]
