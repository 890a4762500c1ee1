"""The enrichment stage: ``enrich_matches`` turns the day's matches into one enriched row per hit.

It joins the matches with the crawl's images and pages (one row per customer image, page URL and
image URL), parses each stored page once (``_Pages``) and asks the concern modules of
``copyhunt.enrich`` for the operator, dates, kind of use, display size and attribution. Called by
``copyhunt.hunt``'s enrich stage.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

import pandas as pd

from copyhunt.enrich.credit import attribution
from copyhunt.enrich.dates import MAX_DATE_CANDIDATES, PublicationDate, parse_date, published_date, usage_period
from copyhunt.enrich.display import display_size
from copyhunt.enrich.hosts import host_of, registrable_domain
from copyhunt.enrich.kind_of_use import page_kind
from copyhunt.enrich.operator import OPERATOR_PAGE, Operator, RANK_LEGAL_ENTITY, operator_details, site_operator
from copyhunt.enrich.page import EMPTY_PAGE, MAX_TEXT, Page, absolute_url, bounded, parse_page
from copyhunt.enrich.seller import Seller, seller_from_page
from copyhunt.parties import same_party

ReadHtml = Callable[[str], "bytes | None"]


ENRICHED_COLUMNS = [
    "customer_id", "image_id", "page_url", "page_final_url", "image_url", "image_final_url", "image_host", "image_sha256", "score",
    "inliers", "region",
    "page_title", "domain", "registrable_domain",
    "operator_name", "operator_source", "operator_address", "operator_email", "operator_phone", "operator_role", "operator_details",
    "published_at", "published_source", "date_candidates",
    "first_seen", "last_seen", "usage_since", "usage_since_source", "usage_days",
    "page_status", "page_online", "fetched_at", "html_sha256",
    "page_kind", "page_kind_source", "image_width", "image_height", "display_width", "display_height", "display_source",
    "attribution_found", "attribution_evidence", "enrich_error",
]
HIT_KEY = ["customer_id", "image_id", "page_url", "image_url"]
_INT_COLUMNS = ["inliers", "usage_days", "page_status", "image_width", "image_height", "display_width", "display_height"]
_BOOL_COLUMNS = ["page_online", "attribution_found"]


class _Pages:
    """The crawl's pages by URL, each parsed at most once (a page may hold several hits)."""

    def __init__(self, pages: pd.DataFrame, read_html: ReadHtml):
        self.rows = {r["url"]: r for r in pages.to_dict("records")} if len(pages) else {}
        self.read_html = read_html
        self._parsed: dict[str, Page] = {}

    def row(self, url: str) -> dict | None:
        return self.rows.get(url)

    def page(self, url: str) -> Page:
        row = self.rows.get(url)
        sha = row.get("html_sha256") if row else None
        if not isinstance(sha, str):
            return EMPTY_PAGE
        if sha not in self._parsed:
            try:
                self._parsed[sha] = parse_page(self.read_html(sha))
            except Exception:  # a missing or unreadable blob is an unknown, not a failed run
                self._parsed[sha] = EMPTY_PAGE
        return self._parsed[sha]

    def by_host(self) -> dict[str, list[str]]:
        hosts: dict[str, list[str]] = {}
        for url in sorted(self.rows):
            hosts.setdefault(host_of(url), []).append(url)
        return hosts


def site_operators(pages: pd.DataFrame, read_html: ReadHtml, hosts: Iterable[str] | None = None) -> dict[str, Operator]:
    """Operator per host, from its imprint/about/contact pages and its home page."""
    return _site_operators(_Pages(pages, read_html), hosts)


def _site_operators(pages: _Pages, hosts: Iterable[str] | None = None) -> dict[str, Operator]:
    wanted = set(hosts) if hosts is not None else None
    result: dict[str, Operator] = {}
    for host, urls in pages.by_host().items():
        if wanted is not None and host not in wanted:
            continue
        chosen = [u for u in urls if OPERATOR_PAGE.search(urlsplit(u).path) or (urlsplit(u).path in ("", "/") and not urlsplit(u).query)]
        result[host] = site_operator((u, pages.page(u)) for u in chosen)
    return result


