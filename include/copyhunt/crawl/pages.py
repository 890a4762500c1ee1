"""Page facts from HTML, as pure functions: title, language, publication-date candidates, links.

Dates are kept as the raw strings the page states (normalising them is the enricher's job, and
the raw form is what goes into evidence).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree
from scrapy.linkextractors import IGNORED_EXTENSIONS

from copyhunt.crawl.images import (
    IMAGE_EXTENSIONS,
    HtmlInput,
    base_url_of,
    jsonld_items,
    parse_html,
    resolve_url,
    url_extension,
    walk_json,
)

# Links to these are not HTML pages; images among them are found by discover_images instead.
NON_PAGE_EXTENSIONS = frozenset(IGNORED_EXTENSIONS) | IMAGE_EXTENSIONS | {"json", "xml", "rss", "atom"}
DATE_META = frozenset({"article:published_time", "article:modified_time"})
DATE_JSONLD_KEYS = frozenset({"datePublished", "dateModified"})


@dataclass(frozen=True)
class PageMeta:
    title: str | None
    language: str | None
    date_candidates: list[str]

    @property
    def date_candidates_json(self) -> str:
        return json.dumps(self.date_candidates, ensure_ascii=False)


def _text(value: str | None) -> str | None:
    text = " ".join((value or "").split())
    return text or None


def page_title(doc: etree._Element) -> str | None:
    """``<title>`` of the document head (an SVG's <title> in the body does not count)."""
    for el in doc.xpath("/html/head/title | //title[not(ancestor::svg)]"):
        title = _text("".join(el.itertext()))
        if title:
            return title
    return None


def page_language(doc: etree._Element) -> str | None:
    """``<html lang>`` (or ``xml:lang``) as written, stripped; None if absent."""
    root = doc.getroottree().getroot()
    value = root.get("lang") or root.get("{http://www.w3.org/XML/1998/namespace}lang") or root.get("xml:lang")
    return _text(value)


def _dedupe(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)


def date_candidates(doc: etree._Element) -> list[str]:
    """Raw date strings the page states, in order: meta article times, <time datetime>, JSON-LD."""
    found: list[str] = []
    for el in doc.xpath("//meta"):
        key = (el.get("property") or el.get("name") or el.get("itemprop") or "").strip()
        if key in DATE_META or key in DATE_JSONLD_KEYS:  # itemprop="datePublished" is microdata
            if value := _text(el.get("content")):
                found.append(value)
    for value in doc.xpath("//time/@datetime"):
        if value := _text(str(value)):
            found.append(value)
    for item in jsonld_items(doc):
        for key, value in walk_json(item):
            if key in DATE_JSONLD_KEYS and isinstance(value, str) and (value := _text(value)):
                found.append(value)
    return _dedupe(found)


def page_meta(html: HtmlInput) -> PageMeta:
    doc = parse_html(html)
    if doc is None:
        return PageMeta(None, None, [])
    return PageMeta(page_title(doc), page_language(doc), date_candidates(doc))


def extract_links(html: HtmlInput, base_url: str) -> list[str]:
    """Canonical http(s) URLs of ``<a href>`` / ``<area href>`` that may be pages, deduplicated.

    Scope, budget and trap checks are the crawl policy's business, not this function's.
    """
    doc = parse_html(html)
    if doc is None:
        return []
    base = base_url_of(doc, base_url)
    links: list[str] = []
    for href in doc.xpath("//a/@href | //area/@href"):
        url = resolve_url(href, base)
        if url is not None and url_extension(url) not in NON_PAGE_EXTENSIONS:
            links.append(url)
    return _dedupe(links)
