"""Demo remote imaging readings: the province hospital is also the imaging reading centre (its
radiologists read for the network), and county hospitals have asked for readings in different
states: a routine chest CT waiting on the worklist, a stat head CT claimed by the chief radiologist
with a critical finding the county doctor has not acknowledged yet, and an urgent chest X-ray
requested before its images arrived. The studies are FHIR ImagingStudy records (no pixel data:
the DICOM demo study of the imaging pages is separate)."""

from __future__ import annotations

from collections.abc import Callable

from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.imaging.reading import critical
from telemed.imaging.reading import model as m
from telemed.imaging.reading import service as rs
from telemed.imaging.reading import workflow as wf

CENTRE = "org-province"
RADIOLOGY = "394914008"
# (reading id, county, priority, modality, body part, description, question, arrived, step)
READINGS = [
    ("demo-read-1", "org-county-1", wf.ROUTINE, "CT", "CHEST", "胸部 CT 平扫", "咳嗽2月，肺部占位？", True, None),
    ("demo-read-2", "org-county-2", wf.STAT, "CT", "HEAD", "头颅 CT 平扫", "突发头痛伴呕吐1小时", True, "critical"),
    ("demo-read-3", "org-county-3", wf.URGENT, "DX", "CHEST", "胸部正位片", "外伤后胸痛，气胸？", False, None),
]  # fmt: skip


def centre_resources(network: list[dict], system: Repository) -> list[dict]:
    out = []
    org = dict(system.read("Organization", CENTRE).resource)
    codes = {(c.get("system"), c.get("code")) for t in org.get("type", []) for c in t.get("coding", [])}
    if (m.ORG_TYPE_SYSTEM, m.READING_CENTRE) not in codes:
        org.pop("meta", None)
        org["type"] = [*org.get("type", []), {"coding": [{"system": m.ORG_TYPE_SYSTEM, "code": m.READING_CENTRE,
                                                          "display": "Imaging reading centre"}]}]  # fmt: skip
        out.append(org)
    for r in network:
        if (r["resourceType"] == "PractitionerRole" and r["organization"]["reference"] == f"Organization/{CENTRE}"
                and r.get("specialty") and r["specialty"][0]["coding"][0]["code"] == RADIOLOGY):  # fmt: skip
            p = r["practitioner"]["reference"].split("/", 1)[1]
            out.append({"resourceType": "PractitionerRole", "id": f"rad-duty-{p}", "active": True,
                        "practitioner": {"reference": f"Practitioner/{p}"},
                        "organization": {"reference": f"Organization/{CENTRE}"},
                        "code": [{"coding": [m.RADIOLOGIST_ROLE]}]})  # fmt: skip
    return out


def _study(rid: str, patient: str, modality: str, body_part: str, description: str) -> dict:
    uid = f"1.2.826.0.1.3680043.10.1299.{sum(map(ord, rid))}{len(rid)}"
    return {"resourceType": "ImagingStudy", "id": f"{rid}-study", "status": "available",
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
            "subject": {"reference": f"Patient/{patient}"}, "description": description,
            "modality": [{"system": m.DCM, "code": modality}], "numberOfSeries": 1, "numberOfInstances": 1,
            "series": [{"uid": f"{uid}.1", "modality": {"system": m.DCM, "code": modality},
                        "bodySite": {"system": m.DCM, "code": body_part, "display": body_part}}]}  # fmt: skip


def load_readings(repository: Callable[[AccessContext], Repository], clock, network: list[dict]) -> int:
    """Idempotent (fixed ids)."""
    system = repository(AccessContext.system())
    for res in centre_resources(network, system):
        if res["resourceType"] == "Organization" or not system.exists(res["resourceType"], res["id"]):
            system.update(res["resourceType"], res["id"], res)
    radiologists = rs.radiologists(system, CENTRE)
    made = 0
    for rid, county, priority, modality, body_part, description, question, arrived, step in READINGS:
        if system.exists("Task", rid):
            continue
        doctor = next(r["practitioner"]["reference"].split("/", 1)[1] for r in network
                      if r["resourceType"] == "PractitionerRole"
                      and r["organization"]["reference"] == f"Organization/{county}")  # fmt: skip
        patient = next(p["id"] for p in network if p["resourceType"] == "Patient"
                       and p.get("managingOrganization", {}).get("reference") == f"Organization/{county}")  # fmt: skip
        ctx = AccessContext(doctor, roles=frozenset({"requesting-doctor"}), organization=county, practitioner=doctor)
        repo = repository(ctx)
        study = _study(rid, patient, modality, body_part, description)
        if arrived:
            repo.update("ImagingStudy", study["id"], study)
        env = rs.Env(clock, lambda rid=rid: rid)
        uid = study["identifier"][0]["value"].removeprefix("urn:oid:")
        form = rs.RequestForm(centre=CENTRE, priority=priority, study=study["id"] if arrived else None,
                              study_uid=None if arrived else uid, patient=None if arrived else patient,
                              modality=modality, body_part=body_part, question=question)  # fmt: skip
        rs.request_reading(repo, env, ctx, form)
        if step == "critical" and radiologists:
            rad = radiologists[0]
            rctx = AccessContext(rad, roles=frozenset({"radiologist"}), organization=CENTRE, practitioner=rad)
            rrepo = repository(rctx)
            rs.act(rrepo, env, rctx, rid, "claim")
            critical.flag(rrepo, env, rctx, rid, "左侧基底节区急性脑出血，量约 30 ml，中线右移")
        made += 1
    return made
