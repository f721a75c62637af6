"""Inviting an external expert to one consultation: a time-limited link and a one-time code.

A triage officer (whoever may ``assign`` in the workflow) invites a specialist from outside the
network who has no account. The invitation

- records the expert in FHIR: a ``Practitioner`` (identifier system :data:`EXTERNAL_EXPERT_SYSTEM`,
  name, telecom, title as ``qualification``) and a ``PractitionerRole`` naming the institution
  as text, and puts them on the consultation's team through the workflow (``assign`` with the
  expert marked external): for a routine or urgent consultation they replace the team, for an
  MDT they join it. The team, and with it access to the patient's record, stays in FHIR
  (``ServiceRequest.performer`` opens the record to them, see telemed.fhir.store.access);
- keeps the security data in the ``invitation`` table: the SHA-256 of a random link token
  (``secrets.token_urlsafe(32)``) and an HMAC-SHA256 of a 6-digit code under the server secret,
  bound to the invitation's id. Neither the link nor the code is stored in clear: they are
  returned once (for the triage officer's page) and queued, sealed, to the expert by
  :func:`send` (the link by email, the code by SMS, so one intercepted channel is not enough);
- creates an account row ``ext-<practitioner>`` with no password (no password sign-in is ever
  possible) that links the guest session to the Practitioner: the portal's session check, the
  revocation list ("sign out everywhere", deactivation) and the report signer's check
  (telemed.reports: an account signs only as its own Practitioner) then treat the external
  expert like any expert, without a special case in any of them.

:func:`redeem` exchanges link + code for the facts of a guest session, once: the link expires
(:data:`DEFAULT_TTL`, never after the consultation's deadline while one lies ahead), is used
up by the first right code, and locks after :data:`MAX_ATTEMPTS` wrong ones. The session itself
(:func:`session_token`) is a token of another audience than the platform's access tokens, bound
to the consultation: the portal opens that case only, the FHIR API refuses it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, insert, select, update

from telemed.consultation import model, service
from telemed.consultation import workflow as wf
from telemed.db.engine import unit_of_work
from telemed.db.schema import invitation as t_invitation
from telemed.fhir.store.context import AccessContext
from telemed.fhir.store.repository import Repository
from telemed.identity import ensure_account, tokens
from telemed.identity.keys import TokenKeys
from telemed.identity.signin import audit_account
from telemed.kernel.clock import FixedClock, as_utc
from telemed.kernel.errors import Category, Issue, TelemedError
from telemed.notify import Notification, Outbox, Recipient

EXTERNAL_EXPERT_SYSTEM = "https://telemed.example.cn/fhir/sid/external-expert"
EXPERT_ROLE = "consulting-expert"
DEFAULT_TTL = timedelta(hours=72)
MAX_TTL = timedelta(days=7)
MAX_ATTEMPTS = 5
CODE_DIGITS = 6
USERNAME_PREFIX = "ext-"
DISPLAY_TZ = ZoneInfo("Asia/Shanghai")  # the texts are read in China

# One message for an unknown and a used link: a used link says nothing about the consultation.
UNKNOWN = "This invitation link is not valid or has already been used"
EXPIRED = "This invitation link has expired; ask the telemedicine centre for a new one"
LOCKED = "Too many wrong codes were entered; this invitation link is locked. Ask the telemedicine centre for a new one"
WRONG_CODE = "The code is not valid"

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+?[0-9][0-9 -]{5,18}[0-9]")


@dataclass(frozen=True)
class Invitation:
    id: str
    consultation: str
    practitioner: str
    expires_at: datetime
    created_by: str
    created: datetime
    used_at: datetime | None = None
    attempts: int = 0

    @property
    def username(self) -> str:
        return username_for(self.practitioner)

    @property
    def attempts_left(self) -> int:
        return max(0, MAX_ATTEMPTS - self.attempts)


class WrongCode(TelemedError):
    """The code does not match; the try was counted (``attempts_left`` remain before the lock)."""

    def __init__(self, attempts_left: int):
        super().__init__(Category.UNAUTHENTICATED, WRONG_CODE)
        self.attempts_left = attempts_left


class Redeemed(NamedTuple):
    """What a redeemed invitation opens: this Practitioner, on this consultation, until then."""

    practitioner: str
    consultation: str
    expires_at: datetime
    username: str


def username_for(practitioner: str) -> str:
    return f"{USERNAME_PREFIX}{practitioner}"[:64]


def token_hash(token: str) -> str:
    """The link token as stored: 256 random bits need no salt or stretching, SHA-256 suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


