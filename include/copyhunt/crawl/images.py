"""Image discovery in HTML and header-only inspection of image bytes; pure functions.

:func:`discover_images` finds every image a page shows or points to and returns
``DiscoveredImage(url, discovered_via, alt)`` tuples, resolved against the page (and its ``<base href>``),
canonicalised and deduplicated, in document order. ``discovered_via`` is one of
:data:`DISCOVERY_KINDS`.

:func:`inspect_image` decides what a downloaded body is from its magic bytes (never from
Content-Type, which servers get wrong) and reads its size from the header with PIL's lazy
``Image.open``; pixels are never decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import functools
import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit

import lxml.html
from extruct.jsonld import JsonLdExtractor
from lxml import etree
from PIL import Image

from copyhunt.crawl.urls import canonical_url

HtmlInput = str | bytes | etree._Element

DISCOVERY_KINDS = (
    "img",  # <img src>
    "srcset",  # <img srcset>, largest candidate
    "picture",  # <picture><source srcset>, largest candidate
    "data-src",  # lazy loaders: data-src / data-original
    "data-lazy-src",
    "data-srcset",  # lazy srcset, largest candidate
    "og:image",
    "twitter:image",
    "json-ld",  # schema.org "image" (string, list or ImageObject)
    "css",  # background / background-image: url(...) in style attributes and <style>
    "a-href",  # <a href> straight to an image file
)

# Links to these are images; everything else an <a> points to is a page.
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "jpe", "png", "gif", "webp", "bmp", "tif", "tiff"})
# Vector formats cannot be matched against registered photographs; fetching them only adds
# `not-an-image` noise.
SKIP_EXTENSIONS = frozenset({"svg", "svgz"})

_OG_PROPERTIES = frozenset({"og:image", "og:image:url", "og:image:secure_url"})
_TWITTER_NAMES = frozenset({"twitter:image", "twitter:image:src"})
_LAZY_SRC = (("data-src", "data-src"), ("data-original", "data-src"), ("data-lazy-src", "data-lazy-src"))
_CSS_BACKGROUND = re.compile(r"background(?:-image)?\s*:([^;}]*)", re.IGNORECASE)
_CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)""", re.IGNORECASE | re.DOTALL)
_URL_NOISE = re.compile(r"[\t\n\r]")  # browsers drop these inside URLs
_JSONLD = JsonLdExtractor()


class DiscoveredImage(NamedTuple):
    url: str
    discovered_via: str
    alt: str | None


# ---- HTML --------------------------------------------------------------------------------------
def parse_html(html: HtmlInput) -> etree._Element | None:
    """An lxml tree for ``html`` (str, bytes, or an already-parsed element); None if empty."""
    if isinstance(html, etree._Element):
        return html
    data = html.encode("utf-8") if isinstance(html, str) else html
    if not data.strip():
        return None
    # Bytes with an explicit encoding: a str may carry a <meta charset> that no longer applies.
    parser = lxml.html.HTMLParser(encoding="utf-8" if isinstance(html, str) else None)
    try:
        return lxml.html.document_fromstring(data, parser=parser)
    except (etree.ParserError, ValueError):
        return None


def base_url_of(doc: etree._Element, url: str) -> str:
    """The URL relative references resolve against: ``<base href>`` if present, else ``url``."""
    for href in doc.xpath("//base/@href"):
        href = _URL_NOISE.sub("", str(href)).strip()
        if href:
            return urljoin(url, href)
    return url


def resolve_url(raw: str | None, base: str) -> str | None:
    """Resolve a raw attribute value against ``base`` and canonicalise; None if unusable."""
    if raw is None:
        return None
    raw = _URL_NOISE.sub("", raw).strip()
    if not raw or raw.startswith("#"):
        return None
    lowered = raw[:11].lower()
    if lowered.startswith(("data:", "javascript:", "blob:", "about:", "mailto:", "tel:")):
        return None
    return canonical_url(join_url(base, raw))


@functools.lru_cache(maxsize=4096)
def _origin(base: str) -> str | None:
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def join_url(base: str, raw: str) -> str:
    """``urljoin(base, raw)``, without its cost for the two commonest forms on real pages.

    An absolute http(s) URL is returned as it is, and an absolute path without dot segments is
    appended to the base's origin: exactly what urljoin returns for them. Anything else goes to
    urljoin.
    """
    if raw.startswith(("http://", "https://")):
        return raw
    if raw.startswith("/") and not raw.startswith("//") and "/." not in raw and "\\" not in raw:
        origin = _origin(base)
        if origin is not None:
            return origin + raw
    return urljoin(base, raw)


def url_extension(url: str) -> str:
    path = urlsplit(url).path
    name = path.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _clean_text(text: str | None) -> str | None:
    if text is None:
        return None
    return " ".join(text.split())


