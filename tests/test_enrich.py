"""Enrichment: operator, marketplace seller, dates, usage period, kind of use, display size, credit.

Table-driven tests of the pure functions on hand-written pages (tests/fixtures/html; its README
says which trap each page sets), on hostile input, on the generated demo web read from disk, and
the enrich -> price -> load stages run through a real lake and SQLite database on two days.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from email.utils import format_datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from copyhunt.enrich import (
    FOREIGN,
    IMAGE_LAST_MODIFIED,
    MAX_DATE_CANDIDATES,
    MAX_HTML_BYTES,
    MAX_TEXT,
    MODIFIED,
    DateCandidate,
    PublicationDate,
    Seller,
    attribution,
    choose_publication_date,
    display_size,
    enrich_matches,
    operator_details,
    operator_from_html,
    page_kind,
    parse_date,
    parse_page,
    published_date,
    registrable_domain,
    same_party,
    seller_from_page,
    site_operators,
    usage_period,
)

FIXTURES = Path(__file__).parent / "fixtures" / "html"
RUN = dt.date(2026, 11, 21)


def fixture(name: str):
    return parse_page((FIXTURES / name).read_bytes())


def read_fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# ---- domains ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("host, expected", [
    ("shop.example.co.uk", "example.co.uk"),
    ("www.alpine-blog.test", "alpine-blog.test"),  # reserved TLD: no public suffix, last two labels
    ("alice.github.io", "alice.github.io"),  # private suffix: each user's site is its own
    ("WWW.Example.DE.", "example.de"),
    ("127.0.0.1", "127.0.0.1"),
    ("localhost", "localhost"),
    ("", ""),
])
def test_registrable_domain_offline(host, expected):
    assert registrable_domain(host) == expected


# ---- operator --------------------------------------------------------------------------------------
def _facts(**fields):
    return {k: {"value": v, "source": s} for k, (v, s) in fields.items()}


@pytest.mark.parametrize("name, expected", [
    ("de_impressum_company.html", _facts(
        name=("Lichtwerk Bildmedien GmbH & Co. KG", "imprint:operator-line"),
        address=("Hafenstraße 17a, 10115 Berlin, Deutschland", "imprint:address-after-name"),
        email=("kontakt@lichtwerk-bilder.test", "imprint:email-text"),  # "kontakt (at) lichtwerk-bilder (punkt) test"
        phone=("+49 30 5550 1234", "imprint:phone-text"))),  # the Tel., not the Fax line
    ("de_impressum_person.html", _facts(
        name=("Anna Lindqvist", "imprint:operator-line"),  # not the data-protection officer's GmbH below
        address=("Birkenweg 4, 79098 Freiburg im Breisgau", "imprint:address-after-name"),
        email=("anna@fernweh-notizen.test", "mailto-link"),
        phone=("0761 5550 442", "imprint:phone-text"))),
    ("en_about_company.html", _facts(
        name=("Harbour Lane Media Ltd", "imprint:operator-line"),  # the legal entity, not the og:site_name brand
        address=("7 Quay Street, Bristol BS1 4DJ, United Kingdom", "imprint:address-after-name"),
        email=("editor@harbour-lane.test", "mailto-link"),
        phone=("+44 117 496 0000", "imprint:phone-text"))),
    ("en_contact_llc.html", _facts(
        name=("Prairie Table Media LLC", "imprint:company-line"),
        address=("410 Example Avenue, Suite 3, Omaha, NE 68102, USA", "imprint:address-after-name"),
        email=("press@prairie-table.test", "mailto-link"),
        phone=("+1 (402) 555-0188", "tel-link"))),
    ("shop_localbusiness.html", _facts(
        name=("Morgenrot Backwaren e.K.", "json-ld:Bakery.legalName"),  # legalName beats the brand "name"
        address=("Karl-Liebknecht-Straße 88, 04275 Leipzig, DE", "json-ld:Bakery.address"),
        email=("laden@morgenrot.test", "json-ld:Bakery.email"),
        phone=("+49 341 5550 271", "json-ld:Bakery.telephone"))),
    ("shop_product.html", _facts(
        name=("Wandkunst Kiel GmbH", "json-ld:Organization.name"),
        address=("Holtenauer Straße 5, 24105 Kiel", "json-ld:Organization.address"),
        email=("info@wandkunst-kiel.test", "json-ld:Organization.email"))),
    ("marketplace_seller.html", _facts(
        name=("Quayside Curios", "json-ld:Organization.name"),
        address=("3 Church Street, Whitby YO22 4AE, GB", "json-ld:Organization.address"),
        email=("quayside.curios@mail.test", "json-ld:Organization.email"),
        phone=("+44 1947 555 019", "json-ld:Organization.telephone"))),
    ("dates_misleading.html", _facts(name=("Slow Rivers", "copyright-notice"))),  # "© 1998–2026 Slow Rivers"
    ("no_operator.html", {}),  # "Angaben zum Betreiber finden Sie im Impressum" names nobody
    ("dates_missing.html", {}),
])
def test_operator_and_its_details_from_fixtures(name, expected):
    assert operator_details(fixture(name)).as_dict() == expected


@pytest.mark.parametrize("html, imprint_rules, name, source", [
    # A labelled person beats an unlabelled company line further down (the host, the DPO).
    ("<p>Angaben gemäß § 5 TMG</p><p>Max Mustermann<br>Musterweg 3<br>12345 Musterstadt</p><p>Hosting:</p><p>Strato AG</p>",
     True, "Max Mustermann", "imprint:operator-line"),
    ("<p>Betreiber: Lena Hofer, Alpenweg 2, 83471 Berchtesgaden</p>", True, "Lena Hofer", "imprint:operator-line"),
    ("<p>Inhaber: Meyer Fotografie e.K.</p>", True, "Meyer Fotografie e.K.", "imprint:operator-line"),
    ("<p>Diese Website wird betrieben von der Nordlicht Verlag GmbH.</p>", True, "Nordlicht Verlag GmbH", "imprint:operator-line"),
    # Legal entity beats brand: legalName, then a name with a legal form, then a plain name.
    ('<script type="application/ld+json">{"@type":"Organization","name":"Courier","legalName":"Courier Group plc"}</script>'
     '<meta property="og:site_name" content="Courier">', True, "Courier Group plc", "json-ld:Organization.legalName"),
    ('<script type="application/ld+json">{"@type":"NewsArticle","publisher":{"@type":"Organization","name":"Daily Brand"}}</script>',
     False, "Daily Brand", "json-ld:NewsArticle.publisher.Organization.name"),
    ("<meta property='og:site_name' content='Only A Brand'><p>hi</p>", True, "Only A Brand", "og:site_name"),
    ("<footer>© 2026 Example Media GmbH. Alle Rechte vorbehalten.</footer>", False, "Example Media GmbH", "copyright-notice"),
    # Off operator pages, text rules are off: an article's company mentions are subjects, not operators.
    ("<p>Betreiber: Evil Corp GmbH</p>", False, None, None),
    ("<p>Betreiber:<!-- set by the theme --> Kommentar Verlag GmbH</p>", True, "Kommentar Verlag GmbH", "imprint:operator-line"),
    ("<p>Our partner is Acme Widgets Inc. and they are great.</p>", True, None, None),
    ('<script type="application/ld+json">{"@type":"Organization","name":</script>', True, None, None),  # malformed JSON-LD
    ("", True, None, None),
])
def test_operator_rules(html, imprint_rules, name, source):
    op = operator_details(f"<html><head></head><body>{html}</body></html>" if html else "", imprint_rules=imprint_rules)
    assert (op.name, op.name_source) == (name, source)


def test_site_operator_takes_details_from_the_sites_other_pages_about_the_same_party():
    imprint = "<html><body><h1>Impressum</h1><p>Angaben gemäß § 5 DDG</p><p>Seeblick Verlag GmbH<br>Uferweg 1<br>24103 Kiel</p></body></html>"
    contact = "<html><body><h1>Kontakt</h1><p>Telefon: +49 431 5550 100</p><p>E-Mail: post@seeblick.test</p></body></html>"
    hosting = ("<html><body><h1>About</h1><p>Hosting Nord AG</p><p>Telefon: +49 40 5550 999</p>"
               '<p><a href="mailto:abuse@hosting-nord.test">abuse@hosting-nord.test</a></p></body></html>')
    pages = {"https://seeblick.test/impressum": imprint, "https://seeblick.test/kontakt": contact, "https://seeblick.test/about": hosting}
    frame = pd.DataFrame([{"url": u, "html_sha256": u} for u in pages])
    op = site_operators(frame, lambda u: pages[u].encode())["seeblick.test"]
    assert (op.name, op.address) == ("Seeblick Verlag GmbH", "Uferweg 1, 24103 Kiel")
    # The contact page names nobody: its phone and e-mail are the site's. The about page names
    # another company (the host): its contacts are not the operator's.
    assert (op.phone, op.phone_source) == ("+49 431 5550 100", "imprint:phone-text@https://seeblick.test/kontakt")
    assert (op.email, op.email_source) == ("post@seeblick.test", "imprint:email-text@https://seeblick.test/kontakt")


def test_operator_from_html_keeps_its_simple_contract():
    assert operator_from_html(read_fixture("en_contact_llc.html")) == ("Prairie Table Media LLC", "imprint:company-line")
    assert operator_from_html(None) == (None, None)


@pytest.mark.parametrize("a, b, same", [
    ("Nordic Prints GmbH", "nordic prints gmbh", True),
    ("Nordic Prints GmbH", "Nordic Prints", True),  # the legal form alone does not make another party
    ("Courier Media Group Ltd.", "Courier Media Group Limited", True),
    ("Bergblick Medien UG (haftungsbeschränkt)", "Bergblick Medien UG", True),
    ("Lens & Light Studio", "Lens and Light Studio", True),
    ("Retro Garage", "Bazaar Market Ltd.", False),
    ("Nordic Prints GmbH", "Nordic Frames GmbH", False),
    ("Lichtwerk Bildmedien GmbH & Co. KG", "Lichtwerk Bildmedien", True),
    ("Studio A", "Studio B", False),  # a letter is a name, not a legal form
    ("GmbH", "Nordic Prints GmbH", False),
    (None, "X", False),
])
def test_same_party(a, b, same):
    assert same_party(a, b) is same


# ---- marketplace seller ------------------------------------------------------------------------------
@pytest.mark.parametrize("name, page_url, expected", [
    ("marketplace_product.html", "https://stallholder.test/item/88120",
     Seller("Quayside Curios", "json-ld:Offer.seller", "https://stallholder.test/shop/quayside-curios", "Whitby, GB")),
    ("marketplace_product_microdata.html", "https://flohmarkt.test/artikel/4711",
     Seller("Oldtimer-Otto", "microdata:Offer.seller", "https://flohmarkt.test/verkaeufer/oldtimer-otto")),
    ("shop_product.html", "https://wandkunst-kiel.test/p/hafen", Seller("Wandkunst Kiel GmbH", "json-ld:Offer.seller")),
    ("en_about_company.html", "https://harbour-lane.test/about", None),
])
def test_seller_from_product_page(name, page_url, expected):
    assert seller_from_page(fixture(name), page_url) == expected


def _pages_frame(pages: dict[str, str], last_modified: dict[str, str] | None = None) -> pd.DataFrame:
    """A crawl `pages` frame whose html_sha256 is the fixture file name (read_fixture reads it)."""
    return pd.DataFrame([{"url": url, "final_url": url, "status": 200, "title": None, "html_sha256": name,
                          "last_modified": (last_modified or {}).get(url), "date_candidates": "[]", "fetched_at": None}
                         for url, name in pages.items()])


def _hits(rows: list[tuple[str, str, str, str]], customer="c1", width=640, height=480):
    """matches + images frames for (image id, page URL, image URL, image sha) rows."""
    matches = pd.DataFrame([{"customer_id": customer, "image_id": i, "image_sha256": sha, "score": 0.9, "inliers": 30, "mirrored": False}
                            for i, _, _, sha in rows]).drop_duplicates()
    images = pd.DataFrame([{"page_url": p, "image_url": u, "blob_sha256": sha, "width": width, "height": height} for _, p, u, sha in rows])
    return matches, images


class _Customer:
    id, name, licences = "c1", "Coastline Pictures", ()


def test_marketplace_operator_is_the_seller_described_on_its_own_page():
    pages = _pages_frame({
        "https://stallholder.test/item/88120": "marketplace_product.html",
        "https://stallholder.test/shop/quayside-curios": "marketplace_seller.html",
        "https://stallholder.test/listing?page=3": "dates_missing.html",  # a listing page showing the same photo
    })
    matches, images = _hits([("img", "https://stallholder.test/item/88120", "https://stallholder.test/i/88120/1.jpg", "a" * 64),
                             ("img", "https://stallholder.test/listing?page=3", "https://stallholder.test/i/88120/1.jpg", "a" * 64)])
    out = enrich_matches(matches, images, pages, [_Customer()], read_fixture, RUN).set_index("page_url")
    item = out.loc["https://stallholder.test/item/88120"]
    assert (item.operator_name, item.operator_role) == ("Quayside Curios", "marketplace-seller")
    assert item.operator_source == "json-ld:Offer.seller@https://stallholder.test/item/88120"
    # The product page names the seller; the seller's own page gives the details.
    assert (item.operator_phone, item.operator_email) == ("+44 1947 555 019", "quayside.curios@mail.test")
    assert item.operator_address == "3 Church Street, Whitby YO22 4AE, GB"
    details = json.loads(item.operator_details)
    assert details["phone"]["source"] == "json-ld:Organization.telephone@https://stallholder.test/shop/quayside-curios"
    assert details["platform"]["name"]["value"] == "Stallholder Marketplaces Ltd."  # the platform stays on record
    assert item.page_kind == "product" and item.published_at == "2026-05-04"
    listing = out.loc["https://stallholder.test/listing?page=3"]
    assert listing.operator_name == "Quayside Curios" and "(same photo on a product page)" in listing.operator_source
    assert listing.page_kind == "product" and listing.page_kind_source == "product-photo-of:https://stallholder.test/item/88120"
    # The listing states no date: the product's listing date is the lower bound, not a guess.
    assert listing.published_at == "2026-05-04" and listing.published_source.startswith("product-page:html:time@")


def test_without_stored_html_the_crawls_seller_and_the_images_last_modified_are_used():
    pages = _pages_frame({"https://stallholder.test/item/9": "missing-blob"}).assign(
        seller_name="Harbour Finds", seller_url="/shop/harbour-finds", seller_source="microdata")
    matches, images = _hits([("img", "https://stallholder.test/item/9", "https://stallholder.test/i/9.jpg", "d" * 64)])
    images["last_modified"] = "Sun, 01 Mar 2026 08:00:00 GMT"

    def read(sha):
        raise KeyError(sha)  # the blob store lost it: every fact from the HTML is unknown, nothing fails

    row = enrich_matches(matches, images, pages, [_Customer()], read, RUN).iloc[0]
    assert (row.operator_name, row.operator_role) == ("Harbour Finds", "marketplace-seller")
    assert row.operator_source == "crawl:microdata:Offer.seller@https://stallholder.test/item/9"
    assert (row.published_at, row.published_source) == ("2026-03-01", IMAGE_LAST_MODIFIED)
    assert row.display_source == "unknown:no-html" and row.attribution_evidence == "unknown:no-html" and row.enrich_error is None


def test_a_shop_selling_its_own_prints_is_the_site_operator_not_a_marketplace_seller():
    pages = _pages_frame({"https://wandkunst-kiel.test/p/hafen": "shop_product.html"})
    matches, images = _hits([("img", "https://wandkunst-kiel.test/p/hafen", "https://wandkunst-kiel.test/media/hafen-nacht.jpg", "b" * 64)])
    row = enrich_matches(matches, images, pages, [_Customer()], read_fixture, RUN).iloc[0]
    assert (row.operator_name, row.operator_role) == ("Wandkunst Kiel GmbH", "site-operator")
    assert "platform" not in json.loads(row.operator_details)


def test_no_operator_is_an_explicit_unknown_with_a_reason():
    pages = _pages_frame({"https://berge.test/ueber-uns": "no_operator.html", "https://berge.test/tour": "dates_missing.html"})
    matches, images = _hits([("img", "https://berge.test/tour", "https://berge.test/img/hero.jpg", "c" * 64)])
    row = enrich_matches(matches, images, pages, [_Customer()], read_fixture, RUN).iloc[0]
    assert row.operator_name is None and row.operator_role == "unknown"
    assert row.operator_source == "unknown:no-operator-named-on(https://berge.test/ueber-uns)"
    assert json.loads(row.operator_details)["missing"] == ["address", "email", "phone"]
    # No page to ask at all: a different reason.
    pages = _pages_frame({"https://berge.test/tour": "dates_missing.html"})
    row = enrich_matches(matches, images, pages, [_Customer()], read_fixture, RUN).iloc[0]
    assert row.operator_source == "unknown:no-imprint-about-or-contact-page-crawled"
    assert row.published_at is None and row.published_source == "unknown:no-date-found"


# ---- dates -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, url, last_modified, date, source, verdicts", [
    ("dates_misleading.html", "https://slow-rivers.test/moselle", None, "2024-05-06", "meta:article:published_time", {
        ("json-ld:BlogPosting.datePublished", "1970-01-01"): "implausible:before-1995",  # a CMS default
        ("html:time", "2019-08-14"): "ambiguous:several-dates-on-page",  # a sidebar of older posts
        ("html:time", "2031-01-01"): "implausible:after-run-date",
        ("html:article-time", "2024-05-06"): "credible",
    }),
    ("dates_conflicting.html", "https://tideline.test/news/ferry", "Wed, 01 Jan 2025 10:00:00 GMT", "2023-02-27", "meta:article:published_time", {
        ("json-ld:NewsArticle.datePublished", "2023-03-01"): "credible",  # conflicting: the earlier one wins
        ("meta:article:modified_time", "2023-01-15"): "contradicted:modified-before-published",
        ("json-ld:NewsArticle.dateModified", "2023-03-02"): "not-used:modification-date",
        ("http:last-modified", "2025-01-01"): "not-used:modification-date",
    }),
    ("dates_future_only.html", "https://harbour.test/festival", None, None, "unknown:no-credible-date(implausible:after-run-date)", {
        ("json-ld:Article.datePublished", "2031-07-01"): "implausible:after-run-date",
    }),
    ("dates_missing.html", "https://kitchens.test/", None, None, "unknown:no-date-found", {}),
    ("dates_missing.html", "https://kitchens.test/", "Tue, 03 Mar 2026 08:00:00 GMT", "2026-03-03", "http:last-modified", {
        ("http:last-modified", "2026-03-03"): "chosen:modification-date-only",
    }),
    ("shop_product.html", "https://wandkunst-kiel.test/p/hafen", None, "2025-10-02", "html:time", {
        ("json-ld:Review.datePublished", "2012-04-01"): "not-about-this-page",  # a customer review, not the page
        ("htmldate", "2012-04-01"): "uncorroborated:earlier-than-page-metadata",  # htmldate read that review
    }),
    ("dates_missing.html", "https://kitchens.test/2025/07/14/new-showroom", None, "2025-07-14", "url-path", {}),
    ("dates_missing.html", "https://kitchens.test/2025/07/new-showroom", None, None, "unknown:no-credible-date(imprecise:month-only)", {
        ("url-path", "2025-07-01"): "imprecise:month-only",  # a month is not a date: the 1st would be a guess
    }),
])
def test_publication_date_from_fixtures(name, url, last_modified, date, source, verdicts):
    pub = published_date(fixture(name), RUN, url, last_modified)
    assert (pub.iso, pub.source) == (date, source)
    seen = {(c["source"], c["date"]): c["verdict"] for c in pub.candidates}
    for key, verdict in verdicts.items():
        assert seen[key] == verdict, key
    # Every candidate is kept with its raw text, and exactly one is chosen when a date is.
    assert all(set(c) == {"source", "raw", "date", "kind", "verdict"} for c in pub.candidates)
    assert sum(c["verdict"].startswith("chosen") for c in pub.candidates) == (1 if date else 0)


def test_without_html_the_crawls_raw_candidates_are_used():
    pub = published_date(None, RUN, "https://x.test/p", None, ["2026-02-01T10:00:00Z", "garbage", "2030-01-01"])
    assert (pub.iso, pub.source) == ("2026-02-01", "crawl:page-metadata")
    assert [c["verdict"] for c in pub.candidates] == ["chosen", "unparseable", "implausible:after-run-date"]


D = dt.date


@pytest.mark.parametrize("candidates, not_before, date, source", [
    ([], None, None, "unknown:no-date-found"),
    # Same day from two sources: the more specific source is named.
    ([DateCandidate("htmldate", "2026-01-05"), DateCandidate("json-ld:Article.datePublished", "2026-01-05T09:00:00+01:00")],
     None, D(2026, 1, 5), "json-ld:Article.datePublished"),
    # htmldate alone stands; with an earlier structured date present it only corroborates.
    ([DateCandidate("htmldate", "2026-01-05")], None, D(2026, 1, 5), "htmldate"),
    ([DateCandidate("htmldate", "2025-01-05"), DateCandidate("meta:article:published_time", "2026-01-05")], None, D(2026, 1, 5),
     "meta:article:published_time"),
    # A modification date only stands in, and never before a publication date.
    ([DateCandidate("http:last-modified", "Mon, 05 Jan 2026 10:00:00 GMT", MODIFIED)], None, D(2026, 1, 5), "http:last-modified"),
    ([DateCandidate("http:last-modified", "Mon, 05 Jan 2026 10:00:00 GMT", MODIFIED), DateCandidate("html:time", "2026-03-01")],
     None, D(2026, 3, 1), "html:time"),
    ([DateCandidate("json-ld:Review.datePublished", "2020-01-01", FOREIGN)], None, None, "unknown:no-credible-date(not-about-this-page)"),
    # A lower bound from the product page contradicts an earlier header and stands in for a missing date.
    ([DateCandidate("http:last-modified", "Sun, 01 Jun 2025 10:00:00 GMT", MODIFIED)], (D(2026, 3, 19), "product-page:html:time@u"),
     D(2026, 3, 19), "product-page:html:time@u"),
    ([DateCandidate("html:time", "2026-04-01")], (D(2026, 3, 19), "product-page:x"), D(2026, 4, 1), "html:time"),
    # With only modification dates left, the bound (a publication date) wins over them.
    ([DateCandidate(IMAGE_LAST_MODIFIED, "Fri, 24 Apr 2026 10:00:00 GMT", MODIFIED)], (D(2026, 3, 19), "product-page:x"),
     D(2026, 3, 19), "product-page:x"),
    ([DateCandidate("html:time", "2026-11-22")], None, None, "unknown:no-credible-date(implausible:after-run-date)"),
    # The image file's own Last-Modified stands in for a page without dates ...
    ([DateCandidate(IMAGE_LAST_MODIFIED, "Tue, 10 Feb 2026 10:00:00 GMT", MODIFIED)], None, D(2026, 2, 10), IMAGE_LAST_MODIFIED),
    # ... after the page's own header, and an image older than its page is normal, not a contradiction.
    ([DateCandidate(IMAGE_LAST_MODIFIED, "Tue, 10 Feb 2026 10:00:00 GMT", MODIFIED),
      DateCandidate("http:last-modified", "Tue, 10 Feb 2026 12:00:00 GMT", MODIFIED)], None, D(2026, 2, 10), "http:last-modified"),
])
def test_choose_publication_date_table(candidates, not_before, date, source):
    pub = choose_publication_date(candidates, RUN, not_before)
    assert (pub.date, pub.source) == (date, source)


def test_an_image_older_than_its_page_is_not_a_contradiction():
    pub = choose_publication_date([DateCandidate("json-ld:BlogPosting.datePublished", "2026-03-01"),
                                   DateCandidate(IMAGE_LAST_MODIFIED, "Tue, 10 Feb 2026 10:00:00 GMT", MODIFIED),
                                   DateCandidate("http:last-modified", "Tue, 10 Feb 2026 10:00:00 GMT", MODIFIED)], RUN)
    assert [c["verdict"] for c in pub.candidates] == ["chosen", "not-used:modification-date", "contradicted:modified-before-published"]


@pytest.mark.parametrize("raw, expected", [
    ("2026-03-09T23:30:00-08:00", D(2026, 3, 9)),  # the date as the page states it, not shifted to UTC
    ("2026-03-09", D(2026, 3, 9)),
    ("20260309T120000", D(2026, 3, 9)),
    ("Mon, 09 Mar 2026 10:00:00 GMT", D(2026, 3, 9)),
    ("09.03.2026", D(2026, 3, 9)),
    ("2026-02-30", None),
    ("March 2026", None),
    ("", None),
    (None, None),
    (20260309, None),
])
def test_parse_date(raw, expected):
    assert parse_date(raw) == expected


@pytest.mark.parametrize("published, first_seen, since, source, days", [
    (PublicationDate(D(2026, 2, 14), "json-ld:BlogPosting.datePublished"), RUN, D(2026, 2, 14), "published:json-ld:BlogPosting.datePublished", 281),
    # Re-dated by its CMS after we first saw it: our own sighting is earlier evidence.
    (PublicationDate(D(2026, 11, 1), "htmldate"), D(2026, 10, 1), D(2026, 10, 1), "first-seen", 52),
    (PublicationDate(None, "unknown:no-date-found"), D(2026, 11, 20), D(2026, 11, 20), "first-seen", 2),
    (PublicationDate(None, "unknown:no-date-found"), RUN, RUN, "first-seen", 1),
])
def test_usage_period(published, first_seen, since, source, days):
    usage = usage_period(published, first_seen, RUN)
    assert (usage.since, usage.since_source, usage.until, usage.days) == (since, source, RUN, days)


# ---- kind of use, display size, attribution ------------------------------------------------------------
@pytest.mark.parametrize("html, registrable, kind, source", [
    (read_fixture("shop_product.html"), "wandkunst-kiel.test", "product", "json-ld:Product"),
    (read_fixture("marketplace_product_microdata.html"), "flohmarkt.test", "product", "microdata:Product"),
    (read_fixture("dates_misleading.html"), "slow-rivers.test", "editorial", "json-ld:BlogPosting"),
    ('<html><head><meta property="og:type" content="article"></head></html>', "x.test", "editorial", "og:type=article"),
    ('<html><head><meta property="og:type" content="product"></head></html>', "x.test", "product", "og:type=product"),
    (read_fixture("dates_misleading.html"), "instagram.com", "social", "domain:instagram.com"),
    (read_fixture("shop_localbusiness.html"), "morgenrot.test", "commercial", "default:no-product-or-article-markup"),
    (None, "x.test", "commercial", "unknown:no-html(default)"),
])
def test_page_kind(html, registrable, kind, source):
    assert page_kind(html, registrable) == (kind, source)


@pytest.mark.parametrize("name, page_url, image_url, expected", [
    # Shown twice (800 px and a 120 px thumbnail): the larger display counts.
    ("shop_product.html", "https://wandkunst-kiel.test/p/hafen", "https://wandkunst-kiel.test/media/hafen-nacht.jpg", (800, 533, "img-attributes")),
    ("shop_product.html", "https://wandkunst-kiel.test/p/hafen", "https://wandkunst-kiel.test/media/hafen-nacht-share.jpg",
     (None, None, "unknown:no-declared-size(og:image)")),  # a share preview only
    ("shop_product.html", "https://wandkunst-kiel.test/p/hafen", "https://wandkunst-kiel.test/media/hafen-nacht-1600.webp",
     (None, None, "unknown:no-declared-size(source)")),
    ("dates_missing.html", "https://kitchens.test/", "https://kitchens.test/img/hero.jpg", (None, None, "unknown:no-declared-size(img)")),
    ("dates_missing.html", "https://kitchens.test/", "https://kitchens.test/img/other.jpg", (None, None, "unknown:image-not-referenced-in-html")),
])
def test_display_size(name, page_url, image_url, expected):
    assert display_size(fixture(name), page_url, image_url) == expected


@pytest.mark.parametrize("html, names, credited, evidence", [
    ("<figure><img src=a.jpg><figcaption>Foto: Jana Novak</figcaption></figure>", ["Jana Novak Photography"], True, "Foto: Jana Novak"),
    ("<p>Photo: ALPINE LENS AGENCY</p>", ["Alpine Lens Agency"], True, "Photo: ALPINE LENS AGENCY"),
    ('<img src="a.jpg" alt="Sunset (c) Jana Novak">', ["Jana Novak Photography"], True, "Sunset (c) Jana Novak"),
    ("<p>Foto: Bergblick</p>", ["Alpine Lens Agency"], False, "not-found:Alpine Lens Agency|Alpine Lens"),
    ("<p>Photo: Jana Novakova</p>", ["Jana Novak"], False, "not-found:Jana Novak"),  # another person
    ("<p>x</p>", [], False, "unknown:no-author-name"),
])
def test_attribution(html, names, credited, evidence):
    assert attribution(f"<html><body>{html}</body></html>", names) == (credited, evidence)


# ---- hostile input ---------------------------------------------------------------------------------
HOSTILE = {
    "nested-json-ld": '<html><head><script type="application/ld+json">' + "[" * 100_000 + "]" * 100_000 + "</script></head></html>",
    "deep-divs": "<html><body>" + "<div>" * 200_000 + "Betreiber: Deep GmbH" + "</div>" * 200_000 + "</body></html>",
    "many-times": "<html><body>" + "".join(f'<time datetime="20{10 + i % 15}-0{1 + i % 9}-1{i % 9}">x</time>' for i in range(60_000)) + "</body></html>",
    "many-json-ld-blocks": "<html><head>" + '<script type="application/ld+json">{"@type":"Organization","name":"X GmbH"}</script>' * 5000 + "</head></html>",
    "huge-attribute": '<html><body><img src="a.jpg" width="' + "9" * 1_000_000 + '" alt="' + "A" * 1_000_000 + '"></body></html>',
    "long-name": "<html><body><p>Betreiber:</p><p>" + "Sehr " * 50_000 + "Lange GmbH</p></body></html>",
    "binary": bytes(range(256)) * 4000,
    "not-html": "\x00\x01\x02 just control bytes \x7f",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_html_is_bounded_and_never_raises(name):
    html = HOSTILE[name]
    page = parse_page(html)
    op = operator_details(page, "https://evil.test/impressum")
    assert op.name is None or len(op.name) <= MAX_TEXT
    assert op.address is None or len(op.address) <= MAX_TEXT
    seller_from_page(page, "https://evil.test/item")
    pub = published_date(page, RUN, "https://evil.test/item", "not a date")
    assert len(pub.candidates) <= MAX_DATE_CANDIDATES and all(len(c["raw"]) <= 64 for c in pub.candidates)
    assert pub.date is None or dt.date(1995, 1, 1) <= pub.date <= RUN
    page_kind(page, "evil.test")
    w, h, _ = display_size(page, "https://evil.test/", "https://evil.test/a.jpg")
    assert (w is None or w <= 20000) and (h is None or h <= 20000)
    credited, evidence = attribution(page, ["Alpine Lens Agency"])
    assert len(evidence) <= 300
    assert len(page.text) <= 200_000 + 200_000 // 2  # text is bounded (lines joined by newlines)


def test_html_beyond_the_size_bound_is_not_read():
    filler = "<p>" + "x" * 1000 + "</p>"
    html = "<html><body>" + filler * (MAX_HTML_BYTES // len(filler) + 10) + "<p>Betreiber: Hidden GmbH</p></body></html>"
    page = parse_page(html)
    assert page.truncated and operator_details(page).name is None
    assert operator_details(html[-200:]).name == "Hidden GmbH"  # the same statement within bounds is read


# ---- the demo web, read from disk ------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from copyhunt.demo.customers import load_customers, repo_root
    from copyhunt.demo.web import build

    customers_file = repo_root() / "demo" / "customers.toml"
    web = build(tmp_path_factory.mktemp("demo-web") / "web", customers_file)
    manifest = json.loads((web.root / "manifest.json").read_text())
    files, rows = {}, []
    for host, routes in sorted(manifest.items()):
        for key, route in sorted(routes.items()):
            url = f"http://{host}{key}"
            files[url] = web.root / "sites" / host / route["file"]
            if route["content_type"].startswith("text/html") and not key.startswith("/private/"):  # what a polite crawler fetches
                modified = format_datetime(dt.datetime.fromisoformat(route["last_modified"]), usegmt=True)
                rows.append({"url": url, "final_url": url, "status": 200, "title": None, "html_sha256": str(files[url]),
                             "last_modified": modified, "date_candidates": "[]", "fetched_at": None})
    return web, pd.DataFrame(rows), files, load_customers(customers_file, repo_root())


def read_path(path: str) -> bytes:
    return Path(path).read_bytes()


# Each demo site publishes these details of its operator (see copyhunt.demo.web).
DEMO_DETAILS = {
    "alpine-blog.test": ("83471 Berchtesgaden", "redaktion@alpine-blog.test", "+49 8652 555 0142"),
    "nordic-prints.test": ("20457 Hamburg", "shop@nordic-prints.test", "+49 40 555 0199"),
    "urban-eats.test": ("Portland, OR 97201", "hello@urban-eats.test", "+1 503 555 0147"),
    "daily-courier.test": ("London EC1A 1AA", "newsroom@daily-courier.test", "+44 20 7946 0123"),
    "bazaar-market.test": ("Dublin", "support@bazaar-market.test", None),  # publishes no phone number
}


def test_every_demo_site_operator_is_found_with_details(demo):
    web, pages, _, _ = demo
    operators = site_operators(pages, read_path)
    assert {s.host for s in web.sites} == set(DEMO_DETAILS) == set(operators)
    for site in web.sites:
        op = operators[site.host]
        assert op.name == site.operator, site.host
        address, email, phone = DEMO_DETAILS[site.host]
        assert address in op.address and op.email == email and op.phone == phone, site.host
        # Every fact names the page of this site that stated it.
        for field in ("name", "address", "email", "phone"):
            source = getattr(op, field + "_source")
            assert (source is None) == (getattr(op, field) is None)
            assert source is None or f"@http://{site.host}/" in source, (site.host, field, source)


# Marketplace items of the demo and their sellers (copyhunt.demo.web._bazaar_market).
DEMO_SELLERS = {"1003": ("Retro Garage", "Stuttgart, DE"), "1007": ("PosterWorld24", "Valencia, ES")}


def demo_hits(demo):
    """The matches and images frames the pipeline would produce for every planted copy."""
    web, _, files, _ = demo
    truth = json.loads(web.truth_file.read_text())
    images, matches = [], []
    for t in truth:
        path = files[t["image_url"]]
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        with Image.open(path) as im:
            w, h = im.size
        images.append({"page_url": t["page_url"], "image_url": t["image_url"], "blob_sha256": sha, "width": w, "height": h, "path": path})
        matches.append({"customer_id": t["customer_id"], "image_id": t["image_id"], "image_sha256": sha, "score": 0.9, "inliers": 40,
                        "mirrored": t["transform"] == "mirrored"})
    return truth, pd.DataFrame(matches).drop_duplicates(), pd.DataFrame(images)


def test_enriching_every_planted_copy_of_the_demo_web(demo):
    web, pages, files, customers = demo
    truth, matches, images = demo_hits(demo)
    out = enrich_matches(matches, images.drop(columns="path"), pages, customers, read_path, RUN)
    assert len(out) == len(truth) and out["enrich_error"].isna().all()
    operators = {s.host: s.operator for s in web.sites}
    for row in out.itertuples():
        html = files[row.page_url].read_text()
        item = re.search(r"/img/items/(\d+)/", row.image_url)
        if row.domain == "bazaar-market.test" and item:
            seller, address = DEMO_SELLERS[item.group(1)]
            assert (row.operator_name, row.operator_role, row.operator_address) == (seller, "marketplace-seller", address), row.page_url
            assert json.loads(row.operator_details)["platform"]["name"]["value"] == operators[row.domain]
            assert row.page_kind == "product"
        else:
            assert (row.operator_name, row.operator_role) == (operators[row.domain], "site-operator"), row.page_url
        # The date: what the article's own metadata says, or for a product the date it was listed.
        published = re.search(r'"datePublished": "(\d{4}-\d{2}-\d{2})', html)
        listed = re.search(r'<time datetime="(\d{4}-\d{2}-\d{2})', html)
        if published:
            assert row.published_at == published.group(1), row.page_url
            assert re.fullmatch(r"json-ld:(BlogPosting|NewsArticle)\.datePublished", row.published_source)
            assert row.page_kind == "editorial"
        elif listed and ("/item/" in row.page_url or "/shop/" in row.page_url):
            assert (row.published_at, row.published_source) == (listed.group(1), "html:time"), row.page_url
        else:  # a listing page: the listed product's date is the lower bound
            assert row.published_source.startswith("product-page:html:time@http://bazaar-market.test/item/"), row.page_url
        assert row.usage_since == row.published_at and row.usage_days == (RUN - D.fromisoformat(row.published_at)).days + 1
        assert row.first_seen == row.last_seen == RUN.isoformat() and row.page_online and row.page_status == 200
        assert row.attribution_found == ("Photo: Alpine Lens Agency" in html and row.customer_id == "alpine-lens")
        assert len(json.loads(row.date_candidates)) >= 2


# ---- the stages, through the lake and the hits database, on two days ------------------------------------
def _write_crawl_partitions(settings, demo, run_date):
    """What the crawl and match stages would have written for the demo web on ``run_date``."""
    from copyhunt.blobs import LocalBlobStore
    from copyhunt.crawl.outputs import IMAGES_SCHEMA, PAGES_SCHEMA
    from copyhunt.lake import Lake

    _, pages, files, _ = demo
    truth, matches, images = demo_hits(demo)
    blobs = LocalBlobStore(settings.blob_root)
    page_rows = []
    for r in pages.to_dict("records"):
        sha = blobs.put(Path(r["html_sha256"]).read_bytes())
        page_rows.append({**r, "html_sha256": sha, "domain": r["url"].split("/")[2], "language": None, "content_type": "text/html",
                          "depth": 0, "fetched_at": dt.datetime(run_date.year, run_date.month, run_date.day, 3, tzinfo=dt.timezone.utc)})
    for path in images["path"]:
        blobs.put(path.read_bytes())
    image_rows = [{**r, "bytes": 1, "format": "jpeg", "alt": None, "discovered_via": "img", "final_url": r["image_url"] + "?v=2"}
                  for r in images.drop(columns="path").to_dict("records")]
    lake = Lake(settings.lake)
    lake.write_partition("pages", run_date, pa.Table.from_pylist(page_rows, schema=PAGES_SCHEMA), sort_by=["url"])
    lake.write_partition("images", run_date, pa.Table.from_pylist(image_rows, schema=IMAGES_SCHEMA), sort_by=["page_url", "image_url"])
    lake.write_partition("matches", run_date, matches, sort_by=["customer_id", "image_id", "image_sha256"])
    _write_registry_snapshot(settings, lake, run_date)
    return lake, truth


def _write_registry_snapshot(settings, lake, run_date):
    """What customer_index's register stage would have left: the registry snapshot and an index version."""
    import pandas as pd

    from copyhunt import registry
    from copyhunt.hitsdb.store import create_schema, make_engine

    engine = make_engine(settings.database_url)
    create_schema(engine)
    registry.seed_from_file(engine, settings)
    registry.write_snapshot(engine, settings, run_date)
    engine.dispose()
    lake.write_partition("index_versions", run_date, pd.DataFrame([{"version": "test", "shards": "[]", "entries": 0}]))


