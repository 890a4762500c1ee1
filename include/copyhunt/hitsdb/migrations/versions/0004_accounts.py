"""Accounts: people sign in with e-mail and password; their mailed links; API token last use;
sessions of a token or of an account.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _inbox_sessions(*, account_sessions: bool) -> None:
    columns = [
        sa.Column("id_sha256", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), sa.ForeignKey("customer_tokens.key_id", ondelete="CASCADE"),
                  nullable=account_sessions),
    ]
    if account_sessions:
        columns.append(sa.Column("account_id", sa.BigInteger(), sa.ForeignKey("accounts.id", ondelete="CASCADE")))
    op.create_table(
        "inbox_sessions",
        *columns,
        sa.Column("customer_id", sa.String(100), sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_inbox_sessions_key_id", "inbox_sessions", ["key_id"])
    op.create_index("ix_inbox_sessions_customer_id", "inbox_sessions", ["customer_id"])
    if account_sessions:
        op.create_index("ix_inbox_sessions_account_id", "inbox_sessions", ["account_id"])


def upgrade() -> None:
    op.add_column("customer_tokens", sa.Column("last_used_at", sa.DateTime(timezone=True)))
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(100), sa.ForeignKey("customers.id", ondelete="CASCADE"),
                  nullable=False, unique=True),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "account_tokens",
        sa.Column("id_sha256", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.BigInteger(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_account_tokens_account_id", "account_tokens", ["account_id"])
    # Sessions last 12 hours and nothing references them: the table is made anew (key_id becomes
    # nullable, account_id appears) rather than altered, which SQLite could only do by a batch copy.
    # Browsers signed in at upgrade time sign in again.
    op.drop_table("inbox_sessions")
    _inbox_sessions(account_sessions=True)


def downgrade() -> None:
    op.drop_table("inbox_sessions")
    _inbox_sessions(account_sessions=False)
    op.drop_table("account_tokens")
    op.drop_table("accounts")
    op.drop_column("customer_tokens", "last_used_at")
