"""OperationOutcome rendering of :class:`TelemedError` (the one place /fhir maps errors)."""

from __future__ import annotations

from telemed.kernel.errors import TelemedError


def operation_outcome(error: TelemedError) -> dict:
    issues = []
    for issue in error.issues:
        entry: dict = {
            "severity": issue.severity,
            "code": issue.code or error.category.issue_code,
            "diagnostics": issue.message,
        }
        if issue.expression:
            entry["expression"] = [issue.expression]
        issues.append(entry)
    return {"resourceType": "OperationOutcome", "issue": issues}


def information(message: str) -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": message}],
    }
