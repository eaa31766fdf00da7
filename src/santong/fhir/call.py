"""What an interaction handler receives: the request, the route's parts and a transaction."""

from __future__ import annotations

from dataclasses import dataclass

from santong.fhir.request import FhirRequest
from santong.settings import Settings
from santong.storage.repository import Transaction


@dataclass(slots=True)
class Call:
    request: FhirRequest
    tx: Transaction
    settings: Settings
    resource_type: str | None = None
    id: str | None = None
    version_id: str | None = None
    # The resource type after a compartment: GET [base]/Patient/1/[member_type].
    member_type: str | None = None

    @property
    def type(self) -> str:
        assert self.resource_type is not None
        return self.resource_type
