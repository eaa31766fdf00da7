"""Selecting resources by search criteria for conditional create, update and delete.

http://hl7.org/fhir/R4/http.html#ccreate, #cond-update, #3.1.0.7.1 (conditional delete).
Any search the server supports may select; criteria it cannot evaluate are rejected (400)
rather than ignored, since ignoring one would widen the match.
"""

from __future__ import annotations

from urllib.parse import urlencode

from santong.fhir.call import Call
from santong.fhir.outcome import error
from santong.search import terminology
from santong.search.query import RESULT_PARAMETERS, Compiler
from santong.storage.repository import StoredVersion


def _selecting(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params if k not in RESULT_PARAMETERS]


async def lock_criteria(call: Call, params: list[tuple[str, str]]) -> None:
    """Serialise conditional writes with the same criteria until this transaction ends."""
    await call.tx.lock(f"{call.type}?{urlencode(sorted(_selecting(params)))}")


async def match_or_lock(call: Call, params: list[tuple[str, str]]) -> list[StoredVersion]:
    """The criteria's matches (at most two); when there is none, the criteria stay locked
    until this transaction ends, so a concurrent write with the same criteria waits for it
    and then finds what it created. A match needs no lock: it was committed and stays found
    (locking every time serialised Bundles that merely refer to the same existing patient)."""
    matches = await match(call, params)
    if not matches:
        await lock_criteria(call, params)
        matches = await match(call, params)  # one may have been committed while we waited
    return matches


async def select_single(call: Call, params: list[tuple[str, str]], purpose: str
                        ) -> StoredVersion | None:
    """The one resource the criteria select (None if none: then under the criteria's lock
    until this transaction ends); 412 when they select several
    (http://hl7.org/fhir/R4/http.html#ccreate)."""
    matches = await match_or_lock(call, params)
    if len(matches) > 1:
        raise error(412, "multiple-matches", f"The criteria match {len(matches)} resources: "
                    f"{purpose} needs at most one")
    return matches[0] if matches else None


async def match(call: Call, params: list[tuple[str, str]], limit: int = 2) -> list[StoredVersion]:
    selecting = _selecting(params)
    if not selecting:
        raise error(400, "invalid", "Conditional interactions need search criteria")
    resolved = await terminology.resolve(call.tx.connection, selecting, [call.type])
    compiled = Compiler(call.request.base_url, resolved).compile(call.type, selecting, strict=True)
    return await call.tx.search_current(call.type, compiled.conditions, limit)
