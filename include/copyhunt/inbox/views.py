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
    "licence_check_rows",
    "page_state",
    "parse_region",
    "query_string",
    "shorten",
]

STATUS_LABELS = {"new": "new", "claimed": "claimed", "licensed": "licensed", "not_mine": "not mine",
                 "authorised": "approved use"}
ACTION_LABELS = {"claim": "Claim", "licensed": "Licensed", "not_mine": "Not mine", "approve": "Approve this use",
                 "reopen": "Reopen"}
DONE_MESSAGES = {
    "claim": "Marked as claimed.",
    "licensed": "Marked as licensed.",
    "not_mine": "Marked as not yours.",
    "approve": "Approved: this use is not an infringement.",
    "approve_site": "Approved, and its domain is now one of your own sites.",
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


def _compact(value: Any, limit: int = 200) -> str:
    """A value for display: scalars as text, structures as compact JSON (never Python reprs)."""
    if isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)
    else:
        text = "—" if value is None else str(value)
    return shorten(text, limit)


def _why(item: Mapping[str, Any], key: str) -> str:
    return f" ({_compact(item[key], 120)})" if item.get(key) else ""


def _item_row(item: Mapping[str, Any], currency: str) -> tuple[str, str, str]:
    factor = str(item.get("factor", ""))
    cents = item.get("cents")
    amount = format_money(int(cents), currency) if isinstance(cents, int) and not isinstance(cents, bool) else ""
    if factor == "base":
        usage = _compact(item.get("usage_label") or item.get("usage") or "use") + _why(item, "usage_why")
        size = _compact(item.get("size_class") or "")
        if item.get("longest_side_px"):
            size += f", {_compact(item['longest_side_px'])} px longest side"
        return _FACTOR_LABELS[factor], f"{usage}; {size}{_why(item, 'size_why')}", amount
    if factor == "duration":
        tier = _compact(item.get("tier") or f"{item.get('months')} month(s)")
        span = f", {item['since']} to {item['until']}" if item.get("since") and item.get("until") else ""
        return _FACTOR_LABELS[factor], f"× {_compact(item.get('percent'))}%: {tier}{span}{_why(item, 'since_source')}", \
            f"= {amount}" if amount else ""
    if factor == "missing_attribution":
        return _FACTOR_LABELS[factor], f"+ {_compact(item.get('percent'))}%{_why(item, 'evidence')}", f"+ {amount}" if amount else ""
    details = ", ".join(f"{k.replace('_', ' ')}: {_compact(v, 80)}" for k, v in sorted(item.items()) if k not in ("factor", "cents"))
    return factor.replace("_", " "), details, amount


def _licence_notes(lic: Any) -> list[tuple[str, str]]:
    if not isinstance(lic, Mapping):
        return [("licence", _compact(lic))]
    notes: list[tuple[str, str]] = []
    inner = lic.get("licence")
    if isinstance(inner, Mapping):
        who = inner.get("licensee_domain") or inner.get("licensee_operator") or "?"
        notes.append(("licence", f"{_compact(inner.get('id'))}: {_compact(who)}, matched by {_compact(inner.get('matched_by'))}, "
                                 f"valid {_compact(inner.get('valid_from'))} to {_compact(inner.get('valid_to'))}"))
    elif lic.get("licensed") is False:
        notes.append(("licence", "none covers this use"))
    for rejected in lic.get("rejected") or []:
        if isinstance(rejected, Mapping):
            notes.append(("not covered by", f"{_compact(rejected.get('id'))}: {_compact(rejected.get('why'))}"))
    gap = lic.get("uncovered_before_licence")
    if isinstance(gap, Mapping):
        notes.append(("unlicensed before", f"{_compact(gap.get('days'))} days, {_compact(gap.get('since'))} to {_compact(gap.get('until'))}"))
    return notes


def licence_check_rows(text: str | None) -> list[tuple[str, str]]:
    """The hits.licence_match JSON (copyhunt.pricing's licence decision) as (key, value) rows:
    the licence that covers the use, the ones that did not and why. Empty when not recorded."""
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return [("licence check", "unreadable")]
    return _licence_notes(data) if data else []


def page_state(status: int | None, up: bool | None) -> str:
    """The page's HTTP status in the newest crawl, in words: "200 (up)", "404 (down)", "—"."""
    if status is None:
        return "—" if up is None else ("up" if up else "down")
    return f"{status} ({'up' if up else 'down'})" if up is not None else str(status)


def breakdown_rows(text: str | None, currency: str, licence_shown: bool = False) -> dict[str, Any]:
    """The value_breakdown JSON as rows for a table: ``{"items": [(factor, details, amount)],
    "notes": [(key, value)], "total": str|None}``. Unknown shapes degrade to key/value notes.
    ``licence_shown``: the licence decision is shown elsewhere on the page (licence_check_rows),
    so it is left out of the notes."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {"items": [], "notes": [("breakdown", "unreadable")], "total": None}
    if not isinstance(data, dict):
        return {"items": [], "notes": [("breakdown", _compact(data))], "total": None}
    currency = str(data.get("currency") or currency)
    items = [_item_row(item, currency) for item in data.get("items") or [] if isinstance(item, Mapping)]
    notes: list[tuple[str, str]] = []
    for key, value in sorted(data.items()):
        if key in ("items", "total_cents", "total", "currency"):
            continue  # shown as the table and its total
        if key == "licence":
            if not licence_shown:
                notes.extend(_licence_notes(value))
        elif key == "rate_card" and isinstance(value, Mapping):
            overrides = value.get("overrides") or []
            notes.append(("rate card", f"version {_compact(value.get('version'))}"
                                       + (f", customer overrides: {_compact(', '.join(map(str, overrides)))}" if overrides else "")))
        else:
            notes.append((key.replace("_", " "), _compact(value)))
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
