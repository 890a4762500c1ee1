"""URL policy for the crawler, as pure functions: canonical form, crawl scope and trap guards.

Every URL the spider emits goes through :func:`canonical_url`, so deduplication, budgets and the
output tables all agree on one spelling of a URL. Nothing here touches the network.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from w3lib.url import canonicalize_url

HTTP_SCHEMES = frozenset({"http", "https"})
# Session ids make every visit mint new URLs for the same pages (a classic crawler trap) and
# would leak one visitor's session into our evidence. Compared case-insensitively.
SESSION_PARAMS = frozenset({"sid", "sessionid", "session_id", "phpsessid", "jsessionid", "aspsessionid"})
# Servlet containers put the session id in a path parameter: /page;jsessionid=ABC?x=1
_PATH_SESSION = re.compile(r";(?:jsessionid|phpsessid|sessionid|sid)=[^/?#;]*", re.IGNORECASE)

# Trap guards. Values chosen to be generous for real sites and tight for generated URL spaces.
MAX_URL_LENGTH = 2000  # longest URL that older browsers and most CDNs accept
MAX_QUERY_PARAMS = 8  # faceted-search and calendar traps grow the query string without end
MAX_SEGMENT_REPEATS = 2  # /a/b/a/b/a/ : a relative link resolved against itself, over and over
MAX_PATH_SEGMENTS = 30
# A calendar mints a page for every day and month without end, all of one URL shape with only the
# date changing. Real dated pages carry a slug next to the date (/2024/03/01/my-post), so each
# has its own shape; a shape seen on more pages than this in one run is a calendar.
MAX_PAGES_PER_DATE_PATTERN = 50

# Dates inside URLs: 2024-03, 2024/03/01, 2024_03, 20240301 (years 1900-2099, months 1-12).
_DATE_IN_URL = re.compile(
    r"(?<![0-9])(?:19|20)[0-9]{2}(?:[-/_.](?:0?[1-9]|1[0-2])(?:[-/_.](?:0?[1-9]|[12][0-9]|3[01]))?(?![0-9])"
    r"|(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])?(?![0-9]))"
)
# Query keys that split a date across parameters: ?year=2024&month=5
_DATE_KEYS = frozenset({"year", "month", "day", "y", "m", "d", "date", "week", "jahr", "monat", "tag"})
_DIGITS = re.compile(r"[0-9]+")


def strip_session_params(url: str) -> str:
    """Drop session-id query parameters and ``;jsessionid=`` path parameters."""
    parts = urlsplit(url)
    path = _PATH_SESSION.sub("", parts.path)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if k.lower() not in SESSION_PARAMS]
        if len(kept) != len(pairs):
            query = urlencode(kept)
    return urlunsplit((parts.scheme, parts.netloc, path, query, parts.fragment))


# Site navigation repeats the same links on every page; canonicalising is the costliest step of
# link extraction, and a pure function of the string.
@functools.lru_cache(maxsize=1 << 16)
def canonical_url(url: str) -> str | None:
    """The one spelling of ``url`` used everywhere, or None if it is not a usable http(s) URL.

    Session ids are stripped, then w3lib canonicalises (sorted query, no fragment, normalised
    percent-encoding, lower-case host).
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        if parts.scheme.lower() not in HTTP_SCHEMES or not parts.hostname:
            return None
        return canonicalize_url(strip_session_params(url))
    except ValueError:  # bad port, bad IPv6 literal, ...
        return None


def host_of(url: str) -> str:
    """Lower-case host name of a URL without port ('' if none)."""
    try:
        return (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:
        return ""


def scope_hosts(seeds: Iterable[str]) -> frozenset[str]:
    """The host names a crawl may follow links within: each seed's host, without a ``www.``."""
    out = set()
    for seed in seeds:
        host = host_of(seed)
        if host:
            out.add(host[4:] if host.startswith("www.") else host)
    return frozenset(out)


def in_scope(url: str, hosts: frozenset[str]) -> bool:
    """True if the URL's host is one of ``hosts`` or a subdomain of one (www. included)."""
    host = host_of(url)
    return any(host == h or host.endswith("." + h) for h in hosts)


def date_pattern(url: str) -> str | None:
    """The URL's shape with its date taken out, if it has a date in it; None otherwise.

    ``http://e.com/calendar/2024/05`` and ``http://e.com/calendar/2031/11`` share the pattern
    ``e.com/calendar/N/N``; ``/2024/03/01/my-post`` keeps its slug, so every post has its own.
    """
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    split_date = sum(1 for k, v in pairs if k.lower() in _DATE_KEYS and v[:1].isdigit()) >= 2
    has_date = bool(_DATE_IN_URL.search(parts.path) or _DATE_IN_URL.search(parts.query)) or split_date
    if not has_date:
        return None
    query = "&".join(f"{k}={_DIGITS.sub('N', v)}" for k, v in pairs)
    return f"{parts.netloc}{_DIGITS.sub('N', parts.path)}?{query}"


def trap_reason(
    url: str,
    *,
    max_length: int = MAX_URL_LENGTH,
    max_query_params: int = MAX_QUERY_PARAMS,
) -> str | None:
    """Why a page URL looks like a crawler trap (``trap:...``), or None if it looks fine."""
    if len(url) > max_length:
        return "trap:url-too-long"
    parts = urlsplit(url)
    if parts.query and len(parse_qsl(parts.query, keep_blank_values=True)) > max_query_params:
        return "trap:too-many-params"
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) > MAX_PATH_SEGMENTS:
        return "trap:deep-path"
    if segments and max(Counter(segments).values()) > MAX_SEGMENT_REPEATS:
        return "trap:repeating-path"
    return None
