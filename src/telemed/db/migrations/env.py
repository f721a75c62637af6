"""Alembic environment: one migration history for SQLite and PostgreSQL.

The connection is passed in by :func:`telemed.db.migrate.upgrade`; ``alembic.ini`` is not needed.
"""

from alembic import context

from telemed.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things in place
)
with context.begin_transaction():
    context.run_migrations()
