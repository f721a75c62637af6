"""Sensitive personal data at rest and on screen (等保 level 3; PIPL).

Resident ID numbers (居民身份证号), phone numbers and street addresses of Patients and
RelatedPersons are stored encrypted (AES-GCM, :mod:`telemed.kernel.crypto`) in the resource and
history rows; their search index rows hold only a keyed hash (blind index), so equality search
still works while the database never holds them in clear. Addresses are then searchable by
whole parts (street line, postal code), not by prefix; city, district and province stay clear
for regional statistics.

Lists always show them masked (``4101********1234``); a single read shows them in full only to
roles that need them, and the reveal is recorded on the request's AuditEvent.
"""

from __future__ import annotations

from telemed.fhir.search.types._common import normalise
from telemed.kernel.crypto import FieldCipher, is_encrypted

RESIDENT_ID = "urn:oid:2.16.156.10011.1.1"
PROTECTED_TYPES = frozenset({"Patient", "RelatedPerson"})
SENSITIVE_PARAMS = frozenset({"identifier", "telecom", "phone", "email", "address", "address-postalcode"})


def _slots(resource: dict):
    """(container, key) of every sensitive string value in a Patient/RelatedPerson."""
    for ident in resource.get("identifier", []):
        if isinstance(ident, dict) and ident.get("system") == RESIDENT_ID and isinstance(ident.get("value"), str):
            yield ident, "value"
    for tel in resource.get("telecom", []):
        if isinstance(tel, dict) and isinstance(tel.get("value"), str):
            yield tel, "value"
    for addr in resource.get("address", []):
        if not isinstance(addr, dict):
            continue
        for key in ("text", "postalCode"):
            if isinstance(addr.get(key), str):
                yield addr, key
        lines = addr.get("line")
        if isinstance(lines, list):
            for i, line in enumerate(lines):
                if isinstance(line, str):
                    yield lines, i


def _copy_slots(resource: dict) -> dict:
    """A copy of ``resource`` whose sensitive containers (and only those) are new objects, so
    changing their values leaves ``resource`` as it was. (A deep copy of every Patient cost
    most of the time of loading a list of them.)"""
    out = dict(resource)
    for name in ("identifier", "telecom"):
        if isinstance(out.get(name), list):
            out[name] = [dict(x) if isinstance(x, dict) else x for x in out[name]]
    if isinstance(out.get("address"), list):
        addresses = []
        for addr in out["address"]:
            if isinstance(addr, dict):
                addr = dict(addr)
                if isinstance(addr.get("line"), list):
                    addr["line"] = list(addr["line"])
            addresses.append(addr)
        out["address"] = addresses
    return out


def _transform(resource: dict, fn) -> dict:
    if resource.get("resourceType") not in PROTECTED_TYPES:
        return resource
    out = _copy_slots(resource)
    for container, key in list(_slots(out)):
        container[key] = fn(container[key])
    return out


def encrypt(resource: dict, cipher: FieldCipher | None) -> dict:
    if cipher is None:
        return resource
    return _transform(resource, lambda v: v if is_encrypted(v) else cipher.encrypt(v))


def decrypt(resource: dict, cipher: FieldCipher | None) -> dict:
    if cipher is None:
        return resource
    return _transform(resource, lambda v: cipher.decrypt(v) if is_encrypted(v) else v)


def blind_index_rows(resource: dict, rows: dict[str, list[dict]], cipher: FieldCipher | None) -> dict[str, list[dict]]:
    """Replace index values that are sensitive plaintext by their blind index."""
    if cipher is None or resource.get("resourceType") not in PROTECTED_TYPES:
        return rows
    secrets = {container[key] for container, key in _slots(resource)}
    if not secrets:
        return rows
    normalised = {normalise(s) for s in secrets}
    for row in rows.get("token", []):
        value = row.get("value")
        if value in secrets:
            row["value"] = cipher.blind(value)
        elif isinstance(value, str) and "|" in value and value.split("|", 1)[1] in secrets:  # :of-type rows
            row["value"] = cipher.blind(value)
    for row in rows.get("string", []):
        if row.get("value") in normalised:
            row["value"], row["exact"] = cipher.blind(row["value"]), None
    return rows


def mask_value(value: str, key: object) -> str:
    if key in ("text",) or isinstance(key, int):
        return value[:2] + "****" if len(value) > 2 else "****"
    if key == "postalCode":
        return "******"
    if len(value) >= 15:  # resident ID: area code and the last four
        return value[:4] + "*" * (len(value) - 8) + value[-4:]
    if len(value) >= 7:  # phone
        return value[:3] + "*" * (len(value) - 7) + value[-4:]
    return "*" * len(value)


def mask(resource: dict) -> dict:
    if resource.get("resourceType") not in PROTECTED_TYPES:
        return resource
    out = _copy_slots(resource)
    for container, key in list(_slots(out)):
        container[key] = mask_value(container[key], key)
    return out


def has_sensitive(resource: dict) -> bool:
    return resource.get("resourceType") in PROTECTED_TYPES and any(True for _ in _slots(resource))
