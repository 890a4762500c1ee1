"""Load customers and a run's priced hits into the hits database, and read them back.

Typical use (the daily DAG's ``load_hits`` task, or ``copyhunt`` CLI)::

    engine = make_engine(settings.database_url)
    create_schema(engine)
    sync_customers(engine, load_customers(settings.customers_path), root=settings.home)
    stats = load_hits(engine, priced_frame, run_date)

``load_hits`` is a transaction and an upsert on the natural key (customer, image, page URL, image
URL), so a task retry or a re-run of the same date is harmless: the same frame loaded twice leaves
every row as it was. Dates in hit rows are run dates, never the wall clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import pandas as pd
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    case,
    create_engine,
    event,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import make_url

from copyhunt.failpoints import failpoint
from copyhunt.lake import parse_run_date

from copyhunt.hitsdb.models import (
    CURRENCY_LEN,
    DOMAIN_MAX,
    EVIDENCE_MAX,
    ID_MAX,
    NAME_MAX,
    PHONE_MAX,
    SOURCE_MAX,
    TITLE_MAX,
    URL_MAX_BYTES,
    Customer,
    Hit,
    HitEvent,
    Image,
    Licence,
    Run,
)

__all__ = [
    "LoadStats",
    "SyncStats",
    "PRICED_COLUMNS",
    "alembic_config",
    "bound_text",
    "bound_url",
    "check_customer_id",
    "count_hits",
    "create_schema",
    "dialect_insert",
    "hits_for_customer",
    "load_hits",
    "head_revision",
    "make_engine",
    "schema_revision",
    "sync_customers",
    "table_dump",
]

# Enrichment a hit carries since migration 0003 (all observations of the run).
ENRICHMENT_COLUMNS: tuple[str, ...] = (
    "operator_address", "operator_email", "operator_phone", "operator_role", "usage_since",
    "usage_since_source", "usage_days", "page_status", "page_online", "attribution_found",
    "attribution_evidence", "licence_match",
)  # fmt: skip
# The input contract of load_hits: the columns of the "priced" lake dataset.
PRICED_COLUMNS: tuple[str, ...] = (
    "run_date", "customer_id", "image_id", "page_url", "image_url", "image_sha256", "score",
    "region", "page_title", "domain", "registrable_domain", "operator_name", "operator_source",
    "published_at", "published_source", "licensed", "licence_id", "license_value_cents",
    "currency", "value_breakdown", "html_sha256", "fetched_at", *ENRICHMENT_COLUMNS,
)  # fmt: skip
# Columns a priced frame may lack (frames written before they existed): loaded as NULL.
OPTIONAL_PRICED_COLUMNS: frozenset[str] = frozenset({"published_source", "fetched_at", *ENRICHMENT_COLUMNS})
HIT_KEY: tuple[str, ...] = ("customer_id", "image_id", "page_url", "image_url")
# Columns that describe what a run observed; the newest observation wins (see _hits_upsert).
OBSERVED_COLUMNS: tuple[str, ...] = (
    "score", "page_title", "domain", "registrable_domain", "operator_name", "operator_source",
    "published_source", "licensed", "licence_id", "license_value_cents", "currency",
    "value_breakdown", "region", "image_sha256", "html_sha256", "fetched_at", *ENRICHMENT_COLUMNS,
)  # fmt: skip
# Web text columns of a hit and their bounds in characters (see bound_text).
BOUNDED_TEXT_COLUMNS: dict[str, int] = {
    "page_title": TITLE_MAX, "domain": DOMAIN_MAX, "registrable_domain": DOMAIN_MAX,
    "operator_name": NAME_MAX, "operator_source": SOURCE_MAX, "operator_address": NAME_MAX,
    "operator_email": NAME_MAX, "operator_phone": PHONE_MAX, "operator_role": SOURCE_MAX,
    "published_source": SOURCE_MAX, "usage_since_source": SOURCE_MAX, "licence_id": ID_MAX,
    "attribution_evidence": EVIDENCE_MAX,
}  # fmt: skip
# Bounds of the integer observations: anything outside is not a status or a duration, so NULL.
HTTP_STATUS_RANGE = range(100, 600)
USAGE_DAYS_RANGE = range(0, 2**31)  # the Integer column

# Customer ids end up in file names (outbox/<run_date>/<customer_id>.eml), so they are restricted.
CUSTOMER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# C0 controls and DEL: meaningless in titles and URLs; NUL is also refused by PostgreSQL text.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SPACES_RE = re.compile(r"\s+")


class LoadStats(NamedTuple):
    """What one load_hits call did. ``total`` is the number of rows in ``hits`` afterwards."""

    inserted: int
    updated: int
    marked_offline: int
    total: int


@dataclass(frozen=True)
class SyncStats:
    """Rows inserted or changed by sync_customers (0 everywhere when nothing changed)."""

    customers: int
    images: int
    licences: int


# ---- engine and schema ---------------------------------------------------------------------------
def make_engine(url: str, **kwargs: Any) -> Engine:
    """An Engine for ``sqlite:///path`` or ``postgresql+psycopg://...``.

    SQLite gets foreign keys switched on (they are off per connection by default), a busy timeout,
    and real transactions: pysqlite on Python 3.11 otherwise starts a transaction only at the first
    write, so the reads that load_hits does before writing would not be in it.
    A bare ``postgresql://`` URL is taken to mean psycopg 3, the driver we ship.
    """
    u = make_url(url)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() == "sqlite":
        db = u.database or ""
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # the "begin" hook below owns transactions
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(u, **kwargs)


MIGRATIONS = Path(__file__).parent / "migrations"
# The schema that metadata.create_all made before migrations existed (see migrations/versions/0001).
BASELINE_REVISION = "0001"
# Any constant will do: it only has to be the same for every process migrating one database.
_PG_MIGRATION_LOCK = 7_140_251_226


def alembic_config(connection: Connection | None = None) -> Any:
    """An Alembic Config for the hits database's migrations, optionally bound to a connection."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def schema_revision(engine: Engine) -> tuple[str, ...]:
    """The database's current Alembic revision(s); ``()`` for an empty (or pre-migration) database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return tuple(MigrationContext.configure(conn).get_current_heads())


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def create_schema(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest) with Alembic: ``upgrade head``.

    Idempotent and cheap when nothing is due (one read). The upgrade runs in one transaction,
    serialised between processes on PostgreSQL by an advisory lock. A database made by the old
    ``metadata.create_all`` (tables but no ``alembic_version``) is stamped at the baseline first.
    """
    from alembic import command
    from sqlalchemy import inspect

    if revision == "head" and schema_revision(engine) == (head_revision(),):
        return
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
        cfg = alembic_config(conn)
        insp = inspect(conn)
        if not insp.has_table("alembic_version") and insp.has_table("hits"):
            command.stamp(cfg, BASELINE_REVISION)
        command.upgrade(cfg, revision)


