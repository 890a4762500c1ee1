"""The Airflow plugin (plugins/copyhunt_plugin.py), loaded by Airflow's own plugins manager and
served by Airflow's own API server app, shows the run report to signed-in Airflow users only.

Runs in a subprocess: Airflow reads its configuration (plugins folder, metadata database, JWT
secret) once per process, and other tests import Airflow with other settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from copyhunt import hunt
from copyhunt.config import Settings
from copyhunt.hitsdb.store import create_schema, make_engine
from copyhunt.runlog import run_stage
from inbox_seed import D2, PLANTED, seed

PROBE = r"""
import json
from airflow import plugins_manager
from airflow.utils.db import initdb

initdb()  # Airflow's metadata tables: the API checks tokens against revoked_token
plugins, errors = plugins_manager._get_plugins()
apps, _ = plugins_manager.get_fastapi_plugins()
views, _ = plugins_manager._get_ui_plugins()
out = {
    "plugins": [p.name for p in plugins],
    "errors": errors,
    "apps": [{k: v for k, v in a.items() if k != "app"} for a in apps],
    "views": views,
}

from airflow.api_fastapi.app import create_app, get_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from fastapi.testclient import TestClient

client = TestClient(create_app(apps="core"))
jwt = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="data-team", role="viewer"))
auth = {"Authorization": f"Bearer {jwt}"}
out["anonymous"] = client.get("/copyhunt/").status_code
out["forged"] = client.get("/copyhunt/", headers={"Authorization": "Bearer not-a-jwt"}).status_code
index = client.get("/copyhunt/", headers=auth)
run = client.get("/copyhunt/runs/2026-03-02", cookies={"_token": jwt})  # the UI's cookie, as in its iframe
out["index"] = [index.status_code, index.text]
out["run"] = [run.status_code, run.text]
out["run_json"] = client.get("/copyhunt/api/runs/2026-03-02", headers=auth).json()
out["missing_run"] = client.get("/copyhunt/runs/1999-01-01", headers=auth).status_code
print("PROBE:" + json.dumps(out, default=str))
"""


def test_plugin_loads_and_shows_the_run_report_to_airflow_users(tmp_path: Path) -> None:
    home = tmp_path / "copyhunt"
    settings = Settings(home=home, customers_file=home / "none.toml")
    engine = make_engine(settings.database_url)
    create_schema(engine)
    seed(engine, settings.blob_root)
    engine.dispose()
    # A real stage record in the lake: the digest stage, run the way the DAG task runs it.
    run_stage("digest", hunt.digest, settings, D2)

    airflow_home = tmp_path / "airflow"
    airflow_home.mkdir()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__API_AUTH__JWT_SECRET": "copyhunt-plugin-test-" + "0123456789abcdef" * 4,
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "COPYHUNT_HOME": str(home),
        "COPYHUNT_CUSTOMERS_FILE": str(home / "none.toml"),
    }
    env.pop("COPYHUNT_HITS_DB_URL", None)
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("PROBE:")), None)
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-5000:]
    out = json.loads(line[len("PROBE:"):])

    assert "copyhunt" in out["plugins"] and out["errors"] == {}
    assert {"url_prefix": "/copyhunt", "name": "copyhunt run report"} in out["apps"]
    view = next(v for v in out["views"] if v["name"] == "copyhunt runs")
    assert view["href"] == "copyhunt/" and view["url_route"] == "copyhunt-runs" and view["destination"] == "nav"

    assert out["anonymous"] == 401 and out["forged"] in (401, 403)
    status, index = out["index"]
    assert status == 200 and 'href="runs/2026-03-02"' in index and 'href="runs/2026-03-01"' in index
    status, run = out["run"]
    assert status == 200 and "Run 2026-03-02" in run
    assert "<td>digest</td>" in run and 'class="success"' in run
    assert "<td>alpine-lens</td><td>outbox</td>" in run  # the digests the stage sent
    report = out["run_json"]
    assert report["report"]["stages"]["digest"]["figures"] == {"digests": 2}
    assert report["hits_db"]["new_hits"] == sum(p.run_date == D2 for p in PLANTED) and [d["customer_id"] for d in report["hits_db"]["digests"]] == ["alpine-lens", "jana-novak"]
    assert out["missing_run"] == 404
