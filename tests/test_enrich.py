import datetime as dt

import pytest

from copyhunt.enrich import operator_from_html, page_kind, published_date, registrable_domain, seller_from_page

GERMAN_IMPRINT = """<html lang="de"><head><title>Impressum</title></head><body><h1>Impressum</h1>
<p>Angaben gemäß § 5 TMG</p><p>Bergblick Medien GmbH<br>Alpenstraße 4<br>80331 München</p>
<p>Betreiber: Bergblick Medien GmbH</p><p>E-Mail: info@bergblick.test</p></body></html>"""
ENGLISH_ABOUT = """<html><head><meta property="og:site_name" content="Urban Eats"></head><body>
<h1>About us</h1><p>This site is operated by: Urban Eats Ltd, 12 High Street, Leeds</p></body></html>"""
JSONLD_ORG = """<html><head><script type="application/ld+json">{"@context":"https://schema.org","@graph":[
{"@type":"Organization","name":"Nordic Prints AB","email":"hej@nordic.test"}]}</script></head><body>About</body></html>"""
PRODUCT = """<html><head><script type="application/ld+json">{"@type":"Product","name":"Poster","image":"/p.jpg",
"offers":{"@type":"Offer","price":"19.00","seller":{"@type":"Organization","name":"Poster King","url":"http://bazaar.test/seller/poster-king"}}}</script></head></html>"""


def test_registrable_domain_offline():
    assert registrable_domain("shop.example.co.uk") == "example.co.uk"
    assert registrable_domain("www.alpine-blog.test") == "alpine-blog.test"


@pytest.mark.parametrize(
    "html, name, source",
    [
        (GERMAN_IMPRINT, "Bergblick Medien GmbH", "imprint-text"),
        (ENGLISH_ABOUT, "Urban Eats Ltd, 12 High Street, Leeds", "imprint-text"),
        (JSONLD_ORG, "Nordic Prints AB", "json-ld:Organization"),
        ("<html><head><meta property='og:site_name' content='Only Site Name'></head><body>hi</body></html>", "Only Site Name", "og:site_name"),
        ("<html><body>nothing here</body></html>", None, None),
        ("", None, None),
    ],
)
def test_operator_sources(html, name, source):
    assert operator_from_html(html) == (name, source)


def test_marketplace_seller_and_page_kind():
    assert seller_from_page(PRODUCT) == ("Poster King", "http://bazaar.test/seller/poster-king")
    assert page_kind(PRODUCT) == "product"
    assert page_kind('<html><head><meta property="og:type" content="article"></head></html>') == "editorial"
    assert page_kind("<html></html>") == "commercial"


def test_dates_take_earliest_credible_and_keep_all_candidates():
    run = dt.date(2026, 11, 21)
    html = '<html><head><meta property="article:published_time" content="2026-03-04T10:00:00Z"></head><body></body></html>'
    date, source, cands = published_date(html, ["2026-05-01", "2031-01-01", "not a date"], "Wed, 01 Apr 2026 10:00:00 GMT", run)
    assert date == "2026-03-04"
    assert "2031-01-01" in cands and "not a date" in cands  # a future date is kept as a candidate, not used
    assert published_date(None, [], None, run) == (None, "unknown:no-date-found", [])
    assert published_date(None, ["2031-01-01"], None, run)[:2] == (None, "unknown:no-credible-date")


def test_hostile_html_is_bounded():
    huge = "<html><body>" + "<div>" * 200_000 + "Betreiber: Evil Corp" + "</div>" * 200_000 + "</body></html>"
    name, _ = operator_from_html(huge)  # must return, whatever it finds, without blowing up
    assert name is None or len(name) <= 300
