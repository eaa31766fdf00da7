"""Running a search: matches in a stable order, keyset pages, totals, `_include`/`_revinclude`.

http://hl7.org/fhir/R4/search.html#sort, #count, #total, #include, #revinclude. Pages are cut
by a keyset cursor over the sort keys and the resource's (type, rid), never by OFFSET, so a
`next` link costs the same on page 1,000 as on page 1 and stays valid while data changes.
Without `_sort`, resources come in the order they were created (rid; HAPI FHIR's default too).
"""

from __future__ import annotations

import base64
import itertools
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import text

from santong import definitions
from santong.fhir.outcome import error
from santong.search import terminology
from santong.search.index import json_value
from santong.search.parameters import get, parameters_for
from santong.search.query import (
    ORDERED_VALUES,
    Compiled,
    Compiler,
    Probe,
    opaque,
    split_values,
)
from santong.storage.repository import Connection, StoredVersion

_SORT_SOURCES = {
    "string": ("search_string", "value", "text"),
    "token": ("search_token", "value", "text"),
    "reference": ("search_reference", "target_id", "text"),
    "uri": ("search_uri", "value", "text"),
    "date": ("search_date", None, "timestamptz"),
    "number": ("search_number", "value", "numeric"),
    "quantity": ("search_quantity", "value", "numeric"),
}


@dataclass
class SearchSpec:
    types: list[str]
    params: list[tuple[str, str]]
    strict: bool = False
    base_url: str = ""
    count: int = 20
    cursor: str | None = None
    sort: list[str] = field(default_factory=list)
    total: str | None = None  # none | estimate | accurate
    includes: list[tuple[str, bool]] = field(default_factory=list)  # (value, iterate)
    revincludes: list[tuple[str, bool]] = field(default_factory=list)
    compartment: tuple[str, str] | None = None  # (compartment type, id)
    max_includes: int = 1000
    # What the caller may see: RequestContext.search_filter (None until authorisation lands).
    access: Callable[[str], tuple[str, dict[str, Any]] | None] | None = None


@dataclass
class SearchResult:
    matches: list[StoredVersion]
    included: list[StoredVersion]
    next_cursor: str | None
    total: int | None
    applied: list[tuple[str, str]]
    ignored: list[str]
    sql: str = ""
    binds: dict[str, Any] = field(default_factory=dict)
    previous_cursor: str | None = None


@dataclass
class _SortKey:
    sql: str
    descending: bool
    cast: str
    nullable: bool = True


def _sort_keys(spec: SearchSpec, compiler: Compiler) -> list[_SortKey]:
    keys: list[_SortKey] = []
    for item in spec.sort:
        for name in (n.strip() for n in item.split(",")):
            if not name:
                continue
            descending = name.startswith("-")
            code = name.lstrip("-")
            if code == "_id":
                keys.append(_SortKey("r.id", descending, "text", nullable=False))
                continue
            if code == "_lastUpdated":
                keys.append(_SortKey("r.last_updated", descending, "timestamptz",
                                     nullable=False))
                continue
            params = [get(t, code) for t in spec.types]
            param = next((p for p in params if p is not None), None)
            if param is None or param.type not in _SORT_SOURCES:
                raise error(400, "invalid", f"Cannot sort by {code!r}", expression="_sort")
            table, column, cast = _SORT_SOURCES[param.type]
            aggregate = "max" if descending else "min"
            if column is None:  # dates: the start when ascending, the end when descending
                column = "high" if descending else "low"
            # Rows under the parameter's own code belong to types that have it. A shared
            # parameter's rows are under its holders' codes (CapabilityStatement `version` under
            # `fhirversion`), which a type without the parameter may have rows of (Condition
            # `code` for Observation `combo-code`): each type is then tested for its own codes.
            codes = {t: p.index_codes for t, p in zip(spec.types, params, strict=True) if p}
            if all(c == (code,) for c in codes.values()):
                code_test = compiler.code_is("s.code", code)
            else:
                code_test = "(" + " OR ".join(
                    f"(r.resource_type = {compiler.bind(t)} AND {compiler.code_is('s.code', c)})"
                    for t, c in codes.items()) + ")"
            keys.append(_SortKey(
                f"(SELECT {aggregate}(s.{column}) FROM {table} s WHERE s.rid = r.rid"
                f" AND {code_test})", descending, cast))
    # Missing values sort last in either direction; (type, rid) makes the order total: the
    # order of creation, which string indexes keep too (Probe.ordered). Row columns are never
    # missing: sorted by the column alone, an index can give the order.
    expanded: list[_SortKey] = []
    for key in keys:
        if key.nullable:
            expanded.append(_SortKey(f"({key.sql} IS NULL)", False, "boolean"))
        expanded.append(key)
    expanded += [_SortKey("r.resource_type", False, "text"),
                 _SortKey("r.rid", False, "bigint", nullable=False)]
    return expanded