# ---- srcset ------------------------------------------------------------------------------------
def parse_srcset(value: str) -> list[tuple[str, float | None, float | None]]:
    """Candidates of a srcset as ``(url, width_w, density_x)``, following the HTML parsing rules.

    URLs may contain commas (``/w_100,h_100/a.jpg``), so a candidate's URL is the run of
    non-whitespace characters and only trailing commas end it.
    """
    out: list[tuple[str, float | None, float | None]] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and (value[i].isspace() or value[i] == ","):
            i += 1
        start = i
        while i < n and not value[i].isspace():
            i += 1
        url = value[start:i]
        if not url:
            break
        descriptors = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start = i
            depth = 0
            while i < n and (value[i] != "," or depth):
                depth += value[i] == "("
                depth -= value[i] == ")" and depth > 0
                i += 1
            descriptors = value[start:i]
        width = density = None
        for token in descriptors.split():
            try:
                if token.endswith("w"):
                    width = float(token[:-1])
                elif token.endswith("x"):
                    density = float(token[:-1])
            except ValueError:
                continue
        if url:
            out.append((url, width, density))
    return out


def largest_candidate(value: str | None) -> str | None:
    """The URL of the largest srcset candidate: widest ``w``, else highest ``x`` (default 1x)."""
    candidates = parse_srcset(value or "")
    if not candidates:
        return None
    if any(w is not None for _, w, _ in candidates):
        return max(candidates, key=lambda c: c[1] or 0.0)[0]  # max keeps the first of ties
    return max(candidates, key=lambda c: c[2] if c[2] is not None else 1.0)[0]


# ---- JSON-LD -----------------------------------------------------------------------------------
def jsonld_items(doc: etree._Element) -> list[Any]:
    """Every JSON-LD object of the page; a script that does not parse is skipped, not fatal."""
    items: list[Any] = []
    for script in doc.xpath('//script[@type="application/ld+json"]'):
        try:
            items.extend(_JSONLD.extract_items(script))
        except Exception:  # malformed JSON in the wild is common; one bad block must not hide the rest
            continue
    return items


