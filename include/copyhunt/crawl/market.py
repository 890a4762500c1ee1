"""Marketplace facts from HTML, as pure functions: who sells a product, and where a listing goes on.

:func:`product_sellers` reads schema.org structured data, JSON-LD first and microdata second:
a ``Product`` whose ``offers`` (an ``Offer``, a list of them, or an ``AggregateOffer`` with
``offers``) name a ``seller`` (an ``Organization`` or ``Person`` with ``name`` and ``url``), and a
top-level ``Offer`` whose ``itemOffered`` is the product. Sellers given only as a string are kept
with no URL. :func:`pagination_links` finds the links that continue a listing (``rel=next``,
pager blocks, and same-path links that differ only in a page parameter).

Text from structured data is untrusted: names are whitespace-collapsed and bounded, URLs resolved
and canonicalised like every other URL the crawler keeps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from extruct.w3cmicrodata import MicrodataExtractor
from lxml import etree

from copyhunt.crawl.images import HtmlInput, base_url_of, jsonld_items, parse_html, resolve_url

MAX_NAME_LENGTH = 300  # a seller name longer than this is page junk, not a name
# Query parameters that number the pages of a listing.
PAGE_PARAMS = frozenset({"page", "p", "pg", "pagenum", "page_no", "seite", "offset", "start"})
_PAGE_PATH = re.compile(r"/(?:page|seite|p)/\d+/?$", re.IGNORECASE)
_PAGER_CLASS = re.compile(r"pag(?:er|ination|ing)|page-numbers", re.IGNORECASE)
_SELLER_TYPES = frozenset({"organization", "person", "localbusiness", "store", "corporation", "onlinestore", "onlinebusiness"})
_MICRODATA = MicrodataExtractor()


@dataclass(frozen=True)
class ProductSeller:
    name: str | None
    url: str | None
    source: str  # "json-ld" or "microdata"


# ---- structured data ---------------------------------------------------------------------------
def _types(node: dict[str, Any]) -> set[str]:
    """schema.org type names of a JSON-LD node or a microdata item, lower case, without the IRI."""
    raw = node.get("@type", node.get("type"))
    values = raw if isinstance(raw, list) else [raw]
    return {str(v).rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1].lower() for v in values if v}


def _text(value: Any) -> str | None:
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str) and v.strip()), None)
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())[:MAX_NAME_LENGTH]
    return text or None


def _first_str(value: Any) -> str | None:
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str)), None)
    return value if isinstance(value, str) else None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value] if value is not None else []


def _walk_dicts(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk_dicts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_dicts(value)


def _seller_of(offer: dict[str, Any], props: Any, base: str, source: str) -> ProductSeller | None:
    """The seller an offer names: a node with name/url, or a bare string name."""
    seller = props(offer).get("seller")
    for node in _as_list(seller):
        if isinstance(node, str):
            if name := _text(node):
                return ProductSeller(name, None, source)
            continue
        if not isinstance(node, dict):
            continue
        p = props(node)
        types = _types(node)
        if types and not types & _SELLER_TYPES:
            continue
        name = _text(p.get("name")) or _text(p.get("legalName"))
        url = resolve_url(_first_str(p.get("url")) or _first_str(node.get("@id")), base)
        if name or url:
            return ProductSeller(name, url, source)
    return None


def _offers_of(product: dict[str, Any], props: Any) -> Iterator[dict[str, Any]]:
    for offer in _as_list(props(product).get("offers")):
        if not isinstance(offer, dict):
            continue
        yield offer
        if "aggregateoffer" in _types(offer):  # AggregateOffer.offers lists the individual offers
            yield from (o for o in _as_list(props(offer).get("offers")) if isinstance(o, dict))


def _sellers(items: list[Any], props: Any, base: str, source: str) -> list[ProductSeller]:
    found: list[ProductSeller] = []
    for node in _walk_dicts(items):
        types = _types(node)
        offers: list[dict[str, Any]] = []
        if "product" in types or "productgroup" in types:
            offers = list(_offers_of(node, props))
        elif "offer" in types and isinstance(props(node).get("itemOffered"), dict):
            offers = [node]
        for offer in offers:
            seller = _seller_of(offer, props, base, source)
            if seller is not None and seller not in found:
                found.append(seller)
    return found


def _jsonld_props(node: dict[str, Any]) -> dict[str, Any]:
    return node


def _microdata_props(node: dict[str, Any]) -> dict[str, Any]:
    props = node.get("properties")
    return props if isinstance(props, dict) else {}


def microdata_items(doc: etree._Element, base_url: str) -> list[Any]:
    """Every top-level microdata item of the page; markup that does not parse is skipped."""
    try:
        return _MICRODATA.extract_items(doc, base_url)
    except Exception:  # extruct on malformed markup in the wild; one page must not fail the crawl
        return []


def is_product_page(html: HtmlInput) -> bool:
    """True if the page's structured data describes a Product (JSON-LD or microdata)."""
    doc = parse_html(html)
    if doc is None:
        return False
    for node in _walk_dicts(jsonld_items(doc)):
        if {"product", "productgroup"} & _types(node):
            return True
    if doc.xpath("//*[@itemscope][contains(@itemtype, 'Product')]"):
        return True
    return False


