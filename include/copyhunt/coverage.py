"""Uses a customer has allowed: their own sites, and their licences, applied to the hits.

A customer's **own sites** (table ``own_sites``) are domains where their images are used by them or
with their leave: their portfolio, their agency, a client. A hit on such a domain, or on one of its
subdomains, is never an infringement: its workflow status becomes ``authorised``, with a history
entry saying why. That happens

* when the site is added (in settings, by "approve this use" on a hit, by an import from the site,
  or from the command line): every open hit on it changes at once (``add_own_site``);
* when the daily load finds new hits on it (``authorise_own_site_hits``, called by the load stage).

A new or changed **licence** does the same for the open hits it covers, with status ``licensed``
(``apply_licence``), using the pricing stage's own licence check so the two never disagree.

"Open" means a status no person has decided yet: ``new`` or ``claimed``. A hit someone marked
licensed or not mine stays as they left it. Removing an own site changes no hit; the history says
why each one was authorised, and a person can reopen it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Iterable

from sqlalchemy import Connection, Engine, and_, delete, or_, select, update

from copyhunt.hitsdb.models import NAME_MAX, Customer, Hit, HitEvent, Licence, OwnSite
from copyhunt.hitsdb.workflow import AUTHORISED

__all__ = [
    "OPEN_STATUSES",
    "OWN_SITE_STATUS",
    "SITE_SOURCES",
    "OwnSiteAdded",
    "add_own_site",
    "apply_licence",
    "authorise_own_site_hits",
    "domain_of",
    "list_own_sites",
    "remove_own_site",
]

OWN_SITE_STATUS = AUTHORISED  # the status a hit on a customer's own site takes
OPEN_STATUSES = ("new", "claimed")
SITE_SOURCES = ("settings", "approve", "import", "cli")
MAX_OWN_SITES = 500  # per customer: a list a person keeps by hand
_HOST_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$")


def domain_of(text: str) -> str:
    """The domain a person means by ``text``: "https://www.Example.com/shop" -> "example.com".

    Raises ValueError for anything that is not a DNS name (an IP address, a word, a path)."""
    host = (text or "").strip().lower()
    if "://" in host:  # a pasted address: its host is what is meant
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0].rstrip(".")
    try:
        host = host.encode("idna").decode("ascii") if host and not host.isascii() else host
    except UnicodeError:
        raise ValueError("that is not a domain name (such as example.com)") from None
    if host.startswith("www."):
        host = host[4:]
    if not _HOST_RE.match(host):
        raise ValueError("that is not a domain name (such as example.com)")
    return host


def _on_site(domain: str):
    """SQL: the hit's page is on ``domain`` or a subdomain of it. ``domain`` passed domain_of, so it
    holds only [a-z0-9.-] and the LIKE pattern needs no escaping; it is still a bound parameter."""
    return or_(Hit.domain == domain, Hit.domain.like(f"%.{domain}"), Hit.registrable_domain == domain)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _set_status(conn: Connection, hit_ids: list[int], status: str, note: str, actor: str | None, at: dt.datetime) -> int:
    if not hit_ids:
        return 0
    conn.execute(update(Hit).where(Hit.id.in_(hit_ids)).values(status=status))
    conn.execute(HitEvent.__table__.insert(),
                 [{"hit_id": i, "at": at, "status": status, "note": note[:NAME_MAX], "actor": actor} for i in sorted(hit_ids)])
    return len(hit_ids)


def _authorise_open_hits(conn: Connection, customer_id: str, domain: str, actor: str | None, at: dt.datetime) -> int:
    ids = list(conn.execute(select(Hit.id).where(
        Hit.customer_id == customer_id, Hit.status.in_(OPEN_STATUSES), _on_site(domain))).scalars())
    return _set_status(conn, ids, OWN_SITE_STATUS, f"on your own site {domain}", actor, at)


@dataclass(frozen=True)
class OwnSiteAdded:
    domain: str
    added: bool  # False: it was on the list already
    hits_authorised: int  # open hits on it that changed to "authorised"


def add_own_site(engine: Engine, customer_id: str, text: str, source: str, actor: str | None,
                 note: str | None = None, now: dt.datetime | None = None) -> OwnSiteAdded:
    """Put a domain on the customer's own sites and authorise the open hits on it; one transaction.

    Idempotent: adding a listed domain again adds nothing (and authorises any open hit on it that
    a load found since). Raises ValueError for a text that is not a domain, or a full list, and
    LookupError for an unknown customer."""
    if source not in SITE_SOURCES:
        raise ValueError(f"source must be one of {', '.join(SITE_SOURCES)}")
    domain = domain_of(text)
    now = now or _now()
    with engine.begin() as conn:
        if conn.execute(select(Customer.id).where(Customer.id == customer_id)).first() is None:
            raise LookupError(f"no customer {customer_id!r}")
        listed = set(conn.execute(select(OwnSite.domain).where(OwnSite.customer_id == customer_id)).scalars())
        added = domain not in listed
        if added:
            if len(listed) >= MAX_OWN_SITES:
                raise ValueError(f"the list of own sites is full ({MAX_OWN_SITES} domains)")
            conn.execute(OwnSite.__table__.insert().values(
                customer_id=customer_id, domain=domain, source=source,
                note=" ".join((note or "").split())[:NAME_MAX] or None, added_at=now))
        changed = _authorise_open_hits(conn, customer_id, domain, actor, now)
    return OwnSiteAdded(domain, added, changed)


def remove_own_site(engine: Engine, customer_id: str, domain: str) -> bool:
    """Take a domain off the list; False when it was not on it. Hits keep their status (see top)."""
    with engine.begin() as conn:
        gone = conn.execute(delete(OwnSite).where(OwnSite.customer_id == customer_id, OwnSite.domain == domain))
    return gone.rowcount > 0


def list_own_sites(engine: Engine, customer_id: str) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(OwnSite.domain, OwnSite.source, OwnSite.note, OwnSite.added_at)
                            .where(OwnSite.customer_id == customer_id).order_by(OwnSite.domain)).mappings()
        return [dict(r) for r in rows]


def authorise_own_site_hits(engine: Engine, customer_ids: Iterable[str], run_date: dt.date) -> int:
    """After a load: open hits on the customers' own sites become authorised. The events carry the
    run date, like the load's own, so re-running the day adds nothing."""
    at = dt.datetime.combine(run_date, dt.time.min, tzinfo=dt.timezone.utc)
    changed = 0
    with engine.begin() as conn:
        sites = conn.execute(select(OwnSite.customer_id, OwnSite.domain)
                             .where(OwnSite.customer_id.in_(sorted(set(customer_ids))))
                             .order_by(OwnSite.customer_id, OwnSite.domain)).all()
        for customer_id, domain in sites:
            changed += _authorise_open_hits(conn, customer_id, domain, None, at)
    return changed


