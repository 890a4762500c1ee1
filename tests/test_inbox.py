"""The customer inbox over HTTP: sign-in, listing and filters, hit page, actions, images, JSON API,
tenant isolation (on SQLite and on a real PostgreSQL), CSRF and escaping of web text.

Real application (FastAPI's TestClient drives the ASGI app in-process), real database and blob
store seeded by tests/inbox_seed.py through load_hits; expectations are derived from the planted
data, not typed in.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import Engine, func, select

from copyhunt.config import Settings
from copyhunt.hitsdb.digest import send_digests
from copyhunt.hitsdb.models import Customer, CustomerToken, Hit, HitEvent, InboxSession
from copyhunt.hitsdb.store import create_schema, make_engine
from copyhunt.hitsdb.tokens import issue_token, revoke_token
from copyhunt.inbox.app import create_app
from inbox_seed import D1, D2, HOSTILE_ADDRESS, HOSTILE_TITLE, JS_URL, PLANTED, Seeded, priced_frame, seed

pytest_plugins = ["conftest_pg"]

CSRF_RE = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')
NONCE_RE = re.compile(r'name="nonce" value="([A-Za-z0-9_-]+)"')


class Inbox:
    """The app over one seeded database, with one HTTP client (cookie jar) per browser."""

    def __init__(self, settings: Settings, engine: Engine, seeded: Seeded):
        self.settings, self.engine, self.seeded = settings, engine, seeded
        self.app = create_app(settings, engine)

    def client(self) -> TestClient:
        return TestClient(self.app)

    def signed_in(self, customer_id: str) -> TestClient:
        client = self.client()
        sign_in(client, self.seeded.tokens[customer_id])
        return client

    def bearer(self, customer_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.seeded.tokens[customer_id]}"}

    def hit(self, hit_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(Hit.__table__).where(Hit.id == hit_id)).mappings().one())

    def events(self, hit_id: int) -> list[tuple[str, str | None, str | None]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(HitEvent.status, HitEvent.note, HitEvent.actor).where(HitEvent.hit_id == hit_id).order_by(HitEvent.id)
            ).all()
        return [tuple(r) for r in rows]


def sign_in(client: TestClient, token: str) -> None:
    nonce = NONCE_RE.search(client.get("/signin").text).group(1)  # type: ignore[union-attr]
    r = client.post("/signin", data={"token": token, "nonce": nonce}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/hits", r.text


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def _make_inbox(url: str, tmp_path: Path) -> tuple[Inbox, Engine]:
    settings = Settings(home=tmp_path, hits_db_url=url, inbox_url="http://inbox.test")
    engine = make_engine(url)
    create_schema(engine)
    return Inbox(settings, engine, seed(engine, settings.blob_root)), engine


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[Inbox]:
    box, engine = _make_inbox(f"sqlite:///{tmp_path / 'hits.db'}", tmp_path)
    yield box
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_backend_inbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Inbox]:
    url = f"sqlite:///{tmp_path / 'hits.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    box, engine = _make_inbox(url, tmp_path)
    yield box
    engine.dispose()


def planted(customer_id: str) -> list[Any]:
    return [p for p in PLANTED if p.customer_id == customer_id]


# ---- JSON API ----------------------------------------------------------------------------------
def test_api_needs_a_valid_token(inbox: Inbox) -> None:
    client = inbox.client()
    good = inbox.seeded.tokens["alpine-lens"]
    key_id, secret = good.split("_")[1], good.split("_", 2)[2]
    wrong_secret = f"cht_{key_id}_{secret[::-1]}"
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer nonsense"},
                    {"Authorization": f"Bearer {wrong_secret}"}, {"Authorization": f"Basic {good}"},
                    {"Authorization": f"Bearer {good}x"}):
        r = client.get("/api/hits", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/hits", headers=inbox.bearer("alpine-lens")).status_code == 200

    assert revoke_token(inbox.engine, key_id)
    assert client.get("/api/hits", headers=inbox.bearer("alpine-lens")).status_code == 401


def test_api_lists_own_hits_by_value_and_date(inbox: Inbox) -> None:
    client = inbox.client()
    body = client.get("/api/hits", headers=inbox.bearer("alpine-lens")).json()
    mine = planted("alpine-lens")
    assert body["total"] == len(mine)
    assert [h["domain"] for h in body["hits"]] == [
        p.page for p in sorted(mine, key=lambda p: (-p.value_cents, -p.run_date.toordinal()))
    ]
    assert {h["customer_id"] for h in body["hits"]} == {"alpine-lens"}

    by_date = client.get("/api/hits", params={"sort": "date"}, headers=inbox.bearer("alpine-lens")).json()["hits"]
    dates = [h["first_seen"] for h in by_date]
    assert dates == sorted(dates, reverse=True) and dates[-1] == D1.isoformat()

    hit = next(h for h in body["hits"] if h["domain"] == "urban-eats.test")
    p = next(p for p in mine if p.page == "urban-eats.test")
    assert hit["region"]["query"] == list(p.paste) and hit["region"]["reference"] == list(p.crop)
    assert hit["value_breakdown"]["total_cents"] == p.value_cents == hit["license_value_cents"]
    assert hit["fetched_at"] == f"{D2.isoformat()}T09:30:00Z" and hit["html_sha256"]  # the newest fetch
    assert (hit["first_seen"], hit["last_seen"]) == (D1.isoformat(), D2.isoformat())


@pytest.mark.parametrize(
    "params, keep",
    [
        ({"min_score": 0.9}, lambda p: p.score >= 0.9),
        ({"since": D2.isoformat()}, lambda p: p.run_date >= D2),
        ({"domain": "alpine-blog.test"}, lambda p: p.page == "alpine-blog.test"),
        ({"status": "new", "min_score": 0.8, "since": D2.isoformat()}, lambda p: p.score >= 0.8 and p.run_date >= D2),
    ],
)
def test_api_filters(inbox: Inbox, params: dict[str, Any], keep: Any) -> None:
    body = inbox.client().get("/api/hits", params=params, headers=inbox.bearer("alpine-lens")).json()
    expected = {p.page for p in planted("alpine-lens") if keep(p)}
    assert expected and {h["domain"] for h in body["hits"]} == expected and body["total"] == len(expected)


def test_api_rejects_bad_filters(inbox: Inbox) -> None:
    client = inbox.client()
    for params in ({"min_score": 2}, {"since": "yesterday"}, {"status": "deleted"}, {"limit": 0}, {"sort": "random"}):
        assert client.get("/api/hits", params=params, headers=inbox.bearer("alpine-lens")).status_code == 422


def test_openapi_documents_the_api_and_bearer_auth(inbox: Inbox) -> None:
    spec = inbox.client().get("/api/openapi.json").json()
    assert set(spec["paths"]) == {"/api/hits", "/api/hits/{hit_id}", "/api/hits/{hit_id}/action",
                                  "/api/images", "/api/images/{image_id}"}
    schemes = spec["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
    for path, method in [("/api/hits", "get"), ("/api/images", "post"), ("/api/images/{image_id}", "delete")]:
        assert spec["paths"][path][method]["security"] == [{name: []} for name in schemes]
    assert "HitOut" in spec["components"]["schemas"]


def test_api_action_is_recorded(inbox: Inbox) -> None:
    hit_id = inbox.seeded.hit_ids["alpine-blog.test"]
    r = inbox.client().post(f"/api/hits/{hit_id}/action", json={"action": "claim", "note": "sent invoice #12"},
                            headers=inbox.bearer("alpine-lens"))
    assert r.status_code == 200 and r.json()["status"] == "claimed"
    key_id = inbox.seeded.tokens["alpine-lens"].split("_")[1]
    assert inbox.events(hit_id) == [("claimed", "sent invoice #12", f"token:{key_id}")]
    bad = inbox.client().post(f"/api/hits/{hit_id}/action", json={"action": "delete"}, headers=inbox.bearer("alpine-lens"))
    assert bad.status_code == 422


# ---- tenant isolation (both backends) ----------------------------------------------------------
def test_tenant_isolation_api_pages_and_images(any_backend_inbox: Inbox) -> None:
    box = any_backend_inbox
    theirs = box.seeded.hit_ids["nordic-prints.test"]  # jana-novak's hit
    mine = box.seeded.hit_ids["urban-eats.test"]  # alpine-lens's hit
    api = box.client()

    listed = api.get("/api/hits", params={"limit": 200}, headers=box.bearer("alpine-lens")).json()["hits"]
    assert theirs not in {h["id"] for h in listed}
    assert api.get(f"/api/hits/{theirs}", headers=box.bearer("alpine-lens")).status_code == 404
    assert api.get(f"/api/hits/{theirs}", headers=box.bearer("jana-novak")).status_code == 200
    assert api.get(f"/api/hits/{mine}", headers=box.bearer("jana-novak")).status_code == 404
    assert api.get("/api/hits", params={"domain": "nordic-prints.test"}, headers=box.bearer("alpine-lens")).json()["total"] == 0
    r = api.post(f"/api/hits/{theirs}/action", json={"action": "not_mine"}, headers=box.bearer("alpine-lens"))
    assert r.status_code == 404

    alpine = box.signed_in("alpine-lens")
    inbox_page = alpine.get("/hits", params={"sort": "date"}).text
    assert "nordic-prints.test" not in inbox_page and "Butterfly poster" not in inbox_page
    assert "Jana Novak" not in inbox_page
    page = alpine.get(f"/hits/{theirs}")
    assert page.status_code == 404 and "Butterfly poster" not in page.text
    for route in (f"/hits/{theirs}/found.jpg", f"/hits/{theirs}/registered.jpg", f"/hits/{theirs}/found.jpg?size=thumb"):
        assert alpine.get(route).status_code == 404, route
        assert api.get(route, headers=box.bearer("alpine-lens")).status_code == 404, route
        assert api.get(route, headers=box.bearer("jana-novak")).status_code == 200, route
    csrf = csrf_of(alpine.get(f"/hits/{mine}").text)
    r = alpine.post(f"/hits/{theirs}/action", data={"action": "not_mine", "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 404
    assert box.hit(theirs)["status"] == "new" and box.events(theirs) == []

    # The other way round, through the pages: jana sees hers and nothing of alpine-lens.
    jana = box.signed_in("jana-novak")
    listing = jana.get("/hits").text
    assert f'data-hit-id="{theirs}"' in listing and f'data-hit-id="{mine}"' not in listing
    assert jana.get(f"/hits/{mine}/registered.jpg").status_code == 404


# ---- sign-in, sessions, CSRF -------------------------------------------------------------------
def test_sign_in_session_and_sign_out(inbox: Inbox) -> None:
    client = inbox.client()
    r = client.get("/hits", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signin"

    nonce = NONCE_RE.search(client.get("/signin").text).group(1)  # type: ignore[union-attr]
    assert client.post("/signin", data={"token": "cht_000000000000_" + "A" * 43, "nonce": nonce}).status_code == 401
    fresh = inbox.client()  # no sign-in cookie: a cross-site form post
    assert fresh.post("/signin", data={"token": inbox.seeded.tokens["alpine-lens"], "nonce": nonce},
                      follow_redirects=False).status_code == 403

    nonce = NONCE_RE.search(client.get("/signin").text).group(1)  # type: ignore[union-attr]
    r = client.post("/signin", data={"token": inbox.seeded.tokens["alpine-lens"], "nonce": nonce}, follow_redirects=False)
    assert r.status_code == 303
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("copyhunt_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    session_id = client.cookies["copyhunt_session"]

    # Only hashes are stored: neither the session id nor the token's secret is in the database.
    token = inbox.seeded.tokens["alpine-lens"]
    with inbox.engine.connect() as conn:
        stored = [*conn.execute(select(InboxSession.id_sha256)).scalars(), *conn.execute(select(CustomerToken.secret_sha256)).scalars()]
    assert stored and all(session_id not in s and token.split("_", 2)[2] not in s for s in stored)

    page = client.get("/hits")
    assert page.status_code == 200 and "Alpine Lens Agency" in page.text
    csrf = csrf_of(page.text)
    assert client.post("/signout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    client.cookies.set("copyhunt_session", session_id)  # replaying the old cookie does not work
    assert client.get("/hits", follow_redirects=False).status_code == 303


class Clock:
    """A clock the test moves by hand: the limiter's window passes without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_sign_ins_are_limited_per_client_address(inbox: Inbox) -> None:
    from copyhunt.inbox.app import SIGNIN_FAILURES_MAX, SIGNIN_WINDOW_SECONDS
    from copyhunt.inbox.ratelimit import FailureLimiter

    clock = Clock()
    app = create_app(inbox.settings, inbox.engine, FailureLimiter(SIGNIN_FAILURES_MAX, SIGNIN_WINDOW_SECONDS, clock=clock))
    good = inbox.seeded.tokens["alpine-lens"]
    guesser = "203.0.113.7"

    def attempt(address: str, token: str) -> Any:
        client = TestClient(app, client=(address, 40000))  # a fresh browser each time: no session yet
        nonce = NONCE_RE.search(client.get("/signin").text).group(1)  # type: ignore[union-attr]
        return client.post("/signin", data={"token": token, "nonce": nonce}, follow_redirects=False)

    for n in range(SIGNIN_FAILURES_MAX):
        assert attempt(guesser, f"cht_guess{n}_{'x' * 40}").status_code == 401
        clock.now += 1
    refused = attempt(guesser, good)  # over the limit even a right token is not checked
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.text
    wait = int(refused.headers["retry-after"])
    assert wait == SIGNIN_WINDOW_SECONDS - SIGNIN_FAILURES_MAX  # until the first failure leaves the window
    # The Bearer API counts against the same address, and is refused the same way.
    api = TestClient(app, client=(guesser, 40001)).get("/api/hits", headers={"Authorization": f"Bearer {good}"})
    assert api.status_code == 429 and api.headers["retry-after"] == str(wait)
    # Another address is not affected.
    assert attempt("198.51.100.2", good).status_code == 303

    clock.now += wait  # the oldest failure leaves the window: one more try is allowed
    assert attempt(guesser, good).status_code == 303
    assert attempt(guesser, "wrong").status_code == 401  # and one more failure closes it again
    assert attempt(guesser, good).status_code == 429


