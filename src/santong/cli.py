"""The `santong` command: serve, migrate, generate, load, --version."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
from pathlib import Path

from santong import __version__
from santong.api.logging import configure_logging
from santong.settings import Settings, worker_count


def _fail(message: str, code: int = 1) -> int:
    print(f"santong: {message}", file=sys.stderr)
    return code


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _port_problem(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use"
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def _database_url(settings: Settings) -> str:
    """The configured database, or the embedded one (started here); exits on failure."""
    from santong.storage.database import (
        DatabaseUnavailable,
        normalise_url,
        start_embedded_postgres,
    )

    try:
        if settings.database_url:
            return normalise_url(settings.database_url)
        return start_embedded_postgres(settings.data_dir)
    except DatabaseUnavailable as exc:
        raise SystemExit(_fail(str(exc), 2)) from None
    except Exception as exc:
        raise SystemExit(_fail(f"invalid database configuration: {_one_line(exc)}", 2)) from None


def _migrate(url: str) -> None:
    from santong.storage.database import redact
    from santong.storage.migrate import upgrade

    try:
        upgrade(url)
    except Exception as exc:
        raise SystemExit(
            _fail(f"cannot use the database at {redact(url)}: {_one_line(exc)}", 2)
        ) from None


def serve(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in
                 {"host": args.host, "port": args.port, "data_dir": args.data_dir}.items()
                 if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings)
    problem = _port_problem(settings.host, settings.port)
    if problem:
        return _fail(problem)
    url = _database_url(settings)
    _migrate(url)

    import uvicorn

    from santong.api import processes
    from santong.api.app import FHIR_BASE, create_app
    from santong.storage.database import redact

    host_for_url = f"[{settings.host}]" if ":" in settings.host else settings.host
    database = (redact(url) if settings.database_url else
                f"embedded PostgreSQL in {settings.data_dir.expanduser().resolve() / 'pg'}")
    print(f"Santong {__version__} listening on http://{host_for_url}:{settings.port}", flush=True)
    print(f"  FHIR base:  http://{host_for_url}:{settings.port}{FHIR_BASE}", flush=True)
    print(f"  data dir:   {settings.data_dir.expanduser().resolve()}", flush=True)
    print(f"  database:   {database}", flush=True)
    common = dict(
        host=settings.host, port=settings.port, log_config=None, access_log=False,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
        log_level=settings.log_level.lower(), server_header=False,
    )
    # uvicorn re-raises SIGTERM once it has drained in-flight requests; exit cleanly then, so
    # atexit handlers run (they stop the embedded PostgreSQL).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    workers = worker_count(settings)
    print(f"  processes:  {workers} (SANTONG_WORKERS)", flush=True)
    if workers > 1:
        os.environ["SANTONG_DATABASE_URL"] = url  # the workers import the app themselves
        if processes.supported():  # a listening socket per process (see santong.api.processes)
            host, port = common.pop("host"), common.pop("port")
            return processes.serve(workers, host, port, common,  # type: ignore[arg-type]
                                   healthcheck=settings.worker_healthcheck_seconds)
        uvicorn.run(processes.APP, factory=True, workers=workers,
                    **common)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(settings, url), **common)  # type: ignore[arg-type]
    return 0


def migrate(args: argparse.Namespace) -> int:
    settings = Settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    configure_logging(settings)
    url = _database_url(settings)
    _migrate(url)
    from santong.storage.migrate import head_revision

    print(f"santong: database schema is at revision {head_revision()}")
    return 0


def generate(args: argparse.Namespace) -> int:
    import time
    from datetime import date

    from santong.generate import Dataset
    from santong.generate.output import write_bundles, write_ndjson

    if args.out is None and args.load is None:
        return _fail("generate needs --out DIR and/or --load URL")
    try:
        as_of = date.fromisoformat(args.as_of)
    except ValueError:
        return _fail(f"--as-of must be a date (YYYY-MM-DD), not {args.as_of!r}")
    dataset = Dataset(args.patients, seed=args.seed, as_of=as_of)
    if args.out is not None:
        started = time.monotonic()
        writer = write_ndjson if args.format == "ndjson" else write_bundles
        counts = writer(dataset, args.out)
        print(f"santong: wrote {sum(counts.values())} resources for {args.patients} patients "
              f"({args.format}) to {args.out} in {time.monotonic() - started:.1f} s")
    if args.load is not None:
        from santong.generate.load import load

        started = time.monotonic()
        result = load(dataset, args.load, mode=args.load_mode, workers=args.workers)
        print(f"santong: loaded {result.resources} resources into {args.load} with "
              f"{result.requests} requests in {time.monotonic() - started:.1f} s")
        for failure in result.failures:
            print(f"santong: {failure}", file=sys.stderr)
        if result.failures:
            return 1
    return 0


def load(args: argparse.Namespace) -> int:
    from santong.loader import database_sender, http_sender, run

    if args.url:
        sender = http_sender(args.url)
    else:
        settings = Settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
        configure_logging(settings)
        url = _database_url(settings)
        _migrate(url)
        sender = database_sender(url, pool_size=args.workers)
    return run(args.paths, sender, workers=args.workers, batch_size=args.batch_size,
               as_is=args.as_is, progress=False if args.no_progress else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="santong", description="Santong FHIR R4 server")
    parser.add_argument("--version", action="version", version=f"santong {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the FHIR server")
    serve_cmd.add_argument("--host", help="interface to listen on (SANTONG_HOST)")
    serve_cmd.add_argument("--port", type=int, help="port to listen on (SANTONG_PORT)")
    serve_cmd.add_argument("--data-dir", type=Path,
                           help="embedded database folder (SANTONG_DATA_DIR)")
    serve_cmd.set_defaults(run=serve)
    migrate_cmd = commands.add_parser("migrate", help="apply database migrations and exit")
    migrate_cmd.add_argument("--data-dir", type=Path,
                             help="embedded database folder (SANTONG_DATA_DIR)")
    migrate_cmd.set_defaults(run=migrate)
    load_cmd = commands.add_parser(
        "load", help="load Bundles, resources and NDJSON files (or folders of them)")
    load_cmd.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                          help=".json (Bundle or resource) and .ndjson files (or .gz of "
                               "them), or folders")
    load_cmd.add_argument("--url", metavar="FHIR_BASE",
                          help="a running server, e.g. http://127.0.0.1:8080/fhir (default: "
                               "the database directly, SANTONG_DATABASE_URL or embedded)")
    load_cmd.add_argument("--data-dir", type=Path,
                          help="embedded database folder (SANTONG_DATA_DIR)")
    load_cmd.add_argument("--workers", type=int, default=4, help="Bundles in flight (4)")
    load_cmd.add_argument("--batch-size", type=int, default=500,
                          help="resources per batch Bundle for NDJSON and loose files (500)")
    load_cmd.add_argument("--as-is", action="store_true",
                          help="send POSTs as they are (a re-run may then duplicate them)")
    load_cmd.add_argument("--no-progress", action="store_true", help="no progress bar")
    load_cmd.set_defaults(run=load)
    gen_cmd = commands.add_parser(
        "generate", help="generate a county medical community as FHIR data (deterministic)")
    gen_cmd.add_argument("--patients", type=int, default=100, help="residents (default 100)")
    gen_cmd.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    gen_cmd.add_argument("--format", choices=("ndjson", "bundles"), default="ndjson",
                         help="NDJSON per resource type, or transaction Bundles per patient")
    gen_cmd.add_argument("--out", type=Path, help="output folder")
    gen_cmd.add_argument("--as-of", default="2025-06-30",
                         help="the generated world's today (default 2025-06-30)")
    gen_cmd.add_argument("--load", metavar="FHIR_BASE",
                         help="also load the data into a running server, e.g. "
                              "http://127.0.0.1:8080/fhir")
    gen_cmd.add_argument("--load-mode", choices=("put", "transaction"), default="put",
                         help="PUT each resource with its id (default), or POST transactions")
    gen_cmd.add_argument("--workers", type=int, default=8, help="concurrent load requests")
    gen_cmd.set_defaults(run=generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