def code_hash(secret: str, invitation_id: str, code: str) -> str:
    """HMAC-SHA256 of the code under the server secret, bound to the invitation: a copy of the
    table alone does not give the million possible codes away."""
    message = f"telemed-invitation-code|{invitation_id}|{code}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _row_to_invitation(row) -> Invitation:
    return Invitation(
        id=row.id, consultation=row.consultation_id, practitioner=row.practitioner_id,
        expires_at=as_utc(row.expires_at), created_by=row.created_by, created=as_utc(row.created),
        used_at=as_utc(row.used_at) if row.used_at else None, attempts=row.attempts,
    )  # fmt: skip


# Inviting ----------------------------------------------------------------------------------------


def _clean(value: str | None, limit: int) -> str:
    return " ".join((value or "").split())[:limit]


def _check_input(name: str, institution: str, email: str, phone: str, expires_in: timedelta) -> None:
    problems = []
    if not name:
        problems.append(Issue("Give the expert's name", "required", "name"))
    if not institution:
        problems.append(Issue("Give the expert's institution", "required", "institution"))
    if not (email or phone):
        problems.append(Issue("Give an email address or a mobile number", "required", "email"))
    if email and not _EMAIL.fullmatch(email):
        problems.append(Issue("The email address is not valid", "value", "email"))
    if phone and not _PHONE.fullmatch(phone):
        problems.append(Issue("The mobile number is not valid", "value", "phone"))
    if not timedelta(0) < expires_in <= MAX_TTL:
        problems.append(Issue("An invitation is valid for at most 7 days", "value", "expires_in"))
    if problems:
        raise TelemedError(Category.UNPROCESSABLE, "The invitation is incomplete", problems)


def _directory_writer(repo: Repository) -> Repository:
    """A repository on the caller's connection that may add the invited person to the directory.

    Directory resources are written by administrators (telemed.fhir.store.access); an invitation
    is the one place where triage adds a person, so the platform writes them on the triage
    officer's behalf, with a context that can write Practitioner and PractitionerRole and read no
    patient data at all."""
    ctx = AccessContext(
        user="system",
        scopes=frozenset({"system/Practitioner.write", "system/PractitionerRole.write"}),
        clinical="none",
    )
    writer = Repository(
        repo.conn, ctx, repo.clock, repo.blobs, ids=repo.ids, blob_threshold=repo.blob_threshold,
        validate=repo.validator, jobs=repo.jobs, hooks=repo.hooks, cipher=repo.cipher,
    )  # fmt: skip
    writer.base_url = repo.base_url
    return writer


def practitioner_resource(pid: str, name: str, title: str, email: str, phone: str) -> dict:
    telecom = []
    if email:
        telecom.append({"system": "email", "value": email, "use": "work"})
    if phone:
        telecom.append({"system": "phone", "value": phone, "use": "mobile"})
    out: dict = {
        "resourceType": "Practitioner",
        "id": pid,
        "identifier": [{"system": EXTERNAL_EXPERT_SYSTEM, "value": pid}],
        "active": True,
        "name": [{"text": name}],
        "telecom": telecom,
    }
    if title:
        # Free text: a display-only coding, so the report prints it under the signature.
        out["qualification"] = [{"code": {"coding": [{"display": title}], "text": title}}]
    return out


def role_resource(pid: str, institution: str, until: datetime) -> dict:
    """The expert's institution, named as text: it is outside the network, so no Organization."""
    return {
        "resourceType": "PractitionerRole",
        "id": f"role-{pid}"[:64],
        "active": True,
        "period": {"end": model.iso(until)},
        "practitioner": model.ref("Practitioner", pid),
        "organization": {"display": institution},
        "code": [{"text": "外院会诊专家"}],
    }


def expiry(now: datetime, expires_in: timedelta, deadline: datetime | None) -> datetime:
    """When the link stops working: ``expires_in`` from now, but never after the consultation's
    deadline while one lies ahead (an overdue consultation is what the invitation is for, so a
    deadline already passed does not cut it to nothing)."""
    until = now + expires_in
    if deadline is not None and now < deadline < until:
        until = deadline
    return until


