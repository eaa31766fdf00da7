"""FHIRPath Patch — http://hl7.org/fhir/R4/fhirpatch.html.

A `Parameters` resource whose `operation` parameters add, insert, delete, replace or move
elements named by FHIRPath. Paths are located in the JSON (not just evaluated), so this
module navigates them itself: element names (choice elements by their base name, e.g.
`Observation.value` finds `valueQuantity`), `[n]`, `first()`, `last()`, `ofType(T)`,
`extension('url')` and `where(criteria)`, whose criteria are full FHIRPath evaluated by
fhirpathpy on each candidate. Values come from `value[x]` (its type names the variant of a
choice element) or from nested `part`s for complex values. A primitive's `_name` sibling
array stays aligned when list items are inserted, moved or deleted.

Errors: a malformed operation is 400; one that cannot apply to this resource (no match,
several matches, an index out of range, a singleton that already has a value) is 409, as
RFC 5789 §2.2 describes for a patch that conflicts with the resource's state.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from fhirpathpy import evaluate

from santong import definitions
from santong.definitions import Structure
from santong.fhir.outcome import error

_STEP = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<call>\((?P<args>.*)\))?"
                   r"(?P<indexes>(?:\[\d+\])*)$", re.DOTALL)
_OPERATIONS = ("add", "insert", "delete", "replace", "move")


@dataclass
class Node:
    """An element found by a path, with where it lives so it can be changed."""

    value: Any
    owner: dict[str, Any] | None = None  # the object holding the element
    key: str | None = None  # its JSON name in owner ("valueQuantity", "given")
    index: int | None = None  # its position when owner[key] is an array
    type: str | None = None  # its structure name ("HumanName", "Patient.contact", "string")
    owner_type: str | None = None


class PatchError(Exception):
    """Raised while applying; the interaction turns it into a FhirError for its operation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _split(path: str) -> list[str]:
    """Split a FHIRPath at top-level dots (not inside quotes, parentheses or brackets)."""
    steps, current, depth, quote = [], [], 0, ""
    for char in path:
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
        elif char in "'`":
            quote = char
            current.append(char)
        elif char in "([":
            depth += 1
            current.append(char)
        elif char in ")]":
            depth -= 1
            current.append(char)
        elif char == "." and depth == 0:
            steps.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    steps.append("".join(current).strip())
    if any(not step for step in steps) or depth or quote:
        raise PatchError(400, f"Cannot parse the path {path!r}")
    return steps


def _structure(type_name: str | None, value: Any) -> Structure | None:
    if isinstance(value, dict) and type_name in (None, "Resource"):
        type_name = value.get("resourceType")
    return definitions.get_structure(type_name) if type_name else None


def _child_keys(node: Node, name: str) -> list[tuple[str, str | None]]:
    """The JSON names (and types) that element `name` of `node` may be stored under."""
    structure = _structure(node.type, node.value)
    if structure is None:
        return [(name, None)]
    if name in structure.choices:
        return [(key, structure.elements[key].type) for key in structure.choices[name]]
    element = structure.elements.get(name)
    return [(name, element.type if element else None)]


def _children(node: Node, name: str) -> list[Node]:
    if not isinstance(node.value, dict):
        return []
    found: list[Node] = []
    owner_type = _structure(node.type, node.value)
    for key, type_name in _child_keys(node, name):
        if key not in node.value:
            continue
        value = node.value[key]
        owner = owner_type.name if owner_type else node.type
        if isinstance(value, list):
            found.extend(Node(item, node.value, key, i, type_name, owner)
                         for i, item in enumerate(value))
        else:
            found.append(Node(value, node.value, key, None, type_name, owner))
    return found


