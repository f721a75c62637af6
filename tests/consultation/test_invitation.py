"""Inviting an external expert to one consultation (SQLite and PostgreSQL): the link works once,
for that consultation only, and expires; wrong codes are counted and lock it; the guest's access
is the store's personal grant, which closes when they leave the team or after the follow-up."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from sqlalchemy import select

from telemed.consultation import invitation, model, service
from telemed.consultation import workflow as wf
from telemed.db.engine import unit_of_work
from telemed.db.schema import access_grant, account, job
from telemed.db.schema import invitation as t_invitation
from telemed.fhir.store.access import FOLLOW_UP
from telemed.fhir.store.context import AccessContext
from telemed.identity import tokens
from telemed.identity.passwords import verify_password
from telemed.kernel.clock import FixedClock
from telemed.kernel.errors import Category, TelemedError
from tests.conftest import unique
from tests.consultation.network import build, env
from tests.consultation.test_service import details, read, run

SECRET_NAME = "陈教授"


@pytest.fixture
def net(services):
    return build(services)


def accepted(services, net, **kw) -> str:
    r = net.ctx("requester")
    cid = run(services, r, service.create, details(net, **kw)).consultation.id
    run(services, r, service.act, cid, "submit")
    run(services, net.ctx("qc"), service.act, cid, "accept")
    return cid


def invite(services, net, cid, ctx=None, **kw):
    args = dict(name=SECRET_NAME, institution="上海瑞金医院", title="主任医师", email="chen@ruijin.example.cn",
                phone="13800138000", secret=services.secret_key)  # fmt: skip
    args.update(kw)
    return run(services, ctx or net.ctx("triage"), invitation.invite, cid, **args)


def redeem(services, token, code, now=None):
    return invitation.redeem(services.engine, token, code, now or services.clock.now(), secret=services.secret_key)


def guest_context(services, redeemed) -> AccessContext:
    """The context a guest session's repository gets (the portal decodes its cookie the same way)."""
    token, _ttl = invitation.session_token(services.token_keys, redeemed, services.clock.now(), 3600)
    claims = tokens.decode(services.token_keys, token, audience=tokens.GUEST_AUDIENCE)
    return tokens.context_from_claims(claims)


def test_invite_records_the_expert_in_fhir_and_keeps_only_hashes(services, net):
    cid = accepted(services, net)
    run(services, net.ctx("triage"), service.act, cid, "assign", experts=(net.experts[0],))
    inv, token, code = invite(services, net, cid)
    assert len(token) >= 43 and len(code) == 6 and code.isdigit()

    # The team changed through the workflow: a routine consultation's expert is replaced.
    with unit_of_work(services.engine, write=False) as conn:
        loaded = service.load(services.repository(conn, net.ctx("triage")), cid)
    assert [(e.practitioner, e.external) for e in loaded.consultation.active_experts] == [(inv.practitioner, True)]
    assert loaded.consultation.state == wf.ASSIGNED
    sr = read(services, net.ctx("triage"), "ServiceRequest", cid)
    assert f"Practitioner/{inv.practitioner}" in {p["reference"] for p in sr["performer"]}
    with pytest.raises(TelemedError):
        read(services, net.ctx("e1"), "Patient", net.patient)  # the replaced expert lost access

    p = read(services, net.ctx("triage"), "Practitioner", inv.practitioner)
    assert p["identifier"] == [{"system": invitation.EXTERNAL_EXPERT_SYSTEM, "value": inv.practitioner}]
    assert p["name"][0]["text"] == SECRET_NAME and p["qualification"][0]["code"]["text"] == "主任医师"
    assert {t["system"] for t in p["telecom"]} == {"email", "phone"}
    role = read(services, net.ctx("triage"), "PractitionerRole", f"role-{inv.practitioner}")
    assert role["organization"] == {"display": "上海瑞金医院"}

    with unit_of_work(services.engine, write=False) as conn:
        row = conn.execute(select(t_invitation).where(t_invitation.c.id == inv.id)).first()
        acct = conn.execute(select(account).where(account.c.username == inv.username)).first()
    assert row.token_hash == invitation.token_hash(token) and token not in row and code not in row
    assert row.code_hash == invitation.code_hash(services.secret_key, inv.id, code)
    assert row.created_by == net.ctx("triage").user and row.attempts == 0 and row.used_at is None
    # No password: the account only links the guest session (and its signature) to the Practitioner.
    assert acct.password_hash is None and acct.practitioner_id == inv.practitioner and acct.organization_id is None
    assert not verify_password(acct.password_hash, "")


