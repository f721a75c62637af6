"""Ed25519 detached JWS signatures (RFC 7515 Appendix F, RFC 8037) with keys in the database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from telemed.db.engine import unit_of_work
from telemed.db.schema import signing_key
from telemed.reports import LocalKeySigner
from telemed.reports.signing import b64url, b64url_decode, jwk_thumbprint
from tests.conftest import unique

NOW = datetime(2026, 3, 3, 6, 15, 42, 123456, tzinfo=UTC)
PAYLOAD = '{"conclusion":"不稳定型心绞痛","resourceType":"DiagnosticReport"}'.encode()


def test_sign_and_verify_round_trip(services):
    signer, user = LocalKeySigner(services.secret_key), unique("signer")
    with unit_of_work(services.engine) as conn:
        sig = signer.sign(conn, user, PAYLOAD, NOW)
        result = signer.verify(conn, sig.jws, PAYLOAD)
    protected, payload, signature = sig.jws.split(".")
    assert payload == ""  # detached (RFC 7515 Appendix F)
    header = json.loads(b64url_decode(protected))
    assert header == {"alg": "EdDSA", "kid": sig.kid, "sigT": "2026-03-03T06:15:42Z"}
    assert len(b64url_decode(signature)) == 64
    assert result.valid and result.kid == sig.kid and result.username == user
    assert result.signed_at == sig.signed_at == NOW.replace(microsecond=0)


def test_tampered_payload_signature_or_header_fails(services):
    signer, user = LocalKeySigner(services.secret_key), unique("signer")
    with unit_of_work(services.engine) as conn:
        sig = signer.sign(conn, user, PAYLOAD, NOW)
        protected, _, signature = sig.jws.split(".")
        assert not signer.verify(conn, sig.jws, PAYLOAD.replace("心绞痛".encode(), "心肌梗死".encode())).valid
        flipped = b64url(bytes([b64url_decode(signature)[0] ^ 1]) + b64url_decode(signature)[1:])
        assert not signer.verify(conn, f"{protected}..{flipped}", PAYLOAD).valid
        later = json.loads(b64url_decode(protected)) | {"sigT": "2027-01-01T00:00:00Z"}
        assert not signer.verify(conn, f"{b64url(json.dumps(later).encode())}..{signature}", PAYLOAD).valid
        assert not signer.verify(conn, "not a jws", PAYLOAD).valid
        assert not signer.verify(conn, "..", PAYLOAD).valid
        other = b64url(json.dumps({"alg": "EdDSA", "kid": "nope"}).encode())
        unknown = signer.verify(conn, f"{other}..{signature}", PAYLOAD)
        assert not unknown.valid and unknown.kid == "nope" and unknown.username is None


def test_keys_persist_across_signer_instances(services):
    user = unique("signer")
    with unit_of_work(services.engine) as conn:
        first = LocalKeySigner(services.secret_key).sign(conn, user, PAYLOAD, NOW)
    with unit_of_work(services.engine) as conn:
        again = LocalKeySigner(services.secret_key)
        second = again.sign(conn, user, b"other", NOW)
        assert second.kid == first.kid
        assert again.verify(conn, first.jws, PAYLOAD).valid
        row = conn.execute(select(signing_key).where(signing_key.c.kid == first.kid)).one()
    assert row.username == user and row.retired is None
    assert first.kid == jwk_thumbprint(row.public_key)  # RFC 7638
    assert len(b64url_decode(row.public_key)) == 32
    # Only the sealed private key is stored, bound to its row.
    assert len(b64url_decode(row.private_key_encrypted)) == 12 + 32 + 16


def test_new_server_secret_retires_the_key_and_old_signatures_still_verify(services):
    user = unique("signer")
    with unit_of_work(services.engine) as conn:
        old = LocalKeySigner(services.secret_key).sign(conn, user, PAYLOAD, NOW)
    rotated = LocalKeySigner("another-server-secret-" + "y" * 40)
    with unit_of_work(services.engine) as conn:
        new = rotated.sign(conn, user, PAYLOAD, NOW + timedelta(days=1))
        assert new.kid != old.kid
        assert rotated.verify(conn, old.jws, PAYLOAD).valid  # public keys are never deleted
        assert rotated.verify(conn, new.jws, PAYLOAD).valid
        rows = conn.execute(select(signing_key).where(signing_key.c.username == user)).all()
    assert {r.kid: r.retired is not None for r in rows} == {old.kid: True, new.kid: False}


def test_retired_key_does_not_vouch_for_later_signatures(services):
    signer, user = LocalKeySigner(services.secret_key), unique("signer")
    with unit_of_work(services.engine) as conn:
        kid, private = signer.active_key(conn, user, NOW)
        signer.retire(conn, user, NOW + timedelta(hours=1))
        before = signer.verify(conn, _jws(kid, private, "2026-03-03T06:30:00Z"), PAYLOAD)
        after = signer.verify(conn, _jws(kid, private, "2026-03-03T08:00:00Z"), PAYLOAD)
        assert signer.sign(conn, user, PAYLOAD, NOW + timedelta(hours=2)).kid != kid
    assert before.valid and not after.valid


def _jws(kid: str, private, sig_t: str) -> str:
    protected = b64url(json.dumps({"alg": "EdDSA", "kid": kid, "sigT": sig_t}).encode())
    return f"{protected}..{b64url(private.sign(f'{protected}.{b64url(PAYLOAD)}'.encode()))}"


def test_one_active_key_per_user(services):
    signer, user = LocalKeySigner(services.secret_key), unique("signer")
    with unit_of_work(services.engine) as conn:
        kid, _ = signer.active_key(conn, user, NOW)
        row = conn.execute(select(signing_key).where(signing_key.c.kid == kid)).one()._asdict()
        with pytest.raises(IntegrityError), conn.begin_nested():
            conn.execute(insert(signing_key).values({**row, "kid": unique("kid")}))


def test_jwks_lets_a_generic_jose_library_verify_offline(services):
    signer, user = LocalKeySigner(services.secret_key), unique("signer")
    with unit_of_work(services.engine) as conn:
        sig = signer.sign(conn, user, PAYLOAD, NOW)
        jwks = signer.jwks(conn)
    jwk = next(k for k in jwks["keys"] if k["kid"] == sig.kid)
    assert jwk == {"kty": "OKP", "crv": "Ed25519", "x": jwk["x"], "kid": sig.kid, "use": "sig", "alg": "EdDSA"}
    # Appendix F: put the payload back between the dots and any JWS implementation verifies it.
    protected, _, signature = sig.jws.split(".")
    attached = f"{protected}.{b64url(PAYLOAD)}.{signature}"
    key = jwt.PyJWK(jwk).key
    assert jwt.api_jws.decode(attached, key, algorithms=["EdDSA"]) == PAYLOAD
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.api_jws.decode(f"{protected}.{b64url(b'tampered')}.{signature}", key, algorithms=["EdDSA"])
