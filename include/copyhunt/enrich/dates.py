"""Since when a page shows an image: its publication date and the usage period.

``date_candidates`` collects every date the page and its responses state (JSON-LD, meta tags,
<time>, the URL, htmldate, HTTP Last-Modified), each with its source; ``choose_publication_date``
picks the earliest credible one and keeps every candidate with its verdict; ``usage_period``
takes the earlier of that date and our first sighting.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Iterable
from urllib.parse import urlsplit

from copyhunt.enrich.page import Page, as_page, bounded, jsonld_types, type_label

# ---- bounds ---------------------------------------------------------------------------------------
MAX_HTMLDATE_CHARS = 512_000  # htmldate re-parses its input; dates sit in the head and the top of an article
MAX_DATE_CANDIDATES = 40  # recorded per page; a page with hundreds of dates is a listing anyway

# A date before the web was public is a CMS default (1970-01-01, 0001-01-01), not a publication.
MIN_CREDIBLE_DATE = dt.date(1995, 1, 1)


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
            label = type_label(types, "Thing")
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
