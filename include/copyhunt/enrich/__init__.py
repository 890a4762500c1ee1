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
which bounds the time a page can take, however hostile (thousands of <time> elements, an
imprint of endless lines); JSON-LD is bounded in size, count and depth, and every string that
leaves this module is bounded in length.

Where each concern lives:

* ``stage``: ``enrich_matches``, the entry point ``copyhunt.stages.enrich`` calls, and the enriched table;
* ``page``: parsing and the bounds on untrusted HTML; ``hosts``: host and registrable domain;
* ``operator``: who runs a page; ``seller``: the seller a marketplace product page names;
* ``dates``: publication date and usage period;
* ``kind_of_use``, ``display``, ``credit``: kind of use, display size and attribution.

``copyhunt.parties.same_party`` (is this the same company?) is shared with pricing. The names
below are the package's public face: import them from ``copyhunt.enrich``.
"""

from copyhunt.enrich.credit import attribution
from copyhunt.enrich.dates import (
    FOREIGN,
    IMAGE_LAST_MODIFIED,
    MAX_DATE_CANDIDATES,
    MODIFIED,
    PUBLISHED,
    DateCandidate,
    PublicationDate,
    UsagePeriod,
    choose_publication_date,
    date_candidates,
    parse_date,
    published_date,
    usage_period,
)
from copyhunt.enrich.display import display_size
from copyhunt.enrich.hosts import host_of, registrable_domain
from copyhunt.enrich.kind_of_use import page_kind
from copyhunt.enrich.operator import Operator, operator_details, operator_from_html, site_operator
from copyhunt.enrich.page import MAX_HTML_BYTES, MAX_TEXT, Page, parse_page
from copyhunt.enrich.seller import Seller, seller_from_page
from copyhunt.enrich.stage import ENRICHED_COLUMNS, HIT_KEY, ReadHtml, enrich_matches, site_operators
from copyhunt.parties import same_party

__all__ = [
    "ENRICHED_COLUMNS", "FOREIGN", "HIT_KEY", "IMAGE_LAST_MODIFIED", "MAX_DATE_CANDIDATES", "MAX_HTML_BYTES", "MAX_TEXT",
    "MODIFIED", "PUBLISHED", "DateCandidate", "Operator", "Page", "PublicationDate", "ReadHtml", "Seller", "UsagePeriod",
    "attribution", "choose_publication_date", "date_candidates", "display_size", "enrich_matches", "host_of",
    "operator_details", "operator_from_html", "page_kind", "parse_date", "parse_page", "published_date",
    "registrable_domain", "same_party", "seller_from_page", "site_operator", "site_operators", "usage_period",
]
