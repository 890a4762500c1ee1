"""A small, real hits database for the inbox tests: two customers, registered photos from
assets/images in a blob store, found copies made from them (cropped, scaled, pasted on a page-like
canvas, so the matched region is known), loaded through ``load_hits`` over two run dates.

Shared by tests/test_inbox.py (HTTP), tests/test_inbox_browser.py (Chromium) and
tests/test_inbox_airflow_plugin.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image
from sqlalchemy import Engine

from conftest import IMAGES
from copyhunt.blobs import LocalBlobStore
from copyhunt.hitsdb.store import PRICED_COLUMNS, load_hits, sync_customers
from copyhunt.hitsdb.tokens import issue_token

D1, D2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
HOSTILE_TITLE = "<script>alert('pwned')</script><img src=x onerror=alert(2)> Cheap prints"
JS_URL = "javascript:alert(document.cookie)//evil.test/"
# An imprint address as a hostile page could write it: markup, control characters, and far too long.
HOSTILE_ADDRESS = "<script>alert('addr')</script>\x00 Harbour Road 5,\nDublin " + "<b>x</b>" * 2000
PUBLISHED = dt.date(2026, 2, 20)
CREDITED_PAGE = "alpine-blog.test"  # the page that credits the photographer
GONE_PAGE = "evil.test"  # answered 404 in the newest crawl


@dataclass(frozen=True)
class Planted:
    """A found copy: which registered image, where it was pasted, and on which page."""

    customer_id: str
    image_id: str
    page: str  # host
    crop: tuple[float, float, float, float]  # relative box of the registered image that was copied
    paste: tuple[float, float, float, float]  # relative box of the found image where it sits
    value_cents: int
    score: float
    run_date: dt.date
    title: str | None = None
    page_url: str | None = None
    licensed: bool = False


REGISTERED = {
    ("alpine-lens", "alp-bahrain-fort"): ("Bahrain Fort", IMAGES / "wikimedia-potd" / "image5.jpg"),
    ("alpine-lens", "alp-st-basil"): ("Saint Basil's Cathedral", IMAGES / "wikimedia-potd" / "image9.jpg"),
    ("jana-novak", "jn-pasha-butterfly"): ("Two-tailed pasha", IMAGES / "wikimedia-potd" / "image2.jpg"),
}

PLANTED = [
    Planted("alpine-lens", "alp-bahrain-fort", "urban-eats.test", (0.1, 0.15, 0.9, 0.85), (0.3, 0.2, 0.95, 0.8), 93_000, 0.97, D1,
            title="Best rooftop brunch in town"),
    Planted("alpine-lens", "alp-st-basil", "bazaar-market.test", (0.0, 0.0, 1.0, 1.0), (0.05, 0.1, 0.55, 0.9), 45_000, 0.88, D2,
            title=HOSTILE_TITLE),
    Planted("alpine-lens", "alp-bahrain-fort", "alpine-blog.test", (0.25, 0.25, 0.75, 0.75), (0.0, 0.0, 1.0, 1.0), 16_500, 0.71, D2,
            title="Ten forts worth the trip"),
    Planted("alpine-lens", "alp-st-basil", "daily-courier.test", (0.0, 0.0, 1.0, 1.0), (0.1, 0.1, 0.9, 0.9), 0, 0.93, D2,
            title="Moscow in winter", licensed=True),
    Planted("alpine-lens", "alp-bahrain-fort", "evil.test", (0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 1.0), 1_000, 0.62, D2,
            title="A page with a script URL", page_url=JS_URL),
    Planted("jana-novak", "jn-pasha-butterfly", "nordic-prints.test", (0.2, 0.1, 0.8, 0.9), (0.25, 0.05, 0.75, 0.95), 31_000, 0.95, D2,
            title="Butterfly poster, 50x70"),
]


@dataclass
class Seeded:
    tokens: dict[str, str]  # customer id -> token
    hit_ids: dict[str, int]  # page host -> hit id
    found_sha: dict[str, str]  # page host -> sha256 of the found image blob
    registered_sha: dict[tuple[str, str], str]


def _jpeg(im: Image.Image, quality: int = 88) -> bytes:
    out = io.BytesIO()
    im.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def found_copy(source: Path, crop: tuple[float, ...], paste: tuple[float, ...], size: tuple[int, int] = (900, 600)) -> bytes:
    """The registered photo cropped to ``crop`` and pasted into ``paste`` of a page-like canvas."""
    with Image.open(source) as im:
        im = im.convert("RGB")
        w, h = im.size
        piece = im.crop((round(crop[0] * w), round(crop[1] * h), round(crop[2] * w), round(crop[3] * h)))
    canvas = Image.new("RGB", size, (236, 232, 224))
    cw, ch = size
    box = (round(paste[0] * cw), round(paste[1] * ch), round(paste[2] * cw), round(paste[3] * ch))
    canvas.paste(piece.resize((box[2] - box[0], box[3] - box[1])), box[:2])
    return _jpeg(canvas)


def customers_with_images(registered_sha: dict[tuple[str, str], str]) -> list[dict[str, Any]]:
    names = {"alpine-lens": ("Alpine Lens Agency", "rights@alpine-lens.example"),
             "jana-novak": ("Jana Novak Photography", "studio@jana-novak.example")}
    out = []
    for cid, (name, email) in names.items():
        images = [{"id": iid, "title": REGISTERED[(c, iid)][0], "sha256": registered_sha[(c, iid)]}
                  for (c, iid) in REGISTERED if c == cid]
        out.append({"id": cid, "name": name, "email": email, "images": images, "licences": []})
    return out


def priced_frame(rows: list[Planted], found_sha: dict[str, str], run_date: dt.date) -> pd.DataFrame:
    records = []
    for p in rows:
        # The shape copyhunt.pricing writes: base fee, x duration (running amount), + surcharge.
        base = p.value_cents // 2
        rate_card = {"overrides": [], "sha256": "0" * 64, "version": "2026-2"}
        if p.licensed:
            breakdown = {"currency": "EUR", "items": [], "rate_card": rate_card, "status": "licensed", "total": "0.00", "total_cents": 0,
                         "licence": {"licensed": True, "licence": {"id": "lic-alp-courier-2026", "images": "all", "licensee_domain": p.page,
                                                                   "licensee_operator": None, "matched_by": "domain",
                                                                   "valid_from": "2026-01-01", "valid_to": "2027-12-31"}}}
        else:
            breakdown = {"currency": "EUR", "licence": {"licensed": False}, "rate_card": rate_card, "status": "priced",
                         "total": f"{p.value_cents / 100:.2f}", "total_cents": p.value_cents,
                         "items": [{"factor": "base", "cents": base, "usage": "commercial", "usage_label": "Commercial website",
                                    "usage_why": "og:type", "size_class": "large", "longest_side_px": 900, "size_why": "image-file"},
                                   {"factor": "duration", "cents": base, "months": 1, "percent": 100, "tier": "month 1 of the first year",
                                    "since": "2026-02-20", "until": run_date.isoformat(), "since_source": "published:json-ld"},
                                   {"factor": "missing_attribution", "cents": p.value_cents - base, "percent": 100, "credited": False,
                                    "evidence": "not-found:Alpine Lens Agency"}]}
        records.append({
            "run_date": run_date.isoformat(), "customer_id": p.customer_id, "image_id": p.image_id,
            "page_url": p.page_url or f"https://{p.page}/story", "image_url": f"https://cdn.{p.page}/img/photo.jpg",
            "image_sha256": found_sha[p.page], "score": p.score,
            "region": json.dumps({"query": list(p.paste), "reference": list(p.crop), "mirrored": False}),
            "page_title": p.title, "domain": p.page, "registrable_domain": p.page,
            "operator_name": f"{p.page.split('.')[0].title()} Media GmbH", "operator_source": f"imprint@https://{p.page}/imprint",
            "published_at": "2026-02-20", "published_source": "json-ld", "licensed": p.licensed,
            "licence_id": "lic-alp-courier-2026" if p.licensed else None, "license_value_cents": p.value_cents,
            "currency": "EUR", "value_breakdown": json.dumps(breakdown, sort_keys=True),
            "html_sha256": hashlib.sha256(f"<html>{p.page}</html>".encode()).hexdigest(),
            "fetched_at": pd.Timestamp(f"{run_date.isoformat()}T09:30:00Z"),
            # The rest of the enrichment (copyhunt.enrich) and the licence decision (copyhunt.pricing).
            "operator_address": HOSTILE_ADDRESS if p.title == HOSTILE_TITLE else f"Hauptstraße {len(p.page)}, 10115 Berlin",
            "operator_email": f"info@{p.page}", "operator_phone": f"+49 30 555 {len(p.page):04d}",
            "operator_role": "marketplace-seller" if p.page.startswith("bazaar") else "site-operator",
            "usage_since": PUBLISHED.isoformat(), "usage_since_source": "published:json-ld",
            "usage_days": (run_date - PUBLISHED).days + 1,
            "page_status": 404 if p.page == GONE_PAGE else 200, "page_online": p.page != GONE_PAGE,
            "attribution_found": p.page == CREDITED_PAGE,
            "attribution_evidence": "Foto: Alpine Lens Agency" if p.page == CREDITED_PAGE else "not-found:Alpine Lens Agency",
            "licence_match": json.dumps(breakdown["licence"], sort_keys=True),
        })
    return pd.DataFrame(records, columns=list(PRICED_COLUMNS))


def seed(engine: Engine, blob_root: Path) -> Seeded:
    """Fill an empty (migrated) hits database and blob store; returns tokens and hit ids."""
    blobs = LocalBlobStore(blob_root)
    registered_sha = {key: blobs.put(path.read_bytes()) for key, (_title, path) in REGISTERED.items()}
    sync_customers(engine, customers_with_images(registered_sha))
    found_sha = {p.page: blobs.put(found_copy(REGISTERED[(p.customer_id, p.image_id)][1], p.crop, p.paste)) for p in PLANTED}
    for day in (D1, D2):
        seen = [p for p in PLANTED if p.run_date <= day]
        load_hits(engine, priced_frame(seen, found_sha, day), day)
    from copyhunt.hitsdb.store import hits_for_customer

    hit_ids = {h["domain"]: h["id"] for cid in ("alpine-lens", "jana-novak") for h in hits_for_customer(engine, cid)}
    tokens = {cid: issue_token(engine, cid, "tests") for cid in ("alpine-lens", "jana-novak")}
    return Seeded(tokens=tokens, hit_ids=hit_ids, found_sha=found_sha, registered_sha=registered_sha)
