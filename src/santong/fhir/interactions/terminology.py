"""Terminology operations — http://hl7.org/fhir/R4/terminology-service.html.

- `ValueSet/$expand`, `ValueSet/[id]/$expand` (valueset-operation-expand.html): by `url`
  (`valueSetVersion`), the instance, or a `valueSet` resource (POST); `filter` (substring of
  code, display or designation), `offset`, `count`, `activeOnly`, `includeDesignations`.
- `ValueSet/$validate-code`, `ValueSet/[id]/$validate-code` (…-validate-code.html): `code` +
  `system` (+ `systemVersion`, `display`), `coding` or `codeableConcept` → `result`,
  `message`, `display`.
- `CodeSystem/$validate-code`, `CodeSystem/[id]/$validate-code`: the same against a CodeSystem.
- `CodeSystem/$lookup` (codesystem-operation-lookup.html): `system` + `code` (`version`) or
  `coding`, `property`* → `name`, `version`, `display`, `definition`, `designation`,
  `property` (parent, child and the concept's own).
- `ConceptMap/$translate`, `ConceptMap/[id]/$translate` (conceptmap-operation-translate.html):
  `url` / instance / `conceptMap`, or every stored map from `system` (narrowed by `source`,
  `target`), `code` + `system` or `coding` / `codeableConcept`, `targetsystem`, `reverse` →
  `result`, `message`, `match`* (`equivalence`, `concept`, `source`).

In-parameters come from the query (GET or POST) and, for POST, a `Parameters` body. Answers
are `Parameters` (a `ValueSet` for $expand). A missing or malformed parameter is a 400, an
unknown definition or code a 404, an expansion this server cannot compute a 422 — each an
OperationOutcome whose `expression` names the parameter.
"""

from __future__ import annotations

import uuid
from typing import Any

from santong.fhir.call import Call
from santong.fhir.outcome import FhirError, error
from santong.fhir.payload import parse_resource
from santong.fhir.request import FhirResponse
from santong.fhir.versioning import instant, now
from santong.terminology import TerminologyError
from santong.terminology.codesystem import CodeSystemIndex
from santong.terminology.conceptmap import NEGATIVE, Match, in_scope, translate
from santong.terminology.expansion import expand, matches_text
from santong.terminology.service import (
    Coding,
    Validation,
    lookup,
    validate_in_code_system,
    validate_in_value_set,
)
from santong.terminology.store import Store

_MAX_COUNT = 10_000
_STATUS = {"not-found": 404, "not-supported": 422, "too-costly": 422, "invalid": 400}


