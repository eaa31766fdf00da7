"""Version counters of the definitions every process keeps in memory (profiles and
terminology, custom SearchParameters).

A write of such a definition bumps its counter and NOTIFYs, in the writing transaction; each
process compares the counter with the one it loaded. A one-row lookup: the first version of
this check (max(seq) over resource_history) turned into a sequential scan of the whole history
when its statistics were stale after a bulk load, 130 ms on every Bundle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import text

if TYPE_CHECKING:
    from santong.storage.repository import Connection

PROFILES = "profiles"  # StructureDefinition, ValueSet, CodeSystem
SEARCH_PARAMETERS = "search-parameters"

# Every counter row, in one order, before any is bumped: a transaction that writes a profile
# and a SearchParameter would otherwise lock the two rows in its own order and deadlock with
# one that writes them the other way round.
_LOCK_ALL = text("SELECT kind FROM definition_version ORDER BY kind FOR UPDATE")
_BUMP = text(
    "WITH bumped AS (UPDATE definition_version SET version = version + 1 WHERE kind = :kind"
    " RETURNING 1) SELECT pg_notify(:channel, '') FROM bumped"
)
_VERSION = text("SELECT version FROM definition_version WHERE kind = :kind")


async def bump(connection: Connection, kind: str, channel: str) -> None:
    """Count a change of `kind` and notify `channel`, both when this transaction commits
    (once per transaction: a package of a thousand definitions is one change)."""
    bumped: set[str] = connection.memo.setdefault("bumped definition counters", set())
    if kind in bumped:
        return
    if not bumped:
        await connection.execute(_LOCK_ALL)
    await connection.execute(_BUMP, {"kind": kind, "channel": channel})
    bumped.add(kind)


async def current(connection: Any, kind: str) -> int:
    """The counter of `kind` (on a SQLAlchemy connection: the registries poll through one)."""
    return int((await connection.execute(_VERSION, {"kind": kind})).scalar_one())
