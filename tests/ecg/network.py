"""A small ECG network of its own for each test: a county hospital's ECG reading centre with a pool of
three readers (two on duty, one off), a township clinic attached to the pool, another clinic that is
not, a doctor at the clinic and a patient."""

from __future__ import annotations

from dataclasses import dataclass, field

from telemed.db.engine import unit_of_work
from telemed.ecg import model
from telemed.fhir.store.context import AccessContext
from telemed.identity import ensure_account
from tests.conftest import unique


@dataclass
class Net:
    county: str
    centre: str
    clinic: str
    other_clinic: str
    patient: str
    doctor: str
    readers: list[str]
    pool: str
    contexts: dict[str, AccessContext] = field(default_factory=dict)

    def ctx(self, name: str) -> AccessContext:
        return self.contexts[name]


ALL_DAY = [{"allDay": True}]


def build(services, duty: list | None = None) -> Net:
    c = unique("org-c")
    net = Net(county=c, centre=f"{c}-ecg", clinic=unique("org-t"), other_clinic=unique("org-o"), patient=unique("pat"),
              doctor=unique("prac-d"), readers=[unique("prac-r") for _ in range(3)], pool=unique("pool"))  # fmt: skip

    def org(id_, name, part_of=None):
        parent = {"partOf": {"reference": f"Organization/{part_of}"}} if part_of else {}
        return {"resourceType": "Organization", "id": id_, "active": True, "name": name, **parent}

    resources = [
        org(net.county, "青山县人民医院"), org(net.centre, "心电诊断中心", net.county),
        org(net.clinic, "石桥镇卫生院", net.county), org(net.other_clinic, "白沙镇卫生院", net.county),
        {"resourceType": "Patient", "id": net.patient, "name": [{"text": "李秀英"}], "gender": "female",
         "birthDate": "1951-07-12", "managingOrganization": {"reference": f"Organization/{net.clinic}"}},
    ]  # fmt: skip
    for pid, name in [(net.doctor, "陈医生"), *zip(net.readers, ["周主任", "吴医生", "郑医生"], strict=True)]:
        resources.append({"resourceType": "Practitioner", "id": pid, "name": [{"text": name}]})
    for i, r in enumerate(net.readers):
        resources.append(model.reader_role(f"role-{r}", r, net.centre, (duty or ALL_DAY) if i < 2 else []))
    resources.append(model.pool_group(net.pool, "青山县心电池", net.centre, net.readers, [net.clinic]))
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        for r in resources:
            repo.update(r["resourceType"], r["id"], r)
        now = services.clock.now()
        ensure_account(conn, net.doctor, "陈医生", ["requesting-doctor"], now, net.doctor, net.clinic)
        for r in net.readers:
            ensure_account(conn, r, r, ["ecg-reader"], now, r, net.centre)
    cx = net.contexts
    cx["doctor"] = AccessContext(net.doctor, roles=frozenset({"requesting-doctor"}), organization=net.clinic,
                                 practitioner=net.doctor)  # fmt: skip
    for i, r in enumerate(net.readers):
        cx[f"r{i + 1}"] = AccessContext(r, roles=frozenset({"ecg-reader"}), organization=net.centre, practitioner=r)
    cx["outsider"] = AccessContext("dr-o", roles=frozenset({"requesting-doctor"}), organization=net.other_clinic,
                                   practitioner=unique("prac-o"))  # fmt: skip
    return net
