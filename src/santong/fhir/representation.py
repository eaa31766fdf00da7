"""What a response carries: `Prefer: return=…`, `_summary` and `_elements`.

http://hl7.org/fhir/R4/http.html#ops (Prefer) and http://hl7.org/fhir/R4/search.html#summary,
http://hl7.org/fhir/R4/search.html#elements. Full reads splice the stored bytes; only a subset
request parses them.
"""

from __future__ import annotations

from typing import Any

from santong import definitions
from santong.fhir import jsonio
from santong.fhir.outcome import error, information
from santong.fhir.request import FhirRequest, FhirResponse
from santong.fhir.versioning import version_headers
from santong.storage.repository import StoredVersion

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
_ALWAYS = ("resourceType", "id", "meta")
SUMMARY_MODES = ("true", "text", "data", "count", "false")


def prefer_return(request: FhirRequest) -> str:
    """The `return` preference: minimal, representation (the default) or OperationOutcome."""
    for part in (request.header("prefer") or "").split(","):
        for token in part.split(";"):
            name, _, value = token.strip().partition("=")
            if name.strip().lower() == "return":
                value = value.strip().strip('"')
                if value in ("minimal", "representation", "OperationOutcome"):
                    return value
    return "representation"


def location(request: FhirRequest, stored: StoredVersion) -> str:
    return f"{request.base_url}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}"


def write_result(
    request: FhirRequest, stored: StoredVersion, status: int, message: str
) -> FhirResponse:
    """The answer to a create or update, shaped by `Prefer: return`."""
    headers = version_headers(stored)
    headers["Location"] = location(request, stored)
    preference = prefer_return(request)
    moment = stored.last_updated
    if preference == "minimal":
        return FhirResponse(status, headers=headers, last_modified=moment)
    if preference == "OperationOutcome":
        return FhirResponse(status, resource=information(message), headers=headers,
                            last_modified=moment)
    assert stored.content is not None
    return FhirResponse(status, body=stored.json_bytes(), headers=headers,
                        last_modified=moment)


def _subset(resource: dict[str, Any], keep: set[str] | frozenset[str]) -> dict[str, Any]:
    # A primitive's `_name` sibling (its id and extensions) goes with it.
    subset = {k: v for k, v in resource.items()
              if k in keep or k in _ALWAYS or (k[0] == "_" and k[1:] in keep)}
    meta = dict(subset.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    subset["meta"] = meta
    return subset


def summary_and_elements(request: FhirRequest, resource_type: str) -> tuple[str | None, list[str]]:
    """The validated `_summary` mode and `_elements` list of a request."""
    summary = request.param("_summary")
    if summary is not None and summary not in SUMMARY_MODES:
        raise error(400, "invalid", f"Unknown _summary value {summary!r}: use one of "
                    f"{', '.join(SUMMARY_MODES)}", expression="_summary")
    elements: list[str] = []
    for _, value in (p for p in request.query if p[0] == "_elements"):
        for name in value.split(","):
            name = name.strip()
            # "Patient.name" is accepted as well as "name".
            if name.startswith(resource_type + "."):
                name = name[len(resource_type) + 1:]
            if name:
                elements.append(name)
    return summary, elements


def apply_subsetting(
    resource: dict[str, Any], summary: str | None, elements: list[str]
) -> dict[str, Any]:
    resource_type = resource["resourceType"]
    if summary == "true":
        return _subset(resource, definitions.summary_elements(resource_type))
    if summary == "text":
        return _subset(resource, {"text", *definitions.mandatory_elements(resource_type)})
    if summary == "data":
        return _subset(resource, set(resource) - {"text"})
    if elements and summary != "false":
        return _subset(resource, {*elements, *definitions.mandatory_elements(resource_type)})
    return resource


def read_result(request: FhirRequest, stored: StoredVersion) -> FhirResponse:
    """The answer to a read or vread: the stored bytes, or a `_summary`/`_elements` subset."""
    assert stored.content is not None
    headers = version_headers(stored)
    summary, elements = summary_and_elements(request, stored.resource_type)
    if summary == "count":
        raise error(400, "invalid", "_summary=count applies to searches, not reads",
                    expression="_summary")
    if summary in (None, "false") and not elements:
        return FhirResponse(200, body=stored.json_bytes(), headers=headers,
                            last_modified=stored.last_updated)
    resource = apply_subsetting(jsonio.loads(stored.content), summary, elements)
    return FhirResponse(200, resource=resource, headers=headers,
                        last_modified=stored.last_updated)
