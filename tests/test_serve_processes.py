"""`santong serve` with several processes (santong.api.processes): kept-alive connections
opened together are spread over the processes, a process that dies is replaced, and SIGTERM
stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import free_port, wait_until_healthy

from santong.api import processes

pytestmark = pytest.mark.skipif(not processes.supported(),
                                reason="SO_REUSEPORT balancing is Linux's")
Served = tuple[str, int, subprocess.Popen[bytes]]


def _children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(stat[1]) == pid and b"resource_tracker" not in cmdline:
            found.append(int(proc.name))
    return sorted(found)


def _sockets_on(port: int, state: str) -> set[int]:
    """Inodes of the TCP sockets on local `port` in `state` (01 ESTABLISHED, 0A LISTEN)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == state:
                    inodes.add(int(fields[9]))
    return inodes


def _established(port: int) -> set[int]:
    """Socket inodes of the server's side of established TCP connections to `port`."""
    return _sockets_on(port, "01")


def _sockets_of(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


# Short, so a stopped process is found quickly; the processes answer well within it.
HEALTHCHECK_SECONDS = 3


@pytest.fixture
def two_processes(database_url: str, tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    env = {**os.environ, "SANTONG_DATABASE_URL": database_url, "SANTONG_WORKERS": "2",
           "SANTONG_WORKER_HEALTHCHECK_SECONDS": str(HEALTHCHECK_SECONDS)}
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "santong", "serve", "--port", str(port)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, server)
        # Both processes listening (uvicorn listens once the app has started), not only the
        # first: until then every connection goes to the first.
        deadline = time.monotonic() + 60
        while len(_sockets_on(port, "0A")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        yield url, port, server
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=60)


def test_connections_opened_together_reach_every_process(two_processes: Served) -> None:
    _, port, server = two_processes
    workers = _children(server.pid)
    assert len(workers) == 2, workers
    assert len(_sockets_on(port, "0A")) == 2  # a listening socket each
    for _ in range(3):
        held = _burst(port, workers)
        assert sum(held.values()) == 16, held
        assert all(count > 0 for count in held.values()), held


def _burst(port: int, workers: list[int]) -> dict[int, int]:
    """Open 16 kept-alive connections at once, as a client's pool or wrk does, make a request
    on each, and count each process's share. Behind uvicorn's one shared socket a single
    process took all 16 in two tries of three; with a socket each, the kernel spreads them
    (all 16 on one of two sockets by chance: 1 in 32,768)."""
    connections = []
    try:
        for _ in range(16):
            connection = socket.socket()
            connection.setblocking(False)
            connection.connect_ex(("127.0.0.1", port))  # all in flight together
            connections.append(connection)
        time.sleep(0.2)
        for connection in connections:
            connection.setblocking(True)
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        for connection in connections:
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")
        established = _established(port)
        return {pid: len(_sockets_of(pid) & established) for pid in workers}
    finally:
        for connection in connections:
            connection.close()


def test_a_process_that_dies_is_replaced_and_sigterm_stops_all(two_processes: Served) -> None:
    url, _, server = two_processes
    first, second = _children(server.pid)
    os.kill(first, signal.SIGKILL)
    replacement = _replaced(server, first) - {second}
    assert len(replacement) == 1 and first not in replacement
    _every_socket_answers(url)
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in (second, *replacement))


def test_an_app_that_cannot_start_stops_the_processes() -> None:
    """A process whose app fails to start would fail the same way on every restart: serve
    stops them all and says so in its exit status, as uvicorn's supervisor does."""
    started = time.monotonic()
    status = processes.serve(2, "127.0.0.1", free_port(), {"log_level": "critical"},
                             app="santong_no_such_module:create_app")
    assert status == 1
    assert time.monotonic() - started < 60


def test_a_process_that_stops_answering_is_replaced(two_processes: Served) -> None:
    """A process whose event loop no longer answers the supervisor (here: SIGSTOP, as a
    blocked loop or a deadlock would) is killed and replaced; answering ones are left alone."""
    url, _, server = two_processes
    first, second = _children(server.pid)
    time.sleep(HEALTHCHECK_SECONDS * 2)  # both answer their pings: neither is touched
    assert _children(server.pid) == [first, second]
    os.kill(first, signal.SIGSTOP)
    try:
        now = _replaced(server, first)
        assert first not in now and not Path(f"/proc/{first}").exists()
    finally:
        if Path(f"/proc/{first}").exists():
            os.kill(first, signal.SIGCONT)
    assert second in now and len(now) == 2
    _every_socket_answers(url)


def _replaced(server: subprocess.Popen[bytes], gone: int) -> set[int]:
    """The server's processes once `gone` is no longer among two of them (or after 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _children(server.pid)
        if len(now) == 2 and gone not in now:
            break
        time.sleep(0.2)
    return set(_children(server.pid))


def _every_socket_answers(url: str) -> None:
    """New connections (spread over both sockets) are all answered, a replacement's too."""
    for _ in range(20):
        response = httpx.get(f"{url}/fhir/metadata", headers={"Connection": "close"}, timeout=30)
        assert response.status_code == 200