def test_failed_bearer_tokens_are_limited(inbox: Inbox) -> None:
    from copyhunt.inbox.ratelimit import FailureLimiter

    clock = Clock()
    app = create_app(inbox.settings, inbox.engine, FailureLimiter(3, 60, clock=clock))
    client = TestClient(app, client=("203.0.113.9", 40000))
    hit_id = inbox.seeded.hit_ids["urban-eats.test"]
    assert client.get("/api/hits").status_code == 401  # no token at all is not a guess
    for url in ("/api/hits", f"/api/hits/{hit_id}", f"/hits/{hit_id}/found.jpg"):
        assert client.get(url, headers={"Authorization": "Bearer cht_nope_nope"}).status_code == 401
    limited = client.get("/api/hits", headers=inbox.bearer("alpine-lens"))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
    assert client.get(f"/hits/{hit_id}/found.jpg", headers=inbox.bearer("alpine-lens")).status_code == 429
    clock.now += 60
    assert client.get("/api/hits", headers=inbox.bearer("alpine-lens")).status_code == 200


def test_failure_limiter_window_and_memory_bound() -> None:
    from copyhunt.inbox.ratelimit import FailureLimiter

    clock = Clock()
    limiter = FailureLimiter(2, 10, max_keys=3, clock=clock)
    assert limiter.retry_after("a") is None
    limiter.record_failure("a")
    clock.now += 4
    limiter.record_failure("a")
    assert limiter.retry_after("a") == 6  # the first failure leaves the window 10 s after it
    clock.now += 5.5
    assert limiter.retry_after("a") == 1  # rounded up, never 0
    clock.now += 0.5
    assert limiter.retry_after("a") is None and limiter.tracked() == 1
    for key in ("b", "c", "d", "e"):
        limiter.record_failure(key)
    assert limiter.tracked() == 3  # the least recently failing addresses were forgotten first
    clock.now += 10
    assert limiter.tracked() == 0
    with pytest.raises(ValueError):
        FailureLimiter(0, 10)


