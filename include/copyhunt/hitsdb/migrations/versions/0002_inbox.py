"""Inbox: sign-in tokens and sessions, evidence fetch time, who changed a hit, status index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, no batch mode: SQLite (>= 3.35) adds and drops these columns in place, while a
# batch "move and copy" of hits would, with foreign keys on, cascade-delete its hit_events.


def upgrade() -> None:
    op.add_column("hits", sa.Column("fetched_at", sa.DateTime(timezone=True)))
    op.create_index("ix_hits_customer_status", "hits", ["customer_id", "status"])
    op.add_column("hit_events", sa.Column("actor", sa.String(64)))
    op.create_table(
        "customer_tokens",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("customer_id", sa.String(100), sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("label", sa.String(500)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_customer_tokens_customer_id", "customer_tokens", ["customer_id"])
    op.create_table(
        "inbox_sessions",
        sa.Column("id_sha256", sa.String(64), primary_key=True),
        sa.Column(
            "key_id", sa.String(32), sa.ForeignKey("customer_tokens.key_id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("customer_id", sa.String(100), sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_inbox_sessions_key_id", "inbox_sessions", ["key_id"])
    op.create_index("ix_inbox_sessions_customer_id", "inbox_sessions", ["customer_id"])


def downgrade() -> None:
    op.drop_table("inbox_sessions")
    op.drop_table("customer_tokens")
    op.drop_column("hit_events", "actor")
    op.drop_index("ix_hits_customer_status", table_name="hits")
    op.drop_column("hits", "fetched_at")
