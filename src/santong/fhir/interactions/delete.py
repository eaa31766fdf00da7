"""delete — http://hl7.org/fhir/R4/http.html#delete, and conditional delete.

DELETE [base]/[type]/[id] writes a new, deleted version (reads then give 410; history keeps
every version). Deleting what does not exist or is already deleted changes nothing and
succeeds (204). `If-Match` guards against deleting a version the client has not seen.
DELETE [base]/[type]?[search] deletes the single match; several matches give 412.
"""

from __future__ import annotations

from santong.fhir.call import Call
from santong.fhir.interactions.conditional import select_single
from santong.fhir.outcome import information
from santong.fhir.representation import prefer_return
from santong.fhir.request import FhirResponse
from santong.fhir.storing import write_next
from santong.fhir.versioning import check_if_match, etag


async def delete(call: Call) -> FhirResponse:
    assert call.id is not None
    return await delete_resource(call, call.id)


async def delete_resource(call: Call, id: str) -> FhirResponse:
    current = await call.tx.read_current(call.type, id, for_update=True)
    check_if_match(call.request.header("if-match"), current)
    headers: dict[str, str] = {}
    if current is None or current.deleted:
        message = f"{call.type}/{id} does not exist: nothing to delete"
        if current is not None:
            headers["ETag"] = etag(current.version_id)
    else:
        stored = await write_next(call.tx, current, None, "DELETE")
        headers["ETag"] = etag(stored.version_id)
        message = f"Deleted {call.type}/{id} (version {stored.version_id})"
    if prefer_return(call.request) == "OperationOutcome":
        return FhirResponse(200, resource=information(message), headers=headers)
    return FhirResponse(204, headers=headers)


async def conditional_delete(call: Call) -> FhirResponse:
    found = await select_single(call, call.request.query, "a conditional delete")
    if found is None:
        if prefer_return(call.request) == "OperationOutcome":
            return FhirResponse(200, resource=information("No resource matched: nothing deleted"))
        return FhirResponse(204)
    return await delete_resource(call, found.id)