def test_the_link_works_once(services, net):
    cid = accepted(services, net)
    inv, token, code = invite(services, net, cid)
    redeemed = redeem(services, token, code)
    assert (redeemed.practitioner, redeemed.consultation, redeemed.expires_at) == (inv.practitioner, cid,
                                                                                   inv.expires_at)  # fmt: skip
    for attempt in (code, "000000"):
        with pytest.raises(TelemedError) as exc:
            redeem(services, token, attempt)
        assert exc.value.category is Category.NOT_FOUND  # used links look like unknown ones
    with pytest.raises(TelemedError) as exc:
        redeem(services, "not-a-token", code)
    assert exc.value.category is Category.NOT_FOUND and exc.value.message == invitation.UNKNOWN


def test_wrong_codes_are_counted_and_lock_the_link_after_five(services, net):
    cid = accepted(services, net)
    inv, token, code = invite(services, net, cid)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for left in (4, 3, 2, 1, 0):
        with pytest.raises(invitation.WrongCode) as exc:
            redeem(services, token, wrong)
        assert exc.value.category is Category.UNAUTHENTICATED and exc.value.attempts_left == left
    with pytest.raises(TelemedError) as exc:
        redeem(services, token, code)  # the right code, too late
    assert exc.value.category is Category.FORBIDDEN
    with unit_of_work(services.engine, write=False) as conn:
        assert invitation.invitations(conn, cid)[0].attempts == invitation.MAX_ATTEMPTS
        with pytest.raises(TelemedError) as exc:
            invitation.pending(conn, token, services.clock.now())
        assert exc.value.category is Category.FORBIDDEN


def test_a_wrong_code_then_the_right_one_works(services, net):
    cid = accepted(services, net)
    _inv, token, code = invite(services, net, cid)
    with pytest.raises(invitation.WrongCode):
        redeem(services, token, "12345")
    assert redeem(services, token, f" {code[:3]} {code[3:]} ").consultation == cid  # spaces are ignored


def test_the_link_expires(services, net):
    cid = accepted(services, net)
    inv, token, code = invite(services, net, cid, expires_in=timedelta(hours=24))
    assert inv.expires_at - services.clock.now() <= timedelta(hours=24)
    with pytest.raises(TelemedError) as exc:
        redeem(services, token, code, now=inv.expires_at + timedelta(seconds=1))
    assert exc.value.category is Category.GONE and exc.value.category.status == 410
    with unit_of_work(services.engine, write=False) as conn:
        with pytest.raises(TelemedError) as exc:
            invitation.pending(conn, token, inv.expires_at)
        assert exc.value.category is Category.GONE
    assert redeem(services, token, code).consultation == cid  # still valid before then


