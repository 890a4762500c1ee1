"""Licence check and post-licence value, from a YAML rate card validated against a JSON Schema.

``load_rate_card`` reads ``ratecard.yaml`` (or a given file), validates it against
``ratecard.schema.yaml`` and the rules a schema cannot state, and returns a frozen ``RateCard``;
``with_overrides`` merges a customer's contract terms (``rate_card`` in the customers file) into
it and validates again. ``check_licences`` decides whether one of a customer's licences covers a
use (licensee domain or operator; one image or all; valid on the day), ``quote`` prices an
unlicensed use with an itemised breakdown that explains every factor, and ``price_hits`` does
both for the enriched table.

Money is integer cents throughout (Decimal only for a percentage, rounded half-up to a cent);
nothing reads the clock, so the same inputs give the same figures.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import yaml

from copyhunt.parties import same_party

USAGE_TYPES = ("commercial", "editorial", "product", "social")
SCHEMA_RESOURCE = "ratecard.schema.yaml"
ALL_IMAGES = "*"


class RateCardError(ValueError):
    pass


@dataclass(frozen=True)
class SizeClass:
    name: str
    max_px: int | None  # inclusive upper bound of the longest displayed side; None: open-ended


@dataclass(frozen=True)
class RateCard:
    currency: str
    version: str
    usage_labels: Mapping[str, str]
    base_cents: Mapping[str, Mapping[str, int]]  # usage type -> size class -> fee for the first month
    default_usage: str
    size_classes: tuple[SizeClass, ...]
    per_month_percent: tuple[int, ...]  # started months 1..12
    per_started_year_percent: int
    missing_attribution_surcharge_percent: int
    sha256: str  # of the card's canonical JSON, overrides included
    overrides: tuple[str, ...] = ()  # dotted keys a customer's terms changed
    data: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "sha256": self.sha256, "overrides": list(self.overrides)}


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = yaml.safe_load(resources.files("copyhunt").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def rate_card_from_mapping(data: Any, overrides: Iterable[str] = ()) -> RateCard:
    """Validate a parsed rate card (schema first, then the cross-field rules) and freeze it."""
    if not isinstance(data, dict):
        raise RateCardError("rate card must be a mapping")
    errors = sorted(_validator().iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        shown = "; ".join(f"{'.'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}" for e in errors[:5])
        raise RateCardError(f"rate card does not match its schema ({len(errors)} problem(s)): {shown}")
    _money_is_integer(data)
    usage_types = data["usage_types"]
    if data["default_usage"] not in usage_types:
        raise RateCardError(f"rate card default_usage {data['default_usage']!r} is not one of its usage types {sorted(usage_types)}")
    sizes = tuple(SizeClass(s["name"], s["max_px"]) for s in data["size_classes"])
    names = [s.name for s in sizes]
    if len(set(names)) != len(names):
        raise RateCardError(f"rate card size class names repeat: {names}")
    bounds = [s.max_px for s in sizes]
    if None in bounds[:-1]:
        raise RateCardError("rate card: only the last size class may be open-ended (max_px: null)")
    closed = [b for b in bounds if b is not None]
    if closed != sorted(set(closed)):
        raise RateCardError(f"rate card size classes must be in ascending order of max_px, got {bounds}")
    for usage, spec in usage_types.items():
        if set(spec["base_cents"]) != set(names):
            raise RateCardError(f"rate card usage {usage!r} must price exactly the size classes {names}, "
                                f"got {sorted(spec['base_cents'])}")
    months = data["duration"]["per_month_percent"]
    if any(b < a for a, b in zip(months, months[1:])):
        raise RateCardError(f"rate card duration per_month_percent must never fall, got {months}")
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return RateCard(
        currency=data["currency"], version=data["version"],
        usage_labels={u: spec["label"] for u, spec in usage_types.items()},
        base_cents={u: dict(spec["base_cents"]) for u, spec in usage_types.items()},
        default_usage=data["default_usage"], size_classes=sizes, per_month_percent=tuple(months),
        per_started_year_percent=data["duration"]["per_started_year_percent"],
        missing_attribution_surcharge_percent=data["missing_attribution_surcharge_percent"],
        sha256=hashlib.sha256(canonical.encode()).hexdigest(), overrides=tuple(sorted(overrides)), data=copy.deepcopy(data),
    )


def _money_is_integer(data: dict) -> None:
    # JSON Schema's "integer" admits 100.0; money is never a float, not even a whole one.
    for usage, spec in data["usage_types"].items():
        for size, cents in spec["base_cents"].items():
            if type(cents) is not int:
                raise RateCardError(f"rate card usage_types.{usage}.base_cents.{size} must be integer cents, got {cents!r}")
    for key, value in (("duration.per_started_year_percent", data["duration"]["per_started_year_percent"]),
                       ("missing_attribution_surcharge_percent", data["missing_attribution_surcharge_percent"]),
                       *((f"duration.per_month_percent[{i}]", v) for i, v in enumerate(data["duration"]["per_month_percent"]))):
        if type(value) is not int:
            raise RateCardError(f"rate card {key} must be an integer percent, got {value!r}")


def load_rate_card(path: Path | None = None) -> RateCard:
    """The packaged rate card, or the one at ``path``; RateCardError says what is wrong with it."""
    try:
        text = Path(path).read_text(encoding="utf-8") if path else resources.files("copyhunt").joinpath("ratecard.yaml").read_text(encoding="utf-8")
    except OSError as exc:
        raise RateCardError(f"cannot read rate card {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RateCardError(f"rate card is not valid YAML: {exc}") from None
    return rate_card_from_mapping(data)


def _merge(base: Any, overrides: Any, prefix: str, changed: list[str]) -> Any:
    """Deep merge: mappings merge key by key, anything else (lists included) replaces."""
    if isinstance(base, dict) and isinstance(overrides, dict):
        out = dict(base)
        for key, value in overrides.items():
            out[key] = _merge(base.get(key), value, f"{prefix}{key}.", changed)
        return out
    changed.append(prefix.rstrip("."))
    return copy.deepcopy(overrides)


def with_overrides(card: RateCard, overrides: Mapping[str, Any] | None, owner: str = "customer") -> RateCard:
    """The card with a customer's contract terms merged in (validated like the card itself)."""
    if not overrides:
        return card
    if not isinstance(overrides, Mapping):
        raise RateCardError(f"rate card overrides of {owner} must be a table, got {type(overrides).__name__}")
    changed: list[str] = []
    merged = _merge(dict(card.data), dict(overrides), "", changed)
    try:
        return rate_card_from_mapping(merged, overrides=changed)
    except RateCardError as exc:
        raise RateCardError(f"rate card overrides of {owner}: {exc}") from None


