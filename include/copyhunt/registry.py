"""The customer registry the stages read: who the customers are, their images and their licences.

Today the registry is the customers file (TOML) that ``copyhunt.demo`` ships; both the daily
stages and the customer_index stages read it here, so neither has to import the other.
"""

from __future__ import annotations

from pathlib import Path

from copyhunt.config import Settings
from copyhunt.demo.customers import Customer, load_customers

REPO_ROOT = Path(__file__).resolve().parents[2]


def customers(settings: Settings) -> list[Customer]:
    # Image paths in the customers file are relative to the repository root.
    return load_customers(settings.customers_path, REPO_ROOT)
