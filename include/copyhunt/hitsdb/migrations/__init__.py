"""Alembic migrations of the hits database (run by ``copyhunt.hitsdb.store.create_schema``)."""
