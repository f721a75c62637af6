"""Field encryption (AES-256-GCM) and blind indexes (HMAC-SHA-256) for sensitive personal data.

Encrypted values are strings ``enc:<key id>:<base64url(nonce | ciphertext)>``, so they can sit in
any FHIR string element of the stored JSON. Several keys may be configured: the first encrypts,
all decrypt, so keys rotate without downtime (``telemed keys rotate`` re-encrypts old rows).
The blind index key is separate and stable: it lets equality search work on values that are
stored only encrypted (a resident ID number, a phone number) without storing them in clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "enc:"
BLIND_PREFIX = "h:"
_AAD = b"telemed-field-v1"


class FieldCipher:
    def __init__(self, keys: list[tuple[str, bytes]], index_key: bytes):
        if not keys:
            raise ValueError("at least one encryption key is required")
        for kid, key in keys:
            if len(key) != 32 or ":" in kid:
                raise ValueError(f"encryption key {kid!r} must be 32 bytes and its id must not contain ':'")
        self.current_id, self._current = keys[0][0], AESGCM(keys[0][1])
        self._keys = {kid: AESGCM(key) for kid, key in keys}
        self._index_key = index_key

    def encrypt(self, text: str) -> str:
        nonce = os.urandom(12)
        sealed = self._current.encrypt(nonce, text.encode(), _AAD)
        return f"{PREFIX}{self.current_id}:{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def decrypt(self, value: str) -> str:
        kid, _, payload = value[len(PREFIX) :].partition(":")
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        return self._keys[kid].decrypt(raw[:12], raw[12:], _AAD).decode()

    def key_id(self, value: str) -> str:
        return value[len(PREFIX) :].partition(":")[0]

    def blind(self, normalized: str) -> str:
        digest = hmac.new(self._index_key, normalized.encode(), hashlib.sha256).hexdigest()
        return BLIND_PREFIX + digest[:40]


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def parse_keys(spec: str) -> list[tuple[str, bytes]]:
    """``"k2:BASE64,k1:BASE64"`` (newest first) -> [(id, key bytes)]."""
    out = []
    for part in spec.split(","):
        kid, _, b64 = part.strip().partition(":")
        if kid and b64:
            out.append((kid, base64.b64decode(b64)))
    return out
