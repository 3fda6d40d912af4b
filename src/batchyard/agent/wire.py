"""The agent's HTTP/1.1 client for its server: h11 over asyncio streams, connections kept alive (decision 0180).

httpx cost a node ~15 MiB and ~100 ms of imports and about a third of the agent's CPU per task; the agent only
ever sends small JSON requests to one server, so it needs none of its features. h11 (the parser httpx itself
uses) keeps the framing exact. The rules are httpx's as the agent used them: one timeout for the connect, each
write and each read; no retries; an idle connection the server closed is dropped before it is reused; any
failure to get an answer is a `WireError`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11

#: idle connections kept for reuse (the agent has at most a long poll and a report in flight)
MAX_IDLE = 4
USER_AGENT = "batchyard-agent"


class WireError(Exception):
    """No answer from the server: it could not be reached, timed out or broke the protocol."""


class Response:
    __slots__ = ("status_code", "content")

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    def json(self) -> Any:
        return json.loads(self.content)


def dump_json(payload: Any) -> bytes:
    """The body bytes httpx's ``json=`` sends."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


class _Conn:
    __slots__ = ("reader", "writer", "h11")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    def usable(self) -> bool:
        """Idle and still open: a connection the server closed while idle has seen EOF (httpcore's check)."""
        return (
            self.h11.our_state is h11.IDLE
            and not self.reader.at_eof()
            and not self.writer.is_closing()
            and not self.reader._buffer  # type: ignore[attr-defined]  # unsolicited bytes: not reusable
        )

    def close(self) -> None:
        self.writer.close()


async def _next(conn: _Conn, timeout: float) -> h11.Response | h11.Data | h11.EndOfMessage:
    """The next response event, reading as needed (1xx responses skipped)."""
    c = conn.h11
    while True:
        event = c.next_event()
        if event is h11.NEED_DATA:
            data = await asyncio.wait_for(conn.reader.read(65536), timeout)
            if not data and c.their_state is h11.SEND_RESPONSE:
                raise h11.RemoteProtocolError("Server disconnected without sending a response.")
            c.receive_data(data)
        elif isinstance(event, (h11.Response, h11.Data, h11.EndOfMessage)):
            return event
        elif isinstance(event, h11.ConnectionClosed):
            raise h11.RemoteProtocolError("Server disconnected before the response ended.")


class Stream:
    """A response whose body is still on the wire."""

    def __init__(self, client: Client, conn: _Conn, status_code: int, read_timeout: float) -> None:
        self.client, self.conn, self.status_code, self.read_timeout = client, conn, status_code, read_timeout
        self.done = False

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                event = await _next(self.conn, self.read_timeout)
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self.done = True
                    return
        except (TimeoutError, OSError, h11.ProtocolError) as exc:
            raise WireError(f"reading the response: {exc!r}") from exc

    async def aclose(self) -> None:
        """Back to the pool when read to the end, else closed."""
        if self.done:
            self.client._give_back(self.conn)
        else:
            self.conn.close()


class Client:
    """Requests to one server (``base_url``: scheme, host, port and an optional path prefix)."""

    def __init__(self, base_url: str, timeout: float) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.tls = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.tls else 80)
        default = (self.tls and self.port == 443) or (not self.tls and self.port == 80)
        self.host_header = u.netloc.rsplit("@", 1)[-1] if not default else self.host
        self.prefix = u.path.rstrip("/")
        self.timeout = timeout
        self._idle: list[_Conn] = []

    async def _connect(self, timeout: float) -> _Conn:
        ssl_ctx: Any = None
        if self.tls:  # only then: importing ssl costs a node several MiB
            from batchyard.agent.lean import allow_tls

            allow_tls()
            import ssl

            ssl_ctx = ssl.create_default_context()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=ssl_ctx), timeout
            )
        except (TimeoutError, OSError) as exc:
            raise WireError(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
        return _Conn(reader, writer)

    def _take(self) -> _Conn | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> Response:
        timeout = self.timeout if timeout is None else timeout
        target = self.prefix + path + (("?" + urlencode(params)) if params else "")
        hdrs: list[tuple[str, str]] = [
            ("Host", self.host_header),
            ("Accept", "*/*"),
            ("Connection", "keep-alive"),
            ("User-Agent", USER_AGENT),
        ]
        if method not in ("GET", "HEAD") or body:
            hdrs.append(("Content-Length", str(len(body))))
        if content_type is not None:
            hdrs.append(("Content-Type", content_type))
        for k, v in (headers or {}).items():
            hdrs.append((k, v))
        conn = self._take() or await self._connect(timeout)
        try:
            resp = await self._exchange(conn, method, target, hdrs, body, timeout)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, (OSError, asyncio.TimeoutError, h11.ProtocolError)):
                raise WireError(f"{method} {path}: {exc!r}") from exc
            raise
        self._give_back(conn)
        return resp

    async def _exchange(
        self,
        conn: _Conn,
        method: str,
        target: str,
        hdrs: list[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> Response:
        c = conn.h11
        out = c.send(h11.Request(method=method, target=target, headers=hdrs)) or b""
        if body:
            out += c.send(h11.Data(data=body)) or b""
        out += c.send(h11.EndOfMessage()) or b""
        conn.writer.write(out)
        await asyncio.wait_for(conn.writer.drain(), timeout)
        status = 0
        chunks: list[bytes] = []
        while True:
            event = await _next(conn, timeout)
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Response(status, b"".join(chunks))

    async def stream(
        self, path: str, *, headers: dict[str, str] | None = None, timeout: float, read_timeout: float
    ) -> Stream:
        """A GET whose body is read in chunks (`Stream.chunks`); `Stream.aclose` must follow."""
        hdrs: list[tuple[str, str]] = [
            ("Host", self.host_header),
            ("Accept", "*/*"),
            ("Connection", "keep-alive"),
            ("User-Agent", USER_AGENT),
            *(headers or {}).items(),
        ]
        conn = self._take() or await self._connect(timeout)
        c = conn.h11
        try:
            out = c.send(h11.Request(method="GET", target=self.prefix + path, headers=hdrs)) or b""
            out += c.send(h11.EndOfMessage()) or b""
            conn.writer.write(out)
            await asyncio.wait_for(conn.writer.drain(), timeout)
            while True:
                event = await _next(conn, read_timeout)
                if isinstance(event, h11.Response):
                    return Stream(self, conn, event.status_code, read_timeout)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, (OSError, asyncio.TimeoutError, h11.ProtocolError)):
                raise WireError(f"GET {path}: {exc!r}") from exc
            raise

    def _give_back(self, conn: _Conn) -> None:
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            if len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    async def post_json(self, path: str, payload: Any, headers: dict[str, str] | None = None) -> Response:
        return await self.request(
            "POST", path, body=dump_json(payload), headers=headers, content_type="application/json"
        )

    async def get(
        self, path: str, headers: dict[str, str] | None = None, params: dict[str, str] | None = None
    ) -> Response:
        return await self.request("GET", path, headers=headers, params=params)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
