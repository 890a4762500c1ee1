"""Rate card (schema, overrides), licence check and post-licence value: table-driven."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pandas as pd
import pytest
import yaml

from copyhunt.demo.customers import LicenceTerms
from copyhunt.pricing import (
    USAGE_TYPES,
    RateCardError,
    check_licences,
    duration_percent,
    load_rate_card,
    percent_of,
    price_hits,
    quote,
    rate_card_from_mapping,
    size_class,
    started_months,
    with_overrides,
)

CARD = load_rate_card()
RUN = dt.date(2026, 11, 21)
D = dt.date


# ---- the card ---------------------------------------------------------------------------------------
def test_packaged_card_is_valid_and_complete():
    assert CARD.currency == "EUR" and set(USAGE_TYPES) <= set(CARD.base_cents)
    assert [s.name for s in CARD.size_classes] == ["small", "medium", "large"]
    assert len(CARD.per_month_percent) == 12 and CARD.missing_attribution_surcharge_percent == 100
    assert all(type(c) is int for sizes in CARD.base_cents.values() for c in sizes.values())
    assert load_rate_card().sha256 == CARD.sha256 and len(CARD.sha256) == 64  # deterministic identity


def _mutated(change):
    data = copy.deepcopy(dict(CARD.data))
    change(data)
    return data


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("currency"), "schema.*'currency' is a required property"),
    (lambda d: d.update(currency="eur"), r"schema.*currency"),
    (lambda d: d.update(surprise=1), r"schema.*Additional properties"),
    (lambda d: d["usage_types"].pop("social"), r"schema.*'social' is a required property"),
    (lambda d: d["usage_types"]["editorial"]["base_cents"].update(small=-1), r"schema.*minimum"),
    (lambda d: d["usage_types"]["editorial"]["base_cents"].update(small=110.0), "must be integer cents"),  # money is never a float
    (lambda d: d["usage_types"]["editorial"]["base_cents"].update(small="110"), r"schema.*not of type 'integer'"),
    (lambda d: d["usage_types"]["editorial"]["base_cents"].pop("large"), "must price exactly the size classes"),
    (lambda d: d.update(default_usage="print"), "default_usage 'print'"),
    (lambda d: d["size_classes"].reverse(), "only the last size class may be open-ended"),
    (lambda d: d.update(size_classes=[{"name": "small", "max_px": 1000}, {"name": "medium", "max_px": 400}, {"name": "large", "max_px": None}]),
     "ascending order of max_px"),
    (lambda d: d["duration"]["per_month_percent"].pop(), r"schema.*duration\.per_month_percent"),
    (lambda d: d["duration"].update(per_month_percent=[100] * 11 + [90]), "must never fall"),
    (lambda d: d.update(missing_attribution_surcharge_percent=True), r"schema.*not of type 'integer'"),
])
def test_schema_and_rules_reject_a_bad_card(change, message):
    with pytest.raises(RateCardError, match=message):
        rate_card_from_mapping(_mutated(change))


@pytest.mark.parametrize("text, message", [
    ("[1, 2", "not valid YAML"),
    ("- just\n- a list\n", "must be a mapping"),
    ("currency: EUR\n", "does not match its schema"),
])
def test_load_rate_card_errors(tmp_path, text, message):
    path = tmp_path / "card.yaml"
    path.write_text(text)
    with pytest.raises(RateCardError, match=message):
        load_rate_card(path)
    with pytest.raises(RateCardError, match="cannot read"):
        load_rate_card(tmp_path / "missing.yaml")


def test_a_card_file_round_trips(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(dict(CARD.data)))
    assert load_rate_card(path) == CARD


# ---- per-customer overrides ---------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, changed, check", [
    ({"missing_attribution_surcharge_percent": 50}, ["missing_attribution_surcharge_percent"],
     lambda c: c.missing_attribution_surcharge_percent == 50 and c.base_cents == CARD.base_cents),
    ({"usage_types": {"editorial": {"base_cents": {"small": 15000}}}}, ["usage_types.editorial.base_cents.small"],
     lambda c: c.base_cents["editorial"] == {"small": 15000, "medium": 16500, "large": 24000}),  # the rest kept
    ({"duration": {"per_month_percent": [100] * 12}}, ["duration.per_month_percent"], lambda c: c.per_month_percent == (100,) * 12),  # lists replace
    ({}, [], lambda c: c is CARD),
])
def test_overrides_merge_over_the_card(overrides, changed, check):
    card = with_overrides(CARD, overrides, "customer 'x'")
    assert list(card.overrides) == changed and check(card)
    assert (card.sha256 == CARD.sha256) == (not overrides)


@pytest.mark.parametrize("overrides, message", [
    ({"missing_attribution_surcharge_percent": 0.5}, "customer 'x'.*0.5 is not of type 'integer'"),
    ({"missing_attribution_surcharge_percent": 50.0}, "customer 'x'.*integer percent"),  # JSON Schema admits 50.0; we do not
    ({"surcharge": 50}, "customer 'x'.*Additional properties"),
    ({"usage_types": {"editorial": {"base_cents": {"huge": 1}}}}, "customer 'x'.*must price exactly"),
    (["not", "a", "table"], "customer 'x'.*must be a table"),
])
def test_bad_overrides_are_rejected_naming_the_customer(overrides, message):
    with pytest.raises(RateCardError, match=message):
        with_overrides(CARD, overrides, "customer 'x'")


# ---- factors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("since, until, months", [
    (RUN, RUN, 1),
    (D(2026, 10, 22), RUN, 1),
    (D(2026, 10, 21), RUN, 2),  # a use from 21 Oct is in its 2nd month on 21 Nov
    (D(2026, 1, 31), D(2026, 2, 28), 1),
    (D(2026, 1, 31), D(2026, 3, 1), 2),
    (D(2025, 11, 21), RUN, 13),
    (D(2027, 1, 1), RUN, 1),  # a date after the run never gives zero or less
])
def test_started_months(since, until, months):
    assert started_months(since, until) == months


@pytest.mark.parametrize("months, percent", [(1, 100), (2, 130), (6, 200), (12, 250), (13, 325), (24, 325), (25, 400), (61, 625)])
def test_duration_per_month_then_per_year(months, percent):
    assert duration_percent(CARD, months)[0] == percent


@pytest.mark.parametrize("longest, name", [(1, "small"), (400, "small"), (401, "medium"), (1000, "medium"), (1001, "large"), (20000, "large"), (None, "small")])
def test_size_class_bounds(longest, name):
    got, note = size_class(CARD, longest)
    assert got == name and (note is not None) == (longest is None)


@pytest.mark.parametrize("cents, percent, expected", [(12345, 50, 6173), (1, 50, 1), (3, 50, 2), (11000, 250, 27500), (0, 325, 0), (99999, 0, 0)])
def test_percent_rounds_half_up_to_a_cent(cents, percent, expected):
    assert percent_of(cents, percent) == expected


@pytest.mark.parametrize("usage, longest, since, attributed, expected, months, percent", [
    ("editorial", 300, RUN, True, 11000, 1, 100),  # small, first month
    ("editorial", 300, RUN, False, 22000, 1, 100),  # +100% missing credit
    ("commercial", 900, D(2026, 9, 1), True, 46500, 3, 150),  # medium: 31000 * 150%
    ("product", 1600, D(2025, 11, 1), True, 56875, 13, 325),  # large, 13 months: 17500 * (250 + 75)%
    ("social", 1080, D(2024, 11, 22), False, 84500, 24, 325),  # large, 2nd year: 13000 * 325% = 42250, +100%
    ("print-ad", 200, RUN, True, 22000, 1, 100),  # unknown usage: the card's default (commercial)
    ("editorial", None, RUN, True, 11000, 1, 100),  # unknown size: the smallest class, never overstated
])
def test_quote_table(usage, longest, since, attributed, expected, months, percent):
    q = quote(CARD, usage, longest, since, RUN, attributed)
    assert q.total_cents == expected and type(q.total_cents) is int
    factors = {i["factor"]: i for i in q.breakdown["items"]}
    assert list(factors)[:2] == ["base", "duration"]
    assert (factors["duration"]["months"], factors["duration"]["percent"]) == (months, percent)
    assert q.breakdown["total_cents"] == factors["duration"]["cents"] + factors.get("missing_attribution", {"cents": 0})["cents"]
    assert q.breakdown["total"] == f"{expected // 100}.{expected % 100:02d}"
    assert ("usage_note" in factors["base"]) == (usage not in USAGE_TYPES) and ("size_note" in factors["base"]) == (longest is None)
    assert json.loads(json.dumps(q.breakdown)) == q.breakdown


def _ints_only(node):
    """No float anywhere in a breakdown: money and percentages are integers."""
    if isinstance(node, dict):
        return all(_ints_only(v) for v in node.values())
    if isinstance(node, list):
        return all(_ints_only(v) for v in node)
    return not isinstance(node, float)


def test_breakdown_explains_each_factor():
    q = quote(CARD, "editorial", 300, D(2026, 2, 14), RUN, False, usage_source="json-ld:BlogPosting", size_source="img-attributes",
              since_source="published:json-ld:BlogPosting.datePublished", attribution_evidence="not-found:Alpine Lens Agency")
    base, duration, credit = q.breakdown["items"]
    assert base == {"factor": "base", "usage": "editorial", "usage_label": "Editorial use or blog", "usage_why": "json-ld:BlogPosting",
                    "size_class": "small", "longest_side_px": 300, "size_why": "img-attributes", "cents": 11000}
    assert duration == {"factor": "duration", "since": "2026-02-14", "since_source": "published:json-ld:BlogPosting.datePublished",
                        "until": "2026-11-21", "months": 10, "tier": "month 10 of the first year", "percent": 240, "cents": 26400}
    assert credit == {"factor": "missing_attribution", "credited": False, "evidence": "not-found:Alpine Lens Agency", "percent": 100, "cents": 26400}
    assert q.total_cents == 52800 and q.breakdown["rate_card"] == {"version": CARD.version, "sha256": CARD.sha256, "overrides": []}
    assert _ints_only(q.breakdown)


# ---- licences -------------------------------------------------------------------------------------------
def lic(id, domain="", images=("*",), start=D(2026, 1, 1), end=D(2026, 12, 31), operator=None):
    return LicenceTerms(id, "c", domain, tuple(images), start, end, operator)


COURIER = lic("l-courier", "daily-courier.test")
NORDIC = lic("l-nordic", operator="Nordic Prints GmbH", images=("img-1",))
OLD = lic("l-old", "shop.test", start=D(2020, 1, 1), end=D(2021, 1, 1))
FUTURE = lic("l-future", "shop.test", start=D(2027, 1, 1), end=D(2027, 12, 31))


@pytest.mark.parametrize("licences, image, domain, operator, licence, matched_by, rejected", [
    ([COURIER], "img-1", "daily-courier.test", None, "l-courier", "domain", []),
    ([COURIER], "img-1", "www.daily-courier.test", None, "l-courier", "domain", []),  # a subdomain of the licensee
    ([COURIER], "img-1", "notdaily-courier.test", None, None, None, []),  # a look-alike is not a subdomain
    ([COURIER], "img-1", "daily-courier.test.evil.test", None, None, None, []),
    ([NORDIC], "img-1", "nordic-prints.example", "Nordic Prints GmbH", "l-nordic", "operator", []),  # any domain the operator runs
    ([NORDIC], "img-1", "nordic-prints.example", "NORDIC PRINTS", "l-nordic", "operator", []),
    ([NORDIC], "img-2", "nordic-prints.example", "Nordic Prints GmbH", None, None, [{"id": "l-nordic", "why": "does not cover image img-2"}]),
    ([NORDIC], "img-1", "nordic-prints.example", "Nordic Frames GmbH", None, None, []),
    ([NORDIC], "img-1", "nordic-prints.example", None, None, None, []),  # operator unknown: no match by name
    ([OLD], "img-1", "shop.test", None, None, None, [{"id": "l-old", "why": "expired on 2021-01-01"}]),
    ([FUTURE], "img-1", "shop.test", None, None, None, [{"id": "l-future", "why": "not valid before 2027-01-01"}]),
    ([OLD, FUTURE, lic("l-now", "shop.test", images=("img-1",))], "img-1", "shop.test", None, "l-now", "domain",
     [{"id": "l-future", "why": "not valid before 2027-01-01"}]),  # checked in id order: l-future, l-now
    ([], "img-1", "shop.test", "Anyone", None, None, []),
])
def test_check_licences(licences, image, domain, operator, licence, matched_by, rejected):
    decision = check_licences(licences, image, domain, operator, RUN)
    assert (decision.licence.id if decision.licence else None, decision.matched_by, list(decision.rejected)) == (licence, matched_by, rejected)


# ---- the priced table -------------------------------------------------------------------------------------
class Cust:
    def __init__(self, id, licences=(), rate_card=None):
        self.id, self.name, self.licences, self.rate_card = id, id.title(), tuple(licences), rate_card


def enriched_row(**overrides):
    row = {"customer_id": "c", "image_id": "img-1", "page_url": "http://blog.test/a", "image_url": "http://blog.test/a.jpg",
           "domain": "blog.test", "registrable_domain": "blog.test", "operator_name": "Blog GmbH", "published_at": "2026-06-01",
           "usage_since": "2026-06-01", "usage_since_source": "published:json-ld:BlogPosting.datePublished", "last_seen": RUN.isoformat(),
           "page_kind": "editorial", "page_kind_source": "json-ld:BlogPosting", "image_width": 1200, "image_height": 800,
           "display_width": 300, "display_height": 200, "display_source": "img-attributes", "attribution_found": False,
           "attribution_evidence": "not-found:C"}
    row.update(overrides)
    return row


def test_price_hits_licence_value_overrides_and_errors():
    customers = [Cust("c", [COURIER]), Cust("half", rate_card={"missing_attribution_surcharge_percent": 50}),
                 Cust("broken", rate_card={"missing_attribution_surcharge_percent": "lots"})]
    enriched = pd.DataFrame([
        enriched_row(page_url="http://daily-courier.test/a", domain="daily-courier.test", usage_since="2025-11-20"),
        enriched_row(),  # 6 started months: 11000 * 200% + 100%
        enriched_row(customer_id="half"),
        enriched_row(customer_id="broken"),
        enriched_row(customer_id="gone"),  # no longer a customer: no licences known, default card
        enriched_row(display_width=None, display_height=None, image_width=900, image_height=600, display_source="unknown:no-declared-size(og:image)"),
    ])
    out = price_hits(enriched, customers, CARD, RUN)
    assert list(out["licensed"]) == [True, False, False, False, False, False]
    assert list(out["license_value_cents"]) == [0, 44000, 33000, 0, 44000, 66000]  # the last: the 900 px file, medium
    assert list(out["price_status"].str.split(":").str[0]) == ["licensed", "priced", "priced", "error", "priced", "priced"]
    assert out.loc[3, "price_status"].startswith("error:RateCardError: rate card overrides of customer 'broken'")
    assert out["license_value_cents"].dtype == "int64" and set(out["run_date"]) == {RUN.isoformat()}
    licensed = json.loads(out.loc[0, "value_breakdown"])
    assert licensed["status"] == "licensed" and licensed["total_cents"] == 0
    assert licensed["licence"]["uncovered_before_licence"] == {"since": "2025-11-20", "until": "2025-12-31", "days": 42}
    assert out.loc[0, "licence_id"] == "l-courier" and json.loads(out.loc[0, "licence_match"])["licence"]["matched_by"] == "domain"
    half = json.loads(out.loc[2, "value_breakdown"])
    assert half["rate_card"]["overrides"] == ["missing_attribution_surcharge_percent"] and half["items"][2]["percent"] == 50
    assert json.loads(out.loc[5, "value_breakdown"])["items"][0]["size_why"] == "image-file (unknown:no-declared-size(og:image))"
    assert out.equals(price_hits(enriched, customers, CARD, RUN))  # deterministic
    assert all(_ints_only(json.loads(b)) for b in out["value_breakdown"])


def test_price_hits_on_an_empty_day():
    out = price_hits(pd.DataFrame(columns=list(enriched_row())), [], CARD, RUN)
    assert out.empty and {"licensed", "license_value_cents", "value_breakdown", "price_status", "run_date"} <= set(out.columns)
