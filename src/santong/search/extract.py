"""The values a search parameter selects from a resource, with their FHIR types.

A SearchParameter's FHIRPath expression (http://hl7.org/fhirpath/,
http://hl7.org/fhir/R4/searchparameter.html) is compiled once per resource type into plain
Python closures, for the subset the R4 standard expressions use: paths, ``|`` unions (with
FHIRPath's de-duplication), ``where(...)``, ``resolve() is T``, ``=``/``!=``, ``and``/``or``,
``as``/``is``/``ofType``, ``extension('url')``, ``exists()``, ``empty()``, ``not()``,
``first()``, ``last()``, ``count()``, ``[n]``, ``$this`` and ``%resource``; and for the
invariants of profiles and of the R4 definitions (validation runs them on every write)
``implies``, ``xor``, ``all(...)``, ``matches()``, ``substring()``, ``indexOf()``,
``toInteger()``, ``startsWith()``, ``endsWith()``, ``contains()``, ``length()``,
``hasValue()``, ``iif()``, ``select()``, ``distinct()``, ``isDistinct()``, ``tail()``,
``trace()``, ``in``/``contains``, ``< <= > >=`` (numbers, strings, dates and times by their
precision, Quantities of one unit or of UCUM units of one kind), integer
``+ - * div mod``, string ``+`` and ``&``, and ``%ucum``. Each value is typed
while navigating with the R4 structure definitions: ``Observation.value`` selects whichever
``valueX`` is present, typed X. Expressions outside the subset are evaluated with fhirpathpy
(slow, pure Python) and typed by the node fhirpathpy reports or by the value's shape.

Indexing at write time (http://hl7.org/fhir/R4/search.html) calls :func:`extract_all` for every
create and update, so the compiled path avoids per-value allocations beyond the result Nodes.

Deliberate leniencies, as search servers commonly apply them: ``X as T`` filters a collection
instead of failing on more than one item (``Observation.component.value as Quantity``), and the
FHIRPath system type names (``DateTime``, ``String``, ...) match the FHIR primitives.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any

import orjson

from santong import definitions
from santong.search import transforms
from santong.search.parameters import SearchParameter, parameters_for

# Compiled expressions kept per process (each cache below): the standard parameters have
# about 2,500 (type, expression) pairs; custom SearchParameters posted over a process's life
# add theirs, so the caches are bounded rather than growing with every one ever seen.
_EXPRESSIONS_KEPT = 8192
# Type and element names those expressions name (type pairs, members, paths): bounded too,
# since a custom expression may name anything.
_NAMES_KEPT = 65536

__all__ = [
    "ExtractionError",
    "Extractor",
    "Node",
    "Test",
    "compile_test",
    "evaluate_relative",
    "extract",
    "extract_all",
    "extract_composite",
    "extractor",
    "fallback_reason",
    "focus_elements",
    "reference_evaluate",
    "reference_type",
]


@dataclass(frozen=True, slots=True)
class Node:
    """One selected value: its FHIR type and its JSON value.

    ``type`` is a datatype or primitive name ("HumanName", "dateTime"), a resource type for
    resources, or a BackboneElement path ("Observation.component") for backbone elements.
    """

    type: str
    value: Any


_new = object.__new__
_set_type = Node.__dict__["type"].__set__
_set_value = Node.__dict__["value"].__set__


def _node(ftype: str, value: Any) -> Node:
    # Writes the slots directly: a third of the frozen dataclass __init__'s cost, which counts
    # on the write path (every value of every parameter of every created resource).
    node = _new(Node)
    _set_type(node, ftype)
    _set_value(node, value)
    return node


Extractor = Callable[[dict[str, Any]], list[Node]]

# Internally a collection is a list of (type, value) pairs; Nodes are made only for results.
_Item = tuple[str, Any]
_Fn = Callable[[list[_Item], dict[str, Any]], list[_Item]]
_Types = frozenset[str] | None  # the static types a collection may hold; None when unknown


class ExtractionError(ValueError):
    """An expression failed on a resource (a FHIRPath error, e.g. `and` on several items)."""


class _Unsupported(Exception):
    """The expression is outside the compiled subset (fhirpathpy evaluates it)."""


class _Syntax(_Unsupported):
    """The compiled subset's parser cannot read the expression."""


# --- types ---------------------------------------------------------------------------------

# R4 specialisations among datatypes (http://hl7.org/fhir/R4/datatypes.html), for `as`/`is`.
_PARENT = {
    "Age": "Quantity",
    "Count": "Quantity",
    "Distance": "Quantity",
    "Duration": "Quantity",
    "MoneyQuantity": "Quantity",
    "SimpleQuantity": "Quantity",
    "code": "string",
    "id": "string",
    "markdown": "string",
    "canonical": "uri",
    "oid": "uri",
    "url": "uri",
    "uuid": "uri",
    "positiveInt": "integer",
    "unsignedInt": "integer",
}
# FHIRPath system types (http://hl7.org/fhirpath/#types) standing for the FHIR primitives.
_SYSTEM = {
    "Boolean": "boolean",
    "String": "string",
    "Integer": "integer",
    "Decimal": "decimal",
    "Date": "date",
    "DateTime": "dateTime",
    "Time": "time",
    "Quantity": "Quantity",
}


def _type_name(name: str) -> str:
    if name.startswith("FHIR."):
        return name[5:]
    if name.startswith("System."):
        return _SYSTEM.get(name[7:], name[7:])
    if definitions.get_structure(name) is None and definitions.primitive(name) is None:
        return _SYSTEM.get(name, name)
    return name


@lru_cache(maxsize=_NAMES_KEPT)
def _is_type(actual: str, wanted: str) -> bool:
    if actual == wanted:
        return True
    if wanted in ("Resource", "DomainResource"):
        if not definitions.is_resource_type(actual):
            return False
        return wanted == "Resource" or "text" in definitions.element_names(actual)
    if wanted == "BackboneElement":
        return "." in actual
    if wanted == "Element":
        return not definitions.is_resource_type(actual)
    parent = _PARENT.get(actual)
    return parent is not None and _is_type(parent, wanted)


@lru_cache(maxsize=_NAMES_KEPT)
def _children(owner: str, name: str) -> tuple[tuple[str, str], ...]:
    """(JSON key, type) for member *name* of type *owner*; type "" means "the resourceType"."""
    struct = definitions.get_structure(owner)
    if struct is None:
        return ()  # primitives and unknown types have no children here
    element = struct.elements.get(name)
    elements = (element,) if element is not None else tuple(
        struct.elements[n] for n in struct.choices.get(name, ())
    )
    return tuple((e.name, "" if e.kind == definitions.RESOURCE else e.type) for e in elements)


