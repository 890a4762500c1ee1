"""Own sites: the domains where a customer's images are used by the customer or with their leave.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "own_sites",
        sa.Column("customer_id", sa.String(100), sa.ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("domain", sa.String(253), primary_key=True),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("note", sa.String(500)),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("own_sites")
