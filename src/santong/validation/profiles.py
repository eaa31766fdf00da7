"""Validation against profiles: StructureDefinitions with a snapshot, compiled once.

http://hl7.org/fhir/R4/profiling.html, http://hl7.org/fhir/R4/elementdefinition.html. The base R4
structure (known elements, JSON shapes, primitive formats, base cardinality) is checked by
:mod:`santong.validation.structure` first; this layer adds what a profile says on top of it:

* cardinality (``min``/``max``) narrower than the base;
* types: a choice element restricted to some of its types; ``type.profile`` of a loaded
  profile (datatype profiles, extension definitions) validates the value against it;
* ``fixed[x]`` (exact equality) and ``pattern[x]`` (the value contains the pattern);
* slicing: ``value``/``pattern``, ``type``, ``profile`` and ``exists`` discriminators, closed or
  open (``openAtEnd`` as open; ``ordered`` is not checked), each slice's cardinality; the
  implicit type slices of a choice (``value[x]:valueQuantity``);
* extensions by URL: a slice on ``extension`` discriminated by ``url`` matches the URL of the
  slice's extension definition; any extension whose definition is loaded is validated against it;
* bindings: ``required`` → error, ``extensible`` → warning, against ValueSets the store could
  expand (:mod:`santong.validation.valuesets`); bindings to other ValueSets are not checked;
* invariants (``constraint``): FHIRPath evaluated with the search engine's compiled subset of
  FHIRPath, fhirpathpy otherwise; the issue carries the key and the declared severity. As in
  the HL7 validator an empty result fails. Constraints inherited from the core specification
  (``source`` a core StructureDefinition) are not evaluated again here: the base validator
  runs them for every resource (:mod:`santong.validation.invariants`).

A profile is compiled into a tree of the elements it actually constrains: elements that
repeat the base definition (most of a snapshot) are pruned, so validating costs in proportion
to what the profile says, not to the size of its snapshot.

Issues are :class:`~santong.validation.structure.ValidationIssue`, with FHIRPath locations in the
JSON names (``Patient.identifier[0].value``, ``Observation.valueQuantity``) and the element id
or constraint key at the start of the diagnostics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from santong import definitions
from santong.definitions import PRIMITIVE, Structure
from santong.search.extract import Node as _FpNode
from santong.search.extract import evaluate_relative
from santong.validation.structure import MAX_ISSUES, ValidationIssue
from santong.validation.valuesets import Codes

__all__ = [
    "Profile",
    "ProfileError",
    "ProfileSet",
    "compile_profile",
    "validate_against",
]

log = logging.getLogger(__name__)

_CORE = "http://hl7.org/fhir/StructureDefinition/"
_ALWAYS_SKIPPED = frozenset({"ele-1", "ext-1"})
_NONE: Any = object()
_MAX_NESTING = 20


class ProfileError(ValueError):
    """A StructureDefinition that cannot be used for validation."""


@dataclass(frozen=True, slots=True)
class _Constraint:
    key: str
    severity: str
    human: str
    expression: str


@dataclass(frozen=True, slots=True)
class _Slicing:
    discriminators: tuple[tuple[str, str], ...]  # (type, path)
    closed: bool


@dataclass(slots=True, eq=False)
class _Node:
    id: str
    name: str  # last path segment: "identifier", "value[x]"
    slice_name: str | None
    min: int
    max: int | None  # None: unbounded
    base_min: int
    base_max: int | None
    type_codes: tuple[str, ...]
    type_profiles: tuple[str, ...]
    fixed: Any = _NONE
    pattern: Any = _NONE
    binding: tuple[str, str] | None = None  # (strength, ValueSet canonical without version)
    constraints: tuple[_Constraint, ...] = ()
    slicing: _Slicing | None = None
    kids: dict[str, _Node] = field(default_factory=dict)  # while building
    slices: list[_Node] = field(default_factory=list)
    # Set when compiled against the base definitions:
    children: tuple[_Node, ...] = ()
    keys: tuple[str, ...] = ()  # the JSON names its values appear under
    key_types: dict[str, str] = field(default_factory=dict)  # JSON name -> type
    allowed: frozenset[str] | None = None  # JSON names allowed (restricted choice)
    primitive: bool = False
    check_card: bool = False

    def trivial(self) -> bool:
        return (not self.check_card and self.fixed is _NONE and self.pattern is _NONE
                and self.binding is None and not self.constraints and not self.type_profiles
                and self.allowed is None and self.slicing is None and not self.slices
                and not self.children)


@dataclass(frozen=True, slots=True)
class Profile:
    url: str
    version: str | None
    name: str
    type: str  # the constrained type: "Patient", "Extension", "Identifier"
    kind: str
    root: _Node


def _max(text: Any) -> int | None:
    if text is None or text == "*":
        return None
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ProfileError(f"invalid max {text!r}") from None


def _prefixed(element: Mapping[str, Any], prefix: str) -> Any:
    for key, value in element.items():
        if key.startswith(prefix) and key[len(prefix):len(prefix) + 1].isupper():
            return value
    return _NONE


def _constraints(element: Mapping[str, Any], own_url: str) -> tuple[_Constraint, ...]:
    out = []
    for c in element.get("constraint", []):
        key, expression = c.get("key"), c.get("expression")
        if not key or not expression or key in _ALWAYS_SKIPPED:
            continue
        source = c.get("source") or ""
        if source.startswith(_CORE) and source != own_url:
            continue  # inherited from the core specification
        severity = "warning" if c.get("severity") == "warning" else "error"
        out.append(_Constraint(key, severity, c.get("human") or expression, expression))
    return tuple(out)


def _node(element: Mapping[str, Any], name: str, slice_name: str | None, own_url: str) -> _Node:
    base = element.get("base") or {}
    types = element.get("type") or []
    min_ = int(element.get("min", 0) or 0)
    max_ = _max(element.get("max", "*"))
    binding = element.get("binding") or {}
    strength, value_set = binding.get("strength"), binding.get("valueSet")
    slicing = element.get("slicing")
    node = _Node(
        id=element.get("id") or element["path"],
        name=name,
        slice_name=slice_name,
        min=min_,
        max=max_,
        base_min=int(base.get("min", 0) or 0) if base else min_,
        base_max=_max(base.get("max", "*")) if base else max_,
        type_codes=tuple(t.get("code", "") for t in types),
        type_profiles=tuple(p for t in types for p in t.get("profile", [])),
        fixed=_prefixed(element, "fixed"),
        pattern=_prefixed(element, "pattern"),
        binding=((strength, value_set.split("|")[0])
                 if strength in ("required", "extensible") and isinstance(value_set, str)
                 else None),
        constraints=_constraints(element, own_url),
    )
    if slicing:
        node.slicing = _Slicing(
            tuple((d.get("type", "value"), d.get("path", "$this"))
                  for d in slicing.get("discriminator", [])),
            slicing.get("rules") == "closed",
        )
    return node


def compile_profile(sd: Mapping[str, Any]) -> Profile:
    """Compile a StructureDefinition (with a snapshot) for validation; ProfileError if unusable."""
    if sd.get("resourceType") != "StructureDefinition":
        raise ProfileError("not a StructureDefinition")
    url, type_ = sd.get("url"), sd.get("type")
    if not isinstance(url, str) or not isinstance(type_, str):
        raise ProfileError("a StructureDefinition needs url and type")
    elements = (sd.get("snapshot") or {}).get("element") or []
    if not elements:
        raise ProfileError(f"{url} has no snapshot (only snapshots are used for validation)")
    struct = definitions.get_structure(type_)
    if struct is None:
        raise ProfileError(f"{url} constrains {type_!r}, which is not a resource or complex type")
    by_id: dict[str, _Node] = {}
    root: _Node | None = None
    try:
        for element in elements:
            eid = element.get("id") or element.get("path")
            if not isinstance(eid, str):
                raise ProfileError("an element has neither id nor path")
            if root is None:
                root = by_id[eid] = _node(element, eid, None, url)
                continue
            parent_id, _, last = eid.rpartition(".")
            parent = by_id.get(parent_id)
            if parent is None:
                continue  # below a choice of several types or a contentReference: not handled
            name, _, slice_name = last.partition(":")
            node = by_id[eid] = _node(element, name, slice_name or None, url)
            if slice_name:
                sliced = parent.kids.get(name)
                if sliced is None:
                    sliced = parent.kids[name] = _node(element, name, None, url)
                    sliced.type_profiles, sliced.fixed, sliced.pattern = (), _NONE, _NONE
                    sliced.min, sliced.max = sliced.base_min, sliced.base_max
                sliced.slices.append(node)
            else:
                parent.kids[name] = node
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"{url}: unusable snapshot ({exc})") from None
    assert root is not None
    root.check_card = False
    _finish(root, struct, type_)
    return Profile(url, sd.get("version"), str(sd.get("name") or url), type_,
                   str(sd.get("kind") or ""), root)


def _type_key(group: str, code: str) -> str:
    return group + code[:1].upper() + code[1:]


def _finish(node: _Node, struct: Structure | None, type_name: str) -> None:
    """Resolve the node's children against the base structure of its type; prune the trivial."""
    children = []
    for kid in node.kids.values():
        if struct is None or not _resolve(kid, struct):
            continue
        for member in (kid, *kid.slices):
            if member is not kid:
                member.keys, member.key_types = kid.keys, kid.key_types
                member.primitive = kid.primitive
                if member.type_codes and kid.name.endswith("[x]"):
                    codes = {_type_key(kid.name[:-3], t) for t in member.type_codes}
                    member.allowed = frozenset(k for k in kid.keys if k in codes)
                elif kid.name.endswith("[x]") and member.slice_name in kid.keys:
                    member.allowed = frozenset({member.slice_name})
                member.check_card = True
            keys = tuple(member.allowed) if member.allowed is not None else member.keys
            if len(keys) == 1:
                child_type = member.key_types[keys[0]]
                base = definitions.get_structure(child_type)
                if base is None and member.primitive:
                    base = definitions.structure("Element")
                _finish(member, base, child_type)
            else:
                member.kids.clear()  # below a choice of several types: not handled
        kid.slices = [s for s in kid.slices if not s.trivial() or s.check_card]
        if not kid.trivial():
            children.append(kid)
    node.children = tuple(children)
    node.kids = {}