def test_revoking_the_token_ends_its_sessions(inbox: Inbox) -> None:
    client = inbox.signed_in("alpine-lens")
    assert client.get("/hits").status_code == 200
    revoke_token(inbox.engine, inbox.seeded.tokens["alpine-lens"].split("_")[1])
    assert client.get("/hits", follow_redirects=False).status_code == 303


def test_actions_need_the_sessions_csrf_token(inbox: Inbox) -> None:
    hit_id = inbox.seeded.hit_ids["urban-eats.test"]
    client, other = inbox.signed_in("alpine-lens"), inbox.signed_in("alpine-lens")
    other_csrf = csrf_of(other.get(f"/hits/{hit_id}").text)
    for data in ({"action": "claim"}, {"action": "claim", "csrf_token": "0" * 64}, {"action": "claim", "csrf_token": other_csrf}):
        r = client.post(f"/hits/{hit_id}/action", data=data, follow_redirects=False)
        assert r.status_code == 403, data
    assert inbox.hit(hit_id)["status"] == "new" and inbox.events(hit_id) == []


# ---- pages -------------------------------------------------------------------------------------
def test_inbox_page_sorts_and_filters(inbox: Inbox) -> None:
    client = inbox.signed_in("alpine-lens")
    mine = planted("alpine-lens")
    listing = client.get("/hits").text
    order = [int(i) for i in re.findall(r'data-hit-id="(\d+)"', listing)]
    by_value = sorted(mine, key=lambda p: (-p.value_cents, -p.run_date.toordinal()))
    assert order == [inbox.seeded.hit_ids[p.page] for p in by_value]
    claimable = sum(p.value_cents for p in mine if not p.licensed)
    assert f"€{claimable // 100:,}.{claimable % 100:02d}" in listing

    filtered = client.get("/hits", params={"min_score": "0.9", "since": D2.isoformat(), "status": "new", "domain": ""}).text
    expected = {inbox.seeded.hit_ids[p.page] for p in mine if p.score >= 0.9 and p.run_date >= D2}
    assert {int(i) for i in re.findall(r'data-hit-id="(\d+)"', filtered)} == expected
    assert 'value="0.9"' in filtered  # the form keeps its filters
    assert client.get("/hits", params={"min_score": "lots"}).status_code == 422
    assert client.get("/hits", params={"since": "2026-13-45"}).status_code == 422
    assert client.get("/hits", params={"status": "gone"}).status_code == 422


