"""`telemed keys rotate`: every stored sensitive value ends up under the newest key, history
included, and the old key can then be dropped without losing a single value."""

from __future__ import annotations

from sqlalchemy import select

from telemed.app import Services
from telemed.db.engine import unit_of_work
from telemed.db.migrate import upgrade
from telemed.db.schema import resource, resource_history
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.rotation import remaining, rotate
from telemed.kernel.crypto import FieldCipher
from tests.conftest import make_settings

K1, K2 = ("k1", b"1" * 32), ("k2", b"2" * 32)
INDEX = b"i" * 32


def _services(tmp_path, keys) -> Services:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/rot.db")
    svc = Services.from_settings(settings)
    svc.cipher = FieldCipher(keys, INDEX)
    upgrade(svc.engine)
    return svc


def _raw_values(svc) -> list[str]:
    with unit_of_work(svc.engine, write=False) as conn:
        out = []
        for table in (resource, resource_history):
            for (content,) in conn.execute(select(table.c.content).where(table.c.resource_type == "Patient")):
                out += [t["value"] for t in content.get("telecom", [])]
        return out


def test_rotation_reencrypts_current_and_past_versions(tmp_path):
    old = _services(tmp_path, [K1])
    patient = {"resourceType": "Patient", "telecom": [{"system": "phone", "value": "13800138000"}]}
    with unit_of_work(old.engine) as conn:
        repo = old.repository(conn, AccessContext.system())
        pid = repo.create("Patient", patient).resource["id"]
        repo.update("Patient", pid, {**patient, "id": pid, "telecom": [{"system": "phone", "value": "13900139000"}]})
    assert all(v.startswith("enc:k1:") for v in _raw_values(old))

    new = _services(tmp_path, [K2, K1])  # the new key first, the old one still decrypts
    assert remaining(new.engine, new.cipher) == {"k1": 3}
    done = rotate(new.engine, new.cipher, batch=1)
    assert done == {"resource": 1, "resource_history": 2}
    assert all(v.startswith("enc:k2:") for v in _raw_values(new)) and not remaining(new.engine, new.cipher)
    assert rotate(new.engine, new.cipher) == {"resource": 0, "resource_history": 0}  # idempotent

    only_new = _services(tmp_path, [K2])  # the old key removed
    with unit_of_work(only_new.engine, write=False) as conn:
        repo = only_new.repository(conn, AccessContext.system())
        assert repo.read("Patient", pid).resource["telecom"][0]["value"] == "13900139000"
        assert repo.vread("Patient", pid, "1").resource["telecom"][0]["value"] == "13800138000"
