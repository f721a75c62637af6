"""Demo teleconsultations in every state, so the board and the worklists show life at first start.

Each one is driven through the real use cases (telemed.consultation.service) as the demo staff
would: the requesting doctor of the patient's own institution, the centre's QC and triage
officers, and province/city experts of the right specialty. Fixed idempotency keys make loading
idempotent: a second run finds every consultation and creates nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from telemed.consultation import Env, availability, model, service
from telemed.consultation import workflow as wf
from telemed.fhir.store.context import AccessContext
from telemed.identity.policy import clinical_mode

CENTRE = "org-province-tmc"
CHINA = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class Case:
    key: str
    kind: str
    target: str  # the state to drive it to
    purpose: str
    summary: str
    question: str
    specialty: str  # SNOMED practice setting (see network.SPECIALTIES)
    hours_from_now: float  # requested / scheduled time


CARDIO, NEURO, RESP, ONCO, SURG, ENDO, PEDS = "394579002", "394591006", "418112009", "394593009", "394609007", \
    "394583002", "394537008"  # fmt: skip

CASES = [
    Case("demo-01", wf.ROUTINE, wf.DRAFT, "明确诊断", "女，45岁，反复头痛半年。", "是否需进一步影像检查？", NEURO, 30),
    Case(
        "demo-02",
        wf.URGENT,
        wf.SUBMITTED,
        "急性胸痛，协助诊治",
        "男，62岁，突发胸痛2小时，心电图ST段抬高。",
        "是否需立即溶栓或转诊？",
        CARDIO,
        0.5,
    ),
    Case(
        "demo-03",
        wf.ROUTINE,
        wf.SUBMITTED,
        "指导治疗方案",
        "男，70岁，慢阻肺急性加重。",
        "抗感染方案是否合适？",
        RESP,
        20,
    ),
    Case("demo-04", wf.ROUTINE, wf.RETURNED, "明确诊断", "女，38岁，甲状腺结节。", "是否需要穿刺？", ENDO, 26),
    Case("demo-05", wf.ROUTINE, wf.ACCEPTED, "术前评估", "男，55岁，拟行胆囊切除术。", "手术风险评估。", SURG, 22),
    Case(
        "demo-06",
        wf.MDT,
        wf.ACCEPTED,
        "多学科制定治疗方案",
        "男，66岁，肺占位性病变，病理提示腺癌。",
        "手术、放化疗如何选择？",
        ONCO,
        28,
    ),
    Case(
        "demo-07",
        wf.ROUTINE,
        wf.ASSIGNED,
        "调整降糖方案",
        "女，59岁，2型糖尿病血糖控制不佳。",
        "胰岛素方案调整。",
        ENDO,
        5,
    ),
    Case("demo-08", wf.ROUTINE, wf.SCHEDULED, "明确诊断", "男，48岁，活动后气促1月。", "是否心功能不全？", CARDIO, 1),
    Case(
        "demo-09",
        wf.MDT,
        wf.SCHEDULED,
        "多学科会诊",
        "女，72岁，脑梗死后吞咽困难伴肺部感染。",
        "康复与抗感染方案。",
        NEURO,
        3,
    ),
    Case("demo-10", wf.ROUTINE, wf.SCHEDULED, "儿科会诊", "男，6岁，反复发热一周。", "是否需要住院？", PEDS, 5.5),
    Case(
        "demo-11",
        wf.ROUTINE,
        wf.IN_SESSION,
        "指导治疗",
        "男，67岁，高血压3级，血压控制不佳。",
        "降压方案调整。",
        CARDIO,
        -0.2,
    ),
    Case("demo-12", wf.ROUTINE, wf.OPINION_DRAFTED, "明确诊断", "女，50岁，咳嗽咳痰2月。", "是否为肺结核？", RESP, -2),
    Case("demo-13", wf.ROUTINE, wf.CONCLUDED, "指导治疗", "男，58岁，房颤。", "是否需要抗凝？", CARDIO, -4),
    Case(
        "demo-14",
        wf.URGENT,
        wf.ACKNOWLEDGED,
        "急会诊",
        "女，33岁，头痛伴呕吐，CT示蛛网膜下腔出血。",
        "是否转上级医院？",
        NEURO,
        -6,
    ),
    Case("demo-15", wf.ROUTINE, wf.ARCHIVED, "复诊指导", "男，61岁，冠脉支架术后3月。", "药物调整。", CARDIO, -30),
    Case("demo-16", wf.ROUTINE, wf.CANCELLED, "明确诊断", "女，40岁，腹痛待查。", "是否外科处理？", SURG, 8),
]

# The order of the states a case passes through on its way to its target.
PATH = [wf.SUBMITTED, wf.ACCEPTED, wf.ASSIGNED, wf.SCHEDULED, wf.IN_SESSION, wf.OPINION_DRAFTED, wf.CONCLUDED,
        wf.ACKNOWLEDGED, wf.ARCHIVED]  # fmt: skip

Opinion = Callable[[object, AccessContext, str], None]  # (repo, expert, consultation id): sign the opinion


def _ctx(user: str, roles: list[str], org: str | None, practitioner: str | None) -> AccessContext:
    return AccessContext(user, roles=frozenset(roles), organization=org, practitioner=practitioner,
                         clinical=clinical_mode(roles))  # fmt: skip


def load_consultations(repo_for: Callable[[AccessContext], object], env: Env, network: list[dict],
                       accounts: list[tuple], sign: Callable | None = None) -> int:  # fmt: skip
    """Drive the demo cases; returns how many were created. ``repo_for(ctx)`` gives a repository
    on the caller's unit of work; ``sign(repo, env, ctx, cid)`` signs an opinion (the report
    machinery), or the plain workflow step when None."""
    practitioners_at: dict[str, list[str]] = {}
    specialty_of: dict[str, str] = {}
    for r in network:
        if r["resourceType"] == "PractitionerRole":
            org = r["organization"]["reference"].split("/", 1)[1]
            prac = r["practitioner"]["reference"].split("/", 1)[1]
            practitioners_at.setdefault(org, []).append(prac)
            specialty_of[prac] = r["specialty"][0]["coding"][0]["code"]
    patients = [r for r in network if r["resourceType"] == "Patient"]
    by_user = {a[0]: a for a in accounts}
    ctx_of = {a[4]: _ctx(a[0], a[2], a[3], a[4]) for a in accounts if a[4]}
    qc = _ctx(*[by_user["qc"][i] for i in (0, 2, 3)], None)
    triage = _ctx(*[by_user["triage"][i] for i in (0, 2, 3)], None)
    experts = [p for org, ps in practitioners_at.items() if org.startswith(("org-province", "org-city")) for p in ps]
    created = 0
    # Consultation hours for the next week: what triage books sessions into.
    system = repo_for(AccessContext.system())
    day = env.clock.now().astimezone(CHINA).replace(hour=0, minute=0, second=0, microsecond=0)
    for expert in experts:
        for res in availability.publish_week(expert, day):
            if not system.exists(res["resourceType"], res["id"]):
                system.update(res["resourceType"], res["id"], res)
    for i, case in enumerate(CASES):
        patient = patients[(i * 7) % len(patients)]
        home = patient["managingOrganization"]["reference"].split("/", 1)[1]
        requester = ctx_of[practitioners_at[home][0]]
        rrepo = repo_for(requester)
        cid = service._consultation_id(requester.user, case.key, env.ids)
        if rrepo.exists("ServiceRequest", cid):
            continue
        now = env.clock.now().replace(second=0, microsecond=0)
        when = now + timedelta(hours=case.hours_from_now)
        details = model.RequestDetails(
            patient=patient["id"], kind=case.kind, purpose=case.purpose, summary=case.summary, question=case.question,
            specialty=case.specialty, requested_time=when,
            consent_attachment={"contentType": "text/plain", "title": "知情同意书（演示）",
                                "data": "5oKj6ICF5bey562+572y55+l5oOF5ZCM5oSP5Lmm"},
        )  # fmt: skip
        service.create(rrepo, env, requester, details, idempotency_key=case.key)
        created += 1
        if case.target == wf.DRAFT:
            continue
        if case.target == wf.RETURNED:
            service.act(rrepo, env, requester, cid, "submit")
            service.act(repo_for(qc), env, qc, cid, "return", reason="请补充甲状腺彩超报告及甲功检查结果")
            continue
        if case.target == wf.CANCELLED:
            service.act(rrepo, env, requester, cid, "withdraw", reason="患者已转上级医院就诊")
            continue
        team = _team(case, experts, specialty_of)
        _drive(case, cid, when, requester, qc, triage, [ctx_of[p] for p in team], repo_for, env, sign)
    return created


def _team(case: Case, experts: list[str], specialty_of: dict[str, str]) -> list[str]:
    matching = [p for p in experts if specialty_of.get(p) == case.specialty]
    others = [p for p in experts if p not in matching]
    need = 2 if case.kind == wf.MDT else 1
    return (matching + others)[:need]


def _drive(case: Case, cid: str, when: datetime, requester, qc, triage, team, repo_for, env: Env, sign) -> None:
    def step(ctx, event, **kw):
        service.act(repo_for(ctx), env, ctx, cid, event, **kw)

    target = PATH.index(case.target)
    step(requester, "submit")
    if target >= PATH.index(wf.ACCEPTED):
        step(qc, "accept")
    if target >= PATH.index(wf.ASSIGNED):
        step(triage, "assign", experts=tuple(e.practitioner for e in team))
    if target >= PATH.index(wf.SCHEDULED):
        step(triage, "schedule", start=when, room=f"room-{case.key}")
    if target >= PATH.index(wf.IN_SESSION):
        step(team[0], "start-session")
    if target >= PATH.index(wf.OPINION_DRAFTED):
        for expert in team:
            service.save_opinion(repo_for(expert), env, expert, cid, {
                "impression": "结合病史及检查结果，考虑诊断明确。", "diagnosis": case.purpose,
                "recommendations": "按上级医院方案调整治疗，监测病情变化。",
                "follow-up": "两周后门诊复诊。"})  # fmt: skip
    if target >= PATH.index(wf.CONCLUDED):
        for expert in team:
            if sign is not None:
                sign(repo_for(expert), env, expert, cid)
            else:
                step(expert, "sign")
    if target >= PATH.index(wf.ACKNOWLEDGED):
        service.acknowledge(repo_for(requester), env, requester, cid, 5, "意见明确，非常感谢")
    if target >= PATH.index(wf.ARCHIVED):
        step(wf_system_ctx(), "archive")


def wf_system_ctx() -> AccessContext:
    return AccessContext.system()