def _encode_cursor(values: Sequence[Any], backwards: bool = False) -> str:
    """The sort-key values of a page's edge row; `backwards` for a `previous` link."""
    document = {"b" if backwards else "a": [json_value(v) for v in values]}
    return base64.urlsafe_b64encode(orjson.dumps(document)).decode()


def _decode_cursor(cursor: str, width: int) -> tuple[list[Any], bool]:
    """(sort-key values, backwards?) of a cursor."""
    try:
        document = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, orjson.JSONDecodeError):
        document = None
    values = document.get("a", document.get("b")) if isinstance(document, dict) else None
    if not isinstance(values, list) or len(values) != width:
        raise error(400, "invalid", "Malformed or outdated _cursor: start again from the first "
                    "page", expression="_cursor")
    return values, "b" in document


def _keyset_condition(keys: list[_SortKey], cursor: list[Any], compiler: Compiler) -> str:
    """Rows after the cursor in the sort order: (k1 > v1) OR (k1 = v1 AND k2 > v2) OR …"""
    ors = []
    for position, key in enumerate(keys):
        equal = [f"{k.sql} IS NOT DISTINCT FROM CAST({compiler.bind(_raw(v, k))} AS {k.cast})"
                 for k, v in zip(keys[:position], cursor[:position], strict=True)]
        operator = "<" if key.descending else ">"
        value = cursor[position]
        if value is None:
            continue  # nothing sorts after a missing value within its tie
        equal.append(f"{key.sql} {operator} CAST({compiler.bind(_raw(value, key))}"
                     f" AS {key.cast})")
        ors.append("(" + " AND ".join(equal) + ")")
    return "(" + " OR ".join(ors) + ")" if ors else "false"


def _raw(value: Any, key: _SortKey) -> Any:
    """A cursor value back in the Python type asyncpg expects for the key's SQL type."""
    if value is None:
        return None
    try:
        if key.cast == "boolean":
            return bool(value)
        if key.cast == "timestamptz":
            return datetime.fromisoformat(value)
        if key.cast == "numeric":
            return Decimal(value)
        if key.cast == "bigint":
            if isinstance(value, bool) or not isinstance(value, int) or not -2**63 <= value < 2**63:
                raise ValueError(value)
            return value
    except (ValueError, TypeError, ArithmeticError):
        raise error(400, "invalid", "Malformed or outdated _cursor: start again from the first "
                    "page", expression="_cursor") from None
    return str(value)


def _compartment_condition(spec: SearchSpec, resource_type: str, compiler: Compiler) -> str:
    assert spec.compartment is not None
    compartment_type, compartment_id = spec.compartment
    members = definitions.compartment(compartment_type)
    codes = members.get(resource_type)
    if codes is None:
        raise error(400, "invalid", f"{resource_type} is not in the {compartment_type} "
                    "compartment")
    ors = []
    real = [c for c in codes if c != "{def}"]
    if real:
        ors.append(
            "EXISTS (SELECT 1 FROM search_reference cx WHERE cx.rid = r.rid"
            f" AND cx.resource_type = r.resource_type AND cx.code = ANY({compiler.bind(real)})"
            f" AND cx.target_type = {compiler.bind(compartment_type)}"
            f" AND cx.target_id = {compiler.bind(compartment_id)})")
    if resource_type == compartment_type:
        ors.append(f"r.id = {compiler.bind(compartment_id)}")
    return " OR ".join(ors) if ors else "false"


