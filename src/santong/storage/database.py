"""Connecting to PostgreSQL: the configured one, or an embedded one from the pgserver wheel."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

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
    pgdata = data_dir / "pg"
    # Another process's server (its pid file present) is not restarted under it.
    started_here = not (pgdata / "postmaster.pid").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        try:
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
            if _configure(server, embedded_settings()) and started_here:
                server = _restart_if_alone(server, pgdata)
        except Exception as exc:  # pgserver raises subprocess errors with details in its log
            raise DatabaseUnavailable(
                f"could not start the embedded PostgreSQL in {pgdata}: {exc}"
            ) from exc
    socket_dir = make_url(server.get_uri()).query.get("host")
    url = URL.create("postgresql+asyncpg", username="postgres", database="postgres",
                     query={"host": socket_dir} if socket_dir else {})
    return url.render_as_string(hide_password=False)


def _restart_if_alone(server: Any, pgdata: Path) -> Any:
    """shared_buffers is read at start: stop the server and start it again, when this
    process is its only user (pgserver's handle list). Another process holding it keeps it
    running: the settings then apply at its next start."""
    import pgserver

    if server.global_process_id_list.get() != [os.getpid()]:
        return server
    server.cleanup()  # stops it unless another process took a handle meanwhile
    if (pgdata / "postmaster.pid").exists():  # still running: keep our handle on it
        server.global_process_id_list.get_and_add(os.getpid())
        return server
    atexit.unregister(server._cleanup)
    return pgserver.get_server(pgdata, cleanup_mode="stop")


def embedded_settings() -> dict[str, str]:
    """The embedded server's settings beyond initdb's defaults, for a write-heavy store.

    A checkpoint every 1 GB of WAL (the default) came every 10–45 s under the benchmark's
    writes, and after each one the first change to every page writes the whole page to the
    WAL: 2.7 MB of WAL per 107-resource Bundle, against 1.1 MB with checkpoints at 4 GB or
    15 minutes. 128 MB of shared buffers held too little of the index tables' pages.
    Together: PostgreSQL's CPU per Bundle about a tenth lower. Shared buffers are a sixteenth
    of the memory available (a container's limit when lower), between 128 MB and 1 GB; a
    server of one's own is tuned by its operator (README, Production).
    """
    shared_mb = min(1024, max(128, memory_available() // 16 // 2**20))
    return {"shared_buffers": f"{shared_mb}MB", "max_wal_size": "4GB",
            "checkpoint_timeout": "15min"}


def memory_available(cgroup: Path = Path("/sys/fs/cgroup"),
                     membership: Path = Path("/proc/self/cgroup")) -> int:
    """The machine's memory in bytes, or the lowest memory limit of this process's cgroup and
    its ancestors (a container's, a service's) when lower; 0 when none can be read."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        memory = 0
    for limit in _cgroup_limits(cgroup, membership):
        memory = min(memory, limit) if memory else limit
    return memory


def _cgroup_limits(cgroup: Path, membership: Path) -> list[int]:
    """Memory limits (cgroup v2 memory.max, v1 memory.limit_in_bytes) on the way from this
    process's cgroup up to the root; "max" (no limit) is left out."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    places: list[tuple[Path, str, str]] = []  # (hierarchy root, cgroup path, limit file)
    for line in lines:
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if line.startswith("0::"):
            places.append((cgroup, path, "memory.max"))
        elif "memory" in controllers.split(","):
            places.append((cgroup / "memory", path, "memory.limit_in_bytes"))
    if not places:  # no membership to read: the roots
        places = [(cgroup, "/", "memory.max"), (cgroup / "memory", "/", "memory.limit_in_bytes")]
    limits = []
    for root, path, name in places:
        directory = root / path.strip("/")
        for _ in range(64):  # nesting depth, bounded
            with contextlib.suppress(OSError, ValueError):  # no such file; "max"
                limits.append(int((directory / name).read_text().strip()))
            if directory == root or root not in directory.parents:
                break
            directory = directory.parent
    return limits


def _configure(server: object, settings: dict[str, str]) -> bool:
    """Persist `settings` (ALTER SYSTEM) and apply those a reload can; True when the server
    runs with other shared buffers, which only a restart changes."""
    statements = "".join(f"ALTER SYSTEM SET {name} = '{value}';\n"
                         for name, value in settings.items())
    output = server.psql(  # type: ignore[attr-defined]
        statements + "SELECT pg_reload_conf();\n"
        "SELECT 'shared_buffers_mb=' || setting::bigint * 8192 / 1048576"
        " FROM pg_settings WHERE name = 'shared_buffers';\n")
    running = re.search(r"shared_buffers_mb=(\d+)", output)
    wanted = int(settings["shared_buffers"].removesuffix("MB"))
    return running is not None and int(running.group(1)) != wanted


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
        # a plan that runs in one (PostgreSQL builds with LLVM turn it on by default). No
        # parallel workers either: starting them took 15-18 ms for a page walk that runs in
        # 3 ms alone (an Encounter date month at 10,000 patients), and the cores they take
        # serve the other requests. Many small statements at once is this server's load.
        connect_args={"timeout": 5, "command_timeout": 60, "server_settings": {
            "jit": "off", "max_parallel_workers_per_gather": "0"}},
    )
