"""Submitting copyhunt's Spark jobs: ``run_job(settings, "match", args)``.

A job is a module of ``copyhunt.jobs``; its file is found through the package (it is where the
installed package is, checkout or wheel) and handed to the ``spark-submit`` beside this Python,
against the configured master, with this interpreter for the workers (or they miss the venv).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from copyhunt.config import Settings

STDERR_LINES_SHOWN = 30  # of a failed job's stderr, in the error; the whole of it goes to the log


class SparkJobFailed(RuntimeError):
    pass


def job_file(job: str) -> Path:
    spec = importlib.util.find_spec(f"copyhunt.jobs.{job}")
    if spec is None or spec.origin is None:
        raise ValueError(f"no Spark job named {job!r} in copyhunt.jobs")
    return Path(spec.origin)


def submit_command(settings: Settings, job: str, args: list[str]) -> list[str]:
    spark_submit = Path(sys.executable).with_name("spark-submit")
    return [str(spark_submit), "--master", settings.spark_master, "--conf", "spark.ui.enabled=false",
            "--conf", f"spark.pyspark.python={sys.executable}", "--conf", "spark.driver.memory=2g", str(job_file(job)), *args]


def run_job(settings: Settings, job: str, args: list[str], log_path: Path | None = None) -> None:
    """Run one job to its end; its stdout and stderr go to ``log_path`` when given."""
    env = {**os.environ, **settings.as_env(), "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    proc = subprocess.run(submit_command(settings, job, args), env=env, capture_output=True, text=True)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-STDERR_LINES_SHOWN:])
        where = f" (whole log: {log_path})" if log_path is not None else ""
        raise SparkJobFailed(f"Spark job {job} failed with exit code {proc.returncode}{where}:\n{tail}")
