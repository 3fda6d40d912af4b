"""Compute node reads, node counts and the supported image list."""

from __future__ import annotations

from typing import Any

from batchyard.models import errors, odata
from batchyard.models.ids import key_of
from batchyard.models.images import SUPPORTED_IMAGES
from batchyard.models.resources import endpoint_rules
from batchyard.models.resources import node_view as node_shape
from batchyard.service.agents import RECENT_TASKS, node_view
from batchyard.service.common import Body, public
from batchyard.service.context import Ctx
from batchyard.service.listing import ListQuery, page_items, page_rows
from batchyard.store import schema
from batchyard.store.sql import Row, Tx

# the service's order (recorded /nodecounts bodies)
_COUNT_STATES = (
    "creating",
    "deallocated",
    "deallocating",
    "idle",
    "leavingPool",
    "offline",
    "preempted",
    "rebooting",
    "reimaging",
    "running",
    "starting",
    "startTaskFailed",
    "unusable",
    "unknown",
    "upgradingOS",
    "waitingForStartTask",
)


def _recent_tasks(ctx: Ctx, tx: Tx, node_id: str, stored: Body, job_ids: dict[str, str]) -> list[Body]:
    """`recentTasks`: the last tasks that completed here, oldest first (as recorded); absent until one has.

    The references are kept in the node body (and in memory until the next flush), so reading a node costs
    at most 10 task reads however many tasks it has run.
    """
    refs = list(stored.get("_recentTasks") or []) + ctx.recent_tasks.get(node_id, [])
    latest: dict[tuple[str, str], None] = {}
    for job_key, task_key in refs:
        latest.pop((job_key, task_key), None)
        latest[(job_key, task_key)] = None
    out = []
    for job_key, task_key in list(latest)[-RECENT_TASKS:]:
        r = tx.get(schema.tasks, job_key=job_key, key=task_key)
        if r is None or r["node_id"] != node_id:
            continue  # deleted, or requeued onto another node since
        job_id = job_ids.get(job_key)
        if job_id is None:
            job = tx.get(schema.jobs, key=job_key)
            job_id = job_ids[job_key] = str(job["id"]) if job else job_key
        out.append(
            {
                "taskUrl": f"/jobs/{job_id}/tasks/{r['id']}",
                "jobId": job_id,
                "taskId": r["id"],
                "taskState": r["state"],
                "executionInfo": dict(r["body"].get("executionInfo") or {}),
            }
        )
    return out


def frontends(ctx: Ctx, row: Row, pool: Body) -> dict[str, tuple[str, int]] | None:
    """Where the server forwards the node's inbound rules (None: no forwarder, the nodes' own ports)."""
    if ctx.endpoints is None:
        return None
    address = str(row["body"].get("ipAddress", "127.0.0.1"))
    return ctx.endpoints.frontends(row["id"], int(row["ordinal"]), address, endpoint_rules(pool))


def _node_item(ctx: Ctx, tx: Tx, row: Row, pool: Body, job_ids: dict[str, str]) -> Body:
    body = node_shape(
        public(node_view(ctx, row["id"], row["body"])), pool, int(row["ordinal"]), frontends(ctx, row, pool)
    )
    recent = _recent_tasks(ctx, tx, row["id"], row["body"], job_ids)
    if recent:
        body["recentTasks"] = recent
    started = ctx.assignments.started
    running = [w for ref, w in ctx.assignments.of_node(row["id"]).items() if ref in started]
    body["runningTasksCount"] = len(running)
    body["runningTaskSlotsCount"] = sum(int(str(w.get("slots", 1))) for w in running)
    body.setdefault("totalTasksRun", 0)
    body.setdefault("totalTasksSucceeded", 0)
    return body


def _columns() -> dict[str, Any]:
    from batchyard.store.odata_sql import ColumnMap

    t = schema.nodes
    return {
        "state": ColumnMap(t.c.state, casefold=True),
        "stateTransitionTime": ColumnMap(t.c.state_transition_time),
    }


def list_nodes(ctx: Ctx, pool_id: str, q: ListQuery) -> tuple[list[Body], str | None]:
    with ctx.store.tx() as tx:
        pool = tx.get(schema.pools, key=key_of(pool_id))
        if pool is None:
            raise errors.pool_not_found()
        base = schema.nodes.c.pool_key == key_of(pool_id)
        job_ids: dict[str, str] = {}
        return page_rows(
            tx,
            schema.nodes,
            "id",
            base,
            q,
            odata.NODES,
            _columns(),
            lambda r: _node_item(ctx, tx, r, pool["body"], job_ids),
        )


def get_node(ctx: Ctx, pool_id: str, node_id: str) -> Body:
    with ctx.store.tx() as tx:
        pool = tx.get(schema.pools, key=key_of(pool_id))
        if pool is None:
            raise errors.pool_not_found()
        row = tx.get(schema.nodes, id=node_id)
        if row is None or row["pool_key"] != key_of(pool_id):
            raise errors.node_not_found()
        return _node_item(ctx, tx, row, pool["body"], {})


def node_counts(ctx: Ctx, q: ListQuery) -> tuple[list[Body], str | None]:
    with ctx.store.tx() as tx:
        pools = tx.select(schema.pools, columns=["key", "id"])
        nodes = tx.select(schema.nodes, columns=["pool_key", "state", "body"])
    per: dict[tuple[str, bool], dict[str, int]] = {}
    for n in nodes:
        c = per.setdefault((n["pool_key"], bool(n["body"].get("isDedicated", True))), {})
        c[n["state"]] = c.get(n["state"], 0) + 1

    def counts(pool_key: str, dedicated: bool) -> dict[str, int]:
        c = per.get((pool_key, dedicated), {})
        out = {s: c.get(s.lower(), 0) for s in _COUNT_STATES}
        out["total"] = sum(out.values())
        return out

    items = [
        {"poolId": p["id"], "dedicated": counts(p["key"], True), "lowPriority": counts(p["key"], False)}
        for p in pools
    ]
    return page_items(items, q, odata.NODE_COUNTS)


def supported_images(q: ListQuery) -> tuple[list[Body], str | None]:
    # the paging key must be unique: several images share a node agent SKU
    items = [
        dict(i, id="|".join([i["nodeAgentSKUId"], *i["imageReference"].values()])) for i in SUPPORTED_IMAGES
    ]
    out, token = page_items(items, q, odata.SUPPORTED_IMAGES)
    return [{k: v for k, v in i.items() if k != "id"} for i in out], token
