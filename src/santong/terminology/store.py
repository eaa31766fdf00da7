"""Fetching terminology resources stored on this server, by canonical url or `Type/id`.

A canonical may carry a version (`url|version`, http://hl7.org/fhir/R4/references.html#canonical):
then the stored resource with that `version` is used; without one, the most recently updated.
A `Store` lives for one call and caches what it has fetched (a ValueSet importing another
twice, or filtering one CodeSystem in several includes, reads it once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import text

from santong.terminology.codesystem import CodeSystemIndex

if TYPE_CHECKING:
    from santong.storage.repository import Connection

_BY_URL = text(
    "SELECT r.content FROM resource r JOIN search_uri u ON u.rid = r.rid"
    " WHERE u.resource_type = :type AND u.code = 'url' AND u.value = :url AND NOT r.deleted"
    " ORDER BY r.last_updated DESC LIMIT 50"
)
_BY_ID = text(
    "SELECT content FROM resource WHERE resource_type = :type AND id = :id AND NOT deleted"
)
_MAPS_FROM = text(
    "SELECT DISTINCT r.rid, r.content FROM resource r JOIN search_uri u ON u.rid = r.rid"
    " WHERE u.resource_type = 'ConceptMap' AND u.code = :code AND u.value = :system"
    " AND NOT r.deleted ORDER BY r.rid LIMIT 100"
)


def split_canonical(reference: str) -> tuple[str, str | None]:
    url, _, version = reference.partition("|")
    return url, version or None


class Store:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._resources: dict[tuple[str, str, str | None], dict[str, Any] | None] = {}
        self._code_systems: dict[tuple[str, str | None], CodeSystemIndex | None] = {}

    async def fetch(self, resource_type: str, reference: str, version: str | None = None
                    ) -> dict[str, Any] | None:
        """The stored `resource_type` a canonical (`url|version`) or `Type/id` names."""
        url, pinned = split_canonical(reference)
        version = version or pinned
        key = (resource_type, url, version)
        if key in self._resources:
            return self._resources[key]
        found: dict[str, Any] | None = None
        if url.startswith(f"{resource_type}/") and url.count("/") == 1:
            row = (await self.connection.execute(
                _BY_ID, {"type": resource_type, "id": url.split("/")[1]})).first()
            found = orjson.loads(row[0]) if row else None
            if found is not None and version and found.get("version") != version:
                found = None
        else:
            rows = await self.connection.execute(_BY_URL, {"type": resource_type, "url": url})
            for (content,) in rows:
                candidate = orjson.loads(content)
                if version is None or candidate.get("version") == version:
                    found = candidate
                    break
        self._resources[key] = found
        return found

    async def code_system(self, system: str, version: str | None = None
                          ) -> CodeSystemIndex | None:
        """The stored CodeSystem `system` (a canonical), indexed; None if not stored."""
        key = (system, version)
        if key not in self._code_systems:
            resource = await self.fetch("CodeSystem", system, version)
            self._code_systems[key] = None if resource is None else CodeSystemIndex(resource)
        return self._code_systems[key]

    async def concept_maps_for(self, system: str, reverse: bool = False
                               ) -> list[dict[str, Any]]:
        """ConceptMaps with a group from `system` (to it, when `reverse`)."""
        code = "target-system" if reverse else "source-system"
        rows = await self.connection.execute(_MAPS_FROM, {"code": code, "system": system})
        return [orjson.loads(content) for _, content in rows]
