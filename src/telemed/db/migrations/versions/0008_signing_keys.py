"""Signing keys of clinical reports (Ed25519, one active key per user).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_key",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("private_key_encrypted", sa.String(255), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_signing_key_username", "signing_key", ["username"])
    # A partial unique index: both SQLite (3.8+) and PostgreSQL have them.
    op.create_index(
        "ux_signing_key_active",
        "signing_key",
        ["username"],
        unique=True,
        sqlite_where=sa.text("retired IS NULL"),
        postgresql_where=sa.text("retired IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("signing_key")