def _resolve(kid: _Node, struct: Structure) -> bool:
    name = kid.name
    if name.endswith("[x]"):
        group = name[:-3]
        variants = struct.choices.get(group)
        if not variants:
            return False
        kid.keys = variants
        kid.key_types = {k: struct.elements[k].type for k in variants}
        kid.primitive = all(struct.elements[k].kind == PRIMITIVE for k in variants)
        codes = [c for c in kid.type_codes if c]
        if codes:
            allowed = frozenset(k for k in variants
                                if any(k == _type_key(group, c) for c in codes))
            kid.allowed = allowed if allowed != frozenset(variants) else None
    else:
        el = struct.elements.get(name)
        if el is None:
            return False
        kid.keys = (name,)
        kid.key_types = {name: el.type}
        kid.primitive = el.kind == PRIMITIVE
    kid.check_card = kid.min > kid.base_min or (
        kid.max is not None and (kid.base_max is None or kid.max < kid.base_max))
    # Core datatype profiles add nothing to the base structure already checked.
    kid.type_profiles = tuple(p for p in kid.type_profiles if not p.startswith(_CORE))
    return True


# -- the set of loaded profiles --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileSet:
    """Loaded profiles, ValueSet codes for their bindings and the profiles required per type."""

    profiles: Mapping[str, Profile] = field(default_factory=dict)
    codes: Mapping[str, Codes] = field(default_factory=dict)
    required: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    has_extensions: bool = False  # any extension definitions among `profiles`

    def get(self, url: str) -> Profile | None:
        found = self.profiles.get(url)
        if found is None and "|" in url:
            found = self.profiles.get(url.split("|")[0])
        return found

    def claimed(self, resource: Mapping[str, Any]) -> tuple[list[Profile], list[str]]:
        """The loaded profiles a resource claims in meta.profile or must meet; unknown claims."""
        meta = resource.get("meta")
        urls = list(self.required.get(resource.get("resourceType", ""), ()))
        required = len(urls)
        if isinstance(meta, dict) and isinstance(meta.get("profile"), list):
            urls.extend(u for u in meta["profile"] if isinstance(u, str) and u not in urls)
        found, missing = [], []
        for index, url in enumerate(urls):
            profile = self.get(url)
            if profile is not None:
                found.append(profile)
            elif index < required:
                missing.append(url)
        return found, missing


