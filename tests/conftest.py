"""Shared fixtures: isolated settings per test, paths to the shipped images."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "assets" / "images"
CUSTOMER_IMAGES = sorted((IMAGES / "wikimedia-potd").glob("*.jpg"))
UNRELATED_IMAGES = sorted((IMAGES / "labelme").glob("*.jpg")) + [IMAGES / "bridge" / "bridge-1-original.jpg", IMAGES / "threatexchange-misc-pen-and-coaster.png"]

# Spark workers must run this interpreter (the venv), not whatever python3 is on PATH.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
# The tests' Spark jobs are small: much of a JVM's CPU went to its optimising (C2) compiler and to
# parallel GC threads, which a job this short never pays back, on two cores shared with the Python
# workers. With C1 only and the serial GC the job and its output are the same, for less CPU. Every
# spark-submit (run_job's, pyspark's own) passes these to the JVM.
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")


def jpeg_bytes(im, quality: int = 85) -> bytes:
    """``im`` saved as an RGB JPEG: a copy as a web page would serve it (lossy, no metadata)."""
    import io

    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture
def settings(tmp_path):
    from copyhunt.config import load_settings

    return load_settings(env={"COPYHUNT_HOME": str(tmp_path), "COPYHUNT_CUSTOMERS_FILE": str(REPO / "demo" / "customers.toml")})


# ---- the demo run, shared by the end-to-end, replay and recovery tests ----------------------
import datetime as _dt
import hashlib as _hashlib
import json as _json

DEMO_RUN_DATE = _dt.date(2026, 11, 20)


def lake_snapshot(lake: Path, run_date: _dt.date) -> dict[str, str]:
    """sha256 of every data file and the manifest of one run date (not _runs: it holds durations)."""
    files = {}
    for p in sorted(lake.glob(f"*/run_date={run_date.isoformat()}/*")):
        if p.is_file() and not p.parts[-3].startswith("_runs"):
            files[str(p.relative_to(lake))] = _hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def db_rows(url: str) -> dict[str, list]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    out = {}
    with engine.connect() as conn:
        for table in ("customers", "images", "licences", "hits", "hit_events", "runs", "digests"):
            rows = conn.execute(sa.text(f"SELECT * FROM {table}")).mappings().all()
            out[table] = sorted(_json.dumps(dict(r), sort_keys=True, default=str) for r in rows)
    engine.dispose()
    return out


def demo_settings_for(home: Path):
    from copyhunt.config import load_settings

    return load_settings(env={"COPYHUNT_HOME": str(home), "COPYHUNT_CUSTOMERS_FILE": str(REPO / "demo" / "customers.toml")})


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory):
    """The whole demo (both DAGs via `airflow dags test`) run twice for the same date."""
    from copyhunt.demo_run import run_demo

    settings = demo_settings_for(tmp_path_factory.mktemp("demo-home"))
    outbox = settings.outbox / DEMO_RUN_DATE.isoformat()
    passes = []
    for _ in range(2):
        summary = run_demo(settings, DEMO_RUN_DATE, log=lambda *_: None)
        passes.append((summary, lake_snapshot(settings.lake, DEMO_RUN_DATE), db_rows(settings.database_url),
                       {p.name: p.read_bytes() for p in outbox.glob("*.eml")}))
    return settings, passes

# py4j logs "Closing down clientserver connection" from __del__ at interpreter exit, after pytest
# has closed its capture streams; keep its chatter out of the run's output.
import logging as _logging

_logging.getLogger("py4j").setLevel(_logging.WARNING)


# ---- in parallel: `make test` runs pytest -n 2 (pytest-xdist) ---------------------------------
# The modules whose tests read the session's demo run: they share a worker, so it runs once.
DEMO_RUN_MODULES = frozenset({"tests/test_e2e.py", "tests/test_recovery.py"})


def _module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadscope``, by module: a module's tests go to one worker, so its fixtures (a
    three-day lake, a demo web, a SparkSession) are built once, and the DEMO_RUN_MODULES go to the
    same one. Modules are handed out in collection order as workers free up."""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = _module_of(nodeid)
            return "the demo run" if module in DEMO_RUN_MODULES else module

    config.option.loadscopereorder = False  # by test count it would leave the one-test modules (backfill, kernels) for last
    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    strays = sorted({_module_of(item.nodeid) for item in items if "demo_runs" in getattr(item, "fixturenames", ())} - DEMO_RUN_MODULES)
    if strays:
        raise pytest.UsageError(f"{', '.join(strays)} read demo_runs: add them to DEMO_RUN_MODULES in tests/conftest.py "
                                "(or each parallel worker runs the whole demo again)")
