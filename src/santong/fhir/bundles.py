"""Bundles the server builds: history and searchset (http://hl7.org/fhir/R4/bundle.html).

Stored resources are spliced in as `orjson.Fragment`s: their bytes go out as they were stored,
never parsed and re-serialised.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import orjson

from santong.fhir.request import FhirRequest
from santong.fhir.versioning import instant, now


def link(request: FhirRequest, params: list[tuple[str, str]]) -> str:
    url = f"{request.base_url}/{request.path}" if request.path else request.base_url
    return f"{url}?{urlencode(params)}" if params else url


def bundle(bundle_type: str, links: list[tuple[str, str]], entries: list[Any],
           total: int | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(now())},
        "type": bundle_type,
    }
    if total is not None:
        result["total"] = total
    result["link"] = [{"relation": rel, "url": url} for rel, url in links]
    if entries:
        result["entry"] = entries
    return result


def resource_fragment(content: bytes | str | dict[str, Any]) -> Any:
    """Stored JSON spliced in as it is; a dict (a `_summary` subset) serialised."""
    return orjson.Fragment(content) if isinstance(content, (bytes, str)) else content