class Parameters:
    """The operation's in-parameters: query pairs, plus a POSTed Parameters resource."""

    def __init__(self, call: Call) -> None:
        self.query = list(call.request.query)
        self.body: list[dict[str, Any]] = []
        if call.request.method == "POST" and (call.request.body or call.request.resource):
            parameters = parse_resource(call.request, "Parameters")
            self.body = [p for p in parameters.get("parameter", []) if isinstance(p, dict)]

    def _body(self, name: str) -> list[dict[str, Any]]:
        return [p for p in self.body if p.get("name") == name]

    def has(self, name: str) -> bool:
        return bool(self._body(name)) or any(k == name for k, _ in self.query)

    def pairs(self) -> list[tuple[str, str]]:
        """Every in-parameter as (name, text): the query's, then the body's primitives."""
        names = dict.fromkeys(p["name"] for p in self.body if isinstance(p.get("name"), str))
        return [*self.query, *((n, v) for n in names for v in self._body_strings(n))]

    def strings(self, name: str) -> list[str]:
        return [v for k, v in self.query if k == name] + self._body_strings(name)

    def _body_strings(self, name: str) -> list[str]:
        values = []
        for parameter in self._body(name):
            value = next((v for k, v in parameter.items() if k.startswith("value")), None)
            if not isinstance(value, (str, int, bool)) or isinstance(value, bool):
                raise error(400, "invalid", f"Parameter {name!r} must be a primitive value",
                            expression=name)
            values.append(str(value))
        return values

    def string(self, name: str) -> str | None:
        values = self.strings(name)
        if len(values) > 1:
            raise error(400, "invalid", f"Parameter {name!r} may appear only once",
                        expression=name)
        if values and not values[0].strip():
            raise error(400, "invalid", f"Parameter {name!r} is empty", expression=name)
        return values[0] if values else None

    def boolean(self, name: str) -> bool | None:
        for parameter in self._body(name):
            if isinstance(parameter.get("valueBoolean"), bool):
                return bool(parameter["valueBoolean"])
        value = next((v for k, v in self.query if k == name), None)
        if value is None and not self._body(name):
            return None
        if value not in ("true", "false"):
            raise error(400, "invalid", f"Parameter {name!r} must be true or false",
                        expression=name)
        return value == "true"

    def integer(self, name: str) -> int | None:
        for parameter in self._body(name):
            value = parameter.get("valueInteger")
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
            raise error(400, "invalid", f"Parameter {name!r} must be a non-negative integer",
                        expression=name)
        value = self.string(name)
        if value is None:
            return None
        if not value.isdigit():
            raise error(400, "invalid", f"Parameter {name!r} must be a non-negative integer",
                        expression=name)
        return int(value)

    def coding(self, name: str) -> Coding | None:
        found = [p.get("valueCoding") for p in self._body(name)]
        if any(not isinstance(f, dict) for f in found):
            raise error(400, "invalid", f"Parameter {name!r} must be a Coding", expression=name)
        for value in (v for k, v in self.query if k == name):
            # GET cannot carry a Coding; the token form system|code stands in for one.
            system, bar, code = value.rpartition("|")
            found.append({"system": system or None, "code": code} if bar else {"code": value})
        if len(found) > 1:
            raise error(400, "invalid", f"Parameter {name!r} may appear only once",
                        expression=name)
        return Coding.of(found[0]) if found else None

    def codeable_concept(self, name: str) -> list[Coding] | None:
        if any(k == name for k, _ in self.query):
            raise error(400, "not-supported", f"Parameter {name!r} (a CodeableConcept) must be "
                        "POSTed in a Parameters resource", expression=name)
        found = [p.get("valueCodeableConcept") for p in self._body(name)]
        if not found:
            return None
        if len(found) > 1 or not isinstance(found[0], dict):
            raise error(400, "invalid", f"Parameter {name!r} must be one CodeableConcept",
                        expression=name)
        codings = [Coding.of(c) for c in found[0].get("coding", []) if isinstance(c, dict)]
        if not codings:
            raise error(400, "invalid", f"Parameter {name!r} has no coding", expression=name)
        return codings

    def resource(self, name: str, resource_type: str) -> dict[str, Any] | None:
        found = [p.get("resource") for p in self._body(name)]
        if any(k == name for k, _ in self.query):
            raise error(400, "not-supported", f"Parameter {name!r} (a resource) must be "
                        "POSTed in a Parameters resource", expression=name)
        if not found:
            return None
        if len(found) > 1 or not isinstance(found[0], dict) \
                or found[0].get("resourceType") != resource_type:
            raise error(400, "invalid", f"Parameter {name!r} must be one {resource_type}",
                        expression=name)
        return found[0]


def _fail(exc: TerminologyError, parameter: str | None) -> FhirError:
    name = exc.parameter or parameter
    return error(_STATUS.get(exc.code, 400), exc.code, exc.message, expression=name)


def _parameters(*parameters: dict[str, Any] | None) -> FhirResponse:
    return FhirResponse(200, resource={
        "resourceType": "Parameters", "parameter": [p for p in parameters if p is not None]})


async def _definition(call: Call, store: Store, params: Parameters, resource_type: str,
                      url_name: str, version_name: str, resource_name: str
                      ) -> tuple[dict[str, Any], str | None]:
    """The definition an operation works on: the instance, a posted resource, or `url`; with
    the parameter to blame for it."""
    url = params.string(url_name)
    version = params.string(version_name)
    if call.id is not None:
        found = await store.fetch(resource_type, f"{resource_type}/{call.id}")
        if found is None:
            raise error(404, "not-found", f"Resource {resource_type}/{call.id} is not known")
        return found, None
    posted = params.resource(resource_name, resource_type)
    if posted is not None:
        return posted, resource_name
    if url is None:
        raise error(400, "required", f"{resource_type} ${_operation(call)} needs the "
                    f"{resource_type} by id ({resource_type}/[id]/${_operation(call)}), "
                    f"'{url_name}' or a '{resource_name}' resource", expression=url_name)
    found = await store.fetch(resource_type, url, version)
    if found is None:
        pinned = f" version {version!r}" if version else ""
        raise error(404, "not-found", f"No {resource_type} {url!r}{pinned} is stored on this "
                    "server", expression=url_name)
    return found, url_name


def _operation(call: Call) -> str:
    return call.request.path.rstrip("/").rsplit("$", 1)[-1]


