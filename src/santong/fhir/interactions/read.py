"""read — http://hl7.org/fhir/R4/http.html#read, with conditional read (#cread).

GET (or HEAD) [base]/[type]/[id]: the current version, 404 if unknown, 410 if deleted;
`If-None-Match` / `If-Modified-Since` answer 304 when the client's copy is current.
"""

from __future__ import annotations

from santong.fhir.call import Call
from santong.fhir.outcome import error
from santong.fhir.representation import read_result
from santong.fhir.request import FhirResponse
from santong.fhir.versioning import etag, not_modified, version_headers


async def read(call: Call) -> FhirResponse:
    assert call.id is not None
    stored = await call.tx.read_current(call.type, call.id)
    if stored is None:
        raise error(404, "not-found", f"Resource {call.type}/{call.id} is not known")
    if stored.deleted:
        raise error(410, "deleted", f"Resource {call.type}/{call.id} was deleted",
                    headers={"ETag": etag(stored.version_id)})
    request = call.request
    if not_modified(request.header("if-none-match"), request.header("if-modified-since"), stored):
        return FhirResponse(304, headers=version_headers(stored), last_modified=stored.last_updated)
    return read_result(request, stored)