def compile_where(spec: SearchSpec, compiler: Compiler) -> tuple[str, Compiled]:
    """The WHERE clause over `resource r` for the spec's types, parameters and compartment."""
    per_type = []
    compiled = Compiled()
    for position, resource_type in enumerate(spec.types):
        compiled_type = compiler.compile(resource_type, spec.params, strict=spec.strict)
        if position == 0:
            compiled = compiled_type
        conditions = [f"r.resource_type = {compiler.bind(resource_type)}", *compiled_type.where]
        if spec.compartment is not None:
            conditions.append(f"({_compartment_condition(spec, resource_type, compiler)})")
        limit = spec.access(resource_type) if spec.access else None
        if limit is not None:
            sql, binds = limit
            conditions.append(sql)
            compiler.binds.update(binds)
        per_type.append(" AND ".join(f"({c})" for c in conditions))
    where = " OR ".join(f"({c})" for c in per_type) if len(per_type) > 1 else per_type[0]
    if spec.compartment is not None:
        where = f"({where}) AND r.rid = ANY(ARRAY({_compartment_rids(spec, compiler)}))"
    return f"({where}) AND NOT r.deleted", compiled


def _compartment_rids(spec: SearchSpec, compiler: Compiler) -> str:
    """Every resource that may be in the compartment, from the references pointing at it.

    The per-type conditions say exactly who is in; this lets PostgreSQL start from the few
    rows pointing at the compartment's resource (an index scan) instead of testing every
    resource of every member type (`Patient/1/*` spans sixty-odd types).
    """
    assert spec.compartment is not None
    compartment_type, compartment_id = spec.compartment
    members = definitions.compartment(compartment_type)
    codes = sorted({c for t in spec.types for c in members.get(t, ()) if c != "{def}"})
    own_type, own_id = compiler.bind(compartment_type), compiler.bind(compartment_id)
    return (f"SELECT cx.rid FROM search_reference cx WHERE cx.target_type = {own_type}"
            f" AND cx.target_id = {own_id} AND cx.code = ANY({compiler.bind(codes)})"
            f" UNION ALL SELECT own.rid FROM resource own WHERE own.resource_type = {own_type}"
            f" AND own.id = {own_id}")


