"""The registry of truth: images' source, upload and withdrawal, size and near-duplicate; a
licence's licensee operator; a customer's rate-card overrides.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# All nullable, no defaults: rows synced before this revision are "seed" images without an upload
# time, which copyhunt.registry treats as registered long ago and never withdrawn.
IMAGE_COLUMNS = (
    ("source_kind", sa.String(100)),
    ("source_url", sa.String(1000)),
    ("uploaded_at", sa.DateTime(timezone=True)),
    ("withdrawn_at", sa.DateTime(timezone=True)),
    ("width", sa.Integer()),
    ("height", sa.Integer()),
    ("whole_phash", sa.BigInteger()),
    ("near_duplicate_of", sa.String(100)),
)


def upgrade() -> None:
    for name, type_ in IMAGE_COLUMNS:
        op.add_column("images", sa.Column(name, type_))
    op.add_column("licences", sa.Column("licensee_operator", sa.String(500)))
    op.add_column("customers", sa.Column("rate_card", sa.Text()))


def downgrade() -> None:
    op.drop_column("customers", "rate_card")
    op.drop_column("licences", "licensee_operator")
    for name, _type in reversed(IMAGE_COLUMNS):
        op.drop_column("images", name)