# -- validation ------------------------------------------------------------------------------


class _Stop(Exception):
    pass


# (json key, value, `_key` sibling, location)
_Item = tuple[str, Any, Any, str]


class _Run:
    __slots__ = ("depth", "issues", "root", "seen", "set")

    def __init__(self, profiles: ProfileSet, root: dict[str, Any]) -> None:
        self.set = profiles
        self.root = root
        self.issues: list[ValidationIssue] = []
        self.seen: set[int] = set()  # extensions validated against their definition
        self.depth = 0

    def add(self, severity: str, code: str, diagnostics: str, expression: str) -> None:
        self.issues.append(ValidationIssue(severity, code, diagnostics, expression))
        if len(self.issues) >= MAX_ISSUES:
            raise _Stop

    # One value of `node`, of FHIR type `type_name`.
    def element(self, node: _Node, type_name: str, value: Any, sibling: Any, loc: str) -> None:
        if node.fixed is not _NONE and value != node.fixed:
            self.add("error", "value", f"{node.id}: the value must be exactly "
                     f"{_shown(node.fixed)}, found {_shown(value)}", loc)
        if node.pattern is not _NONE and not _pattern_ok(value, node.pattern):
            self.add("error", "value", f"{node.id}: the value must match the pattern "
                     f"{_shown(node.pattern)}, found {_shown(value)}", loc)
        if node.binding is not None and value is not None:
            self.binding(node, type_name, value, loc)
        for constraint in node.constraints:
            self.invariant(constraint, type_name, value, loc)
        for url in node.type_profiles:
            profile = self.set.get(url)
            if profile is not None and self.depth < _MAX_NESTING:
                if isinstance(value, dict) and profile.type == "Extension":
                    self.seen.add(id(value))
                self.depth += 1
                self.element(profile.root, type_name, value, sibling, loc)
                self.depth -= 1
        if node.children:
            obj = sibling if node.primitive else value
            self.children(node, obj if isinstance(obj, dict) else {}, loc)

    def children(self, node: _Node, obj: dict[str, Any], loc: str) -> None:
        for child in node.children:
            items: list[_Item] = []
            for key in child.keys:
                value = obj.get(key)
                sibling = obj.get("_" + key) if child.primitive else None
                if value is None and sibling is None:
                    continue
                if isinstance(value, list) or isinstance(sibling, list):
                    values = value if isinstance(value, list) else []
                    siblings = sibling if isinstance(sibling, list) else []
                    for i in range(max(len(values), len(siblings))):
                        items.append((key, values[i] if i < len(values) else None,
                                      siblings[i] if i < len(siblings) else None,
                                      f"{loc}.{key}[{i}]"))
                else:
                    items.append((key, value, sibling, f"{loc}.{key}"))
            if child.check_card:
                self.cardinality(child, len(items), f"{loc}.{child.keys[0]}"
                                 if len(child.keys) == 1 else f"{loc}.{child.name[:-3]}")
            if child.allowed is not None:
                for key, _, _, where in items:
                    if key not in child.allowed:
                        self.add("error", "structure", f"{child.id}: type "
                                 f"{child.key_types[key]} is not allowed here (allowed: "
                                 f"{', '.join(sorted(child.key_types[k] for k in child.allowed))})",
                                 where)
            if not items:
                continue
            if child.slices:
                self.sliced(child, items, loc)
            else:
                for key, value, sibling, where in items:
                    self.element(child, child.key_types[key], value, sibling, where)

    def cardinality(self, node: _Node, count: int, where: str) -> None:
        label = f"{node.id}" + (f" (slice '{node.slice_name}')" if node.slice_name else "")
        if count < node.min:
            self.add("error", "required", f"{label}: minimum cardinality {node.min}, "
                     f"found {count}", where)
        elif node.max is not None and count > node.max:
            self.add("error", "structure", f"{label}: maximum cardinality {node.max}, "
                     f"found {count}", where)

    def sliced(self, child: _Node, items: list[_Item], loc: str) -> None:
        counts = [0] * len(child.slices)
        for item in items:
            key, value, sibling, where = item
            type_name = child.key_types[key]
            self.element(child, type_name, value, sibling, where)
            for index, slice_ in enumerate(child.slices):
                if self.matches(child, slice_, item):
                    counts[index] += 1
                    self.element(slice_, type_name, value, sibling, where)
                    break
            else:
                if child.slicing is not None and child.slicing.closed:
                    self.add("error", "structure", f"{child.id}: the value matches none of the "
                             f"slices ({', '.join(str(s.slice_name) for s in child.slices)}) "
                             "and the slicing is closed", where)
        where = f"{loc}.{child.keys[0]}" if len(child.keys) == 1 else f"{loc}.{child.name[:-3]}"
        for slice_, count in zip(child.slices, counts, strict=True):
            self.cardinality(slice_, count, where)

    def matches(self, child: _Node, slice_: _Node, item: _Item) -> bool:
        key, value, _, _ = item
        if child.slicing is None:  # implicit type slices of a choice: value[x]:valueQuantity
            return slice_.allowed is not None and key in slice_.allowed
        for kind, path in child.slicing.discriminators:
            target = _descend(slice_, path)
            if kind in ("value", "pattern"):
                if path == "url" and child.name in ("extension", "modifierExtension") and (
                        target is None or (target.fixed is _NONE and target.pattern is _NONE)):
                    if not (isinstance(value, dict) and value.get("url") in slice_.type_profiles):
                        return False
                    continue
                if target is None:
                    return False
                found = _at(value, path)
                if target.fixed is not _NONE:
                    if not any(v == target.fixed for v in found):
                        return False
                elif target.pattern is not _NONE:
                    if not any(_pattern_ok(v, target.pattern) for v in found):
                        return False
                elif target.binding is not None and target.binding[0] == "required":
                    codes = self.set.codes.get(target.binding[1])
                    if codes is None or not any(
                            c and codes.contains(s, c) for v in found for s, c in _codings(v)):
                        return False
                else:
                    return False
            elif kind == "type":
                if target is None or not target.type_codes:
                    return False
                if path == "$this":
                    actual = [child.key_types[key]]
                else:
                    actual = [_json_type(v) for v in _at(value, path, typed=True)]
                if isinstance(value, dict) and path == "$this" and "resourceType" in value:
                    actual = [value["resourceType"]]
                if not any(a in target.type_codes for a in actual):
                    return False
            elif kind == "profile":
                if target is None:
                    return False
                urls = [u for u in target.type_profiles if self.set.get(u) is not None]
                found = _at(value, path)
                if not urls or not found or not any(
                        self.conforms(url, v) for url in urls for v in found):
                    return False
            elif kind == "exists":
                if target is None:
                    return False
                present = bool(_at(value, path))
                if present != (target.min >= 1 or target.max != 0):
                    return False
            else:
                return False
        return True

    def conforms(self, url: str, value: Any) -> bool:
        profile = self.set.get(url)
        if profile is None or self.depth >= _MAX_NESTING:
            return False
        probe = _Run(self.set, self.root)
        probe.depth = self.depth + 1
        type_name = value.get("resourceType", profile.type) if isinstance(value, dict) else (
            profile.type)
        try:
            probe.element(profile.root, type_name, value, None, "")
        except _Stop:
            return False
        return not any(i.severity == "error" for i in probe.issues)

    def binding(self, node: _Node, type_name: str, value: Any, loc: str) -> None:
        assert node.binding is not None
        strength, url = node.binding
        codes = self.set.codes.get(url)
        if codes is None:
            return  # the ValueSet is not loaded (or cannot be expanded here)
        codings = _codings(value, type_name)
        if codings is None:
            return  # not a coded type
        if not codings:
            if strength == "required" and type_name == "CodeableConcept":
                self.add("error", "code-invalid", f"{node.id}: a code from {url} is required "
                         "(binding required), found only text", loc)
            return
        if any(code and codes.contains(system, code) for system, code in codings):
            return
        shown = ", ".join(f"{s}|{c}" if s else str(c) for s, c in codings)
        if strength == "required":
            self.add("error", "code-invalid", f"{node.id}: {shown} is not in the value set "
                     f"{url} (binding required)", loc)
        else:
            self.add("warning", "code-invalid", f"{node.id}: {shown} is not in the value set "
                     f"{url} (binding extensible)", loc)

    def invariant(self, constraint: _Constraint, type_name: str, value: Any, loc: str) -> None:
        try:
            result = evaluate_relative(type_name, constraint.expression,
                                       _FpNode(type_name, value), self.root)
        except Exception as exc:  # an expression neither engine can run
            self.add("warning", "processing", f"{constraint.key}: the invariant could not be "
                     f"evaluated ({exc})", loc)
            return
        if len(result) == 1 and result[0].value is True:
            return
        self.add(constraint.severity, "invariant",
                 f"{constraint.key}: {constraint.human}", loc)

    def extensions(self, value: Any, loc: str, depth: int = 0) -> None:
        """Every extension whose definition is loaded, validated against it."""
        if depth > 60:
            return
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("extension", "modifierExtension") and isinstance(item, list):
                    for i, ext in enumerate(item):
                        where = f"{loc}.{key}[{i}]"
                        if isinstance(ext, dict) and id(ext) not in self.seen:
                            profile = self.set.get(str(ext.get("url")))
                            if profile is not None and profile.type == "Extension":
                                self.seen.add(id(ext))
                                self.element(profile.root, "Extension", ext, None, where)
                        self.extensions(ext, where, depth + 1)
                elif isinstance(item, (dict, list)):
                    where = f"{loc}.{key[1:]}" if key[:1] == "_" else f"{loc}.{key}"
                    self.extensions(item, where, depth + 1)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.extensions(item, f"{loc}[{i}]", depth + 1)


