"""The ASGI application: a thin FastAPI adapter over `santong.fhir.router.Router`.

It turns HTTP into a FhirRequest (enforcing the body size limit), hands it to the core and
writes the FhirResponse back; `/healthz` and `/readyz` serve orchestrators.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.datastructures import URL
from starlette.types import ASGIApp, Receive, Scope, Send

from santong import __version__, packages
from santong.api.logging import RequestLogMiddleware, configure_logging
from santong.fhir import jsonio
from santong.fhir.context import RequestContext
from santong.fhir.formats import FHIR_JSON, response_media_type, wants_pretty
from santong.fhir.outcome import FhirError, error
from santong.fhir.request import FhirRequest, FhirResponse
from santong.fhir.router import Router
from santong.search import ucum
from santong.search.index import index_rows
from santong.search.registry import CustomParameters
from santong.settings import Settings, get_settings, worker_count
from santong.storage.database import create_engine
from santong.storage.migrate import current_revision, head_revision
from santong.storage.repository import Repository
from santong.validation import validate_resource
from santong.validation.registry import ProfileRegistry

log = logging.getLogger("santong")
FHIR_BASE = "/fhir"
_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


@lru_cache(maxsize=64)  # bounded: the Host header is the client's
def _server_base(scheme: str, host: str | None, server: tuple[str, int] | None,
                 root_path: str) -> str:
    """The server's base URL as Starlette's `Request.base_url` gives it."""
    scope: dict[str, Any] = {"type": "http", "scheme": scheme, "server": server,
                             "path": root_path if root_path.endswith("/") else root_path + "/",
                             "query_string": b"", "root_path": root_path,
                             "headers": [] if host is None else [(b"host", host.encode("latin-1"))]}
    return str(URL(scope=scope)).rstrip("/")


def base_url(scope: Scope, headers: dict[str, str], settings: Settings) -> str:
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    server = scope.get("server")
    return _server_base(scope.get("scheme", "http"), headers.get("host"),
                        tuple(server) if server else None,
                        scope.get("app_root_path", scope.get("root_path", ""))) + FHIR_BASE


def to_http(fhir_request: FhirRequest, response: FhirResponse
            ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of the HTTP answer."""
    try:
        media_type = response_media_type(fhir_request)
    except FhirError:
        media_type = FHIR_JSON  # errors (including the 406 itself) are still sent as JSON
    body = b""
    if response.body is not None or response.resource is not None:
        body = response.body if response.body is not None else jsonio.dumps(response.resource)
        if wants_pretty(fhir_request):
            body = jsonio.prettify(body)
    if fhir_request.method == "HEAD" or response.status == 304:
        body = b""
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
               for k, v in response.headers.items()]
    if response.status >= 200 and response.status not in (204, 304):
        headers.append((b"content-length", str(len(body)).encode()))
    if body or fhir_request.method == "HEAD":
        headers.append((b"content-type", f"{media_type}; charset=utf-8".encode()))
    return response.status, headers, body


class FhirRoutes:
    """The FHIR REST API under /fhir, answered before FastAPI's routing.

    The core parses FHIR requests itself, so Starlette's Request, routing and Response added
    nothing but cost (about a fifth of a read's CPU, py-spy); health and readiness stay
    FastAPI routes. Inside the request log (which gives the request id) and FastAPI's error
    handling.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.rebalance = worker_count(settings) > 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        root_path = scope.get("root_path", "")
        if root_path and path.startswith(root_path + "/"):
            path = path[len(root_path):]
        if path != FHIR_BASE and not path.startswith(FHIR_BASE + "/"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        fhir_request = FhirRequest(
            method=scope["method"],
            path=path[len(FHIR_BASE):].strip("/"),
            query=parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                            keep_blank_values=True),
            headers=headers,
            base_url=base_url(scope, headers, self.settings),
            context=RequestContext(request_id=scope.get("state", {}).get("request_id")),
        )
        try:
            if scope["method"] not in _METHODS:
                raise error(405, "not-supported", f"{scope['method']} is not a FHIR interaction",
                            headers={"Allow": ", ".join(_METHODS)})
            if scope["method"] in ("POST", "PUT", "PATCH"):
                fhir_request.body = await read_body(receive, headers,
                                                    self.settings.max_body_bytes)
        except ClientGone:
            return
        except BodyTooLarge:
            response = _error_response(error(
                413, "too-costly", f"The body exceeds the limit of {self.settings.max_body_bytes}"
                " bytes (SANTONG_MAX_BODY_BYTES)"))
        except FhirError as exc:
            response = _error_response(exc)
        else:
            response = await scope["app"].state.router.handle(fhir_request)
        status, response_headers, body = to_http(fhir_request, response)
        if self.rebalance and fhir_request.method == "POST" and not fhir_request.path:
            # A batch or transaction Bundle is tens of milliseconds of one process's CPU. A
            # client's few kept-alive connections stay with the processes that accepted them,
            # possibly all with one (behind uvicorn's shared socket, one process accepts every
            # waiting connection; with a socket per process, santong.api.processes, the kernel
            # may still hash them together), leaving other cores idle. Closed after each
            # Bundle, the next connection is placed afresh. Reconnecting costs far less.
            response_headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status,
                    "headers": response_headers})
        await send({"type": "http.response.body", "body": body})


def warm_write_path() -> None:
    """Validate and index the bundled guide's examples once, discarding the results."""
    folder = packages.bundled_package_dir()
    for path in sorted((folder / "example").glob("*.json")) if folder else ():
        try:
            resource = jsonio.loads(path.read_bytes())
            validate_resource(resource)
            index_rows(resource)
        except Exception as exc:  # only a warm-up: the first real write reports any problem
            log.debug("warm-up skipped %s: %s", path.name, exc)


