"""Who is calling and what they may see.

Empty today. SMART scopes and patient compartments will fill it; the repository and search
consult `access_filter` so an authorisation layer can narrow every query in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str = ""
    # The authenticated principal (a client id, a Practitioner reference...), None when anonymous.
    principal: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    def may(self, interaction: str, resource_type: str | None) -> bool:
        """Whether the caller may do `interaction` on `resource_type` (open until auth)."""
        return True

    def search_filter(self, resource_type: str) -> tuple[str, dict[str, Any]] | None:
        """SQL over the resource row `r` that limits what this caller may see of a type (for
        a patient-scoped token, its compartment); None: no limit. Search ANDs it into every
        query it runs for the caller, matches and includes alike."""
        return None
