"""Enrichment: who runs the page where a match was found, and since when the image is there.

Pure functions over stored HTML and crawl rows; ``enrich_matches`` joins them into one row per
(customer image, page, image URL). Every fact records its source, and an unknown is explicit,
with a reason, never a guess. HTML from the web is untrusted: it is size-bounded before parsing.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Iterable
from urllib.parse import urlsplit

import pandas as pd

MAX_HTML_BYTES = 2_000_000  # larger pages are truncated before parsing: bounds time and memory
MAX_TEXT = 300  # operator names, titles: bounded before they reach the database or an e-mail
OPERATOR_PAGE = re.compile(r"/(impressum|imprint|about|about-us|ueber-uns|uber-uns|contact|kontakt|legal|legal-notice)(/|\.html?)?$", re.I)
OPERATOR_LINE = re.compile(
    r"(?:operator|operated by|betreiber|anbieter|angaben gem(?:ä|ae)(?:ß|ss?) ?§ ?5 (?:tmg|ddg)|company|publisher|herausgeber)\s*[:\-]?\s*(?P<name>[^\n<]{3,120})",
    re.I,
)

# A line that names a company by its legal form (German and English forms).
COMPANY_LINE = re.compile(r"^[^\n]{2,100}?\b(?:GmbH|UG \(haftungsbeschränkt\)|UG|AG|KG|e\.K\.|GbR|Ltd\.?|LLC|Inc\.?|plc|S\.A\.|B\.V\.|AB|Oy|ApS)(?=$|[\s,])[^\n]{0,40}$", re.M)

_tld = None


def registrable_domain(host: str) -> str:
    """example.co.uk for shop.example.co.uk; uses tldextract's bundled suffix list, no network."""
    global _tld
    if _tld is None:
        import tldextract

        _tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    parts = _tld(host)
    if parts.domain and parts.suffix:
        return f"{parts.domain}.{parts.suffix}"
    # Reserved names such as .test have no public suffix: the last two labels are the site.
    labels = [p for p in host.lower().split(".") if p]
    return ".".join(labels[-2:]) if labels else ""


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def bounded(text: str | None, limit: int = MAX_TEXT) -> str | None:
    if text is None:
        return None
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text[:limit] if text else None


def _parse(html: bytes | str):
    import lxml.html

    if isinstance(html, str):
        html = html.encode("utf-8", "replace")
    html = html[:MAX_HTML_BYTES]
    try:
        return lxml.html.fromstring(html)
    except Exception:  # lxml raises on empty or binary documents
        return None


def json_ld_objects(doc) -> list[dict]:
    """Every JSON-LD object on the page, @graph flattened; malformed blocks are skipped."""
    out: list[dict] = []
    if doc is None:
        return out
    for node in doc.xpath('//script[@type="application/ld+json"]'):
        try:
            data = json.loads(node.text_content()[:200_000])
        except ValueError:
            continue
        stack = data if isinstance(data, list) else [data]
        while stack:
            item = stack.pop(0)
            if isinstance(item, dict):
                out.append(item)
                if isinstance(item.get("@graph"), list):
                    stack.extend(item["@graph"])
    return out


def _types(obj: dict) -> set[str]:
    t = obj.get("@type", [])
    return {t} if isinstance(t, str) else {x for x in t if isinstance(x, str)}


def seller_from_page(html: bytes | str) -> tuple[str | None, str | None]:
    """Marketplace seller from JSON-LD Product/Offer (offers.seller.name); (name, seller url)."""
    for obj in json_ld_objects(_parse(html)):
        if "Product" not in _types(obj):
            continue
        offers = obj.get("offers")
        for offer in offers if isinstance(offers, list) else [offers]:
            if isinstance(offer, dict) and isinstance(offer.get("seller"), dict):
                seller = offer["seller"]
                return bounded(seller.get("name")), bounded(seller.get("url"), 2000)
    return None, None


