"""Search index tables, one per parameter type, and search snapshots; drops the interim token index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")

TABLES = {
    "idx_string": ([sa.Column("value", sa.String(255)), sa.Column("exact", sa.String(255))], ["value"]),
    "idx_token": (
        [sa.Column("system", sa.String(255)), sa.Column("value", sa.String(255)), sa.Column("text", sa.String(255))],
        ["value", "system"],
    ),
    "idx_reference": (
        [
            sa.Column("target_type", sa.String(64)),
            sa.Column("target_id", sa.String(64)),
            sa.Column("url", sa.String(512)),
        ],
        ["target_id", "target_type"],
    ),
    "idx_date": (
        [sa.Column("low", sa.DateTime(timezone=True)), sa.Column("high", sa.DateTime(timezone=True))],
        ["low", "high"],
    ),
    "idx_number": ([sa.Column("value", sa.Float)], ["value"]),
    "idx_quantity": (
        [sa.Column("value", sa.Float), sa.Column("system", sa.String(255)), sa.Column("unit_code", sa.String(64))],
        ["unit_code", "value"],
    ),
    "idx_uri": ([sa.Column("value", sa.String(512))], ["value"]),
    "idx_composite": (
        [
            sa.Column("c1_system", sa.String(255)),
            sa.Column("c1_value", sa.String(255)),
            sa.Column("c2_system", sa.String(255)),
            sa.Column("c2_value", sa.String(255)),
            sa.Column("c2_low", sa.Float),
            sa.Column("c2_high", sa.Float),
        ],
        ["c1_value", "c2_value"],
    ),
}


def upgrade() -> None:
    op.drop_index("ix_token_lookup", "search_token")
    op.drop_index("ix_token_owner", "search_token")
    op.drop_table("search_token")
    for name, (columns, lookup) in TABLES.items():
        op.create_table(
            name,
            sa.Column("resource_type", sa.String(64), nullable=False),
            sa.Column("resource_id", sa.String(64), nullable=False),
            sa.Column("code", sa.String(64), nullable=False),
            *columns,
        )
        op.create_index(f"ix_{name}_lookup", name, ["resource_type", "code", *lookup])
        op.create_index(f"ix_{name}_owner", name, ["resource_type", "resource_id", "code"])
    op.create_table(
        "search_snapshot",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("ids", Json, nullable=False),
    )
    op.create_index("ix_search_snapshot_created", "search_snapshot", ["created"])


def downgrade() -> None:
    op.drop_table("search_snapshot")
    for name in TABLES:
        op.drop_table(name)
    op.create_table(
        "search_token",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("system", sa.String(255), nullable=True),
        sa.Column("value", sa.String(255), nullable=True),
    )
