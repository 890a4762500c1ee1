import datetime as dt
import json
from dataclasses import dataclass

import pandas as pd
import pytest

from copyhunt.pricing import RateCardError, load_rate_card, matching_licence, months_between, price, price_hits

CARD = load_rate_card()
RUN = dt.date(2026, 11, 21)


@pytest.mark.parametrize(
    "usage, width, since, attributed, expected",
    [
        ("editorial", 300, RUN, True, 11000),                       # small, first month
        ("editorial", 300, RUN, False, 22000),                      # +100% missing credit
        ("commercial", 900, dt.date(2026, 9, 1), True, 46500),      # medium, 3 months: 31000 * 150%
        ("product", 1600, dt.date(2025, 11, 1), True, 43750),       # large, 13 months: 17500 * (250 + 75)% ... year 2
        ("unknown-kind", 200, RUN, True, 22000),                    # unknown usage priced as commercial
    ],
)
def test_rate_card_table(usage, width, since, attributed, expected):
    cents, breakdown = price(usage, width, width // 2, since, RUN, attributed, CARD)
    assert isinstance(cents, int)
    assert cents == breakdown["total_cents"]
    if usage == "product":
        assert breakdown["items"][1]["months"] == 13 and breakdown["items"][1]["percent"] == 325
        expected = 17500 * 325 // 100
    assert cents == expected
    assert json.dumps(breakdown)  # serialisable, explains each factor
    assert [i["factor"] for i in breakdown["items"]][:2] == ["base", "duration"]


def test_months_are_started_months():
    assert months_between(RUN, RUN) == 1
    assert months_between(dt.date(2026, 10, 21), RUN) == 2
    assert months_between(dt.date(2027, 1, 1), RUN) == 1  # a future date never gives zero


@dataclass
class Lic:
    id: str
    licensee_domain: str
    image_ids: tuple
    valid_from: dt.date
    valid_to: dt.date


@dataclass
class Cust:
    id: str
    name: str
    licences: tuple


def test_licence_matching_domain_image_and_validity():
    c = Cust("c", "C", (Lic("l1", "daily-courier.test", ("*",), dt.date(2026, 1, 1), dt.date(2026, 12, 31)),
                        Lic("l2", "shop.test", ("img-2",), dt.date(2020, 1, 1), dt.date(2021, 1, 1))))
    assert matching_licence(c, "img-1", "www.daily-courier.test", "daily-courier.test", None, RUN).id == "l1"
    assert matching_licence(c, "img-1", "other.test", "other.test", None, RUN) is None
    assert matching_licence(c, "img-2", "shop.test", "shop.test", None, RUN) is None  # expired
    assert matching_licence(c, "img-1", "daily-courier.test", "daily-courier.test", None, dt.date(2027, 1, 2)) is None


def test_price_hits_licensed_is_kept_at_zero_and_deterministic():
    c = Cust("c", "C", (Lic("l1", "daily-courier.test", ("*",), dt.date(2026, 1, 1), dt.date(2026, 12, 31)),))
    enriched = pd.DataFrame([
        {"customer_id": "c", "image_id": "i", "page_url": "http://daily-courier.test/a", "image_url": "http://daily-courier.test/a.jpg", "domain": "daily-courier.test",
         "registrable_domain": "daily-courier.test", "operator_name": None, "published_at": "2026-06-01", "page_kind": "editorial", "image_width": 300, "image_height": 200, "attribution_found": False},
        {"customer_id": "c", "image_id": "i", "page_url": "http://blog.test/b", "image_url": "http://blog.test/b.jpg", "domain": "blog.test",
         "registrable_domain": "blog.test", "operator_name": "X", "published_at": None, "page_kind": "editorial", "image_width": 300, "image_height": 200, "attribution_found": True},
    ])
    out = price_hits(enriched, [c], CARD, RUN)
    assert list(out["licensed"]) == [True, False]
    assert list(out["license_value_cents"]) == [0, 11000]
    assert out.equals(price_hits(enriched, [c], CARD, RUN))


def test_malformed_rate_card(tmp_path):
    bad = tmp_path / "card.yaml"
    bad.write_text("currency: EUR\nversion: x\nbase_cents: {commercial: {small: 1}}\n")
    with pytest.raises(RateCardError):
        load_rate_card(bad)
    bad.write_text("[1, 2")
    with pytest.raises(RateCardError, match="YAML"):
        load_rate_card(bad)
