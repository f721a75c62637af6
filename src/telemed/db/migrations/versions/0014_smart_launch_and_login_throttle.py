"""SMART patient launch context, OpenID Connect nonces and login throttling per client address.

- ``account.patient_id``: the Patient a patient-role account is (its own launch context);
- ``oauth_code.patient_id`` / ``oauth_code.nonce``: the launch's patient and the OpenID Connect
  nonce, carried from the authorization request to the token response;
- ``refresh_token.patient_id``: the launch's patient, kept by the refreshed tokens;
- ``login_throttle``: failed sign-ins per client address in a window, shared by every instance.

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("account", sa.Column("patient_id", sa.String(64), nullable=True))
    op.add_column("oauth_code", sa.Column("patient_id", sa.String(64), nullable=True))
    op.add_column("oauth_code", sa.Column("nonce", sa.String(512), nullable=True))
    op.add_column("refresh_token", sa.Column("patient_id", sa.String(64), nullable=True))
    op.create_table(
        "login_throttle",
        sa.Column("address", sa.String(64), primary_key=True),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_login_throttle_window", "login_throttle", ["window_start"])


def downgrade() -> None:
    op.drop_table("login_throttle")
    with op.batch_alter_table("refresh_token") as batch:
        batch.drop_column("patient_id")
    with op.batch_alter_table("oauth_code") as batch:
        batch.drop_column("nonce")
        batch.drop_column("patient_id")
    with op.batch_alter_table("account") as batch:
        batch.drop_column("patient_id")
