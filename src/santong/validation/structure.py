"""Structural validation of FHIR R4 JSON resources.

Implements the rules of http://hl7.org/fhir/R4/json.html against the definitions in
:mod:`santong.definitions`, with primitive values checked as described in
http://hl7.org/fhir/R4/datatypes.html:

* the resource is an object with a known concrete ``resourceType``;
* every property is a known element (choice elements by their typed JSON name);
* arrays exactly where the cardinality allows more than one value;
* primitive JSON kinds (string / number / boolean) and the regexes of the spec, integer ranges;
* ``_name`` siblings of primitives (objects with id/extension; arrays aligned with ``null``);
* ``null`` only inside primitive arrays paired with a ``_name`` entry; no empty strings,
  objects or arrays;
* minimum cardinality (also of required choice groups) and at most one choice variant;
* contained and other ``Resource``-typed elements by their own ``resourceType``.

* ``required`` bindings of coded elements (``code``, ``Coding``, ``CodeableConcept``) to the
  ValueSets the R4 package enumerates (http://hl7.org/fhir/R4/terminologies.html#required):
  ``Patient.gender`` must be one of male, female, other, unknown. Bindings to external
  terminologies (MIME types, UCUM, currencies, …) are not checked.

* the invariants of the base definitions (``constraint``: pat-1, ctm-1, …), once the structure
  is found valid: the walk notes the objects whose structure has some and
  :mod:`santong.validation.invariants` runs them (issue code ``invariant``). Errors only by
  default (what a write needs), with the warnings for ``$validate``, or none.

Profiles are out of scope (:mod:`santong.validation.profiles`).

Issue codes (OperationOutcome ``issue.code``): ``structure`` for the JSON shape (unknown element,
wrong JSON kind, array vs single value, null, empty object/array, several choice variants),
``value`` for primitive content (regex, range, empty string), ``code-invalid`` for a code outside
a required binding, ``required`` for missing elements (also a missing ``resourceType``) and
``invalid`` for an unknown or unexpected ``resourceType``.

Expressions are FHIRPath-like locations using the JSON names as sent, e.g.
``Patient.name[0].given[1]``, ``Patient.deceasedBoolean``; the content of a ``_birthDate`` sibling
is reported under the element (``Patient.birthDate.extension[0].url``); a nested resource is
addressed by its element (``Bundle.entry[2].resource.birthDate``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from santong import definitions
from santong.definitions import PRIMITIVE, Binding, Element, Primitive, Structure

if TYPE_CHECKING:
    from santong.validation.invariants import Check, Deferred

__all__ = ["MAX_DEPTH", "MAX_ISSUES", "Invariants", "ValidationIssue", "validate_resource"]

# Which base invariants validate_resource evaluates: those of severity error, also the
# warnings, or none.
Invariants = Literal["errors", "all", "none"]

MAX_ISSUES = 100
# Deeper JSON is rejected rather than risking RecursionError (each level costs a few frames).
MAX_DEPTH = 100


@dataclass(frozen=True, slots=True)
class ValidationIssue:
    severity: str  # "error" or "warning"
    code: str  # OperationOutcome issue type: structure, required, value, invalid, too-costly
    diagnostics: str
    expression: str


# A primitive check returns None when valid, else (issue code, message); the message is completed
# with " for '<name>'" by the caller.
_Check = Callable[[Any], tuple[str, str] | None]


class _Stop(Exception):
    """Raised when MAX_ISSUES is reached."""


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


_SHOWN_CODES = 12


@cache
def _allowed(binding: Binding) -> str:
    codes = sorted(binding.codes)
    shown = ", ".join(codes[:_SHOWN_CODES])
    if len(codes) > _SHOWN_CODES:
        shown += f", … ({len(codes)} codes)"
    return f"the required value set {binding.value_set} has {shown}"


def _calendar_ok(text: str) -> bool:
    # The spec regexes accept day 29-31 of any month; a full date must exist on the calendar.
    if len(text) < 10 or text[8:10] <= "28":
        return True
    try:
        date(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    return True


_KNOWN_MAX_LENGTH = 64
_KNOWN_MAX_ENTRIES = 2048


def _string_check(prim: Primitive) -> _Check:
    # One closure per primitive type with only the tests it needs: these run for every value.
    match = prim.pattern.fullmatch if prim.pattern is not None else None
    name = prim.name
    max_length = prim.max_length or 0
    # When the regex itself rejects "", the empty-string test only picks the message.
    explicit_empty = match is None or match("") is not None

    def invalid(value: str) -> tuple[str, str]:
        if not value:
            return "value", "Empty string is not allowed"
        if max_length and len(value) > max_length:
            return "value", f"String is longer than {max_length} characters"
        return "value", f"Invalid {name} '{_shown(value)}'"

    if name in ("date", "dateTime", "instant"):
        assert match is not None

        def check_date(value: Any) -> tuple[str, str] | None:
            if not isinstance(value, str):
                return "structure", "Expected a string"
            if match(value) is None or not _calendar_ok(value):
                return invalid(value)
            return None

        return check_date

    if name == "xhtml":

        def check_xhtml(value: Any) -> tuple[str, str] | None:
            if not isinstance(value, str):
                return "structure", "Expected a string"
            if not value:
                return invalid(value)
            if not value.lstrip().startswith("<div"):
                return "value", "Expected an XHTML <div> element"
            return None

        return check_xhtml

    # Codes, system URIs and the like recur across resources: remember short values already
    # found valid, which is cheaper than re-running the regex (bounded, cleared when full).
    known: set[str] = set()

    def check(value: Any) -> tuple[str, str] | None:
        if value.__class__ is str and value in known:
            return None
        if not isinstance(value, str):
            return "structure", "Expected a string"
        if (
            (explicit_empty and not value)
            or (max_length and len(value) > max_length)
            or (match is not None and match(value) is None)
        ):
            return invalid(value)
        if len(value) <= _KNOWN_MAX_LENGTH:
            if len(known) >= _KNOWN_MAX_ENTRIES:
                known.clear()
            known.add(value)
        return None

    return check


def _boolean_check(value: Any) -> tuple[str, str] | None:
    if value is True or value is False:
        return None
    return "structure", "Expected a boolean"


def _integer_check(prim: Primitive) -> _Check:
    low, high = prim.min_value, prim.max_value
    name = prim.name

    def check(value: Any) -> tuple[str, str] | None:
        # bool is an int subclass: JSON true is not an integer.
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            return "structure", "Expected an integer"
        if not isinstance(value, int):
            # "2.0" is not the lexical form of an integer (datatypes.html#integer).
            written = getattr(value, "text", value)  # 1e400 as written, not 'inf'
            return "value", f"Invalid {name} '{_shown(written)}': expected a whole number"
        if (low is not None and value < low) or (high is not None and value > high):
            return "value", f"Value {value} is outside the {name} range"
        return None

    return check


# Search indexes decimals as PostgreSQL numerics, which hold 16,383 digits after the point
# (1e-200000, or 1. and 17,000 zeros, failed the write); these bounds are far beyond any
# measurement, and the values' ranges and unit conversions stay well inside PostgreSQL's.
_DECIMAL_EXPONENTS = (-1000, 1000)


def _decimal_check(value: Any) -> tuple[str, str] | None:
    # int, float and float/Decimal subclasses (precision-preserving parsers) are all decimals.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return "structure", "Expected a number"
    text = getattr(value, "text", None)  # as written, when a float would not give it back
    if not isinstance(value, int) and not math.isfinite(value):
        if text is not None:  # 1e400: well-formed, beyond what a double holds
            return "value", (f"Decimal '{_shown(text)}' is beyond the largest magnitude this"
                             " server stores (about 1.8e308)")
        return "value", f"Invalid decimal '{value}'"
    if text is not None:
        exact = Decimal(text)
        exponent = exact.as_tuple().exponent
        if not (_DECIMAL_EXPONENTS[0] <= exact.adjusted() <= _DECIMAL_EXPONENTS[1]
                and isinstance(exponent, int) and exponent >= _DECIMAL_EXPONENTS[0]):
            # The upper bound is out of reach: past about 1.8e308 a value is infinite, above.
            return "value", (f"Decimal '{_shown(text)}' is out of the range this server stores"
                             f" (magnitudes down to 1e{_DECIMAL_EXPONENTS[0]}, at most"
                             f" {-_DECIMAL_EXPONENTS[0]} digits after the point)")
    return None


def _make_check(prim: Primitive) -> _Check:
    if prim.json == "boolean":
        return _boolean_check
    if prim.json == "number":
        return _integer_check(prim) if prim.min_value is not None else _decimal_check
    return _string_check(prim)


@cache
def _checks() -> dict[str, _Check]:
    return {name: _make_check(prim) for name, prim in definitions.primitive_types().items()}


@cache
def _invariant_checks(level: Invariants) -> dict[Structure, tuple[Check, ...]]:
    if level == "none":
        return {}
    # Imported here: invariants compile with the search engine, which validates with this module.
    from santong.validation import invariants

    found = invariants.checks(invariants.ERRORS if level == "errors" else invariants.WARNINGS)
    # By the Structure itself (hashed by identity): looked up for every object walked.
    return {definitions.structure(name): checks for name, checks in found.items()}


class _Validator:
    __slots__ = ("checks", "deferred", "element", "errors", "invariants", "issues", "root",
                 "unshown_warnings")

    def __init__(self, invariants: Invariants = "none") -> None:
        self.issues: list[ValidationIssue] = []
        self.checks = _checks()
        self.element = definitions.structure("Element")  # content of `_name` siblings
        self.invariants = _invariant_checks(invariants)  # structure -> its checks
        self.deferred: list[Deferred] = []  # objects with invariants, run after the walk
        self.root: dict[str, Any] = {}  # the resource being walked (%resource)
        self.errors = 0
        self.unshown_warnings = 0

    def add(self, code: str, diagnostics: str, expression: str) -> None:
        self.append(ValidationIssue("error", code, diagnostics, expression))

    def append(self, issue: ValidationIssue) -> None:
        """Keep the issue. Errors stop the walk at MAX_ISSUES; warnings beyond MAX_ISSUES are
        only counted, so that many warnings cannot hide the errors that follow them."""
        if issue.severity != "error":
            if len(self.issues) - self.errors >= MAX_ISSUES:
                self.unshown_warnings += 1
            else:
                self.issues.append(issue)
            return
        self.issues.append(issue)
        self.errors += 1
        if self.errors >= MAX_ISSUES:
            raise _Stop

    # -- resources ---------------------------------------------------------------------------

    def embedded(self, value: dict[str, Any], path: str, depth: int, contained: bool) -> None:
        """A Resource-typed element: typed by its own resourceType."""
        rtype = value.get("resourceType")
        if rtype is None:
            self.add("required", "Missing 'resourceType'", f"{path}.resourceType")
        elif not isinstance(rtype, str) or not definitions.is_resource_type(rtype):
            self.add("invalid", f"Unknown resource type '{_shown(rtype)}'",
                     f"{path}.resourceType")
        elif contained:  # resolves `#id` in its container, the invariants' %rootResource
            self.object(value, definitions.structure(rtype), path, depth, True)
        else:  # a Bundle entry, a Parameters resource: a resource of its own
            container, self.root = self.root, value
            self.object(value, definitions.structure(rtype), path, depth, True)
            self.root = container

    # -- objects -----------------------------------------------------------------------------

    def object(
        self, obj: dict[str, Any], struct: Structure, path: str, depth: int, is_resource: bool
    ) -> None:
        if not obj:
            self.add("structure", "Empty object is not allowed", path)
            return
        if depth > MAX_DEPTH:
            self.add("structure", f"Content is nested deeper than {MAX_DEPTH} levels", path)
            return
        if (noted := self.invariants.get(struct)) is not None:
            self.deferred.append((noted, obj, path, self.root))
        elements = struct.elements
        checks = self.checks
        chosen: dict[str, str] | None = None  # choice group -> variant seen first
        # This loop runs for every property of every object, so the common cases are inlined.
        for key, value in obj.items():
            el = elements.get(key)
            if el is None:
                if key[:1] == "_" and (el := elements.get(key[1:])) is not None and (
                    el.kind == PRIMITIVE
                ):
                    if el.choice is not None:
                        chosen = self.choice(chosen, el, key, path)
                    self.sibling(obj, key, value, el, path, depth)
                elif not (is_resource and key == "resourceType"):
                    self.add("structure", f"Unknown element '{_shown(key)}'", f"{path}.{key}")
                continue
            if el.choice is not None:
                chosen = self.choice(chosen, el, key, path)
            if value is None:
                self.add("structure", f"Null value is not allowed for '{key}'", f"{path}.{key}")
            elif el.array:
                if not isinstance(value, list):
                    self.add("structure", f"Expected an array for '{key}'", f"{path}.{key}")
                elif not value:
                    self.add("structure", f"Empty array is not allowed for '{key}'",
                             f"{path}.{key}")
                else:
                    self.array(obj, key, value, el, path, depth)
            elif el.kind == PRIMITIVE:
                problem = checks[el.type](value)
                if problem is not None:
                    self.primitive_issue(problem, value, el, key, f"{path}.{key}")
                elif el.binding is not None and value not in el.binding.codes:
                    self.code_invalid(el.binding, value, key, f"{path}.{key}")
            elif isinstance(value, dict):
                if (struct_ := el.structure) is not None:  # COMPLEX
                    self.object(value, struct_, f"{path}.{key}", depth + 1, False)
                    if el.binding is not None:
                        self.coded(value, el, f"{path}.{key}")
                else:
                    self.embedded(value, f"{path}.{key}", depth + 1, False)
            elif isinstance(value, list):
                self.add("structure", f"Expected a single value, not an array, for '{key}'",
                         f"{path}.{key}")
            else:
                self.add("structure", f"Expected an object for '{key}'", f"{path}.{key}")
        for label, names in struct.required:
            for name in names:
                if name in obj:
                    break
            else:
                if label[-1] == "]":  # a choice group: "value[x]"
                    variants = ", ".join(f"'{n}'" for n in names[::2])
                    self.add("required", f"Missing required element '{label}' (one of {variants})",
                             f"{path}.{label[:-3]}")
                else:
                    self.add("required", f"Missing required element '{label}'",
                             f"{path}.{label}")

    def primitive_issue(
        self, problem: tuple[str, str], value: Any, el: Element, key: str, where: str
    ) -> None:
        if isinstance(value, list):  # the check saw a non-string; name the real problem
            self.add("structure", f"Expected a primitive value, not an array, for '{key}'",
                     where)
        elif isinstance(value, dict):
            self.add("structure", f"Expected a primitive value, not an object, for '{key}'",
                     where)
        else:
            self.add(problem[0], f"{problem[1]} for '{key}'", where)

    def code_invalid(self, binding: Binding, value: str, key: str, where: str) -> None:
        self.add("code-invalid", f"Unknown code '{_shown(value)}' for '{key}': "
                 f"{_allowed(binding)}", where)

    def coded(self, value: dict[str, Any], el: Element, where: str) -> None:
        """A Coding or CodeableConcept under a required binding: one coding must be in it."""
        binding = el.binding
        assert binding is not None
        codings = [value] if el.type == "Coding" else value.get("coding")
        found: list[str] = []
        for coding in codings if isinstance(codings, list) else ():
            if not isinstance(coding, dict):
                continue
            system, code = coding.get("system"), coding.get("code")
            if (system, code) in binding.pairs:
                return
            if code is not None:
                shown_code = _shown(code)
                found.append(f"{_shown(system)}|{shown_code}" if system is not None else shown_code)
        if found:
            shown = ", ".join(found[:3]) + (", …" if len(found) > 3 else "")
            self.add("code-invalid", f"No code of '{el.name}' is in its required value set "
                     f"(found {shown}): {_allowed(binding)}", where)
        else:
            self.add("code-invalid", f"'{el.name}' needs a code from its required value set "
                     f"{binding.value_set}", where)

    def choice(
        self, chosen: dict[str, str] | None, el: Element, key: str, path: str
    ) -> dict[str, str]:
        group = el.choice
        assert group is not None
        if chosen is None:
            return {group: el.name}
        first = chosen.setdefault(group, el.name)
        if first != el.name:
            self.add("structure",
                     f"Only one of the '{group}[x]' variants is allowed, "
                     f"found '{first}' and '{el.name}'", f"{path}.{key}")
        return chosen

    def array(
        self, obj: dict[str, Any], key: str, items: list[Any], el: Element, path: str, depth: int
    ) -> None:
        kind = el.kind
        if kind == PRIMITIVE:
            check = self.checks[el.type]
            siblings = obj.get("_" + key)
            for i, item in enumerate(items):
                if item is None:
                    # A null keeps positions aligned with `_key`, which must have content there.
                    if not (isinstance(siblings, list) and i < len(siblings)
                            and siblings[i] is not None):
                        self.add("structure", f"Null value is not allowed in '{key}' unless "
                                 f"'_{key}' has an entry at the same index", f"{path}.{key}[{i}]")
                elif (problem := check(item)) is not None:
                    self.primitive_issue(problem, item, el, key, f"{path}.{key}[{i}]")
                elif el.binding is not None and item not in el.binding.codes:
                    self.code_invalid(el.binding, item, key, f"{path}.{key}[{i}]")
            return
        struct = el.structure  # None for RESOURCE
        for i, item in enumerate(items):
            if isinstance(item, dict):
                if struct is not None:
                    self.object(item, struct, f"{path}.{key}[{i}]", depth + 1, False)
                    if el.binding is not None:
                        self.coded(item, el, f"{path}.{key}[{i}]")
                else:
                    self.embedded(item, f"{path}.{key}[{i}]", depth + 1, key == "contained")
            elif item is None:
                self.add("structure", f"Null value is not allowed in '{key}'",
                         f"{path}.{key}[{i}]")
            elif isinstance(item, list):
                self.add("structure", f"Nested arrays are not allowed in '{key}'",
                         f"{path}.{key}[{i}]")
            else:
                self.add("structure", f"Expected an object for '{key}'", f"{path}.{key}[{i}]")

    def sibling(
        self, obj: dict[str, Any], key: str, value: Any, el: Element, path: str, depth: int
    ) -> None:
        """The `_name` sibling of a primitive: id and extensions of the value(s)."""
        name = el.name
        where = f"{path}.{name}"
        if value is None:
            self.add("structure", f"Null value is not allowed for '{key}'", where)
        elif not el.array:
            if isinstance(value, dict):
                self.object(value, self.element, where, depth + 1, False)
            else:
                self.add("structure", f"Expected an object for '{key}'", where)
        elif not isinstance(value, list):
            self.add("structure", f"Expected an array for '{key}'", where)
        elif not value:
            self.add("structure", f"Empty array is not allowed for '{key}'", where)
        else:
            values = obj.get(name)
            if isinstance(values, list) and len(values) != len(value):
                self.add("structure",
                         f"Arrays '{name}' and '{key}' must have the same length", where)
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    self.object(item, self.element, f"{where}[{i}]", depth + 1, False)
                elif item is None:
                    # Both null at i is reported by array(); here only a missing value array.
                    if not isinstance(values, list):
                        self.add("structure", f"Null value is not allowed in '{key}'",
                                 f"{where}[{i}]")
                else:
                    self.add("structure", f"Expected an object for '{key}'", f"{where}[{i}]")


def validate_resource(resource: object, expected_type: str | None = None, *,
                      invariants: Invariants = "errors") -> list[ValidationIssue]:
    """Validate a parsed FHIR R4 JSON resource; return the issues found (empty when valid).

    ``expected_type`` is the type the caller requires (e.g. from the URL); a different
    ``resourceType`` is an error. The base invariants are evaluated when the structure is
    valid: those of severity error (``"errors"``), also the warnings (``"all"``), or not
    (``"none"``). At most MAX_ISSUES issues are reported, then a warning.
    """
    v = _Validator(invariants)
    try:
        if expected_type is not None and not definitions.is_resource_type(expected_type):
            v.add("not-supported", f"Unknown resource type '{_shown(expected_type)}'",
                  "resourceType")
            return v.issues
        if not isinstance(resource, dict):
            v.add("structure", "A resource must be a JSON object", expected_type or "Resource")
            return v.issues
        rtype = resource.get("resourceType")
        if rtype is None:
            v.add("required", "Missing 'resourceType'", "resourceType")
            rtype = expected_type  # still check the content against the expected type
        elif not isinstance(rtype, str) or not definitions.is_resource_type(rtype):
            v.add("invalid", f"Unknown resource type '{_shown(rtype)}'", "resourceType")
            return v.issues
        elif expected_type is not None and rtype != expected_type:
            v.add("invalid",
                  f"Resource type '{rtype}' does not match the expected type '{expected_type}'",
                  "resourceType")
        if rtype is not None:
            v.root = resource
            v.object(resource, definitions.structure(rtype), rtype, 0, True)
        if v.deferred and not v.issues:
            from santong.validation.invariants import run

            run(v.deferred, v.append)
    except _Stop:
        v.issues.append(ValidationIssue(
            "warning", "too-costly", f"Too many issues; validation stopped after {MAX_ISSUES}",
            expected_type or "Resource"))
    if v.unshown_warnings:
        v.issues.append(ValidationIssue(
            "warning", "too-costly", f"{v.unshown_warnings} more warnings not shown",
            expected_type or "Resource"))
    return v.issues