def dialect_insert(conn: Connection) -> Callable[[Table], Any]:
    """The dialect's INSERT construct, which is what offers ``on_conflict_do_update``."""
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    raise NotImplementedError(f"the hits database supports sqlite and postgresql, not {name}")


def _changed(table: Table, new_values: Mapping[str, Any]) -> Any:
    """WHERE clause for ON CONFLICT DO UPDATE: only touch a row when some value really changes.

    Without it an identical re-load would still rewrite every row (new tuple versions on
    PostgreSQL) and be reported as updates.
    """
    return or_(*(table.c[name].is_distinct_from(value) for name, value in new_values.items()))


# ---- cleaning web text ---------------------------------------------------------------------------
def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _valid_unicode(text: str) -> str:
    # Lone surrogates (from badly decoded pages) cannot be encoded as UTF-8 by any driver.
    return text.encode("utf-8", "replace").decode("utf-8")


def bound_text(value: Any, max_chars: int) -> str | None:
    """Web text as one clean line of at most ``max_chars`` characters; None stays None."""
    if _is_missing(value):
        return None
    text = str(value)
    # Most text is already clean, and isprintable() is False for every character the cleaning
    # touches (controls, separators other than the ASCII space, lone surrogates): skip it then.
    if not (text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " "):
        text = _SPACES_RE.sub(" ", _CONTROL_RE.sub(" ", _valid_unicode(text))).strip()
    return text[:max_chars] or None