def _literal(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("\\'", "'")
    raise PatchError(400, f"Expected a quoted string, not {text!r}")


def _type_matches(node: Node, type_name: str) -> bool:
    type_name = type_name.strip().removeprefix("FHIR.")
    if node.type and node.type.lower() == type_name.lower():
        return True
    if isinstance(node.value, dict) and node.value.get("resourceType") == type_name:
        return True
    return bool(node.key and node.key.endswith(type_name[:1].upper() + type_name[1:]))


def _matches(node: Node, criteria: str) -> bool:
    try:
        result = evaluate(node.value, criteria)
    except Exception as exc:  # fhirpathpy raises assorted errors for bad expressions
        raise PatchError(400, f"Cannot evaluate where({criteria}): {exc}") from None
    return result == [True]


def _apply_step(nodes: list[Node], step: str) -> list[Node]:
    parsed = _STEP.match(step)
    if parsed is None:
        raise PatchError(400, f"Unsupported path step {step!r}")
    name, call, args = parsed["name"], parsed["call"], parsed["args"]
    if call is None:
        result = [child for node in nodes for child in _children(node, name)]
    elif name == "where":
        result = [node for node in nodes if _matches(node, args)]
    elif name == "first":
        result = nodes[:1]
    elif name == "last":
        result = nodes[-1:]
    elif name == "ofType":
        result = [node for node in nodes if _type_matches(node, args)]
    elif name == "extension":
        url = _literal(args)
        result = [child for node in nodes for child in _children(node, "extension")
                  if isinstance(child.value, dict) and child.value.get("url") == url]
    else:
        raise PatchError(400, f"The function {name}() is not supported in patch paths")
    for index in re.findall(r"\[(\d+)\]", parsed["indexes"]):
        position = int(index)
        result = result[position:position + 1]
    return result


def locate(resource: dict[str, Any], path: str) -> list[Node]:
    """The elements of `resource` that `path` selects."""
    steps = _split(path)
    nodes = [Node(resource, type=resource["resourceType"])]
    # The path starts with the resource type; a bare element name is relative to it.
    first = _STEP.match(steps[0])
    if first and first["name"] == resource["resourceType"] and first["call"] is None:
        for index in re.findall(r"\[(\d+)\]", first["indexes"]):
            nodes = nodes[int(index):int(index) + 1]
        steps = steps[1:]
    for step in steps:
        nodes = _apply_step(nodes, step)
    return nodes


def _one(resource: dict[str, Any], path: str) -> Node:
    nodes = locate(resource, path)
    if len(nodes) != 1:
        raise PatchError(409, f"The path {path!r} matches {len(nodes)} elements; "
                         "it must match exactly one")
    return nodes[0]


def _list_at(resource: dict[str, Any], path: str) -> tuple[Node, str]:
    """The element holding the list `path` names, and the list's JSON name."""
    steps = _split(path)
    last = _STEP.match(steps[-1])
    if last is None or last["call"] is not None or last["indexes"] or len(steps) < 2:
        raise PatchError(400, f"The path {path!r} must end with the name of a list element")
    parent = _one(resource, ".".join(steps[:-1]))
    keys = _child_keys(parent, last["name"])
    if len(keys) != 1 or not isinstance(parent.value, dict):
        raise PatchError(400, f"The path {path!r} does not name a list")
    key = keys[0][0]
    current = parent.value.get(key, [])
    if not isinstance(current, list):
        raise PatchError(409, f"The element at {path!r} is not a list")
    return parent, key


def _sibling(owner: dict[str, Any], key: str) -> list[Any] | None:
    extra = owner.get("_" + key)
    return extra if isinstance(extra, list) else None


def _conform(value: Any, type_name: str | None) -> Any:
    """Arrays where the definitions want them, for values assembled from `part`s."""
    structure = _structure(type_name, value)
    if structure is None or not isinstance(value, dict):
        return value
    result: dict[str, Any] = {}
    for key, item in value.items():
        element = structure.elements.get(key)
        if element is None:
            result[key] = item
            continue
        items = item if isinstance(item, list) else [item]
        items = [_conform(i, element.type) for i in items]
        result[key] = items if element.array else (items[0] if len(items) == 1 else items)
    return result


def _value(part: dict[str, Any]) -> tuple[Any, str | None]:
    """A part's value and the type suffix of its `value[x]` (None for a complex value)."""
    for key, item in part.items():
        if key.startswith("value") and len(key) > 5:
            return copy.deepcopy(item), key[5:]
    parts = part.get("part")
    if isinstance(parts, list) and parts:
        built: dict[str, Any] = {}
        for sub in parts:
            name = sub.get("name")
            item, _ = _value(sub)
            if name in built:
                existing = built[name]
                built[name] = [*existing, item] if isinstance(existing, list) else [existing, item]
            else:
                built[name] = item
        return built, None
    raise PatchError(400, "The operation needs a value (value[x] or parts)")


def _choice_key(structure: Structure | None, name: str, suffix: str | None) -> str | None:
    """The JSON name of choice element `name` for a value of type `suffix`, if a choice."""
    if structure is None or name not in structure.choices:
        return None
    if suffix is None:
        raise PatchError(400, f"{name}[x] is a choice: give the value as value[x] so its "
                         "type is known")
    key = name + suffix[:1].upper() + suffix[1:]
    if key not in structure.choices[name]:
        raise PatchError(400, f"{key} is not an allowed type for {structure.name}.{name}[x]")
    return key


def _add(resource: dict[str, Any], path: str, name: str, part: dict[str, Any]) -> None:
    target = _one(resource, path)
    if not isinstance(target.value, dict):
        raise PatchError(409, f"The path {path!r} is not an element that can hold {name!r}")
    value, suffix = _value(part)
    structure = _structure(target.type, target.value)
    key = _choice_key(structure, name, suffix) or name
    if structure is not None and key not in structure.elements:
        raise PatchError(400, f"{structure.name} has no element {name!r}")
    element = structure.elements[key] if structure is not None else None
    if element is not None:
        value = _conform(value, element.type)
    if (element is not None and element.array) or isinstance(target.value.get(key), list):
        target.value.setdefault(key, []).append(value)
        return
    variants = structure.choices.get(name, (key,)) if structure is not None else (key,)
    if any(v in target.value for v in variants):
        raise PatchError(409, f"{name!r} already has a value at {path!r}: use replace")
    target.value[key] = value


def _insert(resource: dict[str, Any], path: str, index: int, part: dict[str, Any]) -> None:
    parent, key = _list_at(resource, path)
    items = parent.value.setdefault(key, [])
    if not 0 <= index <= len(items):
        raise PatchError(409, f"Index {index} is outside the list at {path!r} "
                         f"({len(items)} items)")
    value, _ = _value(part)
    element_type = _child_keys(parent, key)[0][1]
    items.insert(index, _conform(value, element_type))
    extra = _sibling(parent.value, key)
    if extra is not None:
        extra.insert(index, None)


def _remove(node: Node) -> None:
    assert node.owner is not None and node.key is not None
    owner, key = node.owner, node.key
    if node.index is None:
        owner.pop(key, None)
        owner.pop("_" + key, None)
        return
    items = owner[key]
    del items[node.index]
    extra = _sibling(owner, key)
    if extra is not None and node.index < len(extra):
        del extra[node.index]
    if not items:
        owner.pop(key)
        owner.pop("_" + key, None)
    elif extra is not None and all(e is None for e in extra):
        owner.pop("_" + key)


def _delete(resource: dict[str, Any], path: str) -> None:
    nodes = locate(resource, path)
    if len(nodes) > 1:
        raise PatchError(409, f"The path {path!r} matches {len(nodes)} elements: "
                         "delete removes one")
    if nodes:  # nothing to delete is not an error (fhirpatch.html: "if found")
        if nodes[0].owner is None:
            raise PatchError(400, "The resource itself cannot be deleted by a patch")
        _remove(nodes[0])


def _replace(resource: dict[str, Any], path: str, part: dict[str, Any]) -> None:
    node = _one(resource, path)
    if node.owner is None or node.key is None:
        raise PatchError(400, "The resource itself cannot be replaced by a patch")
    value, suffix = _value(part)
    structure = definitions.get_structure(node.owner_type) if node.owner_type else None
    element = structure.elements.get(node.key) if structure is not None else None
    if node.index is not None:
        node.owner[node.key][node.index] = _conform(value, node.type)
        return
    key = node.key
    if element is not None and element.choice and suffix is not None:
        # A choice element may change type: valueQuantity -> valueString.
        key = _choice_key(structure, element.choice, suffix) or key
        if key != node.key:
            node.owner.pop(node.key)
            node.owner.pop("_" + node.key, None)
            element = structure.elements[key] if structure is not None else None
    node.owner[key] = _conform(value, element.type if element else node.type)


def _move(resource: dict[str, Any], path: str, source: int, destination: int) -> None:
    parent, key = _list_at(resource, path)
    items = parent.value.get(key, [])
    for label, position in (("source", source), ("destination", destination)):
        if not 0 <= position < len(items):
            raise PatchError(409, f"The {label} index {position} is outside the list at "
                             f"{path!r} ({len(items)} items)")
    items.insert(destination, items.pop(source))
    extra = _sibling(parent.value, key)
    if extra is not None and len(extra) == len(items):
        extra.insert(destination, extra.pop(source))


def _part_map(parameter: dict[str, Any]) -> dict[str, dict[str, Any]]:
    parts: dict[str, dict[str, Any]] = {}
    for part in parameter.get("part") or []:
        if isinstance(part, dict) and isinstance(part.get("name"), str):
            if part["name"] in parts:
                raise PatchError(400, f"The part {part['name']!r} is given twice")
            parts[part["name"]] = part
    return parts


def _text(parts: dict[str, dict[str, Any]], name: str) -> str:
    part = parts.get(name)
    value = next((v for k, v in (part or {}).items() if k.startswith("value")), None)
    if not isinstance(value, str) or not value:
        raise PatchError(400, f"The operation needs a {name!r} part")
    return value


def _integer(parts: dict[str, dict[str, Any]], name: str) -> int:
    value = (parts.get(name) or {}).get("valueInteger")
    if not isinstance(value, int) or isinstance(value, bool):
        raise PatchError(400, f"The operation needs an integer {name!r} part (valueInteger)")
    return value


def apply_fhirpath_patch(resource: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """`resource` with every operation of `parameters` applied, in order (a new object)."""
    result = copy.deepcopy(resource)
    operations = parameters.get("parameter") or []
    if not operations:
        raise error(400, "invalid", "The FHIRPath Patch has no operations",
                    expression="Parameters.parameter")
    for position, parameter in enumerate(operations):
        where = f"Parameters.parameter[{position}]"
        try:
            if parameter.get("name") != "operation":
                raise PatchError(400, f"Expected a parameter named 'operation', not "
                                 f"{parameter.get('name')!r}")
            parts = _part_map(parameter)
            kind = _text(parts, "type")
            path = _text(parts, "path")
            if kind == "add":
                _add(result, path, _text(parts, "name"), parts.get("value") or {})
            elif kind == "insert":
                _insert(result, path, _integer(parts, "index"), parts.get("value") or {})
            elif kind == "delete":
                _delete(result, path)
            elif kind == "replace":
                _replace(result, path, parts.get("value") or {})
            elif kind == "move":
                _move(result, path, _integer(parts, "source"), _integer(parts, "destination"))
            else:
                raise PatchError(400, f"Unknown operation type {kind!r}: use one of "
                                 f"{', '.join(_OPERATIONS)}")
        except PatchError as exc:
            code = "invalid" if exc.status == 400 else "conflict"
            raise error(exc.status, code, f"FHIRPath Patch operation {position}: {exc}",
                        expression=where) from None
    return result