# --- references ----------------------------------------------------------------------------

_HISTORY = re.compile(r"/_history/[^/]*$")


def reference_type(reference: Any, root: dict[str, Any] | None = None) -> str | None:
    """The resource type a Reference points at, as ``resolve() is T`` needs it.

    From ``reference`` (``Patient/1``, ``http://x/fhir/Patient/1/_history/2``, ``#contained``
    looked up in *root*), else from ``Reference.type`` (``Patient`` or its canonical).
    """
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if isinstance(ref, str):
        if ref.startswith("#"):
            if root is None:
                return None
            if ref == "#":
                return root.get("resourceType")
            target = _contained(root, ref[1:])
            return target.get("resourceType") if target is not None else None
        parts = _HISTORY.sub("", ref).split("/")
        if len(parts) >= 2 and definitions.is_resource_type(parts[-2]):
            return parts[-2]
    rtype = reference.get("type")
    if isinstance(rtype, str):
        rtype = rtype.rsplit("/", 1)[-1]
        if definitions.is_resource_type(rtype):
            return rtype
    return None


def _contained(root: dict[str, Any], ident: str) -> dict[str, Any] | None:
    for res in root.get("contained", ()):
        if isinstance(res, dict) and res.get("id") == ident:
            return res
    return None


def _resolve(reference: Any, root: dict[str, Any]) -> _Item | None:
    rtype = reference_type(reference, root)
    if rtype is None:
        return None
    ref = reference.get("reference", "")
    if isinstance(ref, str) and ref.startswith("#"):
        return rtype, (root if ref == "#" else _contained(root, ref[1:]))
    # The server does not load the target: a stub typed like it is all `is T` needs.
    return rtype, {"resourceType": rtype}