def test_expiry_is_72_hours_but_never_after_the_consultations_deadline(services, net):
    now = services.clock.now()
    assert invitation.expiry(now, invitation.DEFAULT_TTL, None) == now + timedelta(hours=72)
    assert invitation.expiry(now, invitation.DEFAULT_TTL, now + timedelta(hours=5)) == now + timedelta(hours=5)
    # An overdue consultation is what an invitation may be for: a past deadline does not cut it to nothing.
    assert invitation.expiry(now, invitation.DEFAULT_TTL, now - timedelta(hours=1)) == now + timedelta(hours=72)

    cid = accepted(services, net)  # routine: the opinion is due 48 h after submission
    inv, _token, _code = invite(services, net, cid)
    with unit_of_work(services.engine, write=False) as conn:
        deadline = service.load(services.repository(conn, net.ctx("triage")), cid).deadline
    assert deadline is not None and inv.expires_at == deadline

    with pytest.raises(TelemedError) as exc:
        invite(services, net, cid, expires_in=timedelta(days=8))
    assert exc.value.category is Category.UNPROCESSABLE


def test_only_the_triage_officer_invites_and_a_refusal_leaves_nothing(services, net):
    cid = accepted(services, net)
    for who in ("requester", "qc", "e1"):
        with pytest.raises(TelemedError) as exc:
            invite(services, net, cid, ctx=net.ctx(who))
        assert exc.value.category in (Category.FORBIDDEN, Category.NOT_FOUND)
    with pytest.raises(TelemedError) as exc:
        invite(services, net, cid, name="", email="", phone="")
    assert exc.value.category is Category.UNPROCESSABLE
    assert {i.expression for i in exc.value.issues} == {"name", "email"}

    mdt = accepted(services, net, kind=wf.MDT)  # an MDT needs two experts: one invited expert alone is refused
    name = unique("外院专家")
    with pytest.raises(TelemedError) as exc:
        invite(services, net, mdt, name=name)
    assert exc.value.category is Category.CONFLICT
    with unit_of_work(services.engine, write=False) as conn:
        assert invitation.invitations(conn, cid) == [] and invitation.invitations(conn, mdt) == []
        assert conn.execute(select(account).where(account.c.display_name == name)).first() is None


def test_an_mdt_invitation_joins_the_team_and_re_triage_keeps_the_expert_external(services, net):
    cid = accepted(services, net, kind=wf.MDT)
    tr = net.ctx("triage")
    run(services, tr, service.act, cid, "assign", experts=(net.experts[0], net.experts[1]))
    inv, _token, _code = invite(services, net, cid)
    with unit_of_work(services.engine, write=False) as conn:
        team = service.load(services.repository(conn, tr), cid).consultation.active_experts
    assert {(e.practitioner, e.external) for e in team} == {(net.experts[0], False), (net.experts[1], False),
                                                            (inv.practitioner, True)}  # fmt: skip
    # The assignment form sends only ids: the invited expert stays marked external.
    loaded = run(services, tr, service.act, cid, "assign", experts=(net.experts[0], inv.practitioner))
    assert {(e.practitioner, e.external) for e in loaded.consultation.active_experts} == {
        (net.experts[0], False), (inv.practitioner, True)}  # fmt: skip


def test_the_guest_reads_that_consultations_patient_only(services, net):
    other_patient = f"{net.patient}-2"
    neighbour = f"{net.patient}-3"
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, AccessContext.system())
        for pid in (other_patient, neighbour):
            managed = {"reference": f"Organization/{net.county}"}
            repo.update("Patient", pid, {"resourceType": "Patient", "id": pid, "name": [{"text": "李娜"}],
                                         "managingOrganization": managed})  # fmt: skip
    cid = accepted(services, net)
    other = accepted(services, net, patient=other_patient)
    run(services, net.ctx("triage"), service.act, other, "assign", experts=(net.experts[1],))
    inv, token, code = invite(services, net, cid)
    guest = guest_context(services, redeem(services, token, code))
    assert guest.practitioner == inv.practitioner and guest.organization is None
    assert guest.roles == {"consulting-expert"} and guest.clinical == "scoped"

    assert read(services, guest, "Patient", net.patient)["id"] == net.patient
    assert read(services, guest, "ServiceRequest", cid)["id"] == cid
    for rt, id_ in (("Patient", other_patient), ("ServiceRequest", other), ("Patient", neighbour)):
        with pytest.raises(TelemedError) as exc:
            read(services, guest, rt, id_)
        assert exc.value.category is Category.NOT_FOUND, (rt, id_)


