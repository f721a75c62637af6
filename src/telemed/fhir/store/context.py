"""Who is calling: the access context every Repository is built with.

The identity issue fills this from the login (institution, roles, consultations); the store asks it
before every read and write. Today it knows the user and the token's SMART-style scopes
(``user/*.*``, ``system/Patient.read``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from telemed.kernel.errors import Category, TelemedError


@dataclass(frozen=True)
class AccessContext:
    user: str
    scopes: frozenset[str] = field(default_factory=lambda: frozenset({"user/*.*"}))
    roles: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def system(cls) -> AccessContext:
        """The platform itself (migrations, demo loader, jobs)."""
        return cls(user="system", scopes=frozenset({"system/*.*"}), roles=frozenset({"platform-admin"}))

    def _allows(self, resource_type: str, mode: str) -> bool:
        for scope in self.scopes:
            _, _, rest = scope.partition("/")
            rtype, _, access = rest.partition(".")
            if rtype in ("*", resource_type) and access in ("*", mode):
                return True
        return False

    def require(self, resource_type: str, mode: str) -> None:
        """``mode`` is ``read`` or ``write``; raises 403 when the token's scopes do not allow it."""
        if not self._allows(resource_type, mode):
            raise TelemedError(Category.FORBIDDEN, f"The access token does not allow {mode} access to {resource_type}")
