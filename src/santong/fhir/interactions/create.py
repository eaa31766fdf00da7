"""create — http://hl7.org/fhir/R4/http.html#create, and conditional create (#ccreate).

POST [base]/[type]: the server assigns the id (any id in the body is ignored) and answers
201 with Location. With `If-None-Exist: [search]`, an existing single match is returned with
200 instead, two or more matches give 412; an advisory lock on the criteria makes concurrent
identical conditional creates produce one resource.
"""

from __future__ import annotations

from santong.fhir.call import Call
from santong.fhir.interactions.conditional import select_single
from santong.fhir.outcome import error
from santong.fhir.payload import parse_resource
from santong.fhir.representation import write_result
from santong.fhir.request import FhirResponse
from santong.fhir.storing import create_version_1, new_id
from santong.search.criteria import parse_conditional


async def create(call: Call) -> FhirResponse:
    resource = parse_resource(call.request, call.type)
    if_none_exist = call.request.header("if-none-exist")
    if if_none_exist:
        existing = await select_single(call, parse_conditional(if_none_exist),
                                       "a conditional create (If-None-Exist)")
        if existing is not None:
            return write_result(call.request, existing, 200, "Resource already exists")
    # Ids the server draws (here, or for a transaction's entries) are fresh uuids.
    assigned = call.request.assigned_id
    while True:
        stored = await create_version_1(call.tx, resource, assigned or new_id(), "POST",
                                        fresh=True)
        if stored is not None:
            return write_result(call.request, stored, 201, "Created")
        if assigned:  # a random uuid collides only in theory; an assigned one cannot be redrawn
            raise error(409, "conflict", f"{call.type}/{assigned} already exists")
