"""Demo remote ECGs: a regional reading pool at the province hospital (every province and city
cardiologist, on duty around the clock) serving the county hospitals and township clinics, and a few
ECGs sent by township clinics: the 12-lead DICOM recording that pydicom ships (Mortara ELI 250),
and synthetic ones (HL7 aECG and WFDB) with atrial fibrillation, a pause and a tachycardia."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from telemed.ecg import aecg, model, service
from telemed.ecg.synthetic import simulate, to_wfdb
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.kernel.blobs import BlobStore

POOL = "ecg-pool-province"
CENTRE = "org-province"
CARDIOLOGY = "394579002"
# (id, township clinic, what, priority)
ECGS = [
    ("demo-ecg-1", "org-township-1", "dicom", "routine"),
    ("demo-ecg-2", "org-township-3", "af", "routine"),
    ("demo-ecg-3", "org-township-5", "pause", "urgent"),
    ("demo-ecg-4", "org-township-6", "tachycardia", "urgent"),
]


def _files(kind: str, seed: int) -> dict[str, bytes]:
    if kind == "dicom":
        from pydicom.data import get_testdata_file

        return {"ecg.dcm": Path(get_testdata_file("waveform_ecg.dcm")).read_bytes()}
    rhythm, rate = {"af": ("af", 105), "pause": ("pause", 52), "tachycardia": ("sinus", 128)}[kind]
    rec = simulate(duration=10, sampling_rate=500, heart_rate=rate, rhythm=rhythm, noise=0.03, wander=0.15,
                   seed=seed).recording  # fmt: skip
    if kind == "pause":
        with tempfile.TemporaryDirectory() as tmp:
            return {n: (Path(tmp) / n).read_bytes() for n in to_wfdb(rec, tmp, "ecg")}
    return {"ecg.xml": aecg.write(rec, uid=f"2.25.{9000 + seed}")}


def pool_resources(network: list[dict]) -> list[dict]:
    roles = [r for r in network if r["resourceType"] == "PractitionerRole"]
    readers = [r["practitioner"]["reference"].split("/", 1)[1] for r in roles
               if r["organization"]["reference"].startswith(("Organization/org-province", "Organization/org-city"))
               and r["specialty"][0]["coding"][0]["code"] == CARDIOLOGY]  # fmt: skip
    served = [o["id"] for o in network if o["resourceType"] == "Organization"
              and o["id"].startswith(("org-county", "org-township"))]  # fmt: skip
    out = [model.pool_group(POOL, "岚江省心电诊断池", CENTRE, readers, served)]
    out += [model.reader_role(f"ecg-duty-{r}", r, CENTRE, [{"allDay": True}]) for r in readers]
    return out


def load_ecgs(repository: Callable[[AccessContext], Repository], blobs: BlobStore, now: datetime,
              network: list[dict]) -> int:  # fmt: skip
    """Idempotent: the pool and the ECGs are written once (fixed ids)."""
    system = repository(AccessContext.system())
    for res in pool_resources(network):
        if not system.exists(res["resourceType"], res["id"]):
            system.update(res["resourceType"], res["id"], res)
    pools = service.Pools.load(system)
    made = 0
    for seed, (ecg, clinic, kind, priority) in enumerate(ECGS):
        if system.exists("Task", ecg):
            continue
        at_clinic = f"Organization/{clinic}"
        doctor = next(r["practitioner"]["reference"].split("/", 1)[1] for r in network
                      if r["resourceType"] == "PractitionerRole"
                      and r["organization"]["reference"] == at_clinic)  # fmt: skip
        patient = next(p["id"] for p in network if p["resourceType"] == "Patient"
                       and p.get("managingOrganization", {}).get("reference") == at_clinic)  # fmt: skip
        ctx = AccessContext(doctor, roles=frozenset({"requesting-doctor"}), organization=clinic, practitioner=doctor)
        service.ingest(repository(ctx), blobs, pools, now, ecg, files=_files(kind, seed), patient=patient, ctx=ctx,
                       priority=priority, note={"urgent": "胸闷、心悸，请尽快读图"}.get(priority))  # fmt: skip
        made += 1
    return made