# --- parser --------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s+|//[^\n]*|/\*.*?\*/
    |(?P<str>'(?:[^'\\]|\\.)*')
    |(?P<delim>`(?:[^`\\]|\\.)*`)
    |(?P<num>\d+(?:\.\d+)?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<var>%[A-Za-z_][A-Za-z0-9_]*)
    |(?P<special>\$this)
    |(?P<op><=|>=|!=|!~|[.()\[\]{},|=~<>+\-*/&])""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r",
            "f": "\f"}
# Binding powers of the infix operators (http://hl7.org/fhirpath/#operator-precedence).
_INFIX = {
    ".": 120, "[": 120,
    "*": 100, "/": 100, "div": 100, "mod": 100,
    "+": 90, "-": 90, "&": 90,
    "is": 80, "as": 80,
    "|": 70,
    "<": 60, ">": 60, "<=": 60, ">=": 60,
    "=": 50, "~": 50, "!=": 50, "!~": 50,
    "in": 40, "contains": 40,
    "and": 30,
    "or": 20, "xor": 20,
    "implies": 10,
}  # fmt: skip


def _unescape(text: str) -> str:
    def repl(match: re.Match[str]) -> str:
        char = match.group(1)
        if char.startswith("u"):
            return chr(int(char[1:], 16))
        return _ESCAPES.get(char, char)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", repl, text[1:-1])


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _Syntax(f"unexpected {text[pos:pos + 10]!r}")
        pos = match.end()
        kind = match.lastgroup
        if kind is None:
            continue  # whitespace, comment
        value: Any = match.group()
        if kind == "str":
            value = _unescape(value)
        elif kind == "delim":
            kind, value = "ident", _unescape(value)
        elif kind == "num":
            value = Decimal(value) if "." in value else int(value)
        tokens.append((kind, value))
    tokens.append(("end", None))
    return tokens


class _Parser:
    """A Pratt parser producing tuples: ("ident", name), ("member", base, name),
    ("call", base | None, name, args), ("index", base, index), ("op", op, left, right),
    ("type", "is" | "as", left, type name), ("lit", type, value), ("this",), ("var", name),
    ("empty",)."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def parse(self) -> tuple[Any, ...]:
        tree = self.expr(0)
        if self.tokens[self.pos][0] != "end":
            raise _Syntax(f"unexpected {self.tokens[self.pos][1]!r}")
        return tree

    def next(self) -> tuple[str, Any]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, value: str) -> None:
        kind, got = self.next()
        if got != value or kind not in ("op", "ident"):
            raise _Syntax(f"expected {value!r}, got {got!r}")

    def expr(self, rbp: int) -> tuple[Any, ...]:
        left = self.prefix()
        while True:
            kind, value = self.tokens[self.pos]
            bp = _INFIX.get(value, 0) if kind in ("op", "ident") else 0
            if bp <= rbp:
                return left
            self.pos += 1
            left = self.infix(left, value, bp)

    def name(self) -> str:
        kind, value = self.next()
        if kind != "ident":
            raise _Syntax(f"expected a name, got {value!r}")
        return value

    def args(self) -> list[tuple[Any, ...]]:
        self.expect("(")
        args: list[tuple[Any, ...]] = []
        if self.tokens[self.pos][1] == ")":
            self.pos += 1
            return args
        while True:
            args.append(self.expr(0))
            _, value = self.next()
            if value == ")":
                return args
            if value != ",":
                raise _Syntax(f"expected ',' or ')', got {value!r}")

    def prefix(self) -> tuple[Any, ...]:
        kind, value = self.next()
        if kind == "str":
            return ("lit", "string", value)
        if kind == "num":
            return ("lit", "decimal" if isinstance(value, Decimal) else "integer", value)
        if kind == "special":
            return ("this",)
        if kind == "var":
            return ("var", value[1:])
        if kind == "ident":
            if value in ("true", "false"):
                return ("lit", "boolean", value == "true")
            if self.tokens[self.pos][1] == "(":
                return ("call", None, value, self.args())
            return ("ident", value)
        if value == "(":
            tree = self.expr(0)
            self.expect(")")
            return tree
        if value == "{":
            self.expect("}")
            return ("empty",)
        if value in ("+", "-"):
            return ("op", "neg" if value == "-" else "pos", self.expr(110), None)
        raise _Syntax(f"unexpected {value!r}")

    def infix(self, left: tuple[Any, ...], op: str, bp: int) -> tuple[Any, ...]:
        if op == ".":
            name = self.name()
            if self.tokens[self.pos][1] == "(":
                return ("call", left, name, self.args())
            return ("member", left, name)
        if op == "[":
            index = self.expr(0)
            self.expect("]")
            return ("index", left, index)
        if op in ("is", "as"):
            name = self.name()
            while self.tokens[self.pos][1] == ".":
                self.pos += 1
                name += "." + self.name()
            return ("type", op, left, name)
        return ("op", op, left, self.expr(bp))


# --- compiler ------------------------------------------------------------------------------


def _true(items: list[_Item]) -> bool:
    return len(items) == 1 and items[0][1] is True


def _logic(items: list[_Item]) -> bool | None:
    """A collection as a FHIRPath boolean operand: empty is unknown, a singleton is itself."""
    if not items:
        return None
    if len(items) > 1:
        raise ExtractionError("a boolean operand has several items")
    value = items[0][1]
    return value if isinstance(value, bool) else True


def _equal(a: Any, b: Any) -> bool:
    # Python says True == 1; FHIRPath booleans never equal numbers.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _distinct(items: list[_Item]) -> list[_Item]:
    """FHIRPath union semantics: drop values equal to an earlier one (hashing, not O(n²))."""
    out: list[_Item] = []
    seen: set[Any] = set()
    for item in items:
        value = item[1]
        kind = type(value)
        if kind is str:
            key: Any = value
        elif kind is dict or kind is list:
            key = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        else:
            key = (kind is bool, value)  # True and 1 are different values
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


_BOOLEAN: frozenset[str] = frozenset({"boolean"})
_INTEGER: frozenset[str] = frozenset({"integer"})
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def _truncated_div(a: int, b: int) -> int | None:
    return None if b == 0 else abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)


def _truncated_mod(a: int, b: int) -> int | None:
    quotient = _truncated_div(a, b)
    return None if quotient is None else a - b * quotient


# Integer arithmetic (http://hl7.org/fhirpath/#math): div and mod truncate; by zero is empty.
_ARITHMETIC: dict[str, Callable[[int, int], int | None]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "div": _truncated_div, "mod": _truncated_mod,
}


def _singleton(items: list[_Item], what: str) -> Any:
    if len(items) > 1:
        raise ExtractionError(f"{what} on several items")
    return items[0][1] if items else None


def _integer_value(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExtractionError(f"{value!r} is not an integer")  # decimals: not compiled
    return value


def _integer(items: list[_Item]) -> int | None:
    """An integer operand; None when the collection is empty."""
    value = _singleton(items, "an integer operand")
    return None if value is None else _integer_value(value)


def _string(items: list[_Item]) -> str | None:
    value = _singleton(items, "a string function")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ExtractionError(f"{value!r} is not a string")
    return value


_TEMPORAL = frozenset({"date", "dateTime", "instant", "time"})
_DATE_TIME_TEXT = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2}(?:\.\d+)?))?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?")
_TIME_TEXT = re.compile(r"(\d{2}):(\d{2})(?::(\d{2}(?:\.\d+)?))?")
UCUM = "http://unitsofmeasure.org"


def _temporal_parts(text: str, kind: str) -> tuple[list[Any], int | None] | None:
    """The components of a date, dateTime, instant or time down to its precision (seconds as a
    decimal: seconds and milliseconds are one precision), and its zone offset in minutes."""
    if kind == "time":
        match = _TIME_TEXT.fullmatch(text)
        if match is None:
            return None
        return [int(match[1]), int(match[2]), *([Decimal(match[3])] if match[3] else [])], None
    match = _DATE_TIME_TEXT.fullmatch(text)
    if match is None:
        return None
    parts: list[Any] = [int(g) for g in match.groups()[:5] if g is not None]
    if match[6] is not None:
        parts.append(Decimal(match[6]))
    zone = match[7]
    if zone is None:
        return parts, None
    offset = 0 if zone == "Z" else (1 if zone[0] == "+" else -1) * (
        int(zone[1:3]) * 60 + int(zone[4:6]))
    return parts, offset


def _zone(text: str) -> str:
    """The zone designator that ends a date/time text ("" for none)."""
    if text.endswith("Z"):
        return "Z"
    return text[-6:] if len(text) > 10 and text[-6] in "+-" else ""


def _utc(parts: list[Any], offset: int) -> list[Any]:
    moment = datetime(*parts[:5]) - timedelta(minutes=offset)
    return [moment.year, moment.month, moment.day, moment.hour, moment.minute][:len(parts)] + (
        parts[5:])


def _compare_temporal(a: _Item, b: _Item) -> int | None:
    """http://hl7.org/fhirpath/#comparison: component by component down to the precision both
    have; equal so far but of different precisions is unknown (None). Zones are normalised
    when both values have one; with a time and a zone on one side only it is unknown."""
    kinds = {a[0], b[0]}
    if "time" in kinds and kinds != {"time"}:
        raise ExtractionError("a time compared with a date")
    ta, tb = a[1], b[1]
    if len(ta) == len(tb) and _zone(ta) == _zone(tb) and "." not in ta:
        # One precision and one zone (the usual case): the text orders like the time.
        return -1 if ta < tb else 1 if ta > tb else 0
    pa, pb = _temporal_parts(a[1], a[0]), _temporal_parts(b[1], b[0])
    if pa is None or pb is None:
        raise ExtractionError(f"{a[1]!r} or {b[1]!r} is not a date or time")
    (xa, za), (xb, zb) = pa, pb
    if len(xa) > 3 and len(xb) > 3:
        if (za is None) != (zb is None):
            return None
        if za is not None and zb is not None:
            xa, xb = _utc(xa, za), _utc(xb, zb)
    for one, other in zip(xa, xb, strict=False):
        if one != other:
            return -1 if one < other else 1
    return 0 if len(xa) == len(xb) else None


def _compare_quantity(a: dict[str, Any], b: dict[str, Any]) -> int | None:
    """Quantities of the same unit, or of UCUM units with one canonical form; else unknown."""
    va, vb = a.get("value"), b.get("value")
    if not isinstance(va, int | float | Decimal) or not isinstance(vb, int | float | Decimal):
        return None
    ua, ub = a.get("code", a.get("unit")), b.get("code", b.get("unit"))
    if ua != ub or a.get("system") != b.get("system"):
        if a.get("system") != UCUM or b.get("system") != UCUM or not (
                isinstance(ua, str) and isinstance(ub, str)):
            return None
        from santong.search.ucum import canonical

        ca, cb = canonical(ua), canonical(ub)
        if ca is None or cb is None or ca[1] != cb[1]:
            return None
        va, vb = Decimal(str(va)) * ca[0], Decimal(str(vb)) * cb[0]
    return -1 if va < vb else 1 if va > vb else 0


def _compare(a: _Item, b: _Item) -> int | None:
    """The order of two values (-1, 0, 1), None when FHIRPath cannot tell (an empty result);
    an error for values of kinds that have no order between them."""
    va, vb = a[1], b[1]
    if isinstance(va, bool) or isinstance(vb, bool):
        raise ExtractionError("booleans have no order")
    if isinstance(va, int | float | Decimal) and isinstance(vb, int | float | Decimal):
        return -1 if va < vb else 1 if va > vb else 0
    if isinstance(va, str) and isinstance(vb, str):
        if a[0] in _TEMPORAL or b[0] in _TEMPORAL:
            return _compare_temporal(a, b)
        return -1 if va < vb else 1 if va > vb else 0
    if isinstance(va, dict) and isinstance(vb, dict):
        return _compare_quantity(va, vb)
    raise ExtractionError(f"{a[0]} and {b[0]} cannot be compared")


_ORDER: dict[str, Callable[[int], bool]] = {
    "<": lambda c: c < 0, "<=": lambda c: c <= 0, ">": lambda c: c > 0, ">=": lambda c: c >= 0,
}


@lru_cache(maxsize=_EXPRESSIONS_KEPT)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)


class _Compiler:
    def compile(self, tree: tuple[Any, ...], types: _Types) -> tuple[_Fn, _Types]:
        method = getattr(self, "c_" + tree[0])
        return method(tree, types)

    def c_ident(self, tree: tuple[Any, ...], types: _Types) -> tuple[_Fn, _Types]:
        name = tree[1]
        if name in ("Resource", "DomainResource") or definitions.is_resource_type(name):
            # A leading type name selects the focus if it is of that type (`Patient.name`).
            def type_filter(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                return [item for item in focus if _is_type(item[0], name)]

            if types is None:
                return type_filter, None
            out = frozenset(t for t in types if _is_type(t, name))
            if out == types:
                return _identity, types  # statically known: the root always matches
            return (type_filter if out else _nothing), out
        return self.member(name, types)

    def c_member(self, tree: tuple[Any, ...], types: _Types) -> tuple[_Fn, _Types]:
        base, btypes = self.compile(tree[1], types)
        step, out = self.member(tree[2], btypes)
        return _chain(base, step), out

    def member(self, name: str, types: _Types) -> tuple[_Fn, _Types]:
        out: set[str] | None = None
        if types is not None:
            out = set()
            for t in types:
                for _key, etype in _children(t, name):
                    if etype == "":
                        out = None
                        break
                    out.add(etype)
                if out is None:
                    break
        if types is not None and len(types) == 1:
            (owner,) = types
            return _static_member(_children(owner, name)), None if out is None else frozenset(out)
        table: dict[str, tuple[tuple[str, str], ...]] = {}

        def step(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
            result: list[_Item] = []
            for owner, value in focus:
                keys = table.get(owner)
                if keys is None:
                    keys = table[owner] = _children(owner, name)
                if not keys or type(value) is not dict:
                    continue
                _append_children(result, value, keys)
            return result

        return step, None if out is None else frozenset(out)

    def c_index(self, tree: tuple[Any, ...], types: _Types) -> tuple[_Fn, _Types]:
        base, btypes = self.compile(tree[1], types)
        index = tree[2]
        if index[0] != "lit" or index[1] != "integer":
            raise _Unsupported("indexer that is not an integer literal")
        n = index[2]

        def indexed(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
            return base(focus, root)[n : n + 1]

        return indexed, btypes

    def c_lit(self, tree: tuple[Any, ...], types: _Types) -> tuple[_Fn, _Types]:
        value = [(tree[1], tree[2])]
        return (lambda focus, root: value), frozenset({tree[1]})

    def c_empty(self, tree: tuple[Any, ...], types: _Types) -> tuple[_Fn, _Types]:
        return (lambda focus, root: []), frozenset()

    def c_this(self, tree: tuple[Any, ...], types: _Types) -> tuple[_Fn, _Types]:
        return (lambda focus, root: focus), types

    def c_var(self, tree: tuple[Any, ...], types: _Types) -> tuple[_Fn, _Types]:
        if tree[1] == "ucum":
            ucum = [("uri", UCUM)]
            return (lambda focus, root: ucum), frozenset({"uri"})
        if tree[1] not in ("resource", "rootResource"):
            raise _Unsupported(f"variable %{tree[1]}")
        return (lambda focus, root: [(root["resourceType"], root)]), None

    def c_type(self, tree: tuple[Any, ...], types: _Types) -> tuple[_Fn, _Types]:
        base, btypes = self.compile(tree[2], types)
        wanted = _type_name(tree[3])
        return self.type_op(tree[1], base, btypes, wanted)

    def type_op(self, op: str, base: _Fn, btypes: _Types, wanted: str) -> tuple[_Fn, _Types]:
        if op == "is":
            def is_(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                items = base(focus, root)
                return [("boolean", _is_type(items[0][0], wanted))] if len(items) == 1 else []

            return is_, _BOOLEAN

        def as_(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
            return [item for item in base(focus, root) if _is_type(item[0], wanted)]

        out = None if btypes is None else frozenset(t for t in btypes if _is_type(t, wanted))
        return as_, out

    def c_op(self, tree: tuple[Any, ...], types: _Types) -> tuple[_Fn, _Types]:
        op = tree[1]
        if op not in ("|", "=", "!=", "and", "or", "xor", "implies", "in", "contains", "&",
                      *_ARITHMETIC, *_ORDER):
            raise _Unsupported(f"operator {op}")
        left, ltypes = self.compile(tree[2], types)
        right, rtypes = self.compile(tree[3], types)
        if op in _ORDER:
            holds = _ORDER[op]

            def order(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                a, b = left(focus, root), right(focus, root)
                if not a or not b:
                    return []
                if len(a) > 1 or len(b) > 1:
                    raise ExtractionError(f"'{op}' on several items")
                found = _compare(a[0], b[0])
                return [] if found is None else [("boolean", holds(found))]

            return order, _BOOLEAN
        if op in ("in", "contains"):
            member, collection = (left, right) if op == "in" else (right, left)

            def membership(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                one = member(focus, root)
                if not one:
                    return []
                if len(one) > 1:
                    raise ExtractionError(f"'{op}' with several items to look for")
                value = one[0][1]
                return [("boolean", any(_equal(value, v) for _, v in collection(focus, root)))]

            return membership, _BOOLEAN
        if op == "&":
            def concatenate(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                a, b = _string(left(focus, root)), _string(right(focus, root))
                return [("string", (a or "") + (b or ""))]

            return concatenate, frozenset({"string"})
        if op == "xor":
            def exclusive(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                a, b = _logic(left(focus, root)), _logic(right(focus, root))
                return [] if a is None or b is None else [("boolean", a != b)]

            return exclusive, _BOOLEAN
        if op in _ARITHMETIC:
            compute = _ARITHMETIC[op]

            def arithmetic(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                a = _singleton(left(focus, root), "an operand")
                b = _singleton(right(focus, root), "an operand")
                if a is None or b is None:
                    return []
                if op == "+" and isinstance(a, str) and isinstance(b, str):
                    return [("string", a + b)]
                result = compute(_integer_value(a), _integer_value(b))
                return [] if result is None else [("integer", result)]

            return arithmetic, (frozenset({"integer", "string"}) if op == "+" else _INTEGER)
        if op == "implies":
            def implies(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                a = _logic(left(focus, root))
                if a is False:
                    return [("boolean", True)]
                b = _logic(right(focus, root))
                if a is True:
                    return [] if b is None else [("boolean", b)]
                return [("boolean", True)] if b is True else []

            return implies, _BOOLEAN
        if op == "|":
            def union(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                items = left(focus, root) + right(focus, root)
                return _distinct(items) if len(items) > 1 else items

            both = None if ltypes is None or rtypes is None else ltypes | rtypes
            return union, both
        if op in ("=", "!="):
            negate = op == "!="

            def equality(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                a, b = left(focus, root), right(focus, root)
                if not a or not b:
                    return []
                same = len(a) == len(b) and all(
                    _equal(x[1], y[1]) for x, y in zip(a, b, strict=True)
                )
                return [("boolean", same != negate)]

            return equality, _BOOLEAN
        conjunction = op == "and"

        def logic(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
            a = _logic(left(focus, root))
            # The right side cannot change `false and …` or `true or …` (invariants on writes
            # are mostly `x.exists() or …`).
            if a is not conjunction and a is not None:
                return [("boolean", a)]
            b = _logic(right(focus, root))
            if conjunction:
                result = False if a is False or b is False else (True if a and b else None)
            else:
                result = True if a is True or b is True else (False if a is b is False else None)
            return [] if result is None else [("boolean", result)]

        return logic, _BOOLEAN

    def c_call(self, tree: tuple[Any, ...], types: _Types) -> tuple[_Fn, _Types]:
        _, base_tree, name, args = tree
        if base_tree is None:
            base: _Fn = _identity
            btypes = types
        else:
            base, btypes = self.compile(base_tree, types)
        arity = len(args)
        if name in ("as", "ofType", "is") and arity == 1:
            arg = args[0]
            if arg[0] == "ident":
                type_name = arg[1]
            elif arg[0] == "member" and arg[1][0] == "ident":
                type_name = f"{arg[1][1]}.{arg[2]}"
            else:
                raise _Unsupported(f"{name}() with a type that is not a name")
            return self.type_op("is" if name == "is" else "as", base, btypes, _type_name(type_name))
        if name == "where" and arity == 1:
            crit, _ = self.compile(args[0], btypes)

            def where(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                return [item for item in base(focus, root) if _true(crit([item], root))]

            return where, btypes
        if name in ("exists", "empty") and arity <= 1:
            test = self.compile(args[0], btypes)[0] if args else None
            want = name == "exists"

            def exists(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                items = base(focus, root)
                if test is not None:
                    found = any(_true(test([item], root)) for item in items)
                else:
                    found = bool(items)
                return [("boolean", found == want)]

            return exists, _BOOLEAN
        if name == "all" and arity == 1:
            crit, _ = self.compile(args[0], btypes)

            def all_(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                return [("boolean", all(_true(crit([item], root))
                                        for item in base(focus, root)))]

            return all_, _BOOLEAN
        if name == "matches" and arity == 1:
            # Arguments of functions that do not iterate are evaluated on the call's focus.
            pattern = self.compile(args[0], types)[0]

            def matches(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                text, regex = _string(base(focus, root)), _string(pattern(focus, root))
                if text is None or not regex:
                    return []
                return [("boolean", _regex(regex).search(text) is not None)]

            return matches, _BOOLEAN
        if name == "substring" and arity in (1, 2):
            start = self.compile(args[0], types)[0]
            length = self.compile(args[1], types)[0] if arity == 2 else None

            def substring(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                text, first = _string(base(focus, root)), _integer(start(focus, root))
                if text is None or first is None or not 0 <= first < len(text):
                    return []
                if length is None:
                    return [("string", text[first:])]
                count = _integer(length(focus, root))
                return [("string", text[first:] if count is None else
                         text[first:first + max(count, 0)])]

            return substring, frozenset({"string"})
        if name == "indexOf" and arity == 1:
            part = self.compile(args[0], types)[0]

            def index_of(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                text, sought = _string(base(focus, root)), _string(part(focus, root))
                if text is None or sought is None:
                    return []
                return [("integer", text.find(sought))]

            return index_of, _INTEGER
        if name == "toInteger" and arity == 0:
            def to_integer(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                items = base(focus, root)
                if len(items) > 1:
                    raise ExtractionError("toInteger() on several items")
                value = items[0][1] if items else None
                if isinstance(value, bool):
                    return [("integer", int(value))]
                if isinstance(value, int):
                    return [("integer", value)]
                if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
                    return [("integer", int(value))]
                return []

            return to_integer, _INTEGER
        if name in ("startsWith", "endsWith", "contains") and arity == 1:
            part = self.compile(args[0], types)[0]
            test = {"startsWith": str.startswith, "endsWith": str.endswith,
                    "contains": str.__contains__}[name]

            def string_test(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                text, sought = _string(base(focus, root)), _string(part(focus, root))
                if text is None or sought is None:
                    return []
                return [("boolean", test(text, sought))]

            return string_test, _BOOLEAN
        if name == "length" and arity == 0:
            def length(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                text = _string(base(focus, root))
                return [] if text is None else [("integer", len(text))]

            return length, _INTEGER
        if name == "hasValue" and arity == 0:
            # Primitives carried only by extensions are not items here: a single primitive
            # item has a value.
            def has_value(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                items = base(focus, root)
                return [("boolean", len(items) == 1 and type(items[0][1]) not in (dict, list))]

            return has_value, _BOOLEAN
        if name == "iif" and arity in (2, 3):
            # The criterion and the results are evaluated on the input (`x.iif(empty(), …)`).
            criterion = self.compile(args[0], btypes)[0]
            then, ttypes = self.compile(args[1], btypes)
            otherwise, otypes = (self.compile(args[2], btypes) if arity == 3
                                 else ((lambda focus, root: []), frozenset()))

            def iif(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                items = base(focus, root)
                if _logic(criterion(items, root)) is True:
                    return then(items, root)
                return otherwise(items, root)

            return iif, None if ttypes is None or otypes is None else ttypes | otypes
        if name == "trace" and arity in (1, 2):
            return base, btypes  # a debugging aid: the input unchanged
        if name == "select" and arity == 1:
            projection, ptypes = self.compile(args[0], btypes)

            def select(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                out: list[_Item] = []
                for item in base(focus, root):
                    out.extend(projection([item], root))
                return out

            return select, ptypes
        if name in ("distinct", "isDistinct") and arity == 0:
            if name == "distinct":
                return (lambda focus, root: _distinct(base(focus, root))), btypes

            def is_distinct(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                items = base(focus, root)
                return [("boolean", len(_distinct(items)) == len(items))]

            return is_distinct, _BOOLEAN
        if name == "tail" and arity == 0:
            return (lambda focus, root: base(focus, root)[1:]), btypes
        if name == "not" and arity == 0:
            def not_(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                value = _logic(base(focus, root))
                return [] if value is None else [("boolean", not value)]

            return not_, _BOOLEAN
        if name in ("first", "last") and arity == 0:
            first = name == "first"

            def pick(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                items = base(focus, root)
                return items[:1] if first else items[-1:]

            return pick, btypes
        if name == "count" and arity == 0:
            return (lambda focus, root: [("integer", len(base(focus, root)))]), frozenset(
                {"integer"}
            )
        if name == "extension" and arity == 1:
            if args[0][0] != "lit" or args[0][1] != "string":
                raise _Unsupported("extension() with a url that is not a string literal")
            if btypes is not None and any(definitions.primitive(t) for t in btypes):
                # A primitive's extensions are in its `_name` sibling, out of reach here.
                raise _Unsupported("extension() on a primitive")
            url = args[0][2]

            def extension(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                return [
                    ("Extension", ext)
                    for _, value in base(focus, root)
                    if type(value) is dict
                    for ext in value.get("extension", ())
                    if type(ext) is dict and ext.get("url") == url
                ]

            return extension, frozenset({"Extension"})
        if name == "resolve" and arity == 0:
            def resolve(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
                out = []
                for _, value in base(focus, root):
                    found = _resolve(value, root)
                    if found is not None:
                        out.append(found)
                return out

            return resolve, None
        raise _Unsupported(f"function {name}() with {arity} argument(s)")


def _append_children(result: list[_Item], value: dict[str, Any],
                     keys: tuple[tuple[str, str], ...]) -> None:
    """Append the children of `value` under `keys`, typed (resources by their resourceType)."""
    for key, etype in keys:
        child = value.get(key)
        if child is None:
            continue
        if type(child) is list:
            for one in child:
                if one is not None:
                    result.append((etype or _resource_type(one), one))
        else:
            result.append((etype or _resource_type(child), child))


def _static_member(keys: tuple[tuple[str, str], ...]) -> _Fn:
    """A member step on items all of one known type (the common case): no per-item lookup."""
    if not keys:
        return _nothing
    if len(keys) == 1 and keys[0][1]:
        key, etype = keys[0]

        def step(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
            result: list[_Item] = []
            for _, value in focus:
                if type(value) is dict:
                    child = value.get(key)
                    if child is None:
                        continue
                    if type(child) is list:
                        result.extend([(etype, one) for one in child if one is not None])
                    else:
                        result.append((etype, child))
            return result

        return step

    def choice_step(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
        result: list[_Item] = []
        for _, value in focus:
            if type(value) is not dict:
                continue
            _append_children(result, value, keys)
        return result

    return choice_step


def _resource_type(value: Any) -> str:
    return value.get("resourceType", "") if type(value) is dict else ""


def _identity(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
    return focus


def _nothing(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
    return []


def _chain(first: _Fn, then: _Fn) -> _Fn:
    if first is _identity:
        return then
    def chained(focus: list[_Item], root: dict[str, Any]) -> list[_Item]:
        return then(first(focus, root), root)

    return chained


def _compile_subset(input_type: str, expression: str) -> _Fn:
    """Compile *expression* for a focus of *input_type*; raise _Unsupported outside the subset."""
    tree = _Parser(expression).parse()
    fn, _ = _Compiler().compile(tree, frozenset({input_type}))
    return fn


# --- fhirpathpy fallback -------------------------------------------------------------------


@cache
def _fhirpathpy() -> Any:
    """fhirpathpy's parser and engine with the R4 model; imported only when needed."""
    from antlr4 import CommonTokenStream, InputStream, Token
    from antlr4.error.ErrorListener import ErrorListener
    from antlr4.tree.Tree import ParseTreeWalker
    from fhirpathpy.engine import do_eval
    from fhirpathpy.engine.nodes import ResourceNode, TypeInfo
    from fhirpathpy.engine.util import arraify
    from fhirpathpy.models import models
    from fhirpathpy.parser.ASTPathListener import ASTPathListener
    from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
    from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

    class Strict(ErrorListener):  # type: ignore[misc]
        # fhirpathpy.parser.parse recovers from syntax errors silently; refuse them instead.
        def syntaxError(self, recognizer: Any, symbol: Any, line: int, column: int,
                        msg: str, e: Any) -> None:
            raise ValueError(f"column {column}: {msg}")

    def parse(expression: str) -> Any:
        lexer = FHIRPathLexer(InputStream(expression))
        lexer.removeErrorListeners()
        lexer.addErrorListener(Strict())
        parser = FHIRPathParser(CommonTokenStream(lexer))
        parser.removeErrorListeners()
        parser.addErrorListener(Strict())
        listener = ASTPathListener()
        ParseTreeWalker().walk(listener, parser.expression())
        if parser.getCurrentToken().type != Token.EOF:
            raise ValueError(f"unexpected {parser.getCurrentToken().text!r}")
        return listener.parentStack[0]

    model = models["r4"]

    def lenient_as(ctx: dict[str, Any], coll: list[Any], type_info: Any) -> list[Any]:
        TypeInfo.model = ctx.get("model")
        wanted = TypeInfo(namespace=type_info.namespace, name=_type_name(type_info.name))
        return [v for v in coll if TypeInfo.from_value(v).is_(wanted) or TypeInfo.from_value(
            v).is_(type_info)]

    def resolve(ctx: dict[str, Any], coll: list[Any]) -> list[Any]:
        root = ctx["vars"]["resource"]
        out = []
        for node in coll:
            found = _resolve(getattr(node, "data", node), root)
            if found is not None:
                out.append(ResourceNode.create_node(found[1], found[0]))
        return out

    # Entered into the engine's invocation table directly (not through the `options`
    # wrapper, which strips the typed nodes these functions need).
    table = {
        "resolve": {"fn": resolve},
        "as": {"fn": lenient_as, "arity": {1: ["TypeSpecifier"]}},
        "asOp": {"fn": lenient_as, "arity": {2: ["Any", "TypeSpecifier"]}},
    }

    class Engine:
        @staticmethod
        def parse(expression: str) -> Any:
            return parse(expression)

        @staticmethod
        def run(parsed: Any, value: Any, value_type: str, root: dict[str, Any]) -> list[Any]:
            # fhirpathpy matches a leading type name against a raw resource's resourceType.
            is_resource = isinstance(value, dict) and "resourceType" in value
            data = value if is_resource else ResourceNode.create_node(value, value_type)
            ctx = {
                "dataRoot": arraify(data),
                "vars": {"context": value, "resource": root, "rootResource": root,
                         "ucum": "http://unitsofmeasure.org"},
                "model": model,
                "userInvocationTable": table,
            }
            return do_eval(ctx, arraify(data), parsed["children"][0])

        node_class = ResourceNode

    return Engine


_ABSTRACT_ROOT = re.compile(r"(?<![\w.`])(?:Resource|DomainResource)(?=\s*\.)")


