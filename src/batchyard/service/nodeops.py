"""Node operations: reboot, reimage, deallocate/start, scheduling, remove nodes and preemption (decision 0101).

A request does in one transaction what the service does at once (its tasks requeued or ended, the node's new
state, the pool's new target) and writes what is left as the node's `_op` step; the pool manager carries the
steps out through the node provider (`pools.nodeops`). A server killed in between finds the step at restart.
"""

from __future__ import annotations

import math
import random
from datetime import timedelta

from batchyard.models import errors
from batchyard.models.clock import format_time
from batchyard.models.decode import parse_duration
from batchyard.models.ids import key_of
from batchyard.models.resources import check_resize_timeout
from batchyard.service.agents import requeue_node_tasks
from batchyard.service.common import Body, set_state
from batchyard.service.context import NO_CONDITIONS, Conditions, Ctx, Written
from batchyard.store import schema
from batchyard.store.sql import Row, Tx

#: The deallocation option of every "take the node away" operation (node-lifecycle.md §3).
TAKE_AWAY = ("requeue", "terminate", "taskcompletion", "retaineddata")
#: Disable scheduling has no retaineddata.
DISABLE = ("requeue", "terminate", "taskcompletion")
#: The state a node shows while an operation of each kind runs on it.
OP_STATE = {
    "reboot": "rebooting",
    "reimage": "reimaging",
    "deallocate": "deallocating",
    "start": "starting",
    "remove": "leavingpool",
    "preempt": "preempted",
}
#: How long a preempted node stays away before its pool brings it back, unless the request says otherwise.
DEFAULT_RETURN_AFTER = timedelta(seconds=10)
#: States a low-priority node can be preempted from.
PREEMPTIBLE = (
    "idle",
    "running",
    "offline",
    "starting",
    "waitingforstarttask",
    "starttaskfailed",
    "unusable",
    "unknown",
)
MAX_REMOVE = 100  # nodeList holds at most 100 ids


def option(spec: Body, name: str, allowed: tuple[str, ...]) -> str:
    """The option named in the body, `requeue` when absent; anything else is a 400 naming the property."""
    v = spec.get(name)
    if v is None:
        return "requeue"
    text = str(v).lower()
    if text not in allowed:
        raise errors.invalid_property_value(name, v)
    return text


def _load(tx: Tx, pool_id: str, node_id: str) -> tuple[Row, Row]:
    pool = tx.get(schema.pools, key=key_of(pool_id))
    if pool is None:
        raise errors.pool_not_found()
    row = tx.get(schema.nodes, id=node_id)
    if row is None or row["pool_key"] != pool["key"]:
        raise errors.node_not_found()
    if pool["state"] == "deleting":
        raise errors.pool_being_deleted()
    return pool, row


def _op(row: Row) -> Body | None:
    op = row["body"].get("_op")
    return op if isinstance(op, dict) else None


def busy(row: Row) -> errors.BatchError | None:
    """The 409 a node answers while something else is happening to it, if anything is."""
    op = _op(row)
    kind = op.get("kind") if op else None
    st = row["state"]
    if kind == "reboot" or st == "rebooting":
        return errors.node_being_rebooted()
    if kind == "reimage" or st == "reimaging":
        return errors.node_being_reimaged()
    if st == "creating":
        return errors.node_being_created()
    if kind == "start" or st == "starting":
        return errors.node_being_started()
    if kind == "deallocate" or st in ("deallocating", "deallocated"):
        return errors.operation_not_valid_on_node(f"The node is {st}")
    if kind == "remove" or st == "leavingpool":
        return errors.operation_not_valid_on_node("The node is leaving the pool")
    if kind == "preempt" or st == "preempted":
        return errors.operation_not_valid_on_node("The node has been preempted")
    return None


def unreserve(ctx: Ctx, tx: Tx, node_id: str) -> None:
    """Tasks queued on the node but not started go back to the pool (no requeue: they never ran)."""
    started = ctx.assignments.started
    rows = []
    for ref in list(ctx.assignments.of_node(node_id)):
        if ref in started:
            continue
        ctx.assignments.remove(ref)
        job_key, _, task_key = ref.partition("/")
        rows.append({"job_key": job_key, "key": task_key, "node_id": None})
    if rows:
        tx.update_many(schema.tasks, ["job_key", "key"], rows)
        ctx.hub.wake_scheduler()


