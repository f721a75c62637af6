"""Access rules: resource owner institution, access grants, account institution.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SeqId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("resource") as batch:
        batch.add_column(sa.Column("owner_org", sa.String(64), nullable=True))
    op.create_index("ix_resource_owner_org", "resource", ["resource_type", "owner_org"])
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("organization_id", sa.String(64), nullable=True))
    op.create_table(
        "access_grant",
        sa.Column("id", SeqId, primary_key=True, autoincrement=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("grantee_kind", sa.String(16), nullable=False),
        sa.Column("grantee_id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(140), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_grant_patient", "access_grant", ["patient_id", "grantee_kind", "grantee_id"])
    op.create_index("ix_grant_grantee", "access_grant", ["grantee_kind", "grantee_id", "patient_id"])
    op.create_index("ix_grant_source", "access_grant", ["source"])


def downgrade() -> None:
    op.drop_table("access_grant")
    op.drop_index("ix_resource_owner_org", "resource")
    with op.batch_alter_table("resource") as batch:
        batch.drop_column("owner_org")
    with op.batch_alter_table("account") as batch:
        batch.drop_column("organization_id")
