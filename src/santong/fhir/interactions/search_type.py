"""search — http://hl7.org/fhir/R4/http.html#search and http://hl7.org/fhir/R4/search.html.

GET [base]/[type]?… and POST [base]/[type]/_search (search-type), GET [base]?_type=… (search-
system), and GET [base]/[compartment]/[id]/[type]?… (compartment search,
http://hl7.org/fhir/R4/compartmentdefinition.html#search). A `searchset` Bundle of matches,
then `_include`d / `_revinclude`d resources, paged by a keyset cursor. Unknown parameters are
ignored and reported in an OperationOutcome entry, or rejected (400) under
`Prefer: handling=strict` (http://hl7.org/fhir/R4/search.html#errors).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from santong import definitions
from santong.fhir import jsonio
from santong.fhir.bundles import bundle, link, resource_fragment
from santong.fhir.call import Call
from santong.fhir.formats import check_body_media_type
from santong.fhir.interactions.history import page_size
from santong.fhir.outcome import Issue, error, operation_outcome
from santong.fhir.representation import apply_subsetting, summary_and_elements
from santong.fhir.request import FhirResponse
from santong.search.engine import SearchResult, SearchSpec, parse_list, search
from santong.search.query import near_distance
from santong.storage.repository import StoredVersion

_FORM = "application/x-www-form-urlencoded"
_TOTALS = ("none", "estimate", "accurate")
# Result parameters echoed in self and next links.
_SHAPING = ("_count", "_summary", "_elements", "_sort", "_total", "_include", "_revinclude",
            "_include:iterate", "_revinclude:iterate", "_type")


def strict_handling(call: Call) -> bool:
    prefer = (call.request.header("prefer") or "").replace(" ", "").lower()
    return "handling=strict" in prefer


def _parameters(call: Call) -> list[tuple[str, str]]:
    params = list(call.request.query)
    if call.request.method == "POST":
        check_body_media_type(call.request, allowed={_FORM})
        body = (call.request.body or b"").decode("utf-8", errors="replace")
        form = parse_qsl(body, keep_blank_values=True)
        if any("\x00" in k or "\x00" in v for k, v in form):
            raise error(400, "invalid", "The search form contains a NUL character")
        params.extend(form)
    return params


def _values(params: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in params if k == name]


def _spec(call: Call, types: list[str], params: list[tuple[str, str]]) -> SearchSpec:
    total = next(iter(_values(params, "_total")), None)
    if total is not None and total not in _TOTALS:
        raise error(400, "invalid", f"_total must be one of {', '.join(_TOTALS)}",
                    expression="_total")
    settings = call.settings
    return SearchSpec(
        types=types,
        params=[(k, v) for k, v in params if k != "_type"],
        strict=strict_handling(call),
        base_url=call.request.base_url,
        count=page_size(call, next(iter(_values(params, "_count")), None)),
        cursor=next(iter(_values(params, "_cursor")), None),
        sort=_values(params, "_sort"),
        total=total,
        includes=[(v, False) for v in parse_list(_values(params, "_include"))]
        + [(v, True) for v in parse_list(_values(params, "_include:iterate"))],
        revincludes=[(v, False) for v in parse_list(_values(params, "_revinclude"))]
        + [(v, True) for v in parse_list(_values(params, "_revinclude:iterate"))],
        max_includes=settings.max_include_results,
        access=call.request.context.search_filter,
    )


def _entry(call: Call, stored: StoredVersion, mode: str, summary: str | None,
           elements: list[str], near: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """A searchset entry; `near`: the search's `near` parameters, whose distance a match
    reports (the location-distance extension)."""
    assert stored.content is not None
    subset = summary not in (None, "false") or bool(elements)
    parsed = jsonio.loads(stored.content) if subset or near else None  # once, if needed
    resource: Any = apply_subsetting(parsed, summary, elements) if subset else stored.content
    search: dict[str, Any] = {"mode": mode}
    if near:
        distance = near_distance(stored.resource_type, near, parsed)
        if distance is not None:
            search["extension"] = [distance]
    return {
        "fullUrl": f"{call.request.base_url}/{stored.resource_type}/{stored.id}",
        "resource": resource_fragment(resource),
        "search": search,
    }


def _bundle(call: Call, params: list[tuple[str, str]], result: SearchResult,
            summary: str | None, elements: list[str]) -> dict[str, Any]:
    echoed = [*result.applied, *[(k, v) for k, v in params if k in _SHAPING]]
    cursor = next(iter(_values(params, "_cursor")), None)
    links = [("self", link(call.request, [*echoed, *([("_cursor", cursor)] if cursor else [])]))]
    if result.previous_cursor:
        links.append(("previous", link(call.request,
                                       [*echoed, ("_cursor", result.previous_cursor)])))
    if result.next_cursor:
        links.append(("next", link(call.request, [*echoed, ("_cursor", result.next_cursor)])))
    near = [(k, v) for k, v in result.applied if k == "near"]
    entries = [_entry(call, m, "match", summary, elements, near) for m in result.matches]
    entries += [_entry(call, i, "include", summary, elements) for i in result.included]
    if result.ignored:
        entries.append({"resource": operation_outcome([Issue(
            "not-supported", "Search parameters ignored (unknown or not supported): "
            + ", ".join(result.ignored), severity="warning")]), "search": {"mode": "outcome"}})
    total = result.total
    if total is None and cursor is None and result.next_cursor is None:
        total = len(result.matches)  # the whole result is on this page: the count is exact
    return bundle("searchset", links, entries, total=total)


async def _run(call: Call, types: list[str], compartment: tuple[str, str] | None = None,
               params: list[tuple[str, str]] | None = None) -> FhirResponse:
    """Search `types` (in `compartment`) with `params` (default: the request's)."""
    if params is None:
        params = _parameters(call)
    summary, elements = summary_and_elements(call.request, types[0] if len(types) == 1 else "")
    spec = _spec(call, types, params)
    spec.compartment = compartment
    if summary == "count":
        spec.total, spec.count, spec.includes, spec.revincludes = "accurate", 0, [], []
    result = await search(call.tx.connection, spec)
    if _values(params, "_explain") == ["true"]:
        return await _explain(call, result)
    return FhirResponse(200, resource=_bundle(call, params, result, summary, elements))


async def search_type(call: Call) -> FhirResponse:
    return await _run(call, [call.type])


async def search_system(call: Call) -> FhirResponse:
    params = _parameters(call)
    types = parse_list(_values(params, "_type"))
    for resource_type in types:
        if not definitions.is_resource_type(resource_type):
            raise error(400, "invalid", f"_type: unknown resource type {resource_type!r}",
                        expression="_type")
    return await _run(call, types or sorted(definitions.RESOURCE_TYPES))


async def search_compartment(call: Call) -> FhirResponse:
    """GET [base]/Patient/123/Encounter: the compartment's id is `call.id`."""
    assert call.id is not None and call.member_type is not None
    compartment_type, member_type = call.type, call.member_type
    if not definitions.compartment(compartment_type):
        raise error(404, "not-supported", f"{compartment_type} is not a compartment")
    if member_type == "*":
        types = sorted(definitions.compartment(compartment_type))
    elif member_type in definitions.compartment(compartment_type):
        types = [member_type]
    else:
        raise error(404, "not-found", f"{member_type} is not in the {compartment_type} "
                    "compartment")
    return await _run(call, types, (compartment_type, call.id))


async def _explain(call: Call, result: SearchResult) -> FhirResponse:
    """The SQL and PostgreSQL's plan of a search, for administrators (SANTONG_ALLOW_EXPLAIN)."""
    if not call.settings.allow_explain:
        raise error(403, "forbidden", "_explain is disabled (set SANTONG_ALLOW_EXPLAIN=true)",
                    expression="_explain")
    plan_rows = await call.tx.connection.execute("EXPLAIN " + result.sql, result.binds,
                                                 custom_plan=True)
    plan = "\n".join(row[0] for row in plan_rows)
    return FhirResponse(200, resource={
        "resourceType": "Parameters",
        "parameter": [{"name": "sql", "valueString": result.sql},
                      {"name": "plan", "valueString": plan}],
    })

