"""A two-day backfill through a running scheduler (`airflow standalone`), as the data team runs it."""

import contextlib
import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import demo_settings_for
from copyhunt.lake import Lake

pytestmark = pytest.mark.slow
DATES = ("2026-11-16", "2026-11-17")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backfill_run_states(airflow_db: Path) -> dict[str, str]:
    """run_id -> state of daily_hunt's backfill runs, read from Airflow's SQLite metadata DB."""
    with contextlib.closing(sqlite3.connect(f"file:{airflow_db}?mode=ro", uri=True, timeout=30)) as conn:
        rows = conn.execute("SELECT run_id, state FROM dag_run WHERE dag_id = 'daily_hunt'").fetchall()
    return {run_id: state for run_id, state in rows if run_id.startswith("backfill__")}


def test_two_day_backfill_runs_to_completion(tmp_path):
    from copyhunt.airflow_local import standalone_env, start_standalone, stop_standalone, wait_until_ready
    from copyhunt.demo.web import build, serve
    from copyhunt.demo_run import demo_settings, ensure_airflow_db
    from copyhunt import references
    from copyhunt.lake import parse_run_date

    settings = demo_settings_for(tmp_path)
    web_root = settings.resolve("data/demo-web")
    build(web_root, settings.customers_path)
    api_port = free_port()
    with serve(web_root, "127.0.0.1", 0) as server:
        run_settings = demo_settings(settings, server.proxy_url, web_root / "seeds.txt")
        first = parse_run_date(DATES[0])
        references.register_stage(run_settings, first)  # seeds the registry and snapshots it
        references.fingerprint_references(run_settings, first)
        references.build_reference_index(run_settings, first)

        # No cron runs: unpaused, both DAGs would also get a run for the current hour and day, a
        # whole extra daily_hunt and customer_index beside the backfill (twice the work, on dates
        # the test never looks at). Backfill runs do not come from the cron schedule and still run.
        env = {**standalone_env(run_settings, api_port), "COPYHUNT_RETRY_DELAY_SECONDS": "3",
               "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}
        ensure_airflow_db(env, print)
        airflow = [str(Path(sys.executable).with_name("airflow"))]
        # The backfill is created before the scheduler starts: a scheduler loop that meets the
        # CLI's new runs mid-transaction can die of StaleDataError on dag_run (an Airflow race,
        # apache/airflow#63926), and `airflow standalone` does not restart it. The scheduler then
        # runs the backfill as it would one created while it runs.
        reserialize = subprocess.run(airflow + ["dags", "reserialize"], env=env, capture_output=True, text=True, timeout=300)
        assert reserialize.returncode == 0, reserialize.stderr[-2000:]
        create = subprocess.run(airflow + ["backfill", "create", "--dag-id", "daily_hunt", "--from-date", DATES[0],
                                           "--to-date", DATES[1] + "T23:00:00", "--max-active-runs", "1"],
                                env=env, capture_output=True, text=True, timeout=300)
        assert create.returncode == 0, create.stderr[-2000:]
        log_path = tmp_path / "standalone.log"
        proc = start_standalone(env, log_path)
        try:
            wait_until_ready(api_port, proc)
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline and "Exception when executing SchedulerJob" not in log_path.read_text(errors="replace"):
                # Waiting reads the metadata DB: an `airflow` command every few seconds would cost
                # the scheduler a core while it starts (the CLI is asked once, at the end).
                states = backfill_run_states(Path(env["AIRFLOW_HOME"]) / "airflow.db")
                if len(states) == 2 and all(s in ("success", "failed") for s in states.values()):
                    break
                time.sleep(2)
            listed = subprocess.run(airflow + ["dags", "list-runs", "daily_hunt", "-o", "json"], env=env, capture_output=True, text=True, timeout=300)
            runs = next((json.loads(line) for line in listed.stdout.splitlines() if line.startswith("[{")), [])
            states = {r["run_id"]: r["state"] for r in runs if r["run_id"].startswith("backfill__")}
        finally:
            stop_standalone(proc)
    assert sorted(states.values()) == ["success", "success"], (states, listed.stderr[-2000:], (tmp_path / "standalone.log").read_text()[-3000:])
    lake = Lake(settings.lake)
    for d in DATES:
        for dataset in ("pages", "images", "matches", "priced"):
            assert lake.has_partition(dataset, d), (dataset, d)
        assert json.loads(lake.manifest_path(d).read_text())["run_date"] == d
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:
        run_dates = {str(r[0]) for r in conn.execute(sa.text("SELECT run_date FROM runs"))}
        first_seen = {str(r[0]) for r in conn.execute(sa.text("SELECT DISTINCT first_seen FROM hits"))}
    assert set(DATES) <= run_dates
    # Each day read and wrote only its own partition: the hits were first seen on the first day.
    assert DATES[0] in first_seen
