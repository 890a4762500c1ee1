"""The audit trail on a lake of three run dates, one of them backfilled after the other two.

Built once per module (real crawls of the demo web, real Spark matches): the 21st and the 22nd
run first, then the 20th is backfilled and the 21st's enrich and price are re-run (its first-seen
history now reaches back to the 20th). Every `copyhunt replay --from-stage S` of the 22nd (two
earlier dates) must exit 0; a tampered stored output must be refused by `stage load`, `replay`
and `audit verify`, and a tampered partition with a rewritten manifest caught by the signature
and the chain.
"""

import datetime as dt
import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO, demo_settings_for
from copyhunt.audit import verify_run
from copyhunt.lake import Lake, sha256_file

pytestmark = pytest.mark.slow
REF, BACKFILLED, FIRST, LATEST = dt.date(2026, 11, 19), dt.date(2026, 11, 20), dt.date(2026, 11, 21), dt.date(2026, 11, 22)
HUNT = ("crawl", "fingerprint", "match", "enrich", "price", "load")


@pytest.fixture(scope="module")
def three_days(tmp_path_factory):
    from copyhunt import hunt, references
    from copyhunt.audit import record_run_facts
    from copyhunt.demo.web import build, serve
    from copyhunt.demo_run import demo_settings
    from copyhunt.runlog import run_stage
    from copyhunt.sealing import ensure_key

    home = tmp_path_factory.mktemp("audit-home")
    settings = demo_settings_for(home)
    ensure_key(settings.manifest_key_path)
    web_root = settings.resolve("data/demo-web")
    build(web_root, settings.customers_path)
    with serve(web_root, "127.0.0.1", 0) as server:
        run = demo_settings(settings, server.proxy_url, web_root / "seeds.txt")
        references.register_stage(run, REF)  # seeds the registry and snapshots it
        references.fingerprint_references(run, REF)
        references.build_reference_index(run, REF)
        record_run_facts(run, REF)
        for d in (FIRST, LATEST, BACKFILLED):
            for name in HUNT:
                run_stage(name, getattr(hunt, name), run, d)
        for name in ("enrich", "price"):  # the 21st re-run after the backfill: its history changed
            run_stage(name, getattr(hunt, name), run, FIRST)
    return run


def cli(settings, *args):
    env = {**os.environ, **settings.as_env(), "COPYHUNT_HOME": str(settings.home)}
    return subprocess.run([sys.executable, "-m", "copyhunt.cli", *args], env=env, capture_output=True, text=True, cwd=REPO)


@pytest.fixture
def copied(three_days, tmp_path):
    shutil.copytree(three_days.home / "data", tmp_path / "data", symlinks=True, ignore=shutil.ignore_patterns("replay", "demo-web"))
    return demo_settings_for(tmp_path)


def test_the_backfill_changed_the_first_days_history_and_the_run_recorded_what_it_read(three_days):
    lake = Lake(three_days.lake)
    reads = lake.read_manifest(LATEST)["run"]["reads"]["enrich"]
    read_days = {(r["dataset"], r["run_date"]) for r in reads if r["run_date"] != LATEST.isoformat()}
    # The 22nd ran before the 20th existed: it read the 21st's enriched, as it was then, and the
    # registry snapshot of the customer_index run its index came from.
    assert read_days == {("enriched", FIRST.isoformat())} | {(d, REF.isoformat()) for d in ("index_versions", "registry_customers", "registry_images", "registry_licences")}
    then = next(r["sha256"] for r in reads if r["run_date"] == FIRST.isoformat())
    assert sha256_file(lake.partition_file("enriched", FIRST)) != then, "the re-run after the backfill changed the 21st"
    assert lake.superseded_file("enriched", FIRST, then) is not None


