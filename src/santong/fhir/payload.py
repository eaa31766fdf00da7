"""Reading a resource from a request body and checking it before anything is written.

http://hl7.org/fhir/R4/http.html#2.21.0.13 — 400 when the body cannot be parsed or fails the
basic rules of FHIR JSON; 422 when it parses but breaks cardinality or business rules.
"""

from __future__ import annotations

from typing import Any

from santong.fhir import jsonio
from santong.fhir.formats import check_body_media_type
from santong.fhir.outcome import FhirError, Issue, error
from santong.fhir.request import FhirRequest
from santong.validation import validate_resource
from santong.validation.registry import validate_write

# Issue codes that mean "parsed, but the content breaks a rule" rather than "not valid FHIR JSON".
_UNPROCESSABLE = {"required", "business-rule", "invariant"}


def read_body(request: FhirRequest) -> Any:
    if request.resource is not None:
        return request.resource
    check_body_media_type(request)
    if not request.body or not request.body.strip():
        raise error(400, "required", "The request has no body: a resource is required")
    try:
        return jsonio.loads(request.body)
    except (jsonio.JsonError, ValueError, RecursionError) as exc:
        raise error(400, "structure", f"The body is not valid JSON: {exc}") from None


def parse_resource(request: FhirRequest, resource_type: str) -> dict[str, Any]:
    """The request's resource, valid structurally as `resource_type`, else a FhirError."""
    resource = read_body(request)
    if not isinstance(resource, dict):
        raise error(400, "structure", "The body must be a JSON object (a FHIR resource)")
    found = resource.get("resourceType")
    if found != resource_type:
        raise error(
            400, "invalid",
            f"The resource is a {found!r} but this request is for {resource_type}",
            expression="resourceType",
        )
    problems = validate_resource(resource, resource_type)
    if problems:
        issues = [Issue(p.code, p.diagnostics, p.severity, p.expression) for p in problems]
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        if errors:
            status = 422 if all(i.code in _UNPROCESSABLE for i in errors) else 400
            raise FhirError(status, issues)
    # Profiles the resource claims (meta.profile) or must meet, when loaded; warnings pass.
    profile_problems = validate_write(resource)
    if any(p.severity in ("error", "fatal") for p in profile_problems):
        raise FhirError(422, [Issue(p.code, p.diagnostics, p.severity, p.expression)
                              for p in profile_problems])
    return resource