# ---- the factors ----------------------------------------------------------------------------------
def size_class(card: RateCard, longest_px: int | None) -> tuple[str, str | None]:
    """(size class, note). An unknown size takes the smallest class, so the claim is never overstated."""
    if longest_px is None or longest_px <= 0:
        return card.size_classes[0].name, "display size unknown: priced as the smallest class"
    for sc in card.size_classes:
        if sc.max_px is None or longest_px <= sc.max_px:
            return sc.name, None
    return card.size_classes[-1].name, None


def started_months(since: dt.date, until: dt.date) -> int:
    """Calendar months of use begun between ``since`` and ``until`` (both included), at least one:
    a use from 21 Oct is in its 2nd month on 21 Nov."""
    if until <= since:
        return 1
    full = (until.year - since.year) * 12 + (until.month - since.month) - (1 if until.day < since.day else 0)
    return full + 1


def duration_percent(card: RateCard, months: int) -> tuple[int, str]:
    """Percent of the one-month fee for ``months`` started months: per month up to a year, then per
    started year."""
    months = max(1, months)
    if months <= 12:
        return card.per_month_percent[months - 1], f"month {months} of the first year"
    extra_years = math.ceil(months / 12) - 1
    return card.per_month_percent[11] + extra_years * card.per_started_year_percent, f"first year + {extra_years} started year(s)"


