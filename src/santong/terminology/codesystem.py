"""A CodeSystem's concepts by code, with their is-a hierarchy.

http://hl7.org/fhir/R4/codesystem.html — nested `concept`s are children of the concept they
sit in (the hierarchy R4 calls `hierarchyMeaning`; subsumption treats it as is-a, as the
search modifiers always have), and the `parent` / `child` properties
(http://hl7.org/fhir/concept-properties) add edges for flat or poly-hierarchical systems.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

_PARENT = "parent"
_CHILD = "child"


@dataclass
class Concept:
    code: str
    display: str | None
    definition: str | None
    designations: list[dict[str, Any]]
    # The stored properties other than parent/child, each {"code": …, "value[x]": …}.
    properties: list[dict[str, Any]]
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)

    @property
    def inactive(self) -> bool:
        for prop in self.properties:
            if prop.get("code") == "inactive" and prop.get("valueBoolean") is True:
                return True
            if prop.get("code") == "status" and property_value(prop) in ("retired", "inactive"):
                return True
        return False

    @property
    def abstract(self) -> bool:
        return any(p.get("code") == "notSelectable" and p.get("valueBoolean") is True
                   for p in self.properties)


def property_value(prop: dict[str, Any]) -> Any:
    """The value[x] of a concept property (or of a filter/parameter element)."""
    for key, value in prop.items():
        if key.startswith("value"):
            return value
    return None


def property_text(prop: dict[str, Any]) -> str | None:
    """A property value as filter text: codes and strings as they are, booleans lower case."""
    value = property_value(prop)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, dict) and "code" in value:  # valueCoding
        return str(value["code"])
    return None


class CodeSystemIndex:
    def __init__(self, resource: dict[str, Any]) -> None:
        self.resource = resource
        self.url: str | None = resource.get("url")
        self.version: str | None = resource.get("version")
        self.name: str = resource.get("title") or resource.get("name") or self.url or ""
        self.case_sensitive = resource.get("caseSensitive") is not False
        self.content = resource.get("content")
        self.concepts: dict[str, Concept] = {}
        self._folded: dict[str, str] = {}
        for concept, parent in _walk(resource.get("concept", []), None):
            self._add(concept, parent)
        for concept in list(self.concepts.values()):
            for prop in concept.properties:
                if prop.get("code") == _PARENT and prop.get("valueCode") in self.concepts:
                    self._link(prop["valueCode"], concept.code)
                elif prop.get("code") == _CHILD and prop.get("valueCode") in self.concepts:
                    self._link(concept.code, prop["valueCode"])
            concept.properties = [p for p in concept.properties
                                  if p.get("code") not in (_PARENT, _CHILD)]

    def _add(self, raw: dict[str, Any], parent: str | None) -> None:
        code = raw["code"]
        if code not in self.concepts:
            self.concepts[code] = Concept(
                code, raw.get("display"), raw.get("definition"),
                [d for d in raw.get("designation", []) if isinstance(d, dict)],
                [p for p in raw.get("property", []) if isinstance(p, dict)])
            self._folded.setdefault(code.lower(), code)
        if parent is not None:
            self._link(parent, code)

    def _link(self, parent: str, child: str) -> None:
        if child not in self.concepts[parent].children:
            self.concepts[parent].children.append(child)
        if parent not in self.concepts[child].parents:
            self.concepts[child].parents.append(parent)

    def get(self, code: str) -> Concept | None:
        """The concept `code` names (ignoring case when the system is not case-sensitive)."""
        found = self.concepts.get(code)
        if found is None and not self.case_sensitive:
            canonical = self._folded.get(code.lower())
            found = self.concepts.get(canonical) if canonical else None
        return found

    def descendants(self, code: str) -> list[str]:
        """Every concept below `code` (not `code` itself), in breadth-first order."""
        seen: dict[str, None] = {}
        queue = list(self.concepts[code].children) if code in self.concepts else []
        while queue:
            current = queue.pop(0)
            if current in seen or current == code:
                continue
            seen[current] = None
            queue.extend(self.concepts[current].children)
        return list(seen)

    def ancestors(self, code: str) -> list[str]:
        """Every concept above `code` (not `code` itself), nearest first."""
        seen: dict[str, None] = {}
        queue = list(self.concepts[code].parents) if code in self.concepts else []
        while queue:
            current = queue.pop(0)
            if current in seen or current == code:
                continue
            seen[current] = None
            queue.extend(self.concepts[current].parents)
        return list(seen)

    def subsumes(self, general: str, specific: str) -> bool:
        return general == specific or general in self.ancestors(specific)

    def displays(self, concept: Concept) -> list[str]:
        """The display and every designation value: what a client may call the concept."""
        names = [concept.display] if concept.display else []
        names += [d["value"] for d in concept.designations if isinstance(d.get("value"), str)]
        return names


def _walk(concepts: Iterable[Any], parent: str | None
          ) -> Iterator[tuple[dict[str, Any], str | None]]:
    for concept in concepts:
        if isinstance(concept, dict) and isinstance(concept.get("code"), str):
            yield concept, parent
            yield from _walk(concept.get("concept", []), concept["code"])
