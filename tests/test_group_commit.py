"""Group commit (santong.storage.group_commit): concurrent plain creates are written by one
statement, each answered only once it is committed, and a create that fails in a group fails
alone."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
from tests.helpers import patient, unique

from santong.api.app import create_app
from santong.fhir.storing import create_version_1, serialise_version
from santong.fhir.versioning import now
from santong.search.index import index_rows
from santong.settings import Settings
from santong.storage.database import create_engine
from santong.storage.repository import DuplicateId, Repository, Transaction

SYSTEM = "urn:test:group-commit"


def _with_identifier(value: str) -> dict[str, Any]:
    return patient(identifier=[{"system": SYSTEM, "value": value}])


def _queued(id: str, resource: dict[str, Any]) -> list[Any]:
    """A first version as a plain create's transaction hands it to the group commit."""
    tx = Transaction(None, lazy=True)  # type: ignore[arg-type]  # queues, runs nothing
    stored, content = serialise_version(resource, id, 1, now())
    tx.queue_first_version("Patient", id, now(), content, "POST", index_rows(stored))
    new = tx.take_lone_creates(16, 1 << 20)
    assert new is not None and len(new) == 1
    return new


async def test_concurrent_creates_share_a_statement_and_are_all_stored(
        database_url: str, settings: Settings) -> None:
    app = create_app(settings, database_url)
    values = [unique("gc") for _ in range(12)]
    async with app.router.lifespan_context(app):
        group_commit = app.state.router.repository.group_commit
        before = group_commit.statements, group_commit.callers
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/fhir/") as client:
            created = await asyncio.gather(*(
                client.post("Patient", json=_with_identifier(value)) for value in values))
            assert [r.status_code for r in created] == [201] * len(values)
            statements = group_commit.statements - before[0]
            callers = group_commit.callers - before[1]
            # Each answer came after its commit: the resource and its index rows are there.
            for response, value in zip(created, values, strict=True):
                read = await client.get(f"Patient/{response.json()['id']}")
                assert read.status_code == 200 and read.json() == response.json()
                found = (await client.get("Patient", params={
                    "identifier": f"{SYSTEM}|{value}"})).json()
                assert [e["resource"]["id"] for e in found.get("entry", [])] == [
                    response.json()["id"]]
    assert callers == len(values)
    assert statements < callers, (statements, callers)


async def test_a_create_that_fails_in_a_group_fails_alone(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=2)
    repository = Repository(engine)
    try:
        taken = unique("gc-taken")
        async with repository.transaction() as tx:
            await create_version_1(tx, _with_identifier("original"), taken, "POST", fresh=True)
        first, second = unique("gc-a"), unique("gc-b")
        statements = repository.group_commit.statements
        # Submitted before the writer runs: one group, which fails on the taken id.
        results = await asyncio.gather(
            repository.group_commit.write(_queued(first, _with_identifier("a"))),
            repository.group_commit.write(_queued(taken, _with_identifier("impostor"))),
            repository.group_commit.write(_queued(second, _with_identifier("b"))),
            return_exceptions=True)
        assert results[0] is None and results[2] is None, results
        assert isinstance(results[1], DuplicateId) and results[1].id == taken
        # The group's statement, then each caller's alone.
        assert repository.group_commit.statements - statements == 4
        async with repository.reading() as tx:
            for id, value in ((first, "a"), (second, "b"), (taken, "original")):
                stored = await tx.read_current("Patient", id)
                assert stored is not None and stored.version_id == 1 and stored.content
                assert f'"value":"{value}"'.encode() in stored.json_bytes()
    finally:
        await engine.dispose()


async def test_a_transaction_that_reads_commits_on_its_own(database_url: str) -> None:
    """Only a transaction that ran no statement hands its creates over: one that read (a
    conditional create's search, a lock) must commit them with what it read."""
    engine = create_engine(database_url, pool_size=2)
    repository = Repository(engine)
    try:
        statements = repository.group_commit.statements
        id = unique("gc-own")
        async with repository.transaction() as tx:
            assert await tx.read_current("Patient", unique("absent")) is None
            await create_version_1(tx, _with_identifier("own"), id, "POST", fresh=True)
        assert repository.group_commit.statements == statements
        async with repository.transaction() as tx:
            await create_version_1(tx, _with_identifier("grouped"), unique("gc"), "POST",
                                   fresh=True)
        assert repository.group_commit.statements == statements + 1
        async with repository.reading() as tx:
            assert await tx.read_current("Patient", id) is not None
    finally:
        await engine.dispose()


