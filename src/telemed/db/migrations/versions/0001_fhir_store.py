"""FHIR store: resources, versions, token index, accounts.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
SeqId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "resource",
        sa.Column("resource_type", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("has_blobs", sa.Boolean, nullable=False),
        sa.Column("content", Json, nullable=True),
    )
    op.create_index("ix_resource_type_updated", "resource", ["resource_type", "last_updated"])
    op.create_table(
        "resource_history",
        sa.Column("seq", SeqId, primary_key=True, autoincrement=True),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("has_blobs", sa.Boolean, nullable=False),
        sa.Column("content", Json, nullable=True),
        sa.UniqueConstraint("resource_type", "id", "version_id", name="uq_history_version"),
    )
    op.create_index("ix_history_type_seq", "resource_history", ["resource_type", "seq"])
    op.create_table(
        "search_token",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("system", sa.String(255), nullable=True),
        sa.Column("value", sa.String(255), nullable=True),
    )
    op.create_index("ix_token_lookup", "search_token", ["resource_type", "param", "value", "system"])
    op.create_index("ix_token_owner", "search_token", ["resource_type", "resource_id"])
    op.create_table(
        "account",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("practitioner_id", sa.String(64), nullable=True),
        sa.Column("roles", Json, nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("account")
    op.drop_table("search_token")
    op.drop_table("resource_history")
    op.drop_table("resource")