def enrich_matches(matches: pd.DataFrame, images: pd.DataFrame, pages: pd.DataFrame, customers: list, read_html: ReadHtml,
                   run_date: dt.date, history: Mapping[tuple, str] | None = None) -> pd.DataFrame:
    """One row per (customer image, page URL, image URL) with page, operator, date and usage facts.

    ``history`` maps a hit's key (customer, image, page URL, image URL) to the first run date an
    earlier run found it (see copyhunt.stages.enrich.first_seen_history). A row that cannot be enriched (a bug meets
    hostile input) keeps its match facts, says why in ``enrich_error`` and does not stop the others.
    """
    if matches.empty:
        return pd.DataFrame(columns=ENRICHED_COLUMNS)
    history = history or {}
    authors = {c.id: [c.name] for c in customers}
    uses = images.dropna(subset=["blob_sha256"]).rename(columns={"blob_sha256": "image_sha256"})
    # Optional crawl columns: the image's own Last-Modified, and its URL after redirects when recorded.
    optional = {"last_modified": "image_last_modified", "final_url": "image_final_url"}
    use_cols = ["image_sha256", "page_url", "image_url", "width", "height"] + [c for c in optional if c in uses.columns]
    joined = matches.merge(uses[use_cols].rename(columns=optional), on="image_sha256", how="inner")
    # One image URL may sit twice on a page (img and og:image) and match twice: the best match speaks.
    joined = joined.sort_values(HIT_KEY + ["score"], ascending=[True] * 4 + [False], kind="mergesort").drop_duplicates(HIT_KEY)
    site = _Pages(pages, read_html)
    hit_hosts = {host_of(u) for u in joined["page_url"]}
    operators = _site_operators(site, hit_hosts)
    by_registrable: dict[str, Operator] = {}
    for host, op in sorted(operators.items()):
        if op.name:
            by_registrable.setdefault(registrable_domain(host), op)
    sellers = _sellers_by_image(joined, site)

    rows = []
    for r in joined.to_dict("records"):
        base = _base_row(r, run_date)
        try:
            base.update(_enrich_row(r, site, operators, by_registrable, sellers, authors, history, run_date))
        except Exception as exc:  # one bad page must not fail the run: keep the hit, say what failed
            base.update(_unknown_row(r, run_date, history, f"{type(exc).__name__}: {exc}"[:300]))
        rows.append(base)
    out = pd.DataFrame(rows, columns=ENRICHED_COLUMNS)
    for col in _INT_COLUMNS:
        out[col] = out[col].astype("Int64")  # nullable: an unknown size or status stays unknown, not NaN
    for col in _BOOL_COLUMNS:
        out[col] = out[col].astype("boolean")
    return out.sort_values(HIT_KEY, kind="mergesort").reset_index(drop=True)


def _sellers_by_image(joined: pd.DataFrame, site: _Pages) -> dict[tuple[str, str], tuple[Seller, str]]:
    """(host, image URL) -> (seller, product page URL) for images shown on a product page with a seller,
    so a listing page showing the same product photo is attributed to the same seller."""
    found: dict[tuple[str, str], tuple[Seller, str]] = {}
    for page_url, image_url in sorted(set(zip(joined["page_url"], joined["image_url"]))):
        seller = seller_from_page(site.page(page_url), page_url) or _crawl_seller(site.row(page_url))
        if seller is not None:
            found.setdefault((host_of(page_url), image_url), (seller, page_url))
    return found


def _crawl_seller(row: dict | None) -> Seller | None:
    """The seller the crawler's marketplace spider recorded, for when the stored HTML is unavailable."""
    name = bounded(row.get("seller_name")) if row else None
    if not name:
        return None
    source = bounded(row.get("seller_source"), 40) or "unknown"
    url = row.get("seller_url") if isinstance(row.get("seller_url"), str) else None
    return Seller(name, f"crawl:{source}:Offer.seller", absolute_url(url, row.get("url") or ""))


