"""A malformed-request sweep over every route the app has: never a 5xx, always a Batch error, nothing written.

The routes are read from the app itself (`create_app(...).routes`), so a new route is swept without anyone
remembering to add it. Each route gets malformed and mistyped JSON, deeply nested JSON, bodies over the
1 MiB limit (with a Content-Length and chunked without one), junk query parameters ($filter, maxresults,
timeout, ...), junk conditional and range headers, and junk path segments (NUL, `.`, `%2e`, `..`, a
trailing slash, 10,000-character ids, invalid UTF-8). Requests go out byte-exact (tests/support/wire.py)
and Shared Key signed, so they reach the handlers.

Which ids a request names decides whether it could write: requests that must fail before any write
(a malformed body on an operation that takes one, a junk If-Match or date header on a conditional one,
any read) name the real pool, node, job, task and files; everything else names ids that do not exist.
Each route's cases run between two snapshots of the store and the file tree, which must be equal.

tests/api/test_bad_input.py checks exact codes and property names for individual bad inputs; this file is
the breadth check (status class, error shape, no writes) and does not repeat those.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import pytest
from starlette.routing import Route

from batchyard.api.app import MAX_BODY, Settings, create_app
from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, pool_body
from tests.support.wire import Wire, WireResponse, batch_error_problem

# --- the routes, from the app -------------------------------------------------------------------------------


class _Inert:
    """Stands in for the service context: building the app only wires routes, it serves nothing."""

    def __getattr__(self, name: str) -> _Inert:
        return _Inert()

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()


def _app_routes() -> list[tuple[str, str]]:
    app: Any = create_app(cast(Any, _Inert()), Settings(account="sweep", key=b"k"))
    while not hasattr(app, "routes"):  # through any middleware wrapping the Starlette app
        app = app.app
    out: list[tuple[str, str]] = []
    for r in app.routes:
        assert isinstance(r, Route), f"a route the sweep cannot enumerate: {r!r}"
        for m in sorted(r.methods or ()):
            out.append((m, r.path))
    return out


ROUTES = _app_routes()
AGENT_SYNC = "/batchyard/agent/v1/sync"

# Operations whose request body is part of the operation (a model is decoded): a malformed body must be
# refused before anything is written, so these cases may name real ids.
BODY_OPS = {
    ("POST", "/pools"),
    ("PATCH", "/pools/{pool_id}"),
    ("POST", "/pools/{pool_id}/updateproperties"),
    ("POST", "/pools/{pool_id}/resize"),
    ("POST", "/jobs"),
    ("PATCH", "/jobs/{job_id}"),
    ("PUT", "/jobs/{job_id}"),
    ("POST", "/jobs/{job_id}/terminate"),
    ("POST", "/jobs/{job_id}/disable"),
    ("POST", "/jobs/{job_id}/tasks"),
    ("POST", "/jobs/{job_id}/addtaskcollection"),
    ("PUT", "/jobs/{job_id}/tasks/{task_id}"),
}
# Operations that honour If-Match / If-(Un)Modified-Since (the spec's conditional writes): a junk condition
# must stop them, so these cases may name real ids.
CONDITIONAL_WRITES = {
    ("DELETE", "/pools/{pool_id}"),
    ("PATCH", "/pools/{pool_id}"),
    ("POST", "/pools/{pool_id}/resize"),
    ("POST", "/pools/{pool_id}/stopresize"),
    ("PATCH", "/jobs/{job_id}"),
    ("PUT", "/jobs/{job_id}"),
    ("DELETE", "/jobs/{job_id}"),
    ("POST", "/jobs/{job_id}/terminate"),
    ("POST", "/jobs/{job_id}/disable"),
    ("POST", "/jobs/{job_id}/enable"),
    ("PUT", "/jobs/{job_id}/tasks/{task_id}"),
    ("DELETE", "/jobs/{job_id}/tasks/{task_id}"),
    ("POST", "/jobs/{job_id}/tasks/{task_id}/terminate"),
    ("POST", "/jobs/{job_id}/tasks/{task_id}/reactivate"),
}
READS = {"GET", "HEAD"}


# --- the inputs ------------------------------------------------------------------------------------------------

DEEP = 100_000
BODIES: list[tuple[str, bytes]] = [
    ("truncated", b'{"id": "x", '),
    ("not json", b"{not json"),
    ("open brace", b"{"),
    ("array", b"[]"),
    ("string", b'"a string"'),
    ("null", b"null"),
    ("number", b"12"),
    ("nested arrays", b"[" * DEEP + b"]" * DEEP),
    ("nested objects", b'{"a":' * DEEP + b"1" + b"}" * DEEP),
    ("nested in a property", b'{"id": "x", "metadata": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
    ("invalid utf-8", b'{"id": "\xff\xfe", "commandLine": "\xc3("}'),
    ("utf-16", '{"id": "x"}'.encode("utf-16")),
    ("nul in string", b'{"id": "a\\u0000b", "commandLine": "x\\u0000"}'),
    ("huge number", b'{"targetDedicatedNodes": 1' + b"0" * 5000 + b', "priority": 1e999}'),
    ("duplicate keys", b'{"id": "a", "id": 5}'),
    ("trailing garbage", b'{"id": "x"} [1]'),
]
# Every property of a valid body given the wrong JSON type at once, and nested objects' properties too.
WRONG_TYPES: list[tuple[str, bytes]] = [
    (
        "wrong types",
        b'{"id": 5, "vmSize": [], "targetDedicatedNodes": "many", "poolInfo": 3, "commandLine": {},'
        b' "value": "x", "priority": true, "metadata": {"a": 1}, "constraints": [], "disableTasks": 7,'
        b' "terminateReason": [], "targetLowPriorityNodes": -1.5, "resizeTimeout": 12,'
        b' "nodeDeallocationOption": {}, "startTask": "x", "onAllTasksComplete": 1}',
    ),
    (
        "wrong nested types",
        b'{"id": "x", "poolInfo": {"poolId": 1, "autoPoolSpecification": "y"}, "constraints":'
        b' {"maxWallClockTime": 5, "maxTaskRetryCount": "z"}, "value": [1, "a", null],'
        b' "virtualMachineConfiguration": {"imageReference": []}, "environmentSettings": [{"name": 1}],'
        b' "metadata": [{"name": null, "value": []}], "userIdentity": {"autoUser": "x"}}',
    ),
    (
        "negative durations",
        b'{"id": "x", "constraints": {"maxWallClockTime": "-PT1H", "retentionTime": "-P1D"},'
        b' "resizeTimeout": "-PT5M", "poolInfo": {"poolId": "p"}, "commandLine": "true"}',
    ),
]
BIG = MAX_BODY + 4096

FILTERS = [
    "é",
    "false ' NaN lt 'é☃' ne",
    "'",
    "id eq 'x",
    "id eq 'é",
    "(((((((((((",
    ")",
    "id eq 'a' and",
    "id eq 'a' and (" * 500,
    "state eq 1",
    "id eq null",
    "substringof('a', id)",
    "startswith(id, 'a') eq true",
    "\x00",
    "id eq '\x00'",
    "x" * 10_000,
    "☃ eq '☃'",
    "id eq 'a' or " * 300 + "id eq 'b'",
    "executionInfo/exitCode gt 99999999999999999999999",
    "creationTime gt datetime'garbage'",
    "id eq 'a'' or ''b'",
]
QUERIES: list[tuple[str, str]] = [
    (f"$filter {i}", "$filter=" + quote(f, safe="")) for i, f in enumerate(FILTERS)
]
QUERIES += [
    ("$filter invalid utf-8", "$filter=%ff%fe"),
    ("$filter raw percent", "$filter=%"),
]
for name in ("maxresults", "timeout"):
    for v in ("", "-1", "0", "ten", "1e3", "99999999999999999999999", "%00", "%ff", "1.5", "0x10", "%C3%A9"):
        QUERIES.append((f"{name}={v!r}", f"{name}={v}"))
QUERIES += [
    ("maxresults twice", "maxresults=1&maxresults=x"),
    ("$select junk", "$select=" + quote(",,,nosuch,é,\x00", safe="")),
    ("$expand junk", "$expand=" + quote("stats,stats,nosuch,é", safe="")),
    ("$skiptoken junk", "$skiptoken=garbage%00%ff"),
    ("$skiptoken long", "$skiptoken=" + "A" * 10_000),
    ("recursive junk", "recursive=maybe"),
    ("force junk", "force=%ff"),
    ("unknown parameter", "frobnicate=1"),
    ("bare names", "&&&=&$filter&maxresults"),
]
# writes take only `timeout` among these; a few others check that stray list parameters are harmless
WRITE_QUERIES = [q for q in QUERIES if q[0].startswith("timeout")] + QUERIES[:2] + QUERIES[-2:]
# (name, query without api-version, api_version) — api-version junk itself
VERSIONS = [
    ("api-version é", "%C3%A9"),
    ("api-version invalid utf-8", "%ff"),
    ("api-version huge", "9" * 5000),
]

HEADERS: list[tuple[str, dict[str, str]]] = [
    ("If-Match junk", {"If-Match": "junk"}),
    ("If-Match quoted", {"If-Match": '"0x8D0000000000000"'}),
    ("If-None-Match junk", {"If-None-Match": "junk-etag"}),
    ("If-Modified-Since junk", {"If-Modified-Since": "yesterday"}),
    ("If-Unmodified-Since junk", {"If-Unmodified-Since": "Tue, 99 Foo 2020 99:99:99 GMT"}),
    ("If-Modified-Since far", {"If-Modified-Since": "Fri, 31 Dec 99999 23:59:59 GMT"}),
    ("If-Unmodified-Since epoch-1", {"If-Unmodified-Since": "Wed, 31 Dec 1969 23:59:59 GMT"}),
    ("ocp-range junk", {"ocp-range": "bytes=abc"}),
    ("ocp-range inverted", {"ocp-range": "bytes=5-1"}),
    ("ocp-range dash", {"ocp-range": "bytes=-"}),
    ("ocp-range huge", {"ocp-range": "bytes=99999999999999999999999-"}),
    ("ocp-range multi", {"ocp-range": "bytes=0-0,1-2"}),
    ("ocp-range unit", {"ocp-range": "items=0-1"}),
    ("ocp-range negative", {"ocp-range": "bytes=-99999999999999999999999"}),
    ("client-request-id junk", {"client-request-id": "é" * 3, "return-client-request-id": "true"}),
    ("return-client-request-id junk", {"return-client-request-id": "maybe"}),
    ("Content-Type junk", {"Content-Type": "text/xml; charset=ebcdic"}),
]
CONDITIONAL_JUNK = ["If-Match junk", "If-Modified-Since junk", "If-Unmodified-Since junk"]

SEGMENTS: list[tuple[str, str]] = [
    ("NUL", "%00"),
    ("NUL inside", "a%00b"),
    ("dot", "."),
    ("%2e", "%2e"),
    ("dot dot", ".."),
    ("%2e%2e", "%2e%2e"),
    ("10,000 chars", "a" * 10_000),
    ("invalid utf-8", "%ff%fe"),
    ("overlong utf-8", "%c0%af"),
    ("non-ascii", "%C3%A9"),
    ("encoded slash", "a%2Fb"),
    ("semicolon", "a;b=c"),
    ("backslash", "a%5Cb"),
    ("percent", "%"),
]
FILE_PATHS: list[tuple[str, str]] = [
    ("NUL", "%00"),
    ("NUL in wd", "wd/%00"),
    ("NUL after name", "stdout.txt%00.png"),
    ("dot dot", "../../.."),
    ("%2e%2e", "%2e%2e/%2e%2e/%2e%2e/etc/passwd"),
    ("encoded traversal", "..%2F..%2F..%2F..%2Fetc%2Fpasswd"),
    ("10,000 chars", "a" * 10_000),
    ("deep", "a/" * 3000 + "b"),
    ("invalid utf-8", "%ff%fe"),
    ("absolute", "%2Fetc%2Fpasswd"),
    ("backslashes", "..%5C..%5Cetc"),
    ("dot", "."),
    ("trailing slash", "wd/"),
    ("empty segment", "wd//x"),
]


# --- the world the sweep runs in -----------------------------------------------------------------------------


@dataclass
class World:
    raw: Raw
    wire: Wire
    pool: str
    node: str
    job: str
    task: str
    node_file: str  # percent-encoded path of the task's stdout under the node root
    token_node: str


@pytest.fixture(scope="module")
def world(live: LiveServer) -> Iterator[World]:
    raw = Raw(live)
    wire = Wire("127.0.0.1", live.port, live.account, live.key)
    pool = "sweep-" + uuid.uuid4().hex[:6]
    assert raw.post("/pools", pool_body(pool, 1)).status_code == 201
    nodes = wait_for(
        lambda: [n for n in raw.json(f"/pools/{pool}/nodes")["value"] if n["state"] == "idle"],
        60,
        0.1,
        "a node to be idle",
    )
    node = nodes[0]["id"]
    job, task = "sweep-job", "sweep-task"
    assert raw.post("/jobs", {"id": job, "poolInfo": {"poolId": pool}}).status_code == 201
    r = raw.post(f"/jobs/{job}/tasks", {"id": task, "commandLine": "/bin/sh -c 'echo out; echo err >&2'"})
    assert r.status_code == 201, r.text()
    wait_for(lambda: raw.json(f"/jobs/{job}/tasks/{task}")["state"] == "completed", 60, 0.1, "the task")
    files = raw.json(f"/pools/{pool}/nodes/{node}/files", params={"recursive": "true"})["value"]
    stdout = next(f["name"] for f in files if f["name"].endswith(f"{task}/stdout.txt"))
    wait_for(lambda: raw.json(f"/pools/{pool}")["allocationState"] == "steady", 30, 0.1, "pool steady")
    yield World(raw, wire, pool, node, job, task, quote(stdout, safe=""), node)
    raw.delete(f"/jobs/{job}")
    raw.delete(f"/pools/{pool}")
    wait_for(lambda: not raw.json("/pools")["value"], 60, 0.1, "pools to be deleted")


def snapshot(w: World) -> dict[str, Any]:
    """What a stray write would change: entities with their ETags and states, node states, the file trees."""
    raw = w.raw

    def rows(path: str, *keys: str, recursive: bool = False) -> list[tuple[Any, ...]]:
        params = {"recursive": "true"} if recursive else None
        return sorted(tuple(x.get(k) for k in keys) for x in raw.json(path, params=params)["value"])

    out: dict[str, Any] = {
        "pools": rows("/pools", "id", "eTag", "state", "allocationState", "targetDedicatedNodes"),
        "jobs": rows("/jobs", "id", "eTag", "state"),
        "nodes": rows(f"/pools/{w.pool}/nodes", "id", "state", "schedulingState"),
        "task files": rows(f"/jobs/{w.job}/tasks/{w.task}/files", "name", "isDirectory", recursive=True),
        "node files": rows(f"/pools/{w.pool}/nodes/{w.node}/files", "name", "isDirectory", recursive=True),
    }
    for job in out["jobs"]:
        out[f"tasks of {job[0]}"] = rows(f"/jobs/{job[0]}/tasks", "id", "eTag", "state")
    return out


# --- building and checking requests -----------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    method: str
    path: str
    query: str | None = None
    headers: dict[str, str] | None = None
    body: bytes | None = None
    chunked: bool = False
    api_version: str | None = "2024-07-01.20.0"


def fill(template: str, w: World, real: bool, override: dict[str, str] | None = None) -> str:
    """The template with real ids (or fresh missing ones), some parameters replaced by raw segments."""
    miss = "missing-" + uuid.uuid4().hex[:6]
    values = {
        "pool_id": w.pool if real else miss,
        "node_id": w.node if real else miss,
        "job_id": w.job if real else miss,
        "task_id": w.task if real else miss,
        "file_path": (w.node_file if "/nodes/" in template else "stdout.txt") if real else miss,
    }
    path = template.replace("{file_path:path}", "{file_path}")
    for name in _params(template):
        v = (override or {}).get(name, values.get(name, "x" if real else miss))
        path = path.replace("{" + name + "}", v)
    return path


def _params(template: str) -> list[str]:
    out = []
    for part in template.split("{")[1:]:
        out.append(part.split("}")[0].split(":")[0])
    return out


def cases_for(method: str, template: str, w: World) -> list[Case]:
    op = (method, template)
    takes_body = op in BODY_OPS
    read = method in READS
    out: list[Case] = []
    # bodies: real ids only where the body is decoded before anything else happens
    if method != "HEAD":
        path = fill(template, w, real=takes_body or read)
        for name, body in BODIES + WRONG_TYPES:
            if method in ("POST", "PUT", "PATCH") or name in ("truncated", "nested arrays"):
                out.append(Case(f"body {name}", method, path, body=body))
        out.append(Case("body over 1 MiB with Content-Length", method, path, body=b" " * BIG))
        out.append(Case("body over 1 MiB chunked", method, path, body=b" " * BIG, chunked=True))
    # query parameters: real ids for reads only
    path = fill(template, w, real=read)
    for name, q in QUERIES if read else WRITE_QUERIES:
        out.append(Case(f"query {name}", method, path, query=q))
    for name, v in VERSIONS:
        out.append(Case(name, method, path, api_version=v))
    # headers: real ids for reads and for the junk conditions of conditional writes
    for name, h in HEADERS:
        real = read or (op in CONDITIONAL_WRITES and name in CONDITIONAL_JUNK)
        out.append(Case(f"header {name}", method, fill(template, w, real=real), headers=h))
    # path segments: every parameter in turn; the others stay real for reads, and for file deletes (a junk
    # file path names nothing that may be deleted, except `wd/`, the real, empty working directory)
    for param in _params(template):
        junk = FILE_PATHS if param == "file_path" else SEGMENTS
        for name, seg in junk:
            real = read or (param == "file_path" and name != "trailing slash")
            out.append(Case(f"{param} {name}", method, fill(template, w, real=real, override={param: seg})))
    if template != "/":
        out.append(Case("trailing slash", method, fill(template, w, real=read) + "/"))
        out.append(Case("double slash", method, "/" + fill(template, w, real=read)))
    return out


def send(w: World, c: Case) -> WireResponse:
    if c.chunked:
        assert c.body is not None
        step = 1 << 16
        return w.wire.request(
            c.method,
            c.path,
            c.query,
            headers=c.headers,
            chunks=(c.body[i : i + step] for i in range(0, len(c.body), step)),
            api_version=c.api_version,
        )
    return w.wire.request(
        c.method, c.path, c.query, headers=c.headers, body=c.body, api_version=c.api_version
    )


def problem(c: Case, r: WireResponse) -> str | None:
    why = batch_error_problem(r, c.method, request_id=c.path != AGENT_SYNC)
    if why is None and r.status == 501:
        code = r.json().get("code") if c.method != "HEAD" else "NotImplemented"
        if code != "NotImplemented":
            why = f"501 with code {code}"
    if why is None and 300 <= r.status < 400 and r.status != 304:  # 304 ConditionNotMet answers a read
        why = f"redirect {r.status} to {r.headers.get('location')!r} instead of a Batch error"
    return why


def run(w: World, cases: list[Case]) -> list[str]:
    failures = []
    for c in cases:
        r = send(w, c)
        why = problem(c, r)
        if why:
            shown = c.path if len(c.path) < 120 else c.path[:100] + f"...({len(c.path)} chars)"
            q = "" if c.query is None else "?" + (c.query if len(c.query) < 80 else c.query[:60] + "...")
            failures.append(f"{c.name}: {c.method} {shown}{q} -> {r.status} {why}: {r.text()[:160]!r}")
    return failures


def report(failures: list[str], written: list[str]) -> None:
    lines = failures + [f"WRITTEN: {x}" for x in written]
    assert not lines, f"{len(failures)} bad answers, {len(written)} changes:\n" + "\n".join(lines)


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [
        f"{k}: {before.get(k)} -> {after.get(k)}"
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k)
    ]


# --- the sweep ---------------------------------------------------------------------------------------------------


SWEPT = [(m, p) for m, p in ROUTES if p != AGENT_SYNC]


@pytest.mark.parametrize("method,template", SWEPT, ids=[f"{m} {p}" for m, p in SWEPT])
def test_route(world: World, method: str, template: str) -> None:
    before = snapshot(world)
    failures = run(world, cases_for(method, template, world))
    report(failures, diff(before, snapshot(world)))


# Methods the HTTP parser knows; an unknown token (e.g. FROB) is refused by uvicorn's parser with a plain 400
# before the app sees it, which this sweep does not hold against the app.
OTHER_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "MERGE"]


def test_unknown_routes_and_methods(world: World) -> None:
    before = snapshot(world)
    paths = [
        "/",
        "/nosuchthing",
        "/$metadata",
        f"/pools/{world.pool}/nosuch",
        f"/jobs/{world.job}/tasks/{world.task}/nosuch/deeper",
        "/batchyard",
        "/batchyard/agent/v1/nosuch",
        "/batchyard/agent/v2/sync",
        "/%00",
        "/%ff",
        "/" + "a" * 10_000,
    ]
    cases = [Case("unknown route", m, p) for p in paths for m in OTHER_METHODS]
    by_path: dict[str, set[str]] = {}
    for m, p in ROUTES:
        by_path.setdefault(p, set()).add(m)
    for template, methods in by_path.items():
        for m in OTHER_METHODS:
            if m not in methods:
                cases.append(Case("method not allowed", m, fill(template, world, real=False)))
    failures = run(world, cases)
    # no signature, no api-version: still a Batch error
    for p in ("/pools", "/nosuch", AGENT_SYNC):
        r = world.wire.request("GET", p, sign=False, api_version=None)
        if why := problem(Case("unsigned", "GET", p), r):
            failures.append(f"unsigned GET {p} -> {r.status} {why}")
    report(failures, diff(before, snapshot(world)))


def test_agent_sync(world: World) -> None:
    """The agent protocol route: token first, bounded body, 4xx Batch errors, no effect without the token."""
    before = snapshot(world)
    node = world.node
    bodies = [b for _, b in BODIES] + [
        b'{"nodeId": 5, "events": "x", "running": 7, "wait": "x", "pid": "x"}',
        b'{"nodeId": "%s", "events": [{"type": "completed", "ref": "x"}], "wait": 0}' % node.encode(),
        b'{"nodeId": "%s", "wait": "NaN", "pid": -1}' % node.encode(),
        b'{"nodeId": "%s", "wait": 1e999, "running": [[[]]]}' % node.encode(),
        b'{"nodeId": "%s", "wait": 20}' % node.encode(),
        b'{"nodeId": "' + b"n" * 10_000 + b'", "wait": 0}',
        b" " * BIG,
    ]
    cases: list[Case] = []
    for token in (None, "", "wrong-token"):
        h = {} if token is None else {"x-batchyard-node-token": token}
        for b in bodies:
            cases.append(Case(f"sync token={token!r} body={b[:40]!r}", "POST", AGENT_SYNC, headers=h, body=b))
    cases.append(Case("sync chunked huge", "POST", AGENT_SYNC, body=b" " * BIG, chunked=True))
    failures = []
    for c in cases:
        r = world.wire.request(
            c.method,
            c.path,
            None,
            headers=c.headers,
            body=None if c.chunked else c.body,
            chunks=None if not c.chunked else iter([c.body or b""]),
            sign=False,
            api_version=None,
        )
        why = problem(c, r)
        if why is None and r.status < 400:
            why = f"accepted without a valid token ({r.status})"
        if why:
            failures.append(f"{c.name} -> {r.status} {why}: {r.text()[:160]!r}")
    report(failures, diff(before, snapshot(world)))


@pytest.mark.parametrize(
    "method,template",
    [
        ("POST", "/pools"),
        ("PATCH", "/pools/{pool_id}"),
        ("POST", "/jobs/{job_id}/tasks"),
        ("GET", "/pools"),
        ("POST", AGENT_SYNC),
    ],
)
def test_declared_body_never_sent(world: World, method: str, template: str) -> None:
    """Content-Length over the limit is refused at once, without waiting for a body that never comes.

    A GET does not read a body; answering it at once without reading is as good as a 413.
    """
    path = fill(template, world, real=True)
    fast = Wire(world.wire.host, world.wire.port, world.wire.account, world.wire.key_b64, timeout=3.0)
    r = fast.request(method, path, body=b"{", declared_length=50 * 1024 * 1024, sign=path != AGENT_SYNC)
    shown = f"{method} {path} declaring 50 MiB and sending 1 byte -> {r.status} {r.error} {r.text()}"
    if method == "GET":
        assert r.status != 0 and r.status < 500, shown
    elif path == AGENT_SYNC:  # unauthenticated: refusing it before the size check is as good
        assert r.status in (401, 403, 413), shown
    else:
        assert r.status == 413, shown
    assert problem(Case("declared", method, path), r) is None


def test_agent_log_is_not_served(world: World) -> None:
    """`.agent.log` is hidden from listings, so it is not readable or deletable by path either."""
    before = snapshot(world)
    path = f"/pools/{world.pool}/nodes/{world.node}/files/.agent.log"
    got = {m: world.wire.request(m, path).status for m in ("HEAD", "GET", "DELETE")}
    report([f"{m} {path} -> {s}" for m, s in got.items() if s != 404], diff(before, snapshot(world)))


def test_raw_bytes_in_the_request_line(world: World) -> None:
    """Bytes no client should send (raw 0xff, a raw space) in the target: a 4xx, never a 5xx or a hang."""
    failures = []
    for target in ("/pools/\xff\xfe", "/pools?$filter=\xe9", "/jobs/a b/tasks"):
        path, _, q = target.partition("?")
        r = world.wire.request("GET", path, q or None)
        if r.status == 0 or r.status >= 500:
            failures.append(f"GET {target!r} -> {r.status} {r.error}")
    assert not failures, failures
    assert world.raw.get("/pools").status_code == 200


def _peak_rss_kib(pid: int, reset: bool = False) -> int | None:
    """VmHWM of the process; `reset` first lowers the mark to the current RSS (clear_refs 5, Linux 4.0+)."""
    try:
        if reset:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        return None
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_huge_bodies_are_not_buffered(live: LiveServer, world: World, chunked: bool) -> None:
    """A 50 MiB body is refused with 413 without the server ever holding it: its peak RSS barely moves."""
    assert live.proc is not None
    before = _peak_rss_kib(live.proc.pid, reset=True)
    if before is None:
        pytest.skip("no /proc here to read the server's peak RSS")
    body = b" " * (50 * 1024 * 1024)
    step = 1 << 20
    problems = []
    for path in ("/pools", f"/jobs/{world.job}/tasks", AGENT_SYNC):
        sign = path != AGENT_SYNC
        if chunked:
            r = world.wire.request(
                "POST", path, chunks=(body[i : i + step] for i in range(0, len(body), step)), sign=sign
            )
        else:
            r = world.wire.request("POST", path, body=body, sign=sign)
        if r.status != 413 and not (path == AGENT_SYNC and r.status in (401, 403)):
            problems.append(f"POST {path} with 50 MiB -> {r.status} {r.error} {r.text()}")
    after = _peak_rss_kib(live.proc.pid)
    assert after is not None
    grown_mib = (after - before) / 1024
    if grown_mib >= 16:
        problems.append(f"the server's peak RSS grew by {grown_mib:.0f} MiB while refusing 50 MiB bodies")
    assert not problems, problems