def test_hit_page_shows_images_region_and_facts(inbox: Inbox) -> None:
    client = inbox.signed_in("alpine-lens")
    p = next(p for p in PLANTED if p.page == "urban-eats.test")
    hit_id = inbox.seeded.hit_ids[p.page]
    html = client.get(f"/hits/{hit_id}").text

    def rect(element_id: str) -> tuple[float, ...]:
        m = re.search(rf'<rect id="{element_id}" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', html)
        assert m, element_id
        return tuple(float(v) / 1000 for v in m.groups())

    qx, qy, qw, qh = rect("query-region")
    assert (qx, qy, qx + qw, qy + qh) == pytest.approx(p.paste, abs=1e-3)
    rx, ry, rw, rh = rect("reference-region")
    assert (rx, ry, rx + rw, ry + rh) == pytest.approx(p.crop, abs=1e-3)
    assert f'src="/hits/{hit_id}/found.jpg"' in html and f'src="/hits/{hit_id}/registered.jpg"' in html
    assert 'href="https://urban-eats.test/story"' in html and 'rel="noopener noreferrer nofollow"' in html
    assert "Urban-Eats Media GmbH" in html and "imprint@https://urban-eats.test/imprint" in html
    assert "2026-02-20" in html and D1.isoformat() in html and D2.isoformat() in html  # published, first/last seen
    # The value and its breakdown: base fee, times the duration factor, plus the missing-credit surcharge.
    half = f"€{p.value_cents // 200:,}.{p.value_cents // 2 % 100:02d}"
    total = f"€{p.value_cents // 100:,}.{p.value_cents % 100:02d}"
    rows = re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td><td class=\"num\">([^<]+)</td></tr>", html)
    assert rows == [
        ("base fee", "Commercial website (og:type); large, 900 px longest side (image-file)", half),
        ("duration", f"× 100%: month 1 of the first year, 2026-02-20 to {D2.isoformat()} (published:json-ld)", f"= {half}"),
        ("no credit to the author", "+ 100% (not-found:Alpine Lens Agency)", f"+ {half}"),
    ]
    assert "<dt>licence</dt><dd>none covers this use</dd>" in html and "version 2026-2" in html
    assert f'<td class="num">{total}</td>' in html and f'id="value">{total}<' in html
    h = inbox.hit(hit_id)
    assert h["html_sha256"] in html and f"{D2.isoformat()} 09:30:00 UTC" in html  # evidence, latest fetch


