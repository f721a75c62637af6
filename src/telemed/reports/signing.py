"""Digital signatures of clinical reports: per-user Ed25519 keys and detached JWS.

A signature is a JWS in compact serialization with a detached payload (RFC 7515 Appendix F:
``header..signature``), algorithm ``EdDSA`` with an Ed25519 key (RFC 8037 §3.1). What is signed is
:func:`canonical_bytes` of a FHIR resource: JSON canonicalized as in RFC 8785 (JCS), without
``meta`` and ``text``, so the signature covers the clinical content and not server bookkeeping or
the generated narrative.

The protected header carries ``kid`` (the RFC 7638 thumbprint of the public key) and ``sigT``,
the claimed signing time as JAdES names it (ETSI TS 119 182-1 §5.2.1). ``sigT`` is informational
here, so it is not listed in ``crit``: generic JOSE libraries can then verify our signatures offline
with the keys published by :meth:`LocalKeySigner.jwks` (RFC 7517 JWK Set, RFC 8037 ``OKP`` keys).

:class:`Signer` is the boundary: a signer backed by a certificate authority or a hardware token
(e.g. a CFCA-issued certificate under the PRC Electronic Signature Law) can replace
:class:`LocalKeySigner` without changing the callers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from telemed.db.schema import signing_key as t_key
from telemed.kernel.clock import as_utc

log = logging.getLogger("telemed.reports")

ALG = "EdDSA"
_HKDF_SALT = b"telemed-signing-key"
_HKDF_INFO = b"telemed report signing keys v1"
_NONCE = 12


@dataclass(frozen=True)
class Signature:
    """A detached compact JWS (RFC 7515 Appendix F) and the key that made it."""

    jws: str
    kid: str
    signed_at: datetime  # the ``sigT`` header value (whole seconds, UTC)


@dataclass(frozen=True)
class VerifiedSignature:
    valid: bool
    kid: str | None = None
    username: str | None = None
    signed_at: datetime | None = None


class Signer(Protocol):
    """Signs payloads on behalf of a user and verifies such signatures later."""

    def sign(self, conn: Connection, username: str, payload: bytes, now: datetime) -> Signature: ...

    def verify(self, conn: Connection, jws: str, payload: bytes) -> VerifiedSignature: ...

    def jwks(self, conn: Connection) -> dict: ...


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwk_thumbprint(x: str) -> str:
    """RFC 7638 §3: SHA-256 over the required members of an OKP key, in lexicographic order."""
    members = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(members.encode()).digest())


def _sig_time(dt: datetime) -> str:
    return as_utc(dt).strftime("%Y-%m-%dT%H:%M:%SZ")


class LocalKeySigner:
    """Keys generated and kept by this server, one active key per user, created on first use.

    Private keys are sealed with AES-256-GCM under a key derived from the server secret with
    HKDF-SHA-256 (RFC 5869); each row has its own random nonce, and the row's kid and username are
    the associated data, so a sealed key copied onto another user's row does not open.
    """

    def __init__(self, secret_key: str):
        kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO).derive(secret_key.encode())
        self._aead = AESGCM(kek)

    # -- keys ----------------------------------------------------------------------------------
    def _seal(self, kid: str, username: str, private: Ed25519PrivateKey) -> str:
        raw = private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        nonce = os.urandom(_NONCE)
        return b64url(nonce + self._aead.encrypt(nonce, raw, f"{kid}|{username}".encode()))

    def _open(self, row) -> Ed25519PrivateKey:
        sealed = b64url_decode(row.private_key_encrypted)
        raw = self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], f"{row.kid}|{row.username}".encode())
        return Ed25519PrivateKey.from_private_bytes(raw)

    def _active_row(self, conn: Connection, username: str):
        return conn.execute(select(t_key).where(t_key.c.username == username, t_key.c.retired.is_(None))).first()

    def active_key(self, conn: Connection, username: str, now: datetime) -> tuple[str, Ed25519PrivateKey]:
        """The user's key in use, created on first use."""
        for _ in range(3):
            row = self._active_row(conn, username)
            if row is not None:
                try:
                    return row.kid, self._open(row)
                except InvalidTag:
                    # The server secret changed: the key cannot sign any more, but its public half
                    # still verifies what it signed. Retire it and start a new one.
                    log.warning(
                        "Signing key %s of %s cannot be opened with the current secret; retired", row.kid, username
                    )
                    self.retire(conn, username, now)
            private = Ed25519PrivateKey.generate()
            x = b64url(private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
            kid = jwk_thumbprint(x)
            values = {
                "kid": kid,
                "username": username,
                "public_key": x,
                "private_key_encrypted": self._seal(kid, username, private),
                "created": now,
                "retired": None,
            }
            try:
                with conn.begin_nested():
                    conn.execute(insert(t_key).values(**values))
            except IntegrityError:
                continue  # another transaction created this user's key first: use that one
            return kid, private
        raise RuntimeError(f"could not obtain a signing key for {username!r}")

    def retire(self, conn: Connection, username: str, now: datetime) -> None:
        """Stop using the user's current key (compromise, leaving); the next signature makes a new one."""
        conn.execute(update(t_key).where(t_key.c.username == username, t_key.c.retired.is_(None)).values(retired=now))

    # -- Signer --------------------------------------------------------------------------------
    def sign(self, conn: Connection, username: str, payload: bytes, now: datetime) -> Signature:
        """A detached JWS (RFC 7515 Appendix F) with EdDSA/Ed25519 (RFC 8037) over ``payload``."""
        kid, private = self.active_key(conn, username, now)
        signed_at = as_utc(now).replace(microsecond=0)
        header = {"alg": ALG, "kid": kid, "sigT": _sig_time(signed_at)}
        protected = b64url(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())
        signing_input = f"{protected}.{b64url(payload)}".encode()
        return Signature(f"{protected}..{b64url(private.sign(signing_input))}", kid, signed_at)

    def verify(self, conn: Connection, jws: str, payload: bytes) -> VerifiedSignature:
        """Verifies a JWS made by :meth:`sign` against ``payload`` with the stored public key.

        Retired keys still verify, except for signatures claiming a time after their retirement.
        """
        parts = jws.split(".")
        if len(parts) != 3:
            return VerifiedSignature(False)
        protected, attached, sig = parts
        encoded = b64url(payload)
        try:
            header = json.loads(b64url_decode(protected))
            signature = b64url_decode(sig)
        except ValueError:
            return VerifiedSignature(False)
        if not isinstance(header, dict):
            return VerifiedSignature(False)
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        # RFC 7515 §4.1.11: a critical header we do not understand makes the JWS invalid.
        if header.get("alg") != ALG or "crit" in header or kid is None or attached not in ("", encoded):
            return VerifiedSignature(False, kid)
        try:
            signed_at = as_utc(datetime.fromisoformat(header["sigT"].replace("Z", "+00:00")))
        except (KeyError, AttributeError, ValueError):
            signed_at = None
        row = conn.execute(select(t_key).where(t_key.c.kid == kid)).first()
        if row is None:
            return VerifiedSignature(False, kid, None, signed_at)
        public = Ed25519PublicKey.from_public_bytes(b64url_decode(row.public_key))
        try:
            public.verify(signature, f"{protected}.{encoded}".encode())
        except InvalidSignature:
            return VerifiedSignature(False, kid, row.username, signed_at)
        retired = as_utc(row.retired) if row.retired is not None else None
        valid = signed_at is not None and (retired is None or signed_at <= retired)
        return VerifiedSignature(valid, kid, row.username, signed_at)

    def jwks(self, conn: Connection) -> dict:
        """All public keys, retired ones included, as a JWK Set (RFC 7517 §5; OKP keys, RFC 8037 §2)."""
        rows = conn.execute(select(t_key.c.kid, t_key.c.public_key).order_by(t_key.c.created, t_key.c.kid)).all()
        return {
            "keys": [
                {"kty": "OKP", "crv": "Ed25519", "x": r.public_key, "kid": r.kid, "use": "sig", "alg": ALG}
                for r in rows
            ]
        }


# -- canonical JSON (RFC 8785) ---------------------------------------------------------------------
_NOT_SIGNED = ("meta", "text")


def canonical_bytes(resource: dict) -> bytes:
    """The bytes signed for a FHIR resource: RFC 8785 JSON Canonicalization Scheme, UTF-8.

    ``meta`` (version, lastUpdated, tags the server may change) and ``text`` (the generated
    narrative) are left out: the signature covers the clinical content only.
    """
    content = {k: v for k, v in resource.items() if k not in _NOT_SIGNED}
    out: list[str] = []
    _write(content, out)
    return "".join(out).encode("utf-8")


def _write(value: object, out: list[str]) -> None:
    if isinstance(value, dict):
        out.append("{")
        # RFC 8785 §3.2.3: members sorted by the UTF-16 code units of their names.
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be"))):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, str):
        out.append(_string(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    else:
        raise TypeError(f"cannot canonicalize {type(value).__name__}")


def _string(text: str) -> str:
    # json.dumps escapes exactly what RFC 8785 §3.2.2.2 escapes (", \, control characters as
    # \b \f \n \r \t or lowercase \u00xx) when non-ASCII characters are kept as they are.
    return json.dumps(text, ensure_ascii=False)


def _number(x: float) -> str:
    """RFC 8785 §3.2.2.3: the ECMAScript Number.prototype.toString form of a double."""
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError("NaN and Infinity are not JSON numbers")
    if x == 0:
        return "0"
    if x < 0:
        return "-" + _number(-x)
    # repr gives the shortest digits that round-trip, which is what ECMAScript uses too.
    _, digits, exponent = Decimal(repr(x)).as_tuple()
    s = "".join(map(str, digits)).rstrip("0")
    exponent += len(digits) - len(s)
    k = len(s)
    n = k + exponent  # the value is 0.s * 10**n
    if k <= n <= 21:
        return s + "0" * (n - k)
    if 0 < n <= 21:
        return s[:n] + "." + s[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + s
    e = n - 1
    mantissa = s if k == 1 else s[0] + "." + s[1:]
    return f"{mantissa}e{'+' if e > 0 else '-'}{abs(e)}"
