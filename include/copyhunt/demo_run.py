"""``make demo``: serve the demo web, run both DAGs with ``airflow dags test``, summarise.

Airflow runs with the project's embedded setup: its metadata DB is SQLite under
``data/airflow``, DAGs and plugins come from this repository, and the tasks see the copyhunt
settings as COPYHUNT_* variables (with the crawler sent through the demo web's proxy).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from copyhunt.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment that points Airflow at this project (no global ~/airflow involved)."""
    home = settings.resolve("data/airflow")
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # SQLite has one writer: wait up to a minute for the lock instead of failing at once.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}?timeout=60",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "COPYHUNT_RETRY_DELAY_SECONDS": "3",
    }


def _airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def ensure_airflow_db(env: dict[str, str], log: Callable[[str], None]) -> None:
    """Create or upgrade the SQLite metadata DB; idempotent and quick when already current."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([_airflow_bin(), "db", "migrate"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("airflow db migrate failed:\n" + "\n".join(proc.stderr.splitlines()[-20:]))


def dags_test(dag_id: str, run_date: dt.date, env: dict[str, str], log_dir: Path, conf: dict | None = None) -> None:
    """``airflow dags test DAG DATE``; raises with the log's tail unless the run succeeded."""
    import json

    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{dag_id}.log"
    cmd = [_airflow_bin(), "dags", "test", dag_id, run_date.isoformat()]
    if conf:
        cmd += ["--conf", json.dumps(conf)]
    with open(log_path, "w") as fh:
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True)
    text = log_path.read_text(errors="replace")
    # `airflow dags test` exits non-zero ("DagRun failed") when the run ends failed.
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-40:])
        raise RuntimeError(f"airflow dags test {dag_id} {run_date} did not succeed (log: {log_path}):\n{tail}")


def demo_settings(settings: Settings, proxy_url: str, seeds_file: Path) -> Settings:
    # The demo web is our own server on loopback: allow it, and drop the delays that protect
    # other people's servers. Its marketplace is crawled by the marketplace spider (sellers).
    return dataclasses.replace(settings, crawl_proxy=proxy_url, crawl_allow_private=True, seeds_file=seeds_file,
                               crawl_download_delay=0.0, crawl_autothrottle=False, crawl_concurrency_per_domain=8,
                               crawl_marketplace_hosts="bazaar-market.test")


def run_demo(settings: Settings, run_date: dt.date, port: int = 0, log: Callable[[str], None] = print) -> dict:
    from copyhunt.demo.web import build, serve
    from copyhunt.hunt import summary

    from copyhunt.sealing import ensure_key

    started = time.monotonic()
    ensure_key(settings.manifest_key_path)  # signs the run manifests; kept outside the lake
    web_root = settings.resolve("data/demo-web")
    log(f"building the demo web in {web_root}")
    build(web_root, settings.customers_path)
    with serve(web_root, "127.0.0.1", port) as server:
        log(f"demo web serving on {server.proxy_url} (HTTP proxy for *.test sites)")
        run_settings = demo_settings(settings, server.proxy_url, web_root / "seeds.txt")
        env = {**os.environ, **run_settings.as_env(), **airflow_env(run_settings), "COPYHUNT_HOME": str(run_settings.home)}
        log("preparing Airflow's metadata DB (SQLite)")
        ensure_airflow_db(env, log)
        logs = run_settings.resolve("data/logs") / f"run_date={run_date.isoformat()}"
        for dag_id in ("customer_index", "daily_hunt"):
            t0 = time.monotonic()
            log(f"airflow dags test {dag_id} {run_date} ...")
            dags_test(dag_id, run_date, env, logs)
            log(f"  {dag_id} succeeded in {time.monotonic() - t0:.0f}s (log: {logs / (dag_id + '.log')})")
    result = summary(run_settings, run_date)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result
