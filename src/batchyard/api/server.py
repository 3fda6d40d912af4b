"""How the HTTP server holds connections: read timeouts and a connection limit (see decision 0020).

uvicorn closes idle keep-alive connections but has no timeout for a request that is being received: a
client sending half a request line, or a POST whose declared body never comes, holds a connection forever.
`TimedHttpTools` is uvicorn's own httptools protocol with three additions:

* the headers of a request must be complete within `header_timeout` seconds of connecting (or of the first
  byte of the next request on a kept-alive connection), else the connection is closed;
* a request body must keep arriving: a gap longer than `body_timeout` seconds is answered 408 and closed;
* at most `max_connections` connections at once: one more is answered 503 `ServerBusy` and closed at once.

`add_arguments` / `from_args` / `uvicorn_options` are what the command line uses, so `cli` stays small.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import uuid
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from batchyard.api import http
from batchyard.api.logs import LOG_FORMATS
from batchyard.models import errors

ENVIRONMENT_HELP = """environment variables:
  BATCHYARD_ACCOUNT_NAME     the Batch account name clients sign with (default devbatchaccount1)
  BATCHYARD_ACCOUNT_KEY      its base64 Shared Key (default: the well-known development key)
  BATCHYARD_HOST             default for --host
  BATCHYARD_PORT             default for --port
  BATCHYARD_DATA_DIR         default for --data-dir
  BATCHYARD_DATABASE_URL     default for --database-url
  BATCHYARD_PUBLIC_URL       default for --public-url
  BATCHYARD_LOG_FORMAT       default for --log-format
  BATCHYARD_HEADER_TIMEOUT   default for --header-timeout
  BATCHYARD_BODY_TIMEOUT     default for --body-timeout
  BATCHYARD_MAX_CONNECTIONS  default for --max-connections
  BATCHYARD_DEDICATED_CORE_QUOTA     default for --dedicated-core-quota
  BATCHYARD_LOW_PRIORITY_CORE_QUOTA  default for --low-priority-core-quota
  BATCHYARD_ORPHAN_TIMEOUT           default for --orphan-timeout
  BATCHYARD_AUTOSCALE_MIN_INTERVAL   default for --autoscale-min-interval
  BATCHYARD_FAKE_CLOCK_FILE          default for --fake-clock-file (tests only)
  BATCHYARD_AUTO_STORAGE             default for --auto-storage (a storage connection string)
  BATCHYARD_FILE_URL_ROOTS           default for --file-url-root (directories separated by ':')
"""


@dataclass(frozen=True)
class ServerLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 4096


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The request-handling options of `batchyard server`, and the environment variables in its help."""
    d = ServerLimits()
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=_env("BATCHYARD_LOG_FORMAT", "text"),
        help="text or json (one object per line); requests are logged at info",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=float(_env("BATCHYARD_HEADER_TIMEOUT", str(d.header_timeout))),
        help=f"seconds a client has to send a request's headers (default {d.header_timeout:g})",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=float(_env("BATCHYARD_BODY_TIMEOUT", str(d.body_timeout))),
        help=f"longest pause in sending a request body before 408 (default {d.body_timeout:g})",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=int(_env("BATCHYARD_MAX_CONNECTIONS", str(d.max_connections))),
        help=f"open connections at most, agents' included; more get 503 (default {d.max_connections})",
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = ENVIRONMENT_HELP


def from_args(a: argparse.Namespace) -> ServerLimits:
    limits = ServerLimits(a.header_timeout, a.body_timeout, a.max_connections)
    if limits.header_timeout <= 0 or limits.body_timeout <= 0 or limits.max_connections < 1:
        raise ValueError("--header-timeout and --body-timeout must be > 0 and --max-connections >= 1")
    return limits


def uvicorn_options(limits: ServerLimits) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.Config`: our protocol, and logging left to `configure_logging`."""
    _raise_fd_limit(limits.max_connections)
    return {"http": timed_protocol(limits), "log_config": None}


def _raise_fd_limit(connections: int) -> None:
    """Let the process hold `connections` sockets plus its files (the soft limit is often 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _error_bytes(status: int, err: errors.BatchError, host: str) -> bytes:
    """A whole HTTP response with the Batch error, written straight to the socket (no request cycle)."""
    rid = str(uuid.uuid4())
    resp = http.error_response(err, f"http://{host}", rid)
    head = [f"HTTP/1.1 {status} {_REASONS[status]}", "content-type: " + http.JSON_TYPE]
    head += [f"content-length: {len(resp.body)}", "connection: close", f"request-id: {rid}"]
    head += ["DataServiceVersion: 3.0"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + bytes(resp.body)


_REASONS = {400: "Bad Request", 408: "Request Timeout", 503: "Service Unavailable"}


def timed_protocol(limits: ServerLimits) -> type[HttpToolsProtocol]:
    class TimedHttpTools(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            over = len(self.connections) >= limits.max_connections
            super().connection_made(transport)
            if over:
                self.logger.warning(
                    "refusing a connection: %d open (--max-connections)", len(self.connections)
                )
                transport.write(_error_bytes(503, errors.server_busy(), "localhost"))
                transport.close()
                return
            self._header_timer = self.loop.call_later(limits.header_timeout, self._header_timeout)

        def send_400_response(self, msg: str) -> None:
            """httptools refused the bytes (e.g. a non-ASCII URL): a Batch error rather than plain text."""
            self.logger.info("unparsable request: %s", msg)
            self.transport.write(_error_bytes(400, errors.unparsable_request(), "localhost"))
            self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timers()
            super().connection_lost(exc)

        def _cancel_timers(self) -> None:
            for t in (self._header_timer, self._body_timer):
                if t is not None:
                    t.cancel()
            self._header_timer = self._body_timer = None

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:  # the next request on a kept-alive connection
                self._header_timer = self.loop.call_later(limits.header_timeout, self._header_timeout)

        def on_headers_complete(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().on_headers_complete()
            self._arm_body_timer()

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            self._arm_body_timer()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

        def _arm_body_timer(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
            self._body_timer = self.loop.call_later(limits.body_timeout, self._body_timeout)

        def _header_timeout(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def _body_timeout(self) -> None:
            self._body_timer = None
            if self.transport.is_closing():
                return
            if self.flow.read_paused:  # we stopped reading (the app is slow to consume), not the client
                self._arm_body_timer()
                return
            cycle = self.cycle
            if cycle is not None and not cycle.response_started:
                host = dict(self.headers or []).get(b"host", b"localhost").decode("latin-1")
                self.transport.write(_error_bytes(408, errors.request_timeout(limits.body_timeout), host))
            if cycle is not None:
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.close()

    return TimedHttpTools