def _base_row(r: dict, run_date: dt.date) -> dict[str, Any]:
    region = {"query": [r.get("query_x0"), r.get("query_y0"), r.get("query_x1"), r.get("query_y1")],
              "reference": [r.get("ref_x0"), r.get("ref_y0"), r.get("ref_x1"), r.get("ref_y1")],
              "query_overlap": r.get("query_overlap"), "ref_overlap": r.get("ref_overlap"), "mirrored": bool(r.get("mirrored"))}
    host = host_of(r["page_url"])
    return {
        "customer_id": r["customer_id"], "image_id": r["image_id"], "page_url": r["page_url"], "image_url": r["image_url"],
        # After redirects; None until the crawl records it (images.final_url), rather than a guess.
        "image_final_url": r.get("image_final_url") if isinstance(r.get("image_final_url"), str) else None,
        "image_host": host_of(r["image_url"]), "image_sha256": r["image_sha256"], "score": float(r["score"]),
        "inliers": int(r["inliers"]), "region": json.dumps(region, sort_keys=True, default=_json_default),
        "domain": host, "registrable_domain": registrable_domain(host),
        "image_width": _int(r.get("width")), "image_height": _int(r.get("height")),
    }


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _first_seen(r: dict, history: Mapping[tuple, str], run_date: dt.date) -> dt.date:
    earlier = parse_date(history.get((r["customer_id"], r["image_id"], r["page_url"], r["image_url"])))
    return min(earlier, run_date) if earlier else run_date


def _unknown_row(r: dict, run_date: dt.date, history: Mapping[tuple, str], error: str) -> dict[str, Any]:
    first = _first_seen(r, history, run_date)
    return {"operator_source": "unknown:enrichment-failed", "published_source": "unknown:enrichment-failed",
            "date_candidates": "[]", "operator_details": "{}", "operator_role": "unknown",
            "first_seen": first.isoformat(), "last_seen": run_date.isoformat(), "usage_since": first.isoformat(),
            "usage_since_source": "first-seen", "usage_days": (run_date - first).days + 1,
            "page_kind": "commercial", "page_kind_source": "unknown:enrichment-failed", "display_source": "unknown:enrichment-failed",
            "attribution_found": False, "attribution_evidence": "unknown:enrichment-failed", "enrich_error": error}


