"""Customer sign-in tokens and inbox sessions; the database keeps hashes only.

A token looks like ``cht_<key id>_<secret>``: the key id (12 hex digits) is public and finds the
row, the secret (256 random bits) is checked against the stored SHA-256 with a constant-time
comparison. A plain hash is enough (no bcrypt/scrypt): the secret is random, not a password, so
there is nothing to guess. Made by ``copyhunt customers token CUSTOMER_ID``; shown once.

A browser that signs in with a token, or with an account's password (copyhunt.hitsdb.accounts),
gets a session: a random id in an HttpOnly cookie, stored as its hash in ``inbox_sessions``.
Revoking the token ends its sessions; ``end_all_sessions`` ends every session of a customer.
Customers make, list and revoke their own API tokens in the inbox's settings (``list_tokens``,
``revoke_token(..., customer_id=...)``); ``last_used_at`` records a token's newest use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, delete, or_, select, update

from copyhunt.hitsdb.models import NAME_MAX, Account, Customer, CustomerToken, InboxSession
from copyhunt.hitsdb.store import bound_text, check_customer_id

__all__ = [
    "Identity",
    "SESSION_LIFETIME",
    "UnknownCustomer",
    "TokenInfo",
    "end_all_sessions",
    "end_session",
    "list_tokens",
    "issue_token",
    "revoke_token",
    "session_identity",
    "start_session",
    "verify_token",
]

TOKEN_PREFIX = "cht"
SESSION_LIFETIME = dt.timedelta(hours=12)
_TOKEN_RE = re.compile(rf"{TOKEN_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})")
_SESSION_RE = re.compile(r"[A-Za-z0-9_-]{43}")
# A token's last use is written at most this often: an API client polling every second must not
# turn every read into a write.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
# Compared against when the key id is unknown, so that a miss costs the same as a wrong secret.
_DUMMY_HASH = hashlib.sha256(b"copyhunt: no such key").hexdigest()


class UnknownCustomer(LookupError):
    pass


@dataclass(frozen=True)
class Identity:
    """Who is signed in: a customer, through one of their tokens or through their account."""

    customer_id: str
    key_id: str | None = None
    account_id: int | None = None

    @property
    def actor(self) -> str:
        return f"token:{self.key_id}" if self.key_id else f"account:{self.account_id}"


@dataclass(frozen=True)
class TokenInfo:
    """A token as its customer sees it in settings: never its secret."""

    key_id: str
    label: str | None
    created_at: dt.datetime
    last_used_at: dt.datetime | None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def issue_token(engine: Engine, customer_id: str, label: str | None = None) -> str:
    """Make a new token for a customer and return it (the only time its secret is seen)."""
    customer_id = check_customer_id(customer_id)
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with engine.begin() as conn:
        if conn.execute(select(Customer.id).where(Customer.id == customer_id)).first() is None:
            raise UnknownCustomer(f"no customer {customer_id!r} in the hits database")
        conn.execute(
            CustomerToken.__table__.insert().values(
                key_id=key_id,
                customer_id=customer_id,
                secret_sha256=_sha256(secret),
                label=bound_text(label, NAME_MAX),
                created_at=_now(),
            )
        )
    return f"{TOKEN_PREFIX}_{key_id}_{secret}"


def verify_token(engine: Engine, token: str | None) -> Identity | None:
    """The identity a token signs in as, or None if it is malformed, unknown, wrong or revoked."""
    match = _TOKEN_RE.fullmatch(token or "")
    if match is None:
        return None
    key_id, secret = match.groups()
    with engine.connect() as conn:
        row = conn.execute(
            select(CustomerToken.customer_id, CustomerToken.secret_sha256, CustomerToken.last_used_at).where(
                CustomerToken.key_id == key_id, CustomerToken.revoked_at.is_(None)
            )
        ).first()
    stored = row.secret_sha256 if row is not None else _DUMMY_HASH
    if not hmac.compare_digest(_sha256(secret), stored) or row is None:
        return None
    now = _now()
    if row.last_used_at is None or _utc(row.last_used_at) < now - LAST_USED_RESOLUTION:
        with engine.begin() as conn:
            conn.execute(update(CustomerToken).where(CustomerToken.key_id == key_id).values(last_used_at=now))
    return Identity(customer_id=row.customer_id, key_id=key_id)


def _utc(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)  # SQLite drops the zone


def list_tokens(engine: Engine, customer_id: str) -> list[TokenInfo]:
    """The customer's tokens that are not revoked, newest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(CustomerToken.key_id, CustomerToken.label, CustomerToken.created_at, CustomerToken.last_used_at)
            .where(CustomerToken.customer_id == customer_id, CustomerToken.revoked_at.is_(None))
            .order_by(CustomerToken.created_at.desc(), CustomerToken.key_id)
        ).all()
    return [
        TokenInfo(r.key_id, r.label, _utc(r.created_at), _utc(r.last_used_at) if r.last_used_at else None)
        for r in rows
    ]


