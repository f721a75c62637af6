"""Who is calling: the access context every Repository is built with.

Built by the identity layer from the login (see ``telemed.identity.policy``); the store asks it
before every read and write and turns it into SQL filters (``telemed.fhir.store.access``).

``clinical`` says how much of the patient data the caller may see:
- ``all``: every patient (platform administrators, the platform itself);
- ``scoped``: patients whose records the caller's institution holds or was granted, and patients
  granted to the caller personally (an expert assigned to a consultation);
- ``self``: only the caller's own Patient record and compartment (patients using the portal);
- ``none``: no patient data at all (supervisors see statistics, auditors the audit trail).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from telemed.kernel.errors import Category, TelemedError

CLINICAL_MODES = ("all", "scoped", "self", "none")


@dataclass(frozen=True)
class AccessContext:
    user: str
    scopes: frozenset[str] = field(default_factory=lambda: frozenset({"user/*.*"}))
    roles: frozenset[str] = field(default_factory=frozenset)
    organization: str | None = None  # the caller's institution (Organization id)
    practitioner: str | None = None  # the caller's Practitioner id
    # clinical="self": the caller's own Patient id. Any other mode: a SMART launch's patient
    # context; patient data of that patient only, on top of the mode's rules.
    patient: str | None = None
    clinical: str = "scoped"
    break_glass: str | None = None  # a reason given to open records outside the rules (audited)
    reveal: bool = False  # may see ID numbers, phones and addresses unmasked on a single read (audited)

    @classmethod
    def system(cls) -> AccessContext:
        """The platform itself (migrations, demo loader, jobs)."""
        return cls(
            user="system",
            scopes=frozenset({"system/*.*"}),
            roles=frozenset({"platform-admin"}),
            clinical="all",
            reveal=True,
        )

    def with_break_glass(self, reason: str) -> AccessContext:
        return replace(self, break_glass=reason)

    @property
    def unrestricted(self) -> bool:
        """The mode's rules open every patient (a launch's patient context may still narrow them)."""
        return self.clinical == "all" or self.break_glass is not None

    @property
    def sees_all(self) -> bool:
        return self.unrestricted and self.patient is None

    def _allows(self, resource_type: str, mode: str) -> bool:
        # SMART v1 (read/write/*) and v2 (c r u d s) scope suffixes.
        v2 = {"read": set("rs"), "write": set("cud")}[mode]
        for scope in self.scopes:
            _, _, rest = scope.partition("/")
            rtype, _, access = rest.partition(".")
            if rtype not in ("*", resource_type):
                continue
            if access in ("*", mode) or (access and set(access) <= set("cruds") and v2 & set(access)):
                return True
        return False

    def require(self, resource_type: str, mode: str) -> None:
        """``mode`` is ``read`` or ``write``; raises 403 when the token's scopes do not allow it."""
        if not self._allows(resource_type, mode):
            raise TelemedError(Category.FORBIDDEN, f"The access token does not allow {mode} access to {resource_type}")
