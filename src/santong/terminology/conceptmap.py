"""ConceptMap translation (http://hl7.org/fhir/R4/conceptmap.html, `$translate`).

Forwards, a (system, code) is looked up in every group whose `source` is the system: each
`target` of its element is a match, with the element's `equivalence`; a code with no element
falls to the group's `unmapped` (`provided`: the same code in the target system; `fixed`: the
given code). In reverse, the target codes are searched and the equivalence turned round
(wider ↔ narrower, subsumes ↔ specializes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_REVERSED = {"wider": "narrower", "narrower": "wider", "subsumes": "specializes",
             "specializes": "subsumes"}
# Equivalences that do not make a usable translation.
NEGATIVE = ("unmatched", "disjoint")


@dataclass(frozen=True)
class Match:
    equivalence: str
    system: str | None
    code: str | None
    display: str | None
    source: str | None  # the ConceptMap's canonical url
    version: str | None = None
    comment: str | None = None


def translate(concept_map: dict[str, Any], system: str, code: str,
              target_system: str | None = None, reverse: bool = False) -> list[Match]:
    """The matches `concept_map` gives for `system`|`code` (into `target_system` if given)."""
    url = concept_map.get("url")
    matches: list[Match] = []
    for group in concept_map.get("group", []):
        if not isinstance(group, dict):
            continue
        source, target = group.get("source"), group.get("target")
        if reverse:
            source, target = target, source
        if source != system or (target_system is not None and target != target_system):
            continue
        version = group.get("sourceVersion" if reverse else "targetVersion")
        found = False
        for element in group.get("element", []):
            if reverse:
                for candidate in element.get("target", []):
                    if candidate.get("code") == code:
                        found = True
                        equivalence = candidate.get("equivalence", "equivalent")
                        matches.append(Match(_REVERSED.get(equivalence, equivalence), target,
                                             element.get("code"), element.get("display"), url,
                                             version, candidate.get("comment")))
            elif element.get("code") == code:
                found = True
                for candidate in element.get("target", []):
                    matches.append(Match(candidate.get("equivalence", "equivalent"), target,
                                         candidate.get("code"), candidate.get("display"), url,
                                         version, candidate.get("comment")))
        unmapped = group.get("unmapped") or {}
        if not found and not reverse:
            if unmapped.get("mode") == "provided":
                matches.append(Match("equal", target, code, None, url, version))
            elif unmapped.get("mode") == "fixed" and unmapped.get("code"):
                matches.append(Match("inexact", target, unmapped["code"],
                                     unmapped.get("display"), url, version))
    return matches


def in_scope(concept_map: dict[str, Any], source: str | None, target: str | None) -> bool:
    """Whether the map's source / target value sets are the ones asked for (when asked)."""
    def scope(side: str) -> str | None:
        value = concept_map.get(f"{side}Uri") or concept_map.get(f"{side}Canonical")
        return value.split("|")[0] if isinstance(value, str) else None

    return ((source is None or scope("source") == source.split("|")[0])
            and (target is None or scope("target") == target.split("|")[0]))