@lru_cache(maxsize=_EXPRESSIONS_KEPT)
def _fp_parsed(expression: str, resource_type: str | None = None) -> Any:
    if resource_type is not None and definitions.is_resource_type(resource_type):
        # fhirpathpy compares a leading type name with resourceType exactly, so `Resource.id`
        # would select nothing from a Patient; name the concrete type instead.
        expression = _ABSTRACT_ROOT.sub(resource_type, expression)
    return _fhirpathpy().parse(expression)


def _plain(value: Any) -> Any:
    """fhirpathpy's values as JSON: Decimals back to numbers, its date/time types to strings."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, Decimal):
        exact = value == value.to_integral_value() and value.as_tuple().exponent >= 0
        return int(value) if exact else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value)


def _shape_type(value: Any) -> str:
    """A best guess of the FHIR type of a JSON value fhirpathpy returned untyped."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float | Decimal):
        return "decimal"
    if not isinstance(value, dict):
        return "string"
    if "resourceType" in value:
        return value["resourceType"]
    if value.get("system") in _CONTACT_SYSTEMS:
        return "ContactPoint"  # not an Identifier, whose system is a URI
    for keys, name in _SHAPES:
        if keys <= value.keys():
            return name
    return "Element"


_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})
_SHAPES = (
    (frozenset({"coding"}), "CodeableConcept"),
    (frozenset({"reference"}), "Reference"),
    (frozenset({"url"}), "Extension"),
    (frozenset({"family"}), "HumanName"),
    (frozenset({"given"}), "HumanName"),
    (frozenset({"system", "value"}), "Identifier"),
    (frozenset({"value", "unit"}), "Quantity"),
    (frozenset({"value", "currency"}), "Money"),
    (frozenset({"low"}), "Range"),
    (frozenset({"high"}), "Range"),
    (frozenset({"start"}), "Period"),
    (frozenset({"end"}), "Period"),
    (frozenset({"code"}), "Coding"),
    (frozenset({"line"}), "Address"),
    (frozenset({"city"}), "Address"),
)


