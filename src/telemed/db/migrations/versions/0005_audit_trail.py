"""Audit trail: append-only event and seal tables (triggers reject UPDATE, DELETE and TRUNCATE).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
SeqId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TABLES = ("audit_event", "audit_seal")


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("seq", SeqId, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("recorded", sa.DateTime(timezone=True), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("organization", sa.String(64), nullable=True),
        sa.Column("patient", sa.String(64), nullable=True),
        sa.Column("action", sa.String(1), nullable=False),
        sa.Column("interaction", sa.String(40), nullable=False),
        sa.Column("outcome", sa.String(2), nullable=False),
        sa.Column("break_glass", sa.String(512), nullable=True),
        sa.Column("content", Json, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_recorded", "audit_event", ["recorded"])
    op.create_index("ix_audit_user", "audit_event", ["username", "recorded"])
    op.create_index("ix_audit_patient", "audit_event", ["patient", "recorded"])
    op.create_index("ix_audit_org", "audit_event", ["organization", "recorded"])
    op.create_table(
        "audit_seal",
        sa.Column("seq", SeqId, primary_key=True),
        sa.Column("chain_hash", sa.String(64), nullable=False),
        sa.Column("sealed", sa.DateTime(timezone=True), nullable=False),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION telemed_append_only() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'the audit trail is append-only (% on %)', TG_OP, TG_TABLE_NAME; END; $$ LANGUAGE plpgsql"
        )
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION telemed_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION telemed_append_only()"
            )
    else:
        for table in TABLES:
            for event in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"
                )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS telemed_append_only()")
    op.drop_table("audit_seal")
    op.drop_table("audit_event")
