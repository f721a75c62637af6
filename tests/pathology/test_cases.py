"""Pathology cases on SQLite and PostgreSQL: request -> claim/assign -> report -> signed PDF ->
acknowledgement -> amendment; a frozen section's preliminary result and its escalation."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.kernel.errors import Category, TelemedError
from telemed.pathology import casemodel as m
from telemed.pathology import cases
from telemed.pathology import workflow as wf
from tests.pathology import cases_net

SECTIONS = {"gross": "灰白组织一块 1.5×1×0.8 cm", "microscopic": "腺体排列紊乱，细胞异型明显",
            "diagnosis": "（胃窦）中分化腺癌", "ihc": "建议 HER2、Ki-67", "comments": "请结合临床"}  # fmt: skip


def run(services, ctx, fn, *args, **kwargs):
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, ctx)
        out = fn(repo, *args, **kwargs)
        if services.outbox is not None and getattr(out, "notices", None):
            cases.enqueue(repo, services.outbox, out.notices, services.site_url)
        return out


def form(net, kind=wf.ROUTINE, **kw):
    base = dict(kind=kind, centre=net.centre, slides=net.slides, accession="S26-0412", site="胃窦活检",
                history="上腹痛3月", gross="灰白组织一块", question="良恶性？",
                callback="+8613900001111" if kind == wf.FROZEN else "")  # fmt: skip
    return cases.RequestForm(**{**base, **kw})


def test_routine_case_end_to_end(services):
    net = cases_net.build(services)
    env = cases_net.env(services)
    made = run(services, net.ctx("requester"), cases.request_case, env, net.ctx("requester"), form(net))
    cid = made.case.id
    assert made.case.state == wf.REQUESTED and made.notices[0].practitioners == tuple(sorted(net.pathologists))
    # FHIR: request, specimen, task in the centre's pool, slides based on the request.
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, net.ctx("p1"))
        sr = repo.read("ServiceRequest", cid).resource
        assert sr["specimen"] == [{"reference": f"Specimen/{cid}"}] and sr["priority"] == "routine"
        assert {s["reference"] for s in sr["supportingInfo"]} == {f"ImagingStudy/{s}" for s in net.slides}
        assert repo.read("Specimen", cid).resource["accessionIdentifier"]["value"] == "S26-0412"
        task = repo.read("Task", cid).resource
        assert task["owner"] == {"reference": f"Organization/{net.centre}"} and task["status"] == "requested"
        assert repo.read("ImagingStudy", net.slides[0]).resource["basedOn"][-1]["reference"] == f"ServiceRequest/{cid}"
        assert [c.case.id for c in cases.worklist(repo, services.clock.now())].count(cid) == 1
    # Another county sees nothing of it.
    with unit_of_work(services.engine, write=False) as conn, pytest.raises(TelemedError) as err:
        cases.load(services.repository(conn, net.ctx("outsider")), cid)
    assert err.value.category is Category.NOT_FOUND

    # A pathologist claims it; the other cannot take it any more; the requester cannot claim.
    got = run(services, net.ctx("p1"), cases.act, env, net.ctx("p1"), cid, "claim")
    assert got.case.state == wf.ASSIGNED and got.case.pathologist == net.pathologists[0]
    with pytest.raises(TelemedError) as err:
        run(services, net.ctx("p2"), cases.act, env, net.ctx("p2"), cid, "claim")
    assert err.value.category is Category.CONFLICT
    with pytest.raises(TelemedError) as err:
        run(services, net.ctx("p2"), cases.save_report, env, net.ctx("p2"), cid, SECTIONS)
    assert err.value.category is Category.FORBIDDEN
    # Signing before writing is refused; a draft, then the signature.
    with pytest.raises(TelemedError):
        run(services, net.ctx("p1"), cases.sign_report, env, net.ctx("p1"), cid, signer=services.signer,
            base_url="http://t")  # fmt: skip
    run(services, net.ctx("p1"), cases.save_report, env, net.ctx("p1"), cid, SECTIONS)
    signed = run(services, net.ctx("p1"), cases.sign_report, env, net.ctx("p1"), cid, signer=services.signer,
                 base_url="http://t")  # fmt: skip
    assert signed.case.state == wf.REPORTED and signed.notices[0].practitioners == (net.requester,)
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, net.ctx("requester"))
        dr = repo.read("DiagnosticReport", cid).resource
        assert dr["status"] == "final" and dr["conclusion"] == "（胃窦）中分化腺癌"
        assert m.sections_of(dr) == SECTIONS
        docs = cases.documents(repo, cid)
        assert len(docs) == 1
        pdf = cases.pdf_of(repo, cid, docs[0]["id"])
        assert pdf.startswith(b"%PDF")
        related = [r["reference"] for r in docs[0]["context"]["related"]]
        prov_id = next(r for r in related if r.startswith("Provenance/")).split("/")[1]
        prov = services.repository(conn, AccessContext.system()).read("Provenance", prov_id).resource
        assert prov["target"][0]["reference"].startswith(f"DiagnosticReport/{cid}/_history/")
        assert repo.read("Task", cid).resource["owner"] == {"reference": f"Practitioner/{net.requester}"}
    # The requester acknowledges; an amendment needs a reason and supersedes the first PDF.
    run(services, net.ctx("requester"), cases.acknowledge, env, net.ctx("requester"), cid)
    with pytest.raises(TelemedError):
        run(services, net.ctx("p1"), cases.amend_report, env, net.ctx("p1"), cid, SECTIONS, "",
            signer=services.signer, base_url="http://t")  # fmt: skip
    amended = {**SECTIONS, "diagnosis": "（胃窦）中-低分化腺癌"}
    out = run(services, net.ctx("p1"), cases.amend_report, env, net.ctx("p1"), cid, amended, "复片后修正分化程度",
              signer=services.signer, base_url="http://t")  # fmt: skip
    assert out.case.state == wf.REPORTED and out.case.versions == 2
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, net.ctx("requester"))
        docs = cases.documents(repo, cid)
        assert len(docs) == 1 and docs[0]["docStatus"] == "amended"
        assert repo.read("DiagnosticReport", cid).resource["conclusion"] == "（胃窦）中-低分化腺癌"
        assert base64.b64decode(docs[0]["content"][0]["attachment"]["data"]).startswith(b"%PDF")


def test_frozen_section_assignment_preliminary_and_escalation(services):
    net = cases_net.build(services)
    env = cases_net.env(services, frozen=30, warn_before=10, repeat=10)
    with pytest.raises(TelemedError) as err:  # no call-back number
        run(services, net.ctx("requester"), cases.request_case, env, net.ctx("requester"),
            form(net, wf.FROZEN, callback=""))  # fmt: skip
    assert err.value.category is Category.UNPROCESSABLE
    made = run(services, net.ctx("requester"), cases.request_case, env, net.ctx("requester"), form(net, wf.FROZEN))
    cid, start = made.case.id, made.requested_at
    assert made.deadline == start + timedelta(minutes=30)
    assert made.notices[0].kind == "new-frozen" and made.notices[0].organization == net.centre
    routine = run(services, net.ctx("requester"), cases.request_case, env, net.ctx("requester"), form(net))
    with unit_of_work(services.engine, write=False) as conn:
        listed = [c.case.id for c in cases.worklist(services.repository(conn, net.ctx("p2")), start)]
    assert listed.index(cid) < listed.index(routine.case.id)  # frozen first

    def tick(minutes):
        with unit_of_work(services.engine) as conn:
            repo = services.repository(conn, AccessContext.system())
            notices = [n for n in cases.escalate_due(repo, env, start + timedelta(minutes=minutes)) if n.case == cid]
            cases.enqueue(repo, services.outbox, notices, services.site_url, env)
            return notices

    assert tick(5) == []
    soon = tick(21)
    assert [n.kind for n in soon] == ["due-soon"] and set(soon[0].practitioners) == set(net.pathologists)
    assert tick(22) == []  # once per level
    # The triage officer assigns; the requester cannot.
    with pytest.raises(TelemedError) as err:
        run(services, net.ctx("requester"), cases.act, env, net.ctx("requester"), cid, "assign",
            pathologist=net.pathologists[1])  # fmt: skip
    assert err.value.category is Category.FORBIDDEN
    got = run(services, net.ctx("triage"), cases.act, env, net.ctx("triage"), cid, "assign",
              pathologist=net.pathologists[1])  # fmt: skip
    assert got.notices[0].practitioners == (net.pathologists[1],)
    late = tick(31)
    assert [n.kind for n in late] == ["overdue"] and late[0].organization == net.centre
    assert net.requester in late[0].practitioners
    # The preliminary result goes to the requester and the surgeon's phone; escalation stops.
    pre = run(services, net.ctx("p2"), cases.send_preliminary, env, net.ctx("p2"), cid, "（乳腺）浸润性癌，待石蜡确诊")
    assert pre.case.preliminary == 1 and pre.notices[0].phones == ("+8613900001111",)
    assert tick(60) == []
    with unit_of_work(services.engine, write=False) as conn:
        repo = services.repository(conn, net.ctx("requester"))
        got = cases.preliminaries(repo, cid)
        assert [c["payload"][0]["contentString"] for c in got] == ["（乳腺）浸润性癌，待石蜡确诊"]
        assert cases.load(repo, cid).case.escalation == 2
    # A routine case has no preliminary result.
    run(services, net.ctx("p1"), cases.act, env, net.ctx("p1"), routine.case.id, "claim")
    with pytest.raises(TelemedError) as err:
        run(services, net.ctx("p1"), cases.send_preliminary, env, net.ctx("p1"), routine.case.id, "x")
    assert err.value.category is Category.CONFLICT
    # Release back to the pool, cancellation needs a reason.
    back = run(services, net.ctx("p1"), cases.act, env, net.ctx("p1"), routine.case.id, "release")
    assert back.case.state == wf.REQUESTED and back.case.pathologist is None
    with pytest.raises(TelemedError):
        run(services, net.ctx("requester"), cases.act, env, net.ctx("requester"), routine.case.id, "cancel")
    done = run(services, net.ctx("requester"), cases.act, env, net.ctx("requester"), routine.case.id, "cancel",
               reason="患者转院")  # fmt: skip
    assert done.case.state == wf.CANCELLED


def test_bad_requests_are_refused_clearly(services):
    net = cases_net.build(services)
    env = cases_net.env(services)
    for bad, where in [(dict(slides=[]), "slides"), (dict(accession=" "), "accession"), (dict(kind="x"), "kind"),
                       (dict(centre=net.county), "centre"), (dict(slides=["nope"]), "slides")]:  # fmt: skip
        with pytest.raises(TelemedError) as err:
            run(services, net.ctx("requester"), cases.request_case, env, net.ctx("requester"), form(net, **bad))
        assert err.value.category is Category.UNPROCESSABLE and err.value.issues[0].expression == where, bad
    with pytest.raises(TelemedError) as err:
        run(services, net.ctx("p1"), cases.request_case, env, net.ctx("p1"), form(net))
    assert err.value.category is Category.FORBIDDEN


def test_the_background_watcher_escalates_late_frozen_sections(services):
    from telemed.pathology.escalation import FrozenSectionWatcher

    net = cases_net.build(services)
    env = cases_net.env(services, frozen=30, warn_before=10, repeat=10)
    made = run(services, net.ctx("requester"), cases.request_case, env, net.ctx("requester"), form(net, wf.FROZEN))
    watcher = FrozenSectionWatcher(services.engine, services.clock, services.repository, services.ids,
                                   services.outbox, services.site_url, env.policy)  # fmt: skip
    start = made.requested_at
    late = [n for n in watcher.tick(start + timedelta(minutes=45)) if n.case == made.case.id]
    assert [n.kind for n in late] == ["overdue"] and "15" == late[0].text
    with unit_of_work(services.engine, write=False) as conn:
        task = services.repository(conn, net.ctx("requester")).read("Task", made.case.id).resource
    assert m.case_of(task).escalation == 3
    assert [n for n in watcher.tick(start + timedelta(minutes=46)) if n.case == made.case.id] == []


def test_two_pathologists_claiming_at_once_one_wins(services):
    import threading

    net = cases_net.build(services)
    env = cases_net.env(services)
    cid = run(services, net.ctx("requester"), cases.request_case, env, net.ctx("requester"), form(net)).case.id
    barrier, results = threading.Barrier(2), {}

    def claim(who):
        barrier.wait()
        try:
            run(services, net.ctx(who), cases.act, env, net.ctx(who), cid, "claim")
            results[who] = "ok"
        except TelemedError as exc:
            results[who] = exc.category

    threads = [threading.Thread(target=claim, args=(w,)) for w in ("p1", "p2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, results.values())) == sorted(["ok", str(Category.CONFLICT)]), results
    winner = next(w for w, r in results.items() if r == "ok")
    with unit_of_work(services.engine, write=False) as conn:
        case = cases.load(services.repository(conn, net.ctx("requester")), cid).case
    assert case.pathologist == net.pathologists[int(winner[1]) - 1]
