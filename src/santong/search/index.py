"""Indexing at write time: every search parameter's values, in the write's own transaction.

http://hl7.org/fhir/R4/search.html — a resource is found by the values its SearchParameters'
expressions select. They are extracted when the resource is written and stored in one table
per parameter type (see migrations/versions/0002_search_indexes.py); a write replaces the rows
of the resource in a single statement, so an acknowledged write is searchable at once.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import text

from santong.search import values
from santong.search.extract import ExtractionError, Node, extract, extract_composite
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


def typed_rows(param_type: str, nodes: list[Node]) -> list[tuple[Any, ...]]:
    """Index rows (without the code) for the values one parameter of `param_type` selects."""
    rows: list[tuple[Any, ...]] = []
    for node in nodes:
        kind, value = node.type, node.value
        if param_type == "string":
            rows += [(values.normalise(s), s) for s in values.string_values(kind, value)]
        elif param_type == "token":
            rows += values.token_values(kind, value)
        elif param_type == "reference":
            rows += values.reference_values(kind, value)
        elif param_type == "date":
            rows += values.date_values(kind, value)
        elif param_type == "number":
            rows += values.number_values(kind, value)
        elif param_type == "quantity":
            rows += values.quantity_values(kind, value)
        elif param_type == "uri":
            rows += [(u,) for u in values.uri_values(kind, value)]
    return rows


def _composite_rows(resource: dict[str, Any], param: SearchParameter) -> list[str]:
    """One JSON document per composite value: each component's index rows, by column name."""
    documents = []
    components = [by_url(url) for url, _ in param.components]
    for _, parts in extract_composite(resource, param):
        document = []
        for component, nodes in zip(components, parts, strict=True):
            if component is None or component.type not in TABLES:
                break
            names = [c.split()[0] for c in TABLES[component.type][1:]]
            rows = typed_rows(component.type, nodes)
            if not rows:
                break
            document.append([dict(zip(names, map(_json_value, row), strict=True))
                             for row in rows])
        else:
            documents.append(orjson.dumps(document).decode())
    return documents


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def index_rows(resource: dict[str, Any]) -> IndexRows:
    rows = IndexRows()
    resource_type = resource["resourceType"]
    for code, param in parameters_for(resource_type).items():
        if code in _ROW_PARAMETERS or code in ("_text", "_content") or param.type == "special":
            continue
        if param.type == "composite":
            try:
                rows.composite += [(code, d) for d in _composite_rows(resource, param)]
            except ExtractionError as exc:
                log.warning("%s.%s not indexed: %s", resource_type, code, exc)
            continue
        try:
            nodes = extract(resource, param)
        except ExtractionError as exc:
            # A value the expression cannot evaluate on is not indexed, like a missing one.
            log.warning("%s.%s not indexed: %s", resource_type, code, exc)
            continue
        table: list[tuple[Any, ...]] = getattr(rows, param.type)
        table += [(code, *row) for row in typed_rows(param.type, nodes)]
    narrative = (resource.get("text") or {}).get("div")
    if isinstance(narrative, str):
        rows.text.append(("_text", values.text_document(html.unescape(_TAGS.sub(" ", narrative)))))
    content = " ".join(values.string_leaves(resource))
    rows.text.append(("_content", values.text_document(content)))
    return rows


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


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


def _replace_statement() -> str:
    parts = [f"d_{name} AS (DELETE FROM search_{name} WHERE rid = :rid)"
             for name in (*TABLES, "text", "composite")]
    for name, columns in TABLES.items():
        names = [c.split()[0] for c in columns]
        unnests = ", ".join(f"CAST(:{name}_{n} AS {t}[])"
                            for n, t in (c.split() for c in columns))
        parts.append(
            f"i_{name} AS (INSERT INTO search_{name} (rid, resource_type, {', '.join(names)})"
            f" SELECT :rid, :resource_type, * FROM unnest({unnests}))"
        )
    parts.append(
        "i_composite AS (INSERT INTO search_composite (rid, resource_type, code, components)"
        " SELECT :rid, :resource_type, t.code, CAST(t.components AS jsonb)"
        " FROM unnest(CAST(:composite_code AS text[]), CAST(:composite_components AS text[]))"
        " AS t(code, components))"
    )
    parts.append(
        "i_text AS (INSERT INTO search_text (rid, resource_type, code, document)"
        " SELECT :rid, :resource_type, t.code, to_tsvector('simple', t.document)"
        " FROM unnest(CAST(:text_code AS text[]), CAST(:text_document AS text[]))"
        " AS t(code, document))"
    )
    return "WITH " + ", ".join(parts) + " SELECT 1"


_REPLACE = text(_replace_statement())


async def replace_index(connection: Any, rid: int, resource_type: str,
                        rows: IndexRows | None) -> None:
    """Make the index rows of resource `rid` exactly `rows` (None: a deletion, no rows)."""
    rows = rows or IndexRows()
    params: dict[str, Any] = {"rid": rid, "resource_type": resource_type}
    for name, columns in (*TABLES.items(), ("text", ("code", "document")),
                          ("composite", ("code", "components"))):
        for column_name, column in zip(columns, _columns(getattr(rows, name), len(columns)),
                                       strict=True):
            params[f"{name}_{column_name.split()[0]}"] = column
    await connection.execute(_REPLACE, params)
