"""The database connections the repository takes (santong.storage.database)."""

from __future__ import annotations

import time

import httpx
import pytest


async def test_repository_connections_run_without_jit_or_parallel_workers(
        database_url: str) -> None:
    """JIT compilation is off on the pool's connections: on PostgreSQL builds with LLVM it
    would turn a search with a high cost estimate into tens of milliseconds of compiling. So
    are parallel workers: starting them cost a date search 15-18 ms it ran in 3 ms alone."""
    from santong.storage.database import create_engine
    from santong.storage.repository import Repository

    engine = create_engine(database_url, pool_size=1)
    try:
        async with Repository(engine).reading() as tx:
            jit = (await tx.connection.execute("SHOW jit")).scalar_one()
            workers = (await tx.connection.execute(
                "SHOW max_parallel_workers_per_gather")).scalar_one()
    finally:
        await engine.dispose()
    assert (jit, workers) == ("off", "0")


async def test_date_searches_are_planned_for_their_values(database_url: str) -> None:
    """A search whose plan depends on its date bounds runs as the unnamed statement, planned
    each time: prepared and cached, the same month's search got a generic plan after five
    runs (57 ms against 1.1 ms on 10,000 patients). Other searches stay prepared."""
    from santong.search.engine import SearchSpec, search
    from santong.storage.database import create_engine
    from santong.storage.repository import Repository

    prepared = ("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE"
                " '%FROM resource r' || ' WHERE%'")  # split: not to find itself
    engine = create_engine(database_url, pool_size=1)
    try:
        async with Repository(engine).reading() as tx:
            for _ in range(7):
                await search(tx.connection, SearchSpec(types=["Encounter"], params=[
                    ("date", "ge2024-02-01"), ("date", "lt2024-03-01")]))
            after_dates = (await tx.connection.execute(prepared)).scalar_one()
            await search(tx.connection, SearchSpec(types=["Encounter"], params=[
                ("status", "finished")]))
            after_token = (await tx.connection.execute(prepared)).scalar_one()
    finally:
        await engine.dispose()
    assert (after_dates, after_token) == (0, 1)


async def test_string_prefix_counts_keep_a_prepared_plan(database_url: str) -> None:
    """A name's prefix goes in as a bound index range, so the engine's count of its matches is
    one prepared statement PostgreSQL may plan once (on 10,000 patients, with a LIKE pattern
    alone, it planned all twelve counts of a run anew), as is the listing of a prefix's
    matches in rid order (engine._in_rid_order, a first page's form, by the values of a prefix
    or by a name's first character); the search's own statement is planned for its name, as
    the unnamed statement (prepared, it had got a generic plan). The walk of a dense name's
    rids (`FROM resource w`) is prepared: its shape forces its plan."""
    from santong.search.engine import SearchSpec, search
    from santong.storage.database import create_engine
    from santong.storage.repository import Repository

    plans = ("SELECT left(statement, 40), generic_plans FROM pg_prepared_statements WHERE"
             " statement LIKE '%FROM search_' || 'string%'"
             " AND statement NOT LIKE '%FROM resource ' || 'w %'")
    engine = create_engine(database_url, pool_size=1)
    try:
        async with Repository(engine).reading() as tx:
            for name in ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军",  # one character
                         "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟"):
                code = "given" if len(name) == 1 else "family"
                for params in ([(code, name)], [(code, name), ("gender", "male")]):
                    await search(tx.connection, SearchSpec(types=["Patient"], params=params))
            prepared = [tuple(row) for row in await tx.connection.execute(plans)]
    finally:
        await engine.dispose()
    assert sorted(p[0] for p in prepared) == ["SELECT count(*) FROM (SELECT x1.rid FROM",
                                              "WITH RECURSIVE prefix_values(value, rid)",
                                              "WITH prefix_page AS MATERIALIZED (SELECT"], prepared
    assert all(p[1] > 0 for p in prepared), prepared


async def test_dense_string_matches_scale_with_the_type(
        database_url: str, client: httpx.AsyncClient) -> None:
    """A string match counts as dense (walked in id order) from about √N index rows among N
    resources of the type; N comes from the planner's statistics, or is counted for a type
    they do not list, and is kept for a while."""
    from santong.search import engine as search_engine
    from santong.storage.database import create_engine
    from santong.storage.repository import Repository

    assert search_engine._dense_rows(0) == 50
    assert search_engine._dense_rows(12_900) == 120
    assert search_engine._dense_rows(214_600) == 510
    assert search_engine._dense_rows(10_000_000) == 3480
    assert (await client.post("Patient", json={"resourceType": "Patient"})).status_code == 201
    engine = create_engine(database_url, pool_size=1)
    try:
        async with Repository(engine).reading() as tx:
            search_engine._type_rows_cache.pop("BiologicallyDerivedProduct", None)
            # No resource of this type is ever stored by the tests: not in the statistics,
            # and counted: none.
            assert await search_engine._type_rows(
                tx.connection, "BiologicallyDerivedProduct") == 0
            expires, rows = search_engine._type_rows_cache["BiologicallyDerivedProduct"]
            assert rows == 0 and expires > time.monotonic()
            # Whether or not the statistics list Patient now, there is one.
            await tx.connection.execute("ANALYZE resource")
            search_engine._type_rows_cache.pop("Patient", None)
            live = (await tx.connection.execute(
                "SELECT count(*) FROM resource WHERE resource_type = 'Patient'"
                " AND NOT deleted")).scalar_one()
            # Statistics count deleted versions' rows too, and only estimate: near enough.
            assert live / 2 <= await search_engine._type_rows(tx.connection, "Patient") \
                <= live * 2
    finally:
        await engine.dispose()


@pytest.mark.parametrize("sql", [
    "SELECT :a, :b, :a",
    "SELECT x::text, '10:00', CAST(:c AS int) WHERE y = ANY(CAST(:d AS text[]))",
    "SELECT '%' LIKE :pattern_1, :ü, :b10, :b1",
    "SELECT a \\:x :y, ':z', :z",
    "SELECT 1",
])
def test_positional_parameters_as_sqlalchemy_text(sql: str) -> None:
    """Statements' `:name` parameters become asyncpg's `$n` as SQLAlchemy's text() compiles
    them for the asyncpg dialect (what storage did before, at 2-3 % of a Bundle's CPU)."""
    from sqlalchemy import text
    from sqlalchemy.dialects.postgresql.asyncpg import dialect

    from santong.storage.repository import _to_positional

    compiled = text(sql).compile(dialect=dialect())
    assert _to_positional(sql) == (compiled.string, tuple(compiled.positiontup or ()))