async def search(connection: Connection, spec: SearchSpec) -> SearchResult:
    compiler = Compiler(spec.base_url, await terminology.resolve(connection, spec.params,
                                                                 spec.types))
    where, compiled = compile_where(spec, compiler)
    custom = compiler.custom_plans  # planned for its values each time (Compiler.custom_plans)
    planned = custom or compiler.string_ranges  # the search's own statements: see both flags
    if len(spec.types) == 1:  # narrowings are of one type's resources
        where += await _narrowed(connection, compiler.narrowings, compiler.binds)
    keys = _sort_keys(spec, compiler)
    total: int | None = None
    if spec.total == "accurate":
        count = f"SELECT count(*) FROM resource r WHERE {where}"
        counted = await connection.execute(count, compiler.binds, custom_plan=planned)
        total = int(counted.scalar_one())
    elif spec.total == "estimate":
        plan = f"EXPLAIN (FORMAT JSON) SELECT 1 FROM resource r WHERE {where}"
        explained = (await connection.execute(plan, compiler.binds,
                                              custom_plan=custom)).scalar_one()
        document = orjson.loads(explained) if isinstance(explained, str) else explained
        total = int(document[0]["Plan"]["Plan Rows"])
    page_where, backwards, cursor = where, False, None
    if spec.cursor:
        cursor, backwards = _decode_cursor(spec.cursor, len(keys))
        # A previous page is the next page of the reversed order, read back to front.
        order_keys = [_SortKey(k.sql, k.descending != backwards, k.cast) for k in keys]
        page_where += " AND " + _keyset_condition(order_keys, cursor, compiler)
    else:
        order_keys = keys
    order = ", ".join(f"{k.sql} {'DESC' if k.descending else 'ASC'}" for k in order_keys)
    columns = ", ".join(f"{k.sql} AS k{n}" for n, k in enumerate(keys))
    select = (f"SELECT r.resource_type, r.id, r.version_id, r.last_updated,"
              f" convert_to(r.content, 'UTF8'), r.rid,"
              f" {columns} FROM")
    # The page's keys first, its rows by rid after: a plan that walks the type's rids then
    # reads an index alone ((resource_type, rid) INCLUDE (id, deleted)) instead of each
    # walked resource's row (an Encounter date month at 10,000 patients, all in shared
    # buffers: 7.8 -> 3.2 ms under EXPLAIN ANALYZE). Such walks are also why the server's
    # connections start no parallel workers (storage.database).
    outer_order = ", ".join(f"k.k{n} {'DESC' if k.descending else 'ASC'}"
                            for n, k in enumerate(order_keys))
    sql = ("SELECT f.resource_type, f.id, f.version_id, f.last_updated,"
           " convert_to(f.content, 'UTF8'), f.rid, "
           + ", ".join(f"k.k{n}" for n in range(len(keys)))
           + f" FROM (SELECT r.rid, {columns} FROM resource r WHERE {page_where}"
           f" ORDER BY {order} LIMIT {int(spec.count) + 1}) k JOIN resource f ON f.rid = k.rid"
           f" ORDER BY {outer_order}")
    rows: list[Any] = []
    found = False  # whether `rows` is the page already
    in_order = bool(compiler.probes) and (len(spec.types) == 1 and spec.compartment is None
                and not spec.sort and not backwards and spec.count > 0)
    if in_order and len(compiler.probes) == len(compiled.applied) == 1:
        probe = compiler.probes[0]
        # The probe must be the whole condition, not part of one (`name` widened to pinyin).
        if probe.ordered is not None and compiled.where == [probe.condition]:
            found, rows, ordered_sql = await _in_rid_order(
                connection, compiler, probe, page_where.replace(probe.condition, "true"),
                select, order, cursor, spec.count)
            if found:
                sql = ordered_sql
    if in_order and not found:
        # One type, so the default order (type, rid) is its rids' order and the cursor's rid
        # is where the walk starts. `IS TRUE` keeps the conditions tests of each row:
        # PostgreSQL would otherwise join them, reading every match first.
        after = "" if cursor is None else f" AND w.rid >= {compiler.bind(cursor[-1])}"
        dense_rows = _dense_rows(await _type_rows(connection, spec.types[0]))
        counts = [None if probe.matches is None else await _matches_up_to(
            connection, probe.matches, dense_rows * _CROWDED, compiler.binds, custom)
            for probe in compiler.probes]
        walk_where = page_where
        for probe, matches in zip(compiler.probes, counts, strict=True):
            crowded = matches is not None and matches >= dense_rows * _CROWDED
            walk_where = walk_where.replace(probe.condition, probe.looked_up if crowded
                                            and probe.looked_up is not None else probe.per_row)

        # Tests that need only the key's columns walk that index alone (migration 0013),
        # and the page's rows are fetched by rid afterwards.
        slim = set(_ROW_COLUMN.findall(walk_where)) <= _KEY_COLUMNS

        def walk(rows: int) -> str:
            return (f"(SELECT {_WALKED if slim else '*'} FROM resource w WHERE w.resource_type"
                    f" = {compiler.bind(spec.types[0])} AND NOT w.deleted{after} ORDER BY w.rid"
                    f" LIMIT {rows}) r WHERE ({walk_where}) IS TRUE")

        others = len(compiled.applied) > len(compiler.probes)  # conditions besides probes
        if await _dense(connection, counts, dense_rows, compiler.binds, walk(_SAMPLE_ROWS),
                        others, custom):
            limit = f"ORDER BY r.rid LIMIT {int(spec.count) + 1}"
            walk_sql = (f"{select} {walk(_WALK_ROWS)} {limit}" if not slim else
                        f"{select} (SELECT f.* FROM (SELECT r.rid FROM {walk(_WALK_ROWS)} {limit})"
                        f" r JOIN resource f ON f.rid = r.rid) r ORDER BY r.rid")
            rows = list(await connection.execute(walk_sql, compiler.binds, custom_plan=custom))
            if len(rows) > spec.count:  # a full page and one more: exactly what it finds
                found, sql = True, walk_sql
            else:  # the matches are sparser than they seemed: the index-driven plan after all
                rows = []
    if not found:
        rows = list(await connection.execute(sql, compiler.binds, custom_plan=planned))
    page, more = rows[:spec.count], len(rows) > spec.count
    if backwards:
        page.reverse()
    matches = [StoredVersion(r[0], r[1], r[2], r[3], False, r[4], rid=r[5]) for r in page]
    # Forwards, there is a next page when the query found more, and a previous one whenever
    # this page is not the first; backwards, the other way round.
    has_next = bool(page) and (backwards or more)
    has_previous = bool(page) and spec.cursor is not None and (more or not backwards)
    next_cursor = _encode_cursor(list(page[-1][6:])) if has_next else None
    previous_cursor = _encode_cursor(list(page[0][6:]), backwards=True) if has_previous else None
    included = await _includes(connection, spec, matches)
    return SearchResult(matches, included, next_cursor, total, compiled.applied,
                        compiled.ignored, sql, dict(compiler.binds), previous_cursor)


