"""capabilities — http://hl7.org/fhir/R4/http.html#capabilities.

GET [base]/metadata: a CapabilityStatement that claims exactly what this server implements.
Built once per process from the R4 definitions; it changes only with the code.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import santong
from santong import definitions
from santong.fhir.call import Call
from santong.fhir.request import FhirResponse
from santong.fhir.versioning import instant, now
from santong.search.criteria import supports_identifier

_INTERACTIONS = ("read", "vread", "update", "delete", "history-instance", "history-type",
                 "create", "search-type")
_STARTED = instant(now())


def _search_params(resource_type: str) -> list[dict[str, str]]:
    params = [{
        "name": "_id", "type": "token",
        "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
    }]
    if supports_identifier(resource_type):
        params.append({
            "name": "identifier", "type": "token",
            "documentation": "system|value, |value, system| or value; matched exactly",
        })
    return params


@cache
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
        "rest": [{
            "mode": "server",
            "documentation": "Search supports _id and identifier only, with _count, _summary "
                             "and _elements; unknown parameters are ignored and reported unless "
                             "Prefer: handling=strict.",
            "resource": resources,
            "interaction": [{"code": "history-system"}],
        }],
    }


async def capabilities(call: Call) -> FhirResponse:
    return FhirResponse(200, resource=capability_statement(call.request.base_url))