def invite(
    repo: Repository,
    env: service.Env,
    ctx: AccessContext,
    cid: str,
    *,
    name: str,
    institution: str,
    title: str = "",
    email: str = "",
    phone: str = "",
    expires_in: timedelta = DEFAULT_TTL,
    secret: str,
) -> tuple[Invitation, str, str]:
    """Invite an external expert to consultation ``cid``; returns the invitation, the link token
    and the one-time code (shown once: only their hashes are kept).

    Only who may ``assign`` (the triage officer, in ACCEPTED, ASSIGNED or SCHEDULED) may invite;
    the team changes through the workflow in the same unit of work, so a refused assignment
    (e.g. an MDT that would have fewer than two experts) leaves nothing behind."""
    name, institution, title = _clean(name, 100), _clean(institution, 200), _clean(title, 100)
    email, phone = _clean(email, 200), _clean(phone, 32)
    _check_input(name, institution, email, phone, expires_in)
    loaded = service.load(repo, cid)
    c = loaded.consultation
    actor = service.actor_of(ctx)
    if not wf.may(c, "assign", actor):
        if "triage-officer" not in actor.roles:
            raise TelemedError(Category.FORBIDDEN, "Only the triage officer can invite an external expert")
        raise TelemedError(Category.CONFLICT, f"An expert cannot be invited to a consultation that is {c.state}")
    now = env.clock.now()
    until = expiry(now, expires_in, loaded.deadline)

    pid = env.ids()
    writer = _directory_writer(repo)
    writer.update("Practitioner", pid, practitioner_resource(pid, name, title, email, phone))
    writer.update("PractitionerRole", f"role-{pid}"[:64], role_resource(pid, institution, until))
    # No password: the account exists so the guest session, its revocation and the report
    # signature have an account to check, and nobody can ever sign in with it otherwise.
    ensure_account(repo.conn, username_for(pid), name, [EXPERT_ROLE], now, practitioner_id=pid)

    team = (pid,) if c.kind != wf.MDT else (*(e.practitioner for e in c.active_experts), pid)
    external = (*(e.practitioner for e in c.active_experts if e.external and e.practitioner in team), pid)
    service.act(repo, env, ctx, cid, "assign", experts=team, external=external)

    token = secrets.token_urlsafe(32)
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    inv = Invitation(id=env.ids(), consultation=cid, practitioner=pid, expires_at=until, created_by=ctx.user,
                     created=now)  # fmt: skip
    repo.conn.execute(
        insert(t_invitation).values(
            id=inv.id, token_hash=token_hash(token), consultation_id=cid, practitioner_id=pid,
            code_hash=code_hash(secret, inv.id, code), expires_at=until, used_at=None, attempts=0,
            created_by=ctx.user[:64], created=now,
        )
    )  # fmt: skip
    return inv, token, code


def invitations(conn: Connection, cid: str) -> list[Invitation]:
    """The consultation's invitations, newest first (for the case page: pending, used, expired)."""
    rows = conn.execute(
        select(t_invitation).where(t_invitation.c.consultation_id == cid).order_by(t_invitation.c.created.desc())
    )
    return [_row_to_invitation(r) for r in rows]


# Telling the expert ------------------------------------------------------------------------------


