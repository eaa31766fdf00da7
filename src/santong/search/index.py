"""Indexing at write time: every search parameter's values, in the write's own transaction.

http://hl7.org/fhir/R4/search.html — a resource is found by the values its SearchParameters'
expressions select. They are extracted when the resource is written and stored in one table
per parameter type (see migrations/versions/0002_search_indexes.py); a write replaces the rows
of the resource in the transaction (queued and flushed with its other writes, see
santong.storage.repository), so an acknowledged write is searchable at once.
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson

from santong.search import values
from santong.search.extract import (
    ExtractionError,
    Node,
    Pairs,
    evaluate_relative,
    extract,
    pairs_extractor,
)
from santong.search.parameters import SearchParameter, by_url, parameters_for

log = logging.getLogger(__name__)
# Parameters answered from the resource row itself, or not indexed.
_ROW_PARAMETERS = frozenset({"_id", "_lastUpdated"})
_TAGS = re.compile(r"<[^>]*>")


@dataclass(slots=True)
class IndexRows:
    string: list[tuple[str, str, str]] = field(default_factory=list)
    token: list[tuple[str, ...]] = field(default_factory=list)
    reference: list[tuple[Any, ...]] = field(default_factory=list)
    date: list[tuple[Any, ...]] = field(default_factory=list)
    number: list[tuple[Any, ...]] = field(default_factory=list)
    quantity: list[tuple[Any, ...]] = field(default_factory=list)
    uri: list[tuple[str, str]] = field(default_factory=list)
    text: list[tuple[str, str]] = field(default_factory=list)
    composite: list[tuple[str, str]] = field(default_factory=list)
    position: list[tuple[str, float, float]] = field(default_factory=list)


def typed_rows(param_type: str, nodes: list[Node]) -> list[tuple[Any, ...]]:
    """Index rows (without the code) for the values one parameter of `param_type` selects."""
    return [row[1:] for row in _ROW_MAKERS[param_type]("", [(n.type, n.value) for n in nodes])]


@dataclass(frozen=True, slots=True)
class _Component:
    """One component of a composite parameter, resolved when the type's plan is made."""

    type: str  # the component parameter's type: a table of TABLES
    names: tuple[str, ...]  # the columns of its rows after the code
    expression: str  # relative to each value the composite selects


def _components(param: SearchParameter) -> tuple[_Component, ...] | None:
    """The composite's components; None when one is unknown or of a type not indexed."""
    components = []
    for url, expression in param.components:
        component = by_url(url)
        if component is None or component.type not in TABLES:
            return None
        names = tuple(c.split()[0] for c in TABLES[component.type][1:])
        components.append(_Component(component.type, names, expression))
    return tuple(components)


def _composite_rows(resource: dict[str, Any], param: SearchParameter,
                    components: tuple[_Component, ...], seen: dict[tuple[Any, ...], Any]
                    ) -> list[str]:
    """One JSON document per composite value: each component's index rows, by column name.

    Every component's values are selected before any rows are made, and a value is dropped at
    the first component that selects nothing: most composites (Observation's code-value-*)
    have no value for a given resource. `seen` keeps one resource's selections and rows by
    value and expression (`code` is a component of six of Observation's composites); an entry
    holds its value, so that its id is not reused for another while the resource is indexed.
    """
    documents = []
    resource_type = resource["resourceType"]
    for node in extract(resource, param):
        selections = []
        for component in components:
            key = (id(node.value), node.type, component.expression)
            selected = seen.get(key)
            if selected is None:
                nodes = evaluate_relative(resource_type, component.expression, node, resource)
                selected = seen[key] = (node.value, nodes)
            if not selected[1]:
                break
            selections.append(selected)
        else:
            document = [_component_rows(component, node.type, selected, seen)
                        for component, selected in zip(components, selections, strict=True)]
            if all(document):  # a component's values may give no rows (nothing indexable)
                documents.append(orjson.dumps(document).decode())
    return documents


def _component_rows(component: _Component, node_type: str,
                    selected: tuple[Any, list[Node]], seen: dict[tuple[Any, ...], Any]
                    ) -> list[dict[str, Any]]:
    """The rows of one component's values (`selected`: the composite's value and the nodes
    the component selects in it), by column name; remembered in `seen` as in
    `_composite_rows`."""
    value, nodes = selected
    key = (id(value), node_type, component.expression, component.type)
    made = seen.get(key)
    if made is None:
        made = seen[key] = (value, [dict(zip(component.names, map(json_value, row), strict=True))
                                    for row in typed_rows(component.type, nodes)])
    return made[1]  # type: ignore[no-any-return]


