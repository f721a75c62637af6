"""Access-token signing keys: RS256 key pairs kept in the database, published as a JWK Set.

Every access token (``telemed.identity.tokens``) is signed with the newest *active* key and names
it in its ``kid`` header, so anyone can verify it with the public keys published at
``/.well-known/jwks.json`` (RFC 7517) without sharing a secret with the platform. The keys live in
the ``token_key`` table, so every instance of the app signs and verifies with the same ones.

Rotation (``telemed keys rotate-signing``) retires the active keys and creates a new one. A retired
key signs nothing any more but stays published, and verifies, until the last token it may have
signed has expired (``publish_until``: the retirement time plus the longest token lifetime the
key was used for), so tokens issued before a rotation keep working until their own expiry.

Private keys are sealed with AES-256-GCM under a key derived (HKDF-SHA-256) from the server secret,
the row's kid being the associated data, as the report signing keys are (telemed.reports.signing).

Each instance keeps the keys in memory for ``CACHE_SECONDS`` and reloads them at once (at most
every ``MISS_RELOAD_SECONDS``) when a token names a kid it does not know, so a rotation made by
another instance or the command line is picked up without a restart.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Engine, insert, select, update

from telemed.db.engine import unit_of_work
from telemed.db.schema import token_key as t_key
from telemed.kernel.clock import Clock, SystemClock, as_utc

ALGORITHM = "RS256"
KEY_BITS = 2048
CACHE_SECONDS = 30.0
MISS_RELOAD_SECONDS = 1.0
_HKDF_SALT = b"telemed-token-key"
_HKDF_INFO = b"telemed access token signing keys v1"
_NONCE = 12


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _uint(n: int) -> str:
    return _b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def public_jwk(public: rsa.RSAPublicKey) -> dict:
    """The public JWK of an RSA key with its RFC 7638 thumbprint as ``kid``."""
    numbers = public.public_numbers()
    members = {"e": _uint(numbers.e), "kty": "RSA", "n": _uint(numbers.n)}
    kid = _b64url(hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest())
    return {**members, "kid": kid, "use": "sig", "alg": ALGORITHM}


@dataclass(frozen=True)
class TokenKey:
    kid: str
    jwk: dict
    public: rsa.RSAPublicKey
    private: rsa.RSAPrivateKey | None  # None when it cannot be opened with this server's secret
    created: datetime
    retired: datetime | None
    publish_until: datetime | None


class TokenKeys:
    """The key ring of one database: signs with the active key, verifies with any published one."""

    def __init__(self, engine: Engine, secret_key: str, clock: Clock | None = None, max_ttl_seconds: int = 3600):
        kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO).derive(secret_key.encode())
        self._aead = AESGCM(kek)
        self.engine = engine
        self.clock = clock or SystemClock()
        self.max_ttl = timedelta(seconds=max_ttl_seconds)  # the normal token lifetime
        self._keys: dict[str, TokenKey] = {}
        self._loaded = float("-inf")
        self._lock = threading.Lock()

    # -- sealing -------------------------------------------------------------------------------
    def _seal(self, kid: str, private: rsa.RSAPrivateKey) -> str:
        der = private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        nonce = os.urandom(_NONCE)
        return _b64url(nonce + self._aead.encrypt(nonce, der, kid.encode()))

    def _open(self, kid: str, sealed: str) -> rsa.RSAPrivateKey | None:
        raw = _b64url_decode(sealed)
        try:
            der = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], kid.encode())
        except InvalidTag:  # another secret sealed it; the public half still verifies
            return None
        key = serialization.load_der_private_key(der, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    # -- loading -------------------------------------------------------------------------------
    def _load(self) -> None:
        with unit_of_work(self.engine, write=False) as conn:
            rows = conn.execute(select(t_key).order_by(t_key.c.created, t_key.c.kid)).all()
        keys = {}
        for row in rows:
            known = self._keys.get(row.kid)
            private = known.private if known else self._open(row.kid, row.private_key_encrypted)
            public = serialization.load_pem_public_key(row.public_key.encode())
            assert isinstance(public, rsa.RSAPublicKey)
            keys[row.kid] = TokenKey(
                row.kid, public_jwk(public), public, private, as_utc(row.created),
                as_utc(row.retired) if row.retired else None,
                as_utc(row.publish_until) if row.publish_until else None,
            )  # fmt: skip
        with self._lock:
            self._keys = keys
            self._loaded = time.monotonic()

    def _current(self, force: bool = False) -> dict[str, TokenKey]:
        age = time.monotonic() - self._loaded
        if age > CACHE_SECONDS or (force and age > MISS_RELOAD_SECONDS):
            self._load()
        return self._keys

    def refresh(self) -> None:
        """Reload the keys from the database now (after a rotation in this process)."""
        self._load()

    def _published(self, key: TokenKey, now: datetime) -> bool:
        return key.retired is None or (key.publish_until is not None and key.publish_until > now)

    # -- signing -------------------------------------------------------------------------------
    def signing_key(self, ttl_seconds: int | None = None) -> tuple[str, rsa.RSAPrivateKey]:
        """The kid and private key to sign with (the newest active key; created on first use, in a
        transaction of its own: the app makes it at start-up, before any sign-in's transaction).

        A token living longer than the normal lifetime (``telemed token create --ttl``) extends how
        long its key stays published after a rotation."""
        key = self._active(self._current()) or self._active(self._current(force=True))
        if key is None:
            with unit_of_work(self.engine) as conn:
                self._create(conn, self.clock.now())
            self._load()
            key = self._active(self._keys)
            assert key is not None and key.private is not None
        if ttl_seconds is not None and timedelta(seconds=ttl_seconds) > self.max_ttl:
            self._note_long_lived(key.kid, self.clock.now() + timedelta(seconds=ttl_seconds))
        return key.kid, key.private

    @staticmethod
    def _active(keys: dict[str, TokenKey]) -> TokenKey | None:
        usable = [k for k in keys.values() if k.retired is None and k.private is not None]
        return max(usable, key=lambda k: (k.created, k.kid)) if usable else None

    def _note_long_lived(self, kid: str, expires: datetime) -> None:
        with unit_of_work(self.engine) as conn:
            row = conn.execute(select(t_key.c.longest_expiry).where(t_key.c.kid == kid)).first()
            if row is not None and (row.longest_expiry is None or as_utc(row.longest_expiry) < expires):
                conn.execute(update(t_key).where(t_key.c.kid == kid).values(longest_expiry=expires))

    def _create(self, conn, now: datetime) -> str:
        private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        public = private.public_key()
        kid = public_jwk(public)["kid"]
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        conn.execute(
            insert(t_key).values(
                kid=kid, algorithm=ALGORITHM, public_key=pem.decode(), private_key_encrypted=self._seal(kid, private),
                created=now, retired=None, publish_until=None, longest_expiry=None,
            )
        )  # fmt: skip
        return kid

    def rotate(self) -> tuple[str, list[str]]:
        """Retire the active keys and create a new one; returns ``(new kid, retired kids)``.

        A retired key stays published until ``now + max(normal token lifetime, longest token it
        signed) + CACHE_SECONDS`` (other instances may sign with it until they reload), so every
        token it signed still verifies until that token expires."""
        now = self.clock.now()
        with unit_of_work(self.engine) as conn:
            active = conn.execute(select(t_key).where(t_key.c.retired.is_(None))).all()
            grace = timedelta(seconds=CACHE_SECONDS)
            for row in active:
                until = now + self.max_ttl + grace
                if row.longest_expiry is not None and as_utc(row.longest_expiry) + grace > until:
                    until = as_utc(row.longest_expiry) + grace
                conn.execute(update(t_key).where(t_key.c.kid == row.kid).values(retired=now, publish_until=until))
            kid = self._create(conn, now)
        self._load()
        return kid, [row.kid for row in active]

    # -- verifying -----------------------------------------------------------------------------
    def verification_key(self, kid: str) -> rsa.RSAPublicKey | None:
        """The public key of a published ``kid`` (reloading once when it is unknown here)."""
        key = self._current().get(kid)
        if key is None:
            key = self._current(force=True).get(kid)
        if key is None or not self._published(key, self.clock.now()):
            return None
        return key.public

    def jwks(self) -> dict:
        """The JWK Set of every published key (RFC 7517 §5), newest first."""
        now = self.clock.now()
        keys = sorted(self._current().values(), key=lambda k: (k.created, k.kid), reverse=True)
        return {"keys": [k.jwk for k in keys if self._published(k, now)]}

    def describe(self) -> list[dict]:
        """Every key with its state, for ``telemed keys list-signing``."""
        self._load()
        now = self.clock.now()
        return [
            {"kid": k.kid, "created": k.created, "retired": k.retired, "publish_until": k.publish_until,
             "published": self._published(k, now), "usable": k.private is not None}
            for k in sorted(self._keys.values(), key=lambda k: (k.created, k.kid))
        ]  # fmt: skip
