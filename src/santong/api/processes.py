"""Several server processes on one port, each accepting on its own socket.

uvicorn's `--workers` shares one listening socket: whichever process wakes first accepts
every connection waiting, so clients that open their kept-alive connections together (a
connection pool, a load generator) all land on one process while the others idle — on the
2-core bench machine, reads at 16 clients ran at 3,700–3,800 req/s on one process against
5,100–5,300 when both had connections. With SO_REUSEPORT (Linux) each process listens on a
socket of its own bound to the same port, and the kernel spreads new connections over them.

The sockets are bound here, in the supervising process, and handed to the workers: a worker
that dies is started again on the same socket, whose queued connections wait for it. A
worker whose event loop stops answering the supervisor's pings over a pipe (blocked,
deadlocked, stopped) is killed and replaced the same way: it would otherwise keep its
socket's share of new connections and answer none. uvicorn's supervisor answers its pings
from a thread, which a blocked event loop does not stop; here the loop itself answers.
Elsewhere (no SO_REUSEPORT load balancing) `santong serve` keeps uvicorn's own supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from uvicorn.config import STARTUP_FAILURE  # a worker's exit code when its app cannot start

log = logging.getLogger("santong.serve")
APP = "santong.api.app:create_app"


def supported() -> bool:
    """Whether the kernel balances connections over sockets sharing a port (Linux 3.9+)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port that other sockets may bind to as well."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(app: str, app_dir: str | None, options: dict[str, Any], sock: socket.socket,
            pings: Connection) -> None:
    """One server process: the app (a factory, by import name), built here, answering on
    its own socket, and its event loop answering the supervisor's pings once started."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            loop = asyncio.get_running_loop()

            def answer() -> None:
                try:
                    while pings.poll():
                        pings.recv_bytes()
                        pings.send_bytes(b"pong")
                except (EOFError, OSError):  # the supervisor is gone
                    loop.remove_reader(pings.fileno())

            loop.add_reader(pings.fileno(), answer)

    if app_dir is not None:
        sys.path.insert(0, app_dir)
    config = uvicorn.Config(app, factory=True, **options)
    Server(config).run(sockets=[sock])


class _Slot:
    """A socket, the process serving it and the pipe it answers pings on."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.process: multiprocessing.process.BaseProcess | None = None
        self.pings: Connection | None = None
        self.answered = False  # has the process's event loop answered since it started?
        self.pinged_at: float | None = None  # when the unanswered ping was sent

    def check(self, healthcheck: float, now: float) -> bool:
        """Read the answers; ping again; False when a ping has waited `healthcheck` seconds
        for a process that answered before (one still starting its app is left alone)."""
        assert self.pings is not None
        try:
            while self.pings.poll():
                self.pings.recv_bytes()
                self.answered, self.pinged_at = True, None
            if self.pinged_at is None:
                self.pings.send_bytes(b"ping")
                self.pinged_at = now
        except (EOFError, OSError):  # the process is gone: the restart deals with it
            return True
        return not (self.answered and now - self.pinged_at > healthcheck)


def serve(count: int, host: str, port: int, options: dict[str, Any], *, app: str = APP,
          app_dir: str | None = None, healthcheck: float = 30.0) -> int:
    """Run `count` server processes of the app factory `app` (uvicorn `options`) until SIGINT
    or SIGTERM, then stop them gracefully (each drains its requests, see uvicorn's
    timeout_graceful_shutdown); 0 then. A process whose app fails to start stops them all, as
    uvicorn's supervisor does (it would fail the same way every time): 1. A process whose
    event loop has not answered a ping for `healthcheck` seconds (0: never checked) is killed
    and replaced. The benchmark's bare app runs the same way."""
    multiprocessing.allow_connection_pickling()  # sockets travel to spawned processes
    spawn = multiprocessing.get_context("spawn")
    first = bind(host, port)
    slots = [_Slot(first), *(_Slot(bind(host, first.getsockname()[1]))
                             for _ in range(count - 1))]

    def start(slot: _Slot) -> None:
        if slot.pings is not None:
            slot.pings.close()
        slot.pings, theirs = spawn.Pipe()
        slot.answered, slot.pinged_at = False, None
        slot.process = spawn.Process(target=_worker, daemon=False,
                                     args=(app, app_dir, options, slot.sock, theirs))
        slot.process.start()
        theirs.close()  # the child holds its own copy

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    for slot in slots:
        start(slot)
    status = 0
    try:
        while not stop.wait(0.5):
            for slot in slots:
                process = slot.process
                assert process is not None
                if process.is_alive():
                    if healthcheck and not slot.check(healthcheck, time.monotonic()):
                        log.error("server process %s has not answered for %.0f s; killing it",
                                  process.pid, healthcheck)
                        process.kill()  # replaced once it is gone (next round)
                        slot.answered = False  # not flagged again while it goes
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    log.error("server process %s could not start its app; stopping", process.pid)
                    stop.set()
                    status = 1
                    break
                log.warning("server process %s ended (exit code %s); starting another",
                            process.pid, process.exitcode)
                start(slot)
    finally:
        processes = [slot.process for slot in slots if slot.process is not None]
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn drains, then exits
        grace = float(options.get("timeout_graceful_shutdown") or 0) + 10
        for process in processes:
            process.join(grace)
            if process.is_alive():
                process.kill()
                process.join()
        for slot in slots:
            slot.sock.close()
            if slot.pings is not None:
                slot.pings.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
