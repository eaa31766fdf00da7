"""The benchmark's data set-up: a generated community written straight into Santong's tables.

The rows are those the server writes for a PUT (update-as-create) of each resource into an
empty database: the same checks (`parse_resource`: structure and profiles; the workflow
rules), the same stored JSON (`serialise_version`), the same index rows (`index_rows`) and the
same history row. Only the way they reach PostgreSQL differs: binary COPY in batches, from
several processes, with the tables' secondary indexes dropped during the load and rebuilt
after it (then VACUUM ANALYZE). tests/test_bench_bulkload.py checks that a bulk load and a load
through the server's own write path leave identical tables.

Start the server on the database first: what it stores at start-up (the bundled FHIR package:
custom SearchParameters, profiles) is read back by every loading process, as a server process
reads it, so the index rows include the custom parameters and profiles are checked. The
resources' ids must be new (the primary key refuses a taken one), and their writes must have no
side effects (not SearchParameter, StructureDefinition, ValueSet or CodeSystem, which the server
announces to every process).

    python bench/bulkload.py --url postgresql://… --patients 100000 --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from santong.fhir import storing
from santong.fhir.outcome import FhirError
from santong.fhir.payload import parse_resource
from santong.fhir.request import FhirRequest
from santong.generate import Dataset
from santong.search.index import TABLES, IndexRows, index_rows
from santong.search.registry import CustomParameters
from santong.storage.database import asyncpg_connect_args, create_engine
from santong.storage.migrate import upgrade
from santong.validation import registry as profile_registry
from santong.workflow import check_write

Resource = dict[str, Any]
# Writes of these types have effects beyond their rows (custom search parameters, profiles).
SIDE_EFFECTS = frozenset({"SearchParameter", "StructureDefinition", "ValueSet", "CodeSystem"})
RESOURCE_TABLES = ("resource", "resource_history")
_RESOURCE_COLUMNS = ("rid", "resource_type", "id", "version_id", "last_updated", "deleted",
                     "content")
_HISTORY_COLUMNS = ("resource_type", "id", "version_id", "last_updated", "method", "content")
# Index tables whose values PostgreSQL transforms on the way in: inserted as the server does.
_TRANSFORMED = {
    "text": "INSERT INTO search_text (rid, resource_type, code, document) SELECT t.rid, "
            "t.resource_type, t.code, to_tsvector('simple', t.document) FROM unnest("
            "$1::bigint[], $2::text[], $3::text[], $4::text[]) AS t(rid, resource_type, code, "
            "document)",
    "composite": "INSERT INTO search_composite (rid, resource_type, code, components) SELECT "
                 "t.rid, t.resource_type, t.code, CAST(t.components AS jsonb) FROM unnest("
                 "$1::bigint[], $2::text[], $3::text[], $4::text[]) AS t(rid, resource_type, "
                 "code, components)",
}


def index_tables() -> dict[str, tuple[str, ...]]:
    """Every index table (IndexRows field) with its columns after rid and resource_type."""
    out: dict[str, tuple[str, ...]] = {}
    for f in dataclasses.fields(IndexRows):
        if f.name in TABLES:
            out[f.name] = tuple(c.split()[0] for c in TABLES[f.name])
        elif f.name in _TRANSFORMED:
            out[f.name] = ("code", "value")
        else:  # a new index table: this loader must learn it before it can be trusted
            raise RuntimeError(f"bulkload does not know the index table search_{f.name}")
    return out


@dataclass
class Stats:
    resources: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    by_type: Counter[str] = field(default_factory=Counter)

    def add(self, other: Stats) -> None:
        self.resources += other.resources
        self.rows.update(other.rows)
        self.failures += other.failures
        self.by_type.update(other.by_type)


@dataclass
class Prepared:
    resource_type: str
    id: str
    content: str
    last_updated: Any
    rows: IndexRows


def prepare(resource: Resource) -> Prepared:
    """What the server's PUT of a new resource stores, computed as it computes it."""
    rtype = resource["resourceType"]
    if rtype in SIDE_EFFECTS:
        raise ValueError(f"{rtype} writes have side effects: load them through the server")
    request = FhirRequest("PUT", f"{rtype}/{resource['id']}", resource=resource)
    resource = parse_resource(request, rtype)
    check_write(rtype, None, resource, "PUT")
    moment = storing.now()
    stored, content = storing.serialise_version(resource, resource["id"], 1, moment)
    return Prepared(rtype, resource["id"], content, moment, index_rows(stored))


