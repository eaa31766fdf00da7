"""The benchmark's bulk set-up writes exactly what the server's own write path writes.

The same generated community is PUT through the Router into one database and bulk-loaded into
another, with the clock frozen; every table (resource, history, every search index) must then
hold the same rows, with rids replaced by the resource they stand for. Both databases first get
a custom SearchParameter through the server, as the server stores the bundled package at
start-up: the bulk loader must index with it too.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from sqlalchemy.engine import make_url
from tests.helpers import admin

from santong.fhir import storing
from santong.fhir.request import FhirRequest
from santong.fhir.router import Router
from santong.generate import Dataset
from santong.search import parameters
from santong.search.registry import CustomParameters
from santong.settings import Settings
from santong.storage.database import asyncpg_connect_args, create_engine
from santong.storage.migrate import upgrade
from santong.storage.repository import Repository

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bulkload  # noqa: E402

PATIENTS = 40
MOMENT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
FHIR_JSON = "application/fhir+json"
NATIONAL_ID = orjson.loads(
    (ROOT / "fhir_profiles" / "SearchParameter-patient-national-id.json").read_bytes())
# All the package's SearchParameters, as a server stores them at start-up: a server app in this
# test process (the session's) has registered them all, so the databases must hold them all
# for every loading process to index alike.
PACKAGE_PARAMETERS = [orjson.loads(p.read_bytes()) for p in
                      sorted((ROOT / "fhir_profiles").glob("SearchParameter-*.json"))]


@pytest.fixture
def fresh_database(server_url: str) -> Iterator[Any]:
    """Makes migrated databases holding the package's SearchParameters (dropped at the end)."""
    names: list[str] = []
    # Registrations are process-wide: leave those the session's server made in place.
    before = {r["url"] for r in PACKAGE_PARAMETERS if parameters.by_url(r["url"]) is not None}

    def make() -> str:
        name = f"santong_bulk_{uuid.uuid4().hex[:10]}"
        names.append(name)
        asyncio.run(admin(server_url, f'CREATE DATABASE "{name}"'))
        url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        asyncio.run(_put_through_the_server(url, PACKAGE_PARAMETERS))
        return url

    yield make
    for resource in PACKAGE_PARAMETERS:
        if resource["url"] not in before:
            parameters.unregister(resource["url"])
    for name in names:
        asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _put_through_the_server(url: str, resources: list[dict[str, Any]]) -> None:
    engine = create_engine(url, pool_size=2)
    router = Router(Repository(engine), Settings(), CustomParameters(engine))
    try:
        for resource in resources:
            request = FhirRequest("PUT", f"{resource['resourceType']}/{resource['id']}",
                                  headers={"content-type": FHIR_JSON, "accept": FHIR_JSON},
                                  base_url="http://localhost/fhir", resource=resource)
            response = await router.handle(request)
            assert response.status == 201, response.resource
    finally:
        await engine.dispose()


async def _tables(url: str) -> dict[str, list[tuple[str, ...]]]:
    """Every table's rows, sorted: rid and seq replaced by the resource's type and id, the
    clock's values outside the resource tables by whether they are set."""
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        columns: dict[str, list[tuple[str, str]]] = {}
        for table, column, kind in await connection.fetch(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name <> 'alembic_version'"
                " ORDER BY table_name, ordinal_position"):
            columns.setdefault(table, []).append((column, kind))
        out = {}
        for table, cols in columns.items():
            indexed = "rid" in dict(cols) and table != "resource"
            clock = table not in bulkload.RESOURCE_TABLES and not indexed
            select = ", ".join(f"(s.{c} IS NOT NULL)" if clock and kind.startswith("timestamp")
                               else f"s.{c}::text" for c, kind in cols
                               if c not in ("rid", "seq"))
            join = " JOIN resource r ON r.rid = s.rid" if indexed else ""
            extra = "r.resource_type, r.id, " if indexed else ""
            rows = await connection.fetch(f"SELECT {extra}{select} FROM {table} s{join}")
            out[table] = sorted(tuple(map(str, row)) for row in rows)
        return out
    finally:
        await connection.close()


def _server_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids the server draws (a referral Task it opens) in a repeatable sequence."""
    counter = iter(range(1, 10**6))
    monkeypatch.setattr(storing, "new_id", lambda: f"00000000-0000-4000-8000-{next(counter):012d}")


def test_bulk_load_writes_what_the_server_writes(
    fresh_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storing, "now", lambda: MOMENT)
    dataset = Dataset(PATIENTS, seed=7)
    through_server, bulk = fresh_database(), fresh_database()
    _server_ids(monkeypatch)
    asyncio.run(_put_through_the_server(through_server, list(dataset.resources())))
    _server_ids(monkeypatch)
    result = bulkload.load(bulk, PATIENTS, seed=7, processes=0)
    assert result["errors"] == 0, result["failures"]
    assert result["through_server"] == sum(
        1 for r in dataset.resources() if r["resourceType"] in bulkload.THROUGH_SERVER) > 0
    expected, loaded = asyncio.run(_tables(through_server)), asyncio.run(_tables(bulk))
    assert set(loaded) == set(expected)
    assert sum(1 for row in expected["resource"] if row[1] in {
        r["id"] for r in dataset.resources()}) == result["resources"] > PATIENTS * 5
    assert any(NATIONAL_ID["code"] in row for row in loaded["search_token"])
    assert sum(len(rows) for rows in expected.values()) > result["resources"] * 5
    for table, rows in expected.items():
        assert loaded[table] == rows, table


def test_several_processes_write_the_same_rows_and_rebuild_the_indexes(
    fresh_database: Any, server_url: str
) -> None:
    one, two = fresh_database(), fresh_database()
    single = bulkload.load(one, PATIENTS, processes=0)
    parallel = bulkload.load(two, PATIENTS, processes=2)
    assert parallel["errors"] == 0, parallel["failures"]
    assert parallel["rows"] == single["rows"]
    assert parallel["counts"] == single["counts"]

    async def indexes(url: str) -> list[str]:
        connection = await asyncpg.connect(**asyncpg_connect_args(url))
        try:
            return sorted(r[0] for r in await connection.fetch(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'"))
        finally:
            await connection.close()

    assert asyncio.run(indexes(two)) == asyncio.run(indexes(one))
