"""Custom SearchParameters posted at run time, kept right in every process.

http://hl7.org/fhir/R4/searchparameter.html. A SearchParameter resource stored through the
REST API is registered with `santong.search.parameters` for its bases; new writes are indexed
for it at once, and `$reindex` brings existing resources up to date. Processes stay stateless:
a write `NOTIFY`s every process (delivered at commit), each reloads from the database, and a
version check (a counter the same write bumps: santong.storage.versions) catches anything a
lost listener connection missed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from santong.fhir.outcome import error
from santong.search import parameters
from santong.storage import versions
from santong.storage.database import asyncpg_connect_args

if TYPE_CHECKING:
    from santong.storage.repository import Connection

log = logging.getLogger(__name__)
CHANNEL = "santong_search_parameters"
_CUSTOM = text(
    "SELECT content FROM resource WHERE resource_type = 'SearchParameter' AND NOT deleted"
)


def is_standard(resource: dict[str, Any]) -> bool:
    found = parameters.by_url(str(resource.get("url")))
    return found is not None and not found.custom


def check(resource: dict[str, Any]) -> None:
    """Reject (400) a custom SearchParameter the server could not index, before it is stored."""
    if is_standard(resource) or resource.get("status") == "retired":
        return
    try:
        parameters._check(resource)  # validation only: registration follows the commit
    except parameters.InvalidSearchParameter as exc:
        raise error(400, "invalid", f"Unusable SearchParameter: {exc}",
                    expression="SearchParameter") from None


async def announce(connection: Connection) -> None:
    """Tell every process, once this transaction commits, that SearchParameters changed."""
    await versions.bump(connection, versions.SEARCH_PARAMETERS, CHANNEL)


class CustomParameters:
    """The custom SearchParameters of one process, synchronised with the database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.version = -1
        self.registered: set[str] = set()
        self._lock = asyncio.Lock()
        self._listener: asyncpg.Connection | None = None
        self._poller: asyncio.Task[None] | None = None

    async def sync(self, *, force: bool = False) -> None:
        async with self._lock, self.engine.connect() as connection:
            version = await versions.current(connection, versions.SEARCH_PARAMETERS)
            if version == self.version and not force:
                return
            rows = [orjson.loads(r[0]) for r in await connection.execute(_CUSTOM)]
        wanted: set[str] = set()
        for resource in rows:
            if is_standard(resource) or resource.get("status") == "retired":
                continue
            try:
                parameters.register(resource)
                wanted.add(resource["url"])
            except (parameters.InvalidSearchParameter, KeyError) as exc:
                log.warning("custom SearchParameter %s not registered: %s",
                            resource.get("url"), exc)
        for url in self.registered - wanted:
            parameters.unregister(url)
        self.registered, self.version = wanted, version

    async def start(self, poll_seconds: float = 30.0) -> None:
        """Load what is stored, then follow changes (NOTIFY, and a poll as a safety net)."""
        self._poller = asyncio.create_task(self._poll(poll_seconds))
        await self.sync(force=True)
        try:
            # A connection of its own, outside the pool: it stays open to LISTEN.
            self._listener = await asyncpg.connect(**asyncpg_connect_args(self.engine.url),
                                                   timeout=5)
            await self._listener.add_listener(CHANNEL, self._notified)
        except Exception as exc:  # polling still keeps processes consistent
            log.warning("cannot LISTEN for SearchParameter changes (%s); polling only", exc)

    def _notified(self, *_: object) -> None:
        asyncio.get_running_loop().create_task(self._safe_sync())

    async def _safe_sync(self) -> None:
        try:
            await self.sync()
        except Exception as exc:
            log.warning("SearchParameter reload failed: %s", exc)

    async def _poll(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self._safe_sync()

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self._listener is not None:
            await self._listener.close(timeout=5)