def bound_url(value: Any, max_bytes: int = URL_MAX_BYTES) -> str | None:
    """A URL without control characters, cut to ``max_bytes`` of UTF-8 (see models.URL_MAX_BYTES)."""
    if _is_missing(value):
        return None
    text = _CONTROL_RE.sub("", _valid_unicode(str(value))).strip()
    # Cutting bytes may split a character; drop the partial tail rather than store invalid UTF-8.
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore") or None


def _sha256_or_none(value: Any) -> str | None:
    if _is_missing(value):
        return None
    text = str(value).strip().lower()
    return text if _SHA256_RE.fullmatch(text) else None


def _json_text(value: Any, column: str, default: str | None) -> str | None:
    """A JSON column value: JSON text is checked and kept as is; dicts and lists are dumped."""
    if _is_missing(value):
        return default
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            raise ValueError(f"column {column!r} is not valid JSON: {value[:80]!r}") from None
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _as_date(value: Any) -> dt.date | None:
    """A date from a date, datetime, Timestamp or ISO string; None when missing or unparseable."""
    if _is_missing(value):
        return None
    try:
        return parse_run_date(value)
    except ValueError:
        return None


def _as_utc_datetime(value: Any) -> dt.datetime | None:
    """An aware UTC datetime from a datetime, Timestamp or ISO string (naive means UTC); None when
    missing or unparseable. Normalised to UTC because SQLite stores the wall time without its zone."""
    if _is_missing(value):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def _int_in(value: Any, allowed: range) -> int | None:
    """An integer observation (page status, usage days) or None when missing or out of ``allowed``."""
    if _is_missing(value) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and int(number) in allowed else None


def _bool_or_none(value: Any) -> bool | None:
    """A yes/no observation; None means not known (no HTML, no status), not False."""
    return None if _is_missing(value) else bool(value)


def _cents(value: Any) -> int:
    """Money is integer cents; a float with a fraction means an upstream bug, so it is refused."""
    if _is_missing(value):
        raise ValueError("license_value_cents is missing")
    if isinstance(value, bool):
        raise ValueError("license_value_cents is a boolean")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"license_value_cents must be integer cents, got {value!r}")
    return int(value)


def _check_id(value: Any, what: str) -> str:
    """Ids are ours (customers file), not web text: too long or empty is an error, not truncated."""
    if _is_missing(value) or not str(value).strip():
        raise ValueError(f"{what} is missing")
    text = str(value).strip()
    if len(text) > ID_MAX:
        raise ValueError(f"{what} {text[:40]!r}... is longer than {ID_MAX} characters")
    return text


def check_customer_id(value: Any) -> str:
    text = _check_id(value, "customer id")
    if not CUSTOMER_ID_RE.fullmatch(text):
        raise ValueError(f"customer id {text!r} may only use letters, digits, '.', '_' and '-'")
    return text


# ---- customers -----------------------------------------------------------------------------------
def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Read a field from a dict or from an object (dataclass, namedtuple)."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _image_sha256(image: Any, root: Path | None) -> str | None:
    given = _sha256_or_none(_get(image, "sha256"))
    if given:
        return given
    raw_path = _get(image, "path")
    if not raw_path:
        return None
    path = Path(raw_path)
    if not path.is_absolute():
        if root is None:
            return None
        path = root / path
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None  # a missing file is the matcher's problem to report, not the sync's


