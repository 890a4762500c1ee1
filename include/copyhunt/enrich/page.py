"""The parsed page every extractor reads, and the bounds that keep hostile HTML cheap.

``parse_page`` cuts HTML to ``MAX_HTML_BYTES`` and parses it once into a ``Page``: the lxml tree,
its JSON-LD objects and its visible text lines. Every string that leaves the enrichment passes
``bounded``. Used by every module of ``copyhunt.enrich``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping
from urllib.parse import urljoin, urlsplit

# ---- bounds ---------------------------------------------------------------------------------------
MAX_HTML_BYTES = 2_000_000  # pages are cut here before parsing
MAX_TEXT_CHARS = 200_000  # visible text kept per page for the text rules
MAX_JSONLD_BLOCKS = 30  # <script type="application/ld+json"> blocks read per page
MAX_JSONLD_CHARS = 200_000  # per block
MAX_JSONLD_OBJECTS = 200  # top-level and @graph objects kept per page
MAX_TEXT = 300  # names, titles, addresses: bounded before they reach the database or an e-mail
MAX_URL = 2000


# ---- parsing --------------------------------------------------------------------------------------
_BLOCK_TAGS = frozenset(
    "address article aside blockquote br dd div dl dt figcaption figure footer form h1 h2 h3 h4 h5 h6 "
    "header hr li main nav ol p pre section table tbody td th thead title tr ul".split()
)
_INVISIBLE_TAGS = frozenset({"script", "style", "noscript", "template"})
_SPACES = re.compile(r"[ \t\r\f\v\xa0\u200b]+")


@dataclass(frozen=True)
class Page:
    """One bounded, parsed HTML page: the lxml tree, its JSON-LD objects and visible text lines."""

    doc: Any  # the lxml.etree root element, or None when there was nothing to parse
    jsonld: tuple[dict, ...] = ()
    lines: tuple[str, ...] = ()
    truncated: bool = False  # the HTML was longer than MAX_HTML_BYTES
    html: str = ""  # the bounded HTML as text (htmldate reads it)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


EMPTY_PAGE = Page(None)


def parse_page(html: bytes | str | None) -> Page:
    """Parse bounded HTML once; never raises (an unparseable page is an empty Page)."""
    if not html or not isinstance(html, (bytes, str)):
        return EMPTY_PAGE
    from lxml import etree

    truncated = len(html) > MAX_HTML_BYTES
    html = html[:MAX_HTML_BYTES]
    text = html.decode("utf-8", "replace") if isinstance(html, bytes) else html
    # Plain etree, not lxml.html: its per-element class lookup doubles the cost of walking a page.
    # no_network: never fetch a DTD; huge_tree off: libxml2's own depth and text-node limits stay on.
    parser = etree.HTMLParser(recover=True, no_network=True, huge_tree=False)
    try:
        doc = etree.fromstring(html, parser)
    except Exception:  # lxml raises on empty, binary or otherwise hopeless documents
        doc = None
    if doc is None:
        return Page(None, truncated=truncated)
    return Page(doc, tuple(_jsonld_objects(doc)), tuple(_visible_lines(doc)), truncated, text)


def text_of(el) -> str:
    return "".join(el.itertext())


def as_page(html: Page | bytes | str | None) -> Page:
    return html if isinstance(html, Page) else parse_page(html)


def _visible_lines(doc) -> Iterator[str]:
    """Visible text, one line per block element or <br> (inline elements do not break lines).

    An explicit stack, not lxml's iterwalk: iterwalk skips comments, and with them the text that
    follows a comment (its tail) would be lost.
    """
    parts: list[str] = []
    size = 0
    stack: list[tuple[Any, bool]] = [(doc, False)]
    while stack and size <= MAX_TEXT_CHARS:
        el, closing = stack.pop()
        tag = el.tag.lower() if isinstance(el.tag, str) else None  # None: a comment or processing instruction
        if not closing and (tag is None or tag in _INVISIBLE_TAGS):
            pieces = [el.tail]  # its own text is not shown; what follows it is
        elif not closing:
            pieces = ["\n" if tag in _BLOCK_TAGS else None, el.text]
            stack.append((el, True))
            stack.extend((child, False) for child in reversed(el))
        else:
            pieces = ["\n" if tag in _BLOCK_TAGS else None, el.tail]
        for piece in pieces:
            if piece:
                parts.append(piece)
                size += len(piece)
    for line in "".join(parts)[:MAX_TEXT_CHARS].split("\n"):
        line = _SPACES.sub(" ", line).strip()
        if line:
            yield line


def _jsonld_objects(doc) -> Iterator[dict]:
    """Top-level JSON-LD objects and the members of their @graph; malformed or hostile blocks skipped."""
    count = 0
    for node in doc.xpath('//script[starts-with(translate(@type, "LDJSON", "ldjson"), "application/ld+json")]')[:MAX_JSONLD_BLOCKS]:
        raw = (node.text or "")[:MAX_JSONLD_CHARS]
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested beyond the parser's stack
            continue
        queue = list(data) if isinstance(data, list) else [data]
        while queue and count < MAX_JSONLD_OBJECTS:
            item = queue.pop(0)
            if not isinstance(item, dict):
                continue
            count += 1
            yield item
            graph = item.get("@graph")
            if isinstance(graph, list):  # one level: a @graph inside a @graph member is not followed
                queue.extend(g for g in graph if isinstance(g, dict) and "@graph" not in g)


def jsonld_types(obj: Mapping) -> set[str]:
    """schema.org type names of a JSON-LD object, prefixes dropped (schema:Store, https://schema.org/Store)."""
    t = obj.get("@type", [])
    names = [t] if isinstance(t, str) else [x for x in t if isinstance(x, str)] if isinstance(t, list) else []
    return {re.split(r"[/:#]", n)[-1] for n in names if n}


def type_label(types: set[str], prefer_not: str = "Organization") -> str:
    specific = sorted(types - {prefer_not, "Thing"})
    return specific[0] if specific else (prefer_not if prefer_not in types else sorted(types)[0] if types else "Thing")


def bounded(text: Any, limit: int = MAX_TEXT) -> str | None:
    """Whitespace collapsed, control characters dropped, cut to ``limit``; None when empty."""
    if text is None or isinstance(text, (dict, list)):
        return None
    text = re.sub(r"[\x00-\x1f\x7f]", " ", str(text))
    text = _SPACES.sub(" ", text).strip()
    return text[:limit] if text else None



def absolute_url(url: Any, base: str) -> str | None:
    if not isinstance(url, str) or not url.strip():
        return None
    try:
        full = urljoin(base, url.strip()) if base else url.strip()
    except ValueError:
        return None
    return full[:MAX_URL] if urlsplit(full).scheme in ("http", "https") else None
