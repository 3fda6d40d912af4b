"""The scheduler loop: finish job state changes, then place runnable tasks on free node slots.

Woken by events (task added, task finished, node ready, job changed), never by a timer; each cycle
commits its whole plan in one transaction and then wakes the agents it gave work to.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from typing import Any

from sqlalchemy import and_, bindparam, select

from batchyard.models.states import NodeState, node_accepts_tasks
from batchyard.scheduler import gang
from batchyard.scheduler.jobplacement import plan_job
from batchyard.scheduler.placement import NodeSlots, free_capacity
from batchyard.service import account, completion, housekeeping, jobprep, jobschedule_runs
from batchyard.service import tasks as task_ops
from batchyard.service.agents import node_info, requeue, work_for
from batchyard.service.common import set_state, stamp_body
from batchyard.service.context import Ctx, task_ref
from batchyard.service.files import node_root, remove_job_files, task_dir_rel
from batchyard.service.taskstate import move
from batchyard.store import schema
from batchyard.store.sql import Row, Tx


def _affinity(body: dict[str, object]) -> str | None:
    info = body.get("affinityInfo")
    if isinstance(info, dict):
        aid = str(info.get("affinityId", ""))
        return aid[4:] if aid.startswith("TVM:") else aid or None
    return None


def _elsewhere(row: Row, node: Row) -> bool:
    """The task has affinity for a node other than ``node``."""
    aff = _affinity(row["body"])
    return aff is not None and aff != node["id"]


log = logging.getLogger("batchyard.scheduler")

# Each node may hold this many times its slots' worth of placed-but-waiting tasks beyond its free slots, so an agent
# starts its next task the moment one ends instead of waiting for a round trip. Queued tasks stay 'active'
# (as on Azure, a task without a free slot is not running) and are taken back if their job stops being active.
PREFETCH = 4


def _pool_nodes() -> Any:
    n = schema.nodes
    return select(n).where(n.c.pool_key == bindparam("pool"))


def _active_jobs() -> Any:
    j = schema.jobs
    return (
        select(j)
        .where(and_(j.c.pool_key == bindparam("pool"), j.c.state == "active"))
        .order_by(j.c.priority.desc(), j.c.seq)
    )


def _runnable_tasks() -> Any:
    t = schema.tasks
    return (
        select(t)
        .where(
            and_(
                t.c.job_key == bindparam("job"),
                t.c.state == "active",
                t.c.deps_remaining == 0,
                t.c.node_id.is_(None),
            )
        )
        .order_by(t.c.seq)
        .limit(bindparam("limit"))
    )


class Scheduler:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        hub = self.ctx.hub
        while True:
            await hub.scheduler.wait()
            hub.scheduler.clear()
            try:
                more = self.cycle()
            except Exception:  # a bad cycle must not stop scheduling; it is retried on the next event
                log.exception("scheduler cycle failed")
                await asyncio.sleep(0.5)
                hub.wake_scheduler()
                continue
            if more:
                hub.wake_scheduler()
            await asyncio.sleep(0)

    async def timers_loop(self, interval: float = 1.0) -> None:
        """Time-based rules: job maxWallClockTime, task retention and job schedule runs (read from the
        injectable `ctx.clock`). Everything else is event driven."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.timers()
            except Exception:  # keep ticking
                log.exception("timer pass failed")
            try:
                jobschedule_runs.tick(self.ctx)
            except Exception:  # keep ticking
                log.exception("job schedule pass failed")
            try:
                housekeeping.tick(self.ctx)  # auto pools, pool usage (service.housekeeping)
            except Exception:  # keep ticking
                log.exception("housekeeping pass failed")

    def timers(self) -> None:
        _, now_text, _ = self.ctx.stamp()
        with self.ctx.store.tx() as tx:
            expired = tx.select(
                schema.jobs,
                and_(
                    schema.jobs.c.deadline.is_not(None),
                    schema.jobs.c.deadline <= now_text,
                    schema.jobs.c.state.in_(["active", "disabling", "disabled", "enabling"]),
                ),
            )
            for job in expired:
                completion.begin_terminate(self.ctx, tx, job, "MaxWallClockTimeExpiry")
            due = tx.select(
                schema.tasks,
                and_(schema.tasks.c.cleanup_at.is_not(None), schema.tasks.c.cleanup_at <= now_text),
                limit=500,
            )
            for row in due:
                node_id = row["body"].get("nodeInfo", {}).get("nodeId")
                owner = tx.get(schema.jobs, key=row["job_key"]) if node_id else None
                if node_id and owner is not None:
                    shutil.rmtree(
                        node_root(self.ctx, node_id) / task_dir_rel(owner["id"], row["id"]),
                        ignore_errors=True,
                    )
                tx.update(schema.tasks, {"cleanup_at": None}, job_key=row["job_key"], key=row["key"])

    def place_now(self, tx: Tx, pool_key: str, node: Row | None = None) -> tuple[set[str], bool]:
        """Place work inside the caller's transaction: an agent just freed slots, so fill that ``node``
        (its row as the sync leaves it), or every node of the pool when none is given.

        Only the syncing node is considered, so that a sync costs the same with 2 nodes or 1,000: every
        node fills itself when it reports, and the loop (woken by adds and node changes) spreads new work
        over the whole pool. Returns the nodes given work and whether placement is left for the loop."""
        woken: set[str] = set()
        pool = tx.get(schema.pools, key=pool_key)
        if pool is None or pool["state"] != "active":
            return woken, False
        more = self._place_pool(tx, pool, woken, only=node)
        return woken, more

    def cycle(self) -> bool:
        """One pass; returns True when another pass should follow immediately."""
        woken: set[str] = set()
        more = False
        with self.ctx.store.tx() as tx:
            self._job_transitions(tx)
            for pool in tx.select(schema.pools, schema.pools.c.state == "active"):
                more |= self._place_pool(tx, pool, woken)
        for node_id in woken:
            self.ctx.hub.wake_node(node_id)
        return more

    # --- job state changes -------------------------------------------------------------------------------

    def _job_transitions(self, tx: Tx) -> None:
        pending = tx.select(
            schema.jobs, schema.jobs.c.state.in_(["deleting", "terminating", "disabling", "enabling"])
        )
        for job in pending:
            st = job["state"]
            if st != "enabling":
                self._unreserve(tx, job)
            if st == "deleting":
                if jobprep.releasing(self.ctx, tx, job):  # its release tasks run first
                    self._end_running(tx, job, "Task was ended because its job was deleted")
                    continue
                self._delete_job(tx, job)
            elif st == "terminating":
                # running tasks are killed; active tasks stay active, as the service documents
                self._end_running(tx, job, "Task was ended because its job was terminated")
                if jobprep.releasing(self.ctx, tx, job):
                    continue  # terminating until its release tasks have run
                self._set_job_state(tx, job, "completed", end=True)
            elif st == "disabling":
                opt = job["body"].get("_disableTasks", "requeue")
                if opt == "requeue":
                    self._requeue_running(tx, job)
                elif opt == "terminate":
                    self._end_running(tx, job)
                elif self._open_tasks(tx, job, ["preparing", "running"]):
                    continue  # 'wait': the job stays disabling until its running tasks finish
                self._set_job_state(tx, job, "disabled")
            elif st == "enabling":
                self._set_job_state(tx, job, "active")

    def _unreserve(self, tx: Tx, job: Row) -> None:
        """Take back a job's tasks that are queued on agents but not started (they stay active)."""
        refs = self.ctx.assignments.unstarted(job["key"])
        rows = []
        for ref in refs:
            node = self.ctx.assignments.remove(ref)
            if node:
                self.ctx.hub.wake_node(node)
            rows.append({"job_key": job["key"], "key": ref.split("/", 1)[1], "node_id": None})
        tx.update_many(schema.tasks, ["job_key", "key"], rows)

    def _set_job_state(self, tx: Tx, job: Row, state: str, end: bool = False) -> None:
        _, now_text, etag = self.ctx.stamp()
        body = job["body"]
        set_state(body, state, now_text)
        if end:
            body.setdefault("executionInfo", {})["endTime"] = now_text
        body.pop("_disableTasks", None) if state == "disabled" else None
        stamp_body(body, etag, now_text)
        tx.update(
            schema.jobs,
            {"state": state, "body": body, "etag": etag, "last_modified": now_text},
            key=job["key"],
        )

    def _open_tasks(self, tx: Tx, job: Row, states: list[str]) -> list[Row]:
        return tx.select(
            schema.tasks, and_(schema.tasks.c.job_key == job["key"], schema.tasks.c.state.in_(states))
        )

    def _end_running(self, tx: Tx, job: Row, message: str = "Task was ended by job disable") -> None:
        _, now_text, etag = self.ctx.stamp()
        for row in self._open_tasks(tx, job, ["preparing", "running"]):
            node = row["node_id"]
            task_ops.end_task(self.ctx, tx, row, now_text, etag, "TaskEnded", message)
            if node:
                self.ctx.hub.wake_node(node)

    def _requeue_running(self, tx: Tx, job: Row) -> None:
        _, now_text, etag = self.ctx.stamp()
        for row in self._open_tasks(tx, job, ["preparing", "running"]):
            node = self.ctx.assignments.remove(task_ref(row["job_key"], row["key"]))
            requeue(tx, row, now_text, etag)
            if node:
                self.ctx.hub.wake_node(node)

    def _delete_job(self, tx: Tx, job: Row) -> None:
        account.fold_deleted_job(tx, job["key"])  # before the rows go: removing them adjusts the counts
        rows = tx.select(schema.tasks, schema.tasks.c.job_key == job["key"])
        task_ops.remove_rows(self.ctx, tx, rows)
        tx.delete(schema.task_counts, job_key=job["key"])
        completion.forget_job(tx, job["key"])
        tx.delete(schema.jobs, key=job["key"])
        jobprep.forget_job(self.ctx, job["key"])
        remove_job_files(self.ctx, tx, job)

    # --- placement ---------------------------------------------------------------------------------------

    def _place_pool(self, tx: Tx, pool: Row, woken: set[str], only: Row | None = None) -> bool:
        """Place the pool's runnable tasks on its nodes' free slots (on ``only``, when given); whether the
        loop should run again (more work fits, or work was left that only a whole-pool pass can place)."""
        pbody = pool["body"]
        per_node = int(pbody.get("taskSlotsPerNode", 1))
        jobs = tx.select_prepared("active_jobs", _active_jobs, {"pool": pool["key"]})
        if not jobs:  # nothing to place: the pool's nodes are not read (each joining node calls this)
            return False
        nodes: list[NodeSlots] = []
        low_priority: set[str] = set()
        pool_nodes = (
            [only]
            if only is not None
            else tx.select_prepared("pool_nodes", _pool_nodes, {"pool": pool["key"]})
        )
        for n in pool_nodes:
            if not node_accepts_tasks(NodeState(n["state"])):
                continue
            if n["body"].get("schedulingState", "enabled") != "enabled" or "_op" in n["body"]:
                continue  # disabled, or an operation (reboot, removal…) is waiting for its running tasks
            if n["body"].get("isDedicated") is False:
                low_priority.add(n["id"])
            used = self.ctx.assignments.used_slots(n["id"])
            free = max(0, per_node - used)
            reserve = max(0, PREFETCH * per_node - max(used - per_node, 0))
            if free > 0 or reserve > 0:
                nodes.append(NodeSlots(n["id"], free, per_node, reserve))
        gang.hold_gang_nodes(self.ctx, nodes)
        if not nodes:
            return False
        node_rows = {n.node_id: n for n in nodes}
        pack = str(pbody.get("taskSchedulingPolicy", {}).get("nodeFillType", "Spread")).lower() == "pack"
        _, now_text, etag = self.ctx.stamp()
        placed_any = False
        saturated = False
        leftover = False
        for job in jobs:
            mpt = int(job["body"].get("maxParallelTasks", -1))
            cap = free_capacity(nodes, prefetch=True)
            if cap <= 0:
                saturated = True
                break
            limit = cap
            if mpt > 0:
                c = tx.get(schema.task_counts, job_key=job["key"])
                queued = len(self.ctx.assignments.unstarted(job["key"]))
                limit = min(cap, mpt - (int(c["running"]) if c else 0) - queued)
                if limit <= 0:
                    continue
            rows = tx.select_prepared("runnable_tasks", _runnable_tasks, {"job": job["key"], "limit": limit})
            if only is not None:
                cut = next((i for i, r in enumerate(rows) if gang.is_multi(r) or _elsewhere(r, only)), None)
                if cut is not None:
                    # a gang needs several nodes (and holds back what follows it), a task with affinity for
                    # another node may wait for that node: from here on it is the whole-pool pass's to place
                    rows = rows[:cut]
                    leftover = True
            if any(gang.is_multi(r) for r in rows):  # multi-instance tasks: all instances at once
                placed_any |= gang.place_gangs(
                    self.ctx, tx, pool, job, [r for r in rows if gang.is_multi(r)], nodes, woken
                )
                rows = [r for r in rows if not gang.is_multi(r)]
            if not rows:
                if leftover:
                    break
                continue
            too_big = [r for r in rows if int(r["slots"]) > per_node]
            for r in too_big:
                self._unschedulable(tx, job, r, per_node)
            by_ref = {task_ref(r["job_key"], r["key"]): r for r in rows if int(r["slots"]) <= per_node}
            plan = plan_job(job, by_ref, nodes, per_node, pack, low_priority, lambda r: _affinity(r["body"]))
            # a placed task stays 'active' (queued on the node) until its agent reports it started
            reserved = []
            for cand, node_id in plan:
                r = by_ref[cand.ref]
                reserved.append({"job_key": r["job_key"], "key": r["key"], "node_id": node_id})
                work = work_for(job, r, per_node)
                work["nodeInfo"] = node_info(pool["id"], node_id, job["id"], r["id"])
                self.ctx.assignments.add(node_id, cand.ref, work, cand.slots)
                woken.add(node_id)
                placed_any = True
            tx.update_many(schema.tasks, ["job_key", "key"], reserved)
            if len(rows) >= limit and free_capacity(nodes, prefetch=True) > 0:
                saturated = True
            if leftover:
                break
        del node_rows
        return leftover or (placed_any and saturated and free_capacity(nodes, prefetch=True) > 0)

    def _unschedulable(self, tx: Tx, job: Row, row: Row, per_node: int) -> None:
        """A task needing more slots than any node of the pool has can never run: fail it clearly."""
        _, now_text, etag = self.ctx.stamp()
        ei = row["body"].setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
        ei["endTime"] = now_text
        ei["result"] = "failure"
        ei["failureInfo"] = {
            "category": "usererror",
            "code": "TaskSchedulingConstraintFailed",
            "message": f"The task requires {row['slots']} slots but the nodes of its pool have {per_node}.",
        }
        move(tx, row, "completed", now_text, etag, node_id=None)
        completion.finished(self.ctx, tx, job, row, now_text)
        completion.check_all_complete(self.ctx, tx, job)
