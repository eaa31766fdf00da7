"""Migrations that rewrite existing rows: run on a database holding rows of the revision before,
and compared with what the server writes for the same values."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from alembic import command

from santong.search import values
from santong.search.index import with_spans
from santong.storage.database import asyncpg_connect_args
from santong.storage.migrate import alembic_config


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (rid, code, low, high): several values of one code, an open end, an inverted Period, one value.
DATE_ROWS = [
    (1, "activity-date", _at("2023-03-01"), _at("2023-04-01")),
    (1, "activity-date", _at("2025-03-01"), _at("2025-04-01")),
    (1, "activity-date", _at("2024-01-01"), values.DATE_MAX),
    (1, "date", _at("2024-05-01T10:00:00"), _at("2024-05-01T10:00:01")),
    (2, "activity-date", _at("2024-06-01"), _at("2024-02-01")),
    (2, "date", values.DATE_MIN, _at("2024-05-02")),
    (3, "date", _at("2024-05-01T10:00:00"), _at("2024-05-01T10:17:04")),  # 1,024 s: bucket 10
]


async def _date_rows(url: str, fill: bool) -> list[tuple[object, ...]]:
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        if fill:
            await connection.executemany(
                "INSERT INTO search_date (rid, resource_type, code, low, high)"
                " VALUES ($1, 'CarePlan', $2, $3, $4)", DATE_ROWS)
            return []
        rows = await connection.fetch(
            "SELECT rid, code, low, high, span_low, span_high, span_bucket FROM search_date")
        return sorted(tuple(r) for r in rows)
    finally:
        await connection.close()


def test_date_spans_are_filled_in_as_the_server_writes_them(empty_database: str) -> None:
    config = alembic_config(empty_database)
    command.upgrade(config, "0006")
    asyncio.run(_date_rows(empty_database, fill=True))
    command.upgrade(config, "head")
    migrated = asyncio.run(_date_rows(empty_database, fill=False))
    written = []
    for rid in (1, 2, 3):
        rows = [(code, low, high) for r, code, low, high in DATE_ROWS if r == rid]
        written += [(rid, *row) for row in with_spans(rows)]
    assert migrated == sorted(written)
    assert (3, "date", _at("2024-05-01T10:00:00"), _at("2024-05-01T10:17:04"),
            _at("2024-05-01T10:00:00"), _at("2024-05-01T10:17:04"), 10) in migrated
    command.downgrade(config, "0006")
    command.upgrade(config, "head")
    assert asyncio.run(_date_rows(empty_database, fill=False)) == sorted(written)


async def _scope_estimate(url: str, fill: bool = False) -> float:
    """The planner's row estimate for one token value of one type and parameter."""
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        if fill:  # four types, each with its own parameter, system and values
            await connection.execute(
                "INSERT INTO search_token (rid, resource_type, code, system, value)"
                " SELECT i, 'Consent', 'scope', 'urn:scope', 'patient-privacy'"
                " FROM generate_series(1, 5000) i UNION ALL"
                " SELECT i, 'Patient', 'identifier', 'urn:id', i::text"
                " FROM generate_series(5001, 10000) i UNION ALL"
                " SELECT i, 'Encounter', 'status', NULL, 'finished'"
                " FROM generate_series(10001, 15000) i UNION ALL"
                " SELECT i, 'Observation', 'code', 'urn:loinc', (i % 50)::text"
                " FROM generate_series(15001, 20000) i")
        await connection.execute("ANALYZE search_token")
        plan = await connection.fetchval(
            "EXPLAIN (FORMAT JSON) SELECT rid FROM search_token WHERE resource_type = 'Consent'"
            " AND code = 'scope' AND system = 'urn:scope' AND value = 'patient-privacy'")
        return float(orjson.loads(plan)[0]["Plan"]["Plan Rows"])
    finally:
        await connection.close()


def test_search_statistics_count_values_per_type_and_parameter(empty_database: str) -> None:
    """0010: 5,000 of 20,000 token rows have the value; taken column by column (a quarter each
    of type, parameter, system and value) the planner would guess about 80."""
    config = alembic_config(empty_database)
    command.upgrade(config, "head")
    assert asyncio.run(_scope_estimate(empty_database, fill=True)) > 2500
    command.downgrade(config, "0009")
    assert asyncio.run(_scope_estimate(empty_database)) < 500


async def _index_node(connection: asyncpg.Connection, query: str) -> dict[str, Any]:
    """The plan node of `query` that carries its index condition (the outermost otherwise)."""
    node = orjson.loads(await connection.fetchval(f"EXPLAIN (FORMAT JSON) {query}"))[0]["Plan"]
    while "Index Cond" not in node and node.get("Plans"):
        node = node["Plans"][0]
    return node  # type: ignore[no-any-return]


async def _string_row_lookup(url: str) -> str:
    """The plan of one resource's string rows of one parameter (a walk's per-row test), among
    30 rows for each of 2,000 resources."""
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        await connection.execute(
            "INSERT INTO search_string (rid, resource_type, code, value, exact)"
            " SELECT i / 30, 'Patient', 'p' || (i % 30), 'v', 'v' FROM generate_series(0, 59999) i")
        await connection.execute("ANALYZE search_string")
        node = await _index_node(
            connection, "SELECT 1 FROM search_string WHERE rid = 7 AND code = 'p3'")
        return f"{node.get('Index Name')}: {node.get('Index Cond')}"
    finally:
        await connection.close()