def take_away(ctx: Ctx, tx: Tx, node_id: str, opt: str, message: str) -> bool:
    """Apply a deallocation option to the node's tasks; True when the node must wait for running ones."""
    _, now_text, etag = ctx.stamp()
    if opt in ("taskcompletion", "retaineddata"):
        unreserve(ctx, tx, node_id)
        return bool(ctx.assignments.of_node(node_id))
    if opt == "terminate":
        from batchyard.service import completion
        from batchyard.service import tasks as task_ops

        jobs: dict[str, Row] = {}
        for r in tx.select(schema.tasks, schema.tasks.c.node_id == node_id):
            if r["state"] in ("preparing", "running"):
                task_ops.end_task(ctx, tx, r, now_text, etag, "TaskEnded", message)
                job = tx.get(schema.jobs, key=r["job_key"])
                if job is not None:
                    jobs[job["key"]] = job
        for job in jobs.values():
            completion.check_all_complete(ctx, tx, job)
    requeue_node_tasks(ctx, tx, node_id, now_text, etag)
    ctx.hub.wake_node(node_id)
    return False


def _save(tx: Tx, row: Row) -> None:
    body = row["body"]
    tx.update(
        schema.nodes,
        {"state": body["state"], "body": body, "state_transition_time": body["stateTransitionTime"]},
        id=row["id"],
    )


def begin(ctx: Ctx, tx: Tx, row: Row, kind: str, opt: str, **extra: str) -> None:
    """Start an operation on a node: its tasks handled now, the rest written for the pool manager."""
    _, now_text, _ = ctx.stamp()
    body = row["body"]
    message = (
        f"Task was ended because its node was {'removed from the pool' if kind == 'remove' else kind + 'ed'}"
    )
    wait = take_away(ctx, tx, row["id"], opt, message)
    body["_op"] = {"kind": kind, "option": opt, "phase": "drain" if wait else "stop", **extra}
    if not wait:
        set_state(body, OP_STATE[kind], now_text)
    row["state"] = body["state"]
    _save(tx, row)
    ctx.node_ops.add(row["id"])
    ctx.hub.wake_pools()
    ctx.hub.wake_node(row["id"])


def _written(pool: Row, node_id: str | None = None) -> Written:
    path = f"/pools/{pool['id']}" + (f"/nodes/{node_id}" if node_id else "")
    return Written(pool["etag"], pool["last_modified"], path)


def reboot_node(ctx: Ctx, pool_id: str, node_id: str, spec: Body) -> Written:
    opt = option(spec, "nodeRebootOption", TAKE_AWAY)
    return _restart(ctx, pool_id, node_id, "reboot", opt)


def reimage_node(ctx: Ctx, pool_id: str, node_id: str, spec: Body) -> Written:
    opt = option(spec, "nodeReimageOption", TAKE_AWAY)
    return _restart(ctx, pool_id, node_id, "reimage", opt)


def _restart(ctx: Ctx, pool_id: str, node_id: str, kind: str, opt: str) -> Written:
    with ctx.store.tx() as tx:
        pool, row = _load(tx, pool_id, node_id)
        err = busy(row)
        if err is not None:
            raise err
        begin(ctx, tx, row, kind, opt)
        return _written(pool, node_id)


def deallocate_node(ctx: Ctx, pool_id: str, node_id: str, spec: Body) -> Written:
    opt = option(spec, "nodeDeallocateOption", TAKE_AWAY)
    with ctx.store.tx() as tx:
        pool, row = _load(tx, pool_id, node_id)
        err = busy(row)
        if err is not None:
            raise err
        if row["state"] not in ("idle", "running", "offline"):
            raise errors.operation_not_valid_on_node(f"A node in state {row['state']} cannot be deallocated")
        begin(ctx, tx, row, "deallocate", opt)
        return _written(pool, node_id)


def start_node(ctx: Ctx, pool_id: str, node_id: str) -> Written:
    with ctx.store.tx() as tx:
        pool, row = _load(tx, pool_id, node_id)
        if row["state"] != "deallocated" or _op(row) is not None:
            err = busy(row) if row["state"] != "deallocated" else None
            raise err or errors.operation_not_valid_on_node("Only a deallocated node can be started")
        _, now_text, _ = ctx.stamp()
        body = row["body"]
        body["_op"] = {"kind": "start", "option": "requeue", "phase": "spawn"}
        set_state(body, "starting", now_text)
        row["state"] = "starting"
        _save(tx, row)
        ctx.node_ops.add(node_id)
        ctx.hub.wake_pools()
        return _written(pool, node_id)


