"""The benchmark's data set-up: a generated community written straight into Santong's tables.

The rows are those the server writes for a PUT (update-as-create) of each resource: the same
checks (`parse_resource`: structure and profiles; the workflow rules), the same stored JSON
(`serialise_version`), the same index rows (`index_rows`) and the same history row. Only the
way they reach PostgreSQL differs: binary COPY in batches, from several processes, with the
tables' secondary indexes dropped during the load and rebuilt after it (then VACUUM ANALYZE).
Resources whose writes set off more than their own rows (THROUGH_SERVER: referral workflow,
registries) are PUT through the server's own write path (the Router, in the loading process)
once the rest of their patients' records is committed. tests/test_bench_bulkload.py checks
that a bulk load and a load through the server leave identical tables.

Start the server on the database first: what it stores at start-up (the bundled FHIR package:
custom SearchParameters, profiles) is read back by every loading process, as a server process
reads it, so the index rows include the custom parameters and profiles are checked. The ids
must be new (the primary key refuses a taken one).

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
from santong.fhir.router import Router
from santong.generate import Dataset
from santong.search.index import STORED_TABLES, IndexRows, index_rows
from santong.search.registry import CustomParameters
from santong.settings import Settings
from santong.storage.database import asyncpg_connect_args, create_engine
from santong.storage.migrate import upgrade
from santong.storage.repository import Repository
from santong.validation import registry as profile_registry
from santong.workflow import check_write

Resource = dict[str, Any]
# Types whose writes set off more than their rows: santong.workflow.after_write (a ServiceRequest
# opens its referral Task, a Task supersedes it and grants record access) and the registries
# every process reloads. They go through the server's write path.
THROUGH_SERVER = frozenset({"ServiceRequest", "Task", "SearchParameter", "StructureDefinition",
                            "ValueSet", "CodeSystem"})
BLOCK = 100  # patients per chunk: their other resources are committed before these writes
FHIR_JSON = "application/fhir+json"
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
        if f.name in _TRANSFORMED:
            out[f.name] = ("code", "value")
        elif f.name in STORED_TABLES:
            out[f.name] = tuple(c.split()[0] for c in STORED_TABLES[f.name])
        else:  # a new index table: this loader must learn it before it can be trusted
            raise RuntimeError(f"bulkload does not know the index table search_{f.name}")
    return out


@dataclass
class Stats:
    resources: int = 0
    through_server: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    by_type: Counter[str] = field(default_factory=Counter)

    def add(self, other: Stats) -> None:
        self.resources += other.resources
        self.through_server += other.through_server
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


class Loader:
    """One loading process's connections: asyncpg for COPY, a Router for THROUGH_SERVER, with
    the custom SearchParameters and profiles stored in the database, as a server process."""

    def __init__(self, url: str, batch_size: int, required_profiles: str) -> None:
        self.url, self.batch_size = url, batch_size
        self.settings = Settings(required_profiles=required_profiles)
        self.stats = Stats()

    async def __aenter__(self) -> Loader:
        self.engine = create_engine(self.url, pool_size=1)
        custom = CustomParameters(self.engine)
        await custom.sync(force=True)
        profiles = profile_registry.ProfileRegistry(self.engine,
                                                    self.settings.required_profiles)
        await profiles.sync(force=True)
        profile_registry.activate(profiles)
        self.router = Router(Repository(self.engine), self.settings, custom, profiles)
        self.connection = await asyncpg.connect(**asyncpg_connect_args(self.url))
        # Only a crash could lose these commits, and a crashed set-up is started again anyway.
        await self.connection.execute("SET synchronous_commit = off")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()
        await self.engine.dispose()

    def _failed(self, resource: Resource, problem: object) -> None:
        self.stats.failures.append(
            f"{resource.get('resourceType')}/{resource.get('id')}: {problem}")

    async def copy(self, resources: Iterable[Resource]) -> None:
        """COPY the resources, but for THROUGH_SERVER ones (see `through_server`)."""
        batch: list[Prepared] = []
        for resource in resources:
            if resource["resourceType"] in THROUGH_SERVER:
                continue
            try:
                batch.append(prepare(resource))
            except FhirError as exc:
                self._failed(resource, exc)
                continue
            if len(batch) >= self.batch_size:
                await write_batch(self.connection, batch, self.stats)
                batch = []
        await write_batch(self.connection, batch, self.stats)

    async def through_server(self, resources: Iterable[Resource]) -> None:
        """PUT the THROUGH_SERVER resources, in their order, through the server's Router."""
        for resource in resources:
            rtype = resource["resourceType"]
            if rtype not in THROUGH_SERVER:
                continue
            response = await self.router.handle(FhirRequest(
                "PUT", f"{rtype}/{resource['id']}", base_url="http://localhost/fhir",
                headers={"content-type": FHIR_JSON, "accept": FHIR_JSON,
                         "prefer": "return=minimal"}, resource=resource))
            if response.status in (200, 201):
                self.stats.resources += 1
                self.stats.through_server += 1
                self.stats.by_type[rtype] += 1
            else:
                self._failed(resource, f"HTTP {response.status} {response.resource}")


