"""The demo's pathology: the province hospital as the pathology centre with its pathologist, a
routine case with two slides and a frozen section, loaded once; the pathologist sees both, the
frozen section first, and can open the slides' tiles."""

from __future__ import annotations

import tempfile
from pathlib import Path

from telemed.app import Services
from telemed.db.engine import unit_of_work
from telemed.db.migrate import upgrade
from telemed.demo.loader import demo_accounts, load_demo
from telemed.demo.pathology import CASES, CENTRE
from telemed.fhir.store.context import AccessContext
from telemed.pathology import cases
from telemed.pathology.centre import SlideStore
from tests.conftest import make_settings


def test_demo_pathology_cases():
    tmp = Path(tempfile.mkdtemp())
    svc = Services.from_settings(make_settings(tmp, f"sqlite:///{tmp}/demo.db"))
    upgrade(svc.engine)
    assert load_demo(svc)["pathology"] == len(CASES)
    assert load_demo(svc)["pathology"] == 0  # idempotent
    pathologist = next(a for a in demo_accounts() if "pathologist" in a[2] and a[3] == CENTRE)
    ctx = AccessContext(pathologist[0], roles=frozenset(pathologist[2]), organization=CENTRE,
                        practitioner=pathologist[4])  # fmt: skip
    with unit_of_work(svc.engine, write=False) as conn:
        repo = svc.repository(conn, ctx)
        assert pathologist[4] in cases.pathologists(repo, CENTRE)
        work = cases.worklist(repo, svc.clock.now())
        assert [c.case.id for c in work] == ["demo-path-2", "demo-path-1"]  # the frozen section first
        assert work[0].case.kind == "frozen" and len(work[1].slides) == 2
        store = SlideStore(tmp / "pathology")
        rec = store.record(work[1].slides[0])
        assert rec.complete and store.cached_tile(rec, rec.slide_info.max_level, 0, 0).startswith(b"\xff\xd8")
    svc.engine.dispose()
