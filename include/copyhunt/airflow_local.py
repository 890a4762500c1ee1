"""``make airflow``: Airflow 3 running locally (``airflow standalone``) on the project's DAGs.

The scheduler, dag-processor, triggerer and API server run with this repository's DAGs, plugins
and configuration, with the demo web served beside them, so triggered runs and backfills
(``airflow backfill create --dag-id daily_hunt --from-date A --to-date B``) execute for real.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

from copyhunt.config import Settings
from copyhunt.demo_run import airflow_env, demo_settings, ensure_airflow_db


def standalone_env(settings: Settings, api_port: int) -> dict[str, str]:
    """Everything the Airflow processes (and the tasks they start) need, as environment."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        **settings.as_env(),
        **airflow_env(settings),
        "COPYHUNT_HOME": str(settings.home),
        # standalone starts its components as `airflow ...` found on PATH: ours first.
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(api_port + 1),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(api_port + 2),
        "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    }


def start_standalone(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")
    # A new session: stopping it later stops every component it started.
    return subprocess.Popen([str(Path(sys.executable).with_name("airflow")), "standalone"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_ready(api_port: int, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{api_port}/api/v2/monitor/health"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"airflow standalone exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                health = json.loads(resp.read())
            if health.get("scheduler", {}).get("status") == "healthy":
                return
        except (OSError, ValueError):
            pass
        time.sleep(2)
    raise TimeoutError(f"Airflow's API server did not report a healthy scheduler on port {api_port} within {timeout_s:.0f}s")


def stop_standalone(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def admin_login(airflow_home: Path) -> tuple[str, str]:
    generated = Path(airflow_home) / "simple_auth_manager_passwords.json.generated"
    if generated.exists():
        users = json.loads(generated.read_text())
        if users:
            name = sorted(users)[0]
            return name, users[name]
    return "admin", "(see simple_auth_manager_passwords.json.generated in AIRFLOW_HOME)"


def run_local_airflow(settings: Settings, api_port: int = 8080, web_port: int = 8899, log: Callable[[str], None] = print) -> int:
    """Serve the demo web and run Airflow until interrupted; returns the exit code."""
    from copyhunt.demo.web import build, serve

    web_root = settings.resolve("data/demo-web")
    build(web_root, settings.customers_path)
    with serve(web_root, "127.0.0.1", web_port) as server:
        run_settings = dataclasses.replace(demo_settings(settings, server.proxy_url, web_root / "seeds.txt"))
        env = standalone_env(run_settings, api_port)
        ensure_airflow_db(env, log)
        log_path = run_settings.resolve("data/logs") / "airflow-standalone.log"
        proc = start_standalone(env, log_path)
        try:
            wait_until_ready(api_port, proc)
            user, password = admin_login(Path(env["AIRFLOW_HOME"]))
            log(f"Airflow UI:   http://127.0.0.1:{api_port}   login: {user} / {password}")
            log(f"DAGs:         {env['AIRFLOW__CORE__DAGS_FOLDER']} (unpaused)   logs: {log_path}")
            log(f"demo web:     {server.proxy_url} (the crawler's proxy)")
            log("backfill:     AIRFLOW_HOME=" + env["AIRFLOW_HOME"] + " .venv/bin/airflow backfill create --dag-id daily_hunt "
                "--from-date 2026-11-18 --to-date 2026-11-19T23:00:00")
            log("Ctrl-C stops Airflow and the demo web.")
            return proc.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            stop_standalone(proc)