async def _in_rid_order(connection: Connection, compiler: Compiler, probe: Probe, where: str,
                        select: str, order: str, cursor: list[Any] | None, count: int
                        ) -> tuple[bool, list[Any], str]:
    """A page of a search whose one condition is a string prefix, from the probe's matches in
    rid order (Probe.ordered): (whether it is the page, its rows, the SQL). `where` is the
    search's WHERE with the probe's condition taken out (its matches are the candidates).

    The first count + 1 matches after the cursor are the page's candidates; the page is those
    of them `where` keeps (deleted resources, an access filter). When the probe listed them
    all, or `where` kept every one, that is exact; otherwise (or when the prefix has too many
    distinct values) the search goes on as if this had not been tried. One statement: each
    round trip costs the server more than PostgreSQL spends on the page. A prefix found to
    have too many values is not tried again for a while (kept as the probes' counts are):
    `name=a` among Latin names would otherwise enumerate 64 names before every walk."""
    assert probe.ordered is not None and probe.matches is not None
    crowded = "values:" + _probe_key(probe.matches, compiler.binds) if probe.crowds else ""
    known = _matches_cache.get(crowded) if crowded else None
    if known is not None and known[0] > time.monotonic():
        return False, [], ""
    ctes, listing = probe.ordered(None if cursor is None else compiler.bind(cursor[-1]),
                                  compiler.bind(count + 1))
    sql = (f"{ctes + ',' if ctes else 'WITH'} prefix_page AS MATERIALIZED ({listing})"
           " SELECT c.values_seen,"
           f" cardinality(c.rids), p.* FROM prefix_page c LEFT JOIN LATERAL ({select} resource r"
           f" WHERE r.rid = ANY(c.rids) AND {where} ORDER BY {order} LIMIT {count + 1}) p"
           " ON true")
    found = list(await connection.execute(sql, compiler.binds))
    values_seen, candidates = found[0][0], found[0][1]
    rows = [tuple(row)[2:] for row in found if row[2] is not None]
    if values_seen >= ORDERED_VALUES and crowded:
        _remember(crowded, values_seen)
    if values_seen >= ORDERED_VALUES or (candidates > count and len(rows) <= count):
        return False, [], ""
    return True, rows, sql


# A page of a dense match is found by walking the type's resources in rid order (the default
# sort) and testing each, for at most _WALK_ROWS of them: then a first page costs about
# count / density rows, not a fetch and sort of every match. PostgreSQL cannot choose that
# plan itself when it underestimates the matches, and must not be offered it when they are
# few (it would walk every resource). Dense means: a string match with at least
# _dense_rows(N) index rows among N resources of the type, or a `_has` whose search matches
# _SAMPLE_MATCHES of the first _SAMPLE_ROWS walked (one resource in fifty or more; then
# walking costs about 12 µs a row, against some 25 µs for each match the index-driven plan
# reads). A string match with other conditions (`family=王&identifier=…`) must pass the
# sample too: the walk tests all of them.
# The walk's index's columns ((resource_type, rid) INCLUDE (id, deleted), migration 0013).
_KEY_COLUMNS = frozenset({"resource_type", "id", "rid", "deleted"})
_WALKED = "w.resource_type, w.id, w.rid, w.deleted"
_ROW_COLUMN = re.compile(r"\br\.(\w+)")
_WALK_ROWS = 10000
_SAMPLE_ROWS = 100
_SAMPLE_MATCHES = 2


