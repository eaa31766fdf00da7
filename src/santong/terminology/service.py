"""The terminology questions behind the operations: is this code valid, what is this code.

http://hl7.org/fhir/R4/valueset-operation-validate-code.html,
http://hl7.org/fhir/R4/codesystem-operation-validate-code.html and
http://hl7.org/fhir/R4/codesystem-operation-lookup.html. Independent of HTTP, so a profile
validator checking bindings can ask the same questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from santong.terminology.codesystem import CodeSystemIndex, property_value
from santong.terminology.expansion import Expansion, expand
from santong.terminology.store import Store


@dataclass(frozen=True)
class Coding:
    system: str | None
    code: str | None
    display: str | None = None
    version: str | None = None

    @classmethod
    def of(cls, value: dict[str, Any]) -> Coding:
        return cls(value.get("system"), value.get("code"), value.get("display"),
                   value.get("version"))

    def label(self) -> str:
        return f"{self.system}|{self.code}" if self.system else f"{self.code}"


@dataclass(frozen=True)
class Validation:
    result: bool
    message: str | None = None
    display: str | None = None
    coding: Coding | None = None  # the coding the result is about


def _check_display(coding: Coding, expected: str | None, allowed: list[str]) -> Validation:
    if coding.display and allowed and coding.display not in allowed:
        return Validation(False, f"The display {coding.display!r} is not a valid display for "
                          f"{coding.label()}; it should be {expected!r}", expected, coding)
    return Validation(True, None, expected, coding)


async def validate_in_value_set(store: Store, value_set: dict[str, Any],
                                codings: list[Coding],
                                expansion: Expansion | None = None) -> Validation:
    """Whether any of `codings` is in `value_set` (with a right display, if one is given)."""
    if expansion is None:
        expansion = await expand(store, value_set)
    name = value_set.get("url") or f"ValueSet/{value_set.get('id')}"
    failures: list[Validation] = []
    for coding in codings:
        outcome = await _one_in_value_set(store, expansion, coding, name)
        if outcome.result:
            return outcome
        failures.append(outcome)
    if not failures:
        return Validation(False, "No code was given")
    return Validation(False, "; ".join(f.message or "" for f in failures),
                      next((f.display for f in failures if f.display), None), failures[0].coding)


async def _one_in_value_set(store: Store, expansion: Expansion, coding: Coding, name: str
                            ) -> Validation:
    code, system = coding.code, coding.system
    if not code:
        return Validation(False, "A coding without a code cannot be validated", None, coding)
    code_system = await store.code_system(system, coding.version) if system else None
    if code_system is not None and code_system.get(code) is not None:
        code = code_system.get(code).code  # type: ignore[union-attr]
    hits = expansion.find(code, system)
    if hits:
        item = hits[0]
        concept = code_system.get(code) if code_system else None
        allowed = (code_system.displays(concept) if code_system and concept
                   else [item.display] if item.display else [])
        return _check_display(coding, item.display, allowed)
    if system and expansion.contains(system, code):
        if code_system is not None and code_system.content == "complete":
            concept = code_system.get(code)
            if concept is None:
                return Validation(False, f"Unknown code {code!r} in CodeSystem {system}",
                                  None, coding)
            return _check_display(coding, concept.display, code_system.displays(concept))
        return Validation(True, f"{name} includes all of {system}, which is not stored on "
                          "this server: the code itself was not checked", coding.display, coding)
    if code_system is not None and code_system.content == "complete" \
            and code_system.get(code) is None:
        return Validation(False, f"Unknown code {code!r} in CodeSystem {system}; it is not in "
                          f"the value set {name}", None, coding)
    return Validation(False, f"The code {coding.label()} is not in the value set {name}",
                      None, coding)


def validate_in_code_system(code_system: CodeSystemIndex, codings: list[Coding]) -> Validation:
    """Whether any of `codings` (of this system, or without one) is a code of `code_system`."""
    failures: list[Validation] = []
    for coding in codings:
        if coding.system is not None and coding.system != code_system.url:
            failures.append(Validation(False, f"The coding {coding.label()} is not from "
                                       f"CodeSystem {code_system.url}", None, coding))
            continue
        if not coding.code:
            failures.append(Validation(False, "A coding without a code cannot be validated",
                                       None, coding))
            continue
        concept = code_system.get(coding.code)
        if concept is None:
            failures.append(Validation(False, f"Unknown code {coding.code!r} in CodeSystem "
                                       f"{code_system.url}", None, coding))
            continue
        outcome = _check_display(coding, concept.display, code_system.displays(concept))
        if outcome.result:
            return outcome
        failures.append(outcome)
    if not failures:
        return Validation(False, "No code was given")
    return Validation(False, "; ".join(f.message or "" for f in failures),
                      next((f.display for f in failures if f.display), None), failures[0].coding)


def lookup(code_system: CodeSystemIndex, code: str, properties: list[str] | None = None
           ) -> list[dict[str, Any]] | None:
    """The out-parameters of $lookup for `code` (None if unknown): name, version, display,
    definition, designation, and property — parent, child and the concept's own properties
    (only those named in `properties`, when given)."""
    concept = code_system.get(code)
    if concept is None:
        return None
    wanted = set(properties or ())

    def asked(name: str) -> bool:
        return not wanted or name in wanted

    out: list[dict[str, Any]] = [{"name": "name", "valueString": code_system.name}]
    if code_system.version:
        out.append({"name": "version", "valueString": code_system.version})
    out.append({"name": "display", "valueString": concept.display or concept.code})
    if concept.definition and asked("definition"):
        out.append({"name": "definition", "valueString": concept.definition})
    if concept.abstract:
        out.append({"name": "abstract", "valueBoolean": True})
    if asked("designation"):
        for designation in concept.designations:
            if not isinstance(designation.get("value"), str):
                continue
            parts: list[dict[str, Any]] = []
            if designation.get("language"):
                parts.append({"name": "language", "valueCode": designation["language"]})
            if isinstance(designation.get("use"), dict):
                parts.append({"name": "use", "valueCoding": designation["use"]})
            parts.append({"name": "value", "valueString": designation["value"]})
            out.append({"name": "designation", "part": parts})
    for name, codes in (("parent", concept.parents), ("child", concept.children)):
        if asked(name):
            for related in codes:
                parts = [{"name": "code", "valueCode": name},
                         {"name": "value", "valueCode": related}]
                display = code_system.concepts[related].display
                if display:
                    parts.append({"name": "description", "valueString": display})
                out.append({"name": "property", "part": parts})
    for prop in concept.properties:
        name = prop.get("code")
        if not isinstance(name, str) or not asked(name):
            continue
        value_key = next((k for k in prop if k.startswith("value")), None)
        if value_key is None:
            continue
        out.append({"name": "property", "part": [
            {"name": "code", "valueCode": name},
            {"name": "value", value_key: property_value(prop)}]})
    return out