def revoke_token(engine: Engine, key_id: str, customer_id: str | None = None) -> bool:
    """Revoke a token by its key id (the part after ``cht_``); its sessions end. False if unknown,
    already revoked, or (with ``customer_id``) another customer's: the inbox answers 404 then."""
    with engine.begin() as conn:
        where = [CustomerToken.key_id == key_id, CustomerToken.revoked_at.is_(None)]
        if customer_id is not None:
            where.append(CustomerToken.customer_id == customer_id)
        done = conn.execute(update(CustomerToken).where(*where).values(revoked_at=_now())).rowcount
        if not done:
            return False
        conn.execute(delete(InboxSession).where(InboxSession.key_id == key_id))
    return bool(done)


def start_session(engine: Engine, identity: Identity, lifetime: dt.timedelta = SESSION_LIFETIME) -> str:
    """Record a new browser session and return its id (the cookie value)."""
    session_id = secrets.token_urlsafe(32)
    now = _now()
    with engine.begin() as conn:
        # Housekeeping: the customer's expired sessions go when a new one starts.
        conn.execute(
            delete(InboxSession).where(
                InboxSession.customer_id == identity.customer_id, InboxSession.expires_at < now
            )
        )
        conn.execute(
            InboxSession.__table__.insert().values(
                id_sha256=_sha256(session_id),
                key_id=identity.key_id,
                account_id=identity.account_id,
                customer_id=identity.customer_id,
                created_at=now,
                expires_at=now + lifetime,
            )
        )
    return session_id


def session_identity(engine: Engine, session_id: str | None) -> Identity | None:
    """The identity of a live session (not expired; its token not revoked, or its account still
    there and confirmed), or None."""
    if not session_id or not _SESSION_RE.fullmatch(session_id):
        return None
    s, t, a = InboxSession.__table__, CustomerToken.__table__, Account.__table__
    token_ok = (t.c.customer_id == s.c.customer_id) & t.c.revoked_at.is_(None)
    account_ok = (a.c.customer_id == s.c.customer_id) & a.c.confirmed_at.is_not(None)
    with engine.connect() as conn:
        row = conn.execute(
            select(s.c.customer_id, s.c.key_id, s.c.account_id, s.c.expires_at)
            .select_from(s.outerjoin(t, t.c.key_id == s.c.key_id).outerjoin(a, a.c.id == s.c.account_id))
            .where(
                s.c.id_sha256 == _sha256(session_id),
                or_(s.c.key_id.is_not(None) & token_ok, s.c.account_id.is_not(None) & account_ok),
            )
        ).first()
    if row is None or _utc(row.expires_at) <= _now():
        return None
    return Identity(customer_id=row.customer_id, key_id=row.key_id, account_id=row.account_id)


def end_session(engine: Engine, session_id: str | None) -> None:
    if session_id and _SESSION_RE.fullmatch(session_id):
        with engine.begin() as conn:
            conn.execute(delete(InboxSession).where(InboxSession.id_sha256 == _sha256(session_id)))



def end_all_sessions(engine: Engine, customer_id: str) -> int:
    """Sign a customer out everywhere: every session of theirs ends (token and account sessions).
    Returns how many ended."""
    with engine.begin() as conn:
        return conn.execute(delete(InboxSession).where(InboxSession.customer_id == customer_id)).rowcount
