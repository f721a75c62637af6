"""User accounts (the identity issue adds passwords, MFA and PractitionerRole links)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert, select

from telemed.db.schema import account


def get_account(conn: Connection, username: str):
    return conn.execute(select(account).where(account.c.username == username)).first()


def ensure_account(
    conn: Connection,
    username: str,
    display_name: str,
    roles: list[str],
    now: datetime,
    practitioner_id: str | None = None,
    organization_id: str | None = None,
    password_hash: str | None = None,
    patient_id: str | None = None,
) -> bool:
    """Create the account unless it exists; True when created (idempotent demo loading).
    ``patient_id`` links a patient-role account to its own Patient (its SMART patient context)."""
    if get_account(conn, username) is not None:
        return False
    conn.execute(
        insert(account).values(
            username=username,
            display_name=display_name,
            practitioner_id=practitioner_id,
            roles=roles,
            password_hash=password_hash,
            active=True,
            created=now,
            organization_id=organization_id,
            patient_id=patient_id,
        )
    )
    return True
