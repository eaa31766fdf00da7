"""The raw limit of the database from Python: asyncpg on the same PostgreSQL, same JSON.

One statement per round trip in autocommit (so one row per commit), N connections each looping
for the duration; and `executemany` batches of 1,000 rows on one connection (one commit per
batch). The table is like Santong's: id text primary key, content text.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

TABLE = "raw_resource"


def _summary(latencies: list[int], elapsed: float, rows: int | None = None) -> dict[str, Any]:
    latencies.sort()

    def pct(q: float) -> int:
        return latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))] if latencies else 0

    count = len(latencies)
    return {"ops": count, "rows": rows if rows is not None else count,
            "seconds": round(elapsed, 3),
            "per_second": round((rows if rows is not None else count) / elapsed, 1),
            "p50_us": pct(50), "p95_us": pct(95), "p99_us": pct(99), "errors": 0}


class RawLimit:
    def __init__(self, dsn: str, host_dir: str | None) -> None:
        self.dsn = dsn
        self.extra = {"host": host_dir} if host_dir else {}

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn, **self.extra)

    async def reset(self) -> None:
        connection = await self.connect()
        try:
            await connection.execute(f"DROP TABLE IF EXISTS {TABLE}")
            await connection.execute(f"CREATE TABLE {TABLE} (id text PRIMARY KEY, "
                                     "content text NOT NULL)")
        finally:
            await connection.close()

    async def _loop(self, connections: int, duration: float,
                    step: Callable[[asyncpg.Connection, int], Awaitable[None]]) -> dict[str, Any]:
        pool = [await self.connect() for _ in range(connections)]
        latencies: list[int] = []
        clock = time.perf_counter_ns
        started = time.perf_counter()
        deadline = clock() + int(duration * 1e9)

        async def worker(connection: asyncpg.Connection, offset: int) -> None:
            n = offset
            while True:
                t0 = clock()
                if t0 >= deadline:
                    return
                await step(connection, n)
                latencies.append((clock() - t0) // 1000)
                n += connections

        try:
            await asyncio.gather(*(worker(c, i) for i, c in enumerate(pool)))
        finally:
            for connection in pool:
                await connection.close()
        return _summary(latencies, time.perf_counter() - started)

    async def insert(self, bodies: list[str], connections: int, duration: float) -> dict[str, Any]:
        async def step(connection: asyncpg.Connection, n: int) -> None:
            await connection.execute(f"INSERT INTO {TABLE} (id, content) VALUES ($1, $2)",
                                     str(uuid.uuid4()), bodies[n % len(bodies)])
        return await self._loop(connections, duration, step)

    async def select(self, ids: list[str], connections: int, duration: float) -> dict[str, Any]:
        async def step(connection: asyncpg.Connection, n: int) -> None:
            await connection.fetchval(f"SELECT content FROM {TABLE} WHERE id = $1",
                                      ids[n % len(ids)])
        return await self._loop(connections, duration, step)

    async def update(self, ids: list[str], bodies: list[str], connections: int,
                     duration: float) -> dict[str, Any]:
        async def step(connection: asyncpg.Connection, n: int) -> None:
            await connection.execute(f"UPDATE {TABLE} SET content = $2 WHERE id = $1",
                                     ids[n % len(ids)], bodies[n % len(bodies)])
        return await self._loop(connections, duration, step)

    async def executemany(self, bodies: list[str], batch: int, duration: float) -> dict[str, Any]:
        connection = await self.connect()
        latencies: list[int] = []
        rows = 0
        started = time.perf_counter()
        try:
            n = 0
            while time.perf_counter() - started < duration or not latencies:
                chunk = [(str(uuid.uuid4()), bodies[(n + i) % len(bodies)]) for i in range(batch)]
                n += batch
                t0 = time.perf_counter_ns()
                async with connection.transaction():
                    await connection.executemany(
                        f"INSERT INTO {TABLE} (id, content) VALUES ($1, $2)", chunk)
                latencies.append((time.perf_counter_ns() - t0) // 1000)
                rows += batch
        finally:
            await connection.close()
        return _summary(latencies, time.perf_counter() - started, rows)

    async def ids(self, limit: int) -> list[str]:
        connection = await self.connect()
        try:
            return [r[0] for r in await connection.fetch(f"SELECT id FROM {TABLE} LIMIT $1",
                                                          limit)]
        finally:
            await connection.close()
