"""A small reading network of its own for each reading test: a province hospital with its imaging
centre (two radiologists), a county hospital with two requesting doctors, a third hospital to
share with, and a CT study of a county patient stored as the county's modality would (the real
imaging store: blob, index, ImagingStudy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pydicom
from pydicom.uid import generate_uid

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.identity import ensure_account
from telemed.imaging import store_instance
from telemed.imaging.reading import model as m
from telemed.imaging.reading.service import Env, study_by_uid
from telemed.imaging.reading.workflow import Policy
from tests.conftest import unique
from tests.imaging.conftest import TEST_FILES


@dataclass
class Net:
    centre: str
    county: str
    other: str
    requester: str
    colleague: str
    radiologists: list[str]
    contexts: dict[str, AccessContext] = field(default_factory=dict)

    def ctx(self, name: str) -> AccessContext:
        return self.contexts[name]


def org(id_, name, centre=False, phone=None):
    out = {"resourceType": "Organization", "id": id_, "active": True, "name": name}
    if centre:
        out["type"] = [{"coding": [{"system": m.ORG_TYPE_SYSTEM, "code": m.READING_CENTRE}]}]
    if phone:
        out["telecom"] = [{"system": "phone", "value": phone}]
    return out


def build(services) -> Net:
    net = Net(centre=unique("org-ic"), county=unique("org-c"), other=unique("org-o"), requester=unique("prac-req"),
              colleague=unique("prac-col"), radiologists=[unique("prac-r") for _ in range(2)])  # fmt: skip
    resources = [org(net.centre, "岚江省人民医院影像诊断中心", centre=True, phone="+8613800000001"),
                 org(net.county, "青山县人民医院", phone="+8613800000002"),
                 org(net.other, "白水县人民医院")]  # fmt: skip
    people = [(net.requester, "王医生", net.county, None), (net.colleague, "赵医生", net.county, None),
              *((p, n, net.centre, m.RADIOLOGIST_ROLE) for p, n in zip(net.radiologists, ["周主任", "吴医生"],
                                                                       strict=True))]  # fmt: skip
    for pid, name, o, code in people:
        resources.append({"resourceType": "Practitioner", "id": pid, "name": [{"text": name}],
                          "telecom": [{"system": "phone", "value": "+86139" + str(abs(hash(pid)))[:8]}],
                          "qualification": [{"code": {"coding": [{"display": "主任医师"}]}}]})  # fmt: skip
        role = {"resourceType": "PractitionerRole", "id": f"role-{pid}", "active": True,
                "practitioner": {"reference": f"Practitioner/{pid}"},
                "organization": {"reference": f"Organization/{o}"}}  # fmt: skip
        if code:
            role["code"] = [{"coding": [code]}]
        resources.append(role)
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        for r in resources:
            repo.update(r["resourceType"], r["id"], r)
        now = services.clock.now()
        for p in (net.requester, net.colleague):
            ensure_account(conn, p, p, ["requesting-doctor"], now, p, net.county)
        for p in net.radiologists:
            ensure_account(conn, p, p, ["radiologist"], now, p, net.centre)
    cx = net.contexts
    for name, p in (("requester", net.requester), ("colleague", net.colleague)):
        cx[name] = AccessContext(p, roles=frozenset({"requesting-doctor"}), organization=net.county, practitioner=p)
    for i, p in enumerate(net.radiologists):
        cx[f"r{i + 1}"] = AccessContext(p, roles=frozenset({"radiologist"}), organization=net.centre, practitioner=p)
    cx["outsider"] = AccessContext("dr-o", roles=frozenset({"requesting-doctor", "radiologist"}),
                                   organization=net.other, practitioner=unique("prac-o"))  # fmt: skip
    return net


def ct_study(services, net: Net, *, uid: str | None = None, patient_id: str | None = None, body_part="CHEST",
             count: int = 2) -> tuple[str, str]:  # fmt: skip
    """Store a small CT study as the county's modality; returns (ImagingStudy id, Study UID)."""
    uid = uid or generate_uid()
    series = generate_uid()
    patient_id = patient_id or unique("PID")
    for i in range(count):
        ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName, ds.BodyPartExamined, ds.InstanceNumber = patient_id, "Liu^Fang", body_part, i + 1
        ds.InstitutionName = "Qingshan County Hospital"
        from io import BytesIO

        buf = BytesIO()
        ds.save_as(buf)
        store_instance(services, net.ctx("requester"), buf.getvalue())
    with unit_of_work(services.engine, write=False) as conn:
        study = study_by_uid(services.repository(conn, AccessContext.system()), uid)
    return study.resource["id"], uid


def env(services, **policy) -> Env:
    return Env(services.clock, services.ids, Policy(**{k: timedelta(minutes=v) for k, v in policy.items()}))
