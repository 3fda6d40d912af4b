"""The pool manager's side of node operations: each node's `_op` step carried out through the provider.

Steps (decision 0101), each written to the node row before the provider is called, so that a server killed
between two steps resumes at the stored one:

    drain  -> the option waits for running tasks (taskcompletion): no new ones are placed meanwhile
    stop   -> the agent is asked to stop (it kills its task trees; its disk stays)
    stopping (in memory) -> the agent has exited, or is killed after a grace period; then by kind:
              reboot: spawn; reimage: wipe, spawn; deallocate: `deallocated`; remove: the node leaves;
              preempt: wipe, `down` until `returnAt`, then `creating` and spawn (the same node id)
    spawn  -> the agent is started again (pool manager `_record_spawns` makes the node `starting`)
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from batchyard.models.clock import monotonic, parse_time
from batchyard.pools.hostusers import HostAccounts, remove_node_users
from batchyard.pools.provider import NodeEventKind, NodeProvider
from batchyard.service import nodeops
from batchyard.service.agents import requeue_node_tasks
from batchyard.service.common import set_state
from batchyard.service.context import Ctx
from batchyard.service.files import node_root
from batchyard.service.jobprep import node_reimaged
from batchyard.store import schema
from batchyard.store.sql import Row, Tx

if TYPE_CHECKING:
    from batchyard.pools.manager import Spawn

log = logging.getLogger("batchyard.pools")

#: Seconds an agent asked to stop gets to kill its tasks and exit before it is killed.
STOP_GRACE = 10.0
#: Seconds between two looks at the pools' random preemption rates.
CHAOS_PERIOD = 1.0


class NodeOps:
    def __init__(
        self,
        ctx: Ctx,
        provider: NodeProvider,
        remove: Callable[[Tx, Row], None],
        spawn_of: Callable[[Row, Row], Spawn],
    ) -> None:
        self.ctx = ctx
        self.provider = provider
        self.remove = remove  # the manager's node removal (requeue, stop, delete the row, wipe later)
        self.spawn_of = spawn_of
        self.stopping: dict[str, float] = {}  # node id -> when its agent was asked to stop
        self.rng = random.Random()
        self._chaos_at: float | None = None

    def adopt(self, rows: list[Row]) -> None:
        """After a restart: every node with a stored step is picked up again (in-memory waits are lost)."""
        for n in rows:
            if isinstance(n["body"].get("_op"), dict):
                self.ctx.node_ops.add(n["id"])

    def step(self) -> list[Spawn]:
        """One pass over the nodes with an operation in progress; returns the agents to start again."""
        spawns: list[Spawn] = []
        for node_id in sorted(self.ctx.node_ops):
            with self.ctx.store.tx() as tx:
                row = tx.get(schema.nodes, id=node_id)
                op = row["body"].get("_op") if row is not None else None
                if row is None or not isinstance(op, dict):
                    self.ctx.node_ops.discard(node_id)
                    self.stopping.pop(node_id, None)
                    continue
                pool = tx.get(schema.pools, key=row["pool_key"])
                if pool is None:
                    continue
                try:
                    sp = self._advance(tx, row, pool, op)
                except OSError as e:  # the provider could not act: say so on the node, never loop
                    log.error("node %s: %s failed: %s", node_id, op.get("kind"), e)
                    sp = None
                if sp is not None:
                    spawns.append(sp)
        self._engine_events()
        self._chaos()
        return spawns

    def _engine_events(self) -> None:
        """What the provider's engine did on its own: a preempted node is preempted as if injected; a lost
        node's tasks go back to the queue now (its agent is started again by the lease check)."""
        events = self.provider.events()
        if not events:
            return
        with self.ctx.store.tx() as tx:
            for ev in events:
                row = tx.get(schema.nodes, id=ev.node_id)
                if row is None:
                    continue
                if ev.kind == NodeEventKind.PREEMPTED:
                    if nodeops.preemptible(row):
                        nodeops.preempt(self.ctx, tx, row, nodeops.DEFAULT_RETURN_AFTER)
                    continue
                log.warning("node %s lost: %s", ev.node_id, ev.reason or "reported by its provider")
                _, now_text, etag = self.ctx.stamp()
                requeue_node_tasks(self.ctx, tx, ev.node_id, now_text, etag)

    def _advance(self, tx: Tx, row: Row, pool: Row, op: dict[str, object]) -> Spawn | None:
        node_id = row["id"]
        body = row["body"]
        kind = str(op.get("kind"))
        phase = op.get("phase")
        _, now_text, etag = self.ctx.stamp()
        if phase == "drain":
            if self.ctx.assignments.of_node(node_id):
                return None  # running tasks finish first (taskcompletion / retaineddata)
            op["phase"] = "stop"
            set_state(body, nodeops.OP_STATE[kind], now_text)
            self._save(tx, row)
            phase = "stop"
        if phase == "stop":
            if kind == "remove":
                self.remove(tx, row)
                self.ctx.node_ops.discard(node_id)
                return None
            # even an eviction goes through the agent: it kills its task trees (they run in their own sessions)
            self.provider.stop(row["pid"], node_id)
            self.stopping[node_id] = monotonic()
            op["phase"] = "stopping"
            self._save(tx, row)
            return None
        if phase == "stopping":
            since = self.stopping.get(node_id)
            alive = self.provider.alive(row["pid"], node_id)
            if alive and since is not None and monotonic() - since < STOP_GRACE:
                return None
            self.provider.kill(row["pid"], node_id)
            self.stopping.pop(node_id, None)
            # anything still placed there goes back (a task the agent started meanwhile counts a requeue)
            requeue_node_tasks(self.ctx, tx, node_id, now_text, etag)
            if kind in ("reimage", "preempt"):
                self.provider.wipe(node_id, node_root(self.ctx, node_id))
                node_reimaged(tx, row)  # a fresh disk: jobs whose preparation failed here may run again
                if body.pop("_users", None):  # a fresh OS disk has no node users (decision 0131)
                    remove_node_users(HostAccounts(self.ctx.data_dir), node_id)
            if kind == "deallocate":
                body.pop("_op", None)
                set_state(body, "deallocated", now_text)
                self.ctx.node_ops.discard(node_id)
                self._save(tx, row, pid=None)
                return None
            op["phase"] = "down" if kind == "preempt" else "spawn"
            self._save(tx, row, pid=None)
            phase = op["phase"]
        if phase == "down":
            back = op.get("returnAt")
            if isinstance(back, str) and self.ctx.clock() < parse_time(back):
                return None
            # capacity is back: the pool brings the node back with the same id, through creating
            op["phase"] = "spawn"
            set_state(body, "creating", now_text)
            body.pop("lastBootTime", None)
            self._save(tx, row, pid=None)
            phase = "spawn"
        if phase == "spawn":
            return self.spawn_of(row, pool)
        return None

    @staticmethod
    def _save(tx: Tx, row: Row, **extra: object) -> None:
        body = row["body"]
        values: dict[str, object] = {
            "state": body["state"],
            "body": body,
            "state_transition_time": body["stateTransitionTime"],
            **extra,
        }
        tx.update(schema.nodes, values, id=row["id"])
        row["state"] = body["state"]

    # --- chaos: random preemption of low-priority nodes --------------------------------------------------

    def _chaos(self) -> None:
        """At most once a second: a pool manager pass may run far more often while pools change."""
        now = monotonic()
        last = self._chaos_at
        if last is not None and now - last < CHAOS_PERIOD:
            return
        self._chaos_at = now
        if last is None:
            return
        dt = now - last
        with self.ctx.store.tx() as tx:
            pools = [
                p
                for p in tx.select(schema.pools, schema.pools.c.state == "active")
                if p["body"].get("_chaos")
            ]
            for pool in pools:
                chaos = pool["body"]["_chaos"]
                rate = float(chaos.get("preemptionsPerNodeHour", 0))
                p = 1.0 - math.exp(-rate * dt / 3600.0)
                after = timedelta(seconds=float(chaos.get("returnAfter", 10)))
                for row in tx.select(schema.nodes, schema.nodes.c.pool_key == pool["key"]):
                    if nodeops.preemptible(row) and self.rng.random() < p:
                        log.info("chaos: preempting node %s of pool %s", row["id"], pool["id"])
                        nodeops.preempt(self.ctx, tx, row, after)
