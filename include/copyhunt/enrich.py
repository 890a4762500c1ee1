"""Enrichment: where a matched image is used, by whom, since when, and how it is shown.

Pure functions over stored HTML and crawl rows. ``enrich_matches`` joins the day's matches with
the crawl's images and pages into one row per (customer image, page URL, image URL) and adds:

* the page and image location: page URL and final URL, image URL, title, host and registrable
  domain (tldextract with its bundled suffix list, never the network);
* the operator: name, address, e-mail and phone, each with the source that gave it: imprint
  ("Impressum"), about and contact pages, JSON-LD Organization/LocalBusiness, a footer copyright
  notice, og:site_name, or on a marketplace the seller named on the product page and described on
  the seller's own page;
* the publication date, chosen from every candidate (JSON-LD, meta tags, <time>, URL, htmldate,
  HTTP Last-Modified), all of which are kept with their source and verdict;
* first and last seen (our own earlier runs), the usage period in days and whether the page is
  online (status of this run's fetch);
* the kind of use (product photo, editorial, social media, commercial site), the displayed size
  and whether the author is credited: what pricing needs.

A fact that cannot be established is an explicit unknown with a reason (``unknown:<reason>``),
never a guess. HTML from the web is untrusted: it is cut to ``MAX_HTML_BYTES`` before parsing,
which bounds the time a page can take (the worst hostile 2 MB pages measured, 60,000 <time>
elements or 90,000 imprint lines, take 1-2 s for every extractor together, against ~2 ms for a
normal article); JSON-LD is bounded in size, count and depth, and every string that leaves this
module is bounded in length.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import unquote, urljoin, urlsplit

import pandas as pd

# ---- bounds ---------------------------------------------------------------------------------------
MAX_HTML_BYTES = 2_000_000  # pages are cut here before parsing
MAX_HTMLDATE_CHARS = 512_000  # htmldate re-parses its input; dates sit in the head and the top of an article
MAX_TEXT_CHARS = 200_000  # visible text kept per page for the text rules
MAX_JSONLD_BLOCKS = 30  # <script type="application/ld+json"> blocks read per page
MAX_JSONLD_CHARS = 200_000  # per block
MAX_JSONLD_OBJECTS = 200  # top-level and @graph objects kept per page
MAX_TEXT = 300  # names, titles, addresses: bounded before they reach the database or an e-mail
MAX_URL = 2000
MAX_DATE_CANDIDATES = 40  # recorded per page; a page with hundreds of dates is a listing anyway

# A date before the web was public is a CMS default (1970-01-01, 0001-01-01), not a publication.
MIN_CREDIBLE_DATE = dt.date(1995, 1, 1)

ReadHtml = Callable[[str], "bytes | None"]

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


def _text_of(el) -> str:
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


def _type_label(types: set[str], prefer_not: str = "Organization") -> str:
    specific = sorted(types - {prefer_not, "Thing"})
    return specific[0] if specific else (prefer_not if prefer_not in types else sorted(types)[0] if types else "Thing")


def bounded(text: Any, limit: int = MAX_TEXT) -> str | None:
    """Whitespace collapsed, control characters dropped, cut to ``limit``; None when empty."""
    if text is None or isinstance(text, (dict, list)):
        return None
    text = re.sub(r"[\x00-\x1f\x7f]", " ", str(text))
    text = _SPACES.sub(" ", text).strip()
    return text[:limit] if text else None


# ---- hosts ----------------------------------------------------------------------------------------
_tld = None


def registrable_domain(host: str) -> str:
    """example.co.uk for shop.example.co.uk; uses tldextract's bundled suffix list, no network."""
    global _tld
    if _tld is None:
        import tldextract

        # Private suffixes too: alice.github.io and bob.github.io are two sites, not one.
        _tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True)
    host = (host or "").lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host.strip("[]")))  # an address is its own site
    except ValueError:
        pass
    parts = _tld(host)
    if parts.domain and parts.suffix:
        return f"{parts.domain}.{parts.suffix}"
    # Reserved names such as .test have no public suffix: the last two labels are the site.
    labels = [p for p in host.split(".") if p]
    return ".".join(labels[-2:]) if labels else ""


def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


# ---- operator -------------------------------------------------------------------------------------
# Legal forms that mark a company name (German, Austrian, Swiss, English, and common EU forms).
_LEGAL_FORM = (
    r"(?:GmbH\s*&\s*Co\.\s*KG(?:aA)?|gGmbH|GmbH|mbH|UG\s*\(haftungsbeschränkt\)|UG|AG|KGaA|KG|OHG|"
    r"e\.\s?K\.|e\.\s?Kfm\.|e\.\s?V\.|GbR|PartG(?:\s*mbB)?|Ltd\.?|Limited|LLC|L\.L\.C\.|LLP|Inc\.?|Corp\.?|Corporation|"
    r"plc|PLC|S\.A\.|S\.L\.|SAS|SARL|S\.à\s?r\.l\.|S\.r\.l\.|S\.p\.A\.|B\.V\.|N\.V\.|AB|Oy|ApS|A/S|AS|Pty\.?\s+Ltd\.?)"
)
_NAME_TOKEN = r"(?:[A-ZÄÖÜ0-9][\w'’&+.\-]*|&|\+|und|and|of|for|für|de|der|des|du|la|le|van|von|zu)"
# A company named by its legal form: capitalised words (and connectors) right before the form.
ENTITY = re.compile(rf"(?:{_NAME_TOKEN}\s+){{0,7}}?[A-ZÄÖÜ0-9][\w'’&+.\-]*\s+{_LEGAL_FORM}(?![\w])")
LEGAL_FORM = re.compile(rf"\s{_LEGAL_FORM}(?![\w])")
# Words that start a sentence but never a company name; stripped from the front of a match.
_LEAD_STOP = {
    "die", "der", "das", "the", "firma", "company", "unternehmen", "inhaber", "inhaberin", "betreiber", "betreiberin",
    "anbieter", "herausgeber", "operator", "publisher", "owner", "welcome", "willkommen", "copyright", "impressum",
    "imprint", "angaben", "sitz", "vertreten", "a", "an", "bei", "by", "von", "of", "and", "und", "for", "für",
}
# "Betreiber: X" / "published by X" / "Angaben gemäß § 5 DDG" (name on the next line). Noun labels
# need a colon or the line end, so "Angaben zum Betreiber finden Sie im Impressum" names nobody.
_NOUN_LABEL = (
    r"betreiber(?:in)?|anbieter(?:in)?|diensteanbieter(?:in)?|inhaber(?:in)?|herausgeber(?:in)?|"
    r"operator|publisher|owner|company|firma|website operator|site operator"
)
_VERB_LABEL = (
    r"operated by|published by|run by|owned by|betrieben von|herausgegeben von|"
    r"angaben gem(?:ä|ae)(?:ß|ss) ?§ ?5 (?:tmg|ddg|ecg)|information (?:pursuant to|according to) § ?5 (?:tmg|ddg)"
)
LABEL = re.compile(rf"(?:\b(?P<noun>{_NOUN_LABEL})\s*:|\b(?P<verb>{_VERB_LABEL})\b\s*:?|\b(?P<eol>{_NOUN_LABEL})\s*$)", re.I)
_COPYRIGHT = re.compile(r"^(?:©|\(c\)|copyright\b)\s*(?:©\s*)?(?:(?:19|20)\d{2}\s*(?:[-–]\s*(?:19|20)\d{2})?\s*)?[,:]?\s*(?P<rest>.+)$", re.I)
_PERSON = re.compile(r"^[A-ZÄÖÜ][\w'’.\-]+(?:\s+(?:[A-ZÄÖÜ][\w'’.\-]+|von|van|de|der|zu|du|la|le)){1,5}$")

