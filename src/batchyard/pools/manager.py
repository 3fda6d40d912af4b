"""The pool manager: drives pools toward their target node counts, deletes pools, and watches leases."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil

from batchyard import __version__
from batchyard.models.clock import monotonic
from batchyard.models.ids import node_id as make_node_id
from batchyard.pools.local import LocalProvider
from batchyard.service.agents import flush_node_totals, requeue_node_tasks
from batchyard.service.common import set_state, stamp_body
from batchyard.service.context import Ctx
from batchyard.service.files import node_root
from batchyard.store import schema
from batchyard.store.sql import Row, Tx

log = logging.getLogger("batchyard.pools")


class PoolManager:
    def __init__(self, ctx: Ctx, provider: LocalProvider, lease_seconds: float = 30.0) -> None:
        self.ctx = ctx
        self.provider = provider
        self.lease = lease_seconds

    async def run(self) -> None:
        hub = self.ctx.hub
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hub.pools.wait(), timeout=1.0)
            hub.pools.clear()
            try:
                self.reconcile()
                self.check_leases()
                flush_node_totals(self.ctx)
            except Exception:  # keep managing pools; the next tick retries
                log.exception("pool manager pass failed")

    # --- start-up ----------------------------------------------------------------------------------------

    def adopt(self) -> None:
        """After a restart: keep agents that are still alive, respawn the others (their tasks requeued)."""
        now = monotonic()
        with self.ctx.store.tx() as tx:
            for n in tx.select(schema.nodes):
                self.ctx.last_seen[n["id"]] = now
                if self.provider.alive(n["pid"], n["id"]) and n["server_url"] == self.provider.server_url:
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
        pid = self.provider.spawn(
            n["id"],
            n["token"],
            pool["id"],
            node_root(self.ctx, n["id"]),
            bool(body.get("isDedicated", True)),
            pool["body"].get("userAccounts") or (),
        )
        set_state(body, "starting", now_text)
        self.ctx.last_seen[n["id"]] = monotonic()
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

    def reconcile(self) -> None:
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
                    self._resize(tx, fresh)

    def _delete_pool(self, tx: Tx, pool: Row) -> None:
        for n in tx.select(schema.nodes, schema.nodes.c.pool_key == pool["key"]):
            self._remove_node(tx, n, "requeue")
        tx.delete(schema.pools, key=pool["key"])
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

        def finish() -> None:
            """After the grace period: whatever is left of the node goes, then its directory."""
            self.provider.kill(pid, node_id)
            shutil.rmtree(root, ignore_errors=True)

        asyncio.get_event_loop().call_later(3.0, finish)
        tx.delete(schema.nodes, id=node_id)
        self.ctx.last_seen.pop(node_id, None)
        self.ctx.hub.wake_node(node_id)
        self.ctx.hub.forget_node(node_id)

    def _resize(self, tx: Tx, pool: Row) -> None:
        body = pool["body"]
        nodes = tx.select(
            schema.nodes, schema.nodes.c.pool_key == pool["key"], order_by=[schema.nodes.c.ordinal]
        )
        option = str(body.get("_deallocation", "requeue"))
        done = True
        if body["allocationState"] == "resizing":
            for dedicated, target_key in ((True, "targetDedicatedNodes"), (False, "targetLowPriorityNodes")):
                mine = [n for n in nodes if bool(n["body"].get("isDedicated", True)) == dedicated]
                target = int(body.get(target_key, 0))
                if len(mine) < target:
                    next_ord = max([n["ordinal"] for n in nodes], default=-1) + 1
                    for i in range(target - len(mine)):
                        self._add_node(tx, pool, next_ord + i, dedicated)
                    nodes = tx.select(schema.nodes, schema.nodes.c.pool_key == pool["key"])
                elif len(mine) > target:
                    excess = len(mine) - target
                    busy = {n["id"]: self.ctx.assignments.used_slots(n["id"]) for n in mine}
                    order = sorted(mine, key=lambda n: (busy[n["id"]] > 0, -n["ordinal"]))
                    for n in order[:excess]:
                        if busy[n["id"]] and option in ("taskcompletion", "retaineddata"):
                            done = False
                            continue
                        self._remove_node(tx, n, option)
                    nodes = tx.select(schema.nodes, schema.nodes.c.pool_key == pool["key"])
        _, now_text, etag = self.ctx.stamp()
        body["currentDedicatedNodes"] = sum(1 for n in nodes if n["body"].get("isDedicated", True))
        body["currentLowPriorityNodes"] = sum(1 for n in nodes if not n["body"].get("isDedicated", True))
        if done:
            body["allocationState"] = "steady"
            body["allocationStateTransitionTime"] = now_text
            body.pop("_deallocation", None)
        stamp_body(body, etag, now_text)
        tx.update(
            schema.pools,
            {"body": body, "alloc_state": body["allocationState"], "etag": etag, "last_modified": now_text},
            key=pool["key"],
        )
        self.ctx.hub.wake_scheduler()

    def _add_node(self, tx: Tx, pool: Row, ordinal: int, dedicated: bool) -> None:
        _, now_text, _ = self.ctx.stamp()
        salt = secrets.token_hex(4)
        nid = make_node_id(pool["id"], ordinal, dedicated, salt)
        token = secrets.token_hex(24)
        root = node_root(self.ctx, nid)
        pid = self.provider.spawn(
            nid, token, pool["id"], root, dedicated, pool["body"].get("userAccounts") or ()
        )
        body = {
            "id": nid,
            "state": "starting",
            "schedulingState": "enabled",
            "stateTransitionTime": now_text,
            "allocationTime": now_text,
            "ipAddress": "127.0.0.1",
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
                "state": "starting",
                "ordinal": ordinal,
                "token": token,
                "pid": pid,
                "server_url": self.provider.server_url,
                "state_transition_time": now_text,
                "body": body,
            },
        )

    # --- leases -------------------------------------------------------------------------------------------

    def check_leases(self) -> None:
        now = monotonic()
        with self.ctx.store.tx() as tx:
            for n in tx.select(
                schema.nodes, schema.nodes.c.state.in_(["idle", "running", "starting", "unknown"])
            ):
                seen = self.ctx.last_seen.get(n["id"], now)
                self.ctx.last_seen.setdefault(n["id"], now)
                dead = not self.provider.alive(n["pid"], n["id"])
                if dead:
                    log.warning("agent of node %s is gone; respawning it", n["id"])
                    self._respawn(tx, n)
                elif now - seen > self.lease and n["state"] != "unknown":
                    _, now_text, etag = self.ctx.stamp()
                    requeue_node_tasks(self.ctx, tx, n["id"], now_text, etag)
                    body = n["body"]
                    set_state(body, "unknown", now_text)
                    tx.update(
                        schema.nodes,
                        {"state": "unknown", "body": body, "state_transition_time": now_text},
                        id=n["id"],
                    )
