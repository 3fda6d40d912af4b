"""The request log and the server's log format (`--log-format text|json`).

One line per request: method, path (as sent, still percent-encoded, so it cannot forge log lines), status,
duration in milliseconds and the request id the client got in `request-id`. Headers and bodies are never
logged, so neither Shared Key signatures, node tokens nor keys reach the log. Agent syncs and health probes
are logged at debug: they are many, and the info log is for what clients do.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchyard.api.limits import AGENT_PREFIX

log = logging.getLogger("batchyard.requests")

LOG_FORMATS = ("text", "json")
_QUIET = ("/healthz", "/readyz")
_FIELDS = ("method", "path", "status", "duration_ms", "request_id")


class RequestLog:
    """ASGI middleware writing one log record per HTTP request once its response is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        level = logging.DEBUG if path.startswith(AGENT_PREFIX) or path in _QUIET else logging.INFO
        if not log.isEnabledFor(level):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0
        request_id = ""

        async def watch(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", ()):
                    if k.lower() == b"request-id":
                        request_id = v.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            ms = round((time.perf_counter() - start) * 1000, 1)
            raw = scope.get("raw_path") or path.encode()
            shown = raw.decode("latin-1")
            fields = {"method": scope["method"], "path": shown, "status": status, "duration_ms": ms}
            fields["request_id"] = request_id
            log.log(level, "%s %s %s %.1fms %s", scope["method"], shown, status, ms, request_id, extra=fields)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request fields when present."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            if name in record.__dict__:
                out[name] = record.__dict__[name]
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str | int, fmt: str = "text") -> None:
    """Root logging to stderr in `fmt` ("text" or "json"); uvicorn's loggers propagate into it."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
