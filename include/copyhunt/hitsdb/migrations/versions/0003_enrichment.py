"""Hits: the rest of the enrichment (operator address/e-mail/phone/role, usage period, page
status, attribution evidence) and the licence check's evidence.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# All nullable, no defaults: hits loaded before this revision simply have no value until the next
# run that sees them again. Plain ALTER TABLE as in 0002 (no batch copy of hits on SQLite).
COLUMNS = (
    ("operator_address", sa.String(500)),
    ("operator_email", sa.String(500)),
    ("operator_phone", sa.String(64)),
    ("operator_role", sa.String(100)),
    ("usage_since", sa.Date()),
    ("usage_since_source", sa.String(100)),
    ("usage_days", sa.Integer()),
    ("page_status", sa.Integer()),
    ("page_online", sa.Boolean()),
    ("attribution_found", sa.Boolean()),
    ("attribution_evidence", sa.String(500)),
    ("licence_match", sa.Text()),
)


def upgrade() -> None:
    for name, type_ in COLUMNS:
        op.add_column("hits", sa.Column(name, type_))


def downgrade() -> None:
    for name, _type in reversed(COLUMNS):
        op.drop_column("hits", name)
