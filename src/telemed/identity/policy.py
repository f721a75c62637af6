"""Roles and what each may see: the access policy as data an administrator can read.

``clinical`` is how much patient data a role opens (see :class:`telemed.fhir.store.context.AccessContext`):
``all`` every patient; ``scoped`` the patients the user's institution holds or was granted, and
those granted to the user personally (an assigned consultation, referral or reading, and a
follow-up period after it closes); ``self`` the user's own record; ``none`` no patient data.
A user with several roles gets the widest mode among them. Break-glass opens one request's worth
of records outside these rules, with a reason, and is audited.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    name_zh: str
    name_en: str
    clinical: str
    note: str = ""


ROLES: dict[str, Role] = {
    "platform-admin": Role("平台管理员", "Platform administrator", "all"),
    "institution-admin": Role("机构管理员", "Institution administrator", "none", "manages its own subtree"),
    "requesting-doctor": Role("申请医生", "Requesting doctor", "scoped"),
    "consulting-expert": Role("会诊专家", "Consulting expert", "scoped", "assigned consultations only"),
    "qc-officer": Role("质控员", "Quality-control officer", "scoped"),
    "triage-officer": Role("分诊调度员", "Triage/dispatch officer", "scoped"),
    "radiologist": Role("影像诊断医师", "Radiologist", "scoped"),
    "pathologist": Role("病理诊断医师", "Pathologist", "scoped"),
    "ecg-reader": Role("心电诊断医师", "ECG reader", "scoped"),
    "pharmacist": Role("药师", "Pharmacist", "scoped"),
    "nurse": Role("护士", "Nurse", "scoped"),
    "patient": Role("患者", "Patient", "self"),
    "auditor": Role("审计员", "Auditor", "none", "reads the audit trail"),
    "supervisor": Role("监管人员", "Read-only supervisor", "none", "statistics without identities"),
}

_ORDER = ["none", "self", "scoped", "all"]
# Roles that see a patient's ID number, phone and address in full on a single read (audited);
# everyone else, and every list, sees them masked.
REVEAL_ROLES = frozenset({"platform-admin", "requesting-doctor", "nurse", "triage-officer", "patient"})


def may_reveal(roles) -> bool:
    return bool(REVEAL_ROLES & set(roles))


def clinical_mode(roles: list[str] | frozenset[str]) -> str:
    """The widest clinical mode among ``roles``; unknown roles open nothing."""
    modes = [ROLES[r].clinical for r in roles if r in ROLES]
    return max(modes, key=_ORDER.index) if modes else "none"


def unknown_roles(roles: list[str]) -> list[str]:
    return [r for r in roles if r not in ROLES]
