"""search-type — http://hl7.org/fhir/R4/http.html#search (GET [type]?… and POST [type]/_search).

For now `_id` and `identifier` select; `_count`, `_summary` and `_elements` shape the result;
results are ordered by id and paged by a keyset cursor. Parameters the server does not know
are ignored and reported in an OperationOutcome entry (or rejected with 400 under
`Prefer: handling=strict`), http://hl7.org/fhir/R4/search.html#errors.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from santong.fhir import jsonio
from santong.fhir.bundles import bundle, link, resource_fragment
from santong.fhir.call import Call
from santong.fhir.formats import check_body_media_type
from santong.fhir.interactions.history import page_size
from santong.fhir.outcome import Issue, operation_outcome
from santong.fhir.representation import apply_subsetting, summary_and_elements
from santong.fhir.request import FhirResponse
from santong.search.criteria import compile_criteria

_FORM = "application/x-www-form-urlencoded"


def _strict(call: Call) -> bool:
    prefer = (call.request.header("prefer") or "").replace(" ", "").lower()
    return "handling=strict" in prefer


def _parameters(call: Call) -> list[tuple[str, str]]:
    params = list(call.request.query)
    if call.request.method == "POST":
        check_body_media_type(call.request, allowed={_FORM})
        body = (call.request.body or b"").decode("utf-8", errors="replace")
        params.extend(parse_qsl(body, keep_blank_values=True))
    return params


async def search_type(call: Call) -> FhirResponse:
    params = _parameters(call)
    criteria = compile_criteria(call.type, params, strict=_strict(call))
    summary, elements = summary_and_elements(call.request, call.type)
    count = page_size(call)
    cursor = next((v for k, v in params if k == "_cursor"), None)
    shaping = [(k, v) for k, v in params if k in ("_count", "_summary", "_elements")]
    base = [*criteria.applied, *shaping]
    links = [("self", link(call.request, [*base, *([("_cursor", cursor)] if cursor else [])]))]

    if summary == "count":
        total = await call.tx.count_current(call.type, criteria.where)
        return FhirResponse(200, resource=bundle("searchset", links, [], total=total))

    found = await call.tx.search_current(call.type, criteria.where, count + 1, after_id=cursor)
    page, more = found[:count], len(found) > count
    if more and page:
        links.append(("next", link(call.request, [*base, ("_cursor", page[-1].id)])))
    entries: list[dict[str, Any]] = []
    for stored in page:
        assert stored.content is not None
        resource: Any = stored.content
        if summary not in (None, "false") or elements:
            resource = apply_subsetting(jsonio.loads(stored.content), summary, elements)
        entries.append({
            "fullUrl": f"{call.request.base_url}/{call.type}/{stored.id}",
            "resource": resource_fragment(resource),
            "search": {"mode": "match"},
        })
    if criteria.ignored:
        ignored = ", ".join(criteria.ignored)
        outcome = operation_outcome([Issue(
            "not-supported", f"Search parameters ignored (not supported): {ignored}",
            severity="warning")])
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    total = len(page) if not cursor and not more else None
    return FhirResponse(200, resource=bundle("searchset", links, entries, total=total))

