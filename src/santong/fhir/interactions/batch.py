"""batch — http://hl7.org/fhir/R4/http.html#transaction (batch rules: #brules).

POST [base] with a `batch` Bundle: each entry on its own, in its own database transaction and
in the spec's order (DELETE, POST, PUT/PATCH, GET/HEAD), through `Router.dispatch` like a
single call. An entry's failure is its own answer (status and OperationOutcome); the others
still happen. Entries may not depend on each other, so a reference to another entry's
`urn:uuid:`/`urn:oid:` fullUrl is that entry's error; conditional references are resolved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from santong.fhir.call import Call
from santong.fhir.entries import (
    PLACEHOLDER_PREFIXES,
    Entry,
    parse_entry,
    reference_slots,
    resolve_all_conditional,
    response_entry,
)
from santong.fhir.interactions.transaction import response_bundle
from santong.fhir.outcome import FhirError, error
from santong.fhir.request import FhirRequest, FhirResponse

if TYPE_CHECKING:
    from santong.fhir.router import Router


def _check_independent(entry: Entry, placeholders: set[str]) -> None:
    for holder, key in reference_slots(entry)[0]:
        if holder[key] in placeholders:
            raise error(400, "invalid", f"The reference {holder[key]!r} points at "
                        "another entry of this batch: batch entries are processed "
                        "independently, send a transaction Bundle instead",
                        expression=entry.expression)


async def _run(router: Router, request: FhirRequest, entry: Entry,
               placeholders: set[str]) -> FhirResponse:
    try:
        if entry.problem is not None:
            raise entry.problem
        _check_independent(entry, placeholders)
        async with router.repository.transaction() as tx:
            await resolve_all_conditional(Call(request, tx, router.settings), entry, {}, {})
            return await router.dispatch(entry.request(request), tx)
    except FhirError as exc:
        return FhirResponse(exc.status, resource=exc.outcome(), headers=dict(exc.headers))
    except Exception as exc:  # the entry's own 409/500/503; the batch goes on
        return router.failure_response(exc, request)


async def batch(router: Router, request: FhirRequest, raw: list[Any]) -> FhirResponse:
    entries = [parse_entry(index, item, request.base_url) for index, item in enumerate(raw)]
    placeholders = {e.full_url for e in entries
                    if e.full_url and e.full_url.startswith(PLACEHOLDER_PREFIXES)}
    responses: dict[int, FhirResponse] = {}
    for entry in sorted(entries, key=lambda e: e.order):
        responses[entry.index] = await _run(router, request, entry, placeholders)
    answers = [response_entry(responses[entry.index], entry.method) for entry in entries]
    return FhirResponse(200, resource=response_bundle("batch-response", answers))
