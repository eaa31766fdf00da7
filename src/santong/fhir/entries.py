"""Bundle entries of a batch or transaction: reading them, their identities and references.

http://hl7.org/fhir/R4/http.html#transaction (batch and transaction rules, processing order,
conditional references) and http://hl7.org/fhir/R4/bundle.html#references (how `fullUrl`
and references in entries resolve). Each entry becomes a `FhirRequest` that the Router
dispatches like any single REST call; this module only prepares entries and answers.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import orjson

from santong import definitions
from santong.fhir.interactions.conditional import match
from santong.fhir.outcome import FhirError, Issue, error
from santong.fhir.payload import read_body
from santong.fhir.request import FhirRequest, FhirResponse
from santong.fhir.versioning import instant
from santong.search.criteria import parse_conditional

if TYPE_CHECKING:
    from santong.fhir.call import Call

# http.html#trules: deletes, then creates, then updates and patches, then reads.
PROCESSING_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
# Placeholders that only mean something inside the Bundle (bundle.html#references).
PLACEHOLDER_PREFIXES = ("urn:uuid:", "urn:oid:")
_CONDITIONAL_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)\?(.*)$")
_RELATIVE_REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
_HEADERS = {"ifNoneMatch": "if-none-match", "ifModifiedSince": "if-modified-since",
            "ifMatch": "if-match", "ifNoneExist": "if-none-exist"}


@dataclass
class Entry:
    """One `Bundle.entry` of a batch or transaction, ready to dispatch."""

    index: int
    method: str = ""
    url: str = ""
    path: str = ""
    query: list[tuple[str, str]] = field(default_factory=list)
    full_url: str | None = None
    resource: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Set when the entry itself is malformed: a batch answers it, a transaction fails.
    problem: FhirError | None = None

    @property
    def expression(self) -> str:
        return f"Bundle.entry[{self.index}]"

    @property
    def resource_type(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def order(self) -> tuple[int, int]:
        return PROCESSING_ORDER.get(self.method, 3), self.index

    def request(self, outer: FhirRequest, **changes: Any) -> FhirRequest:
        """The FhirRequest this entry stands for, under the Bundle's base and context."""
        headers = dict(self.headers)
        prefer = outer.header("prefer")
        if prefer:
            headers["prefer"] = prefer
        request = FhirRequest(
            method=self.method, path=self.path, query=list(self.query), headers=headers,
            base_url=outer.base_url, context=outer.context, resource=self.resource,
        )
        for name, value in changes.items():
            setattr(request, name, value)
        return request


def read_bundle(request: FhirRequest, max_entries: int) -> tuple[str, list[dict[str, Any]]]:
    """The type and raw entries of the posted Bundle (400/413 when it cannot be processed)."""
    bundle = read_body(request)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        found = bundle.get("resourceType") if isinstance(bundle, dict) else type(bundle).__name__
        raise error(400, "invalid", f"POST to the base needs a Bundle of type batch or "
                    f"transaction, not {found!r}", expression="resourceType")
    bundle_type = bundle.get("type")
    if bundle_type not in ("batch", "transaction"):
        raise error(400, "invalid", f"Bundle.type must be 'batch' or 'transaction' to be "
                    f"processed, not {bundle_type!r}", expression="Bundle.type")
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise error(400, "structure", "Bundle.entry must be an array", expression="Bundle.entry")
    if len(entries) > max_entries:
        raise error(413, "too-costly", f"The Bundle has {len(entries)} entries; the limit is "
                    f"{max_entries} (SANTONG_MAX_BUNDLE_ENTRIES)", expression="Bundle.entry")
    return bundle_type, entries


def split_url(url: str, base_url: str) -> tuple[str, list[tuple[str, str]]]:
    """An entry's request.url as (path below the base, query); absolute URLs must be ours."""
    if "://" in url.split("?", 1)[0]:
        if not url.startswith(base_url + "/"):
            raise ValueError(f"the absolute URL {url!r} is not on this server ({base_url})")
        url = url[len(base_url) + 1:]
    path, _, query = url.partition("?")
    try:
        params = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"malformed query in {url!r}") from None
    return path.strip("/"), params


