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


@pytest.fixture
def settings(tmp_path):
    from copyhunt.config import load_settings

    return load_settings(env={"COPYHUNT_HOME": str(tmp_path), "COPYHUNT_CUSTOMERS_FILE": str(REPO / "demo" / "customers.toml")})
