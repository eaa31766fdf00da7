"""Connecting to PostgreSQL: the configured one, or an embedded one from the pgserver wheel."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """The database cannot be reached (or started); the message is one line for the user."""


def normalise_url(url: str) -> str:
    """Accept the usual spellings of a PostgreSQL URL and use the asyncpg driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername != "postgresql+asyncpg":
        raise DatabaseUnavailable(f"unsupported database URL scheme {parsed.drivername!r}")
    return parsed.render_as_string(hide_password=False)


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under `data_dir/pg` and return its URL.

    The server keeps running only while this process lives; its data stays in `data_dir`.
    """
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # pgserver runs postgres as an unprivileged user when we are root: it must reach the folder.
    if os.name == "posix" and os.geteuid() == 0:
        data_dir.chmod(0o755)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        try:
            server = pgserver.get_server(data_dir / "pg", cleanup_mode="stop")
        except Exception as exc:  # pgserver raises subprocess errors with details in its log
            raise DatabaseUnavailable(
                f"could not start the embedded PostgreSQL in {data_dir / 'pg'}: {exc}"
            ) from exc
    socket_dir = make_url(server.get_uri()).query.get("host")
    url = URL.create("postgresql+asyncpg", username="postgres", database="postgres",
                     query={"host": socket_dir} if socket_dir else {})
    return url.render_as_string(hide_password=False)


def asyncpg_connect_args(url: str | URL) -> dict[str, object]:
    """Keyword arguments for `asyncpg.connect` to the database a SQLAlchemy URL names."""
    parsed = make_url(url) if isinstance(url, str) else url
    args: dict[str, object] = {
        "user": parsed.username, "password": parsed.password, "database": parsed.database,
        "host": parsed.query.get("host") or parsed.host, "port": parsed.port,
    }
    return {k: v for k, v in args.items() if v is not None}


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        # No overflow: 16 clients on a pool of 10 made the pool open and close a connection
        # (a PostgreSQL backend) per request, and read throughput fell by a third.
        max_overflow=0,
        # No pre-ping (a round trip per request): the repository swaps a connection the
        # server has closed at checkout (asyncpg has seen the socket end); one that breaks
        # mid-request fails it with 503 and is discarded.
        pool_pre_ping=False,
        # Fail fast when the database is down, so clients get a prompt 503. No JIT: a search
        # whose estimate crosses jit_above_cost would spend tens of milliseconds compiling
        # a plan that runs in one (PostgreSQL builds with LLVM turn it on by default).
        connect_args={"timeout": 5, "command_timeout": 60, "server_settings": {"jit": "off"}},
    )
