"""ValueSet expansion: compose → the codes of the value set, in order, without duplicates.

http://hl7.org/fhir/R4/valueset.html#compose — each `include` (and `exclude`) is the
intersection of its parts: the `system`'s codes (a `concept` list, else the codes every
`filter` selects, else the whole system) and the expansions of every imported `valueSet`;
the value set is the union of the includes less the union of the excludes.

A whole system this server does not store cannot be enumerated: it becomes a *wildcard*
(every code of that system), which search (`:in`) and `$validate-code` can still use but
`$expand` refuses. A ValueSet without `compose` falls back to its stored `expansion`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from santong.terminology.codesystem import CodeSystemIndex, Concept, property_text
from santong.terminology.errors import TerminologyError
from santong.terminology.store import Store

MAX_DEPTH = 10
_HIERARCHY_OPS = ("is-a", "descendent-of", "is-not-a", "generalizes")


@dataclass(frozen=True)
class Item:
    system: str | None
    code: str
    display: str | None = None
    version: str | None = None
    inactive: bool = False
    abstract: bool = False
    designations: tuple[Any, ...] = ()


@dataclass
class Expansion:
    items: dict[tuple[str | None, str], Item] = field(default_factory=dict)
    # Systems included whole but not stored here, and codes excluded from them.
    wildcards: set[str] = field(default_factory=set)
    excluded: set[tuple[str | None, str]] = field(default_factory=set)
    # (system, version) of every CodeSystem the expansion drew on.
    used: dict[tuple[str, str | None], None] = field(default_factory=dict)

    def add(self, item: Item) -> None:
        self.items.setdefault((item.system, item.code), item)

    def contains(self, system: str | None, code: str) -> bool:
        if (system, code) in self.items:
            return True
        return system in self.wildcards and (system, code) not in self.excluded

    def find(self, code: str, system: str | None = None) -> list[Item]:
        """The items with `code` (in `system` when given)."""
        if system is not None:
            item = self.items.get((system, code))
            return [item] if item else []
        return [i for (_, c), i in self.items.items() if c == code]

    def union(self, other: Expansion) -> None:
        excluded = {e for e in self.excluded | other.excluded
                    if not self.contains(*e) and not other.contains(*e)}
        for item in other.items.values():
            self.add(item)
        self.wildcards |= other.wildcards
        self.excluded = excluded
        self.used.update(other.used)

    def intersect(self, other: Expansion) -> Expansion:
        result = Expansion(used={**self.used, **other.used})
        for key, item in self.items.items():
            if other.contains(*key):
                result.add(item)
        for key, item in other.items.items():
            if self.contains(*key):
                result.add(item)
        result.wildcards = self.wildcards & other.wildcards
        result.excluded = self.excluded | other.excluded
        return result

    def subtract(self, other: Expansion) -> None:
        self.items = {k: v for k, v in self.items.items() if not other.contains(*k)}
        self.excluded |= {k for k in other.items if k[0] in self.wildcards}
        self.wildcards -= other.wildcards
        self.used.update(other.used)

    def codes(self) -> frozenset[tuple[str | None, str | None]]:
        """(system, code) pairs, with (system, None) for every wildcard system."""
        pairs: set[tuple[str | None, str | None]] = set(self.items)
        pairs |= {(system, None) for system in self.wildcards}
        return frozenset(pairs)


def _item(code_system: CodeSystemIndex, concept: Concept, display: str | None = None) -> Item:
    return Item(code_system.url, concept.code, display or concept.display, code_system.version,
                concept.inactive, concept.abstract, tuple(concept.designations))


async def expand(store: Store, value_set: dict[str, Any], depth: int = 0) -> Expansion:
    """The expansion of `value_set` (a ValueSet resource) from the definitions in `store`."""
    if depth > MAX_DEPTH:
        raise TerminologyError("invalid", "ValueSets import each other too deeply (a cycle?)")
    compose = value_set.get("compose")
    if not isinstance(compose, dict):
        result = Expansion()
        for entry in _flatten((value_set.get("expansion") or {}).get("contains", [])):
            result.add(Item(entry.get("system"), entry["code"], entry.get("display"),
                            entry.get("version"), entry.get("inactive") is True,
                            entry.get("abstract") is True, tuple(entry.get("designation", []))))
        return result
    result = Expansion()
    for part in compose.get("include", []):
        result.union(await _part(store, part, depth))
    for part in compose.get("exclude", []):
        result.subtract(await _part(store, part, depth))
    if compose.get("inactive") is False:
        result.items = {k: v for k, v in result.items.items() if not v.inactive}
    return result


async def fetch_value_set(store: Store, reference: str) -> dict[str, Any]:
    value_set = await store.fetch("ValueSet", reference)
    if value_set is None:
        raise TerminologyError("not-found", f"No ValueSet {reference!r} is stored on this server")
    return value_set


async def _part(store: Store, part: dict[str, Any], depth: int) -> Expansion:
    result: Expansion | None = None
    system = part.get("system")
    if isinstance(system, str):
        result = await _system_part(store, system, part)
    for reference in part.get("valueSet", []):
        imported = await expand(store, await fetch_value_set(store, reference), depth + 1)
        result = imported if result is None else result.intersect(imported)
    return result or Expansion()


async def _system_part(store: Store, system: str, part: dict[str, Any]) -> Expansion:
    result = Expansion()
    version = part.get("version")
    code_system = await store.code_system(system, version)
    if code_system is not None:
        result.used[(system, code_system.version)] = None
    listed = [c for c in part.get("concept", []) if isinstance(c.get("code"), str)]
    filters = part.get("filter", [])
    if listed:
        complete = code_system is not None and code_system.content == "complete"
        for entry in listed:
            concept = code_system.get(entry["code"]) if code_system else None
            if concept is not None:
                result.add(_item(code_system, concept, entry.get("display")))  # type: ignore[arg-type]
            elif not complete:
                result.add(Item(system, entry["code"], entry.get("display"), version))
    elif filters:
        if code_system is None:
            raise TerminologyError("not-supported", f"The ValueSet filters CodeSystem {system}, "
                                   "which is not stored on this server")
        selected = set(code_system.concepts)
        for condition in filters:
            selected &= _filter(code_system, condition)
        for code, concept in code_system.concepts.items():
            if code in selected:
                result.add(_item(code_system, concept))
    elif code_system is not None and code_system.content in ("complete", "fragment", None):
        for concept in code_system.concepts.values():
            result.add(_item(code_system, concept))
    else:
        result.wildcards.add(system)
    return result


def _filter(code_system: CodeSystemIndex, condition: dict[str, Any]) -> set[str]:
    """The codes of `code_system` one compose filter selects."""
    prop, op, value = condition.get("property"), condition.get("op"), condition.get("value")
    if not isinstance(value, str):
        raise TerminologyError("invalid", f"A ValueSet filter on {prop!r} has no value")
    concepts = code_system.concepts
    if prop in ("concept", "code") and op in _HIERARCHY_OPS:
        if code_system.get(value) is None:
            return set()
        value = code_system.get(value).code  # type: ignore[union-attr]
        below = set(code_system.descendants(value))
        if op == "is-a":
            return below | {value}
        if op == "descendent-of":
            return below
        if op == "is-not-a":
            return set(concepts) - below - {value}
        return set(code_system.ancestors(value)) | {value}  # generalizes
    texts: dict[str, list[str]] = {}
    for code, concept in concepts.items():
        if prop in ("concept", "code"):
            texts[code] = [code]
        elif prop == "display":
            texts[code] = code_system.displays(concept)
        elif prop == "parent":
            texts[code] = list(concept.parents)
        elif prop == "child":
            texts[code] = list(concept.children)
        else:
            texts[code] = [t for p in concept.properties if p.get("code") == prop
                           if (t := property_text(p)) is not None]
    if op == "=":
        return {c for c, values in texts.items() if value in values}
    if op in ("in", "not-in"):
        wanted = {v.strip() for v in value.split(",")}
        hits = {c for c, values in texts.items() if wanted & set(values)}
        return hits if op == "in" else set(concepts) - hits
    if op == "regex":
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise TerminologyError("invalid", f"Filter regex {value!r} is invalid: {exc}"
                                   ) from None
        return {c for c, values in texts.items() if any(pattern.fullmatch(v) for v in values)}
    if op == "exists":
        present = {c for c, values in texts.items() if values}
        return present if value == "true" else set(concepts) - present
    raise TerminologyError("not-supported", f"ValueSet filter {op!r} on {prop!r} is not "
                           "supported")


def _flatten(contains: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for entry in contains:
        if isinstance(entry.get("code"), str):
            yield entry
        yield from _flatten(entry.get("contains", []))


def matches_text(item: Item, text: str) -> bool:
    """The `filter` parameter of $expand: a case-insensitive substring of the code, the
    display or a designation (Chinese displays have no word boundaries to anchor on)."""
    needle = text.strip().lower()
    if not needle:
        return True
    names = [item.code, item.display or ""]
    names += [d.get("value", "") for d in item.designations if isinstance(d, dict)]
    return any(needle in name.lower() for name in names)