async def write_chunks(url: str, chunks: Iterable[Iterable[Resource]], phase: str,
                       batch_size: int = 500, required_profiles: str = "") -> Stats:
    """One phase ("copy" or "server") of each chunk in turn; failures are listed, not raised."""
    async with Loader(url, batch_size, required_profiles) as loader:
        for chunk in chunks:
            await (loader.copy(chunk) if phase == "copy" else loader.through_server(chunk))
    return loader.stats


def _blocks(patients: int, seed: int, part: int, parts: int) -> Iterator[list[Resource]]:
    """Part `part` of `parts` of a Dataset's patients: every parts-th block of BLOCK."""
    dataset = Dataset(patients, seed=seed)
    for start in range(1 + part * BLOCK, patients + 1, parts * BLOCK):
        yield [r for index in range(start, min(start + BLOCK, patients + 1))
               for r in dataset.record(index)]


def _worker(args: tuple[str, str, int, int, int, int, int, str]) -> Stats:
    phase, url, patients, seed, part, parts, batch_size, required_profiles = args
    return asyncio.run(write_chunks(url, _blocks(patients, seed, part, parts), phase,
                                    batch_size, required_profiles))


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


async def build_indexes(url: str, definitions: list[str], connections: int) -> None:
    """Create the indexes, `connections` at a time."""
    queue = list(definitions)

    async def builder() -> None:
        connection = await asyncpg.connect(**asyncpg_connect_args(url))
        try:
            await connection.execute("SET maintenance_work_mem = '256MB'")
            while queue:
                await connection.execute(queue.pop())
        finally:
            await connection.close()

    await asyncio.gather(*(builder() for _ in range(max(1, connections))))


async def vacuum_analyze(url: str) -> None:
    """What autovacuum would have done by the time a loaded server is searched."""
    connection = await asyncpg.connect(**asyncpg_connect_args(url))
    try:
        for table in _all_tables():
            await connection.execute(f"VACUUM (ANALYZE) {table}")
    finally:
        await connection.close()


def load(url: str, patients: int, seed: int = 1, processes: int = 2, batch_size: int = 500,
         required_profiles: str = "",
         progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Load Dataset(patients, seed) into the migrated database at `url` (see the module notes).

    In two phases: every resource but THROUGH_SERVER ones by COPY (the shared ones first, then
    the patients' in blocks), the indexes rebuilt; then THROUGH_SERVER ones through the Router,
    in the same order. `processes` 0 does it all in this process, without dropping indexes
    (small loads, tests).
    """
    say = progress or (lambda _: None)
    started = time.perf_counter()
    stats = Stats()
    timings: dict[str, float] = {}
    shared = Dataset(patients, seed=seed).shared()

    def phase(name: str) -> None:
        stats.add(asyncio.run(write_chunks(url, [shared], name, batch_size, required_profiles)))
        if processes <= 0:
            stats.add(asyncio.run(write_chunks(url, _blocks(patients, seed, 0, 1), name,
                                               batch_size, required_profiles)))
            return
        # spawn: a clean interpreter per worker, whatever threads or loops this one has
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            for part in pool.imap_unordered(_worker, [
                    (name, url, patients, seed, i, processes, batch_size, required_profiles)
                    for i in range(processes)]):
                stats.add(part)

    definitions = asyncio.run(drop_secondary_indexes(url)) if processes > 0 else []
    say(f"bulk load: {patients} patients, {max(processes, 1)} process(es), "
        f"{len(definitions)} secondary indexes dropped until the COPY phase ends")
    phase("copy")
    timings["write_seconds"] = round(time.perf_counter() - started, 1)
    mark = time.perf_counter()
    asyncio.run(build_indexes(url, definitions, min(max(processes, 1), 2)))
    timings["index_seconds"] = round(time.perf_counter() - mark, 1)
    say(f"bulk load: {stats.resources} resources by COPY in {timings['write_seconds']} s, "
        f"indexes in {timings['index_seconds']} s; now {', '.join(sorted(THROUGH_SERVER))} "
        "through the server's write path")
    mark = time.perf_counter()
    phase("server")
    timings["server_seconds"] = round(time.perf_counter() - mark, 1)
    mark = time.perf_counter()
    asyncio.run(vacuum_analyze(url))
    timings["analyze_seconds"] = round(time.perf_counter() - mark, 1)
    seconds = time.perf_counter() - started
    return {"patients": patients, "resources": stats.resources, "processes": processes,
            "through_server": stats.through_server,
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
    print(f"{result['resources']} resources ({result['through_server']} through the server) in "
          f"{result['seconds']} s = {result['per_second']}/s")
    print({k: v for k, v in result.items() if k not in ("counts", "failures")})
    for failure in result["failures"]:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
