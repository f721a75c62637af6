"""Index rows extracted from a resource on write (same transaction as the resource itself)."""

from __future__ import annotations


def token_rows(resource: dict) -> list[dict]:
    """``identifier`` tokens (R4 §3.1.1.4.9) for any resource with a top-level ``identifier``."""
    ids = resource.get("identifier")
    if isinstance(ids, dict):  # Bundle, QuestionnaireResponse, ... have a single Identifier
        ids = [ids]
    rows = []
    for ident in ids or []:
        value = ident.get("value")
        if value is not None:
            rows.append({"param": "identifier", "system": ident.get("system"), "value": str(value)[:255]})
    return rows
