"""Compiling search criteria to SQL conditions over the `resource` row `r`.

http://hl7.org/fhir/R4/search.html — `_id` (http://hl7.org/fhir/R4/search.html#id) and the
token parameter `identifier` (http://hl7.org/fhir/R4/search.html#token). `identifier` is
matched inside the stored JSON for now; the search issue brings indexed parameters.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from santong import definitions
from santong.fhir.outcome import error

# Parameters that shape the result rather than select resources.
RESULT_PARAMETERS = frozenset(
    {"_count", "_summary", "_elements", "_format", "_pretty", "_cursor", "_total"}
)
SUPPORTED_PARAMETERS = ("_id", "identifier")


@dataclass
class Criteria:
    where: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def supports_identifier(resource_type: str) -> bool:
    return "identifier" in definitions.element_names(resource_type)


def _split_values(value: str) -> list[str]:
    """Comma-separated alternatives; `\\,` is a literal comma (search.html#escaping)."""
    values, current, chars = [], [], iter(value)
    for char in chars:
        if char == "\\":
            current.append(next(chars, "\\"))
        elif char == ",":
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    values.append("".join(current))
    return values


def _identifier_condition(token: str, names: Iterable[str]) -> tuple[str, dict[str, Any]]:
    name = next(iter(names))
    if "|" not in token:
        return f"r.content::jsonb @> CAST(:{name} AS jsonb)", {
            name: orjson.dumps({"identifier": [{"value": token}]}).decode()
        }
    system, _, value = token.partition("|")
    if not system:
        # "|value": an identifier with this value and no system.
        return (
            f"jsonb_path_exists(r.content::jsonb, '$.identifier[*] ? (@.value == $v"
            f" && !exists(@.system))', jsonb_build_object('v', CAST(:{name} AS text)))",
            {name: value},
        )
    wanted: dict[str, str] = {"system": system}
    if value:
        wanted["value"] = value
    return f"r.content::jsonb @> CAST(:{name} AS jsonb)", {
        name: orjson.dumps({"identifier": [wanted]}).decode()
    }


def compile_criteria(
    resource_type: str, params: Iterable[tuple[str, str]], *, strict: bool
) -> Criteria:
    """SQL conditions for `params`; unsupported ones raise 400 if `strict`, else are ignored."""
    criteria = Criteria()
    counter = itertools.count()
    for key, value in params:
        name, _, modifier = key.partition(":")
        if key in RESULT_PARAMETERS:
            continue
        supported = name == "_id" or (name == "identifier" and supports_identifier(resource_type))
        if not supported or modifier:
            if strict:
                raise error(
                    400, "not-supported",
                    f"Search parameter {key!r} is not supported for {resource_type}: "
                    f"supported are {', '.join(SUPPORTED_PARAMETERS)}",
                    expression=key,
                )
            criteria.ignored.append(key)
            continue
        values = [v for v in _split_values(value) if v]
        if not values:
            raise error(400, "invalid", f"Search parameter {key!r} has no value", expression=key)
        if name == "_id":
            bind = f"p{next(counter)}"
            criteria.where.append((f"r.id = ANY(:{bind})", {bind: values}))
        else:
            parts = [_identifier_condition(v, [f"p{next(counter)}"]) for v in values]
            sql = " OR ".join(p[0] for p in parts)
            binds = {k: v for p in parts for k, v in p[1].items()}
            criteria.where.append((sql, binds))
        criteria.applied.append((key, value))
    return criteria


def parse_conditional(query: str) -> list[tuple[str, str]]:
    """The parameters of an If-None-Exist header or a conditional URL's query."""
    query = query.split("?", 1)[1] if "?" in query else query
    try:
        return parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise error(400, "invalid", f"Malformed search criteria {query!r}") from None