def parse_entry(index: int, raw: Any, base_url: str) -> Entry:
    entry = Entry(index)

    def problem(diagnostics: str, where: str = "") -> Entry:
        entry.problem = error(400, "invalid", diagnostics, expression=entry.expression + where)
        return entry

    if not isinstance(raw, dict):
        return problem("A Bundle entry must be an object")
    request = raw.get("request")
    if not isinstance(request, dict):
        return problem("A batch or transaction entry needs a request", ".request")
    entry.method = str(request.get("method") or "").upper()
    entry.url = str(request.get("url") or "")
    entry.full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
    entry.resource = raw.get("resource")
    if entry.method not in PROCESSING_ORDER:
        return problem(f"Unknown request.method {request.get('method')!r}", ".request.method")
    if not entry.url:
        return problem("request.url is required", ".request.url")
    try:
        entry.path, entry.query = split_url(entry.url, base_url)
    except ValueError as exc:
        return problem(f"request.url: {exc}", ".request.url")
    if not entry.path:
        return problem("Bundles cannot be nested: request.url must name a resource type",
                       ".request.url")
    for name, header in _HEADERS.items():
        value = request.get(name)
        if isinstance(value, str) and value:
            entry.headers[header] = value
    if entry.method in ("POST", "PUT"):
        if not isinstance(entry.resource, dict):
            return problem(f"A {entry.method} entry needs a resource", ".resource")
        if entry.method == "POST" and "/" in entry.path:
            return problem("A POST entry's request.url must be a resource type", ".request.url")
    elif entry.method == "PATCH" and not isinstance(entry.resource, dict):
        return problem("A PATCH entry needs a Binary (JSON Patch) or Parameters (FHIRPath "
                       "Patch) resource", ".resource")
    return entry


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def response_entry(response: FhirResponse, method: str = "") -> dict[str, Any]:
    """`Bundle.entry` of a batch-response or transaction-response for one answer."""
    answer: dict[str, Any] = {"status": status_line(response.status)}
    headers = response.headers
    if "Location" in headers:
        answer["location"] = headers["Location"]
    if "ETag" in headers:
        answer["etag"] = headers["ETag"]
    if response.last_modified is not None:  # Last-Modified's whole seconds would lose the ms
        answer["lastModified"] = instant(response.last_modified)
    entry: dict[str, Any] = {}
    if method == "HEAD":
        pass  # like HTTP HEAD: the status and headers only
    elif response.body is not None:
        entry["resource"] = orjson.Fragment(response.body)
    elif isinstance(response.resource, dict):
        if response.resource.get("resourceType") == "OperationOutcome":
            answer["outcome"] = response.resource
        else:
            entry["resource"] = response.resource
    entry["response"] = answer
    return entry


def failed_entry(entry: Entry, exc: FhirError) -> FhirError:
    """A transaction's failure: the entry's own error, naming the entry first."""
    what = f"{entry.method} {entry.url}" if entry.method else "the entry"
    first = exc.issues[0] if exc.issues else Issue("exception", "failed")
    issues = [Issue(first.code, f"{entry.expression} ({what}) failed with "
                    f"{status_line(exc.status)}: {first.diagnostics}",
                    expression=entry.expression)]
    resource_type = entry.resource.get("resourceType") if isinstance(entry.resource, dict) else ""
    for issue in exc.issues:
        expression = issue.expression
        # The resource's element paths become paths into the Bundle.
        if resource_type and expression and (
            expression == resource_type or expression.startswith(resource_type + ".")
        ):
            expression = f"{entry.expression}.resource{expression[len(resource_type):]}"
        issues.append(Issue(issue.code, issue.diagnostics, issue.severity, expression))
    return FhirError(exc.status, issues, dict(exc.headers))


def references(value: Any) -> list[dict[str, Any]]:
    """Every object holding a string `reference` (Reference), at any depth: nested elements,
    extensions, contained resources, Parameters values; in document order."""
    found: list[dict[str, Any]] = []
    try:
        _references_in(value, found)
    except RecursionError:  # nested deeper than Python recurses (validation comes later)
        return _references_deep(value)
    return found


def _references_in(value: Any, found: list[dict[str, Any]]) -> None:
    # Recursive: this walks every entry of every Bundle, at half the cost of a stack.
    kind = type(value)
    if kind is dict:
        if type(value.get("reference")) is str:
            found.append(value)
        for item in value.values():
            if type(item) is dict or type(item) is list:
                _references_in(item, found)
    elif kind is list:
        for item in value:
            if type(item) is dict or type(item) is list:
                _references_in(item, found)


def _references_deep(value: Any) -> list[dict[str, Any]]:
    """`references` with an explicit stack, for any depth."""
    found: list[dict[str, Any]] = []
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is dict:
            if type(item.get("reference")) is str:
                found.append(item)
            extend(reversed(item.values()))
        elif kind is list:
            extend(reversed(item))
    return found


def _no_change() -> None:
    pass