def _dense_rows(type_rows: int) -> int:
    """How many index rows make a string match dense among `type_rows` resources.

    The walk reads about count × N / m ids to find a page of m matches among N; the
    index-driven plan fetches and sorts all m (3–9 µs each), so they cost the same near
    m ≈ √N. Family names timed both ways: even at about 100 matches among 12,900 Patients,
    about 530 among 214,600. In tens, so the count's SQL changes rarely as data grows.
    """
    return max(50, int(round(1.1 * math.sqrt(max(type_rows, 0)), -1)))


# The type's live resources as the planner's statistics estimate them (the row count of
# `resource` times the type's share among its most common values), when they know the type.
_TYPE_ROWS_ESTIMATE = text(
    "SELECT CAST(c.reltuples * m.share AS bigint) FROM pg_class c JOIN pg_stats s"
    " ON s.schemaname = current_schema() AND s.tablename = c.relname"
    " CROSS JOIN unnest(CAST(CAST(s.most_common_vals AS text) AS text[]), s.most_common_freqs)"
    " AS m(value, share)"
    " WHERE c.oid = CAST('resource' AS regclass) AND s.attname = 'resource_type'"
    " AND c.reltuples > 0 AND m.value = :t"
)
_TYPE_ROWS_COUNTED = 250_000  # a type the statistics do not list is counted, this far
_TYPE_ROWS_SECONDS = 300.0  # an estimate is kept this long (it only chooses between plans)
_type_rows_cache: dict[str, tuple[float, int]] = {}


async def _type_rows(connection: Connection, resource_type: str) -> int:
    """About how many resources of the type there are (cached per process for a while)."""
    cached = _type_rows_cache.get(resource_type)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    estimate = (await connection.execute(_TYPE_ROWS_ESTIMATE, {"t": resource_type})).first()
    if estimate is not None and estimate[0] is not None:
        rows = int(estimate[0])
    else:
        rows = await _count_up_to(
            connection, "SELECT 1 FROM resource r WHERE r.resource_type = :_type_rows_t"
            " AND NOT r.deleted", _TYPE_ROWS_COUNTED, {"_type_rows_t": resource_type})
    _type_rows_cache[resource_type] = (time.monotonic() + _TYPE_ROWS_SECONDS, rows)
    return rows


# A narrowing (Compiler.narrowings) listing fewer rids than this becomes the search's
# starting point: fetching them costs less than any walk, and a bounded amount whatever else
# the search asks. One listing more leaves the plan to PostgreSQL: a wide date range with a
# selective condition (`subject=…&date=ge2024&date=lt2025`) is found from the condition.
_NARROW_ROWS = 500


async def _narrowed(connection: Connection, narrowings: list[str],
                    binds: dict[str, Any]) -> str:
    """Conditions to add to the WHERE: `r.rid = ANY(…)` for each narrowing that lists few.
    Counted as probes' matches are, kept a while per process (_matches_up_to): a count only
    chooses the plan, and the same windows (this month, a report's period) come again and
    again. A window that has since filled past the limit is fetched whole until it expires."""
    added = ""
    for rids in narrowings:
        if await _matches_up_to(connection, rids, _NARROW_ROWS, binds, False) < _NARROW_ROWS:
            added += f" AND r.rid = ANY(ARRAY({rids}))"
    return added


# Probes' and narrowings' match counts, per process for a while (as _type_rows_cache): they
# only choose how a page is found, never what it holds, and the same common names and date
# windows are searched over and over.
_MATCHES_SECONDS = 300.0
_MATCHES_KEPT = 10_000
_matches_cache: dict[str, tuple[float, int]] = {}
_BIND_NAME = re.compile(r":(b\d+)\b")
_ALIAS = re.compile(r"\b(x)\d+\b")


