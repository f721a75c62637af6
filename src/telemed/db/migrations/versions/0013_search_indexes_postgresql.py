"""Search indexes that let PostgreSQL answer searches from the indexes alone.

- ``ix_idx_string_prefix``: a string search is ``value LIKE 'prefix%'`` (R4 §3.1.1.4.7,
  starts-with). PostgreSQL turns that into an index range only on an index in plain byte order
  (the ``C`` collation, or ``varchar_pattern_ops``); under any other database collation
  (``C.UTF-8``, ``en_US.UTF-8``...) the lookup index cannot serve it and every row of the
  parameter was read (``subject.name=王``, ``Patient?name=王``).
- The token, reference and date lookup indexes carry ``resource_id`` (as a key column, or
  ``INCLUDE`` for dates), so matching a code, a subject or walking dates for ``_sort=-date`` needs
  no read of the index table's rows, and the matches of a code come in ``resource_id`` order.

PostgreSQL only (``INCLUDE`` and ``varchar_pattern_ops`` are PostgreSQL's);
SQLite keeps the indexes of 0002 (``telemed.db.schema`` describes those). Tried and left out: a
partial index of the live rows, ``resource (resource_type, id) WHERE deleted IS false``, which made
the not-deleted check index-only; on tables without statistics yet (a young database, the tests')
PostgreSQL then chose nested loops over whole index scans for ``_has`` (minutes for 100 rows).

Revision ID: 0013
Revises: 0014 (0014 was committed revising 0012 before this one existed; chained after it so the
history keeps one head)
Create Date: 2026-12-08
"""

from alembic import op

revision = "0013"
down_revision = "0014"
branch_labels = None
depends_on = None

LOOKUPS = {  # index: (table, its columns in 0002, its columns now)
    "ix_idx_token_lookup": (
        "idx_token",
        "resource_type, code, value, system",
        "resource_type, code, value, system, resource_id",
    ),
    "ix_idx_reference_lookup": (
        "idx_reference",
        "resource_type, code, target_id, target_type",
        "resource_type, code, target_id, target_type, resource_id",
    ),
    "ix_idx_date_lookup": (
        "idx_date",
        "resource_type, code, low, high",
        "resource_type, code, low, high) INCLUDE (resource_id",
    ),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE INDEX ix_idx_string_prefix ON idx_string (resource_type, code, value varchar_pattern_ops)")
    for name, (table, _old, new) in LOOKUPS.items():
        op.execute(f"DROP INDEX {name}")
        op.execute(f"CREATE INDEX {name} ON {table} ({new})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, (table, old, _new) in LOOKUPS.items():
        op.execute(f"DROP INDEX {name}")
        op.execute(f"CREATE INDEX {name} ON {table} ({old})")
    op.execute("DROP INDEX ix_idx_string_prefix")