def link_for(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/portal/invite/{token}"


def send(repo: Repository, outbox: Outbox | None, inv: Invitation, link: str, code: str) -> list[str]:
    """Queue the link (email) and the code (SMS) to the expert in the caller's transaction; returns
    the channels used. Nothing is queued where the outbox would keep it in clear (no field
    cipher): the triage officer passes the link and code on instead."""
    if outbox is None or outbox.cipher is None:
        return []
    practitioner = repo.read("Practitioner", inv.practitioner).resource
    name = (practitioner.get("name") or [{}])[0].get("text", "")
    email = next((t["value"] for t in practitioner.get("telecom", []) if t.get("system") == "email"), None)
    phone = next((t["value"] for t in practitioner.get("telecom", []) if t.get("system") in ("phone", "sms")), None)
    number = repo.read("ServiceRequest", inv.consultation).resource["identifier"][0]["value"]
    until = inv.expires_at.astimezone(DISPLAY_TZ).strftime("%Y-%m-%d %H:%M")
    used = []
    if email and "email" in outbox.channels:
        how = "短信收到的" if phone and "sms" in outbox.channels else "远程医学中心告知您的"
        body = (f"{name}，您好：\n\n远程医学中心邀请您作为外院专家参加远程会诊 {number}。请在 {until}（北京时间）前"
                f"打开下面的链接，输入{how} 6 位验证码，即可查看病历并填写会诊意见。链接只能使用一次，"
                f"请勿转发。\n\n{link}")  # fmt: skip
        outbox.enqueue(repo.conn, Notification("consultation.invitation", Recipient(inv.username, name, email, None),
                                               "远程会诊邀请", body, link, channels=("email",)))  # fmt: skip
        used.append("email")
    if phone and "sms" in outbox.channels:
        text = f"远程会诊 {number} 邀请验证码：{code}，{until} 前有效。请勿告知他人。"
        recipient = Recipient(inv.username, name, None, phone)
        outbox.enqueue(repo.conn, Notification("consultation.invitation-code", recipient, "远程会诊邀请验证码", text,
                                               None, channels=("sms",)))  # fmt: skip
        used.append("sms")
    return used


# Redeeming -----------------------------------------------------------------------------------------


def _usable(row, now: datetime) -> None:
    """Refuse a link that cannot be redeemed any more (nothing is written for these)."""
    if row is None or row.used_at is not None:
        raise TelemedError(Category.NOT_FOUND, UNKNOWN)
    if as_utc(row.expires_at) <= now:
        raise TelemedError(Category.GONE, EXPIRED)
    if row.attempts >= MAX_ATTEMPTS:
        raise TelemedError(Category.FORBIDDEN, LOCKED)


def pending(conn: Connection, token: str, now: datetime) -> Invitation:
    """The invitation of a link that can still be redeemed (for the page that asks for the code);
    raises 404 (unknown or used), 410 (expired) or 403 (locked)."""
    row = conn.execute(select(t_invitation).where(t_invitation.c.token_hash == token_hash(token))).first()
    _usable(row, now)
    return _row_to_invitation(row)


def _redeem(conn: Connection, token: str, code: str, now: datetime, secret: str) -> Redeemed | WrongCode:
    row = conn.execute(select(t_invitation).where(t_invitation.c.token_hash == token_hash(token))).first()
    _usable(row, now)
    # Count the try before looking at the code, in one statement: parallel guesses cannot share a try.
    counted = conn.execute(
        update(t_invitation)
        .where(t_invitation.c.id == row.id, t_invitation.c.used_at.is_(None), t_invitation.c.attempts < MAX_ATTEMPTS)
        .values(attempts=t_invitation.c.attempts + 1)
    ).rowcount
    if counted != 1:
        _usable(conn.execute(select(t_invitation).where(t_invitation.c.id == row.id)).first(), now)
        raise TelemedError(Category.FORBIDDEN, LOCKED)
    code = "".join(code.split())
    if not hmac.compare_digest(row.code_hash, code_hash(secret, row.id, code)):
        return WrongCode(MAX_ATTEMPTS - row.attempts - 1)
    used = conn.execute(
        update(t_invitation).where(t_invitation.c.id == row.id, t_invitation.c.used_at.is_(None)).values(used_at=now)
    ).rowcount
    if used != 1:  # a parallel request with the right code was first
        raise TelemedError(Category.NOT_FOUND, UNKNOWN)
    return Redeemed(row.practitioner_id, row.consultation_id, as_utc(row.expires_at), username_for(row.practitioner_id))


def redeem(
    engine: Engine, token: str, code: str, now: datetime, *, secret: str, address: str | None = None
) -> Redeemed:
    """Exchange the link's token and the one-time code for a guest session's facts, once.

    Raises TelemedError: 404 for an unknown or already used link (the same answer for both), 410
    when it has expired, 403 once :data:`MAX_ATTEMPTS` wrong codes were entered, and
    :class:`WrongCode` (401) for a wrong code. Like a password sign-in
    (telemed.identity.signin) this owns its transactions: a wrong code is refused, but the try it
    cost must be committed; every outcome is audited."""
    clock = FixedClock(now)
    try:
        with unit_of_work(engine) as conn:
            result = _redeem(conn, token, code, now, secret)
            if isinstance(result, Redeemed):
                audit_account(conn, clock, result.username, "invitation-redeemed", "0", address,
                              f"consultation {result.consultation}")  # fmt: skip
            else:
                row = conn.execute(select(t_invitation).where(t_invitation.c.token_hash == token_hash(token))).first()
                audit_account(conn, clock, username_for(row.practitioner_id), "invitation-refused", "4", address,
                              WRONG_CODE)  # fmt: skip
    except TelemedError as exc:
        with unit_of_work(engine) as conn:
            audit_account(conn, clock, "anonymous", "invitation-refused", "4", address, exc.message)
        raise
    if isinstance(result, WrongCode):
        raise result
    return result


def session_token(keys: TokenKeys, redeemed: Redeemed, now: datetime, max_ttl_seconds: int) -> tuple[str, int]:
    """A portal session for the external expert: role consulting-expert, their Practitioner, no
    institution, bound to the one consultation (claim ``consultation``) and of the guest audience
    that only the portal accepts; it ends with the invitation (or the normal session length if
    sooner). Returns the token and its lifetime in seconds."""
    ttl = max(1, min(max_ttl_seconds, int((redeemed.expires_at - now).total_seconds())))
    token = tokens.issue_token(
        keys, redeemed.username, ["user/*.*"], ttl, now, [EXPERT_ROLE], practitioner=redeemed.practitioner,
        audience=tokens.GUEST_AUDIENCE, extra={tokens.GUEST_CONSULTATION_CLAIM: redeemed.consultation},
    )  # fmt: skip
    return token, ttl
