"""reference parameters (R4 §3.1.1.4.10): ``id``, ``Type/id``, absolute URLs, the ``:Type`` modifier,
``:identifier`` (indexed as a token under ``code:identifier``); canonical references by URL."""

from __future__ import annotations

from sqlalchemy import Table, and_

from telemed.fhir.search.types._common import unescape
from telemed.kernel.errors import incorrect


def parse(ref: str, local_base: str | None = None) -> tuple[str | None, str | None, str | None]:
    """(target type, target id, url) of a reference string; relative references have no url.
    An absolute URL under this server's own base is the same as the relative reference."""
    if ref.startswith("#"):
        return None, None, None
    if local_base and ref.startswith(local_base.rstrip("/") + "/"):
        ref = ref[len(local_base.rstrip("/")) + 1 :]
    if "://" in ref or ref.startswith("urn:"):
        return None, None, ref[:512]
    path = ref.split("/_history/")[0]
    parts = path.split("/")
    if len(parts) == 2 and parts[0][:1].isupper():
        return parts[0], parts[1][:64], None
    return None, None, ref[:512]


def extract(value: object, fhir_type: str | None, local_base: str | None = None) -> list[dict]:
    if isinstance(value, str):  # canonical / uri targets
        return [{"target_type": None, "target_id": None, "url": value[:512]}]
    if not isinstance(value, dict):
        return []
    rows = []
    ref = value.get("reference")
    if isinstance(ref, str):
        target_type, target_id, url = parse(ref, local_base)
        if target_type or url:
            rows.append({"target_type": target_type, "target_id": target_id, "url": url})
    ident = value.get("identifier")
    if isinstance(ident, dict) and ident.get("value") is not None:
        rows.append(
            {"_table": "token", "_suffix": ":identifier", "system": ident.get("system"), "value": str(ident["value"])}
        )
    return rows


def condition(t: Table, raw: str, modifier: str | None, param: str, base_url: str = "", targets=()):
    """``modifier`` is a resource type (``subject:Patient``) or None."""
    if modifier is not None and not modifier[:1].isupper():
        raise incorrect(f"Modifier :{modifier} is not supported on reference parameter {param}", param)
    raw = unescape(raw)
    if "/" not in raw and ":" not in raw:  # a bare id (R4: [id] or [type]/[id])
        target_type, target_id, url = None, raw, None
    else:
        target_type, target_id, url = parse(raw, base_url)
    if url is not None:
        return t.c.url == url
    if target_type is None:
        if target_id is None:
            raise incorrect(f"{param}: {raw!r} is not a valid reference", param)
        target_type = modifier or (targets[0] if len(targets) == 1 else None)
    elif modifier is not None and modifier != target_type:
        raise incorrect(f"{param}:{modifier} does not match the reference {raw!r}", param)
    cond = [t.c.target_id == target_id]
    if target_type is not None:
        cond.append(t.c.target_type == target_type)
    return and_(*cond)


def sort_column(t: Table):
    return t.c.target_id
