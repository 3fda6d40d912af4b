"""The pool manager: drives pools toward their target node counts, deletes pools, and watches leases.

Growth is bounded twice: by the account core quotas (`pools.quota`; a resize stops at the quota and says so
in `resizeErrors`), and in rate: each pass adds at most `spawn_batch` nodes and starts their agents in a worker
thread, so the event loop keeps serving while a large pool grows. A node row is written (`creating`, no pid)
before its agent is spawned, so a restart in between finds it and starts its agent then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import and_, select

from batchyard import __version__
from batchyard.models import multiinstance
from batchyard.models.clock import monotonic
from batchyard.models.ids import node_id as make_node_id
from batchyard.models.ids import node_is_dedicated
from batchyard.models.resources import stopped_resize_errors
from batchyard.pools.hostusers import HostAccounts, remove_node_users
from batchyard.pools.nodeops import NodeOps
from batchyard.pools.provider import Handle, NodeProvider, NodeSpec
from batchyard.pools.quota import Quotas, nodes_allowed, quota_error, vm_cores
from batchyard.service.agents import flush_node_totals, requeue_node_tasks
from batchyard.service.common import set_state
from batchyard.service.context import Ctx
from batchyard.service.files import node_root
from batchyard.store import schema
from batchyard.store.sql import Row, Tx

log = logging.getLogger("batchyard.pools")

#: Nodes added (agents spawned) per pass of the manager; the next pass follows at once while a pool grows.
SPAWN_BATCH = 8
#: Seconds between two passes that add nodes: at most SPAWN_BATCH / SPAWN_PAUSE agents started per second.
SPAWN_PAUSE = 0.1
#: Node states whose agent must be alive and syncing (a dead one is started again: a node failure).
_LEASED = ["idle", "running", "starting", "unknown", "offline", "waitingforstarttask", "starttaskfailed"]


@dataclass(frozen=True)
class Spawn:
    """A node row written in `creating` whose agent is still to be started."""

    node_id: str
    token: str
    pool_id: str
    pool_key: str
    root: Path
    dedicated: bool
    user_accounts: tuple[dict[str, Any], ...] = ()
    container: dict[str, Any] | None = None  # the pool's containerConfiguration (decision 0170)

    @property
    def spec(self) -> NodeSpec:
        return NodeSpec(
            self.node_id,
            self.token,
            self.pool_id,
            self.root,
            self.dedicated,
            self.user_accounts,
            self.container,
        )


def _container_of(pool_body: dict[str, Any]) -> dict[str, Any] | None:
    """The pool's containerConfiguration, for its nodes' agents (decision 0170)."""
    cc = (pool_body.get("virtualMachineConfiguration") or {}).get("containerConfiguration")
    return dict(cc) if cc else None


def node_spec(ctx: Ctx, n: Row, pool: Row) -> NodeSpec:
    """How to start an existing node's agent again."""
    return NodeSpec(
        n["id"],
        n["token"],
        pool["id"],
        node_root(ctx, n["id"]),
        bool(n["body"].get("isDedicated", True)),
        tuple(pool["body"].get("userAccounts") or ()),
        _container_of(pool["body"]),
    )


def _light_nodes(tx: Tx, pool_key: str) -> list[Row]:
    """A pool's nodes as a resize pass needs them, in ordinal order: id, ordinal and kind, never the body
    (a large pool grows by many passes; decoding every node body on each was most of a pass)."""
    n = schema.nodes
    stmt = select(n.c.id, n.c.ordinal).where(n.c.pool_key == pool_key).order_by(n.c.ordinal)
    return [
        {"id": i, "ordinal": o, "body": {"isDedicated": node_is_dedicated(i)}}
        for i, o in tx.conn.execute(stmt).all()
    ]


def _leaving(tx: Tx, pool_key: str) -> set[str]:
    """The pool's nodes being removed (`removenodes`): only bodies that hold an operation are read."""
    n = schema.nodes
    rows = tx.select(
        schema.nodes,
        and_(n.c.pool_key == pool_key, n.c.body.contains('"_op"', autoescape=True)),
        columns=["id", "body"],
    )
    return {r["id"] for r in rows if (r["body"].get("_op") or {}).get("kind") == "remove"}