def test_enrich_price_and_load_stages_on_two_days(settings, demo):
    from copyhunt import hunt

    day1, day2 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)
    for day in (day1, day2):
        lake, truth = _write_crawl_partitions(settings, demo, day)
        enriched = hunt.enrich(settings, day)
        assert enriched["enriched"] == enriched["with_operator"] == len(truth) and enriched["errors"] == 0
        assert enriched["seen_before"] == (len(truth) if day == day2 else 0)
        priced = hunt.price(settings, day)
        assert priced["priced"] == len(truth) and priced["errors"] == 0
    first = lake.partition_file("priced", day2).read_bytes()
    hunt.enrich(settings, day2), hunt.price(settings, day2)
    assert lake.partition_file("priced", day2).read_bytes() == first  # re-running the day changes nothing

    out = lake.read_frame("priced", day2)
    assert (out["first_seen"] == day1.isoformat()).all() and (out["last_seen"] == day2.isoformat()).all()
    assert (out["image_final_url"] == out["image_url"] + "?v=2").all()  # the crawl's URL after redirects
    courier = out[out["domain"] == "daily-courier.test"]
    alpine_courier = courier[courier["customer_id"] == "alpine-lens"]
    assert alpine_courier["licensed"].all() and set(alpine_courier["licence_id"]) == {"lic-alp-courier-2026"}
    assert (alpine_courier["license_value_cents"] == 0).all()
    # The Gulf story ran before the licence began: licensed now, the earlier weeks shown, not claimed.
    gulf = json.loads(alpine_courier[alpine_courier["page_url"].str.contains("gulf-heritage")]["licence_match"].iloc[0])
    assert gulf["uncovered_before_licence"] == {"since": "2025-11-20", "until": "2025-12-31", "days": 42}
    # Jana Novak licensed one image to Nordic Prints by name (no domain): that hit only.
    nordic = out[(out["customer_id"] == "jana-novak") & (out["domain"] == "nordic-prints.test")].set_index("image_id")
    assert nordic.loc["jn-conques-sunset", "licensed"] and not nordic.loc["jn-pasha-butterfly", "licensed"]
    assert json.loads(nordic.loc["jn-conques-sunset", "licence_match"])["licence"]["matched_by"] == "operator"
    unlicensed = out[~out["licensed"]]
    assert len(unlicensed) and (unlicensed["license_value_cents"] > 0).all()
    for row in unlicensed.itertuples():
        breakdown = json.loads(row.value_breakdown)
        base, duration, credit = breakdown["items"]
        assert breakdown["total_cents"] == row.license_value_cents == duration["cents"] + credit["cents"]
        assert (base["usage"], base["size_class"]) == (row.usage_type, row.size_class) and duration["since"] == row.usage_since
        # Jana Novak's contract: a missing credit adds 50%, everyone else's 100%.
        if not row.attribution_found:
            assert credit["percent"] == (50 if row.customer_id == "jana-novak" else 100)

    loaded = hunt.load(settings, day2)  # the priced partition satisfies the hits database's input contract
    assert loaded["inserted"] == len(truth)
