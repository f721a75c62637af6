"""One error type for the whole platform, with a category mapped to transports in one place each.

The categories follow Blaze's anomaly categories; ``/fhir`` renders them as an ``OperationOutcome``,
``/api`` as problem details, DICOM as a status. Nothing below the transports formats an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Category(Enum):
    # value: (HTTP status, FHIR issue.code used when none is given)
    INCORRECT = (400, "invalid")
    UNAUTHENTICATED = (401, "login")
    FORBIDDEN = (403, "forbidden")
    NOT_FOUND = (404, "not-found")
    METHOD_NOT_ALLOWED = (405, "not-supported")
    CONFLICT = (409, "conflict")
    GONE = (410, "deleted")
    PRECONDITION_FAILED = (412, "conflict")
    TOO_LARGE = (413, "too-costly")
    UNSUPPORTED_MEDIA = (415, "not-supported")
    UNPROCESSABLE = (422, "processing")
    TOO_MANY_REQUESTS = (429, "throttled")  # with a Retry-After header (RFC 6585 §4)
    UNAVAILABLE = (503, "transient")
    FAULT = (500, "exception")
    NOT_IMPLEMENTED = (501, "not-supported")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def issue_code(self) -> str:
        return self.value[1]


@dataclass
class Issue:
    """One problem: a human message, an optional FHIR issue code and FHIRPath-like location."""

    message: str
    code: str | None = None
    expression: str | None = None
    severity: str = "error"


@dataclass
class TelemedError(Exception):
    category: Category
    message: str
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if not self.issues:
            self.issues = [Issue(self.message)]

    def __str__(self) -> str:
        return self.message


def incorrect(message: str, expression: str | None = None, code: str | None = None) -> TelemedError:
    return TelemedError(Category.INCORRECT, message, [Issue(message, code, expression)])


def not_found(message: str) -> TelemedError:
    return TelemedError(Category.NOT_FOUND, message)
