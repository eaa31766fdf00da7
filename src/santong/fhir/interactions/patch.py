"""patch — http://hl7.org/fhir/R4/http.html#patch, with conditional patch.

PATCH [base]/[type]/[id] with a JSON Patch (RFC 6902, https://datatracker.ietf.org/doc/html/
rfc6902, `application/json-patch+json`) or a FHIRPath Patch (a `Parameters` resource,
http://hl7.org/fhir/R4/fhirpatch.html). In a Bundle the entry's resource is a `Binary` whose
`contentType` is `application/json-patch+json`, or the `Parameters`.
PATCH [base]/[type]?[search] patches the single match (none: 404, several: 412).

The patched resource is validated like any update and written as the next version under the
row lock; `If-Match` makes it version-aware. A patch that cannot apply (a failed `test`, a
missing path: 409, RFC 5789 §2.2), is malformed (400) or yields an invalid resource (400/422)
changes nothing.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import jsonpatch
import jsonpointer

from santong.fhir import jsonio
from santong.fhir.call import Call
from santong.fhir.fhirpatch import apply_fhirpath_patch
from santong.fhir.formats import FHIR_JSON, JSON
from santong.fhir.interactions.conditional import select_single
from santong.fhir.outcome import FhirError, Issue, error
from santong.fhir.payload import parse_resource, read_body
from santong.fhir.representation import write_result
from santong.fhir.request import FhirRequest, FhirResponse
from santong.fhir.storing import write_next
from santong.fhir.versioning import check_if_match
from santong.validation import validate_resource

JSON_PATCH = "application/json-patch+json"
_FHIR_TYPES = {FHIR_JSON, JSON, "application/json+fhir", "text/json", "json"}


def _json_patch_document(data: bytes) -> Any:
    try:
        return jsonio.loads(data)
    except (jsonio.JsonError, ValueError, RecursionError) as exc:
        raise error(400, "structure", f"The JSON Patch is not valid JSON: {exc}") from None


def _fhirpath_parameters(resource: Any) -> dict[str, Any]:
    problems = validate_resource(resource, "Parameters")
    errors = [p for p in problems if p.severity in ("error", "fatal")]
    if errors:
        raise FhirError(400, [Issue(p.code, p.diagnostics, p.severity, p.expression)
                              for p in problems])
    return resource


def patch_document(request: FhirRequest) -> tuple[str, Any]:
    """("json", operations) for a JSON Patch, ("fhirpath", Parameters) for a FHIRPath Patch."""
    resource = request.resource
    if resource is None:
        media = (request.header("content-type") or "").split(";")[0].strip().lower()
        if media == JSON_PATCH:
            return "json", _json_patch_document(request.body or b"")
        if media and media not in _FHIR_TYPES:
            raise error(415, "not-supported", f"Unsupported Content-Type {media!r} for PATCH: "
                        f"send {JSON_PATCH} or a FHIRPath Patch Parameters as {FHIR_JSON}")
        resource = read_body(request)
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    if kind == "Parameters":
        return "fhirpath", _fhirpath_parameters(resource)
    if kind == "Binary":
        content_type = str(resource.get("contentType", "")).split(";")[0].strip().lower()
        if content_type != JSON_PATCH:
            raise error(415, "not-supported", f"A Binary patch must have contentType "
                        f"{JSON_PATCH}, not {content_type!r}", expression="Binary.contentType")
        try:
            data = base64.b64decode(str(resource.get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            raise error(400, "value", "Binary.data is not valid base64",
                        expression="Binary.data") from None
        return "json", _json_patch_document(data)
    raise error(400, "invalid", "A PATCH body must be a JSON Patch (application/json-patch+json)"
                " or a FHIRPath Patch Parameters resource")


def apply_json_patch(resource: dict[str, Any], operations: Any) -> Any:
    try:
        return jsonpatch.apply_patch(resource, operations)
    except jsonpatch.InvalidJsonPatch as exc:
        raise error(400, "invalid", f"Invalid JSON Patch: {exc}") from None
    except jsonpatch.JsonPatchTestFailed as exc:
        raise error(409, "conflict", f"JSON Patch test failed: {exc}") from None
    except jsonpatch.JsonPatchConflict as exc:
        raise error(409, "conflict", f"JSON Patch cannot be applied: {exc}") from None
    except jsonpointer.JsonPointerException as exc:
        malformed = "must start with" in str(exc) or "escape" in str(exc)
        raise error(400 if malformed else 409, "invalid" if malformed else "conflict",
                    f"JSON Patch path: {exc}") from None
    except (TypeError, AttributeError) as exc:  # e.g. an operation that is not an object
        raise error(400, "invalid", f"Invalid JSON Patch: {exc}") from None


async def patch_resource(call: Call, id: str) -> FhirResponse:
    current = await call.tx.read_current(call.type, id, for_update=True)
    if current is None:
        raise error(404, "not-found", f"Resource {call.type}/{id} is not known")
    if current.deleted:
        raise error(410, "deleted", f"Resource {call.type}/{id} was deleted")
    check_if_match(call.request.header("if-match"), current)
    kind, document = patch_document(call.request)
    assert current.content is not None
    resource = jsonio.loads(current.content)
    if kind == "json":
        patched = apply_json_patch(resource, document)
    else:
        patched = apply_fhirpath_patch(resource, document)
    if not isinstance(patched, dict) or patched.get("resourceType") != call.type:
        raise error(422, "business-rule", "A patch may not change the resourceType")
    if patched.get("id") != id:
        raise error(422, "business-rule", f"A patch may not change the id ({id!r})",
                    expression=f"{call.type}.id")
    # Validated exactly as an update's body would be.
    parse_resource(FhirRequest("PUT", f"{call.type}/{id}", resource=patched), call.type)
    stored = await write_next(call.tx, current, patched, "PATCH")
    return write_result(call.request, stored, 200, "Patched")


async def patch(call: Call) -> FhirResponse:
    assert call.id is not None
    return await patch_resource(call, call.id)


async def conditional_patch(call: Call) -> FhirResponse:
    found = await select_single(call, call.request.query, "a conditional patch")
    if found is None:
        raise error(404, "not-found", "No resource matches the criteria: nothing to patch")
    return await patch_resource(call, found.id)