# Discriminator paths are walked for every sliced value validated: cached per (node, path);
# nodes are immutable once compiled (and hash by identity).
@lru_cache(maxsize=4096)
def _descend(node: _Node, path: str) -> _Node | None:
    if path in ("$this", ""):
        return node
    current = node
    for segment in _segments(path):
        if segment.startswith("extension("):
            url = segment[len("extension("):-1].strip("'\"")
            ext = next((c for c in current.children if c.name == "extension"), None)
            if ext is None:
                return None
            found = next((s for s in ext.slices if url in s.type_profiles), None)
            if found is None:
                return None
            current = found
            continue
        if segment in ("resolve()",) or "(" in segment:
            return None
        nxt = next((c for c in current.children
                    if c.name == segment or c.name == segment + "[x]"), None)
        if nxt is None:
            return None
        current = nxt
    return current


@lru_cache(maxsize=1024)
def _segments(path: str) -> tuple[str, ...]:
    out, depth, start = [], 0, 0
    for i, ch in enumerate(path):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "." and depth == 0:
            out.append(path[start:i])
            start = i + 1
    out.append(path[start:])
    return tuple(s for s in out if s and s != "$this")


def _at(value: Any, path: str, typed: bool = False) -> list[Any]:
    """The values at a discriminator path (a dotted path, with `extension('url')`)."""
    current = [value]
    for segment in _segments(path):
        nxt: list[Any] = []
        for item in current:
            if not isinstance(item, dict):
                continue
            if segment.startswith("extension("):
                url = segment[len("extension("):-1].strip("'\"")
                nxt.extend(e for e in item.get("extension", []) if isinstance(e, dict)
                           and e.get("url") == url)
                continue
            found = item.get(segment)
            if found is None:
                for key, candidate in item.items():
                    if key.startswith(segment) and key[len(segment):len(segment) + 1].isupper():
                        found = (_Typed(key[len(segment):], candidate) if typed else candidate)
                        break
            if found is None:
                continue
            nxt.extend(found if isinstance(found, list) else [found])
        current = nxt
    return current


