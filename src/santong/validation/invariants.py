"""The invariants of the base R4 definitions (``constraint``: pat-1, ctm-1, ppc-1, …).

http://hl7.org/fhir/R4/conformance-rules.html#constraints: resources, datatypes and
BackboneElements declare FHIRPath invariants; an instance must meet those of every structure
it holds. The definitions (:mod:`santong.definitions`, derived from the R4 package) carry them;
here each is compiled once into a closure by the search engine's compiled FHIRPath subset
(:func:`santong.search.extract.compile_test`). The structural validator, which visits every
object of a resource with its structure anyway, notes the objects whose structure has
invariants and runs them here once the structure is found valid
(:mod:`santong.validation.structure`), so a write pays for the invariants that apply to what
it holds, not for another walk. An invariant that reads only some elements of its focus and
holds on an empty one (``contained.contained.empty()``) is not run where those are absent.

Not evaluated:

* ``ele-1`` (every element has a value or children): the structural validator enforces it;
* best-practice recommendations (``dom-6`` narrative, ``con-3``): guidance, not rules;
* those outside the compiled subset (:func:`skipped` lists them with the reason: ``dom-3``
  and ``que-2`` need ``descendants()``, ``txt-1``/``txt-2`` the HL7 validator's
  ``htmlChecks()``, ``ig-1``/``ig-2`` ``%context``, ``obs-7`` ``intersect()``, ``csd-1``
  ``combine()``, ``cnt-3`` ``toString()``, ``sdf-8a`` ``replaceMatches()``, ``sdf-9``
  ``children()``): fhirpathpy would cost milliseconds per write.

A few are evaluated by hand or with a corrected expression (``_NATIVE``, ``_CORRECTED``):
``ext-1``, as the compiled subset does not see a primitive value carried only by extensions
(``_valueString``), which the official examples use; ``ref-1``, ``per-1`` and ``bdl-8`` as
R5 rewrote them, and ``ras-2`` guarded: their R4 text is empty, so fails, on valid data (a
Reference with only an identifier, a Period of two precisions, an entry without fullUrl, a
prediction without probability), which the HL7 validator's engine reads as true.

As in the HL7 validator, an invariant passes only when it evaluates to a single ``true``; one
whose evaluation fails (a FHIRPath error on odd data) is a warning. ``%resource`` and
``%rootResource`` are the resource the value is in, or for a contained resource its container
(so ``#id`` references resolve); a Bundle entry or a Parameters resource is a root of its own.
Issues have code ``invariant``, the constraint's severity, the key, text and expression in the
diagnostics and the location of the value tested (``CareTeam.participant[0]``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cache
from typing import Any

from santong import definitions
from santong.definitions import COMPLEX, Constraint, Structure
from santong.fhir.datetimes import parse_range
from santong.search.extract import Test, compile_test, focus_elements
from santong.validation.structure import ValidationIssue

__all__ = ["ERRORS", "WARNINGS", "Check", "checks", "run", "skipped"]

ERRORS = frozenset({"error"})
WARNINGS = frozenset({"error", "warning"})


@dataclass(frozen=True, slots=True)
class Check:
    """One compiled invariant of a structure."""

    constraint: Constraint
    # On the structure's own value: the test, and the JSON keys without any of which it holds
    # (None: always run it).
    test: Test | None
    gate: frozenset[str] | None
    # On an element's values instead: (JSON name, test) per name it appears under (a choice
    # element is compiled once per type).
    tests: tuple[tuple[str, Test], ...] = ()


def _ext_1(extension: Any, root: dict[str, Any]) -> bool:
    # `extension.exists() != value.exists()`, where an extension-only primitive is a value.
    if not isinstance(extension, dict):
        return True
    has_value = any(key.startswith(("value", "_value")) for key in extension)
    return bool(extension.get("extension")) != has_value


def _ref_1(reference: Any, root: dict[str, Any]) -> bool:
    # R5's ref-1: a local reference (`#id`) names a contained resource of the resource it is
    # in; `#` alone is the container itself. R4's text is empty (fails) when there is no
    # `reference` at all (an identifier or display only).
    target = reference.get("reference") if isinstance(reference, dict) else None
    if not isinstance(target, str) or not target.startswith("#") or target == "#":
        return True
    return any(isinstance(c, dict) and c.get("id") == target[1:]
               for c in root.get("contained", ()))


# A date or time without a zone may be in any zone (-12:00 … +14:00).
_ZONELESS = timedelta(hours=14)


def _per_1(period: Any, root: dict[str, Any]) -> bool:
    # R5's per-1, `start.lowBoundary() <= end.highBoundary()`: R4's `start <= end` is empty
    # (fails) for values of different precisions (2020 … 2020-05-01).
    start, end = (period.get("start"), period.get("end")) if isinstance(period, dict) else (
        None, None)
    if not isinstance(start, str) or not isinstance(end, str):
        return True
    if len(start) == len(end) and _zone_of(start) == _zone_of(end) and "." not in start:
        return start <= end  # one precision and one zone: the text orders like the time
    try:
        low, high = parse_range(start)[0], parse_range(end)[1]
    except (ValueError, OverflowError):
        return True  # the structural validator reports a malformed value
    start_zoned, end_zoned = _ZONE.search(start) is not None, _ZONE.search(end) is not None
    if start_zoned != end_zoned:  # parse_range took the zoneless one as UTC
        if start_zoned:
            high += _ZONELESS
        else:
            low -= _ZONELESS
    return low < high  # the high boundary is exclusive


_ZONE = re.compile(r"(?:Z|[+-]\d{2}:\d{2})$")


def _zone_of(text: str) -> str:
    return "Z" if text.endswith("Z") else text[-6:] if len(text) > 10 and text[-6] in "+-" else ""

# R4 invariants the compiled subset would get wrong, or whose R4 text fails valid data (the
# HL7 validator's engine reads their empty results as true), written by hand: (structure,
# key) -> test.
_NATIVE: dict[tuple[str, str], Test] = {
    ("Extension", "ext-1"): _ext_1,
    ("Reference", "ref-1"): _ref_1,
    ("Period", "per-1"): _per_1,
}
# …or corrected in FHIRPath, as later versions did (R5's bdl-8) or by guarding the empty case.
_CORRECTED: dict[tuple[str, str], str] = {
    ("Bundle.entry", "bdl-8"): "fullUrl.exists() implies fullUrl.contains('/_history/').not()",
    ("RiskAssessment.prediction", "ras-2"):
        "probability.exists() implies (probability is decimal implies "
        "(probability as decimal) <= 100)",
}


def _gate(struct: Structure, expression: str, test: Test) -> frozenset[str] | None:
    """The JSON keys of the elements `expression` reads, if it holds when none is present."""
    names = focus_elements(expression)
    if not names:
        return None
    keys: set[str] = set()
    for name in names:
        found = (name,) if name in struct.elements else struct.choices.get(name)
        if not found:
            return None  # not an element of the structure: cannot tell
        keys.update(key for json_name in found for key in (json_name, "_" + json_name))
    try:
        holds = test({}, {"resourceType": struct.name})
    except Exception:  # an expression that fails on nothing is not worth gating
        return None
    return frozenset(keys) if holds else None


def _where(struct: Structure, constraint: Constraint) -> str:
    """How skipped() names an invariant: those of DomainResource once, under it."""
    if struct.kind == "resource" and constraint.key.startswith("dom-"):
        return f"{constraint.key}@DomainResource"
    return f"{constraint.key}@{struct.name}"


def _compile(struct: Structure, constraint: Constraint, skipped: dict[str, str]
             ) -> Check | None:
    where = _where(struct, constraint)
    native = _NATIVE.get((struct.name, constraint.key))
    if native is not None:
        return Check(constraint, native, None)
    corrected = _CORRECTED.get((struct.name, constraint.key))
    if corrected is not None:
        constraint = replace(constraint, expression=corrected)
    if constraint.element is None:
        test = compile_test(struct.name, constraint.expression)
        if test is None:
            skipped[where] = "outside the compiled FHIRPath subset"
            return None
        return Check(constraint, test, _gate(struct, constraint.expression, test))
    name = constraint.element
    names = (struct.choices.get(name[:-3], ()) if name.endswith("[x]")
             else (name,) if name in struct.elements else ())
    tests = []
    for json_name in names:
        test = compile_test(struct.elements[json_name].type, constraint.expression)
        if test is None:
            skipped[where] = "outside the compiled FHIRPath subset"
            return None
        tests.append((json_name, test))
    if not tests:
        skipped[where] = f"no element {name}"
        return None
    return Check(constraint, None, None, tuple(tests))


def _structure_names() -> list[str]:
    """Every structure a resource may hold (resources, datatypes, BackboneElements)."""
    names: list[str] = []
    stack = sorted(definitions.resource_types())
    seen = set(stack)
    while stack:
        name = stack.pop()
        names.append(name)
        for element in definitions.structure(name).elements.values():
            if element.kind == COMPLEX and element.type not in seen:
                seen.add(element.type)
                stack.append(element.type)
    return names


@cache
def _compiled(severities: frozenset[str]) -> tuple[dict[str, tuple[Check, ...]], dict[str, str]]:
    by_structure: dict[str, tuple[Check, ...]] = {}
    skipped: dict[str, str] = {}
    for name in _structure_names():
        struct = definitions.structure(name)
        found = []
        for constraint in struct.constraints:
            if constraint.severity == "best-practice":
                skipped[_where(struct, constraint)] = "a best-practice recommendation"
            elif constraint.severity in severities:
                check = _compile(struct, constraint, skipped)
                if check is not None:
                    found.append(check)
        if found:
            by_structure[name] = tuple(found)
    return by_structure, skipped


def checks(severities: frozenset[str]) -> dict[str, tuple[Check, ...]]:
    """The compiled invariants of these severities, by structure name (compiled once)."""
    return _compiled(severities)[0]


def skipped() -> dict[str, str]:
    """The base invariants not evaluated, as "key@structure" -> why."""
    return dict(_compiled(WARNINGS)[1])


# What the structural validator notes: the checks of an object, the object, its location and
# the resource it is in (%resource).
Deferred = tuple[tuple[Check, ...], dict[str, Any], str, dict[str, Any]]


def run(deferred: Iterable[Deferred], add: Callable[[ValidationIssue], None]) -> None:
    """Run the noted checks; `add` receives each issue (and may stop the run by raising)."""
    for found, value, path, root in deferred:
        for check in found:
            test = check.test
            if test is not None:
                # Inlined _one (every Reference and Extension comes here): the usual pass.
                if check.gate is not None and check.gate.isdisjoint(value):
                    continue
                try:
                    if test(value, root):
                        continue
                except Exception:
                    pass  # reported by _one
                _one(check, test, value, path, root, add)
                continue
            for key, test in check.tests:
                item = value.get(key)
                if item is None:
                    continue
                if isinstance(item, list):
                    for i, one in enumerate(item):
                        if one is not None:
                            _one(check, test, one, f"{path}.{key}[{i}]", root, add)
                else:
                    _one(check, test, item, f"{path}.{key}", root, add)


def _one(check: Check, test: Test, value: Any, path: str, root: dict[str, Any],
         add: Callable[[ValidationIssue], None]) -> None:
    constraint = check.constraint
    try:
        passed = test(value, root)
    except Exception as exc:  # FHIRPath errors on odd data (several items for a singleton…)
        add(ValidationIssue("warning", "processing", f"{constraint.key}: the invariant could "
                            f"not be evaluated ({exc})", path))
        return
    if not passed:
        add(ValidationIssue(constraint.severity, "invariant",
                            f"{constraint.key}: {constraint.human} [{constraint.expression}]",
                            path))
