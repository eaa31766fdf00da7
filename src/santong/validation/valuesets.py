"""ValueSet membership for profile bindings, over ValueSets and CodeSystems held in memory.

A deliberately small expander (http://hl7.org/fhir/R4/valueset.html#compose): `expansion.contains`
when present, else each `include`/`exclude` as its listed `concept`s, its `valueSet` imports, the
`is-a`/`descendent-of` filters on a CodeSystem we hold, or a whole system (every code of it, as
a wildcard when the CodeSystem is not held). Anything else (other filters, missing imports)
makes the ValueSet *undecidable*: bindings to it are not checked.

This overlaps `santong.terminology.expansion` (the terminology operations) and
`santong.search.terminology` (`:in`); both are async and read the database per call, while
write-time validation needs a synchronous, in-memory answer. When the terminology package
settles, `Codes.from_value_set` can be fed from its expansions instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

_MAX_DEPTH = 10


class Undecidable(Exception):
    """The ValueSet cannot be expanded here."""


@dataclass(slots=True)
class Codes:
    """The codes of one ValueSet: (system, code) pairs plus whole systems."""

    pairs: set[tuple[str | None, str]] = field(default_factory=set)
    systems: set[str] = field(default_factory=set)  # every code of these systems
    excluded: set[tuple[str | None, str]] = field(default_factory=set)
    by_code: set[str] = field(default_factory=set)

    def contains(self, system: str | None, code: str) -> bool:
        """Whether (system, code) is in the value set; system None matches on the code alone."""
        if system is None:
            return code in self.by_code or bool(self.systems)
        if (system, code) in self.pairs:
            return True
        return system in self.systems and (system, code) not in self.excluded


def _concepts(concepts: Iterable[dict[str, Any]], ancestors: tuple[str, ...] = ()
              ) -> Iterator[tuple[str, tuple[str, ...]]]:
    for concept in concepts:
        code = concept.get("code")
        if isinstance(code, str):
            yield code, ancestors
            yield from _concepts(concept.get("concept", []), (*ancestors, code))


def _flatten(contains: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in contains:
        if item.get("code"):
            yield item
        yield from _flatten(item.get("contains", []))


Lookup = Callable[[str], dict[str, Any] | None]


def expand(value_set: dict[str, Any], value_sets: Lookup, code_systems: Lookup,
           depth: int = 0) -> Codes:
    """The codes of `value_set`; raises Undecidable when they cannot be known here."""
    if depth > _MAX_DEPTH:
        raise Undecidable("ValueSets import each other too deeply")
    out = Codes()
    contains = (value_set.get("expansion") or {}).get("contains")
    compose = value_set.get("compose")
    if contains and not compose:
        for item in _flatten(contains):
            out.pairs.add((item.get("system"), item["code"]))
    else:
        if not compose:
            raise Undecidable("the ValueSet has neither compose nor expansion")
        for part in compose.get("include", []):
            _part(out, part, value_sets, code_systems, depth, exclude=False)
        for part in compose.get("exclude", []):
            _part(out, part, value_sets, code_systems, depth, exclude=True)
    out.by_code = {code for _, code in out.pairs}
    return out


def _part(out: Codes, part: dict[str, Any], value_sets: Lookup, code_systems: Lookup,
          depth: int, exclude: bool) -> None:
    system = part.get("system")
    imported: list[Codes] = []
    for reference in part.get("valueSet", []):
        nested = value_sets(reference)
        if nested is None:
            raise Undecidable(f"ValueSet {reference} is not loaded")
        imported.append(expand(nested, value_sets, code_systems, depth + 1))
    if not system:
        for codes in imported:
            if exclude:
                out.pairs -= codes.pairs
            else:
                out.pairs |= codes.pairs
                out.systems |= codes.systems
        return
    if imported:
        raise Undecidable("an include with both a system and valueSet imports")
    listed = [c["code"] for c in part.get("concept", []) if isinstance(c.get("code"), str)]
    filters = part.get("filter", [])
    pairs: set[tuple[str | None, str]] = set()
    if listed:
        pairs = {(system, c) for c in listed}
    elif filters:
        code_system = code_systems(system)
        if code_system is None:
            raise Undecidable(f"the ValueSet filters CodeSystem {system}, which is not loaded")
        hierarchy = dict(_concepts(code_system.get("concept", [])))
        for condition in filters:
            op, value = condition.get("op"), condition.get("value")
            if condition.get("property") != "concept" or op not in ("is-a", "descendent-of"):
                raise Undecidable(f"filter {op!r} on {condition.get('property')!r}")
            pairs |= {(system, c) for c, ancestors in hierarchy.items()
                      if value in ancestors or (op == "is-a" and c == value)}
    else:
        code_system = code_systems(system)
        if code_system is not None and code_system.get("content") == "complete":
            pairs = {(system, c) for c, _ in _concepts(code_system.get("concept", []))}
        elif exclude:
            out.systems.discard(system)
            out.pairs = {p for p in out.pairs if p[0] != system}
            return
        else:
            out.systems.add(system)
            return
    if exclude:
        out.pairs -= pairs
        out.excluded |= pairs
    else:
        out.pairs |= pairs