def percent_of(cents: int, percent: int) -> int:
    """``percent`` % of ``cents``, rounded half-up to a whole cent."""
    return int((Decimal(cents) * Decimal(percent) / Decimal(100)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def money(cents: int) -> str:
    return str((Decimal(cents) / Decimal(100)).quantize(Decimal("0.01")))


@dataclass(frozen=True)
class Quote:
    total_cents: int
    breakdown: dict[str, Any]


def quote(card: RateCard, usage: str, longest_px: int | None, since: dt.date, until: dt.date, attributed: bool,
          *, usage_source: str = "", size_source: str = "", since_source: str = "", attribution_evidence: str = "") -> Quote:
    """The post-licence fee of one unlicensed use, and the breakdown that explains each factor."""
    # The base fee: usage type x display size class, each with what decided it.
    usage_note = None
    if usage not in card.base_cents:
        usage_note = f"unknown usage type {usage!r}: priced as {card.default_usage}"
        usage = card.default_usage
    size, size_note = size_class(card, longest_px)
    base = card.base_cents[usage][size]
    items: list[dict[str, Any]] = [{
        "factor": "base", "usage": usage, "usage_label": card.usage_labels[usage], "usage_why": usage_source or None,
        "usage_note": usage_note, "size_class": size, "longest_side_px": longest_px, "size_why": size_source or None,
        "size_note": size_note, "cents": base,
    }]

    months = started_months(since, until)
    percent, tier = duration_percent(card, months)
    amount = percent_of(base, percent)
    items.append({"factor": "duration", "since": since.isoformat(), "since_source": since_source or None, "until": until.isoformat(),
                  "months": months, "tier": tier, "percent": percent, "cents": amount})

    if attributed:
        items.append({"factor": "attribution", "credited": True, "evidence": attribution_evidence or None, "percent": 0, "cents": 0})
    else:
        surcharge = percent_of(amount, card.missing_attribution_surcharge_percent)
        items.append({"factor": "missing_attribution", "credited": False, "evidence": attribution_evidence or None,
                      "percent": card.missing_attribution_surcharge_percent, "cents": surcharge})
        amount += surcharge
    items = [{k: v for k, v in item.items() if v is not None} for item in items]
    return Quote(amount, {"status": "priced", "currency": card.currency, "rate_card": card.describe(), "items": items,
                          "total_cents": amount, "total": money(amount)})


# ---- licences -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LicenceDecision:
    """Whether a licence covers a use; the licence and how it matched; and the licences of the same
    licensee that did not cover it, with the reason (an expired licence, another image)."""

    licence: Any | None
    matched_by: str | None = None  # "domain" or "operator"
    rejected: tuple[dict, ...] = ()

    @property
    def licensed(self) -> bool:
        return self.licence is not None

    def as_dict(self, usage_since: dt.date | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"licensed": self.licensed}
        if self.licence is not None:
            lic = self.licence
            ids = list(lic.image_ids)
            out["licence"] = {
                "id": lic.id, "matched_by": self.matched_by, "licensee_domain": lic.licensee_domain or None,
                "licensee_operator": getattr(lic, "licensee_operator", None),
                "images": "all" if ALL_IMAGES in ids else ids,
                "valid_from": lic.valid_from.isoformat(), "valid_to": lic.valid_to.isoformat(),
            }
            if usage_since is not None and usage_since < lic.valid_from:
                # Licensed today, but the use began before the licence: not claimed here, shown so
                # the customer can decide about the earlier period.
                out["uncovered_before_licence"] = {"since": usage_since.isoformat(), "until": (lic.valid_from - dt.timedelta(days=1)).isoformat(),
                                                   "days": (lic.valid_from - usage_since).days}
        if self.rejected:
            out["rejected"] = list(self.rejected)
        return out


def _domain_covered(licensee_domain: str | None, domain: str) -> bool:
    d = (licensee_domain or "").lower().strip().rstrip(".")
    domain = (domain or "").lower().rstrip(".")
    return bool(d) and (domain == d or domain.endswith("." + d))


def check_licences(licences: Iterable[Any], image_id: str, domain: str, operator: str | None, day: dt.date) -> LicenceDecision:
    """The first licence (by id) whose licensee is this page's domain (or a parent domain of it) or
    its operator, that covers this image (or all images) and is valid on ``day``."""
    rejected = []
    for lic in sorted(licences, key=lambda l: l.id):
        by_domain = _domain_covered(lic.licensee_domain, domain)
        by_operator = same_party(getattr(lic, "licensee_operator", None), operator)
        if not (by_domain or by_operator):
            continue
        if not (ALL_IMAGES in lic.image_ids or image_id in lic.image_ids):
            rejected.append({"id": lic.id, "why": f"does not cover image {image_id}"})
        elif day < lic.valid_from:
            rejected.append({"id": lic.id, "why": f"not valid before {lic.valid_from.isoformat()}"})
        elif day > lic.valid_to:
            rejected.append({"id": lic.id, "why": f"expired on {lic.valid_to.isoformat()}"})
        else:
            return LicenceDecision(lic, "domain" if by_domain else "operator", tuple(rejected))
    return LicenceDecision(None, None, tuple(rejected))


def matching_licence(customer: Any, image_id: str, domain: str, operator: str | None, day: dt.date) -> Any | None:
    """The customer's licence covering this use, or None."""
    return check_licences(customer.licences, image_id, domain, operator, day).licence


# ---- the priced table -----------------------------------------------------------------------------
PRICED_EXTRA = ["licensed", "licence_id", "licence_match", "usage_type", "size_class", "license_value_cents", "currency",
                "value_breakdown", "price_status", "run_date"]


def _value(row: Mapping[str, Any], key: str) -> Any:
    value = row.get(key)
    if value is None or (not isinstance(value, (str, dict, list)) and pd.isna(value)):
        return None
    return value


def _date(value: Any, fallback: dt.date) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value)[:10]) if value is not None else fallback
    except ValueError:
        return fallback