def apply_licence(engine: Engine, customer_id: str, licence_id: str, actor: str | None, now: dt.datetime | None = None) -> int:
    """Open hits of the customer that the licence covers (the pricing check, on the day the hit was
    last seen) change to "licensed", each with a history entry; returns how many changed."""
    from copyhunt.demo.customers import LicenceTerms
    from copyhunt.pricing import check_licences

    now = now or _now()
    with engine.begin() as conn:
        lic = conn.execute(select(Licence.__table__).where(Licence.id == licence_id, Licence.customer_id == customer_id)).first()
        if lic is None or lic.valid_from is None or lic.valid_to is None:
            return 0
        terms = LicenceTerms(lic.id, customer_id, lic.licensee_domain or "", tuple(json.loads(lic.image_ids or "[]")),
                             lic.valid_from, lic.valid_to, lic.licensee_operator or None)
        open_hits = conn.execute(select(Hit.id, Hit.image_id, Hit.domain, Hit.operator_name, Hit.last_seen).where(
            and_(Hit.customer_id == customer_id, Hit.status.in_(OPEN_STATUSES)))).all()
        covered = [h.id for h in open_hits
                   if check_licences([terms], h.image_id, h.domain or "", h.operator_name, h.last_seen).licence is not None]
        return _set_status(conn, covered, "licensed", f"covered by licence {licence_id}", actor, now)
