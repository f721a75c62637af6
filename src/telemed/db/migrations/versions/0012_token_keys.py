"""Access-token signing keys (RS256, published as a JWK Set) and OAuth refresh tokens.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "token_key",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("private_key_encrypted", sa.Text, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired", sa.DateTime(timezone=True), nullable=True),
        sa.Column("publish_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("longest_expiry", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "refresh_token",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("scopes", Json, nullable=False),
        sa.Column("issued", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked", sa.DateTime(timezone=True), nullable=True),
        sa.Column("access_jti", sa.String(64), nullable=True),
        sa.Column("access_expires", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_refresh_token_family", "refresh_token", ["family"])
    op.create_index("ix_refresh_token_username", "refresh_token", ["username"])


def downgrade() -> None:
    op.drop_table("refresh_token")
    op.drop_table("token_key")
