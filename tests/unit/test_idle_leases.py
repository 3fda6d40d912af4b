"""Leases that cost events, not nodes (decision 0185): exits from the provider's watch, lapsed leases from
memory; and the simulated provider's socket (decision 0187). Real SQLite store, real processes for the pidfds."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from batchyard.models.clock import monotonic
from batchyard.pools.local import ExitWatch, LocalProvider
from batchyard.pools.manager import PoolManager
from batchyard.pools.nat import Forwarder
from batchyard.pools.provider import NodeEvent, NodeProvider, NodeSpec
from batchyard.pools.quota import Quotas
from batchyard.pools.simulated import FIRST_HANDLE, SimulatedProvider
from batchyard.service import pools, usage
from batchyard.service.context import Ctx
from batchyard.store import schema
from batchyard.store.sql import SqlStore
from tests.conftest import require_pg
from tests.contract.test_store import BACKENDS, _pg_exec, pg_url_for_schema
from tests.support.raw import pool_body


class Watched:
    """A provider that watches every agent: exits are only what `exited` reports."""

    def __init__(self) -> None:
        self.server_url = "http://127.0.0.1:1"
        self.starts: list[str] = []
        self.alive_calls = 0
        self.running: dict[str, int] = {}
        self.pending: list[tuple[int | None, str]] = []
        self.next = 10_000_000

    def create(self, specs: Sequence[NodeSpec]) -> list[int | OSError]:
        return [self.start(sp) for sp in specs]

    def start(self, spec: NodeSpec) -> int:
        self.next += 1
        self.running[spec.node_id] = self.next
        self.starts.append(spec.node_id)
        return self.next

    def alive(self, handle: int | None, node_id: str) -> bool:
        self.alive_calls += 1
        return handle is not None and self.running.get(node_id) == handle

    def watch(self, handle: int | None, node_id: str) -> bool:
        return True

    def exited(self) -> list[tuple[int | None, str]]:
        out, self.pending = self.pending, []
        return out

    def crash(self, node_id: str) -> None:
        self.pending.append((self.running.pop(node_id), node_id))

    def stop(self, handle: int | None, node_id: str) -> None:
        self.running.pop(node_id, None)

    def kill(self, handle: int | None, node_id: str) -> None:
        self.running.pop(node_id, None)

    def wipe(self, node_id: str, root: Path) -> None:
        pass

    def events(self) -> list[NodeEvent]:
        return []


def _setup(tmp_path: Path, nodes: int = 3) -> tuple[Ctx, PoolManager, Watched]:
    async def make() -> Ctx:
        return Ctx(store=store, data_dir=tmp_path, account="acct")

    store = SqlStore.for_data_dir(tmp_path)
    store.migrate()
    ctx = asyncio.run(make())
    prov = Watched()
    m = PoolManager(ctx, prov, quotas=Quotas(500, 100))
    pools.create_pool(ctx, pool_body("p", nodes))
    for _ in range(3):
        m._record_spawns(m._spawn_all(m.reconcile()))
    with ctx.store.tx() as tx:  # what the agents' first syncs do
        for row in tx.select(schema.nodes):
            row["body"]["state"] = "idle"
            tx.update(schema.nodes, {"state": "idle", "body": row["body"]}, id=row["id"])
    return ctx, m, prov


def _states(ctx: Ctx) -> dict[str, str]:
    with ctx.store.tx() as tx:
        return {r["id"]: r["state"] for r in tx.select(schema.nodes)}


def test_the_contract_includes_watching() -> None:
    assert isinstance(Watched(), NodeProvider)
    assert isinstance(SimulatedProvider("http://x", Path("/nonexistent")), NodeProvider)


def test_idle_watched_nodes_are_neither_read_nor_probed(tmp_path: Path) -> None:
    ctx, m, prov = _setup(tmp_path)
    calls = prov.alive_calls
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    from sqlalchemy import event

    event.listen(ctx.store.engine, "before_cursor_execute", count)
    try:
        for _ in range(5):
            m.check_leases()
    finally:
        event.remove(ctx.store.engine, "before_cursor_execute", count)
    assert statements == [] and prov.alive_calls == calls


def test_an_exited_agent_is_respawned_once(tmp_path: Path) -> None:
    ctx, m, prov = _setup(tmp_path)
    nid = sorted(_states(ctx))[0]
    prov.starts.clear()
    prov.crash(nid)
    m.check_leases()
    assert prov.starts == [nid] and _states(ctx)[nid] == "starting"
    m.check_leases()
    assert prov.starts == [nid]  # the new agent is alive: nothing more


def test_a_silent_node_becomes_unknown_and_is_then_read_once_per_lease(tmp_path: Path) -> None:
    ctx, m, prov = _setup(tmp_path)
    nid = sorted(_states(ctx))[0]
    ctx.last_seen[nid] = monotonic() - m.lease - 1
    m.check_leases()
    assert _states(ctx)[nid] == "unknown" and sum(s == "idle" for s in _states(ctx).values()) == 2
    reads: list[str] = []
    from sqlalchemy import event

    def count(*args: object) -> None:
        reads.append(str(args[2]))

    event.listen(ctx.store.engine, "before_cursor_execute", count)
    try:
        m.check_leases()
    finally:
        event.remove(ctx.store.engine, "before_cursor_execute", count)
    assert reads == []  # looked at already; again once it syncs or after another lease
    ctx.last_seen[nid] = monotonic()  # it synced (the sync makes it idle again)
    m.check_leases()
    assert prov.starts.count(nid) == 1  # never respawned: its agent is alive


def test_an_exit_of_a_node_that_left_is_forgotten(tmp_path: Path) -> None:
    ctx, m, prov = _setup(tmp_path)
    nid = sorted(_states(ctx))[0]
    with ctx.store.tx() as tx:
        tx.delete(schema.nodes, id=nid)
    prov.starts.clear()
    prov.crash(nid)
    m.check_leases()
    assert nid not in m.dead and nid not in ctx.last_seen and prov.starts == []


def test_exit_watch_reports_each_exit_once(tmp_path: Path) -> None:
    w = ExitWatch()
    quick = subprocess.Popen([sys.executable, "-c", "pass"])
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert w.add(quick.pid, "a") and w.add(slow.pid, "b")
        deadline = time.monotonic() + 10
        gone: list[tuple[int, str]] = []
        while not gone and time.monotonic() < deadline:
            gone = w.exited()
            time.sleep(0.02)
        assert gone == [(quick.pid, "a")] and len(w) == 1
        assert w.exited() == []
        slow.kill()
        slow.wait()  # reaped elsewhere first: the pidfd still reports the exit
        deadline = time.monotonic() + 10
        while not (gone := w.exited()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gone == [(slow.pid, "b")] and len(w) == 0
        assert not w.add(2**30, "c")  # never a pid: not watched (the manager polls it)
    finally:
        slow.kill()
        quick.wait()


def test_the_local_provider_watches_its_agents(tmp_path: Path) -> None:
    prov = LocalProvider("http://x", "acct")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    assert prov.watch(child.pid, "n1")
    deadline = time.monotonic() + 10
    while not (gone := prov.exited()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone == [(child.pid, "n1")]
    assert not Path(f"/proc/{child.pid}").exists()  # reaped when reported: no zombie is left


def _lines(conn: socket.socket, n: int) -> list[dict[str, object]]:
    buf = b""
    while buf.count(b"\n") < n:
        chunk = conn.recv(65536)
        assert chunk, "the server closed the socket"
        buf += chunk
    return [json.loads(x) for x in buf.splitlines()[:n]]


def test_the_simulated_provider_hands_specs_over_its_socket(tmp_path: Path) -> None:
    prov = SimulatedProvider("http://127.0.0.1:9", tmp_path)
    prov.listen()
    try:
        assert stat.S_IMODE((tmp_path / "simagents.sock").stat().st_mode) == 0o600
        spec = NodeSpec("n1", "secret-token", "p", tmp_path / "nodes" / "n1", True)
        (h,) = prov.create([spec])
        assert isinstance(h, int) and h > FIRST_HANDLE and prov.alive(h, "n1") and prov.watch(h, "n1")
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(str(tmp_path / "simagents.sock"))
            hello, start = _lines(c, 2)  # a simulator that connects late gets every live node first
            assert hello == {"op": "hello", "server": "http://127.0.0.1:9"}
            assert start["op"] == "start" and start["token"] == "secret-token" and start["handle"] == h
            h2 = prov.start(NodeSpec("n2", "t2", "p", tmp_path, False))
            (again,) = _lines(c, 1)
            assert again["nodeId"] == "n2" and again["dedicated"] is False
            prov.stop(h, "n1")
            (stop,) = _lines(c, 1)
            assert stop == {"op": "stop", "nodeId": "n1", "handle": h}
            assert not prov.alive(h, "n1") and prov.exited() == [(h, "n1")]
            c.sendall(json.dumps({"op": "exited", "nodeId": "n2", "handle": h2}).encode() + b"\n")
            deadline = time.monotonic() + 5
            while not (gone := prov.exited()) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert gone == [(h2, "n2")] and not prov.alive(h2, "n2")
    finally:
        prov.close()
    assert not (tmp_path / "simagents.sock").exists()


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    """SQLite, and PostgreSQL in a schema of its own (as the store contract tests do)."""
    if request.param == "sqlite":
        s = SqlStore.for_data_dir(tmp_path)
        s.migrate()
        yield s
        s.dispose()
        return
    require_pg()
    name = f"by_{uuid.uuid4().hex}"
    _pg_exec(f"CREATE SCHEMA {name}")
    try:
        s = SqlStore(pg_url_for_schema(name))
        s.migrate()
        yield s
        s.dispose()
    finally:
        _pg_exec(f"DROP SCHEMA {name} CASCADE")


def test_growth_leases_usage_and_forwarder_on_each_store(any_store: SqlStore, tmp_path: Path) -> None:
    """The statements these passes use instead of reading node bodies, on both stores."""

    async def run() -> None:
        ctx = Ctx(store=any_store, data_dir=tmp_path, account="acct")
        prov = Watched()
        m = PoolManager(ctx, prov, quotas=Quotas(8, 100), spawn_batch=3)
        pools.create_pool(ctx, pool_body("p", 5))  # 2-core nodes: the quota of 8 cores holds 4
        for _ in range(4):
            m._record_spawns(m._spawn_all(m.reconcile()))
        with any_store.tx() as tx:
            (pool,) = tx.select(schema.pools)
            rows = tx.select(schema.nodes)
        assert len(rows) == 4 and pool["body"]["currentDedicatedNodes"] == 4
        assert [e["code"] for e in pool["body"]["resizeErrors"]] == ["AccountCoreQuotaReached"]
        assert len({r["body"]["ipAddress"] for r in rows}) == 4
        with any_store.tx() as tx:
            assert m._cores_in_use(tx, True) == 8 and m._cores_in_use(tx, False) == 0
        # the agents report figures; the usage pass stores them in one batched statement
        for r in rows:
            usage.note_stats(ctx, r["id"], {"boot": "b", "seconds": 10.0, "cpuSeconds": 1.0})
        usage.tick(ctx)
        with any_store.tx() as tx:
            spans = tx.select(usage.U)
        assert len(spans) == 4 and all(json.loads(s["res"])["last"]["cpuSeconds"] == 1.0 for s in spans)
        # a lapsed lease: read by id, marked unknown
        nid = rows[0]["id"]
        ctx.last_seen[nid] = monotonic() - m.lease - 1
        m.check_leases()
        assert _states(ctx)[nid] == "unknown"
        f = Forwarder("127.0.0.1", "127.0.0.1", max_listeners=0)
        f.reconcile(any_store)
        f.reconcile(any_store)  # nothing new: ids only

    asyncio.run(run())
