"""$reindex — rebuild the search index of stored resources.

Not an R4 core operation, but the one HAPI FHIR and Microsoft's server offer for the same need
(https://hapifhir.io/hapi-fhir/docs/server_jpa/search.html): after a custom SearchParameter is
added (http://hl7.org/fhir/R4/searchparameter.html), existing resources are indexed for it.
POST [base]/$reindex (every type) or POST [base]/[type]/$reindex. It runs in the request, in
batches; a durable background job comes with Bulk Data.
"""

from __future__ import annotations

from sqlalchemy import text

from santong.fhir import jsonio
from santong.fhir.call import Call
from santong.fhir.outcome import information
from santong.fhir.request import FhirResponse
from santong.search.index import index_rows

_BATCH = text(
    "SELECT rid, resource_type, content FROM resource WHERE NOT deleted AND rid > :after"
    " AND (CAST(:type AS text) IS NULL OR resource_type = :type) ORDER BY rid LIMIT :limit"
)


async def reindex(call: Call) -> FhirResponse:
    connection = call.tx.connection
    after, done = 0, 0
    while True:
        rows = list(await connection.execute(
            _BATCH, {"after": after, "type": call.resource_type, "limit": 500}))
        if not rows:
            break
        for rid, resource_type, content in rows:
            call.tx.queue_index(rid, resource_type, index_rows(jsonio.loads(content)))
        await call.tx.flush()  # a batch at a time: one statement per 500 resources
        done += len(rows)
        after = rows[-1][0]
    scope = call.resource_type or "all resource types"
    return FhirResponse(200, resource=information(f"Reindexed {done} resources ({scope})"))
