"""Request body limits, enforced before and while the body is read (never after buffering it whole).

`BodyLimit` wraps the ASGI app: a `Content-Length` above the route's limit is answered 413
`RequestBodyTooLarge` at once, without reading a byte of the body; a chunked (or lying) body is counted as it
arrives and reading stops at the limit, where `receive()` raises the same Batch error into the handler. Either
way the answer carries `Connection: close`, so the unread rest of the body is never read. So does any answer
given before the body was read to its end (a 401 to an unsigned upload): the server never drains junk.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchyard.models import errors

REST_MAX_BODY = 1024 * 1024
"""Every Batch REST body (the service's 1 MB limit on addtaskcollection applies to all our routes)."""

AGENT_MAX_BODY = 16 * 1024 * 1024
"""Agent syncs carry a node's pending events (~350 bytes each): tens of thousands fit."""

AGENT_PREFIX = "/batchyard/agent/"

PACKAGE_MAX_BODY = 1 << 30
"""An application package upload (``PUT /batchyard/applications/{id}/versions/{v}``), streamed to disk."""

PACKAGE_PREFIX = "/batchyard/applications/"


def limit_for(path: str) -> int:
    if path.startswith(AGENT_PREFIX):
        return AGENT_MAX_BODY
    if path.startswith(PACKAGE_PREFIX) and "/versions/" in path:
        return PACKAGE_MAX_BODY
    return REST_MAX_BODY


def too_large(limit: int) -> errors.BatchError:
    return errors.request_body_too_large(f"The request body exceeds the maximum of {limit} bytes.")


ErrorRenderer = Callable[[Scope, errors.BatchError], Response]


class BodyLimit:
    """ASGI middleware: bound every request body by `limit_for(path)`; `render` draws the Batch error."""

    def __init__(self, app: ASGIApp, render: ErrorRenderer) -> None:
        self.app = app
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            resp = self.render(scope, too_large(limit))
            resp.headers["connection"] = "close"
            await resp(scope, receive, send)
            return
        seen = 0
        tripped = False
        body_done = not declared and not _has_header(scope, b"transfer-encoding")

        async def bounded_receive() -> Message:
            nonlocal seen, tripped, body_done
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    tripped = True
                    raise too_large(limit)
                body_done = not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            if (tripped or not body_done) and message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await closing_send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except errors.BatchError as e:  # raised by bounded_receive past a handler that does not catch it
            if started or not tripped:
                raise
            resp = self.render(scope, e)
            await resp(scope, receive, closing_send)


def _has_header(scope: Scope, name: bytes) -> bool:
    return any(k == name for k, _ in scope["headers"])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:  # the HTTP parser already refuses these; never trust it twice
                return None
    return None