def walk_json(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in a JSON tree, depth first (covers @graph and nesting)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk_json(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk_json(value)


def _jsonld_image_urls(value: Any) -> Iterator[str]:
    """URLs in a schema.org ``image`` value: a string, an ImageObject, or a list of either."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key in ("contentUrl", "url"):  # not @id: often "...#primaryimage"
            if isinstance(value.get(key), str):
                yield value[key]
                return
    elif isinstance(value, list):
        for v in value:
            yield from _jsonld_image_urls(v)


# ---- discovery ---------------------------------------------------------------------------------
def _enclosing_picture(source: etree._Element) -> etree._Element | None:
    """The <picture> a <source> belongs to (not a <video>/<audio>'s), or None.

    libxml2 does not know <source> is a void element and nests each following sibling inside
    the previous one, so the picture is the nearest media ancestor, not necessarily the parent.
    """
    for ancestor in source.iterancestors():
        tag = ancestor.tag.lower() if isinstance(ancestor.tag, str) else ""
        if tag == "picture":
            return ancestor
        if tag in ("video", "audio"):
            return None
    return None


def _looks_like_image_link(href: str) -> bool:
    path = href.split("#", 1)[0].split("?", 1)[0].rstrip()
    name = path.rsplit("/", 1)[-1]
    return "." in name and name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS


# Only elements that can reference an image, in document order; walking every element of a page
# in Python costs more than all the rest of discovery.
_CANDIDATES = etree.XPath(
    "//img | //source | //meta | //a[@href] | //style"
    " | //*[@data-src or @data-original or @data-lazy-src or @data-srcset or @style]"
)


def _raw_refs(doc: etree._Element) -> Iterator[tuple[str, str, str | None]]:
    """(raw url, discovered_via, alt) in document order; resolution happens in the caller."""
    for el in _CANDIDATES(doc):
        if not isinstance(el.tag, str):  # comments, processing instructions
            continue
        tag = el.tag.lower()
        alt = el.get("alt")
        picture = _enclosing_picture(el) if tag == "source" else None
        in_picture = picture is not None
        if picture is not None:
            # A <source> has no alt of its own; the <picture>'s <img> carries it for every source.
            img = picture.find(".//img")
            alt = img.get("alt") if img is not None else None
        if tag == "img":
            yield el.get("src", ""), "img", alt
            yield largest_candidate(el.get("srcset")) or "", "srcset", alt
        elif in_picture:
            yield largest_candidate(el.get("srcset")) or "", "picture", alt
        elif tag == "meta":
            key = (el.get("property") or el.get("name") or "").strip().lower()
            if key in _OG_PROPERTIES:
                yield el.get("content", ""), "og:image", None
            elif key in _TWITTER_NAMES:
                yield el.get("content", ""), "twitter:image", None
        elif tag == "a":
            href = el.get("href", "")
            # Most links are pages: check the extension before paying for URL resolution.
            if _looks_like_image_link(href):
                yield href, "a-href", _clean_text("".join(el.itertext())) or el.get("title")
        elif tag == "style":
            for decl in _CSS_BACKGROUND.findall(el.text or ""):
                for _, url in _CSS_URL.findall(decl):
                    yield url, "css", None

        # Lazy-loading attributes can sit on any element (img, div, source...).
        for attr, via in _LAZY_SRC:
            if el.get(attr):
                yield el.get(attr, ""), via, alt
        if el.get("data-srcset"):
            yield largest_candidate(el.get("data-srcset")) or "", "data-srcset", alt
        style = el.get("style")
        if style:
            for decl in _CSS_BACKGROUND.findall(style):
                for _, url in _CSS_URL.findall(decl):
                    yield url, "css", alt

    for item in jsonld_items(doc):
        for key, value in walk_json(item):
            if key == "image":
                for url in _jsonld_image_urls(value):
                    yield url, "json-ld", None


def discover_images(html: HtmlInput, base_url: str) -> list[DiscoveredImage]:
    """Every image URL of a page, once each, first discovery kept, in document order.

    If the same URL is found more than once, the first ``discovered_via`` wins and a missing
    ``alt`` is filled from a later discovery.
    """
    doc = parse_html(html)
    if doc is None:
        return []
    base = base_url_of(doc, base_url)
    found: dict[str, DiscoveredImage] = {}
    for raw, via, alt in _raw_refs(doc):
        url = resolve_url(raw, base)
        if url is None:
            continue
        ext = url_extension(url)
        if ext in SKIP_EXTENSIONS or (via == "a-href" and ext not in IMAGE_EXTENSIONS):
            continue
        alt = _clean_text(alt)
        if url not in found:
            found[url] = DiscoveredImage(url, via, alt)
        elif found[url].alt is None and alt:
            found[url] = found[url]._replace(alt=alt)
    return list(found.values())


# ---- inspection of downloaded bytes ------------------------------------------------------------
# (format, PIL plugin) by magic bytes. WebP is RIFF....WEBP, checked separately.
_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\xff\xd8\xff", "jpeg", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "png", "PNG"),
    (b"GIF87a", "gif", "GIF"),
    (b"GIF89a", "gif", "GIF"),
    (b"II*\x00", "tiff", "TIFF"),
    (b"MM\x00*", "tiff", "TIFF"),
    (b"BM", "bmp", "BMP"),
)


def sniff_format(data: bytes) -> tuple[str, str] | None:
    """``(format, PIL plugin name)`` from the leading bytes, or None if not a supported image."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", "WEBP"
    for magic, fmt, plugin in _MAGIC:
        if data.startswith(magic):
            return fmt, plugin
    return None


@dataclass(frozen=True)
class InspectedImage:
    format: str | None
    width: int | None
    height: int | None
    bytes: int
    error: str | None = None  # None: acceptable; else a machine reason
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


def inspect_image(data: bytes, *, max_pixels: int, max_bytes: int | None = None) -> InspectedImage:
    """Classify a downloaded body without decoding its pixels.

    Errors: ``too-large`` (over ``max_bytes``), ``not-an-image`` (no known magic bytes),
    ``corrupt-image`` (magic matches but the header does not parse), ``decompression-bomb``
    (more than ``max_pixels`` pixels claimed by the header).
    """
    size = len(data)
    if max_bytes is not None and size > max_bytes:
        return InspectedImage(None, None, None, size, "too-large", f"{size} bytes > {max_bytes}")
    sniffed = sniff_format(data)
    if sniffed is None:
        return InspectedImage(None, None, None, size, "not-an-image", f"leading bytes {data[:8]!r}")
    fmt, plugin = sniffed
    try:
        with warnings.catch_warnings():
            # PIL warns (and above 2x its limit, raises) on huge headers; we apply our own limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # formats=[plugin]: only the parser the magic bytes chose may look at untrusted input.
            with Image.open(io.BytesIO(data), formats=[plugin]) as im:
                width, height = im.size  # header only: Image.open is lazy, .load() is never called
    except Image.DecompressionBombError as exc:
        return InspectedImage(fmt, None, None, size, "decompression-bomb", str(exc))
    except Exception as exc:  # PIL raises many types for malformed headers
        return InspectedImage(fmt, None, None, size, "corrupt-image", f"{type(exc).__name__}: {exc}")
    if width <= 0 or height <= 0:
        return InspectedImage(fmt, width, height, size, "corrupt-image", f"size {width}x{height}")
    if width * height > max_pixels:
        return InspectedImage(fmt, width, height, size, "decompression-bomb", f"{width}x{height} > {max_pixels} pixels")
    return InspectedImage(fmt, width, height, size)
