"""Requests that try to hurt the server: deep JSON, huge or endless bodies, stalled connections, too many
connections, malformed agent syncs, odd paths and filters. Each gets a 4xx Batch error (or a closed
connection) quickly, nothing is written, memory stays flat, and everyone else keeps being served.

Raw sockets are used where a client library would refuse to misbehave; they sign with the server's own
Shared Key canonicaliser (the Python SDK's form).
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from batchyard.api.shared_key import SignedRequest, compute_signature, string_to_sign_variants
from tests.support.live import LiveServer, wait_for
from tests.support.raw import API_VERSION, JSON_CT, Raw, assert_error, error_values, pool_body

MIB = 1024 * 1024
AGENT_SYNC = "/batchyard/agent/v1/sync"
TOO_DEEP = "The JSON is nested more than 64 levels deep."


# --- raw HTTP ------------------------------------------------------------------------------------------------


def request_head(
    live: LiveServer,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    sign: bool = True,
    query: str = f"api-version={API_VERSION}",
) -> bytes:
    """The request line and headers (no body), Shared Key signed unless `sign` is false."""
    h = {"ocp-date": format_datetime(datetime.now(UTC), usegmt=True), **(headers or {})}
    h = {k.lower(): v for k, v in h.items()}
    if sign:
        req = SignedRequest(method, path, query, h)
        sig = compute_signature(string_to_sign_variants(req, live.account)[0], base64.b64decode(live.key))
        h["authorization"] = f"SharedKey {live.account}:{sig}"
    lines = [f"{method} {path}{'?' + query if query else ''} HTTP/1.1", f"host: 127.0.0.1:{live.port}"]
    lines += [f"{k}: {v}" for k, v in h.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(live: LiveServer, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", live.port), timeout=timeout)
    s.settimeout(timeout)
    return s


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    body = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def batch_error(status: int, headers: dict[str, str], body: bytes, want: int, code: str) -> dict[str, str]:
    assert status == want, (status, body[:500])
    assert headers.get("request-id"), headers
    assert headers.get("content-type", "").startswith("application/json"), headers
    err = json.loads(body)
    assert err["code"] == code, err
    assert err["message"]["value"].startswith(err["message"]["value"].split("\n")[0]), err
    return error_values(err)


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed `sock` (reads and discards anything it sends first)."""
    start = time.monotonic()
    sock.settimeout(seconds)
    while True:
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except ConnectionResetError:
            return time.monotonic() - start
        except TimeoutError:
            raise AssertionError(f"the connection was still open after {seconds}s") from None


def send_body_and_read(sock: socket.socket, head: bytes, body_chunks: Iterator[bytes]) -> tuple[bytes, int]:
    """Send head and body while a reader thread collects the answer; stop sending when the server hangs up.

    Returns (what the server answered, body bytes sent before it stopped us).
    """
    got = bytearray()

    def reader() -> None:
        try:
            while data := sock.recv(65536):
                got.extend(data)
        except OSError:
            pass

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    sent = 0
    try:
        sock.sendall(head)
        for chunk in body_chunks:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    t.join(30)
    return bytes(got), sent


def parse_answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return status, headers, body