def operator_from_html(html: bytes | str) -> tuple[str | None, str | None]:
    """The operator named on an imprint/about page, or in JSON-LD / og:site_name; (name, source)."""
    doc = _parse(html)
    if doc is None:
        return None, None
    for obj in json_ld_objects(doc):
        if _types(obj) & {"Organization", "LocalBusiness", "NewsMediaOrganization", "Corporation", "Person", "Store"}:
            name = bounded(obj.get("name"))
            if name:
                return name, "json-ld:" + sorted(_types(obj))[0]
    text = page_text(doc)
    m = OPERATOR_LINE.search(text)
    if m:
        name = bounded(m.group("name").split("  ")[0].strip(" .,;"))
        if name:
            return name, "imprint-text"
    company = COMPANY_LINE.search(text)
    if company:
        return bounded(company.group(0)), "imprint-company-line"
    site = doc.xpath('//meta[@property="og:site_name"]/@content')
    if site and bounded(site[0]):
        return bounded(site[0]), "og:site_name"
    return None, None


def published_date(html: bytes | str | None, candidates: Iterable[str], last_modified: str | None, run_date: dt.date) -> tuple[str | None, str, list[str]]:
    """(ISO date or None, source or reason, every candidate seen).

    The earliest credible candidate wins: not after the run date and not before 1995.
    """
    seen: list[tuple[dt.date, str]] = []
    raw_all: list[str] = []
    for raw in candidates:
        raw_all.append(str(raw))
        d = _to_date(raw)
        if d:
            seen.append((d, "page-metadata"))
    if html:
        try:
            from htmldate import find_date

            found = find_date(_bounded_html(html), original_date=True, extensive_search=False, max_date=run_date.isoformat(), min_date="1995-01-01")
        except Exception:  # htmldate is defensive, but a hostile page must never fail a run
            found = None
        if found:
            raw_all.append(found)
            seen.append((dt.date.fromisoformat(found), "htmldate"))
    if last_modified:
        raw_all.append(last_modified)
        d = _to_date(last_modified)
        if d:
            seen.append((d, "http-last-modified"))
    credible = [(d, s) for d, s in seen if dt.date(1995, 1, 1) <= d <= run_date]
    if not credible:
        return None, "unknown:no-credible-date" if seen else "unknown:no-date-found", raw_all
    d, source = min(credible)
    return d.isoformat(), source, raw_all


def _bounded_html(html: bytes | str) -> str:
    if isinstance(html, bytes):
        html = html[:MAX_HTML_BYTES].decode("utf-8", "replace")
    return html[:MAX_HTML_BYTES]


def _to_date(raw: str) -> dt.date | None:
    from email.utils import parsedate_to_datetime

    raw = str(raw).strip()
    try:
        return dt.date.fromisoformat(raw[:10])
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(raw).date()
    except (TypeError, ValueError, IndexError):
        return None


def page_text(doc) -> str:
    """Visible text with one text node per line (block boundaries must not glue words together)."""
    if doc is None:
        return ""
    for bad in doc.xpath("//script|//style"):
        bad.drop_tree()
    lines = (t.strip() for t in doc.itertext())
    return "\n".join(t for t in lines if t)[:200_000]


def operators_by_domain(pages: pd.DataFrame, read_html) -> dict[str, tuple[str | None, str]]:
    """Operator per host from its imprint/about/contact pages (first by URL order that names one)."""
    result: dict[str, tuple[str | None, str]] = {}
    candidates = pages[pages["url"].map(lambda u: bool(OPERATOR_PAGE.search(urlsplit(u).path)))]
    for row in candidates.sort_values("url").itertuples(index=False):
        host = host_of(row.url)
        if host in result and result[host][0]:
            continue
        html = read_html(row.html_sha256)
        name, source = operator_from_html(html) if html else (None, None)
        if name:
            result[host] = (name, f"{source}@{row.url}")
    return result


ENRICHED_COLUMNS = [
    "customer_id", "image_id", "page_url", "image_url", "image_sha256", "score", "inliers", "region",
    "page_title", "domain", "registrable_domain", "operator_name", "operator_source", "published_at",
    "published_source", "date_candidates", "page_kind", "image_width", "image_height", "html_sha256", "fetched_at",
    "attribution_found",
]