def _fallback(input_type: str, expression: str) -> Callable[[Any, dict[str, Any]], list[Node]]:
    engine = _fhirpathpy()
    parsed = _fp_parsed(expression, input_type)
    node_class = engine.node_class

    def run(value: Any, root: dict[str, Any]) -> list[Node]:
        out = []
        try:
            found = engine.run(parsed, value, input_type, root)
        except Exception as exc:  # fhirpathpy raises plain Exception
            raise ExtractionError(f"{expression}: {exc}") from exc
        for item in found:
            if isinstance(item, node_class):
                data = _plain(item.data)
                path = item.path or ""
                if data is None or (isinstance(data, dict) and data.keys() == {"extension"}):
                    continue  # a primitive with extensions only
                ftype = path if "." not in path else _path_type(path)
                out.append(Node(ftype or _shape_type(data), data))
            else:
                data = _plain(item)
                if isinstance(data, dict) and data.get("$status") == "error":
                    # fhirpathpy reports some errors (single() on many) as a value.
                    raise ExtractionError(f"{expression}: {data.get('$error')}")
                out.append(Node(_shape_type(data), data))
        return out

    return run


@lru_cache(maxsize=_NAMES_KEPT)
def _path_type(path: str) -> str:
    """The type of an element path fhirpathpy reports ("Patient.name" -> "HumanName")."""
    owner, _, name = path.rpartition(".")
    if definitions.get_structure(path) is not None:
        return path  # a BackboneElement
    children = _children(owner, name) if definitions.get_structure(owner) else ()
    if len(children) == 1 and children[0][1]:
        return children[0][1]
    return ""


