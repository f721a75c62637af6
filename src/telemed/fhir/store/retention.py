"""Retention holds: a record that the rules require to be kept (the 2018 telemedicine rules: audio and
video of a consultation at least 3 years) carries the date until which it is kept, and until then
the store refuses to delete it or to shorten the hold. After that date it is the operator's choice.

The hold is an extension on the resource (so every FHIR client sees it), set by whoever files the
record, e.g. the video recordings of a consultation (``TELEMED_RECORDING_RETENTION_YEARS``).
"""

from __future__ import annotations

from datetime import datetime

from telemed.kernel.clock import as_utc, parse_fhir_datetime
from telemed.kernel.errors import Category, TelemedError

RETAIN_UNTIL_URL = "https://telemed.example.cn/fhir/StructureDefinition/retain-until"


def hold_of(resource: dict | None) -> datetime | None:
    """The date until which ``resource`` must be kept, if it carries one."""
    for ext in (resource or {}).get("extension", []):
        if isinstance(ext, dict) and ext.get("url") == RETAIN_UNTIL_URL and ext.get("valueDateTime"):
            try:
                return as_utc(parse_fhir_datetime(ext["valueDateTime"]))
            except (TypeError, ValueError):
                return None
    return None


def extension(until: datetime) -> dict:
    return {"url": RETAIN_UNTIL_URL, "valueDateTime": until.isoformat(timespec="seconds")}


def _refuse(what: str, until: datetime) -> TelemedError:
    return TelemedError(Category.CONFLICT, f"{what}: the record must be kept until {until.date().isoformat()} "
                                           "(retention rules)")  # fmt: skip


def check_delete(current: dict | None, now: datetime) -> None:
    until = hold_of(current)
    if until is not None and until > as_utc(now):
        raise _refuse("It cannot be deleted", until)


def check_update(current: dict | None, new: dict, now: datetime) -> None:
    until = hold_of(current)
    if until is None or until <= as_utc(now):
        return
    kept = hold_of(new)
    if kept is None or kept < until:
        raise _refuse("Its retention date cannot be removed or brought forward", until)
