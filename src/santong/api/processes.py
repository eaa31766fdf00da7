"""Several server processes on one port, each accepting on its own socket.

uvicorn's `--workers` shares one listening socket: whichever process wakes first accepts
every connection waiting, so clients that open their kept-alive connections together (a
connection pool, a load generator) all land on one process while the others idle — on the
2-core bench machine, reads at 16 clients ran at 3,700–3,800 req/s on one process against
5,100–5,300 when both had connections. With SO_REUSEPORT (Linux) each process listens on a
socket of its own bound to the same port, and the kernel spreads new connections over them.

The sockets are bound here, in the supervising process, and handed to the workers: a worker
that dies is started again on the same socket, whose queued connections wait for it.
Elsewhere (no SO_REUSEPORT load balancing) `santong serve` keeps uvicorn's own supervisor.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import threading
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


def _worker(app: str, app_dir: str | None, options: dict[str, Any], sock: socket.socket
            ) -> None:
    """One server process: the app (a factory, by import name), built here, answering on
    its own socket."""
    import uvicorn

    if app_dir is not None:
        sys.path.insert(0, app_dir)
    config = uvicorn.Config(app, factory=True, **options)
    uvicorn.Server(config).run(sockets=[sock])


def serve(count: int, host: str, port: int, options: dict[str, Any], *, app: str = APP,
          app_dir: str | None = None) -> int:
    """Run `count` server processes of the app factory `app` (uvicorn `options`) until SIGINT
    or SIGTERM, then stop them gracefully (each drains its requests, see uvicorn's
    timeout_graceful_shutdown); 0 then. A process whose app fails to start stops them all, as
    uvicorn's supervisor does (it would fail the same way every time): 1. The benchmark's bare
    app runs the same way."""
    multiprocessing.allow_connection_pickling()  # sockets travel to spawned processes
    spawn = multiprocessing.get_context("spawn")
    first = bind(host, port)
    sockets = [first, *(bind(host, first.getsockname()[1]) for _ in range(count - 1))]

    def start(sock: socket.socket) -> multiprocessing.process.BaseProcess:
        process = spawn.Process(target=_worker, args=(app, app_dir, options, sock),
                                daemon=False)
        process.start()
        return process

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    processes = [start(sock) for sock in sockets]
    status = 0
    try:
        while not stop.wait(0.5):
            for slot, process in enumerate(processes):
                if process.is_alive():
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    log.error("server process %s could not start its app; stopping", process.pid)
                    stop.set()
                    status = 1
                    break
                log.warning("server process %s ended (exit code %s); starting another",
                            process.pid, process.exitcode)
                processes[slot] = start(sockets[slot])
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn drains, then exits
        grace = float(options.get("timeout_graceful_shutdown") or 0) + 10
        for process in processes:
            process.join(grace)
            if process.is_alive():
                process.kill()
                process.join()
        for sock in sockets:
            sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
