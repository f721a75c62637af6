"""Many rows into one table at once: ``COPY ... FROM STDIN`` on PostgreSQL, a multi-row INSERT elsewhere.

psycopg sends an ``executemany`` as one INSERT per row (pipelined, but parsed, bound and executed
by PostgreSQL one at a time, each row's parameters adapted in Python by SQLAlchemy and psycopg);
COPY streams the rows as text, adapted by psycopg's C code, and PostgreSQL inserts them in one
pass. A transaction Bundle of 500 Observations writes about 10,000 rows (resource, history and
search index rows): this is most of its database time.
"""

from __future__ import annotations

import orjson
from sqlalchemy import JSON, Connection, Insert, exc

COPY_MIN_ROWS = 20  # below this a plain INSERT costs no more


def insert_rows(conn: Connection, statement: Insert, rows: list[dict]) -> None:
    """Run ``statement`` (a plain ``insert(table)``) for ``rows`` (dicts with the same keys), in
    the caller's transaction. Errors are SQLAlchemy's either way (an ``IntegrityError`` stays one)."""
    if conn.dialect.name != "postgresql" or len(rows) < COPY_MIN_ROWS:
        conn.execute(statement, rows)
        return
    table = statement.table
    columns = [c for c in rows[0] if c in table.c]  # as SQLAlchemy, ignore keys that are not columns
    json_columns = {c.name for c in table.columns if isinstance(c.type, JSON)}
    # SQLAlchemy's JSON type stores Python None as JSON null; so does this.
    dumps = [(lambda v: orjson.dumps(v).decode()) if c in json_columns else None for c in columns]
    sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    driver = conn.connection.driver_connection
    try:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:
            if not json_columns:
                for row in rows:
                    copy.write_row([row[c] for c in columns])
            else:
                for row in rows:
                    copy.write_row([d(row[c]) if d else row[c] for c, d in zip(columns, dumps, strict=True)])
    except driver.__class__.Error as error:  # psycopg.Error: translated as SQLAlchemy would
        raise exc.DBAPIError.instance(sql, None, error, driver.__class__.Error) from error
