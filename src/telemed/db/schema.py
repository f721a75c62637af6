"""Tables of the FHIR store (SQLAlchemy Core). Alembic migrations under ``migrations/`` create them.

One row per resource in ``resource`` (the current version, kept after delete with ``deleted``) and
one row per version in ``resource_history``; ``seq`` orders history system-wide and gives paging a
stable cursor. JSON is JSONB on PostgreSQL and JSON text on SQLite.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

Json = JSON().with_variant(JSONB(), "postgresql")
SeqId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite only autoincrements INTEGER PRIMARY KEY

resource = Table(
    "resource",
    metadata,
    Column("resource_type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("has_blobs", Boolean, nullable=False, default=False),
    Column("content", Json, nullable=True),
    Index("ix_resource_type_updated", "resource_type", "last_updated"),
)

resource_history = Table(
    "resource_history",
    metadata,
    Column("seq", SeqId, primary_key=True, autoincrement=True),
    Column("resource_type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("method", String(8), nullable=False),
    Column("has_blobs", Boolean, nullable=False, default=False),
    Column("content", Json, nullable=True),
    UniqueConstraint("resource_type", "id", "version_id", name="uq_history_version"),
    Index("ix_history_type_seq", "resource_type", "seq"),
)

# Token index (identifier for now); the search issue generalises indexing to every SearchParameter.
search_token = Table(
    "search_token",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("system", String(255), nullable=True),
    Column("value", String(255), nullable=True),
    Index("ix_token_lookup", "resource_type", "param", "value", "system"),
    Index("ix_token_owner", "resource_type", "resource_id"),
)

account = Table(
    "account",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("display_name", String(255), nullable=False),
    Column("practitioner_id", String(64), nullable=True),
    Column("roles", Json, nullable=False),
    Column("password_hash", String(255), nullable=True),
    Column("active", Boolean, nullable=False, default=True),
    Column("created", DateTime(timezone=True), nullable=False),
)