# Address lines: "Alpenstraße 12", "12 High Street", "83471 Berchtesgaden", "Portland, OR 97201, USA",
# "London EC1A 1AA", "Deutschland". A block of them after the operator's name is its address.
_STREET = re.compile(r"^(?:[^\W\d][\w .'’\-]{1,60}\s\d{1,5}[a-zA-Z]?(?:\s*[-/]\s*\d{1,5}[a-zA-Z]?)?|\d{1,5}[a-zA-Z]?,?\s+[^\W\d][\w .'’\-]{1,60})(?:,.*)?$")
_POSTCODE_CITY = re.compile(r"(?:^|,\s*)(?:[A-Z]{1,2}[-\s])?\d{4,5}\s+[^\W\d][\w .'’\-()]{1,40}")
_US_CITY = re.compile(r"^[^\W\d][\w .'’\-]{1,40},\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?")
_UK_POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b")
_IE_EIRCODE = re.compile(r"\b[AC-FHKNPRTV-Y]\d{2}\s?[AC-FHKNPRTV-Y0-9]{4}\b")
_COUNTRIES = {
    "deutschland", "germany", "österreich", "austria", "schweiz", "switzerland", "suisse", "united kingdom", "uk",
    "england", "usa", "united states", "ireland", "france", "frankreich", "spain", "spanien", "italy", "italien",
    "netherlands", "niederlande", "sweden", "schweden", "denmark", "dänemark", "norway", "finland", "poland", "belgium",
}
_NOT_ADDRESS = re.compile(r"^(?:tel|telefon|phone|fax|e-?mail|mail|web|www|vertreten|represented|register|handelsregister|"
                          r"registergericht|ust|vat|umsatzsteuer|verantwortlich|geschäftsführ|managing|director|inhaber|kontakt|contact)\b", re.I)

EMAIL = re.compile(r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})*\.[A-Za-z]{2,24}")
_EMAIL_AT = re.compile(r"\s*[\(\[\{]\s*(?:at|ät)\s*[\)\]\}]\s*", re.I)
_EMAIL_DOT = re.compile(r"\s*[\(\[\{]\s*(?:dot|punkt)\s*[\)\]\}]\s*", re.I)
PHONE = re.compile(r"\+?\(?\d[\d ()/.\-–]{5,24}\d")
_PHONE_LABEL = re.compile(r"\b(?:telefon|tel|phone|telephone|fon|mobil|mobile)\b\.?\s*:?\s*(?P<number>\+?\(?\d[\d ()/.\-–]{5,24}\d)", re.I)

# Operator pages: where a site says who runs it. Priority: legal notice, about, contact.
OPERATOR_PAGE = re.compile(
    r"/(?P<kind>impressum|imprint|legal|legal-notice|legal-info|site-notice|about|about-us|ueber-uns|uber-uns|"
    r"wir|company|contact|contact-us|kontakt)(?:/|\.html?|\.php)?$",
    re.I,
)
_PAGE_PRIORITY = {"impressum": 0, "imprint": 0, "legal": 0, "legal-notice": 0, "legal-info": 0, "site-notice": 0,
                  "about": 1, "about-us": 1, "ueber-uns": 1, "uber-uns": 1, "wir": 1, "company": 1,
                  "contact": 2, "contact-us": 2, "kontakt": 2}

# How much a name's source is trusted; lower wins. A legal entity beats a brand.
RANK_JSONLD_LEGAL_NAME = 1  # JSON-LD legalName
RANK_LEGAL_ENTITY = 2  # a company named after an imprint label ("Angaben gemäß § 5 DDG"), or a JSON-LD name with a legal form
RANK_IMPRINT_PERSON = 3  # "Betreiber: Lena Hofer": a person runs the site
# A line that is only a company name, without a label: the operator on a contact page, but on an
# imprint it may be the host or the data-protection officer, so a labelled name beats it.
RANK_COMPANY_LINE = 4
RANK_JSONLD_NAME = 5  # a JSON-LD Organization or LocalBusiness name without legal form (often a brand)
RANK_JSONLD_PERSON = 6
RANK_COPYRIGHT = 7  # "© 2026 Example GmbH" in a footer
RANK_SITE_NAME = 9  # og:site_name: a brand, not a legal person