def json_value(value: Any) -> Any:
    """An index value as JSON: datetimes as ISO 8601, decimals as exact strings."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


# A call's arguments, innermost first (`where(resolve() is Patient)` → `where!`).
_CALL_ARGUMENTS = re.compile(r"(\w+)\([^()]*\)")
# A path from the resource, optionally cast: `Observation.value as Quantity`, `Resource.meta.tag`.
_PATH = re.compile(r"[A-Z]\w*((?:\.\w+!?|\[\d+\])+)(?:\s+as\s+[\w.]+)?")
# Functions that give a value even on an empty collection (`Patient.deceased.exists() and …`).
_VALUE_FROM_NOTHING = frozenset({
    "exists", "empty", "not", "count", "all", "allTrue", "anyTrue", "allFalse", "anyFalse",
    "hasValue", "iif", "union", "combine", "isDistinct", "subsetOf", "supersetOf", "memberOf",
    "conformsTo", "htmlChecks", "is", "and", "or", "xor", "implies",
})


def _alternatives(expression: str) -> list[str]:
    """The expression split at its top-level `|` unions."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(expression):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(expression[start:i])
            start = i + 1
    parts.append(expression[start:])
    return parts


@lru_cache(maxsize=8192)
def first_elements(expression: str) -> frozenset[str] | None:
    """The top-level elements `expression` can select from; None when it cannot be told.

    Only for plain paths (with `where`, `as`, `extension(…)` and the like on the way): an
    empty start then selects nothing, so indexing skips a parameter whose elements a resource
    lacks without evaluating it — most parameters of a type do not apply to a given resource.
    """
    names = set()
    for alternative in _alternatives(expression):
        reduced, previous = alternative, ""
        while reduced != previous:
            previous, reduced = reduced, _CALL_ARGUMENTS.sub(r"\1!", reduced)
        reduced = reduced.strip().removeprefix("(").removesuffix(")").strip()
        match = _PATH.fullmatch(reduced)
        if match is None:
            return None
        steps = match.group(1).replace("[", ".[").split(".")[1:]
        if any(step.rstrip("!") in _VALUE_FROM_NOTHING for step in steps):
            return None
        first = steps[0].rstrip("!") if steps[0] == "extension!" else steps[0]
        if not first.isidentifier():  # a function on the resource itself, or an index
            return None
        names.add(first)
    return frozenset(names)


@lru_cache(maxsize=4096)
def _element_names(key: str) -> tuple[str, ...]:
    """The element names a JSON key may belong to: itself, and each camelCase prefix (choice
    types: `valueQuantity` is `value`; `multipleBirthBoolean` is `multipleBirth`); `_x` is x."""
    key = key.removeprefix("_")
    return (key, *(key[:i] for i in range(1, len(key)) if key[i].isupper()))


def _string_rows(code: str, pairs: list[tuple[str, Any]]) -> list[tuple[Any, ...]]:
    # Distinct per value: a Chinese name's text repeats its parts (张三 and 张 + 三).
    return [(code, values.normalise(s), s) for kind, value in pairs
            for s in dict.fromkeys(values.string_values(kind, value))]


def _rows_of(values_of: Callable[[str, Any], Iterable[tuple[Any, ...]]]
             ) -> Callable[[str, list[tuple[str, Any]]], list[tuple[Any, ...]]]:
    """Rows `(code, *row)` for each row `values_of` gives for each selected value."""
    def rows(code: str, pairs: list[tuple[str, Any]]) -> list[tuple[Any, ...]]:
        return [(code, *row) for kind, value in pairs for row in values_of(kind, value)]

    return rows


def _uri_rows(code: str, pairs: list[tuple[str, Any]]) -> list[tuple[Any, ...]]:
    return [(code, u) for kind, value in pairs for u in values.uri_values(kind, value)]


def _position_rows(code: str, pairs: list[tuple[str, Any]]) -> list[tuple[Any, ...]]:
    return [(code, *position) for _, value in pairs
            for position in values.position_values(value)]


# The rows of one parameter's selected values, code first, by the IndexRows table they go to.
_ROW_MAKERS: dict[str, Callable[[str, list[tuple[str, Any]]], list[tuple[Any, ...]]]] = {
    "string": _string_rows, "token": _rows_of(values.token_values),
    "reference": _rows_of(values.reference_values), "date": _rows_of(values.date_values),
    "number": _rows_of(values.number_values), "quantity": _rows_of(values.quantity_values),
    "uri": _uri_rows, "position": _position_rows,
}


