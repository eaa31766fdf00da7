"""The raw limit of a Python HTTP service on this machine: a bare FastAPI + asyncpg app.

No validation, no versioning, no history, no search indexing: POST parses the JSON (the least a
server must do), inserts one row (id, content text) and returns 201 with the body; GET selects
it by id; PUT updates it; GET /ping answers without touching the database. Served by uvicorn
(as many worker processes as `santong serve`, each on its own socket where it can be, uvloop +
httptools), with a pool of 10 connections.

Usage: python bench/bare_app.py --port P --dsn postgresql://postgres@/db --host-dir SOCKETDIR
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response

from santong.api import processes

SCHEMA = "CREATE TABLE IF NOT EXISTS bare_resource (id text PRIMARY KEY, content text NOT NULL)"
FHIR_JSON = "application/fhir+json"


def create_app(dsn: str, host_dir: str | None, pool_size: int = 10) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        extra = {"host": host_dir} if host_dir else {}
        app.state.pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size,
                                                   **extra)
        async with app.state.pool.acquire() as connection:
            await connection.execute(SCHEMA)
        yield
        await app.state.pool.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/ping")
    async def ping() -> Response:
        return Response(b"ok", media_type="text/plain")

    @app.post("/fhir/{rtype}")
    async def create(rtype: str, request: Request) -> Response:
        body = await request.body()
        resource = orjson.loads(body)
        rid = str(uuid.uuid4())
        resource["id"] = rid
        content = orjson.dumps(resource)
        async with request.app.state.pool.acquire() as connection:
            await connection.execute("INSERT INTO bare_resource (id, content) VALUES ($1, $2)",
                                     rid, content.decode())
        return Response(content, status_code=201, media_type=FHIR_JSON,
                        headers={"Location": f"/fhir/{rtype}/{rid}"})

    @app.get("/fhir/{rtype}/{rid}")
    async def read(rtype: str, rid: str, request: Request) -> Response:
        async with request.app.state.pool.acquire() as connection:
            content = await connection.fetchval(
                "SELECT content FROM bare_resource WHERE id = $1", rid)
        if content is None:
            return Response(b'{"resourceType":"OperationOutcome"}', status_code=404,
                            media_type=FHIR_JSON)
        return Response(content.encode(), media_type=FHIR_JSON)

    @app.put("/fhir/{rtype}/{rid}")
    async def update(rtype: str, rid: str, request: Request) -> Response:
        resource = orjson.loads(await request.body())
        resource["id"] = rid
        content = orjson.dumps(resource)
        async with request.app.state.pool.acquire() as connection:
            await connection.execute(
                "INSERT INTO bare_resource (id, content) VALUES ($1, $2) "
                "ON CONFLICT (id) DO UPDATE SET content = EXCLUDED.content", rid, content.decode())
        return Response(content, media_type=FHIR_JSON)

    return app


def app_from_environment() -> FastAPI:
    """The app of a worker process (uvicorn imports it by name when --workers > 1)."""
    return create_app(os.environ["BARE_DSN"], os.environ.get("BARE_HOST_DIR") or None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--host-dir")
    parser.add_argument("--workers", type=int, default=1, help="processes, as Santong's")
    args = parser.parse_args()
    common = dict(host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                  server_header=False)
    if args.workers > 1:
        os.environ.update(BARE_DSN=args.dsn, BARE_HOST_DIR=args.host_dir or "")
        if processes.supported():  # a listening socket per process, as `santong serve`
            host, port = common.pop("host"), common.pop("port")
            raise SystemExit(processes.serve(
                args.workers, host, port, common, app="bare_app:app_from_environment",
                app_dir=str(Path(__file__).parent)))  # type: ignore[arg-type]
        else:
            uvicorn.run("bare_app:app_from_environment", factory=True, workers=args.workers,
                        app_dir=str(Path(__file__).parent), **common)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(args.dsn, args.host_dir), **common)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