def test_the_guest_session_token_is_not_a_fhir_access_token(services, net):
    cid = accepted(services, net)
    _inv, token, code = invite(services, net, cid)
    redeemed = redeem(services, token, code)
    now = services.clock.now()
    session, ttl = invitation.session_token(services.token_keys, redeemed, now, 8 * 3600)
    assert ttl <= int((redeemed.expires_at - now).total_seconds())
    with pytest.raises(tokens.TokenError):
        tokens.decode(services.token_keys, session)  # what /fhir and /api use
    claims = jwt.decode(session, options={"verify_signature": False})
    assert claims["aud"] == tokens.GUEST_AUDIENCE and claims["consultation"] == cid and "org" not in claims
    assert claims["exp"] <= int(redeemed.expires_at.timestamp()) + 1
    assert invitation.session_token(services.token_keys, redeemed, now, 600)[1] == 600  # the shorter one wins


def test_the_guest_signs_and_access_closes_after_the_follow_up_or_on_removal(services, net):
    cid = accepted(services, net)
    _inv, token, code = invite(services, net, cid)
    guest = guest_context(services, redeem(services, token, code))
    run(services, guest, service.save_opinion, cid, {"impression": "考虑主动脉夹层可能，建议CTA"})
    with unit_of_work(services.engine) as conn:  # signing checks the account linked to the Practitioner
        done = services.sign_opinion(services.repository(conn, guest), env(services), guest, cid)
    assert done.consultation.state == wf.CONCLUDED
    comp = read(services, net.ctx("requester"), "Composition", model.expert_task_id(cid, guest.practitioner))
    assert comp["status"] == "final"

    # Concluded: the personal grant stays for the follow-up period, then closes.
    with unit_of_work(services.engine, write=False) as conn:
        grant = (access_grant.c.grantee_id == guest.practitioner) & (access_grant.c.source == f"ServiceRequest/{cid}")
        until = conn.execute(select(access_grant.c.valid_until).where(grant)).scalar()
        repo = services.repository(conn, guest)
        assert repo.read("Patient", net.patient)
        repo.clock = FixedClock(services.clock.now() + FOLLOW_UP + timedelta(days=1))
        with pytest.raises(TelemedError):
            repo.read("Patient", net.patient)
    assert until is not None

    # Removed by a re-triage (before the session): access closes at once.
    cid2 = accepted(services, net)
    _inv, token2, code2 = invite(services, net, cid2)
    guest2 = guest_context(services, redeem(services, token2, code2))
    assert read(services, guest2, "ServiceRequest", cid2)
    run(services, net.ctx("triage"), service.act, cid2, "assign", experts=(net.experts[2],))
    with pytest.raises(TelemedError):
        read(services, guest2, "Patient", net.patient)


def test_the_code_goes_by_text_message_sealed(services, net):
    cid = accepted(services, net)
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, net.ctx("triage"))
        inv, token, code = invitation.invite(repo, env(services), net.ctx("triage"), cid, name=SECRET_NAME,
                                             institution="上海瑞金医院", phone="13800138000",
                                             secret=services.secret_key)  # fmt: skip
        sent = invitation.send(repo, services.outbox, inv, invitation.link_for(services.site_url, token), code)
    assert sent == ["sms"]  # no SMTP server configured in the tests: the link is passed on by the centre
    with unit_of_work(services.engine, write=False) as conn:
        jobs = [j for j in conn.execute(select(job).where(job.c.kind == "notify-sms"))
                if j.params.get("username") == inv.username]  # fmt: skip
    assert len(jobs) == 1 and "sealed" in jobs[0].params and code not in str(jobs[0].params)
    assert code in services.outbox.open(jobs[0].params)["text"]
