"""Sharing a study with another institution (检查结果互认): the same access mechanism as consultations.

A share is a ``ServiceRequest`` (category study-sharing) about the study's patient whose
``performer`` is the receiving institution: the store's access rules then grant that institution
the patient's record (telemed.fhir.store.access, as for a consultation's performers), so the
study opens in its lists, the viewer and DICOMweb. Revoking sets the request ``revoked`` and
removes the performer (kept in an extension for the record), which removes the grant at once
(a completed consultation keeps a follow-up period; a revoked share does not). As with
consultations, the grant is to the patient's record, not to this one study.
"""

from __future__ import annotations

from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.imaging.reading import model as m
from telemed.imaging.reading import service as s
from telemed.kernel.errors import Category, TelemedError

SHARE_SYSTEM = f"{m.BASE}/CodeSystem/study-sharing"
SHARED_WITH_URL = f"{m.BASE}/StructureDefinition/shared-with"
SHARERS = frozenset({"requesting-doctor", "radiologist", "institution-admin", "platform-admin"})


def share(repo: Repository, env: s.Env, ctx: AccessContext, study: str, organization: str, reason: str = "") -> dict:
    """Share ``ImagingStudy/study`` with ``Organization/organization``; returns the ServiceRequest."""
    if not SHARERS & set(ctx.roles):
        raise TelemedError(Category.FORBIDDEN, "Your role cannot share studies")
    stored = s.read(repo, "ImagingStudy", study)
    if stored is None:
        raise TelemedError(Category.NOT_FOUND, f"No study {study}")
    org = s.read(repo, "Organization", organization)
    if org is None:
        raise s.incorrect("Choose an institution to share with", "organization")
    if organization == ctx.organization:
        raise s.incorrect("The study is already your institution's", "organization")
    if len(reason) > 2000:
        raise s.incorrect("The reason is at most 2000 characters", "reason")
    for existing in shares_of(repo, study):
        if existing["status"] == "active" and _target(existing) == organization:
            return existing
    patient = m.ref_id(stored.resource.get("subject"), "Patient")
    sid = f"share-{env.ids()}"[:64]
    sr = {
        "resourceType": "ServiceRequest",
        "id": sid,
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": SHARE_SYSTEM, "code": "study-sharing"}], "text": "检查结果互认"}],
        "code": {"coding": [{"system": SHARE_SYSTEM, "code": "study-sharing", "display": "Share an imaging study"}],
                 "text": "影像检查共享"},  # fmt: skip
        "subject": m.ref("Patient", patient),
        "authoredOn": m.iso(env.clock.now()),
        "requester": m.ref("Practitioner", ctx.practitioner) if ctx.practitioner else None,
        "performer": [m.ref("Organization", organization)],
        "supportingInfo": [m.ref("ImagingStudy", study)],
        "extension": [{"url": SHARED_WITH_URL, "valueReference": m.ref("Organization", organization)}],
    }
    if not sr["requester"]:
        del sr["requester"]
    if reason.strip():
        sr["reasonCode"] = [{"text": reason.strip()}]
    return repo.update("ServiceRequest", sid, sr).resource


def _target(sr: dict) -> str | None:
    return m.ref_id(m.ext_value(sr, SHARED_WITH_URL), "Organization")


def revoke(repo: Repository, env: s.Env, ctx: AccessContext, share_id: str) -> dict:
    """End a share: the receiving institution loses the grant at once."""
    stored = s.read(repo, "ServiceRequest", share_id)
    if stored is None or not _is_share(stored.resource):
        raise TelemedError(Category.NOT_FOUND, "No such share")
    if not SHARERS & set(ctx.roles):
        raise TelemedError(Category.FORBIDDEN, "Your role cannot revoke shares")
    if stored.resource["status"] != "active":
        raise TelemedError(Category.CONFLICT, "This share has already been revoked")
    sr = {k: v for k, v in stored.resource.items() if k not in ("meta", "performer")}
    sr["status"] = "revoked"
    sr["occurrenceDateTime"] = m.iso(env.clock.now())
    return repo.update("ServiceRequest", share_id, sr, if_match=stored.etag).resource


def _is_share(sr: dict) -> bool:
    return any(c.get("system") == SHARE_SYSTEM for c in (sr.get("code") or {}).get("coding", []))


def shares_of(repo: Repository, study: str) -> list[dict]:
    """Shares of a study the caller sees, newest first."""
    found = s.find(repo, "ServiceRequest", [("code", f"{SHARE_SYSTEM}|study-sharing")], 200)
    out = [f.resource for f in found
           if any(m.ref_id(x, "ImagingStudy") == study for x in f.resource.get("supportingInfo", []))]  # fmt: skip
    return sorted(out, key=lambda r: r.get("authoredOn", ""), reverse=True)
