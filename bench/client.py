"""Server lifecycle, process probes and a raw Shared Key HTTP client for the benchmark harness.

The server is started as a user starts it (`batchyard server --port P --data-dir D`, default SQLite store,
local nodes); each scenario gets a fresh one on a free port with a temporary data directory.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from batchyard.api.shared_key import SignedRequest, compute_signature, string_to_sign_variants
from batchyard.cli.main import DEV_ACCOUNT, DEV_KEY

T = TypeVar("T")
API_VERSION = "2024-07-01.20.0"
CONTENT_TYPE = "application/json; odata=minimalmetadata; charset=utf-8"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(fn: Callable[[], T | None], timeout: float, interval: float = 0.05, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last value: {last!r})")


# --- /proc probes --------------------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def proc_hwm_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def agent_pids(data_dir: Path) -> list[int]:
    """Every `batchyard agent` process whose node root lives under data_dir."""
    needle = str(data_dir).encode()
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"batchyard.agent.main" in cmd and needle in cmd:
            out.append(int(entry.name))
    return out


def kill_agents(data_dir: Path) -> None:
    """Kill every agent (and its tasks) of this server, by process group, as tests/support/live.py does."""
    for pid in agent_pids(data_dir):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# --- the server --------------------------------------------------------------------------------------------


def server_command() -> list[str]:
    """`batchyard server` as installed next to this interpreter, else `python -m batchyard.cli.main`."""
    exe = Path(sys.executable).with_name("batchyard")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("batchyard")
    return [found] if found else [sys.executable, "-m", "batchyard.cli.main"]


@dataclass
class Server:
    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    account: str = DEV_ACCOUNT
    key: str = DEV_KEY
    sql_dump: Path | None = None  # run under bench/sqlcount.py, which counts SQL statements
    extra_args: list[str] = field(default_factory=list)  # more `batchyard server` options

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = server_command()
        if self.sql_dump is not None:
            cmd = [sys.executable, str(Path(__file__).with_name("sqlcount.py")), str(self.sql_dump)]
        args = [*cmd, "server", "--port", str(self.port), "--data-dir", str(self.data_dir), *self.extra_args]
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(up, 60, what="the server to listen")
        return self

    def log_tail(self, n: int = 40) -> str:
        p = self.data_dir / "server.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""

    def sql_counts(self) -> dict[str, Any]:
        """The SQL statement counts so far (only when started with sql_dump)."""
        assert self.sql_dump is not None
        before = self.sql_dump.stat().st_mtime_ns if self.sql_dump.exists() else 0
        os.kill(self.pid, signal.SIGUSR1)
        wait_for(
            lambda: (
                self.sql_dump is not None
                and self.sql_dump.exists()
                and self.sql_dump.stat().st_mtime_ns != before
            ),
            10,
            0.01,
            "the SQL count dump",
        )
        data: dict[str, Any] = json.loads(self.sql_dump.read_text())
        return data

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return proc_rss_bytes(self.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        kill_agents(self.data_dir)

    def sdk(self) -> Any:
        """The official client (azure-batch), as a user creates it."""
        from azure.batch import BatchClient
        from azure.core.credentials import AzureNamedKeyCredential

        return BatchClient(endpoint=self.endpoint, credential=AzureNamedKeyCredential(self.account, self.key))

    def raw(self) -> RawClient:
        return RawClient(self.endpoint, self.account, self.key)

    def async_raw(self, connections: int) -> AsyncRawClient:
        return AsyncRawClient(self.endpoint, self.account, self.key, connections)


# --- raw HTTP with Shared Key ------------------------------------------------------------------------------


class Signer:
    """Signs requests the way azure-batch 15.x's BatchSharedKeyAuthPolicy does (the server's canonical form)."""

    def __init__(self, account: str, key_b64: str) -> None:
        self.account = account
        self.key = base64.b64decode(key_b64)

    def headers(self, method: str, url: str, body: bytes | None) -> dict[str, str]:
        h: dict[str, str] = {"ocp-date": format_datetime(datetime.now(UTC), usegmt=True)}
        if body is not None:
            h["content-type"] = CONTENT_TYPE
            h["content-length"] = str(len(body))
        elif method not in ("GET", "HEAD"):
            h["content-length"] = "0"
        parts = urlsplit(url)
        req = SignedRequest(method, parts.path, parts.query, h)
        # the first canonical form is the one the Python clients sign
        sig = compute_signature(string_to_sign_variants(req, self.account)[0], self.key)
        h["authorization"] = f"SharedKey {self.account}:{sig}"
        return h


def build_url(endpoint: str, path: str, params: Mapping[str, str | int] | None = None) -> str:
    q = {"api-version": API_VERSION, **(params or {})}
    qs = "&".join(f"{quote(k, safe='$-')}={quote(str(v), safe='')}" for k, v in q.items())
    return f"{endpoint}{quote(path)}?{qs}"


class RawClient:
    """Synchronous signed HTTP (one keep-alive connection)."""

    def __init__(self, endpoint: str, account: str, key: str) -> None:
        self.endpoint = endpoint
        self.signer = Signer(account, key)
        self.http = httpx.Client(timeout=httpx.Timeout(120.0))

    def request(
        self, method: str, path: str, params: Mapping[str, str | int] | None = None, body: Any = None
    ) -> httpx.Response:
        url = build_url(self.endpoint, path, params)
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        resp = self.http.request(method, url, content=data, headers=self.signer.headers(method, url, data))
        return resp

    def ok(
        self, method: str, path: str, params: Mapping[str, str | int] | None = None, body: Any = None
    ) -> Any:
        resp = self.request(method, path, params, body)
        if resp.status_code >= 300:
            raise RuntimeError(f"{method} {path} -> {resp.status_code}: {resp.text[:500]}")
        return resp.json() if resp.content else None

    def list_all(self, path: str, params: Mapping[str, str | int] | None = None) -> list[dict[str, Any]]:
        """Every item of a list operation, following odata.nextLink."""
        out: list[dict[str, Any]] = []
        data = self.ok("GET", path, params)
        while True:
            out.extend(data["value"])
            nxt = data.get("odata.nextLink")
            if not nxt:
                return out
            resp = self.http.get(nxt, headers=self.signer.headers("GET", nxt, None))
            if resp.status_code != 200:
                raise RuntimeError(f"GET {nxt} -> {resp.status_code}: {resp.text[:300]}")
            data = resp.json()

    def close(self) -> None:
        self.http.close()


class AsyncRawClient:
    """Signed HTTP over several concurrent keep-alive connections (asyncio + httpx)."""

    def __init__(self, endpoint: str, account: str, key: str, connections: int) -> None:
        self.endpoint = endpoint
        self.signer = Signer(account, key)
        self.connections = connections
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=limits)

    async def post(self, path: str, body: bytes) -> httpx.Response:
        url = build_url(self.endpoint, path)
        return await self.http.post(url, content=body, headers=self.signer.headers("POST", url, body))

    async def add_collections(
        self,
        job_id: str,
        bodies: Sequence[bytes],
        progress: Callable[[int], None] | None = None,
        deadline: float | None = None,
    ) -> int:
        """POST every body to addtaskcollection with `connections` workers; returns tasks accepted.

        With a `deadline` (time.monotonic()), workers stop taking new bodies once it has passed."""
        path = f"/jobs/{job_id}/addtaskcollection"
        it = iter(range(len(bodies)))
        accepted = 0
        failures: list[str] = []

        async def worker() -> None:
            nonlocal accepted
            for i in it:
                if deadline is not None and time.monotonic() > deadline:
                    return
                resp = await self.post(path, bodies[i])
                if resp.status_code != 200:
                    failures.append(f"{resp.status_code}: {resp.text[:300]}")
                    return
                vals = resp.json()["value"]
                ok = sum(1 for v in vals if v.get("status") == "Success")
                if ok != len(vals):
                    failures.append(json.dumps([v for v in vals if v.get("status") != "Success"][:2]))
                accepted += ok
                if progress is not None:
                    progress(accepted)

        await asyncio.gather(*(worker() for _ in range(self.connections)))
        if failures:
            raise RuntimeError(f"{len(failures)} addtaskcollection failures, first: {failures[0]}")
        return accepted

    async def aclose(self) -> None:
        await self.http.aclose()


def collection_bodies(
    prefix: str, count: int, command: str = "/bin/true", per_request: int = 100
) -> list[bytes]:
    """addtaskcollection bodies of `per_request` tasks each, ids prefix0000000…"""
    return list(LazyBodies(prefix, count, command, per_request))


class LazyBodies(Sequence[bytes]):
    """The same bodies as `collection_bodies`, built when asked for: 10,000,000 tasks would hold ~0.5 GiB of
    request bodies in the client otherwise."""

    def __init__(self, prefix: str, count: int, command: str = "/bin/true", per_request: int = 100) -> None:
        self.prefix, self.tasks, self.command, self.per = prefix, count, command, per_request

    def __len__(self) -> int:
        return -(-self.tasks // self.per)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i * self.per
        value = [
            {"id": f"{self.prefix}{k:07d}", "commandLine": self.command}
            for k in range(start, min(self.tasks, start + self.per))
        ]
        return json.dumps({"value": value}, separators=(",", ":")).encode()


def parse_time(text: str) -> datetime:
    """Batch's ISO form with up to 7 fraction digits (…T12:34:56.1234567Z) to an aware datetime."""
    t = text.rstrip("Z")
    if "." in t:
        head, frac = t.split(".", 1)
        t = f"{head}.{frac[:6].ljust(6, '0')}"
    return datetime.fromisoformat(t).replace(tzinfo=UTC)