@dataclass(frozen=True, slots=True)
class _Entry:
    """How one parameter is indexed: its table, how its values are selected and made rows."""

    param: SearchParameter
    table: str  # an IndexRows field
    select: Pairs | None  # None for composites (their components are selected per value)
    rows: Callable[[str, list[tuple[str, Any]]], list[tuple[Any, ...]]] | None
    components: tuple[_Component, ...] = ()  # a composite's


# A plan remembers the parameters of at most this many distinct JSON keys (they come from
# clients: unknown ones are worked out each time past it).
_KEYS_REMEMBERED = 4096


class _Plan:
    """Which parameters of a type index which top-level elements, worked out once per
    parameter set (a type has 30–60 parameters; a resource has values for a few)."""

    __slots__ = ("always", "by_element", "by_key", "parameters")

    def __init__(self, resource_type: str, parameters: Mapping[str, SearchParameter]) -> None:
        self.parameters = parameters
        self.always: list[tuple[str, _Entry]] = []
        self.by_element: dict[str, list[tuple[str, _Entry]]] = {}
        self.by_key: dict[str, tuple[tuple[str, _Entry], ...]] = {}
        for code, param in parameters.items():
            if code in _ROW_PARAMETERS or code in ("_text", "_content") or \
                    param.expression is None or param.stored_as:
                continue  # stored_as: its values are in other parameters' rows
            table = "position" if param.positional else param.type
            if param.type == "composite":
                components = _components(param)
                if components is None:
                    continue  # a component unknown or not indexed: no documents
                entry = _Entry(param, table, None, None, components)
            elif table in _ROW_MAKERS:
                entry = _Entry(param, table, pairs_extractor(resource_type, param),
                               _ROW_MAKERS[table])
            else:
                continue  # a special parameter without positions: nothing to index
            elements = first_elements(param.expression)
            if elements is None:
                self.always.append((code, entry))
            for name in elements or ():
                self.by_element.setdefault(name, []).append((code, entry))

    def _for_key(self, key: str) -> tuple[tuple[str, _Entry], ...]:
        entries = self.by_key.get(key)
        if entries is None:
            entries = tuple(e for name in _element_names(key)
                            for e in self.by_element.get(name, ()))
            if len(self.by_key) < _KEYS_REMEMBERED:
                self.by_key[key] = entries
        return entries

    def applicable(self, resource: dict[str, Any]) -> dict[str, _Entry]:
        """The parameters that may select something in `resource`, by code."""
        found = dict(self.always)
        for key in resource:
            entries = self._for_key(key)
            if entries:
                found.update(entries)
        return found


# The plan of each type, rebuilt when the type's parameters change (a custom SearchParameter).
_plans: dict[str, _Plan] = {}


def _plan(resource_type: str) -> _Plan:
    parameters = parameters_for(resource_type)
    plan = _plans.get(resource_type)
    if plan is None or plan.parameters is not parameters:
        plan = _plans[resource_type] = _Plan(resource_type, parameters)
    return plan


def index_rows(resource: dict[str, Any]) -> IndexRows:
    rows = IndexRows()
    resource_type = resource["resourceType"]
    seen: dict[tuple[Any, ...], Any] = {}
    for code, entry in _plan(resource_type).applicable(resource).items():
        try:
            if entry.select is None:  # a composite
                rows.composite += [(code, d) for d in _composite_rows(
                    resource, entry.param, entry.components, seen)]
                continue
            pairs = entry.select(resource)
        except ExtractionError as exc:
            # A value the expression cannot evaluate on is not indexed, like a missing one.
            log.warning("%s.%s not indexed: %s", resource_type, code, exc)
            continue
        if pairs:
            getattr(rows, entry.table).extend(entry.rows(code, pairs))
    if rows.date:
        rows.date = with_spans(rows.date)
    narrative = (resource.get("text") or {}).get("div")
    if isinstance(narrative, str):
        rows.text.append(("_text", values.text_document(html.unescape(_TAGS.sub(" ", narrative)))))
    rows.text.append(("_content", values.content_document(resource)))
    return rows


def span_bucket(low: datetime, high: datetime) -> int:
    """The span's length class: a span of n seconds (rounded up) is in bucket
    bit_length(n) - 1, so a bucket-b span is shorter than 2**(b + 1) seconds."""
    seconds = math.ceil(abs((high - low).total_seconds()))
    return max(0, seconds.bit_length() - 1)


