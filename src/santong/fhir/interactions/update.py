"""update — http://hl7.org/fhir/R4/http.html#update, with update-as-create and
conditional update (#cond-update).

PUT [base]/[type]/[id]: the body's id must equal the URL's. An unknown id creates the resource
with that id (201); otherwise the next version is written (200). `If-Match` makes it a
version-aware update (412 when stale); `If-None-Match: *` only creates.
PUT [base]/[type]?[search]: no match creates, one match updates it, more give 412.
"""

from __future__ import annotations

from typing import Any

from santong.fhir.call import Call
from santong.fhir.interactions.conditional import select_single
from santong.fhir.outcome import error
from santong.fhir.payload import parse_resource
from santong.fhir.representation import write_result
from santong.fhir.request import FhirResponse
from santong.fhir.storing import create_version_1, new_id, write_next
from santong.fhir.versioning import check_if_match


async def update(call: Call) -> FhirResponse:
    assert call.id is not None
    resource = parse_resource(call.request, call.type)
    body_id = resource.get("id")
    if body_id is None:
        raise error(400, "required", f"The resource must have an id equal to the URL's "
                    f"({call.id!r}) to be updated", expression=f"{call.type}.id")
    if body_id != call.id:
        raise error(400, "invalid", f"The resource id {body_id!r} does not match the URL's "
                    f"id {call.id!r}", expression=f"{call.type}.id")
    return await update_resource(call, call.id, resource)


async def update_resource(call: Call, id: str, resource: dict[str, Any]) -> FhirResponse:
    request = call.request
    if_match = request.header("if-match")
    only_create = (request.header("if-none-match") or "").strip() == "*"
    current = await call.tx.read_current(call.type, id, for_update=True)
    if current is None:
        check_if_match(if_match, None)
        stored = await create_version_1(call.tx, resource, id, "PUT")
        if stored is not None:
            return write_result(request, stored, 201, "Created")
        # A concurrent create of the same id committed first: update its version instead.
        current = await call.tx.read_current(call.type, id, for_update=True)
        assert current is not None
    check_if_match(if_match, current)
    if only_create and not current.deleted:
        raise error(412, "duplicate", f"{call.type}/{id} exists and If-None-Match is '*'")
    stored = await write_next(call.tx, current, resource, "PUT")
    # Re-creating a deleted resource is a creation as far as the client can tell.
    status = 201 if current.deleted else 200
    return write_result(request, stored, status, "Created" if current.deleted else "Updated")


async def conditional_update(call: Call) -> FhirResponse:
    resource = parse_resource(call.request, call.type)
    found = await select_single(call, call.request.query, "a conditional update")
    body_id = resource.get("id")
    if found is not None:
        target = found.id
        if body_id is not None and body_id != target:
            raise error(400, "invalid", f"The resource id {body_id!r} differs from the matched "
                        f"resource {call.type}/{target}", expression=f"{call.type}.id")
        return await update_resource(call, target, resource)
    if body_id is not None:
        return await update_resource(call, body_id, resource)
    while True:
        stored = await create_version_1(call.tx, resource, new_id(), "PUT")
        if stored is not None:
            return write_result(call.request, stored, 201, "Created")
