"""Shared DAG settings: owners, retries, the index Asset. Imported by DAG files (this module is
the only place in the library that imports Airflow).

Nothing here touches the network, a database or an Airflow Variable at import time: the
scheduler parses DAG files often and must not block on anything.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Callable

from airflow.sdk import Asset, Param

DEFAULT_ARGS = {
    "owner": "copyhunt-data",
    "retries": 2,
    # The demo and the tests shorten the wait (a failing run should fail in seconds there).
    "retry_delay": dt.timedelta(seconds=float(os.environ.get("COPYHUNT_RETRY_DELAY_SECONDS", "120"))),
    "retry_exponential_backoff": True,
}
START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
# Declared once: customer_index produces it, daily_hunt's run reports name it.
CUSTOMER_INDEX = Asset(name="customer_index", uri="file:///copyhunt/lake/index")
RUN_DATE_PARAM_HELP = "Partition to read and write (YYYY-MM-DD). Empty: the run's logical date."

SPARK_CONNECTION_ID = "copyhunt_spark"


def common_dag_arguments() -> dict:
    """The @dag arguments every copyhunt DAG shares: start date, no catch-up, one run at a time,
    owner and retries, and the ``run_date`` parameter (a fresh Param for each DAG)."""
    return {
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "default_args": DEFAULT_ARGS,
        "params": {"run_date": Param(None, type=["null", "string"], description=RUN_DATE_PARAM_HELP)},
    }

Stage = Callable[..., dict]


def run_task_stage(name: str, stage: Stage | None = None) -> dict:
    """Run one copyhunt stage for the current task's run partition; the body of every stage task.

    ``stage`` takes (settings, run_date) and returns its figures; by default the daily_hunt stage
    of that name in ``copyhunt.hunt.DAILY_STAGES``. The library is imported here, at task run time, so parsing
    a DAG file stays cheap. The match stage reads its Spark master from the Airflow connection.
    Returns the stage's figures with the partition it wrote (``run_date``).
    """
    import dataclasses

    from airflow.sdk import get_current_context

    from copyhunt import hunt
    from copyhunt.config import load_settings
    from copyhunt.runlog import run_stage

    run_date = hunt.run_date_from_context(get_current_context())
    settings = load_settings()
    if name == "match":
        settings = dataclasses.replace(settings, spark_master=spark_master_from_connection(settings.spark_master))
    result = run_stage(name, stage or hunt.daily_stage(name), settings, run_date)
    return {"run_date": run_date.isoformat(), **result}


def spark_master_from_connection(default: str) -> str:
    """The Spark master named by the Airflow connection ``copyhunt_spark``, else ``default``.

    Called at task run time (never at parse time): production defines the connection
    (e.g. AIRFLOW_CONN_COPYHUNT_SPARK=spark://spark-master:7077); the embedded setup has none and
    keeps the configured master (local[*]).
    """
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(SPARK_CONNECTION_ID)
    except Exception:  # AirflowNotFoundException and friends: no connection defined
        return default
    if conn.host and conn.host.startswith(("spark://", "local", "yarn", "k8s://")):
        return conn.host
    scheme = conn.conn_type or "spark"
    return f"{scheme}://{conn.host}:{conn.port or 7077}" if conn.host else default
