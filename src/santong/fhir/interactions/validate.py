"""$validate — http://hl7.org/fhir/R4/resource-operation-validate.html.

POST [base]/[type]/$validate and POST [base]/[type]/[id]/$validate take a resource, or a
Parameters with `resource`, `mode` (create | update | delete) and `profile`; `mode` and `profile`
may also be query parameters. GET [base]/[type]/[id]/$validate (and a POST without a body on an
instance) validates the stored resource. The answer is 200 with an OperationOutcome whether or
not the resource is valid: its issues, or one informational "no issues" issue. A request that
cannot be understood (no resource, bad mode, unparsable body) is a 400.

The resource is validated as a write would be (structure, then the profiles it claims and the
ones SANTONG_REQUIRED_PROFILES requires), plus the `profile` asked for, which must be loaded.
`update` also requires the resource's id to be the URL's; `delete` checks that the resource
exists (the server has no rule that forbids a deletion).
"""

from __future__ import annotations

from typing import Any

from santong.fhir import jsonio
from santong.fhir.call import Call
from santong.fhir.outcome import Issue, error, information, operation_outcome
from santong.fhir.payload import read_body
from santong.fhir.request import FhirResponse
from santong.validation import validate_resource
from santong.validation.profiles import ProfileSet, validate_against
from santong.validation.registry import active

_MODES = ("create", "update", "delete")


def _parameters(body: dict[str, Any]) -> tuple[Any, str | None, str | None]:
    resource, mode, profile = None, None, None
    for parameter in body.get("parameter", []) or []:
        if not isinstance(parameter, dict):
            continue
        name = parameter.get("name")
        if name == "resource":
            resource = parameter.get("resource")
        elif name == "mode":
            mode = parameter.get("valueCode") or parameter.get("valueString")
        elif name == "profile":
            profile = (parameter.get("valueUri") or parameter.get("valueCanonical")
                       or parameter.get("valueString"))
    return resource, mode, profile


async def validate(call: Call) -> FhirResponse:
    request = call.request
    mode, profile = request.param("mode"), request.param("profile")
    resource: Any = None
    has_body = request.resource is not None or bool(request.body and request.body.strip())
    if request.method == "POST" and has_body:
        body = read_body(request)
        if (isinstance(body, dict) and body.get("resourceType") == "Parameters"
                and call.type != "Parameters"):
            resource, p_mode, p_profile = _parameters(body)
            mode, profile = p_mode or mode, p_profile or profile
        else:
            resource = body
    if mode is not None and mode not in _MODES:
        raise error(400, "invalid", f"Unknown mode {mode!r}: expected create, update or delete",
                    expression="mode")
    if mode in ("update", "delete") and call.id is None:
        raise error(400, "invalid", f"mode={mode} needs an instance: POST [type]/[id]/$validate",
                    expression="mode")
    issues: list[Issue] = []
    if mode == "delete" or (resource is None and call.id is not None):
        assert call.id is not None
        stored = await call.tx.read_current(call.type, call.id)
        if stored is None or stored.deleted or stored.content is None:
            issues.append(Issue("not-found", f"Resource {call.type}/{call.id} is not known",
                                expression=call.type))
            return FhirResponse(200, resource=operation_outcome(issues))
        if mode == "delete":
            return FhirResponse(200, resource=information(
                f"{call.type}/{call.id} can be deleted: no issues detected"))
        resource = jsonio.loads(stored.content)
    if resource is None:
        raise error(400, "required", "A resource to validate is required (the body, or the "
                    "'resource' parameter of a Parameters)")
    if mode == "update" and isinstance(resource, dict) and resource.get("id") != call.id:
        issues.append(Issue("invalid", f"The resource id {resource.get('id')!r} does not match "
                            f"the URL's id {call.id!r} (mode=update)",
                            expression=f"{call.type}.id"))
    problems = validate_resource(resource, call.type, invariants="all")  # warnings too
    issues.extend(Issue(p.code, p.diagnostics, p.severity, p.expression) for p in problems)
    if isinstance(resource, dict) and resource.get("resourceType") == call.type:
        try:
            issues.extend(_profile_issues(resource, profile))
        except Exception:  # profiles assume the base structure, which may be broken here
            if not any(p.severity == "error" for p in problems):
                raise
            issues.append(Issue("informational", "Profiles were not checked: fix the "
                                "structural errors first", "information"))
    if not issues:
        return FhirResponse(200, resource=information("No issues detected"))
    return FhirResponse(200, resource=operation_outcome(issues))


def _profile_issues(resource: dict[str, Any], asked: str | None) -> list[Issue]:
    registry = active()
    current = registry.current if registry is not None else ProfileSet()
    profiles, missing = current.claimed(resource)
    issues = [Issue("not-supported", f"Profile {url} is required for {resource['resourceType']}"
                    " (SANTONG_REQUIRED_PROFILES) but is not loaded", "error",
                    resource["resourceType"]) for url in missing]
    if asked:
        found = current.get(asked)
        if found is None:
            issues.append(Issue("not-supported", f"Profile {asked} is not known to this server",
                                expression="profile"))
        elif found not in profiles:
            profiles.append(found)
    meta = resource.get("meta")
    claimed = meta.get("profile") if isinstance(meta, dict) else None
    for url in claimed if isinstance(claimed, list) else []:
        if isinstance(url, str) and current.get(url) is None:
            issues.append(Issue("not-supported", f"Profile {url} is not known to this server; "
                                "the resource was not validated against it", "information",
                                f"{resource['resourceType']}.meta.profile"))
    if profiles:
        problems = validate_against(resource, profiles, current)
        issues.extend(Issue(p.code, p.diagnostics, p.severity, p.expression) for p in problems)
    return issues
