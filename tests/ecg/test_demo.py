"""The demo's ECGs: a regional pool and four ECGs from township clinics, loaded once."""

from __future__ import annotations

import tempfile
from pathlib import Path

from telemed.app import Services
from telemed.db.engine import unit_of_work
from telemed.db.migrate import upgrade
from telemed.demo.ecg import ECGS, POOL
from telemed.demo.loader import load_demo
from telemed.ecg import model, service
from telemed.fhir.store.context import AccessContext
from tests.conftest import make_settings


def test_demo_pool_and_ecgs():
    tmp = Path(tempfile.mkdtemp())
    svc = Services.from_settings(make_settings(tmp, f"sqlite:///{tmp}/demo.db"))
    upgrade(svc.engine)
    assert load_demo(svc)["ecg"] == len(ECGS)
    assert load_demo(svc)["ecg"] == 0  # idempotent
    with unit_of_work(svc.engine, write=False) as conn:
        repo = svc.repository(conn, AccessContext.system())
        pools = service.Pools.load(repo)
        pool = pools.pool(POOL)
        assert pool and len(pool.members) >= 3 and "org-township-1" in pool.serves
        waiting = {s.resource["id"]: model.reading_of(s.resource) for s in service.waiting(repo, POOL)}
        assert set(waiting) == {e[0] for e in ECGS}
        assert waiting["demo-ecg-3"].priority == "urgent"
        # A reader of the pool (a city cardiologist) sees the township patient's ECG.
        reader = pool.members[-1]
        ctx = AccessContext(reader, roles=frozenset({"ecg-reader"}), organization="org-city-2", practitioner=reader)
        lead = svc.repository(conn, ctx).read("Observation", "demo-ecg-2-V1").resource
        assert lead["valueSampledData"]["dimensions"] == 1
    svc.engine.dispose()
