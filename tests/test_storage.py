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
