"""OperationOutcome and the errors that carry one (http://hl7.org/fhir/R4/operationoutcome.html).

Every failure a client can cause is a `FhirError`: an HTTP status plus issues, each with an
issue-type code and, where an element is to blame, its FHIRPath in `expression`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Issue:
    code: str
    diagnostics: str
    severity: str = "error"
    expression: str | None = None

    def to_json(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def information(diagnostics: str) -> dict[str, Any]:
    return operation_outcome([Issue("informational", diagnostics, severity="information")])


@dataclass
class FhirError(Exception):
    status: int
    issues: list[Issue]
    headers: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status}: " + "; ".join(i.diagnostics for i in self.issues)

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def error(
    status: int,
    code: str,
    diagnostics: str,
    expression: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> FhirError:
    return FhirError(status, [Issue(code, diagnostics, expression=expression)], dict(headers or {}))
