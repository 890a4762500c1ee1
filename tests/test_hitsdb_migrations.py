"""The Alembic migrations make exactly the schema the models declare, on SQLite and PostgreSQL.

``alembic upgrade head`` (through ``create_schema``) on an empty database is compared with the
models by Alembic's own autogenerate comparison (tables, columns, types, nullability, server
defaults, indexes, unique and foreign keys): any difference means models.py changed without a
migration. Also: a database made by the pre-migration ``metadata.create_all`` is adopted (stamped,
then upgraded) without losing rows, re-running is a no-op, and the migrations downgrade cleanly.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, inspect, select, text

from conftest import REPO
from copyhunt.hitsdb.models import Hit, metadata
from copyhunt.hitsdb.store import (
    BASELINE_REVISION,
    alembic_config,
    create_schema,
    head_revision,
    make_engine,
    schema_revision,
)

pytest_plugins = ["conftest_pg"]

BASELINE_FILE = "include/copyhunt/hitsdb/migrations/versions/0001_baseline.py"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'hits.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    yield engine
    engine.dispose()


def schema_diff(engine: Engine, target: MetaData = metadata) -> list[Any]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(ctx, target)


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_upgrade_head_gives_exactly_the_models_schema(empty_db: Engine) -> None:
    assert schema_revision(empty_db) == ()
    create_schema(empty_db)
    assert schema_revision(empty_db) == (head_revision(),)
    assert tables(empty_db) == set(metadata.tables) | {"alembic_version"}
    assert schema_diff(empty_db) == []


def test_a_model_change_without_migration_is_detected(empty_db: Engine) -> None:
    """The comparison above can fail: a column added to the models only shows up as a difference."""
    create_schema(empty_db)
    changed = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    from sqlalchemy import Column, String

    changed.tables["hits"].append_column(Column("only_in_models", String(10)))
    diff = schema_diff(empty_db, changed)
    assert [(d[0], d[3].name) for d in diff] == [("add_column", "only_in_models")]


def test_create_schema_twice_is_a_no_op(empty_db: Engine) -> None:
    create_schema(empty_db)
    with empty_db.begin() as conn:
        conn.execute(text("INSERT INTO customers (id, name, email) VALUES ('c1', 'C', 'c@example.org')"))
    create_schema(empty_db)
    with empty_db.connect() as conn:
        assert conn.execute(text("SELECT id FROM customers")).scalars().all() == ["c1"]


def test_downgrade_to_base_and_up_again(empty_db: Engine) -> None:
    create_schema(empty_db)
    with empty_db.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert tables(empty_db) == {"alembic_version"}
    create_schema(empty_db)
    assert schema_diff(empty_db) == []


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)


def _pre_migration_metadata() -> MetaData:
    """models.py as it was when the schema came from metadata.create_all: the version in the parent
    of the commit that added the baseline migration (HEAD's, until that commit exists)."""
    added = _git("log", "--diff-filter=A", "--format=%H", "--", BASELINE_FILE).stdout.split()
    revision = f"{added[-1]}^" if added else "HEAD"
    proc = _git("show", f"{revision}:include/copyhunt/hitsdb/models.py")
    if proc.returncode != 0:
        pytest.skip(f"no git history to read the pre-migration models from: {proc.stderr.strip()}")
    name = "copyhunt_models_pre_migration"
    module = types.ModuleType(name)
    # SQLAlchemy resolves the string annotations (``from __future__ import annotations``) through
    # sys.modules[cls.__module__], so the module has to be registered while its classes are made.
    sys.modules[name] = module
    try:
        exec(compile(proc.stdout, "models_pre_migration.py", "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    return module.metadata


def test_baseline_revision_is_the_pre_migration_schema(empty_db: Engine) -> None:
    create_schema(empty_db, BASELINE_REVISION)
    assert schema_diff(empty_db, _pre_migration_metadata()) == []


def test_pre_migration_database_is_adopted_and_keeps_its_rows(empty_db: Engine) -> None:
    old = _pre_migration_metadata()
    old.create_all(empty_db)  # what make demo did before migrations
    with empty_db.begin() as conn:
        conn.execute(text("INSERT INTO customers (id, name, email) VALUES ('c1', 'C', 'c@example.org')"))
        conn.execute(text("INSERT INTO images (customer_id, image_id) VALUES ('c1', 'i1')"))
        conn.execute(
            old.tables["hits"].insert().values(
                customer_id="c1", image_id="i1", page_url="https://a.test/", image_url="https://a.test/i.jpg",
                score=0.9, first_seen=dt.date(2026, 1, 1), last_seen=dt.date(2026, 1, 2),
            )
        )
    assert "alembic_version" not in tables(empty_db)

    create_schema(empty_db)
    assert schema_revision(empty_db) == (head_revision(),)
    assert schema_diff(empty_db) == []
    with empty_db.connect() as conn:
        row = conn.execute(select(Hit.page_url, Hit.status, Hit.fetched_at, Hit.last_seen)).one()
    assert tuple(row) == ("https://a.test/", "new", None, dt.date(2026, 1, 2))


def test_enrichment_migration_keeps_hits_and_adds_empty_columns(empty_db: Engine) -> None:
    """0003 on a database holding hits: every row kept, the new enrichment columns NULL until the
    next load sees the hit again; downgrading to 0002 removes exactly those columns."""
    create_schema(empty_db, "0002")
    before = {c["name"] for c in inspect(empty_db).get_columns("hits")}
    with empty_db.begin() as conn:
        conn.execute(text("INSERT INTO customers (id, name, email) VALUES ('c1', 'C', 'c@example.org')"))
        conn.execute(text("INSERT INTO images (customer_id, image_id) VALUES ('c1', 'i1')"))
        conn.execute(text(
            "INSERT INTO hits (customer_id, image_id, page_url, image_url, score, first_seen, last_seen, operator_name)"
            " VALUES ('c1', 'i1', 'https://a.test/', 'https://a.test/i.jpg', 0.9, '2026-01-01', '2026-01-02', 'A GmbH')"
        ))
    create_schema(empty_db)
    added = {c["name"] for c in inspect(empty_db).get_columns("hits")} - before
    assert added == {"operator_address", "operator_email", "operator_phone", "operator_role", "usage_since",
                     "usage_since_source", "usage_days", "page_status", "page_online", "attribution_found",
                     "attribution_evidence", "licence_match"}
    with empty_db.connect() as conn:
        row = conn.execute(select(Hit.page_url, Hit.operator_name, *(Hit.__table__.c[n] for n in sorted(added)))).one()
    assert tuple(row) == ("https://a.test/", "A GmbH") + (None,) * len(added)
    with empty_db.begin() as conn:
        command.downgrade(alembic_config(conn), "0002")
    assert {c["name"] for c in inspect(empty_db).get_columns("hits")} == before
    with empty_db.connect() as conn:
        assert conn.execute(text("SELECT operator_name FROM hits")).scalars().all() == ["A GmbH"]
