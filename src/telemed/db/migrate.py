"""Run the Alembic migration history against an engine (``telemed migrate``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(conn) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.connect() as conn:
        conn.info["write"] = True
        with conn.begin():
            command.upgrade(_config(conn), revision)


def is_current(engine: Engine) -> bool:
    """True when the database has the tables of the latest migration (``/readyz``, ``check``)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        current = MigrationContext.configure(conn).get_current_heads()
        head = ScriptDirectory.from_config(_config(conn)).get_heads()
        return set(current) == set(head)