@dataclass(frozen=True, slots=True)
class _Typed:
    suffix: str
    value: Any


def _json_type(value: Any) -> str:
    if isinstance(value, _Typed):
        code = value.suffix[:1].lower() + value.suffix[1:]
        return code if definitions.primitive(code) is not None else value.suffix
    if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        return value["resourceType"]
    return ""


def _codings(value: Any, type_name: str | None = None) -> list[tuple[str | None, Any]] | None:
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return None
    if type_name == "CodeableConcept" or (type_name is None and "coding" in value):
        return [(c.get("system"), c.get("code")) for c in value.get("coding", [])
                if isinstance(c, dict)]
    if type_name in ("Coding", "Quantity") or (type_name is None and "code" in value):
        return [(value.get("system"), value.get("code"))] if value.get("code") else []
    return None


def _pattern_ok(value: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            key in value and _pattern_ok(value[key], want) for key, want in pattern.items())
    if isinstance(pattern, list):
        if not isinstance(value, list):
            return False
        return all(any(_pattern_ok(v, want) for v in value) for want in pattern)
    return value == pattern


def _shown(value: Any) -> str:
    import orjson

    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_against(resource: dict[str, Any], profiles: Iterable[Profile],
                     profile_set: ProfileSet) -> list[ValidationIssue]:
    """Validate a (structurally valid) resource against profiles; the issues found."""
    rtype = resource.get("resourceType", "")
    run = _Run(profile_set, resource)
    try:
        for profile in profiles:
            if profile.type != rtype:
                run.add("error", "invalid", f"Profile {profile.url} is for {profile.type}, "
                        f"not {rtype}", rtype)
                continue
            run.element(profile.root, rtype, resource, None, rtype)
        if profile_set.has_extensions:
            run.extensions(resource, rtype)
    except _Stop:
        run.issues.append(ValidationIssue(
            "warning", "too-costly", f"Too many issues; validation stopped after {MAX_ISSUES}",
            rtype))
    return run.issues