def page_kind(html: bytes | str | None) -> str:
    """What kind of use this is, for pricing: product photo, editorial, or a commercial site."""
    doc = _parse(html) if html else None
    types = set().union(*(_types(o) for o in json_ld_objects(doc))) if doc is not None else set()
    if "Product" in types:
        return "product"
    if types & {"Article", "NewsArticle", "BlogPosting"}:
        return "editorial"
    if doc is not None and doc.xpath('//meta[@property="og:type"][@content="article"]'):
        return "editorial"
    return "commercial"


def enrich_matches(matches: pd.DataFrame, images: pd.DataFrame, pages: pd.DataFrame, customers: list, read_html, run_date: dt.date) -> pd.DataFrame:
    """One row per (customer image, page URL, image URL) with page, operator and date facts."""
    if matches.empty:
        return pd.DataFrame(columns=ENRICHED_COLUMNS)
    names = {c.id: c.name for c in customers}
    uses = images.dropna(subset=["blob_sha256"]).rename(columns={"blob_sha256": "image_sha256"})
    joined = matches.merge(uses[["image_sha256", "page_url", "image_url", "width", "height"]], on="image_sha256", how="inner")
    page_cols = pages.rename(columns={"url": "page_url"})
    joined = joined.merge(page_cols[["page_url", "title", "domain", "html_sha256", "date_candidates", "last_modified", "fetched_at"]], on="page_url", how="left")
    operators = operators_by_domain(pages, read_html)

    rows = []
    for r in joined.itertuples(index=False):
        html = read_html(r.html_sha256) if isinstance(r.html_sha256, str) else None
        host = host_of(r.page_url)
        seller, seller_url = seller_from_page(html) if html else (None, None)
        if seller:
            operator, op_source = seller, "marketplace-seller" + (f"@{seller_url}" if seller_url else "")
        elif host in operators:
            operator, op_source = operators[host]
        else:
            operator, op_source = None, "unknown:no-imprint-or-about-page-names-an-operator"
        try:
            candidates = json.loads(r.date_candidates) if isinstance(r.date_candidates, str) else []
        except ValueError:
            candidates = []
        published, pub_source, all_dates = published_date(html, candidates, r.last_modified if isinstance(r.last_modified, str) else None, run_date)
        text = page_text(_parse(html)) if html else ""
        rows.append({
            "customer_id": r.customer_id, "image_id": r.image_id, "page_url": r.page_url, "image_url": r.image_url,
            "image_sha256": r.image_sha256, "score": float(r.score), "inliers": int(r.inliers),
            "region": json.dumps({"query": [r.query_x0, r.query_y0, r.query_x1, r.query_y1], "reference": [r.ref_x0, r.ref_y0, r.ref_x1, r.ref_y1],
                                  "query_overlap": r.query_overlap, "ref_overlap": r.ref_overlap, "mirrored": bool(r.mirrored)}, sort_keys=True),
            "page_title": bounded(r.title if isinstance(r.title, str) else None),
            "domain": host, "registrable_domain": registrable_domain(host),
            "operator_name": operator, "operator_source": op_source,
            "published_at": published, "published_source": pub_source, "date_candidates": json.dumps(sorted(set(all_dates))),
            "page_kind": page_kind(html), "image_width": _int(r.width), "image_height": _int(r.height),
            "html_sha256": r.html_sha256 if isinstance(r.html_sha256, str) else None,
            "fetched_at": r.fetched_at if not pd.isna(r.fetched_at) else None,
            "attribution_found": bool(names.get(r.customer_id)) and names[r.customer_id].lower() in text.lower(),
        })
    out = pd.DataFrame(rows, columns=ENRICHED_COLUMNS)
    # One image URL may sit twice on a page (img and og:image): keep one row per natural key.
    return out.sort_values(["customer_id", "image_id", "page_url", "image_url", "score"], ascending=[True, True, True, True, False]).drop_duplicates(
        ["customer_id", "image_id", "page_url", "image_url"]).reset_index(drop=True)


def _int(v) -> int | None:
    return None if v is None or pd.isna(v) else int(v)