def sync_customers(engine: Engine, customers: Iterable[Any], root: Path | None = None, only_missing: bool = False) -> SyncStats:
    """Upsert customers, their images and licences, in one transaction (idempotent).

    ``customers`` are dicts or objects with ``id, name, email, images, licences`` (as returned by
    ``copyhunt.demo.customers.load_customers``); images have ``id`` (or ``image_id``), ``title``,
    ``path`` and optionally ``sha256``, which is otherwise computed from ``path`` (relative paths
    against ``root``). ``digest_opt_out`` is written only when the customer object carries it, so
    an opt-out recorded in the database is not undone by a customers file that does not mention it.
    Nothing is deleted: hits keep pointing at images even after a customer drops them.

    ``only_missing`` inserts rows the database lacks and changes none that it has: the daily load
    uses it with the day's registry snapshot, which must not undo what a customer changed since
    (a licence ended, an image renamed) in the registry of truth.
    """
    customer_rows: list[dict[str, Any]] = []
    image_rows: dict[tuple[str, str], dict[str, Any]] = {}
    licence_rows: dict[str, dict[str, Any]] = {}
    for cust in customers:
        cid = check_customer_id(_get(cust, "id"))
        email = bound_text(_get(cust, "email"), NAME_MAX)
        if not email:
            raise ValueError(f"customer {cid!r} has no e-mail address")
        row: dict[str, Any] = {"id": cid, "name": bound_text(_get(cust, "name"), NAME_MAX) or cid, "email": email}
        opt_out = _get(cust, "digest_opt_out")
        if opt_out is not None:
            row["digest_opt_out"] = bool(opt_out)
        customer_rows.append(row)
        for image in _get(cust, "images") or ():
            image_id = _check_id(_get(image, "id") or _get(image, "image_id"), f"image id of {cid}")
            raw_path = _get(image, "path")
            image_rows[(cid, image_id)] = {
                "customer_id": cid,
                "image_id": image_id,
                "title": bound_text(_get(image, "title"), TITLE_MAX),
                "sha256": _image_sha256(image, root),
                "path": bound_text(str(raw_path), TITLE_MAX) if raw_path else None,
            }
        for lic in _get(cust, "licences") or ():
            lid = _check_id(_get(lic, "id"), f"licence id of {cid}")
            if lid in licence_rows and licence_rows[lid]["customer_id"] != cid:
                raise ValueError(f"licence id {lid!r} is used by two customers")
            image_ids = _get(lic, "image_ids") or []
            licence_rows[lid] = {
                "id": lid,
                "customer_id": cid,
                "licensee_domain": bound_text(_get(lic, "licensee_domain"), DOMAIN_MAX) or "",
                "licensee_operator": bound_text(_get(lic, "licensee_operator"), NAME_MAX),
                "image_ids": image_ids if isinstance(image_ids, str) else json.dumps(list(image_ids)),
                "valid_from": _as_date(_get(lic, "valid_from")),
                "valid_to": _as_date(_get(lic, "valid_to")),
            }

    n_customers = n_images = n_licences = 0
    with engine.begin() as conn:
        insert = dialect_insert(conn)
        ct = Customer.__table__
        for row in customer_rows:
            stmt = insert(ct)
            new = {k: stmt.excluded[k] for k in row if k != "id"}
            stmt = (stmt.on_conflict_do_nothing(index_elements=["id"]) if only_missing
                    else stmt.on_conflict_do_update(index_elements=["id"], set_=new, where=_changed(ct, new)))
            n_customers += len(conn.execute(stmt.returning(ct.c.id), row).all())

        if image_rows:
            it = Image.__table__
            stmt = insert(it)
            new = {
                "title": stmt.excluded.title,
                "path": stmt.excluded.path,
                # Keep a known hash when this sync could not compute one (file moved away).
                "sha256": func.coalesce(stmt.excluded.sha256, it.c.sha256),
            }
            stmt = (stmt.on_conflict_do_nothing(index_elements=["customer_id", "image_id"]) if only_missing
                    else stmt.on_conflict_do_update(index_elements=["customer_id", "image_id"], set_=new, where=_changed(it, new)))
            n_images = len(conn.execute(stmt.returning(it.c.image_id), list(image_rows.values())).all())

        if licence_rows:
            lt = Licence.__table__
            owners = dict(conn.execute(select(lt.c.id, lt.c.customer_id).where(lt.c.id.in_(list(licence_rows)))).all())
            for lid, owner in owners.items():
                if owner != licence_rows[lid]["customer_id"]:
                    raise ValueError(f"licence id {lid!r} already belongs to customer {owner!r}")
            stmt = insert(lt)
            new = {k: stmt.excluded[k] for k in ("licensee_domain", "licensee_operator", "image_ids", "valid_from", "valid_to")}
            stmt = (stmt.on_conflict_do_nothing(index_elements=["id"]) if only_missing
                    else stmt.on_conflict_do_update(index_elements=["id"], set_=new, where=_changed(lt, new)))
            n_licences = len(conn.execute(stmt.returning(lt.c.id), list(licence_rows.values())).all())
    return SyncStats(customers=n_customers, images=n_images, licences=n_licences)


