"""A small pathology network of its own for each case test: a province hospital with its pathology
centre (two pathologists and a triage officer), a county hospital with a requesting doctor, a
patient of the county and two slides of that patient."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.identity import ensure_account
from telemed.pathology import casemodel as m
from telemed.pathology import model
from telemed.pathology.cases import Env
from telemed.pathology.workflow import Policy
from tests.conftest import unique


@dataclass
class Net:
    centre: str
    county: str
    other: str
    patient: str
    requester: str
    pathologists: list[str]
    triage: str
    slides: list[str]
    contexts: dict[str, AccessContext] = field(default_factory=dict)

    def ctx(self, name: str) -> AccessContext:
        return self.contexts[name]


def org(id_, name, centre=False, phone=None):
    out = {"resourceType": "Organization", "id": id_, "active": True, "name": name}
    if centre:
        out["type"] = [{"coding": [{"system": m.ORG_TYPE_SYSTEM, "code": m.PATHOLOGY_CENTRE}]}]
    if phone:
        out["telecom"] = [{"system": "phone", "value": phone}]
    return out


def build(services) -> Net:
    net = Net(centre=unique("org-pc"), county=unique("org-c"), other=unique("org-o"), patient=unique("pat"),
              requester=unique("prac-req"), pathologists=[unique("prac-p") for _ in range(2)],
              triage=unique("prac-t"), slides=[])  # fmt: skip
    resources = [
        org(net.centre, "岚江省人民医院病理诊断中心", centre=True, phone="+8613800000000"),
        org(net.county, "青山县人民医院"), org(net.other, "白水县人民医院"),
        {"resourceType": "Patient", "id": net.patient, "name": [{"text": "刘芳"}], "gender": "female",
         "birthDate": "1970-05-01", "managingOrganization": {"reference": f"Organization/{net.county}"}},
    ]  # fmt: skip
    people = [(net.requester, "王医生", net.county, None), (net.triage, "调度员", net.centre, None),
              *((p, n, net.centre, m.PATHOLOGIST_ROLE) for p, n in zip(net.pathologists, ["陈主任", "林医生"],
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
        ensure_account(conn, net.requester, "王医生", ["requesting-doctor"], now, net.requester, net.county)
        for p in net.pathologists:
            ensure_account(conn, p, p, ["pathologist"], now, p, net.centre)
        ensure_account(conn, net.triage, "调度员", ["triage-officer"], now, net.triage, net.centre)
    cx = net.contexts
    cx["requester"] = AccessContext(net.requester, roles=frozenset({"requesting-doctor"}), organization=net.county,
                                    practitioner=net.requester)  # fmt: skip
    for i, p in enumerate(net.pathologists):
        cx[f"p{i + 1}"] = AccessContext(p, roles=frozenset({"pathologist"}), organization=net.centre, practitioner=p)
    cx["triage"] = AccessContext(net.triage, roles=frozenset({"triage-officer"}), organization=net.centre,
                                 practitioner=net.triage)  # fmt: skip
    cx["outsider"] = AccessContext("dr-o", roles=frozenset({"requesting-doctor", "pathologist"}),
                                   organization=net.other, practitioner=unique("prac-o"))  # fmt: skip
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, cx["requester"])
        for i in range(2):
            study = model.slide_study(f"S26-01{i}.tiff", f"Patient/{net.patient}", width=4000, height=3000, mpp=0.25)
            net.slides.append(repo.create("ImagingStudy", study).resource["id"])
    return net


def env(services, **policy) -> Env:
    return Env(services.clock, services.ids, Policy(**{k: timedelta(minutes=v) for k, v in policy.items()}))
