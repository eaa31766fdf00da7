"""Test fixtures: a real PostgreSQL, the app in-process, and a real `santong serve` process.

The database is the embedded pgserver one, or `SANTONG_TEST_DATABASE_URL` when set; either way
the suite creates a fresh database of its own, migrates it and drops it at the end.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url
from tests.helpers import admin

from santong.api.app import create_app
from santong.settings import Settings
from santong.storage.database import (
    normalise_url,
    start_embedded_postgres,
)
from santong.storage.migrate import upgrade

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The PostgreSQL server the suite uses (its maintenance database)."""
    configured = os.environ.get("SANTONG_TEST_DATABASE_URL")
    if configured:
        return normalise_url(configured)
    return start_embedded_postgres(tmp_path_factory.mktemp("santong-data"))


@contextmanager
def _own_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new database on the test server, its URL, and the database dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    with _own_database(server_url, "santong_test") as url:
        upgrade(url)
        yield url


@pytest.fixture
def empty_database(server_url: str) -> Iterator[str]:
    """A database of its own, empty (not migrated), dropped after the test."""
    with _own_database(server_url, "santong_empty") as url:
        yield url


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings(max_body_bytes=64 * 1024, default_page_size=20, retry_after_seconds=7,
                    allow_explain=True)


@pytest.fixture(scope="session")
async def client(database_url: str, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client bound to the app in this process (lifespan run as a server would)."""
    app = create_app(settings, database_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver/fhir/") as c:
            yield c


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"santong serve exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("santong serve did not become healthy in time")


@pytest.fixture(scope="session")
def live_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `santong serve` process on a free port; yields its root URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("live") / "serve.log"
    env = {**os.environ, "SANTONG_DATABASE_URL": database_url, "SANTONG_PORT": str(port)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "santong", "serve"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        if os.environ.get("SANTONG_TEST_SHOW_SERVER_LOG"):
            print(log_path.read_text())