def _enrich_row(r: dict, site: _Pages, operators: dict[str, Operator], by_registrable: dict[str, Operator],
                sellers: dict, authors: dict[str, list[str]], history: Mapping[tuple, str], run_date: dt.date) -> dict[str, Any]:
    page_url, image_url = r["page_url"], r["image_url"]
    host = host_of(page_url)
    page = site.page(page_url)
    row = site.row(page_url) or {}

    # Operator: a third-party marketplace seller, else the site's operator, else what this page says.
    site_op = operators.get(host) or Operator()
    if not site_op.name:
        site_op = by_registrable.get(registrable_domain(host)) or Operator()
    own = operator_details(page, page_url, imprint_rules=bool(OPERATOR_PAGE.search(urlsplit(page_url).path)))
    if own.name and (not site_op.name or own.rank < site_op.rank):
        site_op = own.filled_from(site_op) if same_party(own.name, site_op.name) else own
    seller_hit = sellers.get((host, image_url))
    seller, product_url = seller_hit if seller_hit else (None, None)
    details: dict[str, Any] = {}
    site_brands = [site_op.name] + [bounded(x) for x in page.doc.xpath('//meta[@property="og:site_name"]/@content')[:1]] if page.doc is not None else [site_op.name]
    if seller is not None and not any(same_party(seller.name, b) for b in site_brands if b):
        operator, role = _seller_operator(seller, product_url, page_url, site), "marketplace-seller"
        details["platform"] = site_op.as_dict()
    elif site_op.name:
        operator, role = site_op, "site-operator"
    else:
        operator, role = Operator(), "unknown"
    if operator.name is None:
        checked = [u for u in site.by_host().get(host, []) if OPERATOR_PAGE.search(urlsplit(u).path)]
        operator_source = ("unknown:no-operator-named-on(" + ",".join(checked)[:200] + ")" if checked
                           else "unknown:no-imprint-about-or-contact-page-crawled")
    else:
        operator_source = operator.name_source
    details.update(operator.as_dict())
    for f in Operator.DETAILS:
        if getattr(operator, f) is None:
            details.setdefault("missing", []).append(f)

    # Dates and usage. A listing page showing a product photo shows it since the product was listed at the earliest.
    not_before = None
    if seller is not None and product_url != page_url:
        product = _page_date(site, product_url, run_date)
        if product.date is not None:
            not_before = (product.date, f"product-page:{product.source}@{product_url}"[:MAX_TEXT])
    image_modified = r.get("image_last_modified") if isinstance(r.get("image_last_modified"), str) else None
    published = _page_date(site, page_url, run_date, not_before, image_modified)
    first = _first_seen(r, history, run_date)
    usage = usage_period(published, first, run_date)

    if seller is not None and product_url != page_url:
        kind, kind_source = "product", f"product-photo-of:{product_url}"[:MAX_TEXT]
    else:
        kind, kind_source = page_kind(page, registrable_domain(host))
    width, height, size_source = display_size(page, page_url, image_url)
    credited, evidence = attribution(page, authors.get(r["customer_id"], []))
    status = _int(row.get("status"))
    final_url = row.get("final_url") if isinstance(row.get("final_url"), str) else None
    return {
        "page_final_url": final_url or (page_url if row else None), "page_title": bounded(row.get("title")),
        "operator_name": operator.name, "operator_source": operator_source, "operator_address": operator.address,
        "operator_email": operator.email, "operator_phone": operator.phone, "operator_role": role,
        "operator_details": json.dumps(details, sort_keys=True, ensure_ascii=False),
        "published_at": published.iso, "published_source": published.source,
        "date_candidates": json.dumps(list(published.candidates), sort_keys=True, ensure_ascii=False),
        "first_seen": first.isoformat(), "last_seen": run_date.isoformat(), "usage_since": usage.since.isoformat(),
        "usage_since_source": usage.since_source, "usage_days": usage.days,
        "page_status": status, "page_online": None if status is None else 200 <= status < 400,
        "fetched_at": row.get("fetched_at") if row and not pd.isna(row.get("fetched_at")) else None,
        "html_sha256": row.get("html_sha256") if isinstance(row.get("html_sha256"), str) else None,
        "page_kind": kind, "page_kind_source": kind_source,
        "display_width": width, "display_height": height, "display_source": size_source,
        "attribution_found": credited, "attribution_evidence": evidence, "enrich_error": None,
    }


def _page_date(site: _Pages, url: str, run_date: dt.date, not_before: tuple[dt.date, str] | None = None,
               image_last_modified: str | None = None) -> PublicationDate:
    row = site.row(url) or {}
    last_modified = row.get("last_modified") if isinstance(row.get("last_modified"), str) else None
    return published_date(site.page(url), run_date, url, last_modified, _json_list(row.get("date_candidates")), not_before,
                          image_last_modified)


def _seller_operator(seller: Seller, product_url: str, page_url: str, site: _Pages) -> Operator:
    """A marketplace seller as the operator: named on the product page, described on its own page."""
    source = seller.source + "@" + product_url + ("" if product_url == page_url else " (same photo on a product page)")
    op = Operator(seller.name, bounded(source, MAX_TEXT), rank=RANK_LEGAL_ENTITY)
    if seller.url and site.row(seller.url):
        described = operator_details(site.page(seller.url), seller.url)
        if described.name and same_party(described.name, seller.name):
            op = op.filled_from(described)
    if seller.address and op.address is None:
        op = replace(op, address=seller.address, address_source=f"{seller.source}.address@{product_url}")
    return op


def _json_list(value: Any) -> list[str]:
    if not isinstance(value, str):
        return []
    try:
        data = json.loads(value[:100_000])
    except (ValueError, RecursionError):
        return []
    return [str(v) for v in data[:MAX_DATE_CANDIDATES]] if isinstance(data, list) else []


def _int(v: Any) -> int | None:
    return None if v is None or pd.isna(v) else int(v)
