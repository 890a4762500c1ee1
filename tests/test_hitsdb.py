"""Integration tests of the hits database and the daily digest, on real SQLite and PostgreSQL.

The upsert contract tests run once per backend (``db`` is parametrized); the PostgreSQL runs skip
when no server binaries are installed. Digests are checked in a real outbox and through a real
local SMTP server (aiosmtpd). No mocks.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import io
import socket
import threading
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest
from PIL import Image
from sqlalchemy import Engine, delete, func, select, update

from copyhunt.blobs import LocalBlobStore
from copyhunt.config import Settings
from copyhunt.hitsdb.digest import format_money, make_thumbnail, send_digests
from copyhunt.hitsdb.models import Customer, Digest, Hit, HitEvent, Run
from copyhunt.hitsdb.store import (
    PRICED_COLUMNS,
    LoadStats,
    count_hits,
    create_schema,
    hits_for_customer,
    load_hits,
    make_engine,
    sync_customers,
    table_dump,
)

pytest_plugins = ["conftest_pg"]

D1, D2, D3 = dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)

CUSTOMERS: list[dict[str, Any]] = [
    {
        "id": "alpine-lens",
        "name": "Alpine Lens Agency",
        "email": "rights@alpine-lens.example",
        "images": [
            {"id": "alp-fort", "title": "Bahrain Fort", "path": "assets/x.jpg"},
            {"id": "alp-basil", "title": "Saint Basil's", "path": "assets/y.jpg"},
        ],
        "licences": [
            {
                "id": "lic-alp-courier",
                "licensee_domain": "daily-courier.test",
                "image_ids": ["*"],
                "valid_from": "2026-01-01",
                "valid_to": "2027-12-31",
            }
        ],
    },
    {
        "id": "jana-novak",
        "name": "Jana Novak Photography",
        "email": "studio@jana-novak.example",
        "images": [{"id": "jn-pasha", "title": "Two-tailed pasha", "path": "assets/z.jpg"}],
        "licences": [],
    },
]


def priced_row(page: str, run_date: dt.date = D1, **overrides: Any) -> dict[str, Any]:
    """One row of the priced frame (the load_hits input contract)."""
    row: dict[str, Any] = {
        "run_date": run_date.isoformat(),
        "customer_id": "alpine-lens",
        "image_id": "alp-fort",
        "page_url": f"https://{page}/article",
        "image_url": f"https://cdn.{page}/img/photo.jpg",
        "image_sha256": None,
        "score": 0.91,
        "region": '{"x": 0, "y": 0, "w": 640, "h": 480}',
        "page_title": f"Story on {page}",
        "domain": page,
        "registrable_domain": page,
        "operator_name": f"{page} Media GmbH",
        "operator_source": "imprint",
        "published_at": "2026-02-20",
        "published_source": "meta",
        "licensed": False,
        "licence_id": None,
        "license_value_cents": 45_000,
        "currency": "EUR",
        "value_breakdown": '{"base_cents": 30000, "surcharge_cents": 15000}',
        "html_sha256": "ab" * 32,
        "fetched_at": f"{run_date.isoformat()}T10:00:00Z",
    }
    row.update(overrides)
    return row


def frame(*rows: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(PRICED_COLUMNS))


def dump(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    return {
        "hits": table_dump(engine, Hit.__table__, ["id"]),
        "hit_events": table_dump(engine, HitEvent.__table__, ["id"]),
    }


def by_page(engine: Engine, customer_id: str = "alpine-lens") -> dict[str, dict[str, Any]]:
    return {h["domain"]: h for h in hits_for_customer(engine, customer_id)}


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty hits database with the demo customers synced, on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'copyhunt.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    create_schema(engine)
    sync_customers(engine, CUSTOMERS)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, inbox_url="http://inbox.copyhunt.test/")


# ---- sync --------------------------------------------------------------------------------------
def test_sync_customers_is_idempotent_and_keeps_opt_out(db: Engine) -> None:
    before = table_dump(db, Customer.__table__)
    stats = sync_customers(db, CUSTOMERS)
    assert (stats.customers, stats.images, stats.licences) == (0, 0, 0)
    assert table_dump(db, Customer.__table__) == before

    opted = [{**CUSTOMERS[1], "digest_opt_out": True}]
    assert sync_customers(db, opted).customers == 1
    sync_customers(db, CUSTOMERS)  # the file does not mention opt-out: the DB keeps it
    with db.connect() as conn:
        assert conn.execute(select(Customer.digest_opt_out).where(Customer.id == "jana-novak")).scalar_one()


def test_sync_refuses_path_like_customer_ids(db: Engine) -> None:
    with pytest.raises(ValueError, match="customer id"):
        sync_customers(db, [{"id": "../etc", "name": "x", "email": "x@example.org"}])


# ---- upsert contract (both backends) -----------------------------------------------------------
def test_same_frame_twice_changes_nothing(db: Engine) -> None:
    rows = [priced_row("a.test"), priced_row("b.test", image_id="alp-basil"), priced_row("c.test", score=0.5)]
    # The same key twice in one frame (e.g. a retried fetch) must still give one row.
    f = frame(*rows, priced_row("a.test", score=0.42))
    first = load_hits(db, f, D1)
    assert first == LoadStats(inserted=3, updated=0, marked_offline=0, total=3)
    snapshot = dump(db)

    again = load_hits(db, f, D1)
    assert again == LoadStats(inserted=0, updated=0, marked_offline=0, total=3)
    assert dump(db) == snapshot
    # Frame order does not matter either.
    assert load_hits(db, f.iloc[::-1].reset_index(drop=True), D1).updated == 0
    assert dump(db) == snapshot

    with db.connect() as conn:
        n_keys = conn.execute(
            select(func.count()).select_from(
                select(Hit.customer_id, Hit.image_id, Hit.page_url, Hit.image_url).distinct().subquery()
            )
        ).scalar_one()
        run = conn.execute(select(Run.frame_rows, Run.new_hits, Run.went_offline, Run.total_hits).where(Run.run_date == D1)).one()
    assert n_keys == 3
    assert tuple(run) == (3, 3, 0, 3)
    assert by_page(db)["a.test"]["score"] == pytest.approx(0.91)  # the best duplicate wins


def test_evidence_fetch_time_is_kept_in_utc(db: Engine) -> None:
    f1 = frame(priced_row("a.test", fetched_at=pd.Timestamp("2026-03-01T10:15:30.250Z")),
               priced_row("b.test", fetched_at="2026-03-01T12:00:00+02:00"), priced_row("c.test", fetched_at=None))
    load_hits(db, f1, D1)
    hits = by_page(db)

    def utc(value: dt.datetime | None) -> dt.datetime | None:
        # SQLite hands back the stored UTC wall time without a zone; PostgreSQL an aware datetime.
        return value if value is None or value.tzinfo else value.replace(tzinfo=dt.timezone.utc)

    assert utc(hits["a.test"]["fetched_at"]) == dt.datetime(2026, 3, 1, 10, 15, 30, 250000, tzinfo=dt.timezone.utc)
    assert utc(hits["b.test"]["fetched_at"]) == dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.timezone.utc)
    assert hits["c.test"]["fetched_at"] is None
    assert load_hits(db, f1, D1).updated == 0  # re-loading the day changes nothing
    # A later run's snapshot is the newer evidence; a backfill of the earlier day does not rewind it.
    load_hits(db, frame(priced_row("a.test", D2, fetched_at="2026-03-02T08:00:00Z")), D2)
    load_hits(db, f1, D1)
    assert utc(by_page(db)["a.test"]["fetched_at"]) == dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.timezone.utc)


def test_first_and_last_seen_over_two_runs(db: Engine) -> None:
    load_hits(db, frame(priced_row("a.test"), priced_row("b.test")), D1)
    stats = load_hits(
        db,
        frame(
            priced_row("a.test", D2, score=0.97, license_value_cents=60_000, published_at=None),
            priced_row("c.test", D2),
        ),
        D2,
    )
    assert stats == LoadStats(inserted=1, updated=1, marked_offline=1, total=3)
    hits = by_page(db)
    a, b, c = hits["a.test"], hits["b.test"], hits["c.test"]
    assert (a["first_seen"], a["last_seen"], a["online"]) == (D1, D2, True)
    assert a["score"] == pytest.approx(0.97) and a["license_value_cents"] == 60_000
    assert a["published_at"] == dt.date(2026, 2, 20)  # a page that lost its date keeps the known one
    assert (c["first_seen"], c["last_seen"]) == (D2, D2)
    assert (b["first_seen"], b["last_seen"], b["online"]) == (D1, D1, False)

    # Backfill: re-running D1 afterwards neither rewinds newer facts nor revives what D2 found gone.
    snapshot = dump(db)
    assert load_hits(db, frame(priced_row("a.test"), priced_row("b.test")), D1).inserted == 0
    assert dump(db) == snapshot


def test_offline_marking(db: Engine) -> None:
    load_hits(db, frame(priced_row("a.test"), priced_row("b.test"), priced_row("j.test", customer_id="jana-novak", image_id="jn-pasha")), D1)
    # D2: only a.test for alpine-lens; jana-novak is absent from the frame.
    stats = load_hits(db, frame(priced_row("a.test", D2), priced_row("new.test", D2)), D2)
    assert stats.marked_offline == 1
    hits = by_page(db)
    assert hits["b.test"]["online"] is False and hits["b.test"]["last_seen"] == D1  # kept, not deleted
    assert hits["new.test"]["online"] is True  # first seen today: never "missing"
    assert by_page(db, "jana-novak")["j.test"]["online"] is True  # not in this frame: left alone

    with db.connect() as conn:
        events = conn.execute(select(HitEvent.hit_id, HitEvent.status, HitEvent.at)).all()
    assert [(e[0], e[1]) for e in events] == [(hits["b.test"]["id"], "offline")]
    assert events[0][2].date() == D2  # stamped with the run date, not the clock

    # The caller can say the frame is complete for a customer with no rows at all.
    assert load_hits(db, frame(priced_row("a.test", D2), priced_row("new.test", D2)), D2, complete_for=["jana-novak"]).marked_offline == 1
    assert by_page(db, "jana-novak")["j.test"]["online"] is False

    # Seen again later: back online, with an event (and the two D2 hits missing on D3 go offline).
    assert load_hits(db, frame(priced_row("b.test", D3)), D3) == LoadStats(inserted=0, updated=1, marked_offline=2, total=4)
    b_id = by_page(db)["b.test"]["id"]
    assert by_page(db)["b.test"]["online"] is True
    with db.connect() as conn:
        history = conn.execute(select(HitEvent.status).where(HitEvent.hit_id == b_id).order_by(HitEvent.id)).scalars()
        assert list(history) == ["offline", "online"]


def test_web_text_is_bounded_and_cleaned(db: Engine) -> None:
    long_url = "https://long.test/" + "ü" * 3000  # 6000 bytes; the PostgreSQL key index needs < 2.7 kB
    f = frame(priced_row("long.test", page_url=long_url, image_url=long_url + ".jpg", page_title="x\x00y" + "t" * 5000))
    assert load_hits(db, f, D1).inserted == 1
    hit = by_page(db)["long.test"]
    assert len(hit["page_url"].encode()) <= 1000 and hit["page_url"].startswith("https://long.test/ü")
    assert len(hit["page_title"]) == 2000 and "\x00" not in hit["page_title"]
    assert load_hits(db, f, D1).updated == 0


# What copyhunt.enrich and copyhunt.pricing add to a priced row beyond the operator's name and dates.
ENRICHMENT: dict[str, Any] = {
    "operator_address": "Am Sandtorkai 99, 20457 Hamburg, DE", "operator_email": "shop@a.test",
    "operator_phone": "+49 40 555 0199", "operator_role": "site-operator", "usage_since": "2026-02-20",
    "usage_since_source": "published:json-ld", "usage_days": 10, "page_status": 200, "page_online": True,
    "attribution_found": False, "attribution_evidence": "not-found:Alpine Lens Agency",
    "licence_match": '{"licensed": false, "rejected": [{"id": "lic-alp-courier", "why": "other domain"}]}',
}  # fmt: skip


def test_enrichment_columns_are_loaded_bounded_and_follow_the_newest_run(db: Engine) -> None:
    hostile = {
        "operator_address": "Str.\x00 1\n" + "x" * 900, "operator_phone": "+49 " + "1" * 100,
        "usage_days": pd.NA, "page_status": 10**12, "page_online": None, "attribution_found": None,
        "attribution_evidence": "Foto: " + "y" * 1000, "operator_email": "<script>@b.test",
    }  # fmt: skip
    f1 = frame(priced_row("a.test", **ENRICHMENT), priced_row("b.test", **hostile), priced_row("c.test"))
    assert load_hits(db, f1, D1).inserted == 3
    hits = by_page(db)
    assert {k: hits["a.test"][k] for k in ENRICHMENT} == {**ENRICHMENT, "usage_since": dt.date(2026, 2, 20)}
    b = hits["b.test"]
    assert b["operator_address"].startswith("Str. 1 xx") and len(b["operator_address"]) == 500
    assert len(b["operator_phone"]) == 64 and len(b["attribution_evidence"]) == 500
    assert b["operator_email"] == "<script>@b.test"  # stored as data; escaping is the inbox's job
    # Not a status, not known: NULL rather than a guess (page_status out of range, NA days).
    assert [b[k] for k in ("usage_days", "page_status", "page_online", "attribution_found")] == [None] * 4
    assert all(hits["c.test"][k] is None for k in ENRICHMENT)

    snapshot = dump(db)
    assert load_hits(db, f1, D1) == LoadStats(inserted=0, updated=0, marked_offline=0, total=3)
    assert dump(db) == snapshot

    # The next day's crawl found the page gone and a credit line: the newest observation wins ...
    newer = {**ENRICHMENT, "usage_days": 11, "page_status": 404, "page_online": False,
             "attribution_found": True, "attribution_evidence": "Foto: Alpine Lens Agency"}
    load_hits(db, frame(priced_row("a.test", D2, **newer)), D2)
    a = by_page(db)["a.test"]
    assert [a[k] for k in ("usage_days", "page_status", "page_online", "attribution_found")] == [11, 404, False, True]
    # ... and a backfill of the earlier day does not rewind it.
    load_hits(db, f1, D1)
    assert by_page(db)["a.test"] == a

    # A priced partition written before these columns existed still loads (as NULLs).
    old = frame(priced_row("d.test")).drop(columns=list(ENRICHMENT))
    assert load_hits(db, old, D1).inserted == 1
    assert all(by_page(db)["d.test"][k] is None for k in ENRICHMENT)


def test_bound_text_fast_path_cleans_exactly_like_the_full_cleaning() -> None:
    """bound_text skips the regex cleaning for text it would not change; checked on every code point
    of the Basic Multilingual Plane (controls, every kind of space, lone surrogates) at each position."""
    import re

    from copyhunt.hitsdb.store import bound_text

    def full_cleaning(text: str, limit: int) -> str | None:  # bound_text as it was, without the fast path
        text = text.encode("utf-8", "replace").decode("utf-8")
        text = re.sub(r"\s+", " ", re.sub(r"[\x00-\x1f\x7f]", " ", text)).strip()
        return text[:limit] or None

    for cp in range(0x10000):
        c = chr(cp)
        for text in (f"a{c}b", f"{c}ab", f"ab{c}", f"a {c} b", c):
            assert bound_text(text, 3) == full_cleaning(text, 3), hex(cp)
    for text in ("", " ", "a  b", " a", "a ", "x" * 10):
        assert bound_text(text, 5) == full_cleaning(text, 5), text


def test_load_refuses_contract_violations(db: Engine) -> None:
    with pytest.raises(ValueError, match="not registered"):
        load_hits(db, frame(priced_row("a.test", customer_id="jana-novak")), D1)  # alp-fort is not hers
    with pytest.raises(ValueError, match="run_date"):
        load_hits(db, frame(priced_row("a.test", D2)), D1)
    with pytest.raises(ValueError, match="integer cents"):
        load_hits(db, frame(priced_row("a.test", license_value_cents=12.5)), D1)
    assert count_hits(db) == {"alpine-lens": 0, "jana-novak": 0}  # nothing half-loaded


def test_tenant_isolation(db: Engine) -> None:
    load_hits(
        db,
        frame(
            priced_row("a.test"),
            priced_row("b.test"),
            priced_row("a.test", customer_id="jana-novak", image_id="jn-pasha"),  # same page, other tenant
        ),
        D1,
    )
    alp, jana = hits_for_customer(db, "alpine-lens"), hits_for_customer(db, "jana-novak")
    assert {h["customer_id"] for h in alp} == {"alpine-lens"} and len(alp) == 2
    assert [(h["customer_id"], h["image_id"]) for h in jana] == [("jana-novak", "jn-pasha")]
    assert hits_for_customer(db, "nobody") == []
    assert count_hits(db) == {"alpine-lens": 2, "jana-novak": 1}


# ---- digests -----------------------------------------------------------------------------------
def _png_bytes() -> bytes:
    im = Image.new("RGBA", (800, 500), (10, 120, 200, 255))
    for x in range(0, 800, 7):
        im.putpixel((x, x % 500), (255, 0, 0, 0))
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _parts(msg: EmailMessage) -> tuple[str, str, list[EmailMessage]]:
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    images = [p for p in msg.walk() if p.get_content_type() == "image/jpeg"]
    return text, html, images


def _load_digest_day(engine: Engine, blob_sha: str | None = None) -> None:
    load_hits(
        engine,
        frame(
            priced_row("old.test", D1),
            priced_row("jana.test", D1, customer_id="jana-novak", image_id="jn-pasha"),
        ),
        D1,
    )
    load_hits(
        engine,
        frame(
            priced_row("old.test", D2),  # not new on D2: not in the digest
            priced_row("evil.test", D2, page_title="<script>alert('x')</script> Cheap prints", image_sha256=blob_sha,
                       license_value_cents=120_050),
            priced_row("js.test", D2, page_url="javascript:alert(1)", license_value_cents=100),
            priced_row("courier.test", D2, licensed=True, licence_id="lic-alp-courier", license_value_cents=999_999),
        ),
        D2,
    )


def test_digest_written_to_outbox(db: Engine, settings: Settings, tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    sha = blobs.put(_png_bytes())
    _load_digest_day(db, sha)

    results = send_digests(db, D2, settings, blob_root=tmp_path / "blobs")
    assert [(r.customer_id, r.sent_via, r.hit_count) for r in results] == [("alpine-lens", "outbox", 3)]
    path = settings.outbox / "2026-03-02" / "alpine-lens.eml"
    assert results[0].path == path and path.exists()
    raw = path.read_bytes()
    msg = _parse(raw)
    assert msg["To"] == "Alpine Lens Agency <rights@alpine-lens.example>"
    assert msg["Message-ID"] == "<digest.20260302.alpine-lens@copyhunt.invalid>"
    assert msg["Date"] == "Mon, 02 Mar 2026 00:00:00 +0000"
    assert msg.get_content_type() == "multipart/alternative"

    text, html, images = _parts(msg)
    for part in (text, html):
        assert "https://evil.test/article" in part and "https://courier.test/article" in part
        assert "old.test" not in part  # first seen on D1
        assert "€1,201.50" in part  # claimable: 1200.50 + 1.00; the licensed hit is not claimable
        # Links into the inbox: the day's new hits, each listed hit, and the settings (opt-out).
        assert "http://inbox.copyhunt.test/hits?since=2026-03-02" in part
        assert f"http://inbox.copyhunt.test/hits/{by_page(db)['evil.test']['id']}" in part
        assert "http://inbox.copyhunt.test/settings" in part
    assert "3 new uses" in text and "Already licensed:  1" in text
    assert "hits?since=2026-03-02&sort=value" in text and 'hits?since=2026-03-02&amp;sort=value"' in html
    assert "<script>" not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert 'href="javascript:' not in html
    # Claimable hits come first, by value; the licensed one last.
    assert text.index("evil.test") < text.index("js.test") < text.index("courier.test")

    assert len(images) == 1
    cid = images[0]["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html
    thumb = Image.open(io.BytesIO(images[0].get_content()))
    assert thumb.format == "JPEG" and max(thumb.size) <= 160

    # Never twice: a second call sends nothing and leaves the file alone.
    assert send_digests(db, D2, settings, blob_root=tmp_path / "blobs") == []
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Digest)).scalar_one() == 1
        row = conn.execute(select(Digest.sent_via, Digest.path, Digest.hit_count)).one()
    assert tuple(row) == ("outbox", str(path), 3)

    # Deterministic: rebuilt from scratch, the message has the same bytes.
    with db.begin() as conn:
        conn.execute(delete(Digest))
    path.unlink()
    assert len(send_digests(db, D2, settings, blob_root=tmp_path / "blobs")) == 1
    assert path.read_bytes() == raw


def test_digest_opt_out_and_no_new_hits(db: Engine, settings: Settings) -> None:
    _load_digest_day(db)
    sync_customers(db, [{**CUSTOMERS[0], "digest_opt_out": True}])
    assert send_digests(db, D2, settings) == []  # alpine-lens opted out; jana-novak had nothing new
    assert not (settings.outbox / "2026-03-02").exists()
    # D1: both had new hits, only jana-novak gets a digest.
    assert [r.customer_id for r in send_digests(db, D1, settings)] == ["jana-novak"]


class _Inbox:
    """aiosmtpd handler that keeps what it receives."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.envelopes.append(envelope)
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_digest_sent_through_real_smtp_server(db: Engine, tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller

    inbox = _Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = Settings(home=tmp_path, smtp_host="127.0.0.1", smtp_port=port, inbox_url="http://inbox.test/")
        _load_digest_day(db)
        results = send_digests(db, D2, settings)
        assert send_digests(db, D2, settings) == []
    finally:
        controller.stop()

    assert [(r.customer_id, r.sent_via, r.path) for r in results] == [("alpine-lens", "smtp", None)]
    assert len(inbox.envelopes) == 1
    env = inbox.envelopes[0]
    assert env.mail_from == "digest@copyhunt.invalid"
    assert env.rcpt_tos == ["rights@alpine-lens.example"]
    msg = _parse(env.original_content)
    assert msg["Subject"] == "copyhunt: 3 new uses of your images found on 2026-03-02"
    assert msg["Message-ID"] == results[0].message_id
    text, html, images = _parts(msg)
    assert "https://evil.test/article" in text and "https://evil.test/article" in html
    assert "&lt;script&gt;" in html and images == []
    assert not (tmp_path / "data" / "outbox").exists()
    with db.connect() as conn:
        assert conn.execute(select(Digest.sent_via)).scalars().all() == ["smtp"]


def test_failed_smtp_send_is_retried_later(db: Engine, tmp_path: Path) -> None:
    _load_digest_day(db)
    port = _free_port()  # nothing listens there
    settings = Settings(home=tmp_path, smtp_host="127.0.0.1", smtp_port=port)
    with pytest.raises(OSError):
        send_digests(db, D2, settings)
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Digest)).scalar_one() == 0  # not claimed


def test_money_and_thumbnail_helpers() -> None:
    assert format_money(0) == "€0.00"
    assert format_money(123_456_789) == "€1,234,567.89"
    assert format_money(-5, "USD") == "-$0.05"
    assert format_money(100, "CHF") == "1.00 CHF"
    assert make_thumbnail(b"not an image") is None
    assert make_thumbnail(_png_bytes(), max_pixels=1000) is None  # decompression-bomb guard
    thumb = make_thumbnail(_png_bytes())
    assert thumb is not None and thumb == make_thumbnail(_png_bytes())


def test_status_is_never_touched_by_loads(db: Engine) -> None:
    load_hits(db, frame(priced_row("a.test")), D1)
    with db.begin() as conn:
        conn.execute(update(Hit).values(status="claimed"))
    load_hits(db, frame(priced_row("a.test", D2, score=0.99)), D2)
    assert by_page(db)["a.test"]["status"] == "claimed"
