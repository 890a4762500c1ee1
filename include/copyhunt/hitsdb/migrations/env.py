"""Alembic environment of the hits database.

Programmatic use (what ``copyhunt.hitsdb.store.create_schema`` does) hands an open connection in
``config.attributes["connection"]``; the command line works too, from the repository root::

    alembic -c include/copyhunt/hitsdb/migrations/alembic.ini upgrade head
    alembic -c include/copyhunt/hitsdb/migrations/alembic.ini revision --autogenerate -m "what changed"

in which case the database is ``sqlalchemy.url`` if given (``-x url=...`` also works), else the
configured ``Settings.database_url``. ``--sql`` (offline mode) prints the DDL for a DBA to run.
"""

from __future__ import annotations

from alembic import context

from copyhunt.hitsdb.models import metadata

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from copyhunt.config import load_settings

    return load_settings().database_url


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )


def run_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # The caller owns the connection and its transaction (create_schema: one transaction).
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from copyhunt.hitsdb.store import make_engine

    engine = make_engine(_url())
    try:
        with engine.begin() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