# ---- hits ----------------------------------------------------------------------------------------
def _hit_rows(priced: pd.DataFrame, run_date: dt.date) -> list[dict[str, Any]]:
    """The priced frame as clean, bounded, de-duplicated hit rows, in a deterministic order."""
    missing = sorted(set(PRICED_COLUMNS) - set(priced.columns) - OPTIONAL_PRICED_COLUMNS)
    if missing:
        raise ValueError(f"priced frame lacks columns: {', '.join(missing)}")
    rows: list[dict[str, Any]] = []
    # Only the contract's columns: the priced partition carries many more (enrichment internals).
    for rec in priced[[c for c in PRICED_COLUMNS if c in priced.columns]].to_dict("records"):
        rec_date = _as_date(rec.get("run_date"))
        if rec_date != run_date:
            # Loading another day's partition under this date would corrupt first/last_seen.
            raise ValueError(f"priced frame has run_date {rec.get('run_date')!r}, expected {run_date}")
        page_url, image_url = bound_url(rec["page_url"]), bound_url(rec["image_url"])
        if not page_url or not image_url:
            raise ValueError(f"priced row without page_url or image_url: {rec!r:.200}")
        score = float(rec["score"])
        if math.isnan(score):
            raise ValueError(f"priced row with NaN score: {page_url}")
        currency = bound_text(rec["currency"], CURRENCY_LEN) or "EUR"
        rows.append(
            {
                "customer_id": check_customer_id(rec["customer_id"]),
                "image_id": _check_id(rec["image_id"], "image id"),
                "page_url": page_url,
                "image_url": image_url,
                "score": score,
                **{name: bound_text(rec.get(name), bound) for name, bound in BOUNDED_TEXT_COLUMNS.items()},
                "published_at": _as_date(rec.get("published_at")),
                "first_seen": run_date,
                "last_seen": run_date,
                "online": True,
                "licensed": False if _is_missing(rec.get("licensed")) else bool(rec["licensed"]),
                "license_value_cents": _cents(rec["license_value_cents"]),
                "currency": currency.upper(),
                "value_breakdown": _json_text(rec.get("value_breakdown"), "value_breakdown", "{}"),
                "region": _json_text(rec.get("region"), "region", None),
                "image_sha256": _sha256_or_none(rec.get("image_sha256")),
                "html_sha256": _sha256_or_none(rec.get("html_sha256")),
                "fetched_at": _as_utc_datetime(rec.get("fetched_at")),
                "usage_since": _as_date(rec.get("usage_since")),
                "usage_days": _int_in(rec.get("usage_days"), USAGE_DAYS_RANGE),
                "page_status": _int_in(rec.get("page_status"), HTTP_STATUS_RANGE),
                "page_online": _bool_or_none(rec.get("page_online")),
                "attribution_found": _bool_or_none(rec.get("attribution_found")),
                "licence_match": _json_text(rec.get("licence_match"), "licence_match", None),
            }
        )
    # Bounding can make two long URLs equal, and a frame may repeat a key; one upsert statement must
    # not touch a row twice (PostgreSQL refuses), so keep one row per key: the highest score, then
    # value, then a total order on the whole row so the choice never depends on frame order.
    by_key: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_key[tuple(row[k] for k in HIT_KEY)].append(row)
    unique: list[dict[str, Any]] = []
    for key in sorted(by_key):
        candidates = by_key[key]
        if len(candidates) > 1:
            candidates.sort(key=lambda r: (-r["score"], -r["license_value_cents"], json.dumps(r, sort_keys=True, default=str)))
        unique.append(candidates[0])
    return unique


