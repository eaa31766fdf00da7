"""The database connections the repository takes (santong.storage.database)."""

from __future__ import annotations


async def test_repository_connections_run_without_jit(database_url: str) -> None:
    """JIT compilation is off on the pool's connections: on PostgreSQL builds with LLVM it
    would turn a search with a high cost estimate into tens of milliseconds of compiling."""
    from santong.storage.database import create_engine
    from santong.storage.repository import Repository

    engine = create_engine(database_url, pool_size=1)
    try:
        async with Repository(engine).reading() as tx:
            setting = (await tx.connection.execute("SHOW jit")).scalar_one()
    finally:
        await engine.dispose()
    assert setting == "off"


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
    alone, it planned all twelve counts of a run anew); the search's own statement is planned
    for its name, as the unnamed statement (prepared, it had got a generic plan)."""
    from santong.search.engine import SearchSpec, search
    from santong.storage.database import create_engine
    from santong.storage.repository import Repository

    plans = ("SELECT left(statement, 40), generic_plans FROM pg_prepared_statements WHERE"
             " statement LIKE '%FROM search_' || 'string%'")
    engine = create_engine(database_url, pool_size=1)
    try:
        async with Repository(engine).reading() as tx:
            for family in ("张", "王", "李", "赵", "钱", "孙", "周", "吴", "郑"):
                await search(tx.connection, SearchSpec(types=["Patient"],
                                                       params=[("family", family)]))
            prepared = [tuple(row) for row in await tx.connection.execute(plans)]
    finally:
        await engine.dispose()
    assert [p[0] for p in prepared] == ["SELECT count(*) FROM (SELECT x1.rid FROM"], prepared
    assert prepared[0][1] > 0, prepared
