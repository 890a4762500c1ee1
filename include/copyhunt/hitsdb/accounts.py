"""People's accounts: sign-up, e-mail confirmation, password sign-in and password reset.

Called by the inbox (copyhunt.inbox.accounts_routes); the database keeps no secret in the clear:

* passwords: argon2id hashes (argon2-cffi's ``PasswordHasher`` with its defaults, re-hashed on
  sign-in when those defaults move);
* mailed links (confirm the address, reset the password): 256 random bits, stored as SHA-256
  (random, so a plain hash is enough, as for API tokens), single use and expiring.

``sign_up(engine, email, password, name)`` creates a customer (its id derived from the address,
unique) and its unconfirmed account, and returns the confirmation link's secret; ``confirm``
uses it; ``authenticate`` checks e-mail and password and tells a wrong password from an account
that is not yet confirmed; ``start_reset`` / ``reset_password`` change the password through a
mailed link and end every session of the customer. ``mail_link`` sends those links through the
digest's mailer (SMTP if configured, else an ``.eml`` file under ``<outbox>/accounts/``).
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import hashlib
import re
import secrets
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from copyhunt.config import Settings
from copyhunt.hitsdb.digest import _mail_domain, _Smtp, inbox_link
from copyhunt.hitsdb.models import EMAIL_MAX, ID_MAX, NAME_MAX, Account, AccountToken, Customer, InboxSession
from copyhunt.hitsdb.store import CUSTOMER_ID_RE
from copyhunt.hitsdb.tokens import Identity
from copyhunt.lake import atomic_write_bytes

__all__ = [
    "CONFIRM_LIFETIME",
    "PASSWORD_MAX",
    "PASSWORD_MIN",
    "RESET_LIFETIME",
    "AccountError",
    "SignIn",
    "SignUp",
    "authenticate",
    "check_email",
    "check_password",
    "confirm",
    "mail_link",
    "new_confirmation",
    "reset_password",
    "sign_up",
    "start_reset",
]

# NIST SP 800-63B: at least 8 characters for a chosen password; we ask a little more, and allow
# long passphrases. The upper bound keeps argon2's input bounded (it hashes any length).
PASSWORD_MIN = 10
PASSWORD_MAX = 200
CONFIRM_LIFETIME = dt.timedelta(hours=48)
RESET_LIFETIME = dt.timedelta(hours=1)  # a reset link is a password: short-lived
_EMAIL_RE = re.compile(r"[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+")
_LINK_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_ID_SLUG_MAX = 40  # the derived customer id: readable, with room for a "-<n>" suffix
_hasher = PasswordHasher()
# Verified against when the address is unknown, so that a miss costs as much as a wrong password.
_DUMMY_HASH = _hasher.hash("copyhunt: no such account")


class AccountError(ValueError):
    """Input a person must fix (a malformed address, a too short password): the message says how."""


@dataclass(frozen=True)
class SignUp:
    """What sign_up did. ``confirm_secret`` is None when the address already had an account:
    nothing was created, and the caller mails that person a notice instead of a link."""

    email: str
    customer_id: str | None
    confirm_secret: str | None


@dataclass(frozen=True)
class SignIn:
    """The outcome of authenticate: ``identity`` when signed in; ``unconfirmed`` when the password
    was right but the address is not confirmed yet (only then may the caller say so)."""

    identity: Identity | None
    unconfirmed: bool = False


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _utc(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)  # SQLite drops the zone


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def check_email(value: str) -> str:
    """The address, trimmed and lower-cased (so uniqueness ignores case), or AccountError."""
    text = (value or "").strip().lower()
    if len(text) > EMAIL_MAX or not _EMAIL_RE.fullmatch(text):
        raise AccountError("Please enter a valid e-mail address.")
    return text


def check_password(value: str) -> str:
    if len(value) < PASSWORD_MIN:
        raise AccountError(f"The password must be at least {PASSWORD_MIN} characters long.")
    if len(value) > PASSWORD_MAX:
        raise AccountError(f"The password must be at most {PASSWORD_MAX} characters long.")
    return value


def _customer_id_for(conn: Connection, email_address: str) -> str:
    """A new customer id from the address's local part ("Jo.Doe+x@..." -> "jo.doe-x"), made unique
    with a numeric suffix."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", email_address.partition("@")[0]).strip("._-")[:_ID_SLUG_MAX] or "customer"
    taken = set(conn.execute(select(Customer.id).where(Customer.id.like(f"{slug}%"))).scalars())
    candidate, n = slug, 1
    while candidate in taken:
        n += 1
        candidate = f"{slug}-{n}"
    assert CUSTOMER_ID_RE.fullmatch(candidate) and len(candidate) <= ID_MAX
    return candidate


