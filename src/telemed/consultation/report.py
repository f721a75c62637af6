"""Signing opinions and issuing the consultation report (through telemed.reports).

Each expert signs their own opinion (``Composition/X-<practitioner>``): a detached JWS over the
canonical JSON, recorded as a ``Provenance``. When the last expert signs, the consultation
report ``Composition/X`` gathers every opinion, is signed by that last expert with the earlier
signers listed, and is rendered to a PDF filed as a ``DocumentReference`` that prints its own
verification address. Amendments re-sign and supersede the earlier document.
"""

from __future__ import annotations

import base64
import json
from datetime import date, datetime

from telemed.consultation import model, service
from telemed.consultation import workflow as wf
from telemed.consultation.lookup import find
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository, Stored
from telemed.kernel.errors import Category, TelemedError
from telemed.reports import (
    Opinion,
    PatientInfo,
    ReportDocument,
    RequestInfo,
    Signer,
    SignerInfo,
    build_provenance,
    canonical_bytes,
    issue_signed_report,
)
from telemed.reports.issue import current_documents
from telemed.reports.provenance import signature_jws

TITLE = "远程会诊报告"


def _sign_composition(repo: Repository, signer: Signer, ctx: AccessContext, comp: Stored, now: datetime,
                      amendment: str | None = None) -> dict:  # fmt: skip
    signature = signer.sign(repo.conn, ctx.user, canonical_bytes(comp.resource), now)
    person = _person(repo, ctx.practitioner)
    return repo.create("Provenance", build_provenance(
        comp.resource, signature, f"Practitioner/{ctx.practitioner}", recorded=now, signer_name=person[0],
        signer_title=person[1], amendment_reason=amendment)).resource  # fmt: skip


def _person(repo: Repository, practitioner: str | None) -> tuple[str, str | None]:
    try:
        p = repo.read("Practitioner", practitioner or "").resource
    except TelemedError:
        return practitioner or "", None
    name = (p.get("name") or [{}])[0]
    title = None
    for q in p.get("qualification", []):
        for c in (q.get("code") or {}).get("coding", []):
            if c.get("display"):
                title = c["display"]
    return name.get("text") or name.get("family", "") + "".join(name.get("given", [])), title


def sign_opinion(
    repo: Repository, env: service.Env, ctx: AccessContext, cid: str, *, signer: Signer, base_url: str,
    expected_version: int | None = None,
) -> service.Loaded:  # fmt: skip
    """The caller signs their drafted opinion; the last signature concludes the consultation and
    issues the signed PDF report."""
    comp = service.opinion_of(repo, cid, ctx.practitioner or "")
    if comp is None:
        raise TelemedError(Category.CONFLICT, "Write your opinion before signing it")
    loaded = service.act(repo, env, ctx, cid, "sign", expected_version=expected_version)
    now = env.clock.now()
    final = repo.update("Composition", comp.resource["id"], {**comp.resource, "status": "final",
                                                               "date": model.iso(now)})  # fmt: skip
    _sign_composition(repo, signer, ctx, final, now)
    if loaded.consultation.state == wf.CONCLUDED:
        issue_report(repo, env, ctx, loaded, signer=signer, base_url=base_url)
    return loaded


def amend_opinion(
    repo: Repository, env: service.Env, ctx: AccessContext, cid: str, sections: dict[str, str], reason: str, *,
    signer: Signer, base_url: str,
) -> service.Loaded:  # fmt: skip
    """A signed opinion changes only as an amendment with its reason: a new signed version, and a
    new report that supersedes the earlier one."""
    loaded = service.act(repo, env, ctx, cid, "amend", reason=reason)
    now = env.clock.now()
    comp = model.opinion(cid, ctx.practitioner or "", loaded.patient, sections, "amended", now, "远程会诊意见（修订）")
    stored = repo.update("Composition", comp["id"], comp)
    _sign_composition(repo, signer, ctx, stored, now, amendment=reason)
    issue_report(repo, env, ctx, loaded, signer=signer, base_url=base_url, amendment_reason=reason)
    return loaded


