"""Selecting resources by search criteria for conditional create, update and delete.

http://hl7.org/fhir/R4/http.html#ccreate, #cond-update, #3.1.0.7.1 (conditional delete).
Any search the server supports may select; criteria it cannot evaluate are rejected (400)
rather than ignored, since ignoring one would widen the match.
"""

from __future__ import annotations

from urllib.parse import urlencode

from santong.fhir.call import Call
from santong.fhir.outcome import FhirError, error
from santong.search import terminology
from santong.search.query import MAX_VALUES, RESULT_PARAMETERS, Compiler
from santong.storage.repository import StoredVersion


def _selecting(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params if k not in RESULT_PARAMETERS]


def _lock_key(resource_type: str, params: list[tuple[str, str]]) -> str:
    return f"{resource_type}?{urlencode(sorted(_selecting(params)))}"


async def lock_criteria(call: Call, params: list[tuple[str, str]]) -> None:
    """Serialise conditional writes with the same criteria until this transaction ends."""
    await call.tx.lock(_lock_key(call.type, params))


async def lock_all_criteria(call: Call, criteria: list[tuple[str, list[tuple[str, str]]]]
                            ) -> None:
    """`lock_criteria` for several criteria, each (resource_type, params), taken one after
    another in the order given, by one statement."""
    await call.tx.lock_all([_lock_key(resource_type, params)
                            for resource_type, params in criteria])


async def match_or_lock(call: Call, params: list[tuple[str, str]], *,
                        unmatched: bool = False) -> list[StoredVersion]:
    """The criteria's matches (at most two); when there is none, the criteria stay locked
    until this transaction ends, so a concurrent write with the same criteria waits for it
    and then finds what it created. A match needs no lock: it was committed and stays found
    (locking every time serialised Bundles that merely refer to the same existing patient).
    `unmatched`: the criteria were just searched and matched nothing (go to the lock)."""
    matches = [] if unmatched else await match(call, params)
    if not matches:
        await lock_criteria(call, params)
        matches = await match(call, params)  # one may have been committed while we waited
    return matches


async def select_single(call: Call, params: list[tuple[str, str]], purpose: str, *,
                        unmatched: bool = False) -> StoredVersion | None:
    """The one resource the criteria select (None if none: then under the criteria's lock
    until this transaction ends); 412 when they select several
    (http://hl7.org/fhir/R4/http.html#ccreate). `unmatched`: as for match_or_lock."""
    return single(await match_or_lock(call, params, unmatched=unmatched), purpose)


def single(matches: list[StoredVersion], purpose: str) -> StoredVersion | None:
    """The only match, None for none, 412 for several."""
    if len(matches) > 1:
        raise error(412, "multiple-matches", f"The criteria match {len(matches)} resources: "
                    f"{purpose} needs at most one")
    return matches[0] if matches else None


async def prefetch_matches(call: Call, criteria: list[tuple[str, list[tuple[str, str]]]],
                           limit: int = 2) -> list[list[StoredVersion] | None]:
    """The matches (at most `limit`) of several criteria, each (resource_type, params), by
    one statement: a transaction Bundle's conditional creates, one round trip instead of one
    each. None for criteria it leaves to `match` (which also reports what is wrong with
    them): invalid ones and those with terminology modifiers (code sets resolved first).
    A prefetched match is as good as one found later: it was committed; no match must still
    be confirmed under the criteria's lock (`match_or_lock`)."""
    found: list[list[StoredVersion] | None] = [None] * len(criteria)
    position = 0
    while position < len(criteria):
        searches: list[tuple[str, list[tuple[str, dict[str, object]]]]] = []
        positions: list[int] = []
        binds = 0
        # A statement takes at most 32,767 parameters: a long Bundle's take several, each of
        # at most _CRITERIA_PER_STATEMENT criteria.
        while (position < len(criteria) and len(searches) < _CRITERIA_PER_STATEMENT
               and binds < _BINDS_PER_STATEMENT):
            resource_type, params = criteria[position]
            position += 1
            selecting = _selecting(params)
            if not selecting or any(key.rsplit(":", 1)[-1] in terminology.MODIFIERS
                                    for key, _ in selecting if ":" in key):
                continue
            # A compiler each: criteria of one shape then have the same SQL (aliases and
            # binds numbered alike), which storage runs as one (search_current_each).
            compiler = Compiler(call.request.base_url)
            try:
                # Raises past MAX_VALUES binds of its own (left to `match`, which reports it).
                compiled = compiler.compile(resource_type, selecting, strict=True)
            except FhirError:
                continue
            binds += len(compiler.binds)
            searches.append((resource_type, compiled.conditions))
            positions.append(position - 1)
        matches = await call.tx.search_current_each(searches, limit)
        for index, found_here in zip(positions, matches, strict=True):
            found[index] = found_here
    return found


# Up to this many binds, then one more criteria of at most MAX_VALUES: under 32,767.
_BINDS_PER_STATEMENT = MAX_VALUES
_CRITERIA_PER_STATEMENT = 100


async def match(call: Call, params: list[tuple[str, str]], limit: int = 2) -> list[StoredVersion]:
    selecting = _selecting(params)
    if not selecting:
        raise error(400, "invalid", "Conditional interactions need search criteria")
    resolved = await terminology.resolve(call.tx.connection, selecting, [call.type])
    compiled = Compiler(call.request.base_url, resolved).compile(call.type, selecting, strict=True)
    return await call.tx.search_current(call.type, compiled.conditions, limit)