class PoolManager:
    def __init__(
        self,
        ctx: Ctx,
        provider: NodeProvider,
        lease_seconds: float = 30.0,
        quotas: Quotas | None = None,
        spawn_batch: int = SPAWN_BATCH,
    ) -> None:
        self.ctx = ctx
        self.provider = provider
        self.lease = lease_seconds
        self.quotas = quotas or Quotas()
        self.spawn_batch = spawn_batch
        self.ops = NodeOps(ctx, provider, lambda tx, n: self._remove_node(tx, n, "requeue"), self._spawn_of)
        # leases (decision 0185): node id -> handle of an agent the provider cannot watch (asked `alive` on
        # each pass); of an agent found gone, until acted on; and when a node was last looked at for nothing
        # to do (its last_seen then, the time), so that a silent node is read once per lease, not every pass
        self.polled: dict[str, Handle] = {}
        self.dead: dict[str, Handle] = {}
        self._looked: dict[str, tuple[float | None, float]] = {}
        self._address_next = 0  # the next candidate node address (see _pick_address)

    async def run(self) -> None:
        hub = self.ctx.hub
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hub.pools.wait(), timeout=1.0)
            hub.pools.clear()
            try:
                spawns = self.reconcile()
                spawns += self.ops.step()
                if self.ctx.node_ops:  # operations in progress are followed closely
                    asyncio.get_running_loop().call_later(SPAWN_PAUSE, hub.wake_pools)
                if spawns:
                    await self._spawn(spawns)
                    # a pool whose every node is now added and started is steady at once: an agent that joins
                    # within milliseconds (forked, decision 0200) must not be idle in a pool still resizing
                    self._settle({sp.pool_key for sp in spawns})
                    # the pool may want more nodes: the next pass follows shortly (a bounded rate)
                    asyncio.get_running_loop().call_later(SPAWN_PAUSE, hub.wake_pools)
                self.check_leases()
                flush_node_totals(self.ctx)
            except Exception:  # keep managing pools; the next tick retries
                log.exception("pool manager pass failed")

    # --- start-up ----------------------------------------------------------------------------------------

    def adopt(self) -> None:
        """After a restart: keep agents that are still alive, respawn the others (their tasks requeued)."""
        now = monotonic()
        with self.ctx.store.tx() as tx:
            rows = tx.select(schema.nodes)
            self.ops.adopt(rows)
            for n in rows:
                self.ctx.last_seen[n["id"]] = now
                if n["id"] in self.ctx.node_ops or n["state"] == "deallocated":
                    continue  # an operation in progress resumes at its stored step; a deallocated node has no agent
                if self.provider.alive(n["pid"], n["id"]) and n["server_url"] == self.provider.server_url:
                    self._watch(n["pid"], n["id"])
                    continue
                self.provider.kill(n["pid"], n["id"])
                self._respawn(tx, n)

    def _respawn(self, tx: Tx, n: Row) -> None:
        _, now_text, etag = self.ctx.stamp()
        requeue_node_tasks(self.ctx, tx, n["id"], now_text, etag)
        pool = tx.get(schema.pools, key=n["pool_key"])
        if pool is None:
            tx.delete(schema.nodes, id=n["id"])
            return
        body = n["body"]
        try:
            pid = self.provider.start(node_spec(self.ctx, n, pool))
        except OSError as e:
            log.error("cannot start the agent of node %s: %s", n["id"], e)
            self._unusable(tx, n, e, now_text)
            return
        set_state(body, "starting", now_text)
        self.ctx.last_seen[n["id"]] = monotonic()
        self._watch(pid, n["id"])
        tx.update(
            schema.nodes,
            {
                "pid": pid,
                "server_url": self.provider.server_url,
                "state": "starting",
                "body": body,
                "state_transition_time": now_text,
            },
            id=n["id"],
        )

    # --- pools --------------------------------------------------------------------------------------------

    def reconcile(self) -> list[Spawn]:
        """One pass over the pools that change; returns the nodes whose agents are to be started."""
        spawns: list[Spawn] = []
        with self.ctx.store.tx() as tx:
            pools = tx.select(schema.pools, schema.pools.c.alloc_state != "steady")
            pools += tx.select(schema.pools, schema.pools.c.state == "deleting")
        seen: set[str] = set()
        for pool in pools:
            if pool["key"] in seen:
                continue
            seen.add(pool["key"])
            with self.ctx.store.tx() as tx:
                fresh = tx.get(schema.pools, key=pool["key"])
                if fresh is None:
                    continue
                if fresh["state"] == "deleting":
                    self._delete_pool(tx, fresh)
                else:
                    spawns += self._resize(tx, fresh, self.spawn_batch - len(spawns))
        return spawns

    def _settle(self, pool_keys: set[str]) -> None:
        """The pools that just started agents, passed over without adding nodes: steady if none is missing."""
        for key in pool_keys:
            with self.ctx.store.tx() as tx:
                fresh = tx.get(schema.pools, key=key)
                if fresh is not None and fresh["state"] != "deleting" and fresh["alloc_state"] == "resizing":
                    self._resize(tx, fresh, 0)

    def _delete_pool(self, tx: Tx, pool: Row) -> None:
        for n in tx.select(schema.nodes, schema.nodes.c.pool_key == pool["key"]):
            self._remove_node(tx, n, "requeue")
        tx.delete(schema.pools, key=pool["key"])
        self.ctx.autoscale.forget(pool["key"])
        self.ctx.hub.wake_scheduler()

    def _remove_node(self, tx: Tx, n: Row, option: str) -> None:
        _, now_text, etag = self.ctx.stamp()
        if option == "terminate":
            from batchyard.service import tasks as task_ops

            rows = tx.select(schema.tasks, schema.tasks.c.node_id == n["id"])
            for r in rows:
                if r["state"] in ("preparing", "running"):
                    task_ops.end_task(
                        self.ctx,
                        tx,
                        r,
                        now_text,
                        etag,
                        "TaskEnded",
                        "Task was ended because its node was removed from the pool",
                    )
        requeue_node_tasks(self.ctx, tx, n["id"], now_text, etag)
        self.provider.stop(n["pid"], n["id"])
        pid, node_id = n["pid"], n["id"]
        root = node_root(self.ctx, node_id)

        has_users = bool(n["body"].get("_users"))

        def finish() -> None:
            """After the grace period: whatever is left of the node goes, then its directory and its users."""
            self.provider.kill(pid, node_id)
            self.provider.wipe(node_id, root)
            with contextlib.suppress(OSError):
                root.rmdir()
            if has_users:  # node user accounts on this host (decision 0131)
                remove_node_users(HostAccounts(self.ctx.data_dir), node_id)

        asyncio.get_event_loop().call_later(3.0, finish)
        tx.delete(schema.nodes, id=node_id)
        self._forget(node_id)
        self.ctx.hub.wake_node(node_id)
        self.ctx.hub.forget_node(node_id)

    def _resize(self, tx: Tx, pool: Row, budget: int) -> list[Spawn]:
        """Add or remove nodes toward the targets; adds at most `budget` nodes and stops at the quotas."""
        body = pool["body"]
        nodes = _light_nodes(tx, pool["key"])
        # nodes being removed (removenodes) no longer count toward the target; the pool stays resizing until
        # they are gone
        leaving = _leaving(tx, pool["key"])
        nodes = [n for n in nodes if n["id"] not in leaving]
        option = str(body.get("_deallocation", "requeue"))
        stopped = body["allocationState"] == "stopping"
        done = not leaving
        spawns: list[Spawn] = []
        resize_errors: list[dict[str, object]] = []
        if body["allocationState"] == "resizing":
            for dedicated, target_key in ((True, "targetDedicatedNodes"), (False, "targetLowPriorityNodes")):
                mine = [n for n in nodes if bool(n["body"].get("isDedicated", True)) == dedicated]
                target = int(body.get(target_key, 0))
                if len(mine) < target:
                    want = target - len(mine)
                    cores = vm_cores(str(body.get("vmSize", "")))
                    quota = self.quotas.limit(dedicated)
                    in_use = self._cores_in_use(tx, dedicated)
                    allowed = nodes_allowed(want, cores, in_use, quota)
                    now_adding = min(allowed, max(0, budget - len(spawns)))
                    next_ord = max([n["ordinal"] for n in nodes], default=-1) + 1
                    for i in range(now_adding):
                        sp = self._add_node(tx, pool, next_ord + i, dedicated)
                        spawns.append(sp)
                        # what the rest of the pass reads of a node (not read back: a large pool grows by
                        # many passes, and each would read every node again)
                        nodes.append(
                            {"id": sp.node_id, "ordinal": next_ord + i, "body": {"isDedicated": dedicated}}
                        )
                    if allowed:
                        # steady on a later pass: once every node that fits is added and its agent started
                        done = False
                    else:
                        resize_errors.append(quota_error(dedicated, quota, in_use, cores))
                elif len(mine) > target:
                    excess = len(mine) - target
                    busy = {n["id"]: self.ctx.assignments.used_slots(n["id"]) for n in mine}
                    order = sorted(mine, key=lambda n: (busy[n["id"]] > 0, -n["ordinal"]))
                    for n in order[:excess]:
                        if busy[n["id"]] and option in ("taskcompletion", "retaineddata"):
                            done = False
                            continue
                        row = tx.get(schema.nodes, id=n["id"])
                        if row is not None:
                            self._remove_node(tx, row, option)
                    nodes = [n for n in _light_nodes(tx, pool["key"]) if n["id"] not in leaving]
        _, now_text, _ = self.ctx.stamp()
        body["currentDedicatedNodes"] = sum(1 for n in nodes if n["body"].get("isDedicated", True))
        body["currentLowPriorityNodes"] = sum(1 for n in nodes if not n["body"].get("isDedicated", True))
        if resize_errors:
            body["resizeErrors"] = resize_errors
        if done:
            if stopped and stopped_resize_errors(body):
                body["resizeErrors"] = stopped_resize_errors(body)
            body["allocationState"] = "steady"
            body["allocationStateTransitionTime"] = now_text
            body.pop("_deallocation", None)
        # the service's own allocation progress keeps the pool's ETag and lastModified (recorded): only
        # client writes change them, so a client's If-Match stays valid while its pool grows
        tx.update(schema.pools, {"body": body, "alloc_state": body["allocationState"]}, key=pool["key"])
        self.ctx.hub.wake_scheduler()
        return spawns

    @staticmethod
    def _cores_in_use(tx: Tx, dedicated: bool) -> int:
        """Cores of the account's nodes of one kind (every pool counts, as for Azure's account quota).

        A node's size is its pool's (set at creation; a pool's vmSize never changes) and its kind is in its id,
        so no node body is read: a pool of 10,000 nodes grows by many passes, each of which asks this.
        """
        n = schema.nodes
        rows = tx.conn.execute(select(n.c.pool_key, n.c.id)).all()
        per_pool: dict[str, int] = {}
        for key, node_id in rows:
            if node_is_dedicated(node_id) == dedicated:
                per_pool[key] = per_pool.get(key, 0) + 1
        if not per_pool:
            return 0
        pools = tx.select(schema.pools, schema.pools.c.key.in_(list(per_pool)), columns=["key", "body"])
        return sum(vm_cores(str(p["body"].get("vmSize", ""))) * per_pool[p["key"]] for p in pools)

    def _spawn_of(self, n: Row, pool: Row) -> Spawn:
        """Start an existing node's agent again (the end of a reboot, reimage, deallocation or preemption)."""
        sp = node_spec(self.ctx, n, pool)
        return Spawn(sp.node_id, sp.token, sp.pool_id, pool["key"], sp.root, sp.dedicated, sp.user_accounts)

    def _add_node(self, tx: Tx, pool: Row, ordinal: int, dedicated: bool) -> Spawn:
        """Write the node row (`creating`, no agent yet); `run` starts its agent off the event loop."""
        _, now_text, _ = self.ctx.stamp()
        salt = secrets.token_hex(4)
        nid = make_node_id(pool["id"], ordinal, dedicated, salt)
        token = secrets.token_hex(24)
        # each local node has its own loopback address, on which the others reach it (decision 0161)
        used: set[str] | None = getattr(self, "_addresses", None)
        if used is None:  # read once; later picks are remembered (freed addresses are not reused)
            used = {str(n["body"].get("ipAddress", "")) for n in tx.select(schema.nodes)}
            self._addresses = used
        address = self._pick_address(used)
        used.add(address)
        body = {
            "id": nid,
            "state": "creating",
            "schedulingState": "enabled",
            "stateTransitionTime": now_text,
            "allocationTime": now_text,
            "ipAddress": address,
            "affinityId": f"TVM:{nid}",
            "vmSize": pool["body"].get("vmSize", ""),
            "totalTasksRun": 0,
            "totalTasksSucceeded": 0,
            "isDedicated": dedicated,
            "nodeAgentInfo": {"version": f"batchyard-{__version__}", "lastUpdateTime": now_text},
            "virtualMachineInfo": {
                "imageReference": pool["body"]["virtualMachineConfiguration"]["imageReference"]
            },
        }
        self.ctx.last_seen[nid] = monotonic()
        tx.insert(
            schema.nodes,
            {
                "id": nid,
                "pool_key": pool["key"],
                "state": "creating",
                "ordinal": ordinal,
                "token": token,
                "pid": None,
                "server_url": self.provider.server_url,
                "state_transition_time": now_text,
                "body": body,
            },
        )
        accounts = tuple(pool["body"].get("userAccounts") or ())
        return Spawn(
            nid,
            token,
            pool["id"],
            pool["key"],
            node_root(self.ctx, nid),
            dedicated,
            accounts,
            _container_of(pool["body"]),
        )

    def _pick_address(self, used: set[str]) -> str:
        """`multiinstance.pick_address`, resumed after the previous pick: freed addresses are not reused, so
        every candidate before it is taken (from the start each time, a 10,000-node pool scans 50M)."""
        start = zlib.crc32(str(self.ctx.data_dir).encode())
        first = i = self._address_next
        while i - first <= len(used):
            a = multiinstance.address(start + i)
            i += 1
            if a not in used:
                self._address_next = i
                return a
        raise RuntimeError("no free node address")

    async def _spawn(self, spawns: list[Spawn]) -> None:
        """Start agents in a worker thread; even when the server stops meanwhile, their pids are recorded."""
        work = asyncio.ensure_future(asyncio.to_thread(self._spawn_all, spawns))
        try:
            started = await asyncio.shield(work)
        except asyncio.CancelledError:
            self._record_spawns(await work)
            raise
        self._record_spawns(started)

    def _spawn_all(self, spawns: list[Spawn]) -> list[tuple[Spawn, int | OSError]]:
        """Start the agents (in a worker thread: no store access here)."""
        return list(zip(spawns, self.provider.create([sp.spec for sp in spawns]), strict=True))

    def _record_spawns(self, started: list[tuple[Spawn, int | OSError]]) -> None:
        """Record the agents' pids; a node whose agent could not start leaves, and its pool says why."""
        failed: dict[str, OSError] = {}
        with self.ctx.store.tx() as tx:
            for sp, result in started:
                row = tx.get(schema.nodes, id=sp.node_id)
                if (
                    isinstance(result, OSError)
                    and row is not None
                    and isinstance(row["body"].get("_op"), dict)
                ):
                    row["body"].pop("_op", None)
                    self.ctx.node_ops.discard(sp.node_id)
                    self._unusable(tx, row, result, self.ctx.stamp()[1])
                    continue
                if isinstance(result, OSError):
                    failed.setdefault(sp.pool_key, result)
                    if row is not None:
                        tx.delete(schema.nodes, id=sp.node_id)
                    self.ctx.last_seen.pop(sp.node_id, None)
                    continue
                if row is None:  # removed (pool deleted, resized down) while its agent started
                    self.provider.stop(result, sp.node_id)
                    continue
                values: dict[str, object] = {"pid": result}
                op = row["body"].get("_op")
                if isinstance(op, dict):
                    if op.get("phase") != "spawn":  # taken over by another operation meanwhile
                        self.provider.stop(result, sp.node_id)
                        continue
                    # back from reboot, reimage, deallocation or preemption: the agent's first sync makes it idle
                    _, now_text, _ = self.ctx.stamp()
                    body = row["body"]
                    body.pop("_op", None)
                    set_state(body, "starting", now_text)
                    values.update(state="starting", body=body, state_transition_time=now_text)
                    self.ctx.node_ops.discard(sp.node_id)
                    self.ctx.hub.wake_node(sp.node_id)
                elif row["state"] == "creating":  # its first sync may already have made it idle
                    _, now_text, _ = self.ctx.stamp()
                    body = row["body"]
                    set_state(body, "starting", now_text)
                    values.update(state="starting", body=body, state_transition_time=now_text)
                self.ctx.last_seen[sp.node_id] = monotonic()
                self._watch(result, sp.node_id)
                tx.update(schema.nodes, values, id=sp.node_id)
            for pool_key, err in failed.items():
                self._allocation_failed(tx, pool_key, err)

    def _allocation_failed(self, tx: Tx, pool_key: str, err: OSError) -> None:
        pool = tx.get(schema.pools, key=pool_key)
        if pool is None or pool["state"] == "deleting":
            return
        log.error("pool %s: cannot start node agents: %s", pool["id"], err)
        body = pool["body"]
        nodes = tx.select(schema.nodes, schema.nodes.c.pool_key == pool_key)
        _, now_text, _ = self.ctx.stamp()
        body["currentDedicatedNodes"] = sum(1 for n in nodes if n["body"].get("isDedicated", True))
        body["currentLowPriorityNodes"] = sum(1 for n in nodes if not n["body"].get("isDedicated", True))
        body["resizeErrors"] = [
            {
                "code": "AllocationFailed",
                "message": "Desired number of nodes could not be allocated as their agents could not be started",
                "values": [{"name": "Reason", "value": str(err)}],
            }
        ]
        body["allocationState"] = "steady"
        body["allocationStateTransitionTime"] = now_text
        body.pop("_deallocation", None)
        # a service-side allocation change keeps the pool's ETag (see _grow)
        tx.update(schema.pools, {"body": body, "alloc_state": "steady"}, key=pool_key)

    def _unusable(self, tx: Tx, n: Row, err: OSError, now_text: str) -> None:
        """A node whose agent cannot be started again: `unusable` with the reason, never retried in a loop."""
        body = n["body"]
        set_state(body, "unusable", now_text)
        body["errors"] = [
            {
                "code": "NodeAgentStartFailed",
                "message": "The node agent could not be started",
                "errorDetails": [{"name": "Reason", "value": str(err)}],
            }
        ]
        tx.update(
            schema.nodes,
            {"pid": None, "state": "unusable", "body": body, "state_transition_time": now_text},
            id=n["id"],
        )

    # --- stopping -----------------------------------------------------------------------------------------

    def live_agents(self) -> int:
        with self.ctx.store.tx() as tx:
            return sum(1 for n in tx.select(schema.nodes) if self.provider.alive(n["pid"], n["id"]))

    def stop_all_agents(self, grace: float = 10.0) -> int:
        """Stop every local agent and its tasks (a full stop); running tasks are requeued, the nodes stay
        in their pools and the next server starts their agents again."""
        with self.ctx.store.tx() as tx:
            nodes = [n for n in tx.select(schema.nodes) if self.provider.alive(n["pid"], n["id"])]
        for n in nodes:
            self.provider.stop(n["pid"], n["id"])  # the agent kills its tasks, then exits
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(self.provider.alive(n["pid"], n["id"]) for n in nodes):
            time.sleep(0.05)
        with self.ctx.store.tx() as tx:
            for n in nodes:
                self.provider.kill(n["pid"], n["id"])
                _, now_text, etag = self.ctx.stamp()
                requeue_node_tasks(self.ctx, tx, n["id"], now_text, etag)
        return len(nodes)

    # --- leases -------------------------------------------------------------------------------------------

    def _watch(self, handle: Handle, node_id: str) -> None:
        """Follow the agent just recorded for a node: the provider reports its exit, or it is polled."""
        self.polled.pop(node_id, None)
        self.dead.pop(node_id, None)  # an earlier agent's exit no longer matters
        self._looked.pop(node_id, None)
        if handle is not None and not self.provider.watch(handle, node_id):
            self.polled[node_id] = handle

    def _forget(self, node_id: str) -> None:
        """A node that left: nothing about its lease is kept."""
        self.ctx.last_seen.pop(node_id, None)
        self.polled.pop(node_id, None)
        self.dead.pop(node_id, None)
        self._looked.pop(node_id, None)

    def _due(self, node_id: str, now: float) -> bool:
        """Whether to read the node now: never looked at, or it synced since, or a lease has passed."""
        looked = self._looked.get(node_id)
        return looked is None or looked[0] != self.ctx.last_seen.get(node_id) or now - looked[1] >= self.lease

    def check_leases(self) -> None:
        """Respawn nodes whose agent is gone; nodes silent for a lease become `unknown`, their tasks requeued.

        Its cost follows events, not nodes (decision 0185): exits come from the provider's watch, leases from
        the in-memory `last_seen`, and only the nodes concerned are read from the store.
        """
        now = monotonic()
        for handle, node_id in self.provider.exited():
            self.dead[node_id] = handle
            self._looked.pop(node_id, None)
        for node_id, handle in list(self.polled.items()):
            if not self.provider.alive(handle, node_id):
                del self.polled[node_id]
                self.dead[node_id] = handle
                self._looked.pop(node_id, None)
        due = {nid for nid in self.dead if self._due(nid, now)}
        due.update(
            nid for nid, seen in self.ctx.last_seen.items() if now - seen > self.lease and self._due(nid, now)
        )
        if not due:
            return
        ids = sorted(due)
        with self.ctx.store.tx() as tx:
            rows: list[Row] = []
            for i in range(0, len(ids), 500):
                rows += tx.select(schema.nodes, schema.nodes.c.id.in_(ids[i : i + 500]))
            for nid in due - {n["id"] for n in rows}:
                self._forget(nid)  # left the pool
            for n in rows:
                self._check_lease(tx, n, now)

    def _check_lease(self, tx: Tx, n: Row, now: float) -> None:
        node_id = n["id"]
        if node_id in self.ctx.node_ops:
            return  # an operation in progress stops and starts this agent itself: looked at again next pass
        handle = self.dead.get(node_id, n["pid"])
        if handle != n["pid"]:
            self.dead.pop(node_id)  # another agent serves the node now (or none, e.g. deallocated)
        seen = self.ctx.last_seen.setdefault(node_id, now)
        if n["state"] in _LEASED and (node_id in self.dead or n["pid"] is None):
            self.dead.pop(node_id, None)
            log.warning("agent of node %s is gone; respawning it", node_id)
            self._respawn(tx, n)
            return
        self._looked[node_id] = (seen, now)
        if n["state"] in _LEASED and now - seen > self.lease and n["state"] != "unknown":
            _, now_text, etag = self.ctx.stamp()
            requeue_node_tasks(self.ctx, tx, node_id, now_text, etag)
            body = n["body"]
            set_state(body, "unknown", now_text)
            tx.update(
                schema.nodes,
                {"state": "unknown", "body": body, "state_transition_time": now_text},
                id=node_id,
            )
