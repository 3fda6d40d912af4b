"""The NodeProvider contract (decision 0100) and the pool manager's node-operation steps (decision 0101), driven
against a real SQLite store with a provider that records calls instead of starting processes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from batchyard.models import errors
from batchyard.models.clock import utcnow
from batchyard.pools.local import LocalProvider
from batchyard.pools.manager import PoolManager
from batchyard.pools.provider import NodeEvent, NodeEventKind, NodeProvider, NodeSpec
from batchyard.pools.quota import Quotas
from batchyard.service import nodeops, pools
from batchyard.service.context import Ctx
from batchyard.store import schema
from batchyard.store.sql import SqlStore
from tests.support.raw import pool_body


class Recorder:
    """A NodeProvider whose agents are entries in a dict: it records every call, in order."""

    def __init__(self) -> None:
        self.server_url = "http://127.0.0.1:1"
        self.calls: list[tuple[str, str]] = []
        self.running: dict[str, int] = {}
        self.next = 10_000_000
        self.pending: list[NodeEvent] = []

    def create(self, specs: Sequence[NodeSpec]) -> list[int | OSError]:
        return [self.start(sp) for sp in specs]

    def start(self, spec: NodeSpec) -> int:
        self.next += 1
        self.running[spec.node_id] = self.next
        self.calls.append(("start", spec.node_id))
        return self.next

    def alive(self, handle: int | None, node_id: str) -> bool:
        return handle is not None and self.running.get(node_id) == handle

    def stop(self, handle: int | None, node_id: str) -> None:
        self.calls.append(("stop", node_id))
        if handle is not None and self.running.get(node_id) == handle:
            del self.running[node_id]  # the agent exits at once

    def kill(self, handle: int | None, node_id: str) -> None:
        self.running.pop(node_id, None)

    def wipe(self, node_id: str, root: Path) -> None:
        self.calls.append(("wipe", node_id))

    def events(self) -> list[NodeEvent]:
        out, self.pending = self.pending, []
        return out

    def watch(self, handle: int | None, node_id: str) -> bool:
        return False  # the pool manager asks `alive` on each pass

    def exited(self) -> list[tuple[int | None, str]]:
        return []


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def _setup(tmp_path: Path, low: int = 0, dedicated: int = 1) -> tuple[Ctx, PoolManager, Recorder, Clock]:
    clock = Clock()

    async def make() -> Ctx:
        return Ctx(store=store, data_dir=tmp_path, account="acct", clock=clock)

    store = SqlStore.for_data_dir(tmp_path)
    store.migrate()
    ctx = asyncio.run(make())
    prov = Recorder()
    m = PoolManager(ctx, prov, quotas=Quotas(500, 100))
    pools.create_pool(ctx, pool_body("p", dedicated, targetLowPriorityNodes=low))
    for _ in range(5):
        _pass(m)
    _joined(ctx)
    return ctx, m, prov, clock


def _joined(ctx: Ctx) -> None:
    """What the agents' first syncs do: their nodes become idle."""
    with ctx.store.tx() as tx:
        for row in tx.select(schema.nodes):
            row["body"]["state"] = "idle"
            tx.update(schema.nodes, {"state": "idle", "body": row["body"]}, id=row["id"])


def _pass(m: PoolManager) -> None:
    spawns = m.reconcile() + m.ops.step()
    m._record_spawns(m._spawn_all(spawns))


def _node(ctx: Ctx) -> dict[str, object]:
    with ctx.store.tx() as tx:
        (row,) = tx.select(schema.nodes)
    return row


def test_the_local_provider_fulfils_the_contract(tmp_path: Path) -> None:
    assert isinstance(LocalProvider("http://x", "acct"), NodeProvider)
    assert isinstance(Recorder(), NodeProvider)
    root = tmp_path / "node"
    (root / "shared").mkdir(parents=True)
    (root / "shared" / "f").write_text("x")
    (root / "startup").mkdir()
    LocalProvider("http://x", "acct").wipe("n", root)
    assert root.is_dir() and os.listdir(root) == []  # emptied, kept (its node group stays)
    assert LocalProvider("http://x", "acct").events() == []


def test_reboot_stops_then_starts_the_same_node(tmp_path: Path) -> None:
    ctx, m, prov, _ = _setup(tmp_path)
    n = _node(ctx)
    prov.calls.clear()
    nodeops.reboot_node(ctx, "p", str(n["id"]), {"nodeRebootOption": "requeue"})
    assert _node(ctx)["state"] == "rebooting"
    with pytest.raises(errors.BatchError) as e:
        nodeops.reboot_node(ctx, "p", str(n["id"]), {})
    assert (e.value.status, e.value.code) == (409, "NodeBeingRebooted")
    for _ in range(3):
        _pass(m)
    assert prov.calls == [("stop", n["id"]), ("start", n["id"])]  # no wipe: a reboot keeps the disk
    after = _node(ctx)
    assert after["state"] == "starting" and after["pid"] != n["pid"] and "_op" not in after["body"]
    assert not ctx.node_ops


