"""What the inbox reads and writes: one customer's hits, filtered and sorted; one hit and its
history; the workflow actions ("licensed", "not mine", "claim", "approve"), on one hit or on many
at once (``apply_bulk``); the digest opt-out.

Every function takes the customer id and filters on it in SQL, so tenant isolation is part of each
query rather than a check the caller has to remember: a hit id of another customer is simply not
found. Filter values are bound parameters, never SQL text.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select, update

from copyhunt.hitsdb.models import TITLE_MAX, Customer, Hit, HitEvent, Image
from copyhunt.hitsdb.store import bound_text

__all__ = [
    "AUTHORISED",
    "ACTIONS",
    "STATUSES",
    "SORTS",
    "ActionResult",
    "HitPage",
    "HitQuery",
    "BULK_MAX",
    "BulkResult",
    "apply_action",
    "apply_bulk",
    "customer_domains",
    "find_hits",
    "get_customer",
    "get_hit",
    "get_image",
    "hit_history",
    "set_digest_opt_out",
]

# Workflow states a person sets; "new" is where the loader leaves every hit, except those on the
# customer's own sites, which are AUTHORISED (copyhunt.coverage).
AUTHORISED = "authorised"
STATUSES: tuple[str, ...] = ("new", "claimed", "licensed", "not_mine", AUTHORISED)
# Action name (form field / API) -> the status it sets.
ACTIONS: dict[str, str] = {"claim": "claimed", "licensed": "licensed", "not_mine": "not_mine", "approve": AUTHORISED,
                           "reopen": "new"}
# Shown unless asked for by status: an authorised use is not an infringement to work on.
HIDDEN_BY_DEFAULT = (AUTHORISED,)
BULK_MAX = 5000  # hits one bulk action changes: a filter's worth, in one transaction
SORTS: tuple[str, ...] = ("value", "date", "score")
MAX_PAGE = 200
NOTE_MAX = 500  # free text typed with an action


@dataclass(frozen=True)
class HitQuery:
    """Filters and order of an inbox listing; invalid values raise ValueError (a 422 on the web)."""

    status: str | None = None  # None: every status but the authorised ones
    domain: str | None = None  # the page's host or its registrable domain, exactly
    min_score: float | None = None
    new_since: dt.date | None = None  # first seen on or after
    sort: str = "value"  # value: most valuable first; date: newest first; score: best match first
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if self.sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}")
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise ValueError("min_score must be between 0 and 1")
        if not 1 <= self.limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        if self.offset < 0:
            raise ValueError("offset must not be negative")
        if self.domain is not None and len(self.domain) > 253:
            raise ValueError("domain is longer than a DNS name can be")


@dataclass(frozen=True)
class HitPage:
    hits: list[dict[str, Any]]
    total: int  # hits matching the filters, over all pages
    claimable_cents: dict[str, int] = field(default_factory=dict)  # currency -> sum, unlicensed only


@dataclass(frozen=True)
class ActionResult:
    hit_id: int
    old_status: str
    status: str
    recorded: bool  # False when the action changed nothing (same status, no note)


def _conditions(customer_id: str, q: HitQuery) -> list[Any]:
    conds: list[Any] = [Hit.customer_id == customer_id]
    if q.status is not None:
        conds.append(Hit.status == q.status)
    else:
        conds.append(Hit.status.not_in(HIDDEN_BY_DEFAULT))
    if q.domain:
        conds.append(or_(Hit.domain == q.domain, Hit.registrable_domain == q.domain))
    if q.min_score is not None:
        conds.append(Hit.score >= q.min_score)
    if q.new_since is not None:
        conds.append(Hit.first_seen >= q.new_since)
    return conds


_ORDER = {
    "value": (Hit.license_value_cents.desc(), Hit.first_seen.desc(), Hit.id.desc()),
    "date": (Hit.first_seen.desc(), Hit.license_value_cents.desc(), Hit.id.desc()),
    "score": (Hit.score.desc(), Hit.license_value_cents.desc(), Hit.id.desc()),
}


def find_hits(engine: Engine, customer_id: str, query: HitQuery) -> HitPage:
    """One page of a customer's hits, filtered and sorted, with totals over every page."""
    t = Hit.__table__
    conds = _conditions(customer_id, query)
    with engine.connect() as conn:
        rows = conn.execute(
            select(t).where(*conds).order_by(*_ORDER[query.sort]).limit(query.limit).offset(query.offset)
        ).mappings()
        hits = [dict(r) for r in rows]
        total = conn.execute(select(func.count()).select_from(t).where(*conds)).scalar_one()
        sums = conn.execute(
            select(t.c.currency, func.sum(t.c.license_value_cents))
            .where(*conds, t.c.licensed.is_(False))
            .group_by(t.c.currency)
            .order_by(t.c.currency)
        ).all()
    return HitPage(hits=hits, total=int(total), claimable_cents={c: int(s or 0) for c, s in sums})


