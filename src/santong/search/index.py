"""Indexing at write time: every search parameter's values, in the write's own transaction.

http://hl7.org/fhir/R4/search.html — a resource is found by the values its SearchParameters'
expressions select. They are extracted when the resource is written and stored in one table
per parameter type (see migrations/versions/0002_search_indexes.py); a write replaces the rows
of the resource in a single statement, so an acknowledged write is searchable at once.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from santong.search import values
from santong.search.extract import extract
from santong.search.parameters import parameters_for

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


def index_rows(resource: dict[str, Any]) -> IndexRows:
    rows = IndexRows()
    resource_type = resource["resourceType"]
    for code, param in parameters_for(resource_type).items():
        if code in _ROW_PARAMETERS or param.type in ("special", "composite"):
            continue
        if code in ("_text", "_content"):
            continue
        for node in extract(resource, param):
            kind, value = node.type, node.value
            if param.type == "string":
                for found in values.string_values(kind, value):
                    rows.string.append((code, values.normalise(found), found))
            elif param.type == "token":
                for token in values.token_values(kind, value):
                    rows.token.append((code, *token))
            elif param.type == "reference":
                for reference in values.reference_values(kind, value):
                    rows.reference.append((code, *reference))
            elif param.type == "date":
                for low, high in values.date_values(kind, value):
                    rows.date.append((code, low, high))
            elif param.type == "number":
                for number in values.number_values(kind, value):
                    rows.number.append((code, *number))
            elif param.type == "quantity":
                for quantity in values.quantity_values(kind, value):
                    rows.quantity.append((code, *quantity))
            elif param.type == "uri":
                for uri in values.uri_values(kind, value):
                    rows.uri.append((code, uri))
    narrative = (resource.get("text") or {}).get("div")
    if isinstance(narrative, str):
        rows.text.append(("_text", values.text_document(html.unescape(_TAGS.sub(" ", narrative)))))
    content = " ".join(values.string_leaves(resource))
    rows.text.append(("_content", values.text_document(content)))
    return rows


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


_TABLES: dict[str, tuple[str, ...]] = {
    "string": ("code text", "value text", "exact text"),
    "token": ("code text", "system text", "value text", "text text", "type_system text",
              "type_code text"),
    "reference": ("code text", "target_type text", "target_id text", "url text",
                  "identifier_system text", "identifier_value text"),
    "date": ("code text", "low timestamptz", "high timestamptz"),
    "number": ("code text", "value numeric", "low numeric", "high numeric"),
    "quantity": ("code text", "system text", "unit text", "value numeric", "low numeric",
                 "high numeric"),
    "uri": ("code text", "value text"),
}


def _replace_statement() -> str:
    parts = [f"d_{name} AS (DELETE FROM search_{name} WHERE rid = :rid)"
             for name in (*_TABLES, "text", "composite")]
    for name, columns in _TABLES.items():
        names = [c.split()[0] for c in columns]
        unnests = ", ".join(f"CAST(:{name}_{n} AS {t}[])"
                            for n, t in (c.split() for c in columns))
        parts.append(
            f"i_{name} AS (INSERT INTO search_{name} (rid, resource_type, {', '.join(names)})"
            f" SELECT :rid, :resource_type, * FROM unnest({unnests}))"
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
    for name, columns in (*_TABLES.items(), ("text", ("code", "document"))):
        for column_name, column in zip(columns, _columns(getattr(rows, name), len(columns)),
                                       strict=True):
            params[f"{name}_{column_name.split()[0]}"] = column
    await connection.execute(_REPLACE, params)