# ---- $expand ---------------------------------------------------------------------------------

async def expand_value_set(call: Call) -> FhirResponse:
    params = Parameters(call)
    store = Store(call.tx.connection)
    value_set, blame = await _definition(call, store, params, "ValueSet", "url",
                                         "valueSetVersion", "valueSet")
    text = params.string("filter")
    offset = params.integer("offset") or 0
    count = params.integer("count")
    active_only = params.boolean("activeOnly")
    designations = params.boolean("includeDesignations")
    try:
        expansion = await expand(store, value_set)
    except TerminologyError as exc:
        raise _fail(exc, blame) from None
    if expansion.wildcards:
        raise error(422, "too-costly", "The value set includes every code of "
                    f"{', '.join(sorted(expansion.wildcards))}, which this server does not "
                    "store: it cannot be expanded", expression=blame)
    items = [i for i in expansion.items.values()
             if (not text or matches_text(i, text)) and not (active_only and i.inactive)]
    if count is None and len(items) - offset > _MAX_COUNT:
        raise error(422, "too-costly", f"The expansion has {len(items)} codes: page it with "
                    f"'count' (at most {_MAX_COUNT})", expression="count")
    page = items[offset:offset + min(count, _MAX_COUNT)] if count is not None \
        else items[offset:]
    contains = []
    for item in page:
        entry: dict[str, Any] = {"system": item.system}
        if item.version:
            entry["version"] = item.version
        if item.abstract:
            entry["abstract"] = True
        if item.inactive:
            entry["inactive"] = True
        entry["code"] = item.code
        if item.display:
            entry["display"] = item.display
        if designations and item.designations:
            entry["designation"] = list(item.designations)
        contains.append(entry)
    echoed: list[dict[str, Any]] = []
    if text:
        echoed.append({"name": "filter", "valueString": text})
    if offset:
        echoed.append({"name": "offset", "valueInteger": offset})
    if count is not None:
        echoed.append({"name": "count", "valueInteger": count})
    for (system, version) in expansion.used:
        canonical = f"{system}|{version}" if version else system
        echoed.append({"name": "used-codesystem", "valueUri": canonical})
    body = {k: v for k, v in value_set.items() if k not in ("meta", "text", "expansion")}
    expansion_element: dict[str, Any] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}", "timestamp": instant(now()),
        "total": len(items), "offset": offset}
    if echoed:
        expansion_element["parameter"] = echoed
    if contains:
        expansion_element["contains"] = contains
    body["expansion"] = expansion_element
    return FhirResponse(200, resource=body)


# ---- $validate-code --------------------------------------------------------------------------

def _codings(params: Parameters, system_name: str, version_name: str) -> tuple[list[Coding], str]:
    """The codings to validate, and the parameter they came from."""
    code = params.string("code")
    coding = params.coding("coding")
    concept = params.codeable_concept("codeableConcept")
    given = [n for n, v in (("code", code), ("coding", coding), ("codeableConcept", concept))
             if v is not None]
    if not given:
        raise error(400, "required", "One of 'code', 'coding' or 'codeableConcept' is required",
                    expression="code")
    if len(given) > 1:
        raise error(400, "invalid", f"Give only one of {', '.join(repr(g) for g in given)}",
                    expression=given[1])
    if code is not None:
        return [Coding(params.string(system_name), code, params.string("display"),
                       params.string(version_name))], "code"
    if coding is not None:
        return [coding], "coding"
    assert concept is not None
    return concept, "codeableConcept"


def _validation_result(outcome: Validation) -> FhirResponse:
    return _parameters(
        {"name": "result", "valueBoolean": outcome.result},
        {"name": "message", "valueString": outcome.message} if outcome.message else None,
        {"name": "display", "valueString": outcome.display} if outcome.display else None,
    )


async def validate_code(call: Call) -> FhirResponse:
    if call.type == "CodeSystem":
        return await _validate_code_system(call)
    params = Parameters(call)
    store = Store(call.tx.connection)
    value_set, blame = await _definition(call, store, params, "ValueSet", "url",
                                         "valueSetVersion", "valueSet")
    codings, _ = _codings(params, "system", "systemVersion")
    try:
        outcome = await validate_in_value_set(store, value_set, codings)
    except TerminologyError as exc:
        raise _fail(exc, blame) from None
    return _validation_result(outcome)