def test_hit_page_and_api_show_operator_usage_page_and_evidence(inbox: Inbox) -> None:
    """Every enrichment column of the priced frame reaches the hit page and the API, bounded and escaped."""
    import json

    from copyhunt.hitsdb.store import bound_text

    client = inbox.signed_in("alpine-lens")
    # Every hit was seen again on D2, so D2's priced rows are what the database holds.
    latest = priced_frame(planted("alpine-lens"), inbox.seeded.found_sha, D2)
    for row in latest.to_dict("records"):
        hit_id = inbox.seeded.hit_ids[row["domain"]]
        html = client.get(f"/hits/{hit_id}").text
        api = client.get(f"/api/hits/{hit_id}", headers=inbox.bearer("alpine-lens")).json()
        address = bound_text(row["operator_address"], 500)
        assert api["operator_address"] == address and len(address) <= 500
        assert (api["operator_email"], api["operator_phone"], api["operator_role"]) == (
            row["operator_email"], row["operator_phone"], row["operator_role"])
        assert (api["usage_since"], api["usage_days"]) == (row["usage_since"], row["usage_days"])
        assert (api["page_status"], api["page_online"]) == (row["page_status"], row["page_online"])
        assert (api["attribution_found"], api["attribution_evidence"]) == (row["attribution_found"], row["attribution_evidence"])
        assert api["licence_match"] == json.loads(row["licence_match"])

        assert f'id="operator-email">{row["operator_email"]}</dd>' in html
        assert f'id="operator-phone">{row["operator_phone"]}</dd>' in html
        assert f'id="usage-days">{row["usage_days"]}</dd>' in html
        up = "up" if row["page_online"] else "down"
        assert f'id="page-status">{row["page_status"]} ({up})</dd>' in html
        credit = "yes" if row["attribution_found"] else "no"
        assert re.search(rf'id="attribution">{credit} <span class="muted">\({re.escape(row["attribution_evidence"])}\)', html)
        assert 'id="licence-check"' in html
        if row["licensed"]:
            # The licence decision is shown once, in the licence check, not again under the value.
            assert html.count("lic-alp-courier-2026: daily-courier.test, matched by domain") == 1
        if row["operator_address"] == HOSTILE_ADDRESS:
            assert "<script>alert(" not in html and "<b>x</b>" not in html
            assert "&lt;script&gt;alert(&#39;addr&#39;)&lt;/script&gt; Harbour Road 5, Dublin" in html
            shown = re.search(r'id="operator-address">([^<]*)</dd>', html).group(1)  # type: ignore[union-attr]
            assert shown.endswith("…") and len(shown) < len(address)
        else:
            assert f'id="operator-address">{row["operator_address"]}</dd>' in html