# --- public API ----------------------------------------------------------------------------

_Compiled = Callable[[Any, dict[str, Any]], list[Node]]


@lru_cache(maxsize=_EXPRESSIONS_KEPT)
def _compiled(input_type: str, expression: str) -> _Compiled:
    """Evaluate *expression* on one value of *input_type*: compiled, or through fhirpathpy."""
    try:
        fn = _compile_subset(input_type, expression)
    except _Unsupported:
        return _fallback(input_type, expression)

    def run(value: Any, root: dict[str, Any]) -> list[Node]:
        return [_node(t, v) for t, v in fn([(input_type, value)], root)]

    return run


Test = Callable[[Any, dict[str, Any]], bool]

# Functions whose arguments are evaluated on each item of their input (or on the input as a
# whole, for iif), not on the expression's focus.
_ITEM_FUNCTIONS = frozenset({"where", "all", "exists", "select", "any", "repeat", "iif"})


def _reads(tree: tuple[Any, ...] | None, relative: bool) -> set[str] | None:
    """The focus's elements `tree` navigates from (None: it depends on more than them).

    `relative`: `tree` is an argument evaluated on items derived from those elements, where
    `$this` and functions without a base are about the items, not the focus."""
    if tree is None:
        return set()
    kind = tree[0]
    if kind == "ident":
        name = tree[1]
        if relative:
            return set()  # an element of the items
        if name in ("Resource", "DomainResource") or definitions.is_resource_type(name):
            return None  # a type name: the focus itself
        return {name}
    if kind == "member":
        base = tree[1]
        if not relative and base[0] == "ident" and (
                base[1] in ("Resource", "DomainResource") or definitions.is_resource_type(base[1])):
            return {tree[2]}  # `Patient.name` on a Patient
        return _reads(base, relative)
    if kind == "index":
        return _reads(tree[1], relative)
    if kind == "type":
        return _reads(tree[2], relative)
    if kind == "call":
        _, base, name, args = tree
        if base is None and not relative:
            return None  # a function of the focus itself: exists(), hasValue()…
        out = _reads(base, relative)
        for arg in args:
            found = _reads(arg, relative or name in _ITEM_FUNCTIONS)
            if out is None or found is None:
                return None
            out |= found
        return out
    if kind == "op":
        out = set()
        for side in tree[2:]:
            found = _reads(side, relative)
            if found is None:
                return None
            out |= found
        return out
    if kind in ("lit", "empty") or (kind == "this" and relative):
        return set()
    return None  # $this on the focus, %resource and other variables