def _issue_link(conn: Connection, account_id: int, purpose: str, lifetime: dt.timedelta) -> str:
    secret = secrets.token_urlsafe(32)
    now = _now()
    # One live link per purpose: a new one replaces the older ones (and keeps the table small).
    conn.execute(delete(AccountToken).where(AccountToken.account_id == account_id, AccountToken.purpose == purpose))
    conn.execute(
        AccountToken.__table__.insert().values(
            id_sha256=_sha256(secret), account_id=account_id, purpose=purpose, created_at=now, expires_at=now + lifetime
        )
    )
    return secret


def _use_link(conn: Connection, secret: str, purpose: str) -> int | None:
    """Spend a mailed link: the account id if the link is live, None if unknown, used or expired."""
    if not _LINK_SECRET_RE.fullmatch(secret or ""):
        return None
    now = _now()
    row = conn.execute(
        select(AccountToken.account_id, AccountToken.expires_at).where(
            AccountToken.id_sha256 == _sha256(secret), AccountToken.purpose == purpose, AccountToken.used_at.is_(None)
        )
    ).first()
    if row is None or _utc(row.expires_at) <= now:
        return None
    # The used_at condition makes two concurrent uses of one link spend it once.
    spent = conn.execute(
        update(AccountToken)
        .where(AccountToken.id_sha256 == _sha256(secret), AccountToken.used_at.is_(None))
        .values(used_at=now)
    ).rowcount
    return row.account_id if spent else None


def sign_up(engine: Engine, email_address: str, password: str, name: str = "") -> SignUp:
    """Create a customer and its unconfirmed account; AccountError on bad input."""
    address = check_email(email_address)
    check_password(password)
    display = " ".join((name or "").split())[:NAME_MAX] or address.partition("@")[0]
    password_hash = _hasher.hash(password)
    try:
        with engine.begin() as conn:
            if conn.execute(select(Account.id).where(Account.email == address)).first() is not None:
                return SignUp(address, None, None)
            customer_id = _customer_id_for(conn, address)
            now = _now()
            conn.execute(Customer.__table__.insert().values(id=customer_id, name=display, email=address, created_at=now))
            account_id = conn.execute(
                Account.__table__.insert()
                .values(customer_id=customer_id, email=address, password_hash=password_hash, created_at=now)
                .returning(Account.id)
            ).scalar_one()
            secret = _issue_link(conn, account_id, "confirm", CONFIRM_LIFETIME)
    except IntegrityError:
        # A concurrent sign-up took the address or the derived id: for the address, the same
        # answer as above; for the id, the person simply tries again.
        with engine.connect() as conn:
            if conn.execute(select(Account.id).where(Account.email == address)).first() is not None:
                return SignUp(address, None, None)
        raise
    return SignUp(address, customer_id, secret)


def confirm(engine: Engine, secret: str) -> bool:
    """Confirm the address of the link's account. False for an unknown, used or expired link."""
    with engine.begin() as conn:
        account_id = _use_link(conn, secret, "confirm")
        if account_id is None:
            return False
        conn.execute(
            update(Account).where(Account.id == account_id, Account.confirmed_at.is_(None)).values(confirmed_at=_now())
        )
    return True


