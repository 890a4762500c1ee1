"""Who runs a page: the operator's name, address, e-mail and phone, each with the source that stated it.

Sources, most trusted first (``RANK_*``): JSON-LD legalName, a company named after an imprint
label ("Angaben gemäß § 5 DDG"), a person named as operator, a company line, JSON-LD names, a
footer copyright notice, og:site_name. ``operator_details`` reads one page; ``site_operator``
combines a site's imprint, about, contact and home pages (``OPERATOR_PAGE``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator
from urllib.parse import unquote, urlsplit

from copyhunt.enrich.page import Page, as_page, bounded, jsonld_types, text_of, type_label
from copyhunt.parties import LEGAL_FORM_PATTERN, same_party

_NAME_TOKEN = r"(?:[A-ZÄÖÜ0-9][\w'’&+.\-]*|&|\+|und|and|of|for|für|de|der|des|du|la|le|van|von|zu)"
# A company named by its legal form: capitalised words (and connectors) right before the form.
ENTITY = re.compile(rf"(?:{_NAME_TOKEN}\s+){{0,7}}?[A-ZÄÖÜ0-9][\w'’&+.\-]*\s+{LEGAL_FORM_PATTERN}(?![\w])")
LEGAL_FORM = re.compile(rf"\s{LEGAL_FORM_PATTERN}(?![\w])")
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





def _clean_entity(name: str) -> str | None:
    words = name.split()
    while words and (words[0].casefold() in _LEAD_STOP or words[0][:1].islower()):
        words.pop(0)
    cleaned = bounded(" ".join(words).strip(" ,;:-–"))
    return cleaned if cleaned and LEGAL_FORM.search(" " + cleaned) and len(cleaned) >= 4 else None


def postal_address(value: Any) -> str | None:
    if isinstance(value, str):
        return bounded(value)
    if isinstance(value, list) and value:
        return postal_address(value[0])
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
            subjects.append((publisher, jsonld_types(publisher) or {"Organization"}, f"{type_label(types)}.publisher."))
        for subject, stypes, prefix in subjects:
            order += 1
            label = prefix + type_label(stypes)
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
            for key, value in (("address", postal_address(subject.get("address"))), ("email", clean_email(subject.get("email"))),
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
            shown = clean_phone(text_of(a)[:60])
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