def focus_elements(expression: str) -> frozenset[str] | None:
    """The elements of its focus that *expression* reads, when nothing else (no variable, no
    function of the focus itself, no `$this` on it): where all are absent, the expression has
    the value it has on an empty focus. None otherwise, or outside the compiled subset."""
    try:
        found = _reads(_Parser(expression).parse(), False)
    except _Unsupported:
        return None
    return None if found is None else frozenset(found)


def compile_test(input_type: str, expression: str) -> Test | None:
    """*expression* as an invariant of one value of *input_type*, compiled: the test passes
    when it evaluates to a single ``true``; None when the expression is outside the compiled
    subset (these tests never run fhirpathpy). A test raises ExtractionError (or a TypeError
    on malformed input) when FHIRPath itself fails."""
    try:
        fn = _compile_subset(input_type, expression)
    except _Unsupported:
        return None

    def test(value: Any, root: dict[str, Any]) -> bool:
        return _true(fn([(input_type, value)], root))

    return test


def fallback_reason(input_type: str, expression: str) -> str | None:
    """None when *expression* compiles; else why it needs fhirpathpy ("syntax: ..." when
    fhirpathpy cannot parse it either)."""
    try:
        _compile_subset(input_type, expression)
    except _Syntax as exc:
        try:
            _fp_parsed(expression)
        except Exception as fp_exc:  # ANTLR raises plain Exception
            return f"syntax: {fp_exc or exc}"
        return f"grammar: {exc}"
    except _Unsupported as exc:
        return str(exc)
    return None