def test_a_writer_left_by_a_closed_event_loop_does_not_hold_up_the_next() -> None:
    """A process that closes an event loop without finishing its tasks (and starts another)
    must not leave later writes waiting on a writer that will never run again."""
    from santong.storage.group_commit import GroupCommit

    written: list[list[str]] = []
    stuck = asyncio.Event()

    async def write_items(items: list[str]) -> None:
        if items == ["first"]:
            await stuck.wait()  # never set: its loop goes away meanwhile
        written.append(items)

    group_commit: GroupCommit[str] = GroupCommit(write_items)
    abandoned = asyncio.new_event_loop()
    first = abandoned.create_task(group_commit.write(["first"]))
    abandoned.run_until_complete(asyncio.sleep(0.01))  # the writer is inside write_items
    try:
        asyncio.run(asyncio.wait_for(group_commit.write(["second"]), timeout=5))
        assert written == [["second"]]
    finally:  # the old loop's writer, when it finally stops, leaves the new state alone
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            abandoned.run_until_complete(first)
        abandoned.run_until_complete(asyncio.sleep(0.01))
        abandoned.close()
    asyncio.run(asyncio.wait_for(group_commit.write(["third"]), timeout=5))
    assert written == [["second"], ["third"]]


async def test_a_plain_create_takes_one_pooled_connection(database_url: str) -> None:
    """Its transaction runs no statement, so it takes no connection of its own: only the
    group commit's write does. One that reads takes one at its first statement."""
    from sqlalchemy import event

    engine = create_engine(database_url, pool_size=2)
    repository = Repository(engine)
    checkouts: list[object] = []
    event.listen(engine.sync_engine.pool, "checkout", lambda *args: checkouts.append(args))
    try:
        async with repository.transaction() as tx:
            await create_version_1(tx, _with_identifier("lazy"), unique("gc"), "POST",
                                   fresh=True)
        assert len(checkouts) == 1
        async with repository.transaction() as tx:
            assert await tx.read_current("Patient", unique("absent")) is None
            await create_version_1(tx, _with_identifier("eager"), unique("gc"), "POST",
                                   fresh=True)
        assert len(checkouts) == 2
    finally:
        await engine.dispose()


def test_a_group_that_loses_its_connection_fails_at_once() -> None:
    """A failure the rows did not cause (a lost connection, a timeout) fails every caller of
    the group together: written again one by one, each would only wait for it in turn. One
    the rows may have caused is retried caller by caller (the test above)."""
    from santong.storage.group_commit import GroupCommit

    attempts: list[list[str]] = []

    async def write_items(items: list[str]) -> None:
        attempts.append(items)
        raise ConnectionResetError("the server closed the connection")

    async def main() -> list[BaseException | None]:
        group_commit: GroupCommit[str] = GroupCommit(
            write_items, own_failure=lambda exc: not isinstance(exc, OSError))
        return await asyncio.gather(*(group_commit.write([name]) for name in "abc"),
                                    return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, ConnectionResetError) for r in results), results
    assert attempts == [["a", "b", "c"]]


def test_a_writer_cancelled_before_it_ran_is_replaced() -> None:
    """A writer cancelled before its first step (a loop shutting down cancels every task)
    never cleans up after itself: the next write starts another, which also writes what the
    first one left waiting."""
    from santong.storage.group_commit import GroupCommit

    written: list[list[str]] = []

    async def write_items(items: list[str]) -> None:
        written.append(items)

    async def main() -> None:
        group_commit: GroupCommit[str] = GroupCommit(write_items)
        first = asyncio.create_task(group_commit.write(["a"]))
        await asyncio.sleep(0)  # `first` queued itself and started the writer task
        assert group_commit._writer is not None
        group_commit._writer.cancel()
        await asyncio.sleep(0)
        await asyncio.wait_for(group_commit.write(["b"]), timeout=5)
        await asyncio.wait_for(first, timeout=5)

    asyncio.run(main())
    assert written == [["a", "b"]]


async def test_a_large_create_commits_on_its_own(database_url: str) -> None:
    """A create of much JSON (a large Binary) is not grouped: its long statement would hold
    up the small creates grouped with it."""
    import base64

    engine = create_engine(database_url, pool_size=2)
    repository = Repository(engine)
    try:
        statements = repository.group_commit.statements
        large = {"resourceType": "Binary", "contentType": "application/octet-stream",
                 "data": base64.b64encode(b"x" * 300_000).decode()}
        id = unique("gc-large")
        async with repository.transaction() as tx:
            await create_version_1(tx, large, id, "POST", fresh=True)
        assert repository.group_commit.statements == statements
        async with repository.reading() as tx:
            assert await tx.read_current("Binary", id) is not None
    finally:
        await engine.dispose()