async def _validate_code_system(call: Call) -> FhirResponse:
    params = Parameters(call)
    store = Store(call.tx.connection)
    resource, _ = await _definition(call, store, params, "CodeSystem", "url", "version",
                                    "codeSystem")
    code_system = CodeSystemIndex(resource)
    codings, _ = _codings(params, "url", "version")
    if len(codings) == 1 and codings[0].system is None:
        codings = [Coding(code_system.url, codings[0].code, codings[0].display)]
    return _validation_result(validate_in_code_system(code_system, codings))


# ---- $lookup ---------------------------------------------------------------------------------

async def lookup_code(call: Call) -> FhirResponse:
    params = Parameters(call)
    store = Store(call.tx.connection)
    code, system = params.string("code"), params.string("system")
    coding = params.coding("coding")
    if coding is not None:
        if code is not None:
            raise error(400, "invalid", "Give 'code' and 'system', or 'coding', not both",
                        expression="coding")
        code, system = coding.code, coding.system
    blame = "coding" if coding is not None else "code"
    if not code:
        raise error(400, "required", "$lookup needs 'code' and 'system' (or 'coding')",
                    expression=blame)
    version = params.string("version")
    if call.id is not None:
        resource = await store.fetch("CodeSystem", f"CodeSystem/{call.id}")
        if resource is None:
            raise error(404, "not-found", f"Resource CodeSystem/{call.id} is not known")
        code_system = CodeSystemIndex(resource)
    else:
        if not system:
            raise error(400, "required", "$lookup needs 'system' with 'code'",
                        expression="coding" if coding is not None else "system")
        found = await store.code_system(system, version)
        if found is None:
            pinned = f" version {version!r}" if version else ""
            raise error(404, "not-found", f"CodeSystem {system}{pinned} is not stored on this "
                        "server", expression="coding" if coding is not None else "system")
        code_system = found
    result = lookup(code_system, code, params.strings("property"))
    if result is None:
        raise error(404, "not-found", f"Unknown code {code!r} in CodeSystem {code_system.url}",
                    expression=blame)
    return FhirResponse(200, resource={"resourceType": "Parameters", "parameter": result})


# ---- $translate ------------------------------------------------------------------------------

async def translate_code(call: Call) -> FhirResponse:
    params = Parameters(call)
    store = Store(call.tx.connection)
    codings, origin = _codings(params, "system", "version")
    reverse = params.boolean("reverse") or False
    target_system = params.string("targetsystem")
    source_scope, target_scope = params.string("source"), params.string("target")
    maps: list[dict[str, Any]]
    if call.id is not None or params.string("url") or params.has("conceptMap"):
        concept_map, _ = await _definition(call, store, params, "ConceptMap", "url",
                                           "conceptMapVersion", "conceptMap")
        maps = [concept_map]
    else:
        systems = {c.system for c in codings if c.system}
        if not systems:
            raise error(400, "required", "$translate needs 'system' with 'code' (or the "
                        "ConceptMap by 'url')", expression="system" if origin == "code"
                        else origin)
        maps = []
        for system in sorted(systems):
            maps += await store.concept_maps_for(system, reverse)
    if reverse:  # in reverse, the map's target value set is the one translated from
        source_scope, target_scope = target_scope, source_scope
    maps = [m for m in maps if in_scope(m, source_scope, target_scope)]
    matches: list[Match] = []
    for concept_map in maps:
        for coding in codings:
            if coding.system and coding.code:
                for match in translate(concept_map, coding.system, coding.code, target_system,
                                       reverse):
                    if match not in matches:
                        matches.append(match)
    if any(not c.system for c in codings) and not matches:
        raise error(400, "required", "$translate needs the 'system' of the code",
                    expression="system" if origin == "code" else origin)
    positive = [m for m in matches if m.equivalence not in NEGATIVE]
    labels = ", ".join(c.label() for c in codings)
    if positive:
        message = None
    elif not maps:
        message = f"No ConceptMap on this server translates {labels}"
    else:
        message = f"No translation of {labels} was found"
    out: list[dict[str, Any] | None] = [
        {"name": "result", "valueBoolean": bool(positive)},
        {"name": "message", "valueString": message} if message else None,
    ]
    for match in matches:
        parts: list[dict[str, Any]] = [{"name": "equivalence", "valueCode": match.equivalence}]
        if match.code:
            concept = {k: v for k, v in (("system", match.system), ("version", match.version),
                                         ("code", match.code), ("display", match.display)) if v}
            parts.append({"name": "concept", "valueCoding": concept})
        if match.source:
            parts.append({"name": "source", "valueUri": match.source})
        out.append({"name": "match", "part": parts})
    return _parameters(*out)
