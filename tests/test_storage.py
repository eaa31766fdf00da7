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
