"""Licence check and post-licence value, from a YAML rate card. Money is integer cents.

``price(hit, card)`` returns the amount and an itemised breakdown that explains each factor, so a
customer (and an auditor) can follow the figure. Deterministic: no floats, no clock.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

USAGE_TYPES = ("commercial", "editorial", "product", "social")


class RateCardError(ValueError):
    pass


@dataclass(frozen=True)
class RateCard:
    currency: str
    version: str
    base_cents: dict[str, dict[str, int]]
    size_classes: dict[str, int | None]
    duration_factors: dict[int, int]
    per_extra_year_percent: int
    missing_attribution_surcharge_percent: int

    @staticmethod
    def from_mapping(data: dict[str, Any]) -> "RateCard":
        try:
            base = {u: {s: int(v) for s, v in sizes.items()} for u, sizes in data["base_cents"].items()}
            card = RateCard(
                currency=str(data["currency"]), version=str(data["version"]), base_cents=base,
                size_classes={k: (None if v is None else int(v)) for k, v in data["size_classes"].items()},
                duration_factors={int(k): int(v) for k, v in data["duration_factors"].items()},
                per_extra_year_percent=int(data["per_extra_year_percent"]),
                missing_attribution_surcharge_percent=int(data["missing_attribution_surcharge_percent"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RateCardError(f"rate card is malformed: {type(exc).__name__}: {exc}") from None
        missing = [u for u in USAGE_TYPES if u not in card.base_cents]
        if missing:
            raise RateCardError(f"rate card lacks usage types {missing}")
        for usage, sizes in card.base_cents.items():
            if set(sizes) != set(card.size_classes):
                raise RateCardError(f"rate card usage {usage!r} must price every size class {sorted(card.size_classes)}")
            if any(v < 0 for v in sizes.values()):
                raise RateCardError(f"rate card usage {usage!r} has a negative fee")
        if 1 not in card.duration_factors:
            raise RateCardError("rate card duration_factors must start at 1 month")
        return card


def load_rate_card(path: Path | None = None) -> RateCard:
    text = Path(path).read_text() if path else resources.files("copyhunt").joinpath("ratecard.yaml").read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RateCardError(f"rate card is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RateCardError("rate card must be a mapping")
    return RateCard.from_mapping(data)


def size_class(card: RateCard, width: int | None, height: int | None) -> str:
    longest = max(width or 0, height or 0)
    for name, bound in sorted(card.size_classes.items(), key=lambda kv: (kv[1] is None, kv[1] or 0)):
        if bound is None or longest <= bound:
            return name
    return list(card.size_classes)[-1]


def months_between(start: dt.date, end: dt.date) -> int:
    """Started months of use, at least one."""
    days = max(0, (end - start).days)
    return max(1, math.ceil((days + 1) / 30.4375))


def duration_percent(card: RateCard, months: int) -> tuple[int, str]:
    if months <= 12:
        tier = min(k for k in card.duration_factors if k >= months) if any(k >= months for k in card.duration_factors) else max(card.duration_factors)
        return card.duration_factors[tier], f"up to {tier} month(s)"
    years_extra = math.ceil((months - 12) / 12)
    top = card.duration_factors[max(card.duration_factors)]
    return top + years_extra * card.per_extra_year_percent, f"12 months + {years_extra} started year(s)"


def _pct(cents: int, percent: int) -> int:
    return int((Decimal(cents) * Decimal(percent) / Decimal(100)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def price(usage: str, width: int | None, height: int | None, since: dt.date, run_date: dt.date, attributed: bool, card: RateCard) -> tuple[int, dict[str, Any]]:
    """(amount in cents, itemised breakdown)."""
    if usage not in card.base_cents:
        usage = "commercial"
    size = size_class(card, width, height)
    base = card.base_cents[usage][size]
    months = months_between(since, run_date)
    percent, tier = duration_percent(card, months)
    amount = _pct(base, percent)
    items: list[dict[str, Any]] = [
        {"factor": "base", "usage": usage, "size_class": size, "cents": base},
        {"factor": "duration", "months": months, "tier": tier, "percent": percent, "cents": amount},
    ]
    if not attributed:
        surcharge = _pct(amount, card.missing_attribution_surcharge_percent)
        items.append({"factor": "missing_attribution", "percent": card.missing_attribution_surcharge_percent, "cents": surcharge})
        amount += surcharge
    return amount, {"currency": card.currency, "rate_card": card.version, "since": since.isoformat(), "items": items, "total_cents": amount}


def matching_licence(customer, image_id: str, domain: str, registrable: str, operator: str | None, run_date: dt.date):
    """The customer's licence covering this use, or None."""
    for lic in sorted(customer.licences, key=lambda l: l.id):
        lic_domain = lic.licensee_domain.lower().lstrip(".")
        domain_ok = domain == lic_domain or domain.endswith("." + lic_domain) or registrable == lic_domain
        image_ok = "*" in lic.image_ids or image_id in lic.image_ids
        if domain_ok and image_ok and lic.valid_from <= run_date <= lic.valid_to:
            return lic
    return None


PRICED_EXTRA = ["licensed", "licence_id", "license_value_cents", "currency", "value_breakdown", "run_date"]


def price_hits(enriched, customers: list, card: RateCard, run_date: dt.date, first_seen: dict | None = None):
    """Add licence and value columns to the enriched frame (pandas in, pandas out)."""
    by_id = {c.id: c for c in customers}
    first_seen = first_seen or {}
    out = enriched.copy()
    licensed, licence_ids, values, breakdowns = [], [], [], []
    for r in out.itertuples(index=False):
        customer = by_id.get(r.customer_id)
        lic = matching_licence(customer, r.image_id, r.domain, r.registrable_domain, r.operator_name, run_date) if customer else None
        key = (r.customer_id, r.image_id, r.page_url, r.image_url)
        candidates = [d for d in (first_seen.get(key), r.published_at) if d]
        since = min(dt.date.fromisoformat(str(d)[:10]) for d in candidates) if candidates else run_date
        if lic is not None:
            licensed.append(True)
            licence_ids.append(lic.id)
            values.append(0)
            breakdowns.append(json.dumps({"licensed": True, "licence": lic.id, "total_cents": 0}, sort_keys=True))
            continue
        cents, breakdown = price(r.page_kind, r.image_width, r.image_height, since, run_date, bool(r.attribution_found), card)
        licensed.append(False)
        licence_ids.append(None)
        values.append(cents)
        breakdowns.append(json.dumps(breakdown, sort_keys=True))
    out["licensed"] = licensed
    out["licence_id"] = licence_ids
    out["license_value_cents"] = pd_int(values, out.index)
    out["currency"] = card.currency
    out["value_breakdown"] = breakdowns
    out["run_date"] = run_date.isoformat()
    return out


def pd_int(values, index):
    import pandas as pd

    return pd.Series(values, dtype="int64", index=index)
