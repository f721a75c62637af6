"""Repository.read_many: the portal's lists read many resources by id in one statement, under the
same access rules as a read (an institution's doctor gets its own patients only)."""

from __future__ import annotations

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from tests.conftest import unique


def test_read_many_returns_the_visible_current_versions_only(services):
    u = unique("many")
    own, other = f"{u}-own", f"{u}-other"
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        for oid in (own, other):
            repo.update("Organization", oid, {"resourceType": "Organization", "id": oid, "name": oid})
        ids = {}
        for name, org in (("mine", own), ("mine2", own), ("theirs", other), ("gone", own)):
            ids[name] = repo.create("Patient", {
                "resourceType": "Patient", "name": [{"text": f"{name} 张"}],
                "managingOrganization": {"reference": f"Organization/{org}"},
            }).resource["id"]  # fmt: skip
        repo.update("Patient", ids["mine2"], {"resourceType": "Patient", "id": ids["mine2"], "name": [{"text": "v2"}],
                                             "managingOrganization": {"reference": f"Organization/{own}"}})  # fmt: skip
        repo.delete("Patient", ids["gone"])

    asked = [*ids.values(), f"{u}-unknown", ids["mine"]]
    doctor = AccessContext(user=f"{u}-doctor", organization=own, clinical="scoped")
    with unit_of_work(services.engine, write=False) as conn:
        everyone = services.repository(conn, AccessContext.system()).read_many("Patient", asked)
        mine = services.repository(conn, doctor).read_many("Patient", asked, chunk=1)

    assert set(everyone) == {ids["mine"], ids["mine2"], ids["theirs"]}  # not the deleted nor the unknown one
    assert set(mine) == {ids["mine"], ids["mine2"]}  # not another institution's patient
    assert mine[ids["mine2"]].version_id == 2 and mine[ids["mine2"]].resource["name"][0]["text"] == "v2"
    assert mine[ids["mine"]].resource["name"][0]["text"] == "mine 张"