_NO_VALUES: Extractor = lambda resource: []  # noqa: E731


def extractor(resource_type: str, param: SearchParameter) -> Extractor:
    """The values *param* selects from a resource of *resource_type* (compiled once, cached)."""
    if param.expression is None:
        return _NO_VALUES
    return _extractor(resource_type, param.expression)


@lru_cache(maxsize=_EXPRESSIONS_KEPT)
def _extractor(resource_type: str, expression: str) -> Extractor:
    run = _compiled(resource_type, expression)

    def extract_values(resource: dict[str, Any]) -> list[Node]:
        return run(resource, resource)

    return extract_values


Pairs = Callable[[dict[str, Any]], list[tuple[str, Any]]]


@lru_cache(maxsize=_EXPRESSIONS_KEPT)
def _pairs(resource_type: str, expression: str) -> Pairs:
    try:
        fn = _compile_subset(resource_type, expression)
    except _Unsupported:
        run = _fallback(resource_type, expression)
        return lambda resource: [(n.type, n.value) for n in run(resource, resource)]
    return lambda resource: fn([(resource_type, resource)], resource)


def pairs_extractor(resource_type: str, param: SearchParameter) -> Pairs:
    """What `extract` selects for *param* from a resource of *resource_type*, as (type,
    value) pairs: no Node per value, for indexing, which runs on every write."""
    if param.expression is None:
        return lambda resource: []
    expression, url = param.expression, param.url
    run: Pairs | None = None  # compiled at the first use, as `extract` compiles

    def pairs(resource: dict[str, Any]) -> list[tuple[str, Any]]:
        nonlocal run
        if run is None:
            run = _pairs(resource_type, expression)
        selected = run(resource)
        transform = transforms.for_url(url)  # looked up each time, as by `extract`
        return selected if transform is None else [("string", s)
                                                   for s in transform.values(selected)]

    return pairs


def extract(resource: dict[str, Any], param: SearchParameter) -> list[Node]:
    """The values *param* selects from *resource* (computed by its transform if it has one)."""
    if param.expression is None:
        return []
    selected = _extractor(resource["resourceType"], param.expression)(resource)
    transform = transforms.for_url(param.url)
    return selected if transform is None else _transformed(transform, selected)


def _transformed(transform: transforms.Transform, selected: list[Node]) -> list[Node]:
    return [_node("string", s) for s in transform.values([(n.type, n.value) for n in selected])]


def evaluate_relative(
    input_type: str, expression: str, node: Node, root: dict[str, Any]
) -> list[Node]:
    """Evaluate *expression* (a composite component's) on one value selected by the composite."""
    return _compiled(node.type or input_type, expression)(node.value, root)


def extract_composite(
    resource: dict[str, Any], param: SearchParameter
) -> list[tuple[Node, tuple[list[Node], ...]]]:
    """For each value a composite parameter selects, the values of each of its components.

    ``Observation`` ``code-value-quantity`` on an Observation gives one entry: the Observation,
    with (its ``code``, its ``valueQuantity``); ``component-code-value-quantity`` one entry per
    ``Observation.component``.
    """
    rtype = resource["resourceType"]
    out = []
    for node in extract(resource, param):
        parts = tuple(
            _compiled(node.type or rtype, expr)(node.value, resource)
            for _, expr in param.components
        )
        out.append((node, parts))
    return out


_PLANS: dict[str, tuple[object, tuple[tuple[str, _Compiled], ...]]] = {}


def extract_all(resource: dict[str, Any]) -> dict[str, list[Node]]:
    """The values of every parameter of the resource's type, by code (empty ones left out)."""
    rtype = resource["resourceType"]
    params = parameters_for(rtype)
    plan = _PLANS.get(rtype)
    if plan is None or plan[0] is not params:  # registrations rebuild the mapping
        runs = tuple(
            (code, _compiled(rtype, p.expression)) for code, p in params.items() if p.expression
        )
        plan = _PLANS[rtype] = (params, runs)
    out = {}
    for code, run in plan[1]:
        values = run(resource, resource)
        transform = transforms.for_url(params[code].url) if values else None
        if transform is not None:
            values = _transformed(transform, values)
        if values:
            out[code] = values
    return out


def reference_evaluate(
    value: dict[str, Any], expression: str, root: dict[str, Any] | None = None,
    value_type: str | None = None,
) -> list[Any]:
    """*expression* evaluated by fhirpathpy alone, as JSON values (for checks and tests).

    *value* is a resource, or with *value_type* any typed value inside *root*.
    """
    root = value if root is None else root
    vtype = value_type or value.get("resourceType", "")
    engine = _fhirpathpy()
    result = []
    for item in engine.run(_fp_parsed(expression, vtype), value, vtype, root):
        data = _plain(getattr(item, "data", item))
        if isinstance(data, dict) and data.keys() == {"extension"}:
            continue
        if data is not None:
            result.append(data)
    return result
