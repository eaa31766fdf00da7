"""Token modifiers that need terminology: `:in`, `:not-in`, `:above`, `:below`.

http://hl7.org/fhir/R4/search.html#modifiers — `:in` / `:not-in` test membership of a ValueSet,
`:below` / `:above` subsumption in a CodeSystem's hierarchy. Both are answered from the
ValueSets and CodeSystems stored on this server (by canonical url or `ValueSet/id`), expanded
in Python before the query is compiled: the compiler then sees plain (system, code) sets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from santong.fhir.outcome import error
from santong.search.parameters import get
from santong.search.query import split_token, split_values

MODIFIERS = ("in", "not-in", "above", "below")
# (system, code); code None means every code of the system.
Codes = frozenset[tuple[str | None, str | None]]

_BY_URL = text(
    "SELECT r.content FROM resource r JOIN search_uri u ON u.rid = r.rid"
    " WHERE u.resource_type = :type AND u.code = 'url' AND u.value = :url AND NOT r.deleted"
    " ORDER BY r.last_updated DESC LIMIT 1"
)
_BY_ID = text(
    "SELECT content FROM resource WHERE resource_type = :type AND id = :id AND NOT deleted"
)


async def _fetch(connection: AsyncConnection, resource_type: str, reference: str
                 ) -> dict[str, Any] | None:
    reference = reference.split("|")[0]
    if reference.startswith(f"{resource_type}/"):
        row = (await connection.execute(_BY_ID, {"type": resource_type,
                                                  "id": reference.split("/")[1]})).first()
    else:
        row = (await connection.execute(_BY_URL, {"type": resource_type, "url": reference})
               ).first()
    return orjson.loads(row[0]) if row else None


def _concepts(concepts: Iterable[dict[str, Any]], ancestors: tuple[str, ...] = ()
              ) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Every concept code of a CodeSystem with its ancestors (nested concepts are is-a)."""
    for concept in concepts:
        code = concept.get("code")
        if isinstance(code, str):
            yield code, ancestors
            yield from _concepts(concept.get("concept", []), (*ancestors, code))


async def _hierarchy(connection: AsyncConnection, system: str
                     ) -> dict[str, tuple[str, ...]] | None:
    code_system = await _fetch(connection, "CodeSystem", system)
    if code_system is None:
        return None
    return dict(_concepts(code_system.get("concept", [])))


async def _subsumption(connection: AsyncConnection, key: str, value: str, modifier: str
                       ) -> Codes:
    system, code = split_token(value)
    if not system or not code:
        raise error(400, "invalid", f"{key} takes system|code", expression=key)
    hierarchy = await _hierarchy(connection, system)
    if hierarchy is None or code not in hierarchy:
        raise error(400, "not-supported", f"{key}: {system}|{code} is not in a CodeSystem "
                    "stored on this server", expression=key)
    if modifier == "above":
        return frozenset((system, c) for c in (code, *hierarchy[code]))
    return frozenset((system, c) for c, ancestors in hierarchy.items()
                     if c == code or code in ancestors)


async def _include(connection: AsyncConnection, key: str, part: dict[str, Any],
                   depth: int) -> set[tuple[str | None, str | None]]:
    codes: set[tuple[str | None, str | None]] = set()
    system = part.get("system")
    for nested in part.get("valueSet", []):
        codes |= await _expand(connection, key, nested, depth + 1)
    if not system:
        return codes
    listed = [c["code"] for c in part.get("concept", []) if isinstance(c.get("code"), str)]
    filters = part.get("filter", [])
    if listed:
        codes |= {(system, c) for c in listed}
    elif filters:
        hierarchy = await _hierarchy(connection, system)
        if hierarchy is None:
            raise error(400, "not-supported", f"{key}: the ValueSet filters CodeSystem {system}, "
                        "which is not stored on this server", expression=key)
        for condition in filters:
            op, value = condition.get("op"), condition.get("value")
            if condition.get("property") != "concept" or op not in ("is-a", "descendent-of"):
                raise error(400, "not-supported", f"{key}: ValueSet filter {op!r} on "
                            f"{condition.get('property')!r} is not supported", expression=key)
            codes |= {(system, c) for c, ancestors in hierarchy.items()
                      if value in ancestors or (op == "is-a" and c == value)}
    else:
        codes.add((system, None))
    return codes


async def _expand(connection: AsyncConnection, key: str, reference: str, depth: int = 0
                  ) -> set[tuple[str | None, str | None]]:
    if depth > 10:
        raise error(400, "invalid", f"{key}: ValueSets import each other too deeply",
                    expression=key)
    value_set = await _fetch(connection, "ValueSet", reference)
    if value_set is None:
        raise error(400, "not-found", f"{key}: no ValueSet {reference!r} on this server",
                    expression=key)
    contains = (value_set.get("expansion") or {}).get("contains")
    if contains:
        return {(c.get("system"), c.get("code")) for c in _flatten(contains)}
    compose = value_set.get("compose") or {}
    codes: set[tuple[str | None, str | None]] = set()
    for part in compose.get("include", []):
        codes |= await _include(connection, key, part, depth)
    for part in compose.get("exclude", []):
        codes -= await _include(connection, key, part, depth)
    return codes


def _flatten(contains: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in contains:
        if item.get("code"):
            yield item
        yield from _flatten(item.get("contains", []))


def _is_token(key: str, resource_types: list[str]) -> bool:
    name = key.split(":")[0]
    if "." in key:  # a chain's last link: :in/:not-in exist for tokens only
        return key.endswith((":in", ":not-in"))
    return any((p := get(t, name)) is not None and p.type == "token" for t in resource_types)


async def resolve(connection: AsyncConnection, params: list[tuple[str, str]],
                  resource_types: list[str]) -> dict[tuple[str, str], Codes]:
    """The code sets the terminology modifiers in `params` stand for, by (modifier, value)."""
    resolved: dict[tuple[str, str], Codes] = {}
    for key, value in params:
        modifier = key.rsplit(":", 1)[-1] if ":" in key else ""
        if modifier not in MODIFIERS or key.startswith("_") or not _is_token(key, resource_types):
            continue
        for alternative in split_values(value):
            if (modifier, alternative) in resolved or not alternative:
                continue
            if modifier in ("in", "not-in"):
                codes = frozenset(await _expand(connection, key, alternative))
            else:
                codes = await _subsumption(connection, key, alternative, modifier)
            resolved[(modifier, alternative)] = codes
    return resolved
