"""vread — http://hl7.org/fhir/R4/http.html#vread.

GET [base]/[type]/[id]/_history/[vid]: that version, 404 if there is no such version,
410 if that version is a deletion.
"""

from __future__ import annotations

from santong.fhir.call import Call
from santong.fhir.outcome import error
from santong.fhir.representation import read_result
from santong.fhir.request import FhirResponse
from santong.fhir.versioning import etag


async def vread(call: Call) -> FhirResponse:
    assert call.id is not None and call.version_id is not None
    reference = f"{call.type}/{call.id}/_history/{call.version_id}"
    if not call.version_id.isdigit() or len(call.version_id) > 9:
        raise error(404, "not-found", f"Version {reference} is not known")
    stored = await call.tx.read_version(call.type, call.id, int(call.version_id))
    if stored is None:
        raise error(404, "not-found", f"Version {reference} is not known")
    if stored.deleted:
        raise error(410, "deleted", f"Version {reference} is a deletion",
                    headers={"ETag": etag(stored.version_id)})
    return read_result(call.request, stored)