def _hits_upsert(conn: Connection) -> Any:
    """INSERT ... ON CONFLICT (natural key) DO UPDATE ... WHERE something changed RETURNING.

    Merging rules, written so that loading dates in any order (backfills) gives the same result:
      * first_seen is the earliest run date, last_seen the latest;
      * observed columns (score, title, operator, price...) come from the newest observation, so a
        re-run of an old date does not overwrite fresher facts; a missing published_at does not
        erase a known one;
      * online becomes true only when this observation is strictly newer than the last sighting; a
        re-run of the date a hit was last seen keeps its online flag, because a later run may have
        found it gone (and re-running that later date would not bring it back either);
      * status (the people's workflow) is never touched.
    """
    t = Hit.__table__
    stmt = dialect_insert(conn)(t)
    ex = stmt.excluded
    newer = ex.last_seen >= t.c.last_seen
    new: dict[str, Any] = {name: case((newer, ex[name]), else_=t.c[name]) for name in OBSERVED_COLUMNS}
    new["published_at"] = case(
        (newer, func.coalesce(ex.published_at, t.c.published_at)),
        else_=func.coalesce(t.c.published_at, ex.published_at),
    )
    new["first_seen"] = case((ex.first_seen < t.c.first_seen, ex.first_seen), else_=t.c.first_seen)
    new["last_seen"] = case((newer, ex.last_seen), else_=t.c.last_seen)
    new["online"] = case((ex.last_seen > t.c.last_seen, true()), else_=t.c.online)
    stmt = stmt.on_conflict_do_update(index_elements=list(HIT_KEY), set_=new, where=_changed(t, new))
    return stmt.returning(t.c.id, *(t.c[k] for k in HIT_KEY), t.c.online)


def _event_time(run_date: dt.date) -> dt.datetime:
    # Events written by a load are stamped with the run date, not the clock, like the hits.
    return dt.datetime.combine(run_date, dt.time.min, tzinfo=dt.timezone.utc)


def load_hits(
    engine: Engine,
    priced: pd.DataFrame,
    run_date: dt.date,
    complete_for: Iterable[str] | None = None,
) -> LoadStats:
    """Upsert one run's priced hits, mark vanished hits offline, and record the run; one transaction.

    A hit of a customer in ``complete_for`` that is online, was last seen before ``run_date`` and is
    not in this frame is marked ``online = false`` (never deleted). ``complete_for`` defaults to the
    customers present in the frame: a customer with no rows may simply not have been matched, so
    their hits are only marked offline when the caller says the frame is complete for them.
    Re-loading the same frame for the same date changes no hit row (``inserted == updated ==
    marked_offline == 0``). Going offline or coming back online is recorded in ``hit_events``.
    Raises ValueError when the frame breaks the input contract (see PRICED_COLUMNS) or names an
    image its customer has not registered (run sync_customers first).
    """
    rows = _hit_rows(priced, run_date)
    frame_customers = sorted({r["customer_id"] for r in rows})
    scope = sorted(set(frame_customers) | {check_customer_id(c) for c in (complete_for or ())})
    t = Hit.__table__
    per_customer: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        per_customer[row["customer_id"]]["frame_rows"] += 1

    with engine.begin() as conn:
        known_images = {
            (c, i)
            for c, i in conn.execute(
                select(Image.customer_id, Image.image_id).where(Image.customer_id.in_(frame_customers))
            )
        }
        unknown = sorted({(r["customer_id"], r["image_id"]) for r in rows} - known_images)
        if unknown:
            shown = ", ".join(f"{c}/{i}" for c, i in unknown[:5])
            raise ValueError(f"{len(unknown)} hits name images that are not registered: {shown}")

        # State before the upsert, to tell inserts from updates and to see hits coming back online.
        before: dict[tuple[str, ...], bool] = {
            tuple(r[:4]): bool(r[4])
            for r in conn.execute(
                select(*(t.c[k] for k in HIT_KEY), t.c.online).where(t.c.customer_id.in_(frame_customers))
            )
        }
        inserted = updated = 0
        events: list[dict[str, Any]] = []
        if rows:
            for hit_id, *key, online in conn.execute(_hits_upsert(conn), rows):
                was_online = before.get(tuple(key))
                counter = per_customer[key[0]]
                if was_online is None:
                    inserted += 1
                    counter["inserted"] += 1
                    continue
                updated += 1
                counter["updated"] += 1
                if online and not was_online:
                    events.append({"hit_id": hit_id, "status": "online", "note": f"seen again on {run_date}"})

        # After the upsert every hit in the frame has last_seen >= run_date, so "online and last seen
        # before run_date" is exactly "seen in an earlier run and missing from this one".
        offline = conn.execute(
            update(t)
            .where(and_(t.c.customer_id.in_(scope), t.c.online.is_(true()), t.c.last_seen < run_date))
            .values(online=False)
            .returning(t.c.id, t.c.customer_id, t.c.last_seen)
        ).all()
        for hit_id, customer_id, last_seen in offline:
            per_customer[customer_id]["marked_offline"] += 1
            events.append(
                {"hit_id": hit_id, "status": "offline", "note": f"not found on {run_date}, last seen {last_seen}"}
            )
        if events:
            at = _event_time(run_date)
            events.sort(key=lambda e: e["hit_id"])
            conn.execute(HitEvent.__table__.insert(), [{**e, "at": at} for e in events])

        total = conn.execute(select(func.count()).select_from(t)).scalar_one()
        _record_run(conn, run_date, len(rows), inserted, updated, len(offline), total, per_customer)
        failpoint("load.before_commit")  # crash tests: die with the whole load uncommitted
    return LoadStats(inserted=inserted, updated=updated, marked_offline=len(offline), total=total)