@pytest.mark.parametrize("stage", ["fingerprint", "match", "enrich", "price"])
def test_replay_from_every_stage_with_two_earlier_dates_is_equal(three_days, stage, tmp_path):
    proc = cli(three_days, "replay", "--run-date", LATEST.isoformat(), "--from-stage", stage, "--out", str(tmp_path / "replay"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "NO" not in proc.stdout and "yes" in proc.stdout


def test_the_backfilled_and_the_re_run_days_replay_equal(three_days, tmp_path):
    for d in (BACKFILLED, FIRST):
        proc = cli(three_days, "replay", "--run-date", d.isoformat(), "--from-stage", "enrich", "--out", str(tmp_path / d.isoformat()))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_audit_verify_passes_on_untouched_data(three_days):
    proc = cli(three_days, "audit", "verify", "--from", BACKFILLED.isoformat(), "--to", LATEST.isoformat())
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for check in ("signature", "chain", "partition", "blobs", "index", "reads"):
        assert check in proc.stdout
    assert "no differences" in proc.stdout


def tamper_priced(settings, d):
    """Rewrite the day's priced file as valid Parquet with one license_value_cents set to 1."""
    path = Lake(settings.lake).partition_file("priced", d)
    table = pq.read_table(path)
    values = table.column("license_value_cents").to_pylist()
    assert values and values[0] != 1
    values[0] = 1
    i = table.schema.get_field_index("license_value_cents")
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type)), path)
    return path


def test_a_tampered_stored_output_is_refused_by_load_replay_and_verify(copied):
    assert cli(copied, "stage", "load", "--run-date", FIRST.isoformat()).returncode == 0  # untouched: loads
    path = tamper_priced(copied, FIRST)
    expected = Lake(copied.lake).recorded_sha256("priced", FIRST)

    load = cli(copied, "stage", "load", "--run-date", FIRST.isoformat())
    assert load.returncode == 1
    line = [l for l in load.stderr.splitlines() if "refused" in l]
    assert len(line) == 1 and str(path) in line[0] and expected in line[0] and sha256_file(path) in line[0], load.stderr[-2000:]
    import sqlalchemy as sa

    engine = sa.create_engine(copied.database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM hits WHERE license_value_cents = 1")).scalar() == 0
    engine.dispose()

    replay = cli(copied, "replay", "--run-date", FIRST.isoformat(), "--from-stage", "price")
    assert replay.returncode == 1 and "priced" in replay.stdout and "sha256" in replay.stdout, replay.stdout[-2000:]

    verify = cli(copied, "audit", "verify", "--run-date", FIRST.isoformat())
    assert verify.returncode == 1 and "1 difference(s)" in verify.stdout, verify.stdout[-3000:]
    # The table folds a long path at any character, where depending on the length of the test's
    # temporary directory: the one difference is asserted to be the priced file on the findings
    # the command prints.
    assert [(f.check, f.subject) for f in verify_run(copied, FIRST) if f.problem] == [("partition", str(path))]


def forge(settings, dataset, d, path):
    """Rewrite the manifest entry of a tampered file to its new sha256, as a forger would."""
    manifest_path = Lake(settings.lake).manifest_path(d)
    m = json.loads(manifest_path.read_text())
    entry = next(f for f in m["datasets"][dataset]["files"] if f["path"].endswith(".parquet"))
    entry["sha256"], entry["bytes"] = sha256_file(path), path.stat().st_size
    manifest_path.write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


def test_a_tampered_partition_with_a_rewritten_manifest_is_caught_by_signature_and_chain(copied):
    forge(copied, "priced", FIRST, tamper_priced(copied, FIRST))
    # The partition check passes now: only the seal can tell.
    verify = cli(copied, "audit", "verify", "--run-date", FIRST.isoformat())
    assert verify.returncode == 1
    assert "changed after signing" in verify.stdout, verify.stdout[-3000:]
    # The reference run's manifest is what the 20th's and the 21st's chain links name.
    lake = Lake(copied.lake)
    path = lake.partition_file("index_versions", REF)
    table = pq.read_table(path)
    pq.write_table(table.set_column(0, table.schema.field(0), pa.array(["0" * 16] * table.num_rows, table.schema.field(0).type)), path)
    forge(copied, "index_versions", REF, path)
    for d in (BACKFILLED, FIRST):
        later = cli(copied, "audit", "verify", "--run-date", d.isoformat())
        assert later.returncode == 1 and "chain" in later.stdout and "expected sha256" in later.stdout, later.stdout[-3000:]


def test_a_killed_crawls_staging_is_removed_by_the_days_next_run(copied):
    from copyhunt import hunt

    staging = copied.lake / ".crawl-staging"
    dead, other = staging / f"{LATEST.isoformat()}-deadbeef", staging / f"{FIRST.isoformat()}-cafe"
    for d in (dead, other):
        d.mkdir(parents=True)
        (d / "pages.parquet").write_bytes(b"half")
    assert hunt.crawl(copied, LATEST)["skipped"]
    assert not dead.exists() and other.exists()
