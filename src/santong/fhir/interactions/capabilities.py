"""capabilities — http://hl7.org/fhir/R4/http.html#capabilities.

GET [base]/metadata: a CapabilityStatement that claims exactly what this server implements.
Built from the R4 definitions and the search parameters registered now (custom ones included),
on each request: it is not a hot path, and a cache would need invalidating with them.
"""

from __future__ import annotations

from typing import Any

import santong
from santong import definitions
from santong.fhir.call import Call
from santong.fhir.operations import system_operations, type_operations
from santong.fhir.request import FhirResponse
from santong.fhir.versioning import instant, now
from santong.search.parameters import parameters_for

_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance",
                 "history-type", "create", "search-type")
_STARTED = instant(now())


# Parameter types the search compiler answers; of the special ones, those with an expression
# (Location `near`), not `_filter`.
SUPPORTED_TYPES = frozenset({"string", "token", "reference", "date", "number", "quantity", "uri",
                             "composite"})
_ROW_PARAMETERS = {"_id": "token", "_lastUpdated": "date", "_text": "string",
                   "_content": "string", "_list": "string"}


def _search_params(resource_type: str) -> list[dict[str, str]]:
    params = []
    for code, param in sorted(parameters_for(resource_type).items()):
        kind = _ROW_PARAMETERS.get(code, param.type)
        if code not in _ROW_PARAMETERS and not (param.type in SUPPORTED_TYPES
                                                or param.positional):
            continue
        params.append({"name": code, "definition": param.url, "type": kind})
    return params


def capability_statement(base_url: str) -> dict[str, Any]:
    resources = [
        {
            "type": resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            "interaction": [{"code": code} for code in _INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "searchParam": _search_params(resource_type),
            "operation": type_operations(resource_type),
        }
        for resource_type in sorted(definitions.RESOURCE_TYPES)
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": _STARTED,
        "publisher": "Santong",
        "kind": "instance",
        "software": {"name": "Santong", "version": santong.__version__},
        "implementation": {"description": "Santong FHIR R4 server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Unknown search parameters are ignored and reported in an "
                             "OperationOutcome entry, unless Prefer: handling=strict. Token "
                             ":in/:not-in/:above/:below use the ValueSets and CodeSystems "
                             "stored here. Special parameters (near) are not supported. PATCH: "
                             "JSON Patch (RFC 6902) and FHIRPath Patch (Parameters); "
                             "conditional patch on a single match.",
            "resource": resources,
            "interaction": [{"code": code} for code in (
                "transaction", "batch", "search-system", "history-system")],
            "searchParam": [
                {"name": name, "type": kind,
                 "definition": f"http://hl7.org/fhir/SearchParameter/Resource{name}"}
                for name, kind in (("_id", "token"), ("_lastUpdated", "date"))
            ],
            "operation": system_operations(),
        }],
    }


async def capabilities(call: Call) -> FhirResponse:
    return FhirResponse(200, resource=capability_statement(call.request.base_url))