def customer_domains(engine: Engine, customer_id: str, limit: int = 500) -> list[str]:
    """The registrable domains the customer's hits are on, for the domain filter."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Hit.registrable_domain)
            .where(Hit.customer_id == customer_id, Hit.registrable_domain.is_not(None))
            .distinct()
            .order_by(Hit.registrable_domain)
            .limit(limit)
        ).scalars()
        return list(rows)


def _first_row(engine: Engine, query: Any) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def get_hit(engine: Engine, customer_id: str, hit_id: int) -> dict[str, Any] | None:
    """The customer's hit ``hit_id`` with every column; None when it is not theirs (or does not exist)."""
    return _first_row(engine, select(Hit.__table__).where(Hit.id == hit_id, Hit.customer_id == customer_id))


def get_image(engine: Engine, customer_id: str, image_id: str) -> dict[str, Any] | None:
    """A registered image of the customer (title, sha256 of its bytes in the blob store)."""
    return _first_row(engine, select(Image.__table__).where(Image.customer_id == customer_id, Image.image_id == image_id))


def get_customer(engine: Engine, customer_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(Customer.id, Customer.name, Customer.email, Customer.digest_opt_out).where(Customer.id == customer_id)
        ).mappings().first()
    return dict(row) if row is not None else None


def hit_history(engine: Engine, customer_id: str, hit_id: int) -> list[dict[str, Any]]:
    """The hit's events, oldest first (empty for a hit of another customer)."""
    e, h = HitEvent.__table__, Hit.__table__
    with engine.connect() as conn:
        rows = conn.execute(
            select(e.c.id, e.c.at, e.c.status, e.c.note, e.c.actor)
            .select_from(e.join(h, h.c.id == e.c.hit_id))
            .where(and_(h.c.id == hit_id, h.c.customer_id == customer_id))
            .order_by(e.c.at, e.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def apply_action(
    engine: Engine,
    customer_id: str,
    hit_id: int,
    action: str,
    actor: str,
    note: str | None = None,
    now: dt.datetime | None = None,
) -> ActionResult | None:
    """Set the hit's workflow status for an action and record it in hit_events; one transaction.

    Returns None when the customer has no such hit. Repeating an action without a note records
    nothing new (a double-clicked button is one event).
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    status = ACTIONS[action]
    note = bound_text(note, min(NOTE_MAX, TITLE_MAX))
    now = now or dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        row = conn.execute(
            select(Hit.status).where(Hit.id == hit_id, Hit.customer_id == customer_id).with_for_update()
        ).first()
        if row is None:
            return None
        old = row.status
        if old == status and not note:
            return ActionResult(hit_id, old, status, recorded=False)
        if old != status:
            conn.execute(
                update(Hit).where(Hit.id == hit_id, Hit.customer_id == customer_id).values(status=status)
            )
        conn.execute(
            HitEvent.__table__.insert().values(hit_id=hit_id, at=now, status=status, note=note, actor=actor)
        )
    return ActionResult(hit_id, old, status, recorded=True)


def set_digest_opt_out(engine: Engine, customer_id: str, opt_out: bool) -> None:
    with engine.begin() as conn:
        conn.execute(update(Customer).where(Customer.id == customer_id).values(digest_opt_out=opt_out))


@dataclass(frozen=True)
class BulkResult:
    action: str
    status: str
    changed: int  # hits whose status changed, each with its history entry
    unchanged: int  # hits that had that status already
    not_found: int  # ids that are not the customer's hits


def apply_bulk(
    engine: Engine,
    customer_id: str,
    action: str,
    actor: str,
    hit_ids: list[int] | None = None,
    query: HitQuery | None = None,
    note: str | None = None,
    now: dt.datetime | None = None,
) -> BulkResult:
    """One action on many hits, in one transaction: the ``hit_ids`` given, or every hit ``query``
    finds (on all its pages). Each hit that changes gets its own history entry; another
    customer's ids are counted as not found. Raises ValueError for an unknown action or for more
    than BULK_MAX hits (narrow the filter)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    if (hit_ids is None) == (query is None):
        raise ValueError("give either hit ids or a query")
    status = ACTIONS[action]
    note = bound_text(note, min(NOTE_MAX, TITLE_MAX))
    now = now or dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        if hit_ids is not None:
            wanted = sorted(set(hit_ids))
            if len(wanted) > BULK_MAX:
                raise ValueError(f"at most {BULK_MAX} hits at once")
            rows = conn.execute(select(Hit.id, Hit.status).where(Hit.customer_id == customer_id, Hit.id.in_(wanted))).all()
            not_found = len(wanted) - len(rows)
        else:
            rows = conn.execute(select(Hit.id, Hit.status).where(*_conditions(customer_id, query))
                                .order_by(Hit.id).limit(BULK_MAX + 1)).all()
            if len(rows) > BULK_MAX:
                raise ValueError(f"the filter finds more than {BULK_MAX} hits; narrow it")
            not_found = 0
        changing = sorted(r.id for r in rows if r.status != status)
        if changing:
            conn.execute(update(Hit).where(Hit.customer_id == customer_id, Hit.id.in_(changing)).values(status=status))
            conn.execute(HitEvent.__table__.insert(),
                         [{"hit_id": i, "at": now, "status": status, "note": note, "actor": actor} for i in changing])
    return BulkResult(action, status, len(changing), len(rows) - len(changing), not_found)
