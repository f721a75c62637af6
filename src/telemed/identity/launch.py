"""SMART App Launch v2 standalone launch with a patient context (``launch/patient``, ``patient/``
scopes): which patient an app's token is bound to (no HTTP here).

A patient-role account is bound to its own Patient (``account.patient_id``). Anyone else picks a
patient after signing in, among the patients their own access rules let them see; the choice is
checked again with their rules before the code is issued. The token then carries the ``patient``
claim, and the store narrows the user's rules to that patient's compartment
(:func:`telemed.fhir.store.access.visibility`).

Between the sign-in and the choice the authorization page keeps a short-lived signed proof of the
sign-in (an HMAC under the server secret, bound to the client and the PKCE challenge), never the
password.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import jwt

from telemed.fhir.search import query as fhir_query
from telemed.fhir.store import searching
from telemed.fhir.store.context import AccessContext
from telemed.identity import tokens
from telemed.kernel.errors import Category, TelemedError

LAUNCH_PATIENT = "launch/patient"
PROOF_AUDIENCE = "telemed-oauth-launch"
PROOF_ALGORITHM = "HS256"  # made and checked by this server only
PROOF_TTL = timedelta(minutes=5)
MAX_LISTED = 20
PATIENT_ID_LENGTH = 64


def needs_patient(scopes: list[str]) -> bool:
    """A grant with ``launch/patient`` or any ``patient/`` scope is bound to one patient."""
    return LAUNCH_PATIENT in scopes or any(s.startswith("patient/") for s in scopes)


def proof(secret: str, username: str, client_id: str, code_challenge: str, now: datetime) -> str:
    claims = {"sub": username, "aud": PROOF_AUDIENCE, "client_id": client_id, "code_challenge": code_challenge,
              "iat": int(now.timestamp()), "exp": int((now + PROOF_TTL).timestamp())}  # fmt: skip
    return jwt.encode(claims, secret, algorithm=PROOF_ALGORITHM)


def verify_proof(secret: str, token: str, client_id: str, code_challenge: str) -> str:
    """The user name a proof was made for, when it is this client's and this request's."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[PROOF_ALGORITHM], audience=PROOF_AUDIENCE, options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError:
        raise TelemedError(Category.UNAUTHENTICATED, "The sign-in has expired") from None
    if claims.get("client_id") != client_id or claims.get("code_challenge") != code_challenge:
        raise TelemedError(Category.UNAUTHENTICATED, "The sign-in was for another request")
    return claims["sub"]


def user_context(acct) -> AccessContext:
    """The account's own access rules, reading Patients only (to list and check the choice)."""
    return tokens.context_from_claims(
        {"sub": acct.username, "scope": "user/Patient.rs", "roles": list(acct.roles or []),
         "org": acct.organization_id, "practitioner": acct.practitioner_id, "patient": None}
    )  # fmt: skip


def patient_label(patient: dict) -> str:
    """A patient as the picker shows it: name, gender and birth date (no ID number)."""
    names = patient.get("name") or [{}]
    name = names[0].get("text") or " ".join([names[0].get("family", ""), *names[0].get("given", [])]).strip()
    parts = [name or patient["id"], patient.get("gender", ""), patient.get("birthDate", "")]
    return " · ".join(p for p in parts if p)


def visible_patients(repo, name: str | None = None, limit: int = MAX_LISTED) -> list[tuple[str, str]]:
    """``(id, label)`` of the patients ``repo``'s caller may see (newest first; by name when given)."""
    params = [("_sort", "-_lastUpdated"), ("_count", str(limit)), ("_total", "none")]
    if name:
        params.append(("name", name[:64]))
    q = fhir_query.parse("Patient", params, pageable=False, max_count=limit)
    return [(m.resource["id"], patient_label(m.resource)) for m in searching.search(repo, q, "").matches]


def may_open(repo, patient_id: str) -> bool:
    """Whether ``repo``'s caller may see ``Patient/{patient_id}`` (their access rules)."""
    if not patient_id or len(patient_id) > PATIENT_ID_LENGTH:
        return False
    try:
        repo.read("Patient", patient_id)
    except TelemedError as exc:
        if exc.category in (Category.NOT_FOUND, Category.GONE, Category.FORBIDDEN):
            return False
        raise
    return True
