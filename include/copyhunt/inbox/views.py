"""Turning hit rows into what the inbox templates show: regions, value breakdowns, labels.

Pure functions over the rows ``copyhunt.hitsdb.workflow`` returns. Nothing here marks text as
safe HTML: the templates autoescape every value, and links go through ``safe_href``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlencode

from copyhunt.hitsdb.digest import format_money

__all__ = [
    "Box",
    "STATUS_LABELS",
    "breakdown_rows",
    "format_when",
    "parse_region",
    "query_string",
    "shorten",
]

STATUS_LABELS = {"new": "new", "claimed": "claimed", "licensed": "licensed", "not_mine": "not mine"}
ACTION_LABELS = {"claim": "Claim", "licensed": "Licensed", "not_mine": "Not mine", "reopen": "Reopen"}
DONE_MESSAGES = {
    "claim": "Marked as claimed.",
    "licensed": "Marked as licensed.",
    "not_mine": "Marked as not yours.",
    "reopen": "Reopened.",
    "unchanged": "Nothing changed: the hit already had that status.",
}


@dataclass(frozen=True)
class Box:
    """A matched region in relative coordinates, scaled to the 0..1000 SVG viewBox for drawing."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def svg(self) -> dict[str, str]:
        return {
            "x": f"{self.x0 * 1000:.1f}",
            "y": f"{self.y0 * 1000:.1f}",
            "width": f"{(self.x1 - self.x0) * 1000:.1f}",
            "height": f"{(self.y1 - self.y0) * 1000:.1f}",
        }

    @property
    def area_percent(self) -> int:
        return round((self.x1 - self.x0) * (self.y1 - self.y0) * 100)


def _box(value: Any) -> Box | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return None
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in (x0, y0, x1, y1))
    if x1 <= x0 or y1 <= y0:
        return None
    return Box(x0, y0, x1, y1)


def parse_region(text: str | None) -> dict[str, Any]:
    """``{"query": Box|None, "reference": Box|None, "mirrored": bool}`` from the hits.region JSON.

    "query" is the found image, "reference" the customer's registered image. Anything malformed
    gives None (no outline) rather than an error page.
    """
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    return {
        "query": _box(data.get("query")),
        "reference": _box(data.get("reference")),
        "mirrored": data.get("mirrored") is True,
    }


# How copyhunt.pricing itemises a price: a base fee, the duration factor applied to it (its cents are
# the running amount), and surcharges added on top. Other factors are shown as they come.
_FACTOR_LABELS = {"base": "base fee", "duration": "duration", "missing_attribution": "no credit to the author"}


def _item_row(item: Mapping[str, Any], currency: str) -> tuple[str, str, str]:
    factor = str(item.get("factor", ""))
    cents = item.get("cents")
    amount = format_money(int(cents), currency) if isinstance(cents, int) and not isinstance(cents, bool) else ""
    if factor == "base":
        details = ", ".join(str(item[k]) for k in ("usage", "size_class") if item.get(k))
        return _FACTOR_LABELS[factor], details, amount
    if factor == "duration":
        details = f"× {item.get('percent')}% for {item.get('tier') or str(item.get('months')) + ' month(s)'}"
        return _FACTOR_LABELS[factor], details, f"= {amount}" if amount else ""
    if factor == "missing_attribution":
        return _FACTOR_LABELS[factor], f"+ {item.get('percent')}%", f"+ {amount}" if amount else ""
    details = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted(item.items()) if k not in ("factor", "cents"))
    return factor.replace("_", " "), details, amount


def breakdown_rows(text: str | None, currency: str) -> dict[str, Any]:
    """The value_breakdown JSON as rows for a table: ``{"items": [(factor, details, amount)],
    "notes": [(key, value)], "total": str|None}``. Unknown shapes degrade to key/value notes."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {"items": [], "notes": [("breakdown", "unreadable")], "total": None}
    if not isinstance(data, dict):
        return {"items": [], "notes": [("breakdown", str(data)[:200])], "total": None}
    currency = str(data.get("currency") or currency)
    items = [_item_row(item, currency) for item in data.get("items") or [] if isinstance(item, Mapping)]
    notes = [
        (k.replace("_", " "), str(v)[:200])
        for k, v in sorted(data.items())
        if k not in ("items", "total_cents", "currency")
    ]
    total = data.get("total_cents")
    return {
        "items": items,
        "notes": notes,
        "total": format_money(int(total), currency) if isinstance(total, int) else None,
    }


def shorten(text: Any, limit: int = 120) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_when(value: dt.datetime | dt.date | None) -> str:
    """Dates as ISO dates; datetimes in UTC (SQLite hands them back without a zone, stored as UTC)."""
    if value is None:
        return "—"
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return aware.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return value.isoformat()


def query_string(params: Mapping[str, Any], **changes: Any) -> str:
    """``?a=1&b=2`` of the non-empty params with ``changes`` applied (for sort and page links)."""
    merged = {**params, **changes}
    kept = {k: v for k, v in merged.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else ""
