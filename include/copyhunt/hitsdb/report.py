"""What the hits database says about runs, for the data team (the Airflow plugin's run report).

Unlike ``workflow`` this is not scoped to a customer: it is for operators, behind Airflow's own
sign-in, and it shows counts only (no page titles or URLs).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Engine, func, inspect, select

from copyhunt.hitsdb.models import Digest, Run

__all__ = ["run_overview", "run_db_facts"]


def _has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("runs")


def run_overview(engine: Engine, limit: int = 90) -> list[dict[str, Any]]:
    """The newest ``limit`` runs with their hit figures and how many digests went out."""
    if not _has_schema(engine):
        return []
    r, d = Run.__table__, Digest.__table__
    sent = (
        select(d.c.run_date, func.count().label("digests"))
        .group_by(d.c.run_date)
        .subquery()
    )
    query = (
        select(r.c.run_date, r.c.frame_rows, r.c.new_hits, r.c.went_offline, r.c.total_hits,
               func.coalesce(sent.c.digests, 0).label("digests"))
        .select_from(r.outerjoin(sent, sent.c.run_date == r.c.run_date))
        .order_by(r.c.run_date.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def run_db_facts(engine: Engine, run_date: dt.date) -> dict[str, Any] | None:
    """One run's row (figures, per-customer counts) and its digests; None if it was never loaded."""
    if not _has_schema(engine):
        return None
    with engine.connect() as conn:
        row = conn.execute(select(Run.__table__).where(Run.run_date == run_date)).mappings().first()
        if row is None:
            return None
        digests = conn.execute(
            select(Digest.customer_id, Digest.sent_via, Digest.hit_count)
            .where(Digest.run_date == run_date)
            .order_by(Digest.customer_id)
        ).mappings().all()
    try:
        stats = json.loads(row["stats"] or "{}")
    except ValueError:
        stats = {}
    return {
        "run_date": row["run_date"],
        "frame_rows": row["frame_rows"],
        "new_hits": row["new_hits"],
        "went_offline": row["went_offline"],
        "total_hits": row["total_hits"],
        "per_customer": stats.get("per_customer", {}),
        "digests": [dict(x) for x in digests],
    }
