"""SQLAlchemy 2 declarative models of the hits database.

Tables: ``customers``, ``images``, ``licences`` (synced from the customers file), ``hits`` (one row
per (customer, image, page, image URL), upserted by every run), ``hit_events`` (an audit trail of
changes to a hit's state), ``runs`` (what each run date loaded), ``digests`` (which daily
e-mails went out, so none is sent twice), and for the inbox ``customer_tokens`` (sign-in tokens,
stored as hashes only), ``inbox_sessions`` (browser sign-ins, also stored as hashes), and for people
``accounts`` (e-mail and argon2 password hash of a customer's person) with ``account_tokens`` (the
single-use e-mail confirmation and password reset links, hashed too), and ``own_sites`` (domains
where a customer's images are used by the customer or with their leave: copyhunt.coverage).

Text that comes from the web is stored in bounded columns and is cut to the bound by the loader
(``store.bound_text`` / ``store.bound_url``), never rejected: one absurd page title must not fail a run.
The schema is made by the Alembic migrations in ``migrations/`` (``store.create_schema`` runs them);
a change here needs a new migration, and tests/test_hitsdb_migrations.py fails until it exists.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# ---- length bounds -------------------------------------------------------------------------------
ID_MAX = 100  # customer, image and licence ids are ours (customers file), short by construction
# URLs are bounded in UTF-8 *bytes*, not characters, and lower than titles: page_url and image_url
# are both in the UNIQUE natural key, and a PostgreSQL btree entry must fit in ~2700 bytes
# (1/3 of a page). 2 x 1000 bytes + two ids stays under it even for non-ASCII URLs.
URL_MAX_BYTES = 1000
TITLE_MAX = 2000
DOMAIN_MAX = 253  # the longest DNS name
NAME_MAX = 500  # operator / customer names, e-mail addresses
SOURCE_MAX = 100  # provenance tags such as "imprint" or "whois"
SHA256_LEN = 64
STATUS_MAX = 32
KEY_ID_MAX = 32  # public part of a customer token (copyhunt.hitsdb.tokens)
ACTOR_MAX = 64  # who changed a hit: "token:<key id>"; NULL for the daily load
CURRENCY_LEN = 3  # ISO 4217
PHONE_MAX = 64  # E.164 is 15 digits; room for spaces, brackets and an extension
EMAIL_MAX = 254  # the longest address SMTP carries (RFC 5321 path limit)
PASSWORD_HASH_MAX = 255  # an argon2 PHC string is ~100 characters
PURPOSE_MAX = 16  # account_tokens.purpose: "confirm" | "reset"
EVIDENCE_MAX = 500  # a quoted credit line or the list of names looked for (enrich bounds them first)

# Bigint ids on PostgreSQL; SQLite only auto-increments a column declared exactly INTEGER.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(ID_MAX), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    email: Mapped[str] = mapped_column(String(NAME_MAX))
    digest_opt_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    rate_card: Mapped[str | None] = mapped_column(Text)  # JSON: this customer's overrides of the rate card
    # Bookkeeping only (when the row was first synced); never part of any hit or digest.
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Image(Base):
    __tablename__ = "images"

    customer_id: Mapped[str] = mapped_column(
        String(ID_MAX), ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[str] = mapped_column(String(ID_MAX), primary_key=True)
    title: Mapped[str | None] = mapped_column(String(TITLE_MAX))
    sha256: Mapped[str | None] = mapped_column(String(SHA256_LEN))
    path: Mapped[str | None] = mapped_column(String(TITLE_MAX))
    # The registry (copyhunt.registry): where the image came from, when, and whether it is withdrawn.
    source_kind: Mapped[str | None] = mapped_column(String(SOURCE_MAX))  # "upload", "import" or "seed"
    source_url: Mapped[str | None] = mapped_column(String(URL_MAX_BYTES))
    uploaded_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    withdrawn_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))  # no longer searched; hits stay
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    whole_phash: Mapped[int | None] = mapped_column(BigInteger)  # the upright whole-image pHash, for near-duplicates
    near_duplicate_of: Mapped[str | None] = mapped_column(String(ID_MAX))  # an image id of the same customer


class Licence(Base):
    __tablename__ = "licences"

    id: Mapped[str] = mapped_column(String(ID_MAX), primary_key=True)
    customer_id: Mapped[str] = mapped_column(
        String(ID_MAX), ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    licensee_domain: Mapped[str] = mapped_column(String(DOMAIN_MAX))
    licensee_operator: Mapped[str | None] = mapped_column(String(NAME_MAX))  # the licensee by name (pricing matches it)
    image_ids: Mapped[str] = mapped_column(Text, default="[]")  # JSON list; ["*"] = every image
    valid_from: Mapped[dt.date | None] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date)


class Hit(Base):
    """One use of a customer's image: an image URL embedded in a page URL.

    Dates are run dates, never wall-clock times, so re-running a day reproduces the same rows.
    """

    __tablename__ = "hits"
    __table_args__ = (
        UniqueConstraint("customer_id", "image_id", "page_url", "image_url", name="uq_hits_natural_key"),
        # A hit must name an image that the same customer registered: tenant integrity in the schema.
        ForeignKeyConstraint(
            ["customer_id", "image_id"], ["images.customer_id", "images.image_id"], ondelete="CASCADE"
        ),
        Index("ix_hits_customer_first_seen", "customer_id", "first_seen"),  # the daily digest
        Index("ix_hits_customer_online_last_seen", "customer_id", "online", "last_seen"),  # offline marking
        Index("ix_hits_customer_status", "customer_id", "status"),  # the inbox's status filter
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(ID_MAX))
    image_id: Mapped[str] = mapped_column(String(ID_MAX))
    page_url: Mapped[str] = mapped_column(String(URL_MAX_BYTES))
    image_url: Mapped[str] = mapped_column(String(URL_MAX_BYTES))
    score: Mapped[float] = mapped_column(Float)
    page_title: Mapped[str | None] = mapped_column(String(TITLE_MAX))
    domain: Mapped[str | None] = mapped_column(String(DOMAIN_MAX))
    registrable_domain: Mapped[str | None] = mapped_column(String(DOMAIN_MAX))
    operator_name: Mapped[str | None] = mapped_column(String(NAME_MAX))
    operator_source: Mapped[str | None] = mapped_column(String(SOURCE_MAX))
    # Who runs the page, as the imprint, JSON-LD or seller page gives it (copyhunt.enrich).
    operator_address: Mapped[str | None] = mapped_column(String(NAME_MAX))
    operator_email: Mapped[str | None] = mapped_column(String(NAME_MAX))
    operator_phone: Mapped[str | None] = mapped_column(String(PHONE_MAX))
    operator_role: Mapped[str | None] = mapped_column(String(SOURCE_MAX))  # site-operator, marketplace-seller
    published_at: Mapped[dt.date | None] = mapped_column(Date)
    published_source: Mapped[str | None] = mapped_column(String(SOURCE_MAX))
    first_seen: Mapped[dt.date] = mapped_column(Date)
    last_seen: Mapped[dt.date] = mapped_column(Date)
    # The use as the newest run saw it: since when (publication date or first sighting) and for how many days.
    usage_since: Mapped[dt.date | None] = mapped_column(Date)
    usage_since_source: Mapped[str | None] = mapped_column(String(SOURCE_MAX))
    usage_days: Mapped[int | None] = mapped_column(Integer)
    online: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # The page's HTTP status in the newest crawl, and whether that status means it is up (2xx/3xx).
    page_status: Mapped[int | None] = mapped_column(Integer)
    page_online: Mapped[bool | None] = mapped_column(Boolean)
    # Whether the page credits the author, and the words that show it (or what was looked for).
    attribution_found: Mapped[bool | None] = mapped_column(Boolean)
    attribution_evidence: Mapped[str | None] = mapped_column(String(EVIDENCE_MAX))
    licensed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A soft reference: pricing reads licences from the customers file, which may be ahead of the DB.
    licence_id: Mapped[str | None] = mapped_column(String(ID_MAX))
    licence_match: Mapped[str | None] = mapped_column(Text)  # JSON: the licence check, matched or not, and why
    license_value_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    currency: Mapped[str] = mapped_column(String(CURRENCY_LEN), default="EUR", server_default="EUR")
    value_breakdown: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")  # JSON
    region: Mapped[str | None] = mapped_column(Text)  # JSON: where in the page image the match is
    image_sha256: Mapped[str | None] = mapped_column(String(SHA256_LEN))
    html_sha256: Mapped[str | None] = mapped_column(String(SHA256_LEN))
    # When the crawl fetched the page whose HTML is html_sha256: the evidence's timestamp.
    fetched_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Workflow state, owned by people (inbox), never touched by the loader.
    status: Mapped[str] = mapped_column(String(STATUS_MAX), default="new", server_default="new")


class HitEvent(Base):
    """A change of a hit's state (went offline, came back, workflow status), for the audit trail."""

    __tablename__ = "hit_events"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    hit_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("hits.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(STATUS_MAX))
    note: Mapped[str | None] = mapped_column(String(TITLE_MAX))
    actor: Mapped[str | None] = mapped_column(String(ACTOR_MAX))  # NULL: the daily load


class Run(Base):
    """The outcome of one run date, as a function of the data: re-loading the day rewrites the
    same row (per-call figures such as rows inserted are returned by ``load_hits``, not stored)."""

    __tablename__ = "runs"

    run_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    frame_rows: Mapped[int] = mapped_column(Integer, default=0)  # hits found that day
    new_hits: Mapped[int] = mapped_column(Integer, default=0)  # first seen that day
    went_offline: Mapped[int] = mapped_column(Integer, default=0)  # marked offline by that day
    total_hits: Mapped[int] = mapped_column(Integer, default=0)
    stats: Mapped[str] = mapped_column(Text, default="{}")  # JSON, per-customer counts


class Digest(Base):
    """A digest e-mail that went out; its primary key is what stops a second send."""

    __tablename__ = "digests"

    customer_id: Mapped[str] = mapped_column(
        String(ID_MAX), ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    run_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    sent_via: Mapped[str] = mapped_column(String(16))  # 'smtp' | 'outbox'
    message_id: Mapped[str] = mapped_column(String(NAME_MAX))
    path: Mapped[str | None] = mapped_column(String(TITLE_MAX))  # the .eml file, for 'outbox'
    hit_count: Mapped[int] = mapped_column(Integer)


class CustomerToken(Base):
    """A customer's sign-in token. Only a hash of its secret is kept; see copyhunt.hitsdb.tokens."""

    __tablename__ = "customer_tokens"

    key_id: Mapped[str] = mapped_column(String(KEY_ID_MAX), primary_key=True)
    customer_id: Mapped[str] = mapped_column(
        String(ID_MAX), ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    secret_sha256: Mapped[str] = mapped_column(String(SHA256_LEN))
    label: Mapped[str | None] = mapped_column(String(NAME_MAX))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class InboxSession(Base):
    """A signed-in browser; the cookie holds a random id, the table only its hash.

    Signed in either with a token (``key_id``) or with an account's password (``account_id``);
    exactly one is set. Sessions die with their token or account and at ``expires_at``.
    """

    __tablename__ = "inbox_sessions"

    id_sha256: Mapped[str] = mapped_column(String(SHA256_LEN), primary_key=True)
    key_id: Mapped[str | None] = mapped_column(
        String(KEY_ID_MAX), ForeignKey("customer_tokens.key_id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    customer_id: Mapped[str] = mapped_column(
        String(ID_MAX), ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Account(Base):
    """A person who signs in with e-mail and password; one per customer (copyhunt.hitsdb.accounts).

    ``email`` is stored lower-cased, so uniqueness ignores case. Only an argon2 hash of the
    password is kept. ``confirmed_at`` is NULL until the person follows the e-mailed link.
    """

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(
        String(ID_MAX), ForeignKey("customers.id", ondelete="CASCADE"), unique=True
    )
    email: Mapped[str] = mapped_column(String(EMAIL_MAX), unique=True)
    password_hash: Mapped[str] = mapped_column(String(PASSWORD_HASH_MAX))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class AccountToken(Base):
    """A link mailed to an account (confirm the address, reset the password): single use,
    expiring, and only the SHA-256 of its random secret is stored."""

    __tablename__ = "account_tokens"

    id_sha256: Mapped[str] = mapped_column(String(SHA256_LEN), primary_key=True)
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(PURPOSE_MAX))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class OwnSite(Base):
    """A domain where use of the customer's images is their own or authorised (their site, their
    agency, a client): hits on it or its subdomains are "authorised", never infringements."""

    __tablename__ = "own_sites"

    customer_id: Mapped[str] = mapped_column(
        String(ID_MAX), ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    domain: Mapped[str] = mapped_column(String(DOMAIN_MAX), primary_key=True)  # lower-case, no "www."
    source: Mapped[str] = mapped_column(String(SOURCE_MAX))  # "settings", "approve", "import" or "cli"
    note: Mapped[str | None] = mapped_column(String(NAME_MAX))
    added_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


metadata = Base.metadata
