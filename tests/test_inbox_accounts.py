"""People's accounts in the inbox over HTTP: sign-out that keeps cookie and session in step,
sign-up with the confirmation mail read from the outbox, password sign-in, API tokens in
settings, sign out everywhere, password reset, CSRF on every new form, no account enumeration.

Real application (FastAPI's TestClient drives the ASGI app in-process), real SQLite database
seeded by tests/inbox_seed.py (and PostgreSQL for tenant isolation), real argon2 hashes, real .eml files in the outbox (and one real
SMTP server, aiosmtpd). No mocks.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from copyhunt.config import Settings
from copyhunt.hitsdb import accounts
from copyhunt.hitsdb.models import Account, AccountToken, Customer, CustomerToken, InboxSession
from copyhunt.inbox.app import create_app
from copyhunt.inbox.ratelimit import FailureLimiter
from test_inbox import NONCE_RE, Inbox, any_backend_inbox, csrf_of, inbox, sign_in  # noqa: F401  (fixtures)

pytest_plugins = ["conftest_pg"]

PASSWORD = "correct horse battery"
NEW_PASSWORD = "staple elephant violin"
LINK_RE = re.compile(r"(http://inbox\.test/[^\s]+)")
TOKEN_RE = re.compile(r'<code id="new-token">(cht_[0-9a-f]{12}_[A-Za-z0-9_-]{43})</code>')


# ---- helpers -------------------------------------------------------------------------------------
def nonce_of(client: TestClient, path: str) -> str:
    match = NONCE_RE.search(client.get(path).text)
    assert match, f"no nonce on {path}"
    return match.group(1)


def mails(settings: Settings) -> list[email.message.EmailMessage]:
    """Every account mail in the outbox, oldest first."""
    paths = sorted((settings.outbox / "accounts").glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in paths]  # type: ignore[misc]


def link_in(message: email.message.EmailMessage) -> str:
    """The inbox link of a mail, as a path and query the TestClient can follow."""
    match = LINK_RE.search(message.get_content())
    assert match, message.get_content()
    parts = urlsplit(match.group(1))
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def sign_up(client: TestClient, address: str, password: str = PASSWORD, name: str = "Jo Doe") -> Any:
    nonce = nonce_of(client, "/signup")
    return client.post("/signup", data={"email": address, "password": password, "name": name, "nonce": nonce})


def confirm_from_mail(client: TestClient, message: email.message.EmailMessage) -> Any:
    page = client.get(link_in(message))
    token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    nonce = NONCE_RE.search(page.text).group(1)  # type: ignore[union-attr]
    return client.post("/signup/confirm", data={"token": token, "nonce": nonce}, follow_redirects=False)


def password_sign_in(client: TestClient, address: str, password: str = PASSWORD) -> Any:
    nonce = nonce_of(client, "/signin")
    return client.post("/signin", data={"email": address, "password": password, "nonce": nonce}, follow_redirects=False)


def signed_up(box: Inbox, address: str) -> TestClient:
    """A confirmed and signed-in person."""
    client = box.client()
    assert sign_up(client, address).status_code == 200
    assert confirm_from_mail(client, mails(box.settings)[-1]).status_code == 303
    assert password_sign_in(client, address).status_code == 303
    return client


# ---- sign-out (issue 23, defect 3) ---------------------------------------------------------------
@pytest.mark.parametrize("bad_csrf", ["", "0" * 64])
def test_a_refused_sign_out_changes_neither_cookie_nor_session(inbox: Inbox, bad_csrf: str) -> None:
    client = inbox.signed_in("alpine-lens")
    session_id = client.cookies["copyhunt_session"]
    refused = client.post("/signout", data={"csrf_token": bad_csrf}, follow_redirects=False)
    assert refused.status_code == 403
    assert not any(c.startswith("copyhunt_session=") for c in refused.headers.get_list("set-cookie"))
    assert client.cookies["copyhunt_session"] == session_id
    # The defect: the old session id still got 200 after a refused sign-out, with the cookie
    # cleared. Now both stay: the same browser is still signed in, with the same id.
    replay = inbox.client()
    replay.cookies.set("copyhunt_session", session_id)
    assert replay.get("/hits", follow_redirects=False).status_code == 200
    assert client.get("/hits", follow_redirects=False).status_code == 200

    good = client.post("/signout", data={"csrf_token": csrf_of(client.get("/hits").text)}, follow_redirects=False)
    assert good.status_code == 303
    assert any(c.startswith('copyhunt_session=""') or "Max-Age=0" in c for c in good.headers.get_list("set-cookie")
               if c.startswith("copyhunt_session="))
    assert replay.get("/hits", follow_redirects=False).status_code == 303  # the server-side session ended too


def test_sign_out_everywhere_ends_every_session_of_the_person(inbox: Inbox) -> None:
    first, second = inbox.signed_in("alpine-lens"), inbox.signed_in("alpine-lens")
    other = inbox.signed_in("jana-novak")  # another customer: not touched
    assert first.get("/hits").status_code == second.get("/hits").status_code == 200
    refused = first.post("/settings/signout-everywhere", data={"csrf_token": "0" * 64}, follow_redirects=False)
    assert refused.status_code == 403 and second.get("/hits", follow_redirects=False).status_code == 200
    r = first.post("/settings/signout-everywhere", data={"csrf_token": csrf_of(first.get("/settings").text)},
                   follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signin?done=out"
    assert first.get("/hits", follow_redirects=False).status_code == 303
    assert second.get("/hits", follow_redirects=False).status_code == 303
    assert other.get("/hits", follow_redirects=False).status_code == 200
    with inbox.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(InboxSession)
                            .where(InboxSession.customer_id == "alpine-lens")).scalar() == 0


# ---- the whole path of a person ------------------------------------------------------------------
def test_sign_up_confirm_sign_in_tokens_sign_out_everywhere_and_reset(inbox: Inbox) -> None:
    address = "Jo.Doe@Example.org"
    client = inbox.client()
    page = sign_up(client, address)
    assert page.status_code == 200 and 'id="check-mail"' in page.text
    (mail,) = mails(inbox.settings)
    assert mail["To"] == "jo.doe@example.org" and "Confirm" in mail["Subject"]
    with inbox.engine.connect() as conn:
        account = conn.execute(select(Account.__table__)).mappings().one()
        customer = conn.execute(select(Customer.__table__).where(Customer.id == account["customer_id"])).mappings().one()
        stored_links = list(conn.execute(select(AccountToken.id_sha256)).scalars())
    assert account["customer_id"] == "jo.doe" and customer["name"] == "Jo Doe" and customer["email"] == "jo.doe@example.org"
    assert account["password_hash"].startswith("$argon2id$") and PASSWORD not in account["password_hash"]
    secret = link_in(mail).rpartition("token=")[2]
    assert stored_links and all(secret not in s for s in stored_links)  # the link is stored hashed

    # Not confirmed yet: a wrong password learns nothing; the right one gets a clear message and a
    # resend button, and no session.
    wrong = password_sign_in(client, address, "wrong password!")
    assert wrong.status_code == 401 and "confirm" not in wrong.text.lower().replace("confirmed", "")
    r = password_sign_in(client, address)
    assert r.status_code == 403 and "confirm your e-mail" in r.text and 'id="resend-form"' in r.text
    assert "copyhunt_session" not in client.cookies
    resend = client.post("/signup/resend", data={"email": address, "nonce": NONCE_RE.search(r.text).group(1)})  # type: ignore[union-attr]
    assert resend.status_code == 200 and len(mails(inbox.settings)) == 2
    # The resent link replaces the first one.
    assert confirm_from_mail(client, mails(inbox.settings)[0]).status_code == 400
    confirmed = confirm_from_mail(client, mails(inbox.settings)[1])
    assert confirmed.status_code == 303 and confirmed.headers["location"] == "/signin?done=confirmed"
    assert confirm_from_mail(client, mails(inbox.settings)[1]).status_code == 400  # single use

    assert password_sign_in(client, address, "wrong password!").status_code == 401
    assert password_sign_in(client, "JO.DOE@example.org").status_code == 303  # the address ignores case
    hits = client.get("/hits")
    assert hits.status_code == 200 and "Jo Doe" in hits.text

    # Settings: create a token (shown once), use it on the API, see it listed, revoke it.
    settings_page = client.get("/settings")
    assert 'id="no-tokens"' in settings_page.text
    made = client.post("/settings/tokens", data={"csrf_token": csrf_of(settings_page.text), "label": "my <script> app"})
    assert made.status_code == 200
    token = TOKEN_RE.search(made.text).group(1)  # type: ignore[union-attr]
    assert "my &lt;script&gt; app" in made.text and "<script>" not in made.text
    assert token not in client.get("/settings").text  # shown once only
    api = inbox.client().get("/api/hits", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 200 and api.json()["total"] == 0  # a new customer has no hits
    key_id = token.split("_")[1]
    listed = client.get("/settings").text
    assert f"cht_{key_id}_" in listed and "never" not in listed.split(f'id="token-{key_id}"')[1].split("</tr>")[0]
    with inbox.engine.connect() as conn:
        row = conn.execute(select(CustomerToken.__table__).where(CustomerToken.key_id == key_id)).mappings().one()
    assert row["customer_id"] == "jo.doe" and row["last_used_at"] is not None and token.split("_")[2] not in row["secret_sha256"]
    revoked = client.post(f"/settings/tokens/{key_id}/revoke", data={"csrf_token": csrf_of(listed)}, follow_redirects=False)
    assert revoked.status_code == 303
    assert inbox.client().get("/api/hits", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert f"cht_{key_id}_" not in client.get("/settings").text

    # Sign out everywhere: both browsers of the person end.
    laptop = inbox.client()
    assert password_sign_in(laptop, address).status_code == 303 and laptop.get("/hits").status_code == 200
    client.post("/settings/signout-everywhere", data={"csrf_token": csrf_of(client.get("/settings").text)})
    assert client.get("/hits", follow_redirects=False).status_code == 303
    assert laptop.get("/hits", follow_redirects=False).status_code == 303

    # Password reset from the mail: the old password stops working, the link is spent.
    phone = inbox.client()
    assert password_sign_in(phone, address).status_code == 303
    asked = phone.post("/password/forgot", data={"email": address, "nonce": nonce_of(inbox.client(), "/signin")})
    assert asked.status_code == 403  # the nonce of another browser is no good
    asked = client.post("/password/forgot", data={"email": address, "nonce": nonce_of(client, "/password/forgot")})
    assert asked.status_code == 200 and 'id="check-mail"' in asked.text
    reset_mail = mails(inbox.settings)[-1]
    assert "Reset" in reset_mail["Subject"]
    form = client.get(link_in(reset_mail))
    fields = dict(re.findall(r'name="(token|nonce)" value="([^"]+)"', form.text))
    short = client.post("/password/reset", data={**fields, "password": "short"})
    assert short.status_code == 422 and "at least" in short.text
    fields["nonce"] = NONCE_RE.search(short.text).group(1)  # type: ignore[union-attr]
    done = client.post("/password/reset", data={**fields, "password": NEW_PASSWORD}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/signin?done=reset"
    assert phone.get("/hits", follow_redirects=False).status_code == 303  # the reset ended every session
    fields["nonce"] = nonce_of(client, "/password/forgot")
    again = client.post("/password/reset", data={**fields, "password": "yet another password"})
    assert again.status_code == 400  # single use
    assert password_sign_in(inbox.client(), address).status_code == 401
    assert password_sign_in(inbox.client(), address, NEW_PASSWORD).status_code == 303


def test_an_expired_reset_link_is_refused(inbox: Inbox) -> None:
    signed_up(inbox, "late@example.org")
    client = inbox.client()
    client.post("/password/forgot", data={"email": "late@example.org", "nonce": nonce_of(client, "/password/forgot")})
    with inbox.engine.begin() as conn:
        conn.execute(update(AccountToken).where(AccountToken.purpose == "reset")
                     .values(expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
    form = client.get(link_in(mails(inbox.settings)[-1]))
    fields = dict(re.findall(r'name="(token|nonce)" value="([^"]+)"', form.text))
    assert client.post("/password/reset", data={**fields, "password": NEW_PASSWORD}).status_code == 400
    assert password_sign_in(inbox.client(), "late@example.org", NEW_PASSWORD).status_code == 401


def test_sign_up_ids_are_unique_and_the_address_is_checked(inbox: Inbox) -> None:
    for address in ("sam@one.example", "sam@two.example", "Sam@three.example"):
        assert sign_up(inbox.client(), address).status_code == 200
    with inbox.engine.connect() as conn:
        ids = sorted(conn.execute(select(Account.customer_id)).scalars())
    assert ids == ["sam", "sam-2", "sam-3"]
    for address, password in (("not-an-address", PASSWORD), ("a@b", PASSWORD), ("ok@example.org", "short"),
                              ("ok@example.org", "x" * (accounts.PASSWORD_MAX + 1)), ("a\r\nBcc: x@y.z", PASSWORD)):
        r = sign_up(inbox.client(), address, password)
        assert r.status_code == 422 and 'id="signup-error"' in r.text, (address, password)
    too_long = inbox.client().post("/signup", data={"email": "a" * 400 + "@example.org", "password": PASSWORD})
    assert too_long.status_code == 422  # bounded by the form field itself


def test_messages_never_tell_who_has_an_account(inbox: Inbox) -> None:
    signed_up(inbox, "known@example.org")
    before = len(mails(inbox.settings))
    # Signing up again with a known address: the same page; the owner gets a notice, not a link.
    again = sign_up(inbox.client(), "known@example.org", "another password")
    fresh = sign_up(inbox.client(), "unknown@example.org")
    assert again.status_code == fresh.status_code == 200
    assert again.text.replace("known@", "X@").replace("unknown@", "X@") == fresh.text.replace("unknown@", "X@")
    notice = mails(inbox.settings)[before]
    assert notice["To"] == "known@example.org" and "already has an account" in notice.get_content()
    # Forgot-password and sign-in answer the same for a known and an unknown address.
    pages = []
    for address in ("known@example.org", "nobody@example.org"):
        client = inbox.client()
        pages.append(client.post("/password/forgot", data={"email": address, "nonce": nonce_of(client, "/password/forgot")}))
    assert pages[0].status_code == pages[1].status_code == 200
    assert pages[0].text.replace("known@", "X@") == pages[1].text.replace("nobody@", "X@")
    wrong = password_sign_in(inbox.client(), "known@example.org", "wrong password!")
    unknown = password_sign_in(inbox.client(), "nobody@example.org", "wrong password!")
    assert wrong.status_code == unknown.status_code == 401
    assert re.sub(r'value="[^"]*"', "", wrong.text) == re.sub(r'value="[^"]*"', "", unknown.text)


def test_token_tenant_isolation_in_settings(any_backend_inbox: Inbox) -> None:
    inbox = any_backend_inbox  # on SQLite and on a real PostgreSQL
    alice, bob = signed_up(inbox, "alice@example.org"), signed_up(inbox, "bob@example.org")
    made = bob.post("/settings/tokens", data={"csrf_token": csrf_of(bob.get("/settings").text), "label": "bob's"})
    bob_token = TOKEN_RE.search(made.text).group(1)  # type: ignore[union-attr]
    bob_key = bob_token.split("_")[1]
    assert f"cht_{bob_key}_" not in alice.get("/settings").text
    r = alice.post(f"/settings/tokens/{bob_key}/revoke", data={"csrf_token": csrf_of(alice.get("/settings").text)})
    assert r.status_code == 404
    assert inbox.client().get("/api/hits", headers={"Authorization": f"Bearer {bob_token}"}).status_code == 200
    # A seeded customer's token is not Alice's either.
    seeded_key = inbox.seeded.tokens["alpine-lens"].split("_")[1]
    r = alice.post(f"/settings/tokens/{seeded_key}/revoke", data={"csrf_token": csrf_of(alice.get("/settings").text)})
    assert r.status_code == 404 and inbox.client().get("/api/hits", headers=inbox.bearer("alpine-lens")).status_code == 200


def test_every_new_form_refuses_a_missing_or_wrong_csrf_token(inbox: Inbox) -> None:
    person = signed_up(inbox, "csrf@example.org")
    made = person.post("/settings/tokens", data={"csrf_token": csrf_of(person.get("/settings").text), "label": "one"})
    key_id = TOKEN_RE.search(made.text).group(1).split("_")[1]  # type: ignore[union-attr]
    with inbox.engine.connect() as conn:
        tokens_before = conn.execute(select(func.count()).select_from(CustomerToken)).scalar()
    for path, data in (("/settings/tokens", {"label": "two"}), (f"/settings/tokens/{key_id}/revoke", {}),
                       ("/settings/signout-everywhere", {})):
        for csrf in ("", "0" * 64):
            r = person.post(path, data={**data, "csrf_token": csrf}, follow_redirects=False)
            assert r.status_code == 403 and "form has expired" in r.text, (path, csrf)
    assert person.get("/hits", follow_redirects=False).status_code == 200  # nothing ended
    with inbox.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(CustomerToken)).scalar() == tokens_before
        assert conn.execute(select(CustomerToken.revoked_at).where(CustomerToken.key_id == key_id)).scalar() is None
    # Forms before sign-in: the nonce cookie of this browser must match the form.
    stranger = inbox.client()  # a cross-site post: no nonce cookie
    for path, data in (("/signup", {"email": "x@example.org", "password": PASSWORD}),
                       ("/signup/resend", {"email": "csrf@example.org"}),
                       ("/signup/confirm", {"token": "A" * 43}),
                       ("/password/forgot", {"email": "csrf@example.org"}),
                       ("/password/reset", {"token": "A" * 43, "password": NEW_PASSWORD}),
                       ("/signin", {"email": "csrf@example.org", "password": PASSWORD})):
        for nonce in ("", "forged"):
            r = stranger.post(path, data={**data, "nonce": nonce}, follow_redirects=False)
            assert r.status_code == 403, (path, nonce)
    with inbox.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Account)).scalar() == 1


def test_failed_password_sign_ins_are_limited(inbox: Inbox) -> None:
    signed_up(inbox, "limited@example.org")
    app = create_app(inbox.settings, inbox.engine, FailureLimiter(3, 60))
    client = TestClient(app, client=("203.0.113.20", 40000))
    for _ in range(3):
        assert password_sign_in(client, "limited@example.org", "wrong password!").status_code == 401
    refused = password_sign_in(client, "limited@example.org")  # even the right password waits now
    assert refused.status_code == 429 and refused.headers["retry-after"]


def test_mail_requests_are_limited_per_address(inbox: Inbox) -> None:
    from copyhunt.inbox.auth import MAIL_REQUESTS_MAX

    client = TestClient(inbox.app, client=("203.0.113.30", 40000))
    for _ in range(MAIL_REQUESTS_MAX):
        r = client.post("/password/forgot", data={"email": "x@example.org", "nonce": nonce_of(client, "/password/forgot")})
        assert r.status_code == 200
    r = client.post("/password/forgot", data={"email": "x@example.org", "nonce": nonce_of(client, "/password/forgot")})
    assert r.status_code == 429 and r.headers["retry-after"]
    # A sign-up past the limit creates nothing: no account is left without its mail.
    r = sign_up(client, "late-comer@example.org")
    assert r.status_code == 429
    with inbox.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Account)).scalar() == 0


def test_confirmation_mail_goes_through_smtp_when_configured(inbox: Inbox, tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Keep:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = Settings(home=tmp_path, hits_db_url=inbox.settings.hits_db_url, inbox_url="http://inbox.test",
                            smtp_host="127.0.0.1", smtp_port=port)
        client = TestClient(create_app(settings, inbox.engine))
        assert sign_up(client, "smtp@example.org").status_code == 200
    finally:
        controller.stop()
    (envelope,) = received
    assert envelope.rcpt_tos == ["smtp@example.org"]
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert confirm_from_mail(client, message).status_code == 303  # type: ignore[arg-type]
    assert not (tmp_path / "data" / "outbox" / "accounts").exists()
