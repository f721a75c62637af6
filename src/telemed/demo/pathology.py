"""Demo remote pathology: the province hospital is the pathology centre (its pathologists read for
the network), and two county hospitals have sent cases with generated H&E-like slides: a routine
gastric biopsy with two slides, and a frozen section (术中冰冻) of a breast lump requested during
surgery, whose 30-minute deadline runs from the moment the demo is loaded."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.pathology import casemodel as m
from telemed.pathology import cases, service
from telemed.pathology import workflow as wf
from telemed.pathology.centre import SlideStore
from telemed.pathology.synthetic import write_slide

CENTRE = "org-province"
PATHOLOGY = "394915009"
# (case id, county hospital, kind, slides (name, width, height), accession, site, history, gross, question)
CASES = [
    ("demo-path-1", "org-county-1", wf.ROUTINE, [("S26-0412-A1.tiff", 4096, 3072), ("S26-0412-A2.tiff", 3072, 2048)],
     "S26-0412", "胃窦活检", "上腹隐痛3月，胃镜示胃窦溃疡", "灰白碎组织3粒，直径0.2-0.3 cm", "溃疡性质？"),
    ("demo-path-2", "org-county-2", wf.FROZEN, [("F26-0031-1.tiff", 4096, 3072)],
     "F26-0031", "左乳肿物", "左乳外上象限肿物2周，术中送冰冻", "灰白结节一枚 2.0×1.5×1.2 cm，切面灰白质硬",
     "良恶性？切缘？"),
]  # fmt: skip


def centre_resources(network: list[dict], system: Repository) -> list[dict]:
    """The province hospital as a pathology centre and a pathologist role for each of its
    pathology specialists."""
    out = []
    org = dict(system.read("Organization", CENTRE).resource)
    codes = {(c.get("system"), c.get("code")) for t in org.get("type", []) for c in t.get("coding", [])}
    if (m.ORG_TYPE_SYSTEM, m.PATHOLOGY_CENTRE) not in codes:
        org.pop("meta", None)
        org["type"] = [*org.get("type", []), {"coding": [{"system": m.ORG_TYPE_SYSTEM, "code": m.PATHOLOGY_CENTRE,
                                                          "display": "Pathology centre"}]}]  # fmt: skip
        out.append(org)
    for r in network:
        if (r["resourceType"] == "PractitionerRole" and r["organization"]["reference"] == f"Organization/{CENTRE}"
                and r["specialty"][0]["coding"][0]["code"] == PATHOLOGY):  # fmt: skip
            p = r["practitioner"]["reference"].split("/", 1)[1]
            out.append({"resourceType": "PractitionerRole", "id": f"path-duty-{p}", "active": True,
                        "practitioner": {"reference": f"Practitioner/{p}"},
                        "organization": {"reference": f"Organization/{CENTRE}"},
                        "code": [{"coding": [m.PATHOLOGIST_ROLE]}]})  # fmt: skip
    return out


def load_pathology(repository: Callable[[AccessContext], Repository], clock, ids, var_dir: Path,
                   network: list[dict]) -> int:  # fmt: skip
    """Idempotent (fixed ids); the slides are generated into the centre's slide store."""
    system = repository(AccessContext.system())
    for res in centre_resources(network, system):
        if res["resourceType"] == "Organization" or not system.exists(res["resourceType"], res["id"]):
            system.update(res["resourceType"], res["id"], res)
    store = SlideStore(Path(var_dir) / "pathology")
    made = 0
    for cid, county, kind, slides, accession, site, history, gross, question in CASES:
        if system.exists("Task", cid):
            continue
        doctor = next(r["practitioner"]["reference"].split("/", 1)[1] for r in network
                      if r["resourceType"] == "PractitionerRole"
                      and r["organization"]["reference"] == f"Organization/{county}")  # fmt: skip
        patient = next(p["id"] for p in network if p["resourceType"] == "Patient"
                       and p.get("managingOrganization", {}).get("reference") == f"Organization/{county}")  # fmt: skip
        ctx = AccessContext(doctor, roles=frozenset({"requesting-doctor"}), organization=county, practitioner=doctor)
        repo = repository(ctx)
        ids_ = []
        with tempfile.TemporaryDirectory() as tmp:
            for name, w, h in slides:
                path = write_slide(Path(tmp) / name, w, h, mpp=0.25, look="tissue")
                ids_.append(service.import_slide(repo, store, path, patient=patient).id)
        form = cases.RequestForm(kind=kind, centre=CENTRE, slides=ids_, accession=accession, site=site,
                                 history=history, gross=gross, question=question,
                                 callback="13800138000" if kind == wf.FROZEN else "",
                                 theatre="3号手术间" if kind == wf.FROZEN else "")  # fmt: skip
        cases.request_case(repo, cases.Env(clock, lambda cid=cid: cid), ctx, form)
        made += 1
    return made