@lru_cache(maxsize=1024)
def _key_template(matches: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`matches` with its aliases unnumbered, split at its bind names: the text around them
    and the names (worked out once per query shape: the regexes were 2-3 % of a name
    search's server CPU)."""
    parts = _BIND_NAME.split(_ALIAS.sub(r"\1", matches))
    return tuple(parts[0::2]), tuple(parts[1::2])


def _probe_key(matches: str, binds: dict[str, Any]) -> str:
    """A probe's `matches` with its values written in: the same for the same search. The
    aliases are unnumbered before the values go in, which are kept as they are."""
    texts, names = _key_template(matches)
    key = [texts[0]]
    for name, after in zip(names, texts[1:], strict=True):
        key += (repr(binds[name]), after)
    return "".join(key)


def _remember(key: str, count: int) -> None:
    if len(_matches_cache) >= _MATCHES_KEPT:
        _matches_cache.clear()
    _matches_cache[key] = (time.monotonic() + _MATCHES_SECONDS, count)


async def _matches_up_to(connection: Connection, matches: str, limit: int,
                         binds: dict[str, Any], custom_plan: bool) -> int:
    """How many index rows a probe's `matches` lists, counted no further than `limit`."""
    key = f"{limit}:{_probe_key(matches, binds)}"
    cached = _matches_cache.get(key)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    counted = await _count_up_to(connection, matches, limit, binds, custom_plan)
    _remember(key, counted)
    return counted


async def _count_up_to(connection: Connection, rows: str, limit: int, binds: dict[str, Any],
                       custom_plan: bool = False) -> int:
    """How many rows the query `rows` gives, counted no further than `limit`."""
    count = f"SELECT count(*) FROM ({rows} LIMIT {limit}) n"
    return int((await connection.execute(count, binds, custom_plan=custom_plan)).scalar_one())


# Matches from _CROWDED × _dense_rows(N) (about 11·√N) on are walked with an index lookup per
# row (Probe.looked_up) instead of one hash of them all: reading a match costs about 0.45 µs,
# a lookup 2.5 µs, so a lookup per row of the count × N / m walked wins when m² > 116 · N.
# A family name shared by one patient in eleven among 92,000: 0.5 ms against 4.2 ms; one in
# forty (near the limit): 1.7 ms against 1.4 ms.
_CROWDED = 10


async def _dense(connection: Connection, counts: list[int | None], dense_rows: int,
                 binds: dict[str, Any], sample: str, others: bool, custom_plan: bool) -> bool:
    """Whether the search's matches are dense enough to walk ids for (see above): `counts`
    are the probes' matches (_matches_up_to; None for a probe that cannot count them),
    `dense_rows` from _dense_rows, `sample` the walk's first rows, `others` whether
    conditions other than the probes apply; `custom_plan` as for Connection.execute."""
    counted = any(matches is not None and matches >= dense_rows for matches in counts)
    if counted and not others:
        return True
    if not counted and None not in counts:
        return False
    found = await connection.execute(f"SELECT count(*) FROM {sample}", binds,
                                     custom_plan=custom_plan)
    return int(found.scalar_one()) >= _SAMPLE_MATCHES


def _include_targets(value: str, key: str) -> tuple[str, str | None, str | None]:
    parts = value.split(":")
    if value == "*":
        return "*", None, None
    if len(parts) not in (2, 3) or not definitions.is_resource_type(parts[0]):
        raise error(400, "invalid", f"{key} takes Type:parameter[:targetType], not {value!r}",
                    expression=key)
    if len(parts) == 3 and not definitions.is_resource_type(parts[2]):
        raise error(400, "invalid", f"{key}: {parts[2]!r} is not a resource type",
                    expression=key)
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _reference_codes(source_type: str, code: str | None, key: str) -> list[str]:
    if code in (None, "*"):
        return [c for c, p in parameters_for(source_type).items() if p.type == "reference"]
    param = get(source_type, code)
    if param is None or param.type != "reference":
        raise error(400, "invalid", f"{key}: {source_type} has no reference parameter {code!r}",
                    expression=key)
    return [code]


_INCLUDE = text(
    "SELECT DISTINCT t.resource_type, t.id, t.version_id, t.last_updated,"
    " convert_to(t.content, 'UTF8'), t.rid"
    " FROM search_reference x JOIN resource t ON t.resource_type = x.target_type"
    " AND t.id = x.target_id AND NOT t.deleted"
    f" WHERE x.rid = ANY({opaque(':rids', 'bigint[]')}) AND x.resource_type = :source"
    " AND x.code = ANY(:codes)"
    " AND (CAST(:target AS text) IS NULL OR x.target_type = :target) LIMIT :limit"
)
# A resource type or parameter code that can be written into SQL as it is.
_PLAIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


@lru_cache(maxsize=1024)
def _revinclude_sql(source: str, codes: tuple[str, ...]) -> str:
    """The _revinclude statement for `source`'s reference parameters `codes`. Those are
    written into it when plain names (as they are but for odd custom codes): with them bound,
    the generic plan's estimate for any type and code kept PostgreSQL planning each run."""
    if _PLAIN_NAME.fullmatch(source) and all(_PLAIN_NAME.fullmatch(c) for c in codes):
        listed = ", ".join(f"'{c}'" for c in codes)
        which = f"x.resource_type = '{source}' AND x.code IN ({listed})"
    else:
        which = "x.resource_type = :source AND x.code = ANY(:codes)"
    return ("SELECT DISTINCT s.resource_type, s.id, s.version_id, s.last_updated,"
            " convert_to(s.content, 'UTF8'), s.rid"
            " FROM search_reference x JOIN resource s ON s.rid = x.rid AND NOT s.deleted"
            f" JOIN unnest({opaque(':types', 'text[]')}, {opaque(':ids', 'text[]')})"
            " AS p(type, id) ON x.target_type = p.type AND x.target_id = p.id"
            f" WHERE {which}"
            " AND (CAST(:target AS text) IS NULL OR x.target_type = :target) LIMIT :limit")


async def _includes(
    connection: Connection, spec: SearchSpec, matches: list[StoredVersion]
) -> list[StoredVersion]:
    if not (spec.includes or spec.revincludes) or not matches:
        return []
    seen = {(m.resource_type, m.id) for m in matches}
    included: list[StoredVersion] = []
    frontier = matches
    for depth in itertools.count():
        found: list[StoredVersion] = []
        for value, iterate in spec.includes:
            if depth > 0 and not iterate:
                continue
            source, code, target = _include_targets(value, "_include")
            sources = [m for m in frontier if source == "*" or m.resource_type == source]
            for source_type in {m.resource_type for m in sources}:
                codes = _reference_codes(source_type, code, "_include")
                rows = await connection.execute(_INCLUDE, {
                    "rids": [m.rid for m in sources if m.resource_type == source_type],
                    "source": source_type, "codes": codes, "target": target,
                    "limit": spec.max_includes})
                found += [StoredVersion(r[0], r[1], r[2], r[3], False, r[4], rid=r[5])
                          for r in rows]
        for value, iterate in spec.revincludes:
            if depth > 0 and not iterate:
                continue
            source, code, target = _include_targets(value, "_revinclude")
            if source == "*":
                raise error(400, "not-supported", "_revinclude=* is not supported",
                            expression="_revinclude")
            codes = _reference_codes(source, code, "_revinclude")
            rows = await connection.execute(_revinclude_sql(source, tuple(codes)), {
                "types": [m.resource_type for m in frontier], "ids": [m.id for m in frontier],
                "source": source, "codes": codes, "target": target,
                "limit": spec.max_includes})
            found += [StoredVersion(r[0], r[1], r[2], r[3], False, r[4], rid=r[5]) for r in rows]
        found = await _visible(connection, spec, found)
        fresh = []
        for version in found:
            if (version.resource_type, version.id) not in seen:
                seen.add((version.resource_type, version.id))
                fresh.append(version)
        included += fresh
        if len(included) >= spec.max_includes:
            return included[:spec.max_includes]
        if not fresh or not any(i for _, i in (*spec.includes, *spec.revincludes)):
            return included
        frontier = fresh
    return included


async def _visible(connection: Connection, spec: SearchSpec,
                   versions: list[StoredVersion]) -> list[StoredVersion]:
    """The included resources the caller may see (the access filter, per type)."""
    if spec.access is None or not versions:
        return versions
    allowed: set[int] = set()
    for resource_type in {v.resource_type for v in versions}:
        limit = spec.access(resource_type)
        rids = [v.rid for v in versions if v.resource_type == resource_type]
        if limit is None:
            allowed.update(rids)
            continue
        sql, binds = limit
        rows = await connection.execute(
            f"SELECT r.rid FROM resource r WHERE r.rid = ANY(:_rids) AND ({sql})",
            {**binds, "_rids": rids})
        allowed.update(row[0] for row in rows)
    return [v for v in versions if v.rid in allowed]


def parse_list(values: list[str]) -> list[str]:
    return [v for value in values for v in split_values(value) if v]
