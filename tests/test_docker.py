"""The production compose file and image, checked without a Docker engine.

Structure: the services the deployment needs; every service's image is built from our
Dockerfile or is a pinned public image; every command our image runs exists in this environment
(the image installs the same requirements); the COPYHUNT_* names match the configuration module.
"""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from copyhunt.config import ENV_PREFIX, Settings

COMPOSE = yaml.safe_load((REPO / "docker" / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
BIN = Path(sys.executable).parent


def test_required_services_present():
    need = {"postgres", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
            "spark-master", "spark-worker", "inbox", "mailpit"}
    assert need <= set(SERVICES)


def test_every_image_is_ours_or_pinned():
    for name, svc in SERVICES.items():
        if "build" in svc:
            assert svc["build"]["dockerfile"] == "docker/Dockerfile"
            assert (REPO / svc["build"]["context"].replace("..", ".") / svc["build"]["dockerfile"]).exists() or (REPO / svc["build"]["dockerfile"]).exists()
        else:
            image = svc["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image})"


def test_dockerfile_matches_pins_and_copies_what_exists():
    text = (REPO / "docker" / "Dockerfile").read_text()
    airflow_pin = re.search(r"^apache-airflow==(\S+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)
    assert f"FROM apache/airflow:{airflow_pin}-python3.11" in text
    for src in re.findall(r"^COPY (?:--chown=\S+ )?(\S+) ", text, re.M):
        assert (REPO / src).exists(), src
    assert "openjdk-17" in text  # PySpark 4 needs Java 17


def _our_commands():
    for name, svc in SERVICES.items():
        if "build" in svc and isinstance(svc.get("command"), list):
            yield name, svc["command"]


@pytest.mark.parametrize("name, command", list(_our_commands()))
def test_every_command_exists(name, command):
    exe = command[0]
    if exe == "bash":
        for tool in re.findall(r"(?:^|&& )(\w[\w-]*) ", command[2]):
            assert (BIN / tool).exists() or tool in {"echo"}, (name, tool)
        return
    assert (BIN / exe).exists(), (name, exe)
    if exe == "airflow":
        proc = subprocess.run([str(BIN / "airflow"), command[1], "--help"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (name, proc.stderr[-500:])
    elif exe == "copyhunt":
        proc = subprocess.run([sys.executable, "-m", "copyhunt.cli", command[1], "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (name, proc.stdout[-500:], proc.stderr[-500:])
    elif exe == "spark-class":
        import pyspark

        jars = Path(pyspark.__file__).parent / "jars"
        assert any(j.name.startswith("spark-core") for j in jars.iterdir()), "the Spark distribution ships in pyspark"


def test_environment_names_match_the_configuration_module():
    fields = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    names = set()
    for svc in SERVICES.values():
        env = svc.get("environment") or {}
        names |= {k for k in env if k.startswith(ENV_PREFIX)}
    assert names, "the services are configured through COPYHUNT_* variables"
    assert names <= fields, f"unknown settings: {sorted(names - fields)}"
    assert {"COPYHUNT_HITS_DB_URL", "COPYHUNT_SPARK_MASTER", "COPYHUNT_SMTP_HOST", "COPYHUNT_LAKE_ROOT"} <= names


def test_airflow_reaches_spark_through_a_connection():
    env = SERVICES["airflow-scheduler"]["environment"]
    assert env["AIRFLOW_CONN_COPYHUNT_SPARK"].startswith("spark://spark-master:")
    worker = SERVICES["spark-worker"]["command"]
    assert env["AIRFLOW_CONN_COPYHUNT_SPARK"] in worker
