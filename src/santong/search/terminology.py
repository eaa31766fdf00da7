"""Token modifiers that need terminology: `:in`, `:not-in`, `:above`, `:below`.

http://hl7.org/fhir/R4/search.html#modifiers — `:in` / `:not-in` test membership of a ValueSet,
`:below` / `:above` subsumption in a CodeSystem's hierarchy. Both are answered from the
ValueSets and CodeSystems stored on this server (by canonical url or `ValueSet/id`), expanded
by the terminology package (`santong.terminology`, the same code as `$expand`) before the
query is compiled: the compiler then sees plain (system, code) sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from santong.fhir.outcome import error
from santong.search.parameters import get
from santong.search.query import split_token, split_values
from santong.terminology import TerminologyError
from santong.terminology.expansion import expand, fetch_value_set
from santong.terminology.store import Store

if TYPE_CHECKING:
    from santong.storage.repository import Connection

MODIFIERS = ("in", "not-in", "above", "below")
# (system, code); code None means every code of the system.
Codes = frozenset[tuple[str | None, str | None]]


async def _subsumption(store: Store, key: str, value: str, modifier: str) -> Codes:
    system, code = split_token(value)
    if not system or not code:
        raise error(400, "invalid", f"{key} takes system|code", expression=key)
    code_system = await store.code_system(system)
    concept = code_system.get(code) if code_system is not None else None
    if code_system is None or concept is None:
        raise error(400, "not-supported", f"{key}: {system}|{code} is not in a CodeSystem "
                    "stored on this server", expression=key)
    related = (code_system.ancestors(concept.code) if modifier == "above"
               else code_system.descendants(concept.code))
    return frozenset((system, c) for c in (concept.code, *related))


async def _expand(store: Store, key: str, reference: str) -> Codes:
    try:
        return (await expand(store, await fetch_value_set(store, reference))).codes()
    except TerminologyError as exc:
        raise error(400, exc.code, f"{key}: {exc.message}", expression=key) from None


def _is_token(key: str, resource_types: list[str]) -> bool:
    name = key.split(":")[0]
    if "." in key:  # a chain's last link: :in/:not-in exist for tokens only
        return key.endswith((":in", ":not-in"))
    return any((p := get(t, name)) is not None and p.type == "token" for t in resource_types)


async def resolve(connection: Connection, params: list[tuple[str, str]],
                  resource_types: list[str]) -> dict[tuple[str, str], Codes]:
    """The code sets the terminology modifiers in `params` stand for, by (modifier, value)."""
    resolved: dict[tuple[str, str], Codes] = {}
    store = Store(connection)
    for key, value in params:
        modifier = key.rsplit(":", 1)[-1] if ":" in key else ""
        if modifier not in MODIFIERS or key.startswith("_") or not _is_token(key, resource_types):
            continue
        for alternative in split_values(value):
            if (modifier, alternative) in resolved or not alternative:
                continue
            if modifier in ("in", "not-in"):
                codes = await _expand(store, key, alternative)
            else:
                codes = await _subsumption(store, key, alternative, modifier)
            resolved[(modifier, alternative)] = codes
    return resolved
