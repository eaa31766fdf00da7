"""Group commit: the plain creates of concurrent requests written by one statement.

A create under a server-drawn id needs nothing from the database before it is written: its
transaction queues it and flushes it alone, one autocommit statement (see
santong.storage.repository). PostgreSQL spends about as much on running a statement and
committing it as on the rows of a small resource — measured on a 2-core machine: 0.8–1.0 ms
of backend CPU per Patient written alone, 0.4–0.55 ms each in groups of 4 to 8. So creates
that reach their commit while another group is being written wait for it and go together in
the next statement, as PostgreSQL's own group commit does for WAL flushes. There is no timer:
a create that finds no group in progress is written at once.

Each request is answered only after the statement holding its resources committed. A group
PostgreSQL rejects is written again one request at a time, so a row it cannot hold, or a taken
id, fails only the request it came from; a lost connection or a timeout fails the group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")


@dataclass(slots=True)
class _Waiting(Generic[Item]):
    items: list[Item]
    written: asyncio.Future[None]


class GroupCommit(Generic[Item]):
    """Writes the items of concurrent `write` calls in groups, one group at a time.

    `write_items` writes a list of items atomically (all or none) and commits; a group holds
    up to `max_items` items (at least one caller's). `own_failure` tells a failure the rows
    themselves may have caused (one PostgreSQL reported): the group's callers are then
    written again one by one. Any other (a lost connection, a timeout) fails the whole group
    at once: each caller alone would only wait for it again, one after another."""

    def __init__(self, write_items: Callable[[list[Item]], Awaitable[None]], *,
                 own_failure: Callable[[Exception], bool] = lambda exc: True,
                 max_items: int = 64) -> None:
        self._write_items = write_items
        self._own_failure = own_failure
        self._max_items = max_items
        self._waiting: list[_Waiting[Item]] = []
        self._writer: asyncio.Task[None] | None = None
        # Statements written and the callers they answered (for tests and monitoring).
        self.statements = 0
        self.callers = 0

    async def write(self, items: list[Item]) -> None:
        """Write `items` (all or none), together with other callers' when they coincide;
        return once they are committed, or raise what failed them."""
        loop = asyncio.get_running_loop()
        if self._writer is not None and self._writer.get_loop() is not loop:
            # Left behind by an event loop that was closed (a test's, a CLI run's): its
            # writer and callers are gone with it.
            self._writer, self._waiting = None, []
        elif self._writer is not None and self._writer.done():
            # Cancelled before it ran (its cleanup never ran): the next writer takes over
            # whoever still waits.
            self._writer = None
        waiting = _Waiting(items, loop.create_future())
        self._waiting.append(waiting)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_waiting())
        # A caller cancelled before its group starts is dropped from it (never written).
        await waiting.written

    def _next_group(self) -> list[_Waiting[Item]]:
        group: list[_Waiting[Item]] = []
        count = 0
        while self._waiting and (not group or count + len(self._waiting[0].items)
                                 <= self._max_items):
            waiting = self._waiting.pop(0)
            if not waiting.written.done():  # done: its caller was cancelled
                group.append(waiting)
                count += len(waiting.items)
        return group

    async def _write_waiting(self) -> None:
        this = asyncio.current_task()
        group: list[_Waiting[Item]] = []
        try:
            while self._writer is this and self._waiting:
                group = self._next_group()
                if group:
                    await self._write_group(group)
                group = []
        except BaseException as exc:  # cancelled (the process stopping): no one may hang
            failure = exc if isinstance(exc, Exception) else ConnectionError(
                "the server stopped before the write was committed")
            for waiting in group:
                _settle(waiting, failure)
            if self._writer is this:
                for waiting in self._waiting:
                    _settle(waiting, failure)
                self._waiting = []
            raise
        finally:
            if self._writer is this:  # not replaced (see `write`)
                self._writer = None

    async def _write_group(self, group: list[_Waiting[Item]]) -> None:
        self.statements += 1
        self.callers += len(group)
        try:
            await self._write_items([item for waiting in group for item in waiting.items])
        except Exception as exc:
            if len(group) == 1 or not self._own_failure(exc):
                for waiting in group:
                    _settle(waiting, exc)
                return
            # Whose rows failed it is not known: each caller's alone, so only theirs fail.
            for waiting in group:
                if waiting.written.done():  # its caller was cancelled meanwhile
                    continue
                self.statements += 1
                try:
                    await self._write_items(waiting.items)
                except Exception as own:
                    _settle(waiting, own)
                else:
                    _settle(waiting, None)
            return
        for waiting in group:
            _settle(waiting, None)


def _settle(waiting: _Waiting[Item], failure: BaseException | None) -> None:
    if waiting.written.done():  # its caller was cancelled meanwhile
        return
    if failure is None:
        waiting.written.set_result(None)
    else:
        waiting.written.set_exception(failure)