ORG_TYPES = {
    "Organization", "Corporation", "LocalBusiness", "Store", "OnlineStore", "OnlineBusiness", "NewsMediaOrganization",
    "NGO", "EducationalOrganization", "GovernmentOrganization", "MedicalOrganization", "SportsOrganization",
    "PerformingGroup", "ProfessionalService", "FoodEstablishment", "Restaurant", "CafeOrCoffeeShop", "Bakery",
    "LodgingBusiness", "Hotel", "TravelAgency", "AutomotiveBusiness", "HomeAndConstructionBusiness",
    "HealthAndBeautyBusiness", "EntertainmentBusiness", "FinancialService", "LegalService", "RealEstateAgent",
    "SportsActivityLocation", "ShoppingCenter", "Photograph", "Brand",
}
_ORG_SUFFIXES = ("Business", "Store", "Shop", "Organization", "Organisation", "Agency", "Service", "Establishment")


def _is_org(types: set[str]) -> bool:
    return bool(types & (ORG_TYPES - {"Brand", "Photograph"})) or any(t.endswith(_ORG_SUFFIXES) for t in types)


@dataclass(frozen=True)
class Operator:
    """Who runs a page, each detail with the source that stated it (``kind@url``)."""

    name: str | None = None
    name_source: str | None = None
    address: str | None = None
    address_source: str | None = None
    email: str | None = None
    email_source: str | None = None
    phone: str | None = None
    phone_source: str | None = None
    rank: int = 99  # see RANK_*: how far the name's source is trusted

    DETAILS = ("address", "email", "phone")

    def filled_from(self, other: "Operator") -> "Operator":
        """Details this one lacks, taken from another statement about the same operator."""
        changes = {}
        for f in self.DETAILS:
            if getattr(self, f) is None and getattr(other, f) is not None:
                changes[f] = getattr(other, f)
                changes[f + "_source"] = getattr(other, f + "_source")
        return replace(self, **changes) if changes else self

    def with_source_url(self, url: str) -> "Operator":
        changes = {f + "_source": f"{getattr(self, f + '_source')}@{url}" for f in ("name",) + self.DETAILS if getattr(self, f + "_source")}
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f: {"value": getattr(self, f), "source": getattr(self, f + "_source")} for f in ("name",) + self.DETAILS if getattr(self, f)}


def same_party(a: str | None, b: str | None) -> bool:
    """Two names of the same company: equal ignoring case, punctuation and a trailing legal form."""
    if not a or not b:
        return False
    return normalised_name(a) == normalised_name(b) or normalised_name(without_legal_form(a)) == normalised_name(without_legal_form(b))


def normalised_name(name: str) -> str:
    name = name.casefold().replace("&", " and ").replace("+", " and ")
    return " ".join(re.sub(r"[^\w/]+", " ", name).split())


_TRAILING_LEGAL_FORM = re.compile(rf"[\s,]+{_LEGAL_FORM}[\s.,]*$")


def without_legal_form(name: str) -> str:
    """"Nordic Prints GmbH" -> "Nordic Prints"; a name that is only a legal form stays as it is."""
    stripped = name
    for _ in range(3):  # "X GmbH & Co. KG" is one form; a few rounds cover stacked ones
        shorter = _TRAILING_LEGAL_FORM.sub("", stripped)
        if shorter == stripped:
            break
        stripped = shorter
    return stripped if stripped.strip() else name


def _clean_entity(name: str) -> str | None:
    words = name.split()
    while words and (words[0].casefold() in _LEAD_STOP or words[0][:1].islower()):
        words.pop(0)
    cleaned = bounded(" ".join(words).strip(" ,;:-–"))
    return cleaned if cleaned and LEGAL_FORM.search(" " + cleaned) and len(cleaned) >= 4 else None


def _postal_address(value: Any) -> str | None:
    if isinstance(value, str):
        return bounded(value)
    if isinstance(value, list) and value:
        return _postal_address(value[0])
    if not isinstance(value, dict):
        return None
    country = value.get("addressCountry")
    if isinstance(country, dict):
        country = country.get("name")
    postcode, city = value.get("postalCode"), value.get("addressLocality")
    # "20457 Hamburg", but "London EC1A 1AA": British and Irish postcodes follow the town.
    pair = (city, postcode) if isinstance(postcode, str) and re.search(r"[A-Za-z]", postcode) else (postcode, city)
    locality = " ".join(str(v).strip() for v in pair if isinstance(v, (str, int)) and str(v).strip())
    region = value.get("addressRegion") if isinstance(value.get("addressRegion"), str) else None
    parts = [value.get("streetAddress"), locality, region, country]
    return bounded(", ".join(str(p).strip() for p in parts if isinstance(p, (str, int)) and str(p).strip()))


