"""Byte-exact HTTP/1.1 over a socket, Shared Key signed: for requests no HTTP library will send as written.

httpx, requests and azure-core normalise `..` and `.` segments, refuse control characters, always add a
Content-Length, or read the whole body before sending it; the malformed-request sweep needs the path, the
query, the framing (Content-Length, chunked, a declared length that is never sent) exactly as it writes them.
The signature is the Python SDK's string to sign, built by the server's own canonicaliser, so a request is
authenticated and reaches the handler unless the test sends `sign=False`.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from batchyard.api.shared_key import SignedRequest, compute_signature, string_to_sign_variants

API_VERSION = "2024-07-01.20.0"
JSON_CT = "application/json; odata=minimalmetadata"


@dataclass
class WireResponse:
    status: int
    headers: dict[str, str]  # lowercased names, first value
    body: bytes
    error: str = ""  # a transport failure (timeout, reset before any answer); status is then 0

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body[:400].decode("utf-8", "replace")


@dataclass
class Wire:
    host: str
    port: int
    account: str
    key_b64: str
    timeout: float = 15.0
    _key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._key = base64.b64decode(self.key_b64)

    def sign(self, method: str, raw_path: str, query: str, headers: dict[str, str]) -> None:
        """Add ocp-date (unless given) and Authorization for exactly these headers, path and query."""
        headers.setdefault("ocp-date", format_datetime(datetime.now(UTC), usegmt=True))
        lower = {k.lower(): v for k, v in headers.items()}
        req = SignedRequest(method, raw_path, query, lower)
        sig = compute_signature(string_to_sign_variants(req, self.account)[0], self._key)
        headers["Authorization"] = f"SharedKey {self.account}:{sig}"

    def request(
        self,
        method: str,
        raw_path: str,
        query: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        chunks: Iterable[bytes] | None = None,
        declared_length: int | None = None,
        sign: bool = True,
        api_version: str | None = API_VERSION,
    ) -> WireResponse:
        """Send one request on a fresh connection.

        `query` is the raw query string (already percent-encoded) without api-version, which is prepended
        unless `api_version` is None. `body` goes with its Content-Length (or `declared_length` if given);
        `chunks` go chunked-encoded with no Content-Length.
        """
        q = "&".join(p for p in (f"api-version={api_version}" if api_version else "", query or "") if p)
        h: dict[str, str] = {"Host": f"{self.host}:{self.port}"}
        if body is not None or chunks is not None:
            h["Content-Type"] = JSON_CT
        if body is not None:
            h["Content-Length"] = str(len(body) if declared_length is None else declared_length)
        elif chunks is not None:
            h["Transfer-Encoding"] = "chunked"
        elif method not in ("GET", "HEAD"):
            h["Content-Length"] = "0"
        h.update(headers or {})
        if sign:
            self.sign(method, raw_path, q, h)
        target = raw_path + (f"?{q}" if q else "")
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            return WireResponse(0, {}, b"", f"connect: {exc!r}")
        with sock:
            try:
                sock.sendall(head.encode("latin-1"))
                if body is not None:
                    _send(sock, body)
                elif chunks is not None:
                    for c in chunks:
                        sock.sendall(f"{len(c):x}\r\n".encode() + c + b"\r\n")
                    sock.sendall(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early and closed: read what it said
            except TimeoutError:
                return WireResponse(0, {}, b"", "timed out while sending the request")
            return _read(sock, method)


def _send(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    for i in range(0, len(view), 1 << 16):
        sock.sendall(view[i : i + (1 << 16)])


def _read(sock: socket.socket, method: str) -> WireResponse:
    resp = http.client.HTTPResponse(sock, method=method)
    try:
        resp.begin()
        body = resp.read()
    except TimeoutError:
        return WireResponse(0, {}, b"", "timed out waiting for the response")
    except (http.client.HTTPException, ConnectionResetError, OSError) as exc:
        return WireResponse(0, {}, b"", f"no valid response: {exc!r}")
    headers: dict[str, str] = {}
    for k, v in resp.getheaders():
        headers.setdefault(k.lower(), v)
    return WireResponse(resp.status, headers, body)


def batch_error_problem(resp: WireResponse, method: str, request_id: bool = True) -> str | None:
    """Why `resp` is not a well-formed Batch error answer, or None if it is (see tests/support/raw.py).

    `request_id=False` for the agent protocol, which is not a Batch API route and carries no request-id.
    """
    if resp.status == 0:
        return resp.error
    if resp.status >= 500 and resp.status != 501:
        return f"server error {resp.status}"
    if not 400 <= resp.status < 600:
        return None
    if request_id and not resp.headers.get("request-id"):
        return "no request-id header"
    if method == "HEAD":
        return None  # the service answers HEAD errors with a bare status
    if not resp.headers.get("content-type", "").startswith("application/json"):
        return f"content-type {resp.headers.get('content-type')!r}, not a JSON Batch error"
    try:
        body = resp.json()
    except ValueError:
        return "body is not JSON"
    if not isinstance(body, dict):
        return "body is not a JSON object"
    missing = [k for k in ("odata.metadata", "code", "message") if k not in body]
    if missing:
        return f"error body lacks {missing}"
    msg = body["message"]
    if not (isinstance(msg, dict) and msg.get("lang") == "en-US" and isinstance(msg.get("value"), str)):
        return f"error message is not {{lang, value}}: {msg!r}"
    return None
