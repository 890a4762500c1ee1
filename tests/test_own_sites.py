"""Uses a customer allowed, and many hits at once: own sites, licences applied to open hits,
"approve this use", bulk actions, and "import from my website".

Real parts throughout: the inbox app over a hits database seeded through ``load_hits``
(tests/inbox_seed.py) on SQLite and on a real PostgreSQL, the daily load's own-site step, the
digest, and for the import the demo web served on loopback and crawled by Scrapy in a subprocess.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from copyhunt import coverage, registry
from copyhunt.hitsdb.digest import send_digests
from copyhunt.hitsdb.models import Hit, HitEvent, Image
from copyhunt.hitsdb.store import load_hits
from inbox_seed import D2, PLANTED, Planted, priced_frame
from test_inbox import Inbox, _make_inbox, csrf_of

pytest_plugins = ["conftest_pg"]

D3 = D2 + dt.timedelta(days=1)


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


def statuses(box: Inbox) -> dict[tuple[str, str], str]:
    with box.engine.connect() as conn:
        return {(c, d): s for c, d, s in conn.execute(select(Hit.customer_id, Hit.domain, Hit.status))}


def event_count(box: Inbox) -> int:
    with box.engine.connect() as conn:
        return len(conn.execute(select(HitEvent.id)).all())


def alpine_hit(box: Inbox, host: str) -> int:
    return box.seeded.hit_ids[host]


# ---- own sites -------------------------------------------------------------------------------------
def test_domain_of_takes_what_a_person_pastes_and_refuses_what_is_not_a_domain() -> None:
    assert coverage.domain_of("https://www.Urban-Eats.test/menu?x=1") == "urban-eats.test"
    assert coverage.domain_of("shop.example.com.") == "shop.example.com"
    assert coverage.domain_of("http://user@münchen.example:8080/") == "xn--mnchen-3ya.example"
    for bad in ("", "localhost", "127.0.0.1", "http://10.0.0.1/", "two words.com", "example.com'; drop table hits;--", "a..b.com"):
        with pytest.raises(ValueError, match="not a domain name"):
            coverage.domain_of(bad)


def test_an_own_site_authorises_the_open_hits_on_it_and_its_subdomains_only(any_backend_inbox: Inbox) -> None:
    box = any_backend_inbox
    engine = box.engine
    # People decided about two hits before: one claimed (still open), one not theirs (decided).
    from copyhunt.hitsdb import workflow

    workflow.apply_action(engine, "alpine-lens", alpine_hit(box, "alpine-blog.test"), "claim", "account:1")
    workflow.apply_action(engine, "alpine-lens", alpine_hit(box, "urban-eats.test"), "not_mine", "account:1")
    before = statuses(box)
    events_before = event_count(box)

    added = coverage.add_own_site(engine, "alpine-lens", "https://www.alpine-blog.test/about", "settings", "account:1", "my blog")
    assert (added.domain, added.added, added.hits_authorised) == ("alpine-blog.test", True, 1)
    assert statuses(box)[("alpine-lens", "alpine-blog.test")] == "authorised"
    assert box.events(alpine_hit(box, "alpine-blog.test"))[-1] == ("authorised", "on your own site alpine-blog.test", "account:1")

    # A decided hit keeps its status; a domain that merely ends in the same letters is not covered.
    assert coverage.add_own_site(engine, "alpine-lens", "urban-eats.test", "settings", "account:1").hits_authorised == 0
    assert coverage.add_own_site(engine, "alpine-lens", "market.test", "settings", "account:1").hits_authorised == 0
    assert statuses(box)[("alpine-lens", "urban-eats.test")] == "not_mine"
    assert statuses(box)[("alpine-lens", "bazaar-market.test")] == "new"

    # Another customer's hit on a domain this customer lists is theirs to decide.
    assert coverage.add_own_site(engine, "alpine-lens", "nordic-prints.test", "settings", "account:1").hits_authorised == 0
    assert statuses(box)[("jana-novak", "nordic-prints.test")] == "new"

    # Idempotent: adding again adds nothing and records nothing.
    events = event_count(box)
    again = coverage.add_own_site(engine, "alpine-lens", "alpine-blog.test", "settings", "account:1")
    assert (again.added, again.hits_authorised, event_count(box)) == (False, 0, events)
    assert events == events_before + 1
    assert {k: v for k, v in statuses(box).items() if v != before[k]} == {("alpine-lens", "alpine-blog.test"): "authorised"}
    assert [s["domain"] for s in coverage.list_own_sites(engine, "alpine-lens")] == [
        "alpine-blog.test", "market.test", "nordic-prints.test", "urban-eats.test"]
    assert coverage.list_own_sites(engine, "jana-novak") == []
    with pytest.raises(LookupError):
        coverage.add_own_site(engine, "nobody", "example.com", "cli", "cli")

    # Removing a site changes no hit.
    assert coverage.remove_own_site(engine, "alpine-lens", "alpine-blog.test")
    assert not coverage.remove_own_site(engine, "alpine-lens", "alpine-blog.test")
    assert not coverage.remove_own_site(engine, "jana-novak", "urban-eats.test")  # not hers
    assert statuses(box)[("alpine-lens", "alpine-blog.test")] == "authorised"


def test_the_daily_load_authorises_new_hits_on_own_sites_and_the_digest_leaves_them_out(inbox: Inbox) -> None:
    engine = inbox.engine
    coverage.add_own_site(engine, "alpine-lens", "daily-courier.test", "settings", "account:1")
    # Day 3 finds everything again, plus two new uses: one on a subdomain of the own site, one elsewhere.
    on_own = Planted("alpine-lens", "alp-st-basil", "blog.daily-courier.test", (0, 0, 1, 1), (0, 0, 1, 1), 20_000, 0.9, D3,
                     title="Our photographer's winter pictures")
    elsewhere = Planted("alpine-lens", "alp-st-basil", "thief.test", (0, 0, 1, 1), (0, 0, 1, 1), 40_000, 0.9, D3, title="Stolen")
    found = {**inbox.seeded.found_sha, on_own.page: inbox.seeded.found_sha["daily-courier.test"],
             elsewhere.page: inbox.seeded.found_sha["daily-courier.test"]}
    frame = priced_frame([*PLANTED, on_own, elsewhere], found, D3)

    def load_day() -> int:
        load_hits(engine, frame, D3)
        return coverage.authorise_own_site_hits(engine, ["alpine-lens", "jana-novak"], D3)

    assert load_day() == 1
    assert statuses(inbox)[("alpine-lens", "blog.daily-courier.test")] == "authorised"
    assert statuses(inbox)[("alpine-lens", "thief.test")] == "new"
    events = event_count(inbox)
    assert load_day() == 0 and event_count(inbox) == events  # a re-run of the day adds nothing

    settings = dataclasses.replace(inbox.settings, outbox_dir=inbox.settings.home / "outbox")
    sent = {r.customer_id: r for r in send_digests(engine, D3, settings)}
    assert sent["alpine-lens"].hit_count == 1  # thief.test only
    import email
    import email.policy

    message = email.message_from_bytes(sent["alpine-lens"].path.read_bytes(), policy=email.policy.default)
    mail = message.get_body(("plain",)).get_content()
    assert "thief.test" in mail and "blog.daily-courier.test" not in mail

    # The inbox lists it only when asked for approved uses.
    client = inbox.signed_in("alpine-lens")
    default = client.get("/hits").text
    assert "Our photographer" not in default and "Stolen" in default
    approved = client.get("/hits", params={"status": "authorised"}).text
    assert "Our photographer" in approved and "Stolen" not in approved
    api = client.get("/api/hits", headers=inbox.bearer("alpine-lens")).json()
    assert "blog.daily-courier.test" not in {h["domain"] for h in api["hits"]}


def test_a_new_licence_marks_the_open_hits_it_covers_licensed(any_backend_inbox: Inbox) -> None:
    box = any_backend_inbox
    engine = box.engine
    hit = alpine_hit(box, "urban-eats.test")
    # Valid only after the use was last seen: covers nothing.
    assert registry.put_licence(engine, "alpine-lens", "lic-late", ["*"], dt.date(2027, 1, 1), dt.date(2027, 12, 31),
                                "urban-eats.test", actor="account:1") == 0
    # Another image only: covers nothing on that page (its hit shows alp-bahrain-fort).
    assert registry.put_licence(engine, "alpine-lens", "lic-other", ["alp-st-basil"], dt.date(2026, 1, 1), dt.date(2026, 12, 31),
                                "urban-eats.test", actor="account:1") == 0
    assert statuses(box)[("alpine-lens", "urban-eats.test")] == "new"
    # By operator name, in the words the page's imprint uses (pricing's same_party rule).
    covered = registry.put_licence(engine, "alpine-lens", "lic-eats", ["alp-bahrain-fort"], dt.date(2026, 1, 1), dt.date(2026, 12, 31),
                                   "", "urban-eats media gmbh", actor="account:1")
    assert covered == 1
    assert statuses(box)[("alpine-lens", "urban-eats.test")] == "licensed"
    assert box.events(hit)[-1] == ("licensed", "covered by licence lic-eats", "account:1")
    events = event_count(box)
    assert registry.put_licence(engine, "alpine-lens", "lic-eats", ["alp-bahrain-fort"], dt.date(2026, 1, 1), dt.date(2026, 12, 31),
                                "", "urban-eats media gmbh", actor="account:1") == 0
    assert event_count(box) == events
    assert statuses(box)[("jana-novak", "nordic-prints.test")] == "new"


# ---- in the inbox ----------------------------------------------------------------------------------
def test_bulk_actions_on_ticked_hits_and_on_a_whole_filter(any_backend_inbox: Inbox) -> None:
    box = any_backend_inbox
    client = box.signed_in("alpine-lens")
    csrf = csrf_of(client.get("/hits").text)
    ticked = [alpine_hit(box, "urban-eats.test"), alpine_hit(box, "alpine-blog.test")]
    theirs = box.seeded.hit_ids["nordic-prints.test"]  # jana-novak's
    before = statuses(box)

    r = client.post("/hits/bulk", data={"csrf_token": csrf, "action": "claim", "scope": "selected", "hit_id": [*ticked, theirs]},
                    follow_redirects=False)
    assert r.status_code == 303 and "changed=2" in r.headers["location"]
    assert all(box.hit(i)["status"] == "claimed" for i in ticked) and box.hit(theirs)["status"] == "new"
    assert all(box.events(i)[-1] == ("claimed", None, box.events(i)[-1][2]) for i in ticked)
    assert "2 hits claimed" in client.get(r.headers["location"]).text

    # Every hit the filter shows, over all its pages: here the open ones on one domain.
    r = client.post("/hits/bulk", data={"csrf_token": csrf, "action": "not_mine", "scope": "filter", "status": "new",
                                        "domain": "bazaar-market.test"}, follow_redirects=False)
    assert r.status_code == 303 and "changed=1" in r.headers["location"]
    assert box.hit(alpine_hit(box, "bazaar-market.test"))["status"] == "not_mine"

    # Refused: no CSRF token, nothing ticked, an action the bar does not offer. Nothing changes.
    after = statuses(box)
    assert client.post("/hits/bulk", data={"action": "licensed", "scope": "filter"}).status_code == 403
    assert client.post("/hits/bulk", data={"csrf_token": csrf, "action": "licensed", "scope": "selected"}).status_code == 422
    assert client.post("/hits/bulk", data={"csrf_token": csrf, "action": "reopen", "scope": "filter"}).status_code == 422
    assert statuses(box) == after
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {("alpine-lens", "urban-eats.test"), ("alpine-lens", "alpine-blog.test"), ("alpine-lens", "bazaar-market.test")}


def test_approve_this_use_and_add_its_domain_to_own_sites(inbox: Inbox) -> None:
    client = inbox.signed_in("alpine-lens")
    hit = alpine_hit(inbox, "alpine-blog.test")
    page = client.get(f"/hits/{hit}").text
    assert 'id="action-approve"' in page and 'id="own-site"' in page
    r = client.post(f"/hits/{hit}/action", data={"csrf_token": csrf_of(page), "action": "approve", "own_site": "on"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("done=approve_site")
    assert inbox.hit(hit)["status"] == "authorised"
    assert [(s["domain"], s["source"]) for s in coverage.list_own_sites(inbox.engine, "alpine-lens")] == [("alpine-blog.test", "approve")]
    assert "is one of your own sites" in client.get(f"/hits/{hit}").text
    # Approving without the box ticked adds no site.
    other = alpine_hit(inbox, "urban-eats.test")
    client.post(f"/hits/{other}/action", data={"csrf_token": csrf_of(page), "action": "approve"})
    assert inbox.hit(other)["status"] == "authorised"
    assert len(coverage.list_own_sites(inbox.engine, "alpine-lens")) == 1


def test_own_sites_in_settings(inbox: Inbox) -> None:
    client = inbox.signed_in("alpine-lens")
    csrf = csrf_of(client.get("/settings").text)
    assert client.post("/settings/sites", data={"domain": "urban-eats.test"}).status_code == 403
    r = client.post("/settings/sites", data={"csrf_token": csrf, "domain": "https://urban-eats.test/", "note": "<b>client</b>"})
    assert r.status_code == 200 and "urban-eats.test is one of your own sites. 1 hit on it is now an approved use." in r.text
    assert "&lt;b&gt;client&lt;/b&gt;" in r.text and "<b>client</b>" not in r.text
    assert inbox.hit(alpine_hit(inbox, "urban-eats.test"))["status"] == "authorised"
    bad = client.post("/settings/sites", data={"csrf_token": csrf, "domain": "192.168.1.1"})
    assert bad.status_code == 422 and "not a domain name" in bad.text
    # Another customer sees none of it and cannot remove it.
    other = inbox.signed_in("jana-novak")
    assert "urban-eats.test" not in other.get("/settings").text
    other_csrf = csrf_of(other.get("/settings").text)
    assert other.post("/settings/sites/remove", data={"csrf_token": other_csrf, "domain": "urban-eats.test"}).status_code == 404
    r = client.post("/settings/sites/remove", data={"csrf_token": csrf, "domain": "urban-eats.test"})
    assert r.status_code == 200 and "no longer one of your own sites" in r.text
    assert coverage.list_own_sites(inbox.engine, "alpine-lens") == []


def test_sites_on_the_command_line(inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    from copyhunt.cli import app

    monkeypatch.setenv("COPYHUNT_HOME", str(inbox.settings.home))
    monkeypatch.setenv("COPYHUNT_HITS_DB_URL", inbox.settings.hits_db_url)
    monkeypatch.setenv("COPYHUNT_CUSTOMERS_FILE", str(inbox.settings.home / "no-customers.toml"))
    runner = CliRunner()
    r = runner.invoke(app, ["sites", "add", "alpine-lens", "www.urban-eats.test", "--note", "client"])
    assert r.exit_code == 0 and "urban-eats.test added; 1 hit(s) now approved uses" in r.output, r.output
    r = runner.invoke(app, ["sites", "list", "alpine-lens"])
    assert r.exit_code == 0 and "urban-eats.test" in r.output and "cli" in r.output
    r = runner.invoke(app, ["sites", "add", "alpine-lens", "not a domain"])
    assert r.exit_code == 1 and "not a domain name" in r.output
    assert runner.invoke(app, ["sites", "remove", "alpine-lens", "urban-eats.test"]).exit_code == 0
    assert runner.invoke(app, ["sites", "remove", "alpine-lens", "urban-eats.test"]).exit_code == 1


# ---- import from my website --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_web(tmp_path_factory: pytest.TempPathFactory):
    from copyhunt.demo.web import build, serve

    root = tmp_path_factory.mktemp("demo-web")
    web = build(root, Path(__file__).resolve().parents[1] / "demo" / "customers.toml")
    server = serve(root)
    yield web, server
    server.stop()


def import_settings(box: Inbox, proxy_url: str):
    from copyhunt.demo_run import demo_settings

    return dataclasses.replace(demo_settings(box.settings, proxy_url, box.settings.home / "seeds.txt"), import_timeout_seconds=90)


@pytest.mark.slow
def test_import_from_a_demo_web_site_registers_its_images_and_lists_it_as_own(inbox: Inbox, demo_web) -> None:
    from copyhunt.site_import import ImportFailed, import_site

    web, server = demo_web
    settings = import_settings(inbox, server.proxy_url)
    engine = inbox.engine
    registry.add_customer(engine, "nordic", "owner@nordic-prints.example", "Nordic Prints GmbH")

    first = import_site(engine, settings, "nordic", "nordic-prints.test", actor="account:9")
    counts = first.counts()
    assert first.domain == "nordic-prints.test" and first.pages >= 5
    assert counts["created"] >= 5, counts
    with engine.connect() as conn:
        rows = conn.execute(select(Image.image_id, Image.source_kind, Image.source_url, Image.sha256)
                            .where(Image.customer_id == "nordic")).all()
    assert len(rows) == counts["created"]
    assert {r.source_kind for r in rows} == {"import"}
    assert all(r.source_url.startswith("http://nordic-prints.test/") for r in rows)
    # robots.txt disallows /private/, where the shop keeps pages with images too: nothing came from there.
    private_pages = list((web.root / "sites" / "nordic-prints.test" / "private").rglob("*.html"))
    assert private_pages and any("<img" in p.read_text(errors="replace") for p in private_pages)
    assert not any("/private/" in r.source_url for r in rows)
    assert len({r.sha256 for r in rows}) == len(rows)
    assert [(s["domain"], s["source"]) for s in coverage.list_own_sites(engine, "nordic")] == [("nordic-prints.test", "import")]
    rejected = [r for r in first.results if r.status == "rejected"]
    assert all(r.reason for r in rejected)  # each with a reason a person reads

    # A second import registers nothing new; through the inbox page this time.
    from copyhunt.hitsdb.tokens import issue_token
    from copyhunt.inbox.app import create_app
    from fastapi.testclient import TestClient
    from test_inbox import sign_in

    client = TestClient(create_app(settings, engine))
    sign_in(client, issue_token(engine, "nordic", "tests"))
    page = client.get("/library/import")
    assert page.status_code == 200 and 'id="import-form"' in page.text
    r = client.post("/library/import", data={"csrf_token": csrf_of(page.text), "url": "http://nordic-prints.test/"})
    assert r.status_code == 200, r.text
    assert re.search(r'id="import-created">0<', r.text)
    assert re.search(rf'id="import-existing">{counts["created"]}<', r.text)
    assert client.post("/library/import", data={"url": "http://nordic-prints.test/"}).status_code == 403  # CSRF

    # Addresses that are not a public site are refused before any crawl, and nothing changes.
    for bad in ("http://127.0.0.1:9/", "localhost", "ftp://nordic-prints.test/", "javascript:alert(1)"):
        with pytest.raises(ImportFailed):
            import_site(engine, settings, "nordic", bad)
    r = client.post("/library/import", data={"csrf_token": csrf_of(page.text), "url": "http://10.0.0.1/"})
    assert r.status_code == 422 and "Nothing was imported" in r.text
    # A site the demo web does not serve: the crawl reads no page, and says so.
    with pytest.raises(ImportFailed, match="no page of nowhere.test could be read"):
        import_site(engine, settings, "nordic", "http://nowhere.test/")
    assert len(registry.list_images(engine, "nordic")) == counts["created"]
    assert [s["domain"] for s in coverage.list_own_sites(engine, "nordic")] == ["nordic-prints.test"]