def test_found_and_registered_images_are_reencoded_jpegs(inbox: Inbox) -> None:
    client = inbox.signed_in("alpine-lens")
    hit_id = inbox.seeded.hit_ids["urban-eats.test"]
    assert inbox.client().get(f"/hits/{hit_id}/found.jpg").status_code == 401  # no session, no token
    found = client.get(f"/hits/{hit_id}/found.jpg")
    assert found.headers["content-type"] == "image/jpeg" and "private" in found.headers["cache-control"]
    im = Image.open(io.BytesIO(found.content))
    assert im.format == "JPEG" and im.size == (900, 600)  # the planted canvas, within the 1200 px bound
    thumb = Image.open(io.BytesIO(client.get(f"/hits/{hit_id}/found.jpg", params={"size": "thumb"}).content))
    assert max(thumb.size) == 240 and thumb.size[0] / thumb.size[1] == pytest.approx(1.5, abs=0.01)
    registered = Image.open(io.BytesIO(client.get(f"/hits/{hit_id}/registered.jpg").content))
    assert registered.format == "JPEG" and 800 <= max(registered.size) <= 1200  # small photos scaled up for display
    assert client.get(f"/hits/{hit_id}/found.jpg", params={"size": "../../etc/passwd"}).status_code == 422


def test_a_found_blob_that_is_not_an_image_is_never_served(inbox: Inbox) -> None:
    from copyhunt.blobs import LocalBlobStore

    sha = LocalBlobStore(inbox.settings.blob_root).put(b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>")
    hit_id = inbox.seeded.hit_ids["alpine-blog.test"]
    with inbox.engine.begin() as conn:
        conn.execute(Hit.__table__.update().where(Hit.id == hit_id).values(image_sha256=sha))
    client = inbox.signed_in("alpine-lens")
    assert client.get(f"/hits/{hit_id}/found.jpg").status_code == 404


def test_web_text_is_escaped_and_script_urls_are_not_links(inbox: Inbox) -> None:
    client = inbox.signed_in("alpine-lens")
    hostile = inbox.seeded.hit_ids["bazaar-market.test"]
    for page in (client.get("/hits"), client.get(f"/hits/{hostile}")):
        assert "<script>" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp  # files from /static only
        assert page.headers["x-frame-options"] == "DENY"
    js = client.get(f"/hits/{inbox.seeded.hit_ids['evil.test']}").text
    assert 'href="javascript:' not in js.lower() and "javascript:alert(document.cookie)" in js  # shown, not linked
    assert JS_URL.startswith("javascript:") and HOSTILE_TITLE.startswith("<script>")


def test_actions_are_recorded_in_hit_events(inbox: Inbox) -> None:
    client = inbox.signed_in("alpine-lens")
    key_id = inbox.seeded.tokens["alpine-lens"].split("_")[1]
    expected: list[tuple[str, str | None, str | None]] = []
    for page, action, status, note in (
        ("urban-eats.test", "claim", "claimed", "invoice sent"),
        ("alpine-blog.test", "licensed", "licensed", None),
        ("bazaar-market.test", "not_mine", "not_mine", "a different cathedral"),
    ):
        hit_id = inbox.seeded.hit_ids[page]
        csrf = csrf_of(client.get(f"/hits/{hit_id}").text)
        r = client.post(f"/hits/{hit_id}/action", data={"action": action, "note": note or "", "csrf_token": csrf},
                        follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/hits/{hit_id}?done={action}"
        assert inbox.hit(hit_id)["status"] == status
        assert inbox.events(hit_id) == [(status, note, f"token:{key_id}")]
        shown = client.get(r.headers["location"]).text
        assert 'id="hit-status">' + status.replace("_", " ") in shown

    # The same action again (a double click) records nothing; the status filter sees the change.
    hit_id = inbox.seeded.hit_ids["urban-eats.test"]
    csrf = csrf_of(client.get(f"/hits/{hit_id}").text)
    r = client.post(f"/hits/{hit_id}/action", data={"action": "claim", "csrf_token": csrf}, follow_redirects=False)
    assert r.headers["location"].endswith("done=unchanged") and len(inbox.events(hit_id)) == 1
    claimed = client.get("/hits", params={"status": "claimed"}).text
    assert re.findall(r'data-hit-id="(\d+)"', claimed) == [str(hit_id)]


def test_digest_opt_out_in_settings(inbox: Inbox) -> None:
    client = inbox.signed_in("alpine-lens")
    page = client.get("/settings").text
    assert 'id="digest" value="on" checked' in page
    r = client.post("/settings", data={"csrf_token": csrf_of(page)}, follow_redirects=False)  # box unticked
    assert r.status_code == 303
    with inbox.engine.connect() as conn:
        assert conn.execute(select(Customer.digest_opt_out).where(Customer.id == "alpine-lens")).scalar_one() is True
    sent = send_digests(inbox.engine, D2, inbox.settings)
    assert [d.customer_id for d in sent] == ["jana-novak"]  # alpine-lens had new hits on D2 but opted out
    assert client.post("/settings", data={"digest": "on"}, follow_redirects=False).status_code == 403  # no CSRF token


def test_cli_makes_a_working_token(inbox: Inbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from copyhunt.cli import app

    monkeypatch.setenv("COPYHUNT_HOME", str(tmp_path))
    monkeypatch.setenv("COPYHUNT_HITS_DB_URL", str(inbox.engine.url))
    monkeypatch.setenv("COPYHUNT_CUSTOMERS_FILE", str(tmp_path / "no-such-customers.toml"))
    result = CliRunner().invoke(app, ["customers", "token", "jana-novak", "--label", "studio laptop"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("cht_")
    r = inbox.client().get("/api/hits", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and {h["customer_id"] for h in r.json()["hits"]} == {"jana-novak"}
    assert CliRunner().invoke(app, ["customers", "token", "nobody"]).exit_code == 1
    with inbox.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(CustomerToken)).scalar_one() == 3


def test_tokens_are_per_customer_and_unique(inbox: Inbox) -> None:
    tokens = {issue_token(inbox.engine, "alpine-lens") for _ in range(20)}
    assert len(tokens) == 20
    r = inbox.client().get("/api/hits", headers={"Authorization": f"Bearer {tokens.pop()}"})
    assert {h["customer_id"] for h in r.json()["hits"]} == {"alpine-lens"}


# ---- view helpers ------------------------------------------------------------------------------
def test_breakdown_rows_for_licensed_odd_and_broken_values() -> None:
    from copyhunt.inbox.views import breakdown_rows

    licensed = breakdown_rows(
        '{"items": [], "total_cents": 0, "licence": {"licensed": true, "licence": {"id": "lic-1", "licensee_domain": "a.test",'
        ' "matched_by": "domain", "valid_from": "2026-01-01", "valid_to": "2026-12-31"},'
        ' "uncovered_before_licence": {"days": 42, "since": "2025-11-20", "until": "2025-12-31"}}}', "EUR")
    assert licensed["notes"] == [("licence", "lic-1: a.test, matched by domain, valid 2026-01-01 to 2026-12-31"),
                                 ("unlicensed before", "42 days, 2025-11-20 to 2025-12-31")]
    assert licensed["total"] == "€0.00" and licensed["items"] == []
    odd = breakdown_rows('{"items": [{"factor": "rush_fee", "cents": 250, "hours": 4}, "junk"], "extra": {"b": [1, 2]}}', "USD")
    assert odd["items"] == [("rush fee", "hours: 4", "$2.50")] and odd["notes"] == [("extra", '{"b": [1, 2]}')]
    assert breakdown_rows("not json", "EUR")["notes"] == [("breakdown", "unreadable")]
    assert breakdown_rows("[1, 2]", "EUR")["notes"] == [("breakdown", "[1, 2]")]


def test_licence_check_rows_and_page_state() -> None:
    from copyhunt.inbox.views import breakdown_rows, licence_check_rows, page_state

    match = ('{"licensed": false, "rejected": [{"id": "lic-2", "why": "expired 2025-12-31"}]}')
    assert licence_check_rows(match) == [("licence", "none covers this use"), ("not covered by", "lic-2: expired 2025-12-31")]
    assert licence_check_rows(None) == [] and licence_check_rows("{}") == []
    assert licence_check_rows("{") == [("licence check", "unreadable")]
    breakdown = '{"items": [], "licence": ' + match + ', "status": "priced"}'
    assert ("licence", "none covers this use") in breakdown_rows(breakdown, "EUR")["notes"]
    assert breakdown_rows(breakdown, "EUR", licence_shown=True)["notes"] == [("status", "priced")]
    assert [page_state(200, True), page_state(404, False), page_state(None, None), page_state(None, False),
            page_state(301, None)] == ["200 (up)", "404 (down)", "—", "down", "301"]


def test_parse_region_rejects_malformed_boxes() -> None:
    from copyhunt.inbox.views import parse_region

    ok = parse_region('{"query": [0.1, 0.2, 0.6, 0.9], "reference": [-0.5, 0, 2, 1], "mirrored": true}')
    assert ok["query"].svg == {"x": "100.0", "y": "200.0", "width": "500.0", "height": "700.0"}
    assert (ok["reference"].x0, ok["reference"].x1) == (0.0, 1.0) and ok["mirrored"] is True  # clamped to the image
    for bad in (None, "", "[]", "{", '{"query": [1, 1, 0, 0]}', '{"query": ["a", 0, 1, 1]}', '{"query": [0, 0, NaN, 1]}',
                '{"query": [0, 0, 1]}'):
        assert parse_region(bad)["query"] is None, bad
