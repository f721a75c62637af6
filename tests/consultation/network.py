"""A small network of its own for each consultation test: a province hospital with its
telemedicine centre, a county hospital, a requesting doctor, three experts and a patient."""

from __future__ import annotations

from dataclasses import dataclass, field

from telemed.consultation import Env, model
from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.identity import ensure_account
from tests.conftest import unique


@dataclass
class Net:
    province: str
    centre: str
    county: str
    other_county: str
    patient: str
    requester: str
    experts: list[str]
    contexts: dict[str, AccessContext] = field(default_factory=dict)

    def ctx(self, name: str) -> AccessContext:
        return self.contexts[name]


TITLE_SYSTEM = "https://telemed.example.cn/fhir/CodeSystem/professional-title"
TIER_SYSTEM = "https://telemed.example.cn/fhir/CodeSystem/institution-tier"


def _org(id_, name, part_of=None, centre=False, tier=None):
    org = {"resourceType": "Organization", "id": id_, "active": True, "name": name}
    if tier:
        org["type"] = [{"coding": [{"system": TIER_SYSTEM, "code": tier}]}]
    if part_of:
        org["partOf"] = {"reference": f"Organization/{part_of}"}
    if centre:
        org["type"] = [{"coding": [{"system": model.ORG_TYPE_SYSTEM, "code": model.CENTRE_TYPE}]}]
    return org


def build(services) -> Net:
    p = unique("org-p")
    net = Net(
        province=p, centre=f"{p}-tmc", county=unique("org-c"), other_county=unique("org-x"),
        patient=unique("pat"), requester=unique("prac-req"), experts=[unique("prac-e") for _ in range(3)],
    )  # fmt: skip
    resources = [
        _org(net.province, "岚江省人民医院", tier="province"),
        _org(net.centre, "远程医学中心", net.province, centre=True),
        _org(net.county, "青山县人民医院", net.province, tier="county"),
        _org(net.other_county, "白水县人民医院", net.province, tier="county"),
        {"resourceType": "Patient", "id": net.patient, "name": [{"text": "张伟", "family": "张", "given": ["伟"]}],
         "gender": "male", "birthDate": "1958-03-02",
         "managingOrganization": {"reference": f"Organization/{net.county}"}},
    ]  # fmt: skip
    for pid, name in [(net.requester, "王医生"), *zip(net.experts, ["李主任", "赵主任", "孙主任"], strict=True)]:
        resources.append({"resourceType": "Practitioner", "id": pid, "name": [{"text": name}],
                          "telecom": [{"system": "email", "value": f"{pid}@hospital.example.cn"}],
                          "qualification": [{"code": {"coding": [{"system": TITLE_SYSTEM, "code": "chief-physician",
                                                                  "display": "主任医师"}]}}]})  # fmt: skip
    for pid, org, specialty in [
        (net.requester, net.county, "394814009"),
        *((e, net.province, "394579002") for e in net.experts),
    ]:
        resources.append(
            {
                "resourceType": "PractitionerRole",
                "id": f"role-{pid}",
                "active": True,
                "practitioner": {"reference": f"Practitioner/{pid}"},
                "organization": {"reference": f"Organization/{org}"},
                "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": specialty}]}],
            }
        )
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        for r in resources:
            repo.update(r["resourceType"], r["id"], r)
        # Accounts link the users to their Practitioner records (signing checks the link).
        now = services.clock.now()
        ensure_account(conn, net.requester, "王医生", ["requesting-doctor"], now, net.requester, net.county)
        for e in net.experts:
            ensure_account(conn, e, e, ["consulting-expert"], now, e, net.province)
    c = net.contexts
    c["requester"] = AccessContext(net.requester, roles=frozenset({"requesting-doctor"}), organization=net.county,
                                   practitioner=net.requester)  # fmt: skip
    c["qc"] = AccessContext("qc-" + p, roles=frozenset({"qc-officer"}), organization=net.centre)
    c["triage"] = AccessContext("triage-" + p, roles=frozenset({"triage-officer"}), organization=net.centre)
    for i, e in enumerate(net.experts):
        c[f"e{i + 1}"] = AccessContext(e, roles=frozenset({"consulting-expert"}), organization=net.province,
                                       practitioner=e)  # fmt: skip
    c["outsider"] = AccessContext("dr-x", roles=frozenset({"requesting-doctor"}), organization=net.other_county,
                                  practitioner=unique("prac-x"))  # fmt: skip
    return net


def env(services) -> Env:
    return Env(clock=services.clock, ids=services.ids)
