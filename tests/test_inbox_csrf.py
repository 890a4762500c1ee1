"""CSRF on every form of the inbox, found by walking the app's routes rather than listed by hand,
so a form added later is covered the day it appears.

Every POST route outside the Bearer-token API is either one of the few forms a person uses before
having a session (each with its own guard, checked by name here and tested in
tests/test_inbox_accounts.py), or a signed-in form: posted by a signed-in person without the
session's CSRF token, with a wrong one, or with another session's, it answers 403 and changes
nothing in the database.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Iterator

import pytest
from sqlalchemy import select, text
from starlette.routing import Route

from conftest import CUSTOMER_IMAGES
from copyhunt import coverage, registry
from copyhunt.hitsdb.models import Base
from test_inbox import Inbox, _make_inbox, csrf_of

# The forms used before a session exists: sign-in checks a one-time form nonce; sign-up, the
# confirmation, the resend and the password forms act only on what the mailed secret or the typed
# address names, and are limited per address (tests/test_inbox_accounts.py).
BEFORE_A_SESSION = {"/signin", "/signup", "/signup/resend", "/signup/confirm", "/password/forgot", "/password/reset"}
# Tables a refused post may touch: the session's last-seen time and the failure limiter.
BOOKKEEPING = {"inbox_sessions"}


@pytest.fixture
def inbox(tmp_path) -> Iterator[Inbox]:
    box, engine = _make_inbox(f"sqlite:///{tmp_path / 'hits.db'}", tmp_path)
    yield box
    engine.dispose()


def _form_routes(inbox: Inbox) -> list[str]:
    return sorted(r.path for r in inbox.app.routes
                  if isinstance(r, Route) and "POST" in (r.methods or set()) and not r.path.startswith("/api"))


def _database(inbox: Inbox) -> dict[str, list[tuple]]:
    with inbox.engine.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
                for name, table in Base.metadata.tables.items() if name not in BOOKKEEPING}


def test_every_signed_in_form_refuses_a_post_without_the_sessions_csrf_token(inbox: Inbox) -> None:
    customer = "alpine-lens"
    image_id = registry.list_images(inbox.engine, customer)[0]["image_id"]
    registry.put_licence(inbox.engine, customer, "lic-test", [image_id], dt.date(2026, 1, 1), dt.date(2026, 12, 31),
                         licensee_domain="courier.example")
    coverage.add_own_site(inbox.engine, customer, "alpine-lens.example", source="settings", actor=None)
    hit_id = inbox.seeded.hit_ids["urban-eats.test"]
    key_id = inbox.seeded.tokens[customer].split("_")[1]
    path_values = {"hit_id": str(hit_id), "image_id": image_id, "licence_id": "lic-test", "key_id": key_id}
    # What a real form would send, so that only the missing token can be the reason for a refusal.
    fields = {"action": "claim", "note": "x", "scope": "selected", "hit_id": str(hit_id), "domain": "alpine-lens.example",
              "url": "http://alpine-lens.example/", "label": "x", "digest": "on", "licensee_domain": "x.example",
              "valid_from": "2026-01-01", "valid_to": "2026-02-01"}

    photo = CUSTOMER_IMAGES[7]  # a real photo the customer does not have yet
    routes = _form_routes(inbox)
    signed_in_forms = [p for p in routes if p not in BEFORE_A_SESSION]
    assert BEFORE_A_SESSION <= set(routes)  # a renamed one would otherwise escape both lists
    assert len(signed_in_forms) >= 12, signed_in_forms  # the walk found the app's forms, not nothing

    client, other = inbox.signed_in(customer), inbox.signed_in(customer)
    other_csrf = csrf_of(other.get("/hits").text)
    before = _database(inbox)
    for template in signed_in_forms:
        path = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: path_values[m.group(1)], template)
        for token in (None, "0" * 64, other_csrf):
            data = dict(fields) if token is None else {**fields, "csrf_token": token}
            # Multipart for every form: the upload needs it, the others parse it as they parse urlencoded.
            r = client.post(path, data=data, files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}, follow_redirects=False)
            assert r.status_code == 403, (template, token, r.status_code, r.text[:300])
    assert _database(inbox) == before
    # The same client with its own token is let through (the refusals were the token's doing).
    r = client.post(f"/hits/{hit_id}/action", data={"action": "claim", "csrf_token": csrf_of(client.get(f"/hits/{hit_id}").text)},
                    follow_redirects=False)
    assert r.status_code == 303
    with inbox.engine.connect() as conn:
        assert conn.execute(text("select status from hits where id = :i"), {"i": hit_id}).scalar_one() == "claimed"
