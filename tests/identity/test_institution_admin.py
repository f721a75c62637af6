"""The institution network: platform administrators change anything, an institution's
administrator only its own subtree, clinical staff nothing."""

from __future__ import annotations

import httpx

from telemed.identity import issue_token
from tests.conftest import unique


def headers(services, role: str, org: str | None) -> dict:
    token = issue_token(
        services.token_keys, unique(role), ["user/*.*"], 600, services.clock.now(), [role], organization=org
    )
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def test_institution_admin_manages_its_subtree_only(server, services):
    admin = headers(services, "platform-admin", None)
    u = unique("tier")
    url = f"{server.url}/fhir"

    def org(oid: str, parent: str | None) -> dict:
        body = {"resourceType": "Organization", "id": oid, "name": oid}
        if parent:
            body["partOf"] = {"reference": f"Organization/{parent}"}
        return body

    for oid, parent in ((f"{u}-city", None), (f"{u}-county", f"{u}-city"), (f"{u}-other", None)):
        assert httpx.put(f"{url}/Organization/{oid}", json=org(oid, parent), headers=admin).status_code == 201
    county_admin = headers(services, "institution-admin", f"{u}-county")
    clinic = org(f"{u}-clinic", f"{u}-county")
    assert httpx.put(f"{url}/Organization/{clinic['id']}", json=clinic, headers=county_admin).status_code == 201
    room = {
        "resourceType": "Location",
        "name": "远程会诊室",
        "managingOrganization": {"reference": f"Organization/{u}-clinic"},
    }
    assert httpx.post(f"{url}/Location", json=room, headers=county_admin).status_code == 201
    elsewhere = org(f"{u}-stray", f"{u}-other")
    assert httpx.put(f"{url}/Organization/{elsewhere['id']}", json=elsewhere, headers=county_admin).status_code == 403
    parent = org(f"{u}-city", None) | {"name": "renamed"}
    assert httpx.put(f"{url}/Organization/{u}-city", json=parent, headers=county_admin).status_code == 403
    moved = org(f"{u}-county", f"{u}-other")
    assert httpx.put(f"{url}/Organization/{u}-county", json=moved, headers=county_admin).status_code == 403
    doctor = headers(services, "requesting-doctor", f"{u}-county")
    assert httpx.post(f"{url}/Location", json=room, headers=doctor).status_code == 403
    assert httpx.get(f"{url}/Organization/{u}-city", headers=doctor).status_code == 200  # directory data is readable