def test_reimage_wipes_between_stop_and_start(tmp_path: Path) -> None:
    ctx, m, prov, _ = _setup(tmp_path)
    nid = str(_node(ctx)["id"])
    prov.calls.clear()
    nodeops.reimage_node(ctx, "p", nid, {"nodeReimageOption": "terminate"})
    for _ in range(3):
        _pass(m)
    assert prov.calls == [("stop", nid), ("wipe", nid), ("start", nid)]


def test_deallocate_and_start(tmp_path: Path) -> None:
    ctx, m, prov, _ = _setup(tmp_path)
    nid = str(_node(ctx)["id"])
    prov.calls.clear()
    nodeops.deallocate_node(ctx, "p", nid, {})
    for _ in range(3):
        _pass(m)
    assert _node(ctx)["state"] == "deallocated" and prov.calls == [("stop", nid)]
    m.adopt()  # a restart must not start a deallocated node's agent
    assert prov.calls == [("stop", nid)]
    nodeops.start_node(ctx, "p", nid)
    _pass(m)
    assert _node(ctx)["state"] == "starting" and prov.calls[-1] == ("start", nid)


def test_a_preempted_node_returns_with_its_id_after_return_after(tmp_path: Path) -> None:
    ctx, m, prov, clock = _setup(tmp_path, low=1, dedicated=0)
    n = _node(ctx)
    nid = str(n["id"])
    assert nid.endswith("_p") and n["body"]["isDedicated"] is False
    prov.calls.clear()
    nodeops.preempt_node(ctx, "p", nid, {"returnAfter": "PT30S"})
    for _ in range(3):
        _pass(m)
    assert _node(ctx)["state"] == "preempted" and prov.calls == [("stop", nid), ("wipe", nid)]
    m.adopt()  # a restart in between resumes the same step
    _pass(m)
    assert _node(ctx)["state"] == "preempted"
    clock.now += timedelta(seconds=31)
    _pass(m)
    back = _node(ctx)
    assert back["id"] == nid and back["state"] == "starting" and prov.calls[-1] == ("start", nid)


def test_removal_waits_for_running_tasks_then_leaves(tmp_path: Path) -> None:
    ctx, m, _, _ = _setup(tmp_path, dedicated=2)
    loop = asyncio.new_event_loop()  # a removed node's directory is wiped later, on the manager's loop
    asyncio.set_event_loop(loop)
    try:
        _removal(ctx, m)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _removal(ctx: Ctx, m: PoolManager) -> None:
    with ctx.store.tx() as tx:
        rows = tx.select(schema.nodes)
    busy, other = str(rows[0]["id"]), str(rows[1]["id"])
    ctx.assignments.add(busy, "job/task", {"ref": "job/task#0", "slots": 1}, 1)
    ctx.assignments.started.add("job/task")
    nodeops.remove_nodes(ctx, "p", {"nodeList": [busy], "nodeDeallocationOption": "taskcompletion"})
    for _ in range(3):
        _pass(m)
    with ctx.store.tx() as tx:
        pool = tx.get(schema.pools, key="p")
        assert pool is not None and pool["body"]["allocationState"] == "resizing"
        assert pool["body"]["targetDedicatedNodes"] == 1
        assert {r["id"] for r in tx.select(schema.nodes)} == {busy, other}  # nothing else removed meanwhile
    ctx.assignments.remove("job/task")
    for _ in range(3):
        _pass(m)
    with ctx.store.tx() as tx:
        assert [r["id"] for r in tx.select(schema.nodes)] == [other]
        pool = tx.get(schema.pools, key="p")
        assert pool is not None and pool["body"]["allocationState"] == "steady"
    with pytest.raises(errors.BatchError) as e:
        nodeops.remove_nodes(ctx, "p", {"nodeList": [busy]})
    assert (e.value.status, e.value.code) == (409, "OperationNotValidOnPool")


def test_a_preemption_reported_by_the_provider(tmp_path: Path) -> None:
    ctx, m, prov, clock = _setup(tmp_path, low=1, dedicated=0)
    nid = str(_node(ctx)["id"])
    prov.calls.clear()
    prov.pending.append(NodeEvent(nid, NodeEventKind.PREEMPTED, "capacity"))
    for _ in range(3):
        _pass(m)
    assert _node(ctx)["state"] == "preempted" and prov.calls == [("stop", nid), ("wipe", nid)]
    clock.now += nodeops.DEFAULT_RETURN_AFTER + timedelta(seconds=1)
    _pass(m)
    assert _node(ctx)["state"] == "starting" and prov.calls[-1] == ("start", nid)
