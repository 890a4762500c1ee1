"""Baseline: the hits database as ``metadata.create_all`` made it before migrations existed.

A database created that way has these tables and no ``alembic_version``; ``create_schema`` stamps
it at this revision and upgrades it from here.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# As in models.py: bigint ids on PostgreSQL, INTEGER (the auto-incrementing rowid) on SQLite.
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("email", sa.String(500), nullable=False),
        sa.Column("digest_opt_out", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "images",
        sa.Column("customer_id", sa.String(100), sa.ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("image_id", sa.String(100), primary_key=True),
        sa.Column("title", sa.String(2000)),
        sa.Column("sha256", sa.String(64)),
        sa.Column("path", sa.String(2000)),
    )
    op.create_table(
        "licences",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("customer_id", sa.String(100), sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("licensee_domain", sa.String(253), nullable=False),
        sa.Column("image_ids", sa.Text(), nullable=False),
        sa.Column("valid_from", sa.Date()),
        sa.Column("valid_to", sa.Date()),
    )
    op.create_index("ix_licences_customer_id", "licences", ["customer_id"])
    op.create_table(
        "hits",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(100), nullable=False),
        sa.Column("image_id", sa.String(100), nullable=False),
        sa.Column("page_url", sa.String(1000), nullable=False),
        sa.Column("image_url", sa.String(1000), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("page_title", sa.String(2000)),
        sa.Column("domain", sa.String(253)),
        sa.Column("registrable_domain", sa.String(253)),
        sa.Column("operator_name", sa.String(500)),
        sa.Column("operator_source", sa.String(100)),
        sa.Column("published_at", sa.Date()),
        sa.Column("published_source", sa.String(100)),
        sa.Column("first_seen", sa.Date(), nullable=False),
        sa.Column("last_seen", sa.Date(), nullable=False),
        sa.Column("online", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("licensed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("licence_id", sa.String(100)),
        sa.Column("license_value_cents", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("currency", sa.String(3), server_default="EUR", nullable=False),
        sa.Column("value_breakdown", sa.Text(), server_default="{}", nullable=False),
        sa.Column("region", sa.Text()),
        sa.Column("image_sha256", sa.String(64)),
        sa.Column("html_sha256", sa.String(64)),
        sa.Column("status", sa.String(32), server_default="new", nullable=False),
        sa.UniqueConstraint("customer_id", "image_id", "page_url", "image_url", name="uq_hits_natural_key"),
        sa.ForeignKeyConstraint(
            ["customer_id", "image_id"], ["images.customer_id", "images.image_id"], ondelete="CASCADE"
        ),
    )
    op.create_index("ix_hits_customer_first_seen", "hits", ["customer_id", "first_seen"])
    op.create_index("ix_hits_customer_online_last_seen", "hits", ["customer_id", "online", "last_seen"])
    op.create_table(
        "hit_events",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("hit_id", sa.BigInteger(), sa.ForeignKey("hits.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("note", sa.String(2000)),
    )
    op.create_index("ix_hit_events_hit_id", "hit_events", ["hit_id"])
    op.create_table(
        "runs",
        sa.Column("run_date", sa.Date(), primary_key=True),
        sa.Column("frame_rows", sa.Integer(), nullable=False),
        sa.Column("new_hits", sa.Integer(), nullable=False),
        sa.Column("went_offline", sa.Integer(), nullable=False),
        sa.Column("total_hits", sa.Integer(), nullable=False),
        sa.Column("stats", sa.Text(), nullable=False),
    )
    op.create_table(
        "digests",
        sa.Column("customer_id", sa.String(100), sa.ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("run_date", sa.Date(), primary_key=True),
        sa.Column("sent_via", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(500), nullable=False),
        sa.Column("path", sa.String(2000)),
        sa.Column("hit_count", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    for table in ("digests", "runs", "hit_events", "hits", "licences", "images", "customers"):
        op.drop_table(table)