def reference_slots(entry: Entry) -> tuple[list[tuple[dict[str, Any], str]], Callable[[], None]]:
    """(object, key) of every reference string in the entry's resource, and what to call
    after changing them.

    A PATCH entry's Binary holds its JSON Patch as base64: its operations' values are
    searched too (a Reference value, or a string written to a `…/reference` path), and the
    Binary is encoded again after the change.
    """
    resource = entry.resource
    if not isinstance(resource, dict):
        return [], _no_change
    if entry.method != "PATCH" or resource.get("resourceType") != "Binary":
        return [(holder, "reference") for holder in references(resource)], _no_change
    try:
        operations = orjson.loads(base64.b64decode(str(resource.get("data", "")), validate=True))
    except (binascii.Error, ValueError):
        return [], _no_change  # the patch interaction answers what is wrong with it
    slots: list[tuple[dict[str, Any], str]] = []
    for operation in operations if isinstance(operations, list) else []:
        if not isinstance(operation, dict):
            continue
        value = operation.get("value")
        if isinstance(value, str) and str(operation.get("path", "")).endswith("/reference"):
            slots.append((operation, "value"))
        else:
            slots.extend((holder, "reference") for holder in references(value))
    if not slots:
        return [], _no_change

    def encode() -> None:
        data = base64.b64encode(orjson.dumps(operations)).decode()
        entry.resource = {**resource, "data": data}

    return slots, encode


def base_of(full_url: str | None) -> str | None:
    """The service base of an absolute `[base]/[type]/[id]` fullUrl, else None."""
    if not full_url or "://" not in full_url:
        return None
    parts = full_url.rsplit("/", 2)
    return parts[0] if len(parts) == 3 else None


def conditional_reference(reference: str) -> tuple[str, list[tuple[str, str]]] | None:
    found = _CONDITIONAL_REFERENCE.match(reference)
    if found is None:
        return None
    return found.group(1), parse_conditional(found.group(2))


def criteria_key(resource_type: str, params: list[tuple[str, str]]) -> str:
    return f"{resource_type}?{urlencode(sorted(params))}"


def rewrite_references(
    entry: Entry,
    identities: dict[str, str],
    resolve: Callable[[str], str | None],
    slots: tuple[list[tuple[dict[str, Any], str]], Callable[[], None]] | None = None,
) -> None:
    """Point every reference of the entry's resource at the ids assigned or resolved.

    `identities` maps fullUrls to `Type/id`; `resolve` answers references that are not
    fullUrls (conditional ones) or None to leave them. Placeholders (`urn:uuid:`) that name
    no entry are an error: they cannot mean anything outside this Bundle. `slots`: the
    entry's reference_slots, when the caller has them.
    """
    holders, done = slots or reference_slots(entry)
    base = base_of(entry.full_url)
    for holder, key in holders:
        reference: str = holder[key]
        target = identities.get(reference)
        if target is None and base and _RELATIVE_REFERENCE.match(reference):
            # A relative reference resolves against the base of its entry's absolute fullUrl.
            target = identities.get(f"{base}/{reference}")
        if target is None:
            if reference.startswith(PLACEHOLDER_PREFIXES):
                raise error(400, "invalid", f"The reference {reference!r} matches the fullUrl "
                            "of no entry in this Bundle", expression=entry.expression)
            target = resolve(reference)
        if target is not None:
            holder[key] = target
    done()


async def resolve_conditional_reference(
    call: Call, reference: str, cache: dict[str, str], *, missing_ok: bool = False
) -> str | None:
    """`Type/id` of the single match of a conditional reference (`Patient?identifier=…`);
    none or several matches are an error (http.html#trules), unless `missing_ok`, when none
    answers None."""
    parsed = conditional_reference(reference)
    if parsed is None:
        return None
    resource_type, params = parsed
    if not definitions.is_resource_type(resource_type):
        raise error(400, "invalid", f"Conditional reference {reference!r}: unknown resource "
                    f"type {resource_type!r}")
    key = criteria_key(resource_type, params)
    if key in cache:
        return cache[key]
    call.resource_type = resource_type
    found = await match(call, params)
    if not found and missing_ok:
        return None
    if len(found) != 1:
        several = "several resources match" if found else "no resource matches"
        raise error(412, "not-found" if not found else "multiple-matches",
                    f"Conditional reference {reference!r}: {several}; it must match exactly one")
    cache[key] = f"{resource_type}/{found[0].id}"
    return cache[key]


async def resolve_all_conditional(
    call: Call, entry: Entry, identities: dict[str, str], cache: dict[str, str], *,
    missing_ok: bool = False,
) -> bool:
    """Resolve the entry's conditional references (queries run in `call.tx`), then rewrite.

    With `missing_ok`, a reference that matches nothing yet is left as it is and the answer
    is False: a transaction tries it again once the Bundle's other creates are written.
    """
    complete = True
    slots = reference_slots(entry)  # one walk of the resource serves both steps
    for holder, key in slots[0]:
        reference = holder[key]
        if reference not in identities and _CONDITIONAL_REFERENCE.match(reference):
            found = await resolve_conditional_reference(call, reference, cache,
                                                        missing_ok=missing_ok)
            complete = complete and found is not None
    rewrite_references(entry, identities, lambda ref: _cached(ref, cache), slots)
    return complete


def _cached(reference: str, cache: dict[str, str]) -> str | None:
    parsed = conditional_reference(reference)
    return cache.get(criteria_key(*parsed)) if parsed else None