def issue_report(
    repo: Repository, env: service.Env, ctx: AccessContext, loaded: service.Loaded, *, signer: Signer,
    base_url: str, amendment_reason: str | None = None,
) -> None:  # fmt: skip
    c = loaded.consultation
    now = env.clock.now()
    opinions = []
    for e in c.active_experts:
        comp = service.opinion_of(repo, c.id, e.practitioner)
        if comp is not None:
            opinions.append((e.practitioner, comp, model.sections_of(comp.resource)))
    several = len(opinions) > 1

    def gather(code: str) -> str:
        parts = []
        for practitioner, _comp, sections in opinions:
            text = (sections.get(code) or "").strip()
            if text:
                parts.append(f"{_person(repo, practitioner)[0]}：{text}" if several else text)
        return "\n".join(parts)

    merged = {code: gather(code) for code, _zh, _en in model.SECTIONS}
    report = model.opinion(c.id, "", loaded.patient, merged, "amended" if amendment_reason else "final", now, TITLE)
    report["id"] = c.id
    report["author"] = [model.ref("Practitioner", p) for p, _c, _s in opinions]
    report["attester"] = [{"mode": "legal", "time": model.iso(now), "party": model.ref("Practitioner", p)}
                          for p, _c, _s in opinions]  # fmt: skip
    stored = repo.update("Composition", c.id, report)

    # Earlier signers are printed with their own signatures; the caller's is made now.
    signers = []
    for practitioner, comp, _s in opinions:
        name, title = _person(repo, practitioner)
        org = _org_name(repo, practitioner)
        if practitioner == ctx.practitioner:
            signers.append(SignerInfo(name, title, org))
        else:
            prov = _latest_provenance(repo, comp)
            signers.append(SignerInfo(name, title, org, model.parse_dt(prov.get("recorded")) if prov else None,
                                      _kid(prov)))  # fmt: skip
    patient = repo.read("Patient", loaded.patient).resource
    details = model.details_of(loaded.request.resource)
    pname = (patient.get("name") or [{}])[0]
    document = ReportDocument(
        institution=_org_display(repo, loaded.centre) or "远程医学中心",
        title=TITLE,
        patient=PatientInfo(pname.get("text") or pname.get("family", "") + "".join(pname.get("given", [])),
                            patient.get("gender"), _age(patient.get("birthDate"), now),
                            loaded.request.resource["identifier"][0]["value"]),  # fmt: skip
        request=RequestInfo("；".join(t for t in (details.purpose, details.question) if t),
                            _org_name(repo, c.requester), _person(repo, c.requester)[0],
                            details.requested_time),  # fmt: skip
        opinion=Opinion(merged["impression"] or merged["diagnosis"], merged["recommendations"] or None,
                        merged["follow-up"] or None,
                        f"诊断：{merged['diagnosis']}" if merged["diagnosis"] and merged["impression"] else None),
        signers=tuple(signers),
    )  # fmt: skip
    issue_signed_report(repo, signer, report=stored, document=document, author_practitioner=ctx.practitioner or "",
                        username=ctx.user, now=now, base_url=base_url, amendment_reason=amendment_reason)  # fmt: skip


def _age(birth: str | None, now: datetime) -> int | None:
    if not birth or len(birth) < 10:
        return None
    b = date.fromisoformat(birth[:10])
    today = now.date()
    return today.year - b.year - ((today.month, today.day) < (b.month, b.day))


def _org_display(repo: Repository, org: str | None) -> str | None:
    try:
        return repo.read("Organization", org).resource.get("name") if org else None
    except TelemedError:
        return None


def _org_name(repo: Repository, practitioner: str | None) -> str | None:
    roles = find(repo, "PractitionerRole", [("practitioner", f"Practitioner/{practitioner}")], 1)
    if not roles:
        return None
    org = roles[0].resource.get("organization") or {}
    # An invited external expert's institution is outside the network: named as text only.
    return _org_display(repo, model.ref_id(org, "Organization")) or org.get("display")


def _latest_provenance(repo: Repository, comp: Stored) -> dict | None:
    found = find(repo, "Provenance", [("target", f"Composition/{comp.resource['id']}")], 50)
    found.sort(key=lambda s: s.resource.get("recorded", ""))
    return found[-1].resource if found else None


def _kid(prov: dict | None) -> str | None:
    if not prov:
        return None
    jws = signature_jws(prov)
    if not jws:
        return None
    header = jws.split(".", 1)[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))).get("kid")


def report_documents(repo: Repository, cid: str) -> list[dict]:
    """The consultation's signed report documents (current first)."""
    try:
        return [s.resource for s in current_documents(repo, "Composition", cid)]
    except TelemedError:
        return []
