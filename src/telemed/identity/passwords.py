"""Password hashing (Argon2id, upgraded on login when parameters change) and the password policy.

Policy (等保 level 3 style): at least 10 characters, at least three of lower case, upper case,
digits and symbols, not containing the user name, not one of the commonly breached passwords,
and not one of the last five.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 10
HISTORY = 5
# The most common passwords of public breach corpora (and their obvious Chinese-keyboard cousins).
COMMON = frozenset(
    """123456 123456789 12345678 password qwerty123 1234567890 1234567 12345 qwerty abc123 111111
    123123 password1 1q2w3e4r 000000 iloveyou 1234 qwertyuiop 123321 666666 654321 7777777 888888
    admin admin123 admin@123 root123 letmein welcome welcome1 passw0rd p@ssw0rd p@ssword password123
    woaini 5201314 woaini1314 aa123456 a123456 a123456789 qq123456 abc123456 123qwe 1qaz2wsx
    1qaz@wsx zxcvbnm asdfghjkl 147258369 112233 520520 Aa123456 Aa123456789 Abc@123 Abc123456
    Qwer1234 Admin@123 Admin123456 Password@1 Password123 P@ssw0rd123 Huawei@123 Hospital@123
    Telemed@123 Doctor@123 Zxcv1234 Asdf1234 Qaz123456 Wsx123456""".split()
)
_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    if not stored_hash:
        return False
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _HASHER.check_needs_rehash(stored_hash)


def policy_problems(password: str, username: str, history: list[str] | None = None) -> list[str]:
    """Readable reasons a new password is refused (empty when acceptable)."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"at least {MIN_LENGTH} characters")
    classes = sum(
        [
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        ]
    )
    if classes < 3:
        problems.append("at least three of: lower case, upper case, digits, symbols")
    if username and username.lower() in password.lower():
        problems.append("must not contain the user name")
    if password in COMMON or password.lower() in {c.lower() for c in COMMON}:
        problems.append("is a commonly used password")
    if any(verify_password(h, password) for h in (history or [])[-HISTORY:]):
        problems.append(f"must differ from the last {HISTORY} passwords")
    return problems