def create_app(settings: Settings | None = None, database_url: str | None = None) -> FastAPI:
    if settings is None:  # a worker process started by uvicorn: configure it like the parent
        settings = get_settings()
        configure_logging(settings)
    url = database_url or settings.database_url
    if url is None:
        raise RuntimeError("create_app needs a database URL (santong serve starts one)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(url, pool_size=settings.db_pool_size)
        app.state.engine = engine
        # Load the UCUM registry (about a second) off the event loop, before the first quantity.
        warm = asyncio.get_running_loop().run_in_executor(None, ucum.canonical, "g")
        custom = CustomParameters(engine)
        profiles = ProfileRegistry(engine, settings.required_profiles)
        router = Router(Repository(engine), settings, custom, profiles)
        # FHIR packages (the bundled guide) go into the database before the registries load
        # from it; if the database is down, a background task keeps trying.
        installing: asyncio.Task[None] | None = None
        try:
            await packages.install_configured(router, settings)
        except packages.PackageError as exc:
            log.error("%s", exc)
        except Exception as exc:
            log.warning("FHIR packages not stored yet: %s", exc)
            installing = asyncio.create_task(packages.install_until_done(router, settings))
        try:
            await custom.start()
        except Exception as exc:  # the database may be down: serve 503s until it is back
            log.warning("custom SearchParameters not loaded yet: %s", exc)
        try:
            await profiles.start()
        except Exception as exc:  # as above: the poll picks them up once the database is back
            log.warning("profiles not loaded yet: %s", exc)
        # The write path compiles validation and search extraction per type on first use
        # (about a second): do it now for the guide's example types, not in a client's request.
        await asyncio.get_running_loop().run_in_executor(None, warm_write_path)
        # What is loaded by now (definitions, parameters, compiled paths: ~400,000 objects)
        # lives as long as the process: frozen, the cyclic garbage collector stops walking it
        # on every full collection. Measured on transaction Bundles: its time 2.6 → 0.5 ms a
        # Bundle, and no more 120 ms pauses of the whole process. Garbage is collected first:
        # frozen, it would never be.
        gc.collect()
        gc.freeze()
        app.state.profiles = profiles
        app.state.router = router
        try:
            yield
        finally:
            if installing is not None:
                installing.cancel()
            await profiles.stop()
            await custom.stop()
            await engine.dispose()
            await warm

    app = FastAPI(title="Santong FHIR server", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(FhirRoutes, settings=settings)
    app.add_middleware(RequestLogMiddleware, json_logs=settings.log_json)  # outside: the id

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        try:
            async with request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
                revision = await current_revision(connection)
        except Exception as exc:
            log.warning("readiness check failed: %s", exc)
            return JSONResponse({"status": "database unavailable"}, status_code=503,
                                headers={"Retry-After": str(settings.retry_after_seconds)})
        head = head_revision()
        if revision != head:
            return JSONResponse({"status": f"migrations pending: at {revision}, head is {head}"},
                                status_code=503)
        return JSONResponse({"status": "ready", "schema": revision})

    return app


def _error_response(exc: FhirError) -> FhirResponse:
    resource: Any = exc.outcome()
    return FhirResponse(exc.status, resource=resource, headers=dict(exc.headers))