async def write_batch(connection: asyncpg.Connection, batch: list[Prepared],
                      stats: Stats) -> None:
    """One transaction: resource and history rows, then every index table, by COPY."""
    if not batch:
        return
    rids = [r[0] for r in await connection.fetch(
        "SELECT nextval(pg_get_serial_sequence('resource', 'rid')) FROM generate_series(1, $1)",
        len(batch))]
    tables = index_tables()
    async with connection.transaction():
        await connection.copy_records_to_table(
            "resource", columns=_RESOURCE_COLUMNS,
            records=[(rid, p.resource_type, p.id, 1, p.last_updated, False, p.content)
                     for rid, p in zip(rids, batch, strict=True)])
        await connection.copy_records_to_table(
            "resource_history", columns=_HISTORY_COLUMNS,
            records=[(p.resource_type, p.id, 1, p.last_updated, "PUT", p.content)
                     for p in batch])
        for name, columns in tables.items():
            records = [(rid, p.resource_type, *row) for rid, p in zip(rids, batch, strict=True)
                       for row in getattr(p.rows, name)]
            if not records:
                continue
            if name in _TRANSFORMED:
                await connection.execute(_TRANSFORMED[name], *map(list, zip(*records,
                                                                           strict=True)))
            else:
                await connection.copy_records_to_table(
                    f"search_{name}", columns=("rid", "resource_type", *columns),
                    records=records)
            stats.rows[f"search_{name}"] += len(records)
    stats.resources += len(batch)
    stats.rows["resource"] += len(batch)
    stats.rows["resource_history"] += len(batch)
    stats.by_type.update(p.resource_type for p in batch)


async def server_registries(url: str, required_profiles: str = "") -> None:
    """Load the custom SearchParameters and the profiles stored in the database, as a server
    process does at start-up, and make them the ones this process indexes and checks with."""
    engine = create_engine(url, pool_size=1)
    try:
        await CustomParameters(engine).sync(force=True)
        profiles = profile_registry.ProfileRegistry(engine, required_profiles)
        await profiles.sync(force=True)
        profile_registry.activate(profiles)
    finally:
        await engine.dispose()


async def write_all(url: str, resources: Iterable[Resource], batch_size: int = 500,
                    required_profiles: str = "") -> Stats:
    """Prepare and write `resources` over one connection; failures are listed, not raised."""
    stats = Stats()
    await server_registries(url, required_profiles)
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        # Only a crash could lose these commits, and a crashed set-up is started again anyway.
        await connection.execute("SET synchronous_commit = off")
        batch: list[Prepared] = []
        for resource in resources:
            try:
                batch.append(prepare(resource))
            except FhirError as exc:
                stats.failures.append(f"{resource.get('resourceType')}/{resource.get('id')}: "
                                      f"{exc}")
                continue
            if len(batch) >= batch_size:
                await write_batch(connection, batch, stats)
                batch = []
        await write_batch(connection, batch, stats)
    finally:
        await connection.close()
    return stats


def _slice(patients: int, seed: int, part: int, parts: int) -> Iterator[Resource]:
    """Part `part` of `parts` of a Dataset: every parts-th block of 100 patients; part 0 also
    the shared resources."""
    dataset = Dataset(patients, seed=seed)
    if part == 0:
        yield from dataset.shared()
    for start in range(1 + part * 100, patients + 1, parts * 100):
        for index in range(start, min(start + 100, patients + 1)):
            yield from dataset.record(index)


def _worker(args: tuple[str, int, int, int, int, int]) -> Stats:
    url, patients, seed, part, parts, batch_size = args
    return asyncio.run(write_all(url, _slice(patients, seed, part, parts), batch_size))