def price_row(row: Mapping[str, Any], customer: Any | None, card: RateCard, run_date: dt.date) -> dict[str, Any]:
    """Licence decision and value of one enriched hit."""
    since = _date(_value(row, "usage_since") or _value(row, "published_at"), run_date)
    until = _date(_value(row, "last_seen"), run_date)
    decision = check_licences(customer.licences if customer else (), row["image_id"], _value(row, "domain") or "",
                              _value(row, "operator_name"), run_date)
    licence_json = json.dumps(decision.as_dict(since), sort_keys=True)
    if decision.licensed:
        breakdown = {"status": "licensed", "currency": card.currency, "rate_card": card.describe(), "licence": decision.as_dict(since),
                     "items": [], "total_cents": 0, "total": money(0)}
        return {"licensed": True, "licence_id": decision.licence.id, "licence_match": licence_json, "usage_type": None, "size_class": None,
                "license_value_cents": 0, "currency": card.currency, "value_breakdown": json.dumps(breakdown, sort_keys=True, ensure_ascii=False),
                "price_status": "licensed"}
    width, height = _value(row, "display_width"), _value(row, "display_height")
    if width is None and height is None:
        width, height = _value(row, "image_width"), _value(row, "image_height")
        size_source = "image-file" + (f" ({row.get('display_source')})" if _value(row, "display_source") else "")
    else:
        size_source = _value(row, "display_source") or "img-attributes"
    longest = max(int(width or 0), int(height or 0)) or None
    q = quote(card, _value(row, "page_kind") or card.default_usage, longest, since, until, bool(_value(row, "attribution_found")),
              usage_source=_value(row, "page_kind_source") or "", size_source=size_source,
              since_source=_value(row, "usage_since_source") or ("published" if _value(row, "published_at") else "run-date"),
              attribution_evidence=_value(row, "attribution_evidence") or "")
    breakdown = dict(q.breakdown, licence=decision.as_dict(since))
    base_item = q.breakdown["items"][0]
    return {"licensed": False, "licence_id": None, "licence_match": licence_json, "usage_type": base_item["usage"],
            "size_class": base_item["size_class"], "license_value_cents": q.total_cents, "currency": card.currency,
            "value_breakdown": json.dumps(breakdown, sort_keys=True, ensure_ascii=False), "price_status": "priced"}


def price_hits(enriched: pd.DataFrame, customers: list, card: RateCard, run_date: dt.date) -> pd.DataFrame:
    """The enriched table plus licence and value columns (PRICED_EXTRA); pandas in, pandas out.

    Each customer's rate-card overrides are applied to their hits. A row that cannot be priced
    (a customer's overrides are invalid) gets value 0 and ``price_status`` ``error:...`` and does
    not stop the others; callers count those.
    """
    by_id = {c.id: c for c in customers}
    cards: dict[str, RateCard | RateCardError] = {}
    rows = []
    for row in enriched.to_dict("records"):
        customer = by_id.get(row["customer_id"])
        cid = row["customer_id"]
        if cid not in cards:
            try:
                cards[cid] = with_overrides(card, getattr(customer, "rate_card", None), f"customer {cid!r}")
            except RateCardError as exc:
                cards[cid] = exc
        own = cards[cid]
        try:
            if isinstance(own, RateCardError):
                raise own
            rows.append(price_row(row, customer, own, run_date))
        except (RateCardError, ValueError, TypeError, KeyError) as exc:
            reason = f"{type(exc).__name__}: {exc}"[:300]
            rows.append({"licensed": False, "licence_id": None, "licence_match": "{}", "usage_type": None, "size_class": None,
                         "license_value_cents": 0, "currency": card.currency,
                         "value_breakdown": json.dumps({"status": "error", "error": reason, "total_cents": 0}, sort_keys=True),
                         "price_status": "error:" + reason})
    out = enriched.reset_index(drop=True).copy()
    extra = pd.DataFrame(rows, columns=PRICED_EXTRA[:-1])
    for col in PRICED_EXTRA[:-1]:
        out[col] = extra[col] if len(extra) else pd.Series(dtype="object")
    out["license_value_cents"] = out["license_value_cents"].astype("int64")
    out["licensed"] = out["licensed"].astype(bool)
    out["run_date"] = run_date.isoformat()
    return out
