"""Authentication: password history, lockout, TOTP, recovery codes, token revocation.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("password_history", Json, nullable=True))
        batch.add_column(sa.Column("password_changed", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("totp_secret", sa.String(64), nullable=True))
        batch.add_column(sa.Column("totp_enabled", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("recovery_codes", Json, nullable=True))
        batch.add_column(sa.Column("tokens_valid_after", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "revoked_token",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_revoked_token_expires", "revoked_token", ["expires"])


def downgrade() -> None:
    op.drop_table("revoked_token")
    with op.batch_alter_table("account") as batch:
        for column in (
            "password_history", "password_changed", "failed_logins", "locked_until",
            "totp_secret", "totp_enabled", "recovery_codes", "tokens_valid_after",
        ):  # fmt: skip
            batch.drop_column(column)