def with_spans(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Date rows `(code, low, high)` with the span of all the resource's values of that code
    appended (its earliest and latest bound, and `span_bucket`): every value of a code lies
    within its span, so a range search can start from spans near its window (one index range
    per bucket, see santong.search.query) whatever the values' number or order."""
    spans: dict[str, tuple[datetime, datetime]] = {}
    for code, low, high in rows:
        first, last = spans.get(code, (low, high))
        spans[code] = min(first, last, low, high), max(first, last, low, high)
    columns = {code: (*span, span_bucket(*span)) for code, span in spans.items()}
    return [(code, low, high, *columns[code]) for code, low, high in rows]


# The columns of each index table after rid and resource_type, with their SQL types.
TABLES: dict[str, tuple[str, ...]] = {
    "string": ("code text", "value text", "exact text"),
    "token": ("code text", "system text", "value text", "text text", "type_system text",
              "type_code text"),
    "reference": ("code text", "target_type text", "target_id text", "url text",
                  "identifier_system text", "identifier_value text"),
    "date": ("code text", "low timestamptz", "high timestamptz"),
    "number": ("code text", "value numeric", "low numeric", "high numeric"),
    "quantity": ("code text", "system text", "unit text", "value numeric", "low numeric",
                 "high numeric", "canonical_unit text", "canonical_value numeric"),
    "uri": ("code text", "value text"),
}


# Every index table with its columns after rid and resource_type (SQL types), as stored:
# date rows carry their code's span (see with_spans); composites are JSON documents.
STORED_TABLES: dict[str, tuple[str, ...]] = {
    **TABLES,
    "date": (*TABLES["date"], "span_low timestamptz", "span_high timestamptz",
             "span_bucket smallint"),
    "composite": ("code text", "components jsonb"),
    "text": ("code text", "document text"),
    "position": ("code text", "latitude float8", "longitude float8"),
}


def _column(table: str, name: str, sql_type: str, position: int) -> str:
    """Column `name` of a JSON row element `e` (the text document is analysed here)."""
    if table == "text" and name == "document":
        return f"to_tsvector('simple', e->>{position})"
    return f"e->>{position}" if sql_type == "text" else f"CAST(e->>{position} AS {sql_type})"


@lru_cache(maxsize=1024)
def index_ctes(tables: tuple[str, ...], delete: bool, rid_map: str | None = None) -> list[str]:
    """CTEs that (optionally) clear the rows of the resources in `:stale` and insert the given
    tables' rows, each table's rows one JSON parameter (see `index_params`).

    Rows travel as JSON, not as an array per column: asyncpg's array encoding cost about a
    tenth of a create's server CPU, and orjson writes the rows as they are.
    `rid_map`: the name of a CTE `(k, rid)` giving the rid of a resource written by the same
    statement, whose rows carry `-k` as their rid (storage composes it with its inserts).
    Built per combination of non-empty tables and cached, so each statement is prepared once
    per connection; new resources skip the deletes. Storage composes and runs the statement
    (santong.storage.repository, the transaction's flush).
    """
    parts = [f"d_{name} AS (DELETE FROM search_{name} WHERE rid = ANY(CAST(:stale AS bigint[])))"
             for name in STORED_TABLES] if delete else []
    for name in tables:
        columns = [c.split() for c in STORED_TABLES[name]]
        names = ", ".join(["rid", "resource_type", *(n for n, _ in columns)])
        values_ = ", ".join(_column(name, n, t, i) for i, (n, t) in enumerate(columns))
        rid, join = "CAST(g->>0 AS bigint)", ""
        if rid_map is not None:
            rid, join = f"coalesce(m.rid, {rid})", f" LEFT JOIN {rid_map} m ON m.k = -({rid})"
        parts.append(
            f"i_{name} AS (INSERT INTO search_{name} ({names})"
            f" SELECT {rid}, g->>1, {values_}"
            f" FROM jsonb_array_elements(CAST(:rows_{name} AS jsonb)) AS g"
            f" CROSS JOIN LATERAL jsonb_array_elements(g->2) AS e{join})"
        )
    return parts


def _json_default(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)  # exact: PostgreSQL reads the text as numeric
    raise TypeError(f"not an index value: {type(value).__name__}")


def index_params(resources: list[tuple[int, str, IndexRows]], stale: list[int]
                 ) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The non-empty tables and the parameters of `index_ctes` for these rows: per table a
    JSON array of `[rid, resource_type, [row, …]]` (datetimes in ISO 8601, decimals as
    strings), the rows as the index extracted them."""
    params: dict[str, Any] = {"stale": stale}
    tables = []
    for name in STORED_TABLES:
        groups = [(rid, resource_type, table_rows) for rid, resource_type, rows in resources
                  if (table_rows := getattr(rows, name))]
        if groups:
            tables.append(name)
            params[f"rows_{name}"] = orjson.dumps(groups, default=_json_default).decode()
    return tuple(tables), params