def test_string_rows_are_found_by_rid_and_code(empty_database: str) -> None:
    """0011: a resource's rows of one string parameter are one index lookup on (rid, code),
    not a read of all its rows by rid; downgraded, the index on rid alone is back."""
    config = alembic_config(empty_database)
    command.upgrade(config, "head")
    found = asyncio.run(_string_row_lookup(empty_database))
    assert found.startswith("search_string_rid_code_idx:") and "code" in found, found
    command.downgrade(config, "0010")
    found = asyncio.run(_string_row_lookup(empty_database))
    assert found.startswith("search_string_rid_idx:") and "code" not in found, found


async def _history_indexes(url: str) -> set[str]:
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        return {row[0] for row in await connection.fetch(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'resource_history'")}
    finally:
        await connection.close()


def test_history_seq_is_not_indexed_alone(empty_database: str) -> None:
    """0012: history's `seq` has no unique index of its own (nothing looks a version up by
    it); its paging indexes stay. Downgraded, the constraint is back."""
    config = alembic_config(empty_database)
    command.upgrade(config, "head")
    assert asyncio.run(_history_indexes(empty_database)) == {
        "resource_history_pkey", "resource_history_system_idx", "resource_history_type_idx"}
    command.downgrade(config, "0011")
    assert "resource_history_seq_key" in asyncio.run(_history_indexes(empty_database))


async def _stored_compressed(url: str, size: int) -> tuple[bool, bool]:
    """Whether a current and a history row of `size` bytes of JSON are stored compressed
    (written in a transaction rolled back after)."""
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    content = orjson.dumps({"resourceType": "Basic", "id": "x", "text": {
        "div": "<div>" + "tolerance " * (size // 10) + "</div>"}}).decode()
    transaction = connection.transaction()
    await transaction.start()
    try:
        await connection.execute(
            "INSERT INTO resource (resource_type, id, version_id, last_updated, deleted,"
            " content) VALUES ('Basic', 'x', 1, now(), false, $1)", content)
        await connection.execute(
            "INSERT INTO resource_history (resource_type, id, version_id, last_updated,"
            " method, content) VALUES ('Basic', 'x', 1, now(), 'POST', $1)", content)
        return (await connection.fetchval(
                    "SELECT pg_column_compression(content) IS NOT NULL FROM resource"),
                await connection.fetchval(
                    "SELECT pg_column_compression(content) IS NOT NULL FROM resource_history"))
    finally:
        await transaction.rollback()
        await connection.close()


def test_current_content_is_not_compressed_below_a_page(empty_database: str) -> None:
    """0015: a current version of 5 KB of JSON is stored as it is (reads and searches do not
    decompress it), its history row compressed; past a page it is compressed again.
    Downgraded, the current row is compressed from 2 KB as by default."""
    config = alembic_config(empty_database)
    command.upgrade(config, "head")
    assert asyncio.run(_stored_compressed(empty_database, 5000)) == (False, True)
    assert asyncio.run(_stored_compressed(empty_database, 20000)) == (True, True)
    command.downgrade(config, "0014")
    assert asyncio.run(_stored_compressed(empty_database, 5000)) == (True, True)


async def _date_row_test(url: str) -> str:
    """The plan of one resource's date rows of one parameter tested against a bound (a walk's
    per-row test), among 3 rows for each of 20,000 resources, vacuumed."""
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        await connection.execute(
            "INSERT INTO search_date (rid, resource_type, code, low, high, span_low, span_high,"
            " span_bucket) SELECT i / 3, 'Encounter', 'd' || (i % 3), t, t + interval '1 hour',"
            " t, t + interval '1 hour', 11 FROM generate_series(0, 59999) i,"
            " LATERAL (SELECT timestamptz '2024-01-01' + i * interval '1 hour' AS t) x")
        await connection.execute("VACUUM ANALYZE search_date")
        node = await _index_node(
            connection, "SELECT 1 FROM search_date WHERE rid = 7 AND code = 'd1'"
            " AND resource_type = 'Encounter' AND low < timestamptz '2025-01-01'")
        return f"{node.get('Node Type')} {node.get('Index Name')}: {node.get('Index Cond')}"
    finally:
        await connection.close()


def test_date_rows_are_tested_from_the_index_alone(empty_database: str) -> None:
    """0016: a resource's rows of one date parameter are found by (rid, code) and tested from
    the index alone (type, low and high included); downgraded, by rid, then from the table."""
    config = alembic_config(empty_database)
    command.upgrade(config, "head")
    found = asyncio.run(_date_row_test(empty_database))
    assert found.startswith("Index Only Scan search_date_rid_code_idx:") and "code" in found, \
        found
    command.downgrade(config, "0015")
    found = asyncio.run(_date_row_test(empty_database))
    assert found.startswith("Index Scan search_date_rid_idx:"), found
