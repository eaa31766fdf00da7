"""One log line per request (method, path, status, duration, request id), text or JSON."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from santong.settings import Settings

access_log = logging.getLogger("santong.access")


def configure_logging(settings: Settings) -> None:
    """Log to stderr, as plain text or one JSON object per line (SANTONG_LOG_JSON)."""
    fmt = "%(message)s" if settings.log_json else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=settings.log_level.upper(), format=fmt, stream=sys.stderr)
    for noisy in ("alembic", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp, json_logs: bool = False) -> None:
        self.app = app
        self.json_logs = json_logs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._log(scope, status, (time.perf_counter() - started) * 1000, request_id)

    def _log(self, scope: Scope, status: int, millis: float, request_id: str) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        path = scope.get("path", "")
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        record: dict[str, Any] = {
            "method": scope.get("method"), "path": path, "status": status,
            "duration_ms": round(millis, 2), "request_id": request_id,
        }
        if self.json_logs:
            access_log.info(orjson.dumps(record).decode())
        else:
            access_log.info("%s %s %s %.1fms %s", record["method"], path, status, millis,
                            request_id)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")[:64]
            if candidate.replace("-", "").isalnum():
                return candidate
    return None