def product_sellers(html: HtmlInput, page_url: str) -> list[ProductSeller]:
    """Sellers of the products a page offers, JSON-LD first, then microdata; each seller once.

    A seller found in both forms is reported once, from JSON-LD (microdata-only sellers follow).
    """
    doc = parse_html(html)
    if doc is None:
        return []
    base = base_url_of(doc, page_url)
    found = _sellers(jsonld_items(doc), _jsonld_props, base, "json-ld")
    # Microdata is parsed only when present: extruct walks the whole tree.
    if doc.xpath("//*[@itemscope]"):
        for seller in _sellers(microdata_items(doc, base), _microdata_props, base, "microdata"):
            if not any((s.name, s.url) == (seller.name, seller.url) for s in found):
                found.append(seller)
    return found


# ---- listing pagination --------------------------------------------------------------------------
def listing_key(url: str) -> tuple[str, str, frozenset[tuple[str, str]]]:
    """What the pages of one listing share: (host, path without ``/page/N``, query without the
    page parameter)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    rest = frozenset((k, v) for k, v in pairs if k.lower() not in PAGE_PARAMS)
    path = _PAGE_PATH.sub("/", parts.path) if _PAGE_PATH.search(parts.path) else parts.path
    return (parts.netloc, path.rstrip("/") or "/", rest)


def is_pagination_of(link: str, page_url: str) -> bool:
    """True if ``link`` is another page of the listing at ``page_url`` (same path and filters,
    a different page number in the query or a ``/page/N`` suffix)."""
    if link == page_url:
        return False
    numbered = any(k.lower() in PAGE_PARAMS for k, _ in parse_qsl(urlsplit(link).query)) or bool(_PAGE_PATH.search(urlsplit(link).path))
    return numbered and listing_key(link) == listing_key(page_url)


def pagination_links(html: HtmlInput, page_url: str) -> list[str]:
    """Canonical URLs that continue the listing at ``page_url``, in document order, once each.

    Found three ways: ``rel="next"``/``"prev"`` on ``<a>`` or ``<link>``, links inside a pager
    block (class or id like ``pagination``, ``pager``), and links to the same path with only a
    page parameter changed. A pager block's links are kept only if they stay on the listing's
    path, so a pager's "home" or category links are not mistaken for pages.
    """
    doc = parse_html(html)
    if doc is None:
        return []
    base = base_url_of(doc, page_url)
    out: dict[str, None] = {}
    for el in doc.xpath("//a[@href] | //link[@href]"):
        url = resolve_url(el.get("href"), base)
        if url is None or url == page_url:
            continue
        rel = {r.lower() for r in (el.get("rel") or "").split()}
        if rel & {"next", "prev", "previous"}:
            out.setdefault(url, None)
            continue
        if el.tag != "a":
            continue
        if is_pagination_of(url, page_url):
            out.setdefault(url, None)
            continue
        in_pager = any(_PAGER_CLASS.search(f"{a.get('class', '')} {a.get('id', '')}") for a in el.iterancestors())
        if in_pager and listing_key(url)[:2] == listing_key(page_url)[:2]:
            out.setdefault(url, None)
    return list(out)