def disable_scheduling(ctx: Ctx, pool_id: str, node_id: str, spec: Body) -> Written:
    opt = option(spec, "nodeDisableSchedulingOption", DISABLE)
    with ctx.store.tx() as tx:
        pool, row = _load(tx, pool_id, node_id)
        body = row["body"]
        if body.get("schedulingState", "enabled") == "disabled":
            raise errors.node_already_in_target_scheduling_state()
        if row["state"] in ("leavingpool", "preempted", "deallocated", "deallocating"):
            raise errors.operation_not_valid_on_node(f"The node is {row['state']}")
        body["schedulingState"] = "disabled"
        take_away(ctx, tx, node_id, opt, "Task was ended because scheduling was disabled on its node")
        _, now_text, _ = ctx.stamp()
        if row["state"] in ("idle", "running") and not ctx.assignments.of_node(node_id):
            set_state(body, "offline", now_text)
        _save(tx, row)
        return _written(pool, node_id)


def enable_scheduling(ctx: Ctx, pool_id: str, node_id: str) -> Written:
    with ctx.store.tx() as tx:
        pool, row = _load(tx, pool_id, node_id)
        body = row["body"]
        if body.get("schedulingState", "enabled") == "enabled":
            raise errors.node_already_in_target_scheduling_state()
        body["schedulingState"] = "enabled"
        if row["state"] == "offline":
            _, now_text, _ = ctx.stamp()
            running = ctx.assignments.running_on(node_id)
            set_state(body, "running" if running else "idle", now_text)
        _save(tx, row)
    ctx.hub.wake_scheduler()
    return _written(pool, node_id)


def remove_nodes(ctx: Ctx, pool_id: str, spec: Body, cond: Conditions = NO_CONDITIONS) -> Written:
    ids = spec.get("nodeList")
    if not isinstance(ids, list) or not ids:
        raise errors.invalid_property_value("nodeList", ids, "At least one node id is required.")
    if len(ids) > MAX_REMOVE:
        raise errors.invalid_property_value(
            "nodeList", len(ids), f"At most {MAX_REMOVE} node ids are allowed."
        )
    check_resize_timeout(spec.get("resizeTimeout"))
    opt = option(spec, "nodeDeallocationOption", TAKE_AWAY)
    with ctx.store.tx() as tx:
        pool = tx.get_for_update(schema.pools, key=key_of(pool_id))
        if pool is None:
            raise errors.pool_not_found()
        cond.check(pool, write=True)
        pbody = pool["body"]
        if pbody["state"] == "deleting":
            raise errors.pool_being_deleted()
        if pbody.get("enableAutoScale"):
            raise errors.autoscale_enabled()
        if pbody["allocationState"] != "steady":
            raise errors.pool_being_resized()
        rows: dict[str, Row] = {}
        for nid in ids:
            row = tx.get(schema.nodes, id=str(nid))
            if row is None or row["pool_key"] != pool["key"]:
                raise errors.operation_not_valid_on_pool("The node is not in the pool", NodeId=str(nid))
            op = _op(row)
            if row["state"] == "leavingpool" or (op is not None and op.get("kind") == "remove"):
                raise errors.operation_not_valid_on_node("The node is already leaving the pool")
            rows[row["id"]] = row
        _, now_text, _ = ctx.stamp()
        for row in rows.values():
            key = "targetDedicatedNodes" if row["body"].get("isDedicated", True) else "targetLowPriorityNodes"
            pbody[key] = max(0, int(pbody.get(key, 0)) - 1)
            begin(ctx, tx, row, "remove", opt)
        if "resizeTimeout" in spec:
            pbody["resizeTimeout"] = spec["resizeTimeout"]
        pbody["allocationState"] = "resizing"
        pbody["allocationStateTransitionTime"] = now_text
        pbody.pop("resizeErrors", None)
        # like resize, removenodes keeps the pool's ETag (its progress is the service's, not a client write)
        tx.update(schema.pools, {"body": pbody, "alloc_state": "resizing"}, key=pool["key"])
        return _written(pool)


# --- preemption (a batchyard extension) --------------------------------------------------------------------