def _record_run(
    conn: Connection,
    run_date: dt.date,
    frame_rows: int,
    inserted: int,
    updated: int,
    marked_offline: int,
    total: int,
    per_customer: Mapping[str, Counter[str]],
) -> None:
    """Upsert the run's row from the data itself, so a re-run of the day writes the same row."""
    rt, ht, et = Run.__table__, Hit.__table__, HitEvent.__table__
    new_hits = conn.execute(select(func.count()).select_from(ht).where(ht.c.first_seen == run_date)).scalar_one()
    went_offline = conn.execute(
        select(func.count()).select_from(et).where(et.c.status == "offline", et.c.at == _event_time(run_date))
    ).scalar_one()
    per = {c: {k: v for k, v in sorted(n.items()) if k == "frame_rows"} for c, n in sorted(per_customer.items())}
    row = {
        "run_date": run_date,
        "frame_rows": frame_rows,
        "new_hits": new_hits,
        "went_offline": went_offline,
        "total_hits": total,
        "stats": json.dumps({"per_customer": per}, sort_keys=True),
    }
    stmt = dialect_insert(conn)(rt)
    new: dict[str, Any] = {k: stmt.excluded[k] for k in row if k != "run_date"}
    conn.execute(stmt.on_conflict_do_update(index_elements=["run_date"], set_=new), row)


def hits_for_customer(engine: Engine, customer_id: str) -> list[dict[str, Any]]:
    """All hits of one customer (and only theirs), most valuable first, as plain dicts."""
    t = Hit.__table__
    query = (
        select(t)
        .where(t.c.customer_id == customer_id)
        .order_by(t.c.license_value_cents.desc(), t.c.id)
    )
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def count_hits(engine: Engine) -> dict[str, int]:
    """Number of hits per customer id; every known customer is listed, with 0 when they have none."""
    ct, t = Customer.__table__, Hit.__table__
    query = (
        select(ct.c.id, func.count(t.c.id))
        .select_from(ct.outerjoin(t, t.c.customer_id == ct.c.id))
        .group_by(ct.c.id)
        .order_by(ct.c.id)
    )
    with engine.connect() as conn:
        return {cid: int(n) for cid, n in conn.execute(query)}


def table_dump(engine: Engine, table: Table, order_by: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every row of a table as dicts in primary-key order: for tests and debugging."""
    cols = [table.c[c] for c in order_by] if order_by else list(table.primary_key.columns)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(*cols)).mappings()]