def new_confirmation(engine: Engine, email_address: str) -> str | None:
    """A fresh confirmation link for an unconfirmed account, None otherwise (the caller answers
    the same either way, so the page never tells who has an account)."""
    try:
        address = check_email(email_address)
    except AccountError:
        return None
    with engine.begin() as conn:
        account_id = conn.execute(
            select(Account.id).where(Account.email == address, Account.confirmed_at.is_(None))
        ).scalar()
        return _issue_link(conn, account_id, "confirm", CONFIRM_LIFETIME) if account_id is not None else None


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def authenticate(engine: Engine, email_address: str, password: str) -> SignIn:
    """Check an address and password. Unknown address and wrong password look the same (and take
    the same time: a dummy hash is verified); only the right password learns "unconfirmed"."""
    try:
        address = check_email(email_address)
    except AccountError:
        address = ""
    with engine.connect() as conn:
        row = conn.execute(
            select(Account.id, Account.customer_id, Account.password_hash, Account.confirmed_at).where(
                Account.email == address
            )
        ).first() if address and len(password) <= PASSWORD_MAX else None
    if not _verify(row.password_hash if row is not None else _DUMMY_HASH, password[:PASSWORD_MAX]) or row is None:
        return SignIn(None)
    if _hasher.check_needs_rehash(row.password_hash):
        with engine.begin() as conn:
            conn.execute(update(Account).where(Account.id == row.id).values(password_hash=_hasher.hash(password)))
    if row.confirmed_at is None:
        return SignIn(None, unconfirmed=True)
    return SignIn(Identity(customer_id=row.customer_id, account_id=row.id))


def start_reset(engine: Engine, email_address: str) -> str | None:
    """A password reset link's secret for the address's account, None when there is none."""
    try:
        address = check_email(email_address)
    except AccountError:
        return None
    with engine.begin() as conn:
        account_id = conn.execute(select(Account.id).where(Account.email == address)).scalar()
        return _issue_link(conn, account_id, "reset", RESET_LIFETIME) if account_id is not None else None


def reset_password(engine: Engine, secret: str, new_password: str) -> bool:
    """Set a new password through a reset link (spent by this call). The link proves the address,
    so it also confirms the account; every session of the customer ends (whoever knew the old
    password is signed out). False for an unknown, used or expired link; AccountError on a bad
    password, with the link left unspent so the person can try again."""
    check_password(new_password)
    password_hash = _hasher.hash(new_password)
    with engine.begin() as conn:
        account_id = _use_link(conn, secret, "reset")
        if account_id is None:
            return False
        customer_id = conn.execute(select(Account.customer_id).where(Account.id == account_id)).scalar_one()
        conn.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(password_hash=password_hash, confirmed_at=func.coalesce(Account.confirmed_at, _now()))
        )
        conn.execute(delete(InboxSession).where(InboxSession.customer_id == customer_id))
    return True


# ---- mail ----------------------------------------------------------------------------------------
_MAIL_TEXT = {
    "confirm": (
        "Confirm your copyhunt account",
        "Please confirm your e-mail address for copyhunt by opening this link (valid for 48 hours):\n\n{link}\n\n"
        "If you did not sign up, ignore this message.",
    ),
    "reset": (
        "Reset your copyhunt password",
        "To choose a new copyhunt password, open this link (valid for one hour, once):\n\n{link}\n\n"
        "If you did not ask for this, ignore this message; your password stays as it is.",
    ),
    "exists": (
        "Your copyhunt account",
        "Someone (perhaps you) tried to sign up for copyhunt with this address, which already has an "
        "account. Sign in here:\n\n{link}\n\nForgot your password? Reset it from the sign-in page.",
    ),
}
_PATHS = {"confirm": "/signup/confirm", "reset": "/password/reset", "exists": "/signin"}


def mail_link(settings: Settings, to: str, kind: str, secret: str | None = None) -> Path | None:
    """Mail a confirmation link, a reset link or an "already signed up" notice to ``to``.

    Through SMTP when ``settings.smtp_host`` is set (returns None), else into the outbox
    (returns the ``.eml`` path). The link's secret goes in the query string of an inbox URL.
    """
    subject, body = _MAIL_TEXT[kind]
    link = inbox_link(settings, _PATHS[kind], **({"token": secret} if secret else {}))
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = settings.mail_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=_mail_domain(settings))
    msg.set_content(body.format(link=link))
    data = msg.as_bytes()
    if settings.smtp_host:
        smtp = _Smtp(settings)
        try:
            smtp.send(email.utils.parseaddr(settings.mail_from)[1] or settings.mail_from, to, data)
        finally:
            smtp.close()
        return None
    stamp = _now().strftime("%Y%m%dT%H%M%S")
    path = settings.outbox / "accounts" / f"{stamp}-{kind}-{secrets.token_hex(4)}.eml"
    atomic_write_bytes(path, data)
    return path
