"""Who is calling and what they may see.

Empty today. SMART scopes and patient compartments will fill it; the repository and search
consult `access_filter` so an authorisation layer can narrow every query in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str = ""
    # The authenticated principal (a client id, a Practitioner reference...), None when anonymous.
    principal: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    def may(self, interaction: str, resource_type: str | None) -> bool:
        """Whether the caller may do `interaction` on `resource_type` (open until auth)."""
        return True
