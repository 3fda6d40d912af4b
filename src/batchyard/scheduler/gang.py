"""Gang placement of multi-instance tasks: all of a task's instances at once, one per idle node, or none.

While a gang waits for nodes its pool can provide, no later task is placed or queued on the pool's nodes (they
drain for it; higher-priority jobs are placed first as usual). The pool must allow it as the service requires
(inter-node communication on, one task slot per node); a pool that does not never schedules the task, which
stays active (as the service documents). A task asking for more instances than such a pool can ever have fails
with a scheduling error. Decision 0160.
"""

from __future__ import annotations

from batchyard.models import multiinstance
from batchyard.models.states import NodeState, node_accepts_tasks
from batchyard.scheduler.placement import NodeSlots
from batchyard.service import completion, subtasks
from batchyard.service.agents import node_info
from batchyard.service.context import Ctx
from batchyard.service.taskstate import move
from batchyard.store import schema
from batchyard.store.sql import Row, Tx


def is_multi(row: Row) -> bool:
    return subtasks.is_multi(row["body"])


def pool_allows(pool: Row) -> bool:
    body = pool["body"]
    return bool(body.get("enableInterNodeCommunication")) and int(body.get("taskSlotsPerNode", 1)) == 1


def hold_gang_nodes(ctx: Ctx, nodes: list[NodeSlots]) -> None:
    """Nothing queues behind an instance: its node stays the gang's until the task ends."""
    if not ctx.assignments.gangs:
        return
    for n in nodes:
        if any(multiinstance.INSTANCE_SEP in ref for ref in ctx.assignments.of_node(n.node_id)):
            n.free = n.reserve = 0


def place_gangs(
    ctx: Ctx, tx: Tx, pool: Row, job: Row, rows: list[Row], nodes: list[NodeSlots], woken: set[str]
) -> bool:
    """Place the multi-instance tasks ``rows`` that fit now; whether any was placed."""
    if not pool_allows(pool):
        return False
    _, now, etag = ctx.stamp()
    node_rows = tx.select(schema.nodes, schema.nodes.c.pool_key == pool["key"])
    addresses = {n["id"]: str(n["body"].get("ipAddress", "127.0.0.1")) for n in node_rows}
    usable = sum(
        1
        for n in node_rows
        if node_accepts_tasks(NodeState(n["state"]))
        and n["body"].get("schedulingState", "enabled") == "enabled"
    )
    placed = False
    for row in rows:
        number = multiinstance.instances(row["body"])
        why = subtasks.check_pool(pool["body"], number)
        if why is not None:
            _unschedulable(ctx, tx, job, row, why, now, etag)
            continue
        idle = sorted((n for n in nodes if n.total >= 1 and n.free >= n.total), key=lambda n: n.node_id)
        if len(idle) < number:
            if number <= usable:
                # the pool can hold it once its nodes drain: later work must not take them meanwhile
                for n in nodes:
                    n.free = n.reserve = 0
                break
            continue  # waits until the pool has enough nodes
        chosen = idle[:number]
        for n in chosen:
            n.free = n.reserve = 0
            woken.add(n.node_id)
        gang = [
            (
                n.node_id,
                addresses.get(n.node_id, "127.0.0.1"),
                node_info(pool["id"], n.node_id, job["id"], row["id"]),
            )
            for n in chosen
        ]
        subtasks.place(ctx, tx, job, row, gang, now, etag)
        placed = True
    return placed


def _unschedulable(ctx: Ctx, tx: Tx, job: Row, row: Row, message: str, now: str, etag: str) -> None:
    ei = row["body"].setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
    ei["endTime"] = now
    ei["result"] = "failure"
    ei["failureInfo"] = {
        "category": "usererror",
        "code": "TaskSchedulingConstraintFailed",
        "message": message,
    }
    move(tx, row, "completed", now, etag, node_id=None)
    completion.finished(ctx, tx, job, row, now)
    completion.check_all_complete(ctx, tx, job)