# ---- the secondary indexes: dropped before the load, rebuilt after it -------------------------

_SECONDARY = """
SELECT i.indexname, i.indexdef FROM pg_indexes i
WHERE i.schemaname = current_schema() AND i.tablename = ANY($1::text[])
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                  WHERE c.conindid = format('%I.%I', i.schemaname, i.indexname)::regclass)
ORDER BY i.indexname
"""


def _all_tables() -> list[str]:
    return [*RESOURCE_TABLES, *(f"search_{n}" for n in index_tables())]


async def drop_secondary_indexes(url: str) -> list[str]:
    """Drop the indexes no constraint needs; their definitions, to rebuild them."""
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        rows = await connection.fetch(_SECONDARY, _all_tables())
        for row in rows:
            await connection.execute(f'DROP INDEX "{row["indexname"]}"')
        return [row["indexdef"] for row in rows]
    finally:
        await connection.close()


async def rebuild(url: str, definitions: list[str], connections: int) -> dict[str, float]:
    """Rebuild the indexes (`connections` at a time), then VACUUM ANALYZE; seconds of each."""
    queue = list(definitions)
    started = time.perf_counter()

    async def builder() -> None:
        connection = await asyncpg.connect(**asyncpg_connect_args(url))
        try:
            await connection.execute("SET maintenance_work_mem = '256MB'")
            while queue:
                await connection.execute(queue.pop())
        finally:
            await connection.close()

    await asyncio.gather(*(builder() for _ in range(max(1, connections))))
    indexed = time.perf_counter()
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        for table in _all_tables():
            await connection.execute(f"VACUUM (ANALYZE) {table}")
    finally:
        await connection.close()
    return {"index_seconds": round(indexed - started, 1),
            "analyze_seconds": round(time.perf_counter() - indexed, 1)}


def load(url: str, patients: int, seed: int = 1, processes: int = 2, batch_size: int = 500,
         progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Load Dataset(patients, seed) into the migrated database at `url` (see the module notes).

    `processes` 0 prepares and writes in this process (no index drop: small loads and tests).
    """
    say = progress or (lambda _: None)
    started = time.perf_counter()
    stats = Stats()
    timings: dict[str, float] = {}
    if processes <= 0:
        stats = asyncio.run(write_all(url, _slice(patients, seed, 0, 1), batch_size))
        timings["write_seconds"] = round(time.perf_counter() - started, 1)
        asyncio.run(rebuild(url, [], 1))
    else:
        definitions = asyncio.run(drop_secondary_indexes(url))
        say(f"bulk load: {patients} patients, {processes} processes, "
            f"{len(definitions)} secondary indexes dropped until the end")
        # spawn: a clean interpreter per worker, whatever threads or loops this one has
        context = multiprocessing.get_context("spawn")
        with context.Pool(processes) as pool:
            for part in pool.imap_unordered(_worker, [(url, patients, seed, i, processes,
                                                       batch_size) for i in range(processes)]):
                stats.add(part)
        timings["write_seconds"] = round(time.perf_counter() - started, 1)
        say(f"bulk load: {stats.resources} resources written in {timings['write_seconds']} s; "
            "rebuilding indexes, VACUUM ANALYZE")
        timings.update(asyncio.run(rebuild(url, definitions, min(processes, 2))))
    seconds = time.perf_counter() - started
    return {"patients": patients, "resources": stats.resources, "processes": processes,
            "rows": dict(stats.rows), "counts": dict(sorted(stats.by_type.items())),
            "failures": stats.failures[:20], "errors": len(stats.failures),
            "seconds": round(seconds, 1), **timings,
            "per_second": round(stats.resources / seconds, 1) if seconds else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="PostgreSQL URL (migrated by this command)")
    parser.add_argument("--patients", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args(argv)
    upgrade(args.url)
    result = load(args.url, args.patients, args.seed, args.processes, args.batch_size,
                  progress=print)
    print({k: v for k, v in result.items() if k not in ("counts", "failures")})
    for failure in result["failures"]:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