def rss_bytes(live: LiveServer) -> int:
    assert live.proc is not None
    for line in Path(f"/proc/{live.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# --- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Raw:
    return Raw(live)


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with short read timeouts, a small connection limit and the JSON log format."""
    srv = LiveServer(
        tmp_path_factory.mktemp("tight"),
        extra_args=[
            "--header-timeout",
            "1",
            "--body-timeout",
            "1",
            "--max-connections",
            "40",
            "--log-format",
            "json",
        ],
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


# The body routes batchyard implements (path ids need not exist: bodies are checked first).
BODY_ROUTES = [
    ("POST", "/pools"),
    ("PATCH", "/pools/p1"),
    ("POST", "/pools/p1/updateproperties"),
    ("POST", "/pools/p1/resize"),
    ("POST", "/jobs"),
    ("PATCH", "/jobs/j1"),
    ("PUT", "/jobs/j1"),
    ("POST", "/jobs/j1/terminate"),
    ("POST", "/jobs/j1/disable"),
    ("POST", "/jobs/j1/tasks"),
    ("POST", "/jobs/j1/addtaskcollection"),
    ("PUT", "/jobs/j1/tasks/t1"),
]


# --- item 5: nesting -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", BODY_ROUTES)
@pytest.mark.parametrize(
    "content",
    [b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000, b'{"id": "x", "metadata": ' + b'{"a": ' * 50_000],
    ids=["open", "balanced", "objects"],
)
def test_deeply_nested_json_is_400_on_every_body_route(
    raw: Raw, method: str, path: str, content: bytes
) -> None:
    r = raw.request(method, path, content=content)
    assert_error(r, 400, "InvalidRequestBody", Reason=TOO_DEEP)


def test_deep_free_form_extension_settings_name_the_property(raw: Raw) -> None:
    pid = "deep-" + uuid.uuid4().hex[:6]
    body = pool_body(pid)
    body["virtualMachineConfiguration"]["extensions"] = [
        {"name": "e", "publisher": "p", "type": "t", "settings": {"a": "@@"}}
    ]
    text = json.dumps(body).replace('"@@"', "[" * 500 + "]" * 500)
    r = raw.request("POST", "/pools", content=text)
    assert_error(
        r, 400, "InvalidPropertyValue", PropertyName="virtualMachineConfiguration.extensions[0].settings"
    )
    assert_error(raw.get(f"/pools/{pid}"), 404, "PoolNotFound")


def test_sixty_levels_of_free_form_settings_are_fine(raw: Raw) -> None:
    pid = "okdeep-" + uuid.uuid4().hex[:6]
    body = pool_body(pid)
    body["virtualMachineConfiguration"]["extensions"] = [
        {"name": "e", "publisher": "p", "type": "t", "settings": {"a": "@@"}}
    ]
    text = json.dumps(body).replace('"@@"', "[" * 55 + "]" * 55)
    r = raw.request("POST", "/pools", content=text)
    assert r.status_code in (201, 501), r.text()  # accepted (or extensions refused as not implemented)
    if r.status_code == 201:
        raw.delete(f"/pools/{pid}")


# --- item 7: body size ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/pools", "/jobs/j1/addtaskcollection", AGENT_SYNC])
def test_content_length_over_the_limit_is_413_before_any_body_is_sent(live: LiveServer, path: str) -> None:
    with connect(live, 5) as s:
        s.sendall(request_head(live, "POST", path, {"content-length": str(50 * MIB)}, sign=False))
        status, headers, body = read_response(s)  # answered although not one body byte was sent
        values = batch_error(status, headers, body, 413, "RequestBodyTooLarge")
        assert "bytes" in values["Reason"], values
        assert headers.get("connection") == "close", headers


def _chunked(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    piece = b"x" * size
    for _ in range(total // size):
        yield b"%x\r\n" % size + piece + b"\r\n"
    yield b"0\r\n\r\n"


def test_chunked_body_is_cut_off_at_the_limit(live: LiveServer) -> None:
    head = request_head(
        live,
        "POST",
        "/pools",
        {"content-type": JSON_CT, "transfer-encoding": "chunked", "content-length": ""},
    )
    head = head.replace(b"content-length: \r\n", b"")
    with connect(live, 30) as s:
        answer, sent = send_body_and_read(s, head, _chunked(50 * MIB))
    status, headers, body = parse_answer(answer)
    batch_error(status, headers, body, 413, "RequestBodyTooLarge")
    assert sent < 50 * MIB, "the server read the whole 50 MiB instead of stopping at the limit"


@pytest.mark.parametrize("path", ["/pools", AGENT_SYNC])
def test_an_answer_before_the_body_closes_the_connection(live: LiveServer, path: str) -> None:
    """An unsigned 50 MiB upload gets its 401 and a closed connection: the server never drains the junk."""
    head = request_head(
        live, "POST", path, {"content-type": JSON_CT, "transfer-encoding": "chunked"}, sign=False
    )
    with connect(live, 30) as s:
        start = time.monotonic()
        answer, sent = send_body_and_read(s, head, _chunked(50 * MIB))
    status, headers, body = parse_answer(answer)
    batch_error(status, headers, body, 401, "AuthenticationRequired")
    assert headers.get("connection") == "close", headers
    assert sent < 50 * MIB and time.monotonic() - start < 10


def test_fifty_megabyte_sweep_leaves_memory_flat(live: LiveServer, raw: Raw) -> None:
    """Every body route, 50 MiB bodies sent with an honest Content-Length and chunked: RSS stays flat."""
    raw.get("/pools")  # warm up imports and caches before the first measurement
    before = rss_bytes(live)
    data = b"[" * (50 * MIB)
    for method, path in [*BODY_ROUTES, ("POST", AGENT_SYNC)]:
        head = request_head(live, method, path, {"content-type": JSON_CT, "content-length": str(len(data))})
        with connect(live, 30) as s:
            answer, _ = send_body_and_read(
                s, head, iter([data[i : i + MIB] for i in range(0, len(data), MIB)])
            )
        assert parse_answer(answer)[0] == 413, answer[:300]
        head = request_head(live, method, path, {"content-type": JSON_CT, "transfer-encoding": "chunked"})
        with connect(live, 30) as s:
            answer, _ = send_body_and_read(s, head, _chunked(50 * MIB))
        status = parse_answer(answer)[0]
        assert status in (413, 401), answer[:300]  # the agent route authenticates before reading
    after = rss_bytes(live)
    print(f"\nserver RSS before the 50 MiB sweep: {before / MIB:.1f} MiB, after: {after / MIB:.1f} MiB")
    assert after - before < 24 * MIB, (before, after)


# --- item 6: agent sync ---------------------------------------------------------------------------------------


def _sync(live: LiveServer, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    h = {"content-type": "application/json", "content-length": str(len(body)), **headers}
    with connect(live, 10) as s:
        s.sendall(request_head(live, "POST", AGENT_SYNC, h, sign=False, query="") + body)
        return read_response(s)


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"nodeId": 5}', b"[" * 100_000, b""])
def test_agent_sync_without_a_token_is_401_whatever_the_body(live: LiveServer, body: bytes) -> None:
    status, headers, text = _sync(live, body, {})
    batch_error(status, headers, text, 401, "AuthenticationRequired")


def test_agent_sync_with_a_wrong_token_is_refused_before_the_body(live: LiveServer) -> None:
    status, headers, text = _sync(
        live, b"{", {"x-batchyard-node-token": "nope", "x-batchyard-node-id": "no-such-node"}
    )
    batch_error(status, headers, text, 404, "NodeNotFound")


@pytest.fixture(scope="module")
def node(raw: Raw, live: LiveServer) -> Iterator[tuple[str, str, str]]:
    """(node id, token, pool id) of a real idle node."""
    pid = "sync-" + uuid.uuid4().hex[:6]
    assert raw.post("/pools", pool_body(pid, nodes=1)).status_code == 201
    nodes = wait_for(
        lambda: [n for n in raw.json(f"/pools/{pid}/nodes")["value"] if n["state"] == "idle"],
        60,
        0.2,
        "idle node",
    )
    node_id = nodes[0]["id"]
    with sqlite3.connect(f"file:{live.data_dir / 'batchyard.db'}?mode=ro", uri=True) as db:
        (token,) = db.execute("SELECT token FROM nodes WHERE id = ?", (node_id,)).fetchone()
    yield node_id, token, pid
    raw.delete(f"/pools/{pid}")


def test_agent_sync_with_a_wrong_token_for_a_real_node_is_403(
    live: LiveServer, node: tuple[str, str, str]
) -> None:
    status, headers, text = _sync(
        live, b"{", {"x-batchyard-node-token": "0" * 48, "x-batchyard-node-id": node[0]}
    )
    batch_error(status, headers, text, 403, "AuthenticationFailed")


@pytest.mark.parametrize(
    "body,code,prop",
    [
        (b"{", "InvalidRequestBody", None),
        (b"[]", "InvalidRequestBody", None),
        (b"[" * 100_000, "InvalidRequestBody", None),
        (b'{"nodeId": 5}', "InvalidPropertyValue", "nodeId"),
        (
            b'{"nodeId": "@", "events": [{"type": "completed", "ref": "a", "seq": "x"}]}',
            "InvalidPropertyValue",
            "events[0].seq",
        ),
        (
            b'{"nodeId": "@", "events": [{"type": "exploded", "ref": "a"}]}',
            "InvalidPropertyValue",
            "events[0].type",
        ),
        (b'{"nodeId": "@", "running": {"a": 1}}', "InvalidPropertyValue", "running"),
        (b'{"nodeId": "@", "wait": "soon"}', "InvalidPropertyValue", "wait"),
        (b'{"nodeId": "@", "wait": -1}', "InvalidPropertyValue", "wait"),
        (b'{"nodeId": "@", "pid": -5}', "InvalidPropertyValue", "pid"),
        (
            b'{"nodeId": "@", "events": [{"type": "started", "ref": "a", "x": 1}]}',
            "UnsupportedProperty",
            "events[0].x",
        ),
        (b'{"nodeId": "@", "surprise": 1}', "UnsupportedProperty", "surprise"),
        (
            b'{"nodeId": "@", "events": [{"type": "jobprep", "ref": "a", "state": "exploded"}]}',
            "InvalidPropertyValue",
            "events[0].state",
        ),
        (
            b'{"nodeId": "@", "events": [{"type": "jobrelease", "ref": "a", "retryCount": "x"}]}',
            "InvalidPropertyValue",
            "events[0].retryCount",
        ),
        (b'{"nodeId": "someone-else"}', "InvalidPropertyValue", "nodeId"),
    ],
)
def test_agent_sync_malformed_bodies_are_400(
    live: LiveServer, raw: Raw, node: tuple[str, str, str], body: bytes, code: str, prop: str | None
) -> None:
    node_id, token, pool_id = node
    body = body.replace(b"@", node_id.encode())
    status, headers, text = _sync(
        live, body, {"x-batchyard-node-token": token, "x-batchyard-node-id": node_id}
    )
    values = batch_error(status, headers, text, 400, code)
    if prop is not None:
        assert values.get("PropertyName") == prop, values
    assert raw.json(f"/pools/{pool_id}/nodes/{node_id}")["state"] == "idle"  # the node is unharmed


@pytest.mark.parametrize(
    "event",
    [
        {"type": "jobprep", "ref": "no-such-job", "state": "completed", "exitCode": 1},
        {"type": "jobrelease", "ref": "no-such-job", "state": "running"},
        {"type": "preparing", "ref": "no-such-job/t#0"},
        {"type": "prepfailed", "ref": "nothing-here"},
        {"type": "jobprep", "ref": "", "state": "running", "retryCount": -1},
    ],
)
def test_agent_sync_stale_job_task_events_are_ignored(
    live: LiveServer, raw: Raw, node: tuple[str, str, str], event: dict[str, object]
) -> None:
    """Job preparation/release events about jobs or attempts the node does not have change nothing."""
    node_id, token, pool_id = node
    body = json.dumps({"nodeId": node_id, "events": [dict(event, seq=1)]}).encode()
    status, _, text = _sync(live, body, {"x-batchyard-node-token": token, "x-batchyard-node-id": node_id})
    assert status == 200, text
    assert raw.json(f"/pools/{pool_id}/nodes/{node_id}")["state"] == "idle"


def test_agent_sync_body_over_its_limit_is_413(live: LiveServer, node: tuple[str, str, str]) -> None:
    node_id, token, _ = node
    h = {"x-batchyard-node-token": token, "x-batchyard-node-id": node_id, "content-length": str(50 * MIB)}
    with connect(live, 5) as s:
        s.sendall(request_head(live, "POST", AGENT_SYNC, h, sign=False, query=""))
        batch_error(*read_response(s), 413, "RequestBodyTooLarge")


# --- item 8: stalled and excess connections ---------------------------------------------------------------------


def test_half_a_request_line_is_closed_after_the_header_timeout(tight: LiveServer) -> None:
    with connect(tight) as s:
        s.sendall(b"GET /pools?api-ver")
        took = closed_within(s, 8)
    assert 0.5 <= took <= 6, took


def test_a_silent_connection_is_closed_after_the_header_timeout(tight: LiveServer) -> None:
    with connect(tight) as s:
        took = closed_within(s, 8)
    assert 0.5 <= took <= 6, took


def test_headers_dribbled_slower_than_the_timeout_are_cut_off(tight: LiveServer) -> None:
    head = request_head(tight, "GET", "/pools")
    with connect(tight) as s:
        start = time.monotonic()
        try:
            for i in range(0, len(head), 4):  # a slowloris: a few bytes every 0.2 s, forever
                s.sendall(head[i : i + 4])
                time.sleep(0.2)
        except OSError:
            pass
        closed_within(s, 8)
    assert time.monotonic() - start < 8


def test_a_body_that_never_comes_is_answered_408(tight: LiveServer) -> None:
    head = request_head(tight, "POST", "/jobs", {"content-type": JSON_CT, "content-length": "100"})
    with connect(tight) as s:
        s.sendall(head + b'{"id": ')
        start = time.monotonic()
        values = batch_error(*read_response(s), 408, "RequestTimeout")
        assert "1 seconds" in values["Reason"], values
        assert time.monotonic() - start < 6
        closed_within(s, 5)


def test_stalled_clients_do_not_stop_others(tight: LiveServer) -> None:
    raw = Raw(tight)
    stalled = [connect(tight) for _ in range(25)]
    try:
        for i, s in enumerate(stalled):
            s.sendall(b"POST /jobs HTTP/1.1\r\ncontent-length: 100\r\n" if i % 2 else b"GET /po")
        start = time.monotonic()
        for _ in range(5):
            assert raw.get("/pools").status_code == 200
        assert time.monotonic() - start < 3
        for s in stalled:
            closed_within(s, 8)
    finally:
        for s in stalled:
            s.close()
    assert raw.get("/pools").status_code == 200


def test_connections_over_the_limit_get_server_busy(tight: LiveServer) -> None:
    held = [connect(tight) for _ in range(40)]
    try:
        # the server accepts in order: once this one is answered, all 40 before it are counted
        with connect(tight) as extra:
            batch_error(*read_response(extra), 503, "ServerBusy")
    finally:
        for s in held:
            s.close()
    raw = Raw(tight)
    wait_for(lambda: raw.get("/pools").status_code == 200, 10, 0.1, "service after the connections closed")


# --- item 9: paths, filters, durations -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/pools/", "/jobs/", "/pools/p1/nodes/"])
def test_trailing_slash_is_invalid_uri_not_a_redirect(raw: Raw, path: str) -> None:
    r = raw.get(path)
    assert_error(r, 400, "InvalidUri")
    assert "location" not in {k.lower() for k in r.headers}


@pytest.mark.parametrize("path,code", [("/pools/%2e", "PoolNotFound"), ("/jobs/%2E", "JobNotFound")])
def test_dot_segments_are_plain_ids(live: LiveServer, path: str, code: str) -> None:
    with connect(live) as s:
        s.sendall(request_head(live, "GET", path))
        status, headers, body = read_response(s)
    batch_error(status, headers, body, 404, code)


@pytest.mark.parametrize("path", ["/pools/./x", "/./pools", "/pools/%2e/", "/pools/%2E/nodes/"])
def test_dot_segments_in_the_raw_path_are_invalid_uri(live: LiveServer, path: str) -> None:
    with connect(live) as s:
        s.sendall(request_head(live, "GET", path))
        status, headers, body = read_response(s)
    batch_error(status, headers, body, 400, "InvalidUri")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /pools/\xff\xfe?api-version=x HTTP/1.1\r\n\r\n",
        b"GET /pools HTTP/1.1\r\nbad header\r\n\r\n",
        b"\x16\x03\x01\x00",
    ],
)
def test_unparsable_requests_get_a_batch_error(live: LiveServer, request_bytes: bytes) -> None:
    with connect(live) as s:
        s.sendall(request_bytes)
        batch_error(*read_response(s), 400, "InvalidInput")


@pytest.mark.parametrize("text", ["é", "false ' NaN lt 'é☃' ne", "id eq ²"])
@pytest.mark.parametrize("path", ["/pools", "/jobs", "/nodecounts", "/supportedimages"])
def test_non_ascii_filter_is_400(raw: Raw, path: str, text: str) -> None:
    r = raw.get(path, params={"$filter": text})
    assert_error(r, 400, "InvalidQueryParameterValue", QueryParameterName="$filter")


@pytest.mark.parametrize(
    "kind,extra,prop",
    [
        ("job", {"constraints": {"maxWallClockTime": "-PT1H"}}, "constraints.maxWallClockTime"),
        (
            "job",
            {"jobManagerTask": {"id": "jm", "commandLine": "true", "constraints": {"retentionTime": "-P1D"}}},
            "jobManagerTask.constraints.retentionTime",
        ),
        ("task", {"constraints": {"maxWallClockTime": "-PT0.5S"}}, "constraints.maxWallClockTime"),
        ("task", {"constraints": {"retentionTime": "-P1D"}}, "constraints.retentionTime"),
        ("pool", {"resizeTimeout": "-PT15M"}, "resizeTimeout"),
    ],
)
def test_negative_durations_are_400_naming_the_property(
    raw: Raw, kind: str, extra: dict[str, Any], prop: str
) -> None:
    rid = "neg-" + uuid.uuid4().hex[:6]
    if kind == "pool":
        r = raw.post("/pools", pool_body(rid, **extra))
        assert_error(r, 400, "InvalidPropertyValue", PropertyName=prop)
        assert_error(raw.get(f"/pools/{rid}"), 404, "PoolNotFound")
    elif kind == "job":
        r = raw.post("/jobs", {"id": rid, "poolInfo": {"poolId": "p"}, **extra})
        assert_error(r, 400, "InvalidPropertyValue", PropertyName=prop)
        assert_error(raw.get(f"/jobs/{rid}"), 404, "JobNotFound")
    else:
        assert raw.post("/jobs", {"id": rid, "poolInfo": {"poolId": "p"}}).status_code == 201
        r = raw.post(f"/jobs/{rid}/tasks", {"id": "t", "commandLine": "true", **extra})
        assert_error(r, 400, "InvalidPropertyValue", PropertyName=prop)
        assert raw.json(f"/jobs/{rid}/tasks")["value"] == []
        raw.delete(f"/jobs/{rid}")


# --- item 14: request log, --version, --help ----------------------------------------------------------------


def _log_lines(live: LiveServer, needle: str) -> list[str]:
    return [
        ln for ln in (live.data_dir / "server.log").read_text(errors="replace").splitlines() if needle in ln
    ]


def test_requests_are_logged_without_secrets(live: LiveServer, raw: Raw) -> None:
    r = raw.get("/pools", headers={"client-request-id": "log-probe"})
    rid = r.headers["request-id"]
    lines = wait_for(lambda: _log_lines(live, rid), 10, 0.05, "the request's log line")
    assert " GET /pools 200 " in lines[0], lines
    assert "ms " in lines[0], lines
    after_banner = (
        (live.data_dir / "server.log").read_text(errors="replace").split("AZURE_BATCH_ACCESS_KEY=<key>")[-1]
    )
    leaks = [
        ln
        for ln in after_banner.splitlines()
        if any(s in ln for s in ("SharedKey", live.key, "uthorization"))
    ]
    assert not leaks, leaks


def test_json_log_format(tight: LiveServer) -> None:
    raw = Raw(tight)
    r = raw.get("/jobs/nope")
    rid = r.headers["request-id"]
    lines = wait_for(lambda: _log_lines(tight, rid), 10, 0.05, "the request's log line")
    rec = json.loads(lines[0])
    assert rec["method"] == "GET" and rec["path"] == "/jobs/nope" and rec["status"] == 404, rec
    assert rec["request_id"] == rid and isinstance(rec["duration_ms"], float), rec
    assert rec["level"] == "info" and rec["logger"] == "batchyard.requests", rec


def test_version_and_help_list_the_environment() -> None:
    run = [sys.executable, "-m", "batchyard.cli.main"]
    out = subprocess.run([*run, "--version"], capture_output=True, text=True, check=True).stdout
    from batchyard import __version__

    assert out.strip() == f"batchyard {__version__}"
    helptext = subprocess.run([*run, "server", "--help"], capture_output=True, text=True, check=True).stdout
    for name in (
        "BATCHYARD_ACCOUNT_NAME",
        "BATCHYARD_ACCOUNT_KEY",
        "BATCHYARD_DATA_DIR",
        "BATCHYARD_DATABASE_URL",
        "BATCHYARD_PUBLIC_URL",
        "BATCHYARD_LOG_FORMAT",
        "--log-format",
        "--header-timeout",
        "--body-timeout",
        "--max-connections",
    ):
        assert name in helptext, name


# --- item 15: health probes ------------------------------------------------------------------------------------


def test_health_probes_need_no_key_and_no_api_version(live: LiveServer) -> None:
    import httpx

    r = httpx.get(f"{live.endpoint}/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text
    r = httpx.get(f"{live.endpoint}/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready", r.text
    assert httpx.head(f"{live.endpoint}/readyz").status_code == 200
    assert httpx.post(f"{live.endpoint}/healthz").status_code == 405