def _return_after(spec: Body) -> timedelta:
    v = spec.get("returnAfter")
    if v is None:
        return DEFAULT_RETURN_AFTER
    try:
        d = parse_duration(str(v))
    except (ValueError, TypeError):
        raise errors.invalid_property_value("returnAfter", v, "An ISO 8601 duration is required.") from None
    if d < timedelta(0) or d > timedelta(days=1):
        raise errors.invalid_property_value("returnAfter", v, "Between PT0S and P1D.")
    return d


def preempt(ctx: Ctx, tx: Tx, row: Row, after: timedelta) -> None:
    """Preempt one low-priority node: tasks requeued now, its agent killed and disk lost by the manager."""
    now, _, _ = ctx.stamp()
    begin(ctx, tx, row, "preempt", "requeue", returnAt=format_time(now + after))


def preemptible(row: Row) -> bool:
    return not row["body"].get("isDedicated", True) and row["state"] in PREEMPTIBLE and _op(row) is None


def preempt_node(ctx: Ctx, pool_id: str, node_id: str, spec: Body) -> Body:
    after = _return_after(spec)
    with ctx.store.tx() as tx:
        _, row = _load(tx, pool_id, node_id)
        if row["body"].get("isDedicated", True):
            raise errors.operation_not_valid_on_node("Only low-priority (spot) nodes can be preempted")
        if not preemptible(row):
            raise busy(row) or errors.operation_not_valid_on_node(f"The node is {row['state']}")
        preempt(ctx, tx, row, after)
        return {"poolId": pool_id, "preempted": [node_id]}


def preempt_pool(ctx: Ctx, pool_id: str, spec: Body) -> Body:
    """Preempt a fraction (or a count) of a pool's low-priority nodes, chosen at random."""
    after = _return_after(spec)
    fraction, count = spec.get("fraction"), spec.get("count")
    if (fraction is None) == (count is None):
        raise errors.invalid_request_body("Give exactly one of fraction and count.")
    if fraction is not None and (
        isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1
    ):
        raise errors.invalid_property_value("fraction", fraction, "A number between 0 and 1.")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise errors.invalid_property_value("count", count, "A whole number >= 0.")
    with ctx.store.tx() as tx:
        pool = tx.get(schema.pools, key=key_of(pool_id))
        if pool is None:
            raise errors.pool_not_found()
        if pool["state"] == "deleting":
            raise errors.pool_being_deleted()
        rows = [r for r in tx.select(schema.nodes, schema.nodes.c.pool_key == pool["key"]) if preemptible(r)]
        n = int(count) if count is not None else math.ceil(float(fraction or 0) * len(rows))
        chosen = random.sample(rows, min(n, len(rows)))
        for row in chosen:
            preempt(ctx, tx, row, after)
        return {"poolId": pool["id"], "preempted": sorted(r["id"] for r in chosen)}


def set_chaos(ctx: Ctx, pool_id: str, spec: Body) -> Body:
    """The random preemption rate of a pool's low-priority nodes (preemptions per node-hour; 0 = off)."""
    unknown = set(spec) - {"preemptionsPerNodeHour", "returnAfter"}
    if unknown:
        raise errors.unsupported_property(sorted(unknown)[0])
    rate = spec.get("preemptionsPerNodeHour")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 3600:
        raise errors.invalid_property_value("preemptionsPerNodeHour", rate, "A number between 0 and 3600.")
    after = _return_after(spec)
    with ctx.store.tx() as tx:
        pool = tx.get_for_update(schema.pools, key=key_of(pool_id))
        if pool is None:
            raise errors.pool_not_found()
        body = pool["body"]
        if rate:
            body["_chaos"] = {"preemptionsPerNodeHour": float(rate), "returnAfter": after.total_seconds()}
        else:
            body.pop("_chaos", None)
        tx.update(schema.pools, {"body": body}, key=pool["key"])
    ctx.hub.wake_pools()
    return get_chaos(ctx, pool_id)


def get_chaos(ctx: Ctx, pool_id: str) -> Body:
    with ctx.store.tx() as tx:
        pool = tx.get(schema.pools, key=key_of(pool_id))
        if pool is None:
            raise errors.pool_not_found()
        chaos = pool["body"].get("_chaos") or {}
    return {
        "poolId": pool["id"],
        "preemptionsPerNodeHour": float(chaos.get("preemptionsPerNodeHour", 0.0)),
        "returnAfter": f"PT{float(chaos.get('returnAfter', DEFAULT_RETURN_AFTER.total_seconds())):g}S",
    }