def clean_email(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = unquote(value.strip())
    if value.lower().startswith("mailto:"):
        value = value[7:]
    value = value.split("?", 1)[0]
    value = _EMAIL_DOT.sub(".", _EMAIL_AT.sub("@", value))
    m = EMAIL.search(value)
    return m.group(0).lower()[:254] if m else None


def clean_phone(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = unquote(value.strip())
    if value.lower().startswith("tel:"):
        value = value[4:]
    m = PHONE.search(value)
    if not m or sum(c.isdigit() for c in m.group(0)) < 6:
        return None
    return bounded(m.group(0), 40)


def _address_block(lines: tuple[str, ...], start: int) -> str | None:
    """Consecutive address-like lines from ``start`` (at most four); None unless one has a number."""
    found: list[str] = []
    for line in lines[start:start + 4]:
        if len(line) > 100 or _NOT_ADDRESS.match(line) or EMAIL.search(line) or not _is_address_line(line):
            break
        found.append(line.strip(" ,"))
    if not any(any(c.isdigit() for c in line) for line in found):
        return None
    return bounded(", ".join(found))


def _is_address_line(line: str) -> bool:
    return bool(_STREET.match(line) or _POSTCODE_CITY.search(line) or _US_CITY.match(line) or _UK_POSTCODE.search(line)
                or _IE_EIRCODE.search(line) or line.strip(" .,").casefold() in _COUNTRIES)


def _inline_address(tail: str) -> str | None:
    """The address after a name on the same line: ", 12 High Street, Leeds. Registered in ..." -> 12 High Street, Leeds."""
    tail = tail.strip().lstrip(",;:–- ").strip()
    tail = re.split(r"\.\s+(?=[A-ZÄÖÜ])|\s[–|]\s|\.$", tail, maxsplit=1)[0].strip(" ,.")
    if not tail or not any(c.isdigit() for c in tail) or len(tail) > 200 or EMAIL.search(tail) or _NOT_ADDRESS.match(tail):
        return None
    if not any(_is_address_line(part.strip()) for part in tail.split(",")) and not _is_address_line(tail):
        return None
    return bounded(tail)


@dataclass(frozen=True, order=True)
class _NameCandidate:
    rank: int
    order: int  # position on the page: earlier wins a tie
    name: str = field(compare=False)
    source: str = field(compare=False)
    details: dict = field(compare=False, default_factory=dict)  # field -> (value, source)


def _jsonld_candidates(page: Page) -> Iterator[_NameCandidate]:
    order = 0
    for obj in page.jsonld:
        types = jsonld_types(obj)
        subjects: list[tuple[dict, set[str], str]] = []
        if _is_org(types) or "Person" in types:
            subjects.append((obj, types, ""))
        publisher = obj.get("publisher")
        if isinstance(publisher, dict) and (types & {"Article", "NewsArticle", "BlogPosting", "WebSite", "WebPage", "Report"}):
            subjects.append((publisher, jsonld_types(publisher) or {"Organization"}, f"{_type_label(types)}.publisher."))
        for subject, stypes, prefix in subjects:
            order += 1
            label = prefix + _type_label(stypes)
            legal, name = bounded(subject.get("legalName")), bounded(subject.get("name"))
            if legal:
                rank, chosen, src = RANK_JSONLD_LEGAL_NAME, legal, f"json-ld:{label}.legalName"
            elif name:
                person = "Person" in stypes and not _is_org(stypes)
                rank = RANK_LEGAL_ENTITY if LEGAL_FORM.search(" " + name) else RANK_JSONLD_PERSON if person else RANK_JSONLD_NAME
                chosen, src = name, f"json-ld:{label}.name"
            else:
                continue
            details = {}
            for key, value in (("address", _postal_address(subject.get("address"))), ("email", clean_email(subject.get("email"))),
                               ("phone", clean_phone(subject.get("telephone")))):
                if value:
                    details[key] = (value, f"json-ld:{label}.{'telephone' if key == 'phone' else key}")
            yield _NameCandidate(rank, order, chosen, src, details)


def _text_candidates(page: Page, imprint_rules: bool) -> Iterator[_NameCandidate]:
    """Names stated in the visible text. Label and company-line rules only on operator pages."""
    lines = page.lines
    for i, line in enumerate(lines):
        order = 1000 + i
        m = _COPYRIGHT.match(line)
        if m:
            rest = m.group("rest").strip()
            entity = ENTITY.search(rest)
            name = _clean_entity(entity.group(0)) if entity else None
            if name is None and not re.search(r"all rights|alle rechte", rest, re.I):
                name = bounded(re.split(r"[.|·]|\s[–-]\s", rest)[0].strip(" ,."), 120)
            if name and len(name) >= 3:
                yield _NameCandidate(RANK_COPYRIGHT, order, name, "copyright-notice")
            continue
        if not imprint_rules:
            continue
        label = LABEL.search(line)
        if label:
            rest = line[label.end():].strip(" :-–")
            block_start = i + 1
            if not rest and i + 1 < len(lines):
                rest, block_start = lines[i + 1], i + 2
            if not rest:
                continue
            entity = ENTITY.search(rest)
            name = _clean_entity(entity.group(0)) if entity else None
            if name:
                tail = rest[entity.end():]
                address = _inline_address(tail) if tail.strip(" .") else None
                address = address or (_address_block(lines, block_start) if not tail.strip(" .,") else None)
                yield _NameCandidate(RANK_LEGAL_ENTITY, order, name, "imprint:operator-line",
                                     {"address": (address, "imprint:address-after-name")} if address else {})
                continue
            person = re.split(r",|\s\(|\.\s|;", rest)[0].strip(" .")
            if _PERSON.match(person) and len(person) <= 80:
                address = _address_block(lines, block_start) if person == rest.strip(" .") else _inline_address(rest[len(person):])
                yield _NameCandidate(RANK_IMPRINT_PERSON, order, bounded(person), "imprint:operator-line",
                                     {"address": (address, "imprint:address-after-name")} if address else {})
            continue
        entity = ENTITY.fullmatch(line.strip(" ,.;")) if len(line) <= 120 else None
        if entity:
            name = _clean_entity(entity.group(0))
            if name:
                address = _address_block(lines, i + 1)
                yield _NameCandidate(RANK_COMPANY_LINE, order, name, "imprint:company-line",
                                     {"address": (address, "imprint:address-after-name")} if address else {})


def _page_contacts(page: Page) -> dict[str, tuple[str, str]]:
    """E-mail and phone stated on an operator page: mailto:/tel: links first, then labelled text."""
    found: dict[str, tuple[str, str]] = {}
    if page.doc is None:
        return found
    for a in page.doc.xpath("(//a[@href])[position() <= 2000]"):
        href = a.get("href", "").strip()
        low = href[:7].lower()
        if "email" not in found and low.startswith("mailto:") and (email := clean_email(href)):
            found["email"] = (email, "mailto-link")
        elif "phone" not in found and low.startswith("tel:"):
            shown = clean_phone(_text_of(a)[:60])
            if phone := shown or clean_phone(href):
                found["phone"] = (phone, "tel-link")
    text = page.text
    if "email" not in found:
        m = EMAIL.search(_EMAIL_DOT.sub(".", _EMAIL_AT.sub("@", text)))
        if m:
            found["email"] = (m.group(0).lower(), "imprint:email-text")
    if "phone" not in found:
        m = _PHONE_LABEL.search(text)
        if m and (phone := clean_phone(m.group("number"))):
            found["phone"] = (phone, "imprint:phone-text")
    return found


def operator_details(html: Page | bytes | str | None, url: str = "", imprint_rules: bool = True) -> Operator:
    """The operator a page names, with each detail's source.

    ``imprint_rules``: read labelled lines ("Betreiber:", "Angaben gemäß § 5 DDG", "operated by"),
    company lines and contact links; only on operator pages (imprint, about, contact), since on
    other pages a company in the text is more often a subject than the operator. JSON-LD,
    copyright notices and og:site_name are read on every page.
    """
    page = as_page(html)
    if page.doc is None:
        return Operator()
    candidates = [*_jsonld_candidates(page), *_text_candidates(page, imprint_rules)]
    site_name = page.doc.xpath('//meta[@property="og:site_name"]/@content')
    if site_name and (name := bounded(site_name[0])):
        candidates.append(_NameCandidate(RANK_SITE_NAME, 10**6, name, "og:site_name"))
    candidates.sort()
    if not candidates:
        # A contact page may name nobody and still give the site's e-mail and phone.
        op = Operator()
        for key, (value, source) in sorted((_page_contacts(page) if imprint_rules else {}).items()):
            op = replace(op, **{key: value, key + "_source": source})
        return op.with_source_url(url) if url else op
    best = candidates[0]
    op = Operator(best.name, best.source, rank=best.rank)
    details = dict(best.details)
    # The same party named again on the page (JSON-LD and imprint text) may add details.
    for other in candidates[1:]:
        if same_party(other.name, best.name):
            for key, value in other.details.items():
                details.setdefault(key, value)
    if imprint_rules:
        for key, value in _page_contacts(page).items():
            details.setdefault(key, value)
    for key, (value, source) in sorted(details.items()):
        if value:
            op = replace(op, **{key: value, key + "_source": source})
    return op.with_source_url(url) if url else op


def operator_from_html(html: Page | bytes | str | None) -> tuple[str | None, str | None]:
    """(name, source) of the operator a page names; (None, None) when it names none."""
    op = operator_details(html)
    return op.name, op.name_source


def site_operator(operator_pages: Iterable[tuple[str, Page]]) -> Operator:
    """The operator of one site from its pages: best-ranked name (legal notice before about before
    contact before anything else), details filled from the other operator pages of the site."""
    found: list[tuple[int, int, str, Operator]] = []
    for url, page in operator_pages:
        m = OPERATOR_PAGE.search(urlsplit(url).path or "/")
        priority = _PAGE_PRIORITY.get(m.group("kind").lower(), 3) if m else 3
        op = operator_details(page, url, imprint_rules=m is not None)
        if op.name or any(getattr(op, f) for f in Operator.DETAILS):
            found.append((op.rank, priority, url, op))
    named = sorted((t for t in found if t[3].name), key=lambda t: t[:3])
    if not named:
        return Operator()
    best = named[0][3]
    for rank, priority, url, op in sorted(found, key=lambda t: (t[1], t[2])):
        # Details from the site's other imprint/about/contact pages, when they speak of the same
        # party, name nobody, or name only the site itself (a copyright line, a brand).
        if op is not best and priority < 3 and (op.name is None or same_party(op.name, best.name) or op.rank >= RANK_COPYRIGHT):
            best = best.filled_from(op)
    return best


# ---- marketplace seller ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Seller:
    """The seller a product page names (JSON-LD Offer.seller or microdata), and where it is described."""

    name: str
    source: str
    url: str | None = None  # the seller's own page, absolute
    address: str | None = None


def _offers(product: Mapping) -> Iterator[dict]:
    offers = product.get("offers")
    for offer in offers if isinstance(offers, list) else [offers]:
        if isinstance(offer, dict):
            yield offer
            inner = offer.get("offers")  # AggregateOffer
            if isinstance(inner, list):
                yield from (o for o in inner[:50] if isinstance(o, dict))


def seller_from_page(html: Page | bytes | str | None, page_url: str = "") -> Seller | None:
    """The marketplace seller of a product page: JSON-LD Product offers.seller, else microdata."""
    page = as_page(html)
    if page.doc is None:
        return None
    for obj in page.jsonld:
        if not jsonld_types(obj) & {"Product", "Offer", "IndividualProduct", "ProductModel"}:
            continue
        for offer in _offers(obj) if "Offer" not in jsonld_types(obj) else [obj]:
            seller = offer.get("seller")
            if isinstance(seller, list) and seller:
                seller = seller[0]
            if isinstance(seller, str) and (name := bounded(seller)):
                return Seller(name, "json-ld:Offer.seller")
            if isinstance(seller, dict) and (name := bounded(seller.get("legalName") or seller.get("name"))):
                url = _absolute(seller.get("url") or seller.get("@id"), page_url)
                return Seller(name, "json-ld:Offer.seller", url, _postal_address(seller.get("address")))
    for el in page.doc.xpath('//*[@itemprop="seller"]')[:5]:
        names = el.xpath('.//*[@itemprop="name"]')
        name = bounded((names[0].get("content") or _text_of(names[0])) if names else _text_of(el))
        if name:
            links = el.xpath('.//*[@itemprop="url"]/@href') or el.xpath(".//a/@href")
            return Seller(name, "microdata:Offer.seller", _absolute(links[0] if links else None, page_url))
    return None


def _absolute(url: Any, base: str) -> str | None:
    if not isinstance(url, str) or not url.strip():
        return None
    try:
        full = urljoin(base, url.strip()) if base else url.strip()
    except ValueError:
        return None
    return full[:MAX_URL] if urlsplit(full).scheme in ("http", "https") else None


# ---- dates ----------------------------------------------------------------------------------------
_PUBLISHED_JSONLD = ("datePublished", "dateCreated", "uploadDate")
_MODIFIED_JSONLD = ("dateModified",)
# Objects whose dates are about something else than the page: a review or comment on a product page.
_FOREIGN_DATE_TYPES = {"Review", "Comment", "Question", "Answer", "Rating", "AggregateRating", "Event", "Offer", "Person"}
_PUBLISHED_META = {
    "article:published_time", "og:published_time", "og:article:published_time", "datepublished", "date", "dc.date",
    "dc.date.issued", "dc.date.created", "dcterms.created", "dcterms.issued", "dcterms.date", "pubdate", "publishdate",
    "publish-date", "publish_date", "publication_date", "parsely-pub-date", "sailthru.date", "citation_publication_date",
    "citation_date", "article.published", "article_date_original", "originalpublicationdate", "uploaddate",
}
_MODIFIED_META = {"article:modified_time", "og:updated_time", "datemodified", "last-modified", "dcterms.modified", "article.updated"}
_URL_DATE = re.compile(r"/((?:19|20)\d{2})[/-](0[1-9]|1[0-2])(?:[/-](0[1-9]|[12]\d|3[01]))?(?=[/-_.]|$)")
PUBLISHED = "published"
MODIFIED = "modified"
FOREIGN = "foreign"  # a date of something else on the page: a review, a comment, an event
# The image file's own Last-Modified: a fallback like the page's, but an image older than the page
# that shows it is normal (uploaded, then used), so it never contradicts a publication date.
IMAGE_LAST_MODIFIED = "http:image-last-modified"


@dataclass(frozen=True)
class DateCandidate:
    """One date a page states, where it states it, and what it claims (publication or modification)."""

    source: str
    raw: str
    kind: str = PUBLISHED  # published | modified | foreign
    precise: bool = True  # False: a month without a day (a URL like /2026/03/slug)
    ambiguous: bool = False  # one of several <time> dates on a listing page

    @property
    def date(self) -> dt.date | None:
        return parse_date(self.raw)


@dataclass(frozen=True)
class PublicationDate:
    """The chosen publication date (or None) with its source or an ``unknown:`` reason, and every candidate."""

    date: dt.date | None
    source: str
    candidates: tuple[dict, ...] = ()

    @property
    def iso(self) -> str | None:
        return self.date.isoformat() if self.date else None


def parse_date(raw: Any) -> dt.date | None:
    """The calendar date a string states: ISO 8601 (the date as written, before any zone
    conversion), RFC 2822 (HTTP headers), or 31.12.2026; None if it states none."""
    if not isinstance(raw, str):
        return None
    raw = raw.strip()[:64]
    m = re.match(r"^(\d{4})-(\d{2})-(\d{2})", raw) or re.match(r"^(\d{4})(\d{2})(\d{2})(?:T|$)", raw)
    if m:
        try:
            return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            return None
    m = re.match(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})\b", raw)
    if m:
        try:
            return dt.date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
        except ValueError:
            return None
    try:
        return parsedate_to_datetime(raw).date()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def date_candidates(html: Page | bytes | str | None, url: str = "", last_modified: str | None = None,
                    crawl_candidates: Iterable[str] = (), run_date: dt.date | None = None,
                    image_last_modified: str | None = None) -> list[DateCandidate]:
    """Every date the page and its response state, in a fixed order, each with its source.

    ``crawl_candidates`` (raw strings the crawler kept, without sources) are used only when the
    HTML is not available, since they come from the same HTML.
    """
    page = as_page(html)
    found: list[DateCandidate] = []
    if page.doc is not None:
        for obj in page.jsonld:
            types = jsonld_types(obj)
            label = _type_label(types, "Thing")
            foreign = bool(types & _FOREIGN_DATE_TYPES)
            for keys, kind in ((_PUBLISHED_JSONLD, FOREIGN if foreign else PUBLISHED), (_MODIFIED_JSONLD, FOREIGN if foreign else MODIFIED)):
                for key in keys:
                    if isinstance(obj.get(key), str) and (raw := bounded(obj[key], 64)):
                        found.append(DateCandidate(f"json-ld:{label}.{key}", raw, kind))
        for el in page.doc.xpath("(//meta[@content])[position() <= 500]"):
            key = (el.get("property") or el.get("name") or el.get("itemprop") or el.get("http-equiv") or "").strip().lower()
            if key in _PUBLISHED_META or key in _MODIFIED_META:
                if raw := bounded(el.get("content"), 64):
                    found.append(DateCandidate(f"meta:{key}", raw, PUBLISHED if key in _PUBLISHED_META else MODIFIED))
        found.extend(_time_candidates(page))
        htmldate = _htmldate(page, url, run_date)
        if htmldate:
            found.append(htmldate)
    else:
        found.extend(DateCandidate("crawl:page-metadata", r) for raw in crawl_candidates if (r := bounded(raw, 64)))
    m = _URL_DATE.search(urlsplit(url).path) if url else None
    if m:
        year, month, day = m.groups()
        found.append(DateCandidate("url-path", f"{year}-{month}-{day or '01'}", PUBLISHED, precise=day is not None))
    if last_modified and (raw := bounded(last_modified, 64)):
        found.append(DateCandidate("http:last-modified", raw, MODIFIED))
    if image_last_modified and (raw := bounded(image_last_modified, 64)):
        found.append(DateCandidate(IMAGE_LAST_MODIFIED, raw, MODIFIED))
    return found[:MAX_DATE_CANDIDATES]


def _time_candidates(page: Page) -> list[DateCandidate]:
    """<time datetime> elements. The first one inside the first <article> dates the article; on a
    page with several distinct dates outside it (a listing, a sidebar), those are ambiguous."""
    article_time = page.doc.xpath("(//article)[1]//time[@datetime]")
    first = article_time[0] if article_time else None
    times = page.doc.xpath("(//time[@datetime])[position() <= 100]")
    others = [t for t in times if t is not first]
    distinct = {parse_date(t.get("datetime")) for t in times} - {None}
    out = []
    if first is not None and (raw := bounded(first.get("datetime"), 64)):
        out.append(DateCandidate("html:article-time", raw))
    for t in others:
        if raw := bounded(t.get("datetime"), 64):
            out.append(DateCandidate("html:time", raw, ambiguous=len(distinct) > 1))
    return out


def _htmldate(page: Page, url: str, run_date: dt.date | None) -> DateCandidate | None:
    try:
        from htmldate import find_date

        found = find_date(page.html[:MAX_HTMLDATE_CHARS], url=url or None, original_date=True, extensive_search=False,
                          min_date=MIN_CREDIBLE_DATE.isoformat(), max_date=(run_date or dt.date.today()).isoformat())
    except Exception:  # htmldate is defensive, but a hostile page must never fail a run
        return None
    return DateCandidate("htmldate", found) if found else None


_SOURCE_ORDER = ("json-ld", "meta", "html:article-time", "html:time", "url-path", "htmldate", "crawl", "http:last-modified", "http")


def _source_rank(source: str) -> int:
    return next((i for i, prefix in enumerate(_SOURCE_ORDER) if source.startswith(prefix)), len(_SOURCE_ORDER))


def choose_publication_date(candidates: Iterable[DateCandidate], run_date: dt.date,
                            not_before: tuple[dt.date, str] | None = None) -> PublicationDate:
    """The earliest credible publication date, and every candidate with its verdict.

    Credible: parseable, not before 1995 (CMS defaults such as 1970-01-01), not after the run date,
    a full date (not a month from a URL), and not one of several dates on a listing page. A
    modification date (JSON-LD dateModified, modified meta, HTTP Last-Modified) only stands in
    when the page states no credible publication date, and never when it is earlier than one:
    a page cannot have been modified before it was published, so such a header is the one that lies.

    ``not_before`` (date, source) is a lower bound from elsewhere: a listing page cannot show a
    product photo before the product page was published. Candidates before it are contradicted;
    when no candidate is left, the bound itself is the date.
    """
    candidates = list(candidates)
    # htmldate reads text and any markup (a review's date too): it corroborates the page's own
    # structured dates but does not overrule them with an earlier one.
    structured = [d for c in candidates if c.kind == PUBLISHED and c.precise and not c.ambiguous and c.source != "htmldate"
                  and (d := c.date) and MIN_CREDIBLE_DATE <= d <= run_date]
    judged: list[tuple[DateCandidate, dt.date | None, str]] = []
    for c in candidates:
        d = c.date
        if c.kind == FOREIGN:
            verdict = "not-about-this-page"
        elif d is None:
            verdict = "unparseable"
        elif d < MIN_CREDIBLE_DATE:
            verdict = "implausible:before-1995"
        elif d > run_date:
            verdict = "implausible:after-run-date"
        elif not c.precise:
            verdict = "imprecise:month-only"
        elif c.ambiguous:
            verdict = "ambiguous:several-dates-on-page"
        elif not_before is not None and d < not_before[0]:
            verdict = "contradicted:before-" + not_before[1].split(":", 1)[0]
        elif c.source == "htmldate" and structured and d < min(structured):
            verdict = "uncorroborated:earlier-than-page-metadata"
        else:
            verdict = "credible"
        judged.append((c, d, verdict))
    published = [(d, _source_rank(c.source), c) for c, d, v in judged if v == "credible" and c.kind == PUBLISHED]
    modified = [(d, _source_rank(c.source), c) for c, d, v in judged if v == "credible" and c.kind == MODIFIED]
    chosen = min(published, key=lambda t: t[:2], default=None)
    fallback = False
    if chosen is None and not_before is None:  # a stated lower bound is publication evidence: it beats a modification date
        chosen = min(modified, key=lambda t: t[:2], default=None)
        fallback = chosen is not None
    records = []
    for c, d, verdict in judged:
        if chosen is not None and c is chosen[2]:
            verdict = "chosen:modification-date-only" if fallback else "chosen"
        elif (verdict == "credible" and c.kind == MODIFIED and chosen is not None and not fallback and d < chosen[0]
              and c.source != IMAGE_LAST_MODIFIED):
            verdict = "contradicted:modified-before-published"
        elif verdict == "credible" and c.kind == MODIFIED and not fallback:
            verdict = "not-used:modification-date"
        records.append({"source": c.source, "raw": c.raw, "date": d.isoformat() if d else None, "kind": c.kind, "verdict": verdict})
    if chosen is None and not_before is not None:
        records.append({"source": not_before[1], "raw": not_before[0].isoformat(), "date": not_before[0].isoformat(),
                        "kind": PUBLISHED, "verdict": "chosen:lower-bound"})
        return PublicationDate(not_before[0], not_before[1], tuple(records))
    if chosen is None:
        if not records:
            reason = "unknown:no-date-found"
        else:
            reasons = sorted({r["verdict"] for r in records})
            reason = "unknown:no-credible-date(" + ",".join(reasons) + ")"
        return PublicationDate(None, reason, tuple(records))
    return PublicationDate(chosen[0], chosen[2].source, tuple(records))


def published_date(html: Page | bytes | str | None, run_date: dt.date, url: str = "", last_modified: str | None = None,
                   crawl_candidates: Iterable[str] = (), not_before: tuple[dt.date, str] | None = None,
                   image_last_modified: str | None = None) -> PublicationDate:
    """The publication date of a page: every candidate collected, the earliest credible chosen."""
    page = as_page(html)
    found = date_candidates(page, url, last_modified, crawl_candidates, run_date, image_last_modified)
    return choose_publication_date(found, run_date, not_before)


# ---- usage ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UsagePeriod:
    since: dt.date
    since_source: str  # "published:<source>" or "first-seen"
    until: dt.date
    days: int  # calendar days from since to until, both counted: a use found today is 1 day old


def usage_period(published: PublicationDate, first_seen: dt.date, last_seen: dt.date) -> UsagePeriod:
    """Since when the image is in use: its page's publication date, or our first sighting if earlier
    (a page re-dated by its CMS) or if the page states no credible date."""
    if published.date is not None and published.date <= first_seen:
        since, source = published.date, f"published:{published.source}"
    else:
        since, source = first_seen, "first-seen"
    return UsagePeriod(since, source, last_seen, (last_seen - since).days + 1)


# ---- kind of use, display size, attribution -------------------------------------------------------
# Hosts whose pages are posts on a social network: priced as social media use.
SOCIAL_DOMAINS = frozenset({
    "facebook.com", "fb.com", "instagram.com", "twitter.com", "x.com", "pinterest.com", "pinterest.de", "pinterest.co.uk",
    "tiktok.com", "linkedin.com", "reddit.com", "tumblr.com", "threads.net", "vk.com", "bsky.app", "mastodon.social",
    "flickr.com", "youtube.com", "xing.com",
})
_EDITORIAL_TYPES = {"Article", "NewsArticle", "BlogPosting", "Blog", "Report", "ScholarlyArticle", "TechArticle", "LiveBlogPosting", "OpinionNewsArticle"}
_PRODUCT_TYPES = {"Product", "IndividualProduct", "ProductModel", "Offer", "AggregateOffer", "Vehicle", "Car"}


def page_kind(html: Page | bytes | str | None, registrable: str = "") -> tuple[str, str]:
    """(kind of use, why): product (shop or marketplace product photo), editorial (article or
    blog post), social (a social network), or commercial (any other site)."""
    if registrable in SOCIAL_DOMAINS:
        return "social", f"domain:{registrable}"
    page = as_page(html)
    if page.doc is None:
        return "commercial", "unknown:no-html(default)"
    types = set().union(*(jsonld_types(o) for o in page.jsonld)) if page.jsonld else set()
    if types & _PRODUCT_TYPES:
        return "product", "json-ld:" + sorted(types & _PRODUCT_TYPES)[0]
    if types & _EDITORIAL_TYPES:
        return "editorial", "json-ld:" + sorted(types & _EDITORIAL_TYPES)[0]
    og_type = [t.strip().lower() for t in page.doc.xpath('//meta[@property="og:type"]/@content')[:1]]
    if og_type and og_type[0] in ("product", "product.item", "og:product"):
        return "product", f"og:type={og_type[0]}"
    if og_type and og_type[0] == "article":
        return "editorial", "og:type=article"
    if page.doc.xpath('//*[@itemtype][contains(@itemtype, "schema.org/Product")]'):
        return "product", "microdata:Product"
    return "commercial", "default:no-product-or-article-markup"


def _dimension(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*(\d{1,5})\s*(?:px)?\s*", value)
    return int(m.group(1)) if m and 0 < int(m.group(1)) <= 20000 else None


def display_size(html: Page | bytes | str | None, page_url: str, image_url: str) -> tuple[int | None, int | None, str]:
    """(width, height, source) the page displays the image at, from its <img> width/height.

    The largest declared size among the elements that show this image wins; (None, None, reason)
    when the page declares none (CSS backgrounds, srcset-only, og:image share previews).
    """
    page = as_page(html)
    if page.doc is None:
        return None, None, "unknown:no-html"
    best: tuple[int, int, int] | None = None
    shown_as: set[str] = set()
    for el in page.doc.xpath("(//img|//source|//meta[@content]|//*[@style]|//*[@data-src])[position() <= 5000]"):
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        refs = [el.get(a) for a in ("src", "data-src", "data-lazy-src", "data-original")]
        for a in ("srcset", "data-srcset"):
            refs.extend(part.strip().split(" ")[0] for part in (el.get(a) or "").split(",") if part.strip())
        if tag == "meta" and (el.get("property") or el.get("name") or "").lower() in ("og:image", "twitter:image"):
            refs.append(el.get("content"))
        if el.get("style"):
            refs.extend(re.findall(r"url\(\s*['\"]?([^'\")]+)", el.get("style") or ""))
        if not any(_absolute(r, page_url) == image_url for r in refs if r):
            continue
        shown_as.add("og:image" if tag == "meta" else tag)
        w, h = _dimension(el.get("width")), _dimension(el.get("height"))
        if tag == "img" and (w or h):
            longest = max(w or 0, h or 0)
            if best is None or longest > best[0]:
                best = (longest, w or 0, h or 0)
    if best is not None:
        return best[1] or None, best[2] or None, "img-attributes"
    if not shown_as:
        return None, None, "unknown:image-not-referenced-in-html"
    return None, None, "unknown:no-declared-size(" + ",".join(sorted(shown_as)) + ")"


# Words that describe a customer's business rather than name it: "Jana Novak Photography" is
# credited as "Foto: Jana Novak" as often as in full.
_GENERIC_NAME_WORDS = {"photography", "photo", "photos", "fotografie", "foto", "fotos", "studio", "studios", "agency",
                       "agentur", "images", "pictures", "bildagentur", "media", "medien", "gmbh", "ltd", "llc", "inc"}


def attribution(html: Page | bytes | str | None, author_names: Iterable[str]) -> tuple[bool, str]:
    """(credited, evidence): whether the page names the author anywhere in its visible text or an
    image's alt/title, with the text found (or what was looked for)."""
    page = as_page(html)
    variants: list[str] = []
    for name in author_names:
        name = bounded(name) or ""
        if not name:
            continue
        variants.append(name)
        words = name.split()
        while words and words[-1].casefold().strip(".") in _GENERIC_NAME_WORDS:
            words.pop()
        short = " ".join(words)
        if short and short != name and (len(words) >= 2 or len(short) >= 6):
            variants.append(short)
    if not variants:
        return False, "unknown:no-author-name"
    if page.doc is None:
        return False, "unknown:no-html"
    texts = [page.text] + [v for v in page.doc.xpath("//img/@alt|//img/@title")[:500] if isinstance(v, str)]
    for variant in dict.fromkeys(variants):
        pattern = re.compile(r"(?<!\w)" + re.escape(variant).replace(r"\ ", r"\s+") + r"(?!\w)", re.I)
        for text in texts:
            m = pattern.search(text)
            if m:
                start = max(0, m.start() - 40)
                return True, bounded(text[start:m.end() + 40], 120) or variant
    return False, "not-found:" + "|".join(dict.fromkeys(variants))[:200]


# ---- the enriched table ---------------------------------------------------------------------------
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
    earlier run found it (see hunt.first_seen_history). A row that cannot be enriched (a bug meets
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
    return Seller(name, f"crawl:{source}:Offer.seller", _absolute(url, row.get("url") or ""))


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
