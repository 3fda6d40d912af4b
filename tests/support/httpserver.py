"""A local HTTP file server for ``httpUrl`` resource-file tests: real sockets, real status codes.

Routes: ``/files/<name>`` serves bytes registered with `put` (with an ETag, answering ``If-None-Match`` with 304),
``/status/<code>`` answers that status, ``/stall/<name>`` sends the headers and half the body of a registered
file and then waits until the server stops (a download that never finishes); ``/stallonce/<name>`` does that
to the first request only and serves the file whole afterwards (a download cut off by a killed agent, then
retried). Every request is recorded
(method, path, status, body bytes sent) so tests can count what was fetched.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    method: str
    path: str
    status: int
    body_bytes: int


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    log: list[Served] = field(default_factory=list)
    stalled: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stalled_once: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def put(self, name: str, data: bytes) -> str:
        self.files[name] = data
        return f"{self.url}/files/{name}"

    def body_bytes(self, path: str) -> int:
        with self._lock:
            return sum(s.body_bytes for s in self.log if s.path.split("?")[0] == path)

    def count(self, path: str, status: int | None = None) -> int:
        with self._lock:
            return sum(
                1 for s in self.log if s.path.split("?")[0] == path and (status is None or s.status == status)
            )

    def start(self) -> FileServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _record(self, status: int, n: int) -> None:
                with owner._lock:
                    owner.log.append(Served(self.command, self.path, status, n))

            def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body and self.command != "HEAD":
                    self.wfile.write(body)
                self._record(status, len(body) if self.command != "HEAD" else 0)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                kind, _, name = path.lstrip("/").partition("/")
                if kind == "status":
                    self._send(int(name), f"status {name}".encode())
                    return
                data = owner.files.get(name)
                if data is None:
                    self._send(404, b"not found")
                    return
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                if kind == "stallonce":
                    with owner._lock:
                        first = name not in owner._stalled_once
                        owner._stalled_once.add(name)
                    kind = "stall" if first else "files"
                if kind == "stall":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("ETag", etag)
                    self.end_headers()
                    half = data[: len(data) // 2]
                    self.wfile.write(half)
                    self.wfile.flush()
                    self._record(200, len(half))
                    owner.stalled.set()
                    owner._stop.wait(60)
                    self.close_connection = True
                    return
                if kind != "files":
                    self._send(404, b"not found")
                    return
                if self.headers.get("If-None-Match") == etag:
                    self._send(304, b"", {"ETag": etag})
                    return
                self._send(200, data, {"ETag": etag, "Content-Type": "application/octet-stream"})

            do_HEAD = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class StallingProxy:
    """A TCP proxy to ``127.0.0.1:<target_port>`` that forwards the first ``limit`` request bytes of each
    connection and then holds the rest (an upload that hangs mid-body); ``stalled`` is set when it does.
    ``once``: only connections accepted before the first stall are held; later ones pass whole."""

    target_port: int
    limit: int
    once: bool = False
    stalled: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _sock: socket.socket | None = None

    @property
    def port(self) -> int:
        assert self._sock is not None
        port: int = self._sock.getsockname()[1]
        return port

    def start(self) -> StallingProxy:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            limit = None if self.once and self.stalled.is_set() else self.limit
            threading.Thread(target=self._pump, args=(client, upstream, limit), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) > limit:
                    dst.sendall(data[: limit - sent])
                    self.stalled.set()
                    self._stop.wait()
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
