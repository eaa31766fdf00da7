"""The FHIR request and response the core works on, independent of any HTTP framework."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from santong.fhir.context import RequestContext


@dataclass(slots=True)
class FhirRequest:
    method: str
    # The path below the FHIR base, without leading or trailing slashes ("Patient/1/_history").
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    # Header names in lower case.
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    # The FHIR base URL as the client sees it, without a trailing slash.
    base_url: str = ""
    context: RequestContext = field(default_factory=RequestContext)
    # An already-parsed body (a Bundle entry's resource); takes precedence over `body`.
    resource: Any = None
    # The id a create must use: a transaction assigns ids before it writes (to rewrite
    # references to them); a plain REST create leaves it None and the server draws one.
    assigned_id: str | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def param(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class FhirResponse:
    status: int
    # A JSON value to serialise, or `body`: JSON bytes sent as they are (stored resources).
    resource: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # The version's lastUpdated behind `Last-Modified` (which has whole seconds only), for a
    # Bundle entry's `response.lastModified`: set by every answer that names a version.
    last_modified: datetime | None = None
