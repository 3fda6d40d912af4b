"""Multi-instance tasks on the server: the gang's work, its agents' reports, its end, and the subtask list.

A placed gang is recorded in the task body (``_gang``: attempt, launcher token, node addresses, one entry
per instance) and in the mailboxes: instance ``i`` is the work ``<job>/<task>~<i>#<attempt>`` on its node
(common resource files, then the coordination command; it then holds its node until ended). When every
instance has reported its coordination command successful, the primary's node gets the task's own attempt
``<job>/<task>#<attempt>`` (the application command, no slot of its own). Anything that takes the task's
attempt back (completion, retry, terminate, requeue, delete) releases the whole gang through
`Assignments.remove`; a lost node breaks it (`Assignments.drop_node`) and the task is requeued. Decision 0160.
"""

from __future__ import annotations

import secrets
import shutil
from typing import Any

from batchyard.models import multiinstance
from batchyard.models.clock import parse_time
from batchyard.service import completion
from batchyard.service.common import Body
from batchyard.service.context import Ctx, task_ref
from batchyard.service.taskstate import move
from batchyard.store import schema
from batchyard.store.sql import Row, Tx

SUBTASK_FAILED = {
    "category": "usererror",
    "code": "FailureExitCode",
    "message": "The task exited with an exit code representing a failure",
}


def is_multi(body: Body) -> bool:
    return multiinstance.settings(body) is not None


def is_instance_event(ev: Body) -> bool:
    return multiinstance.parse_instance_ref(str(ev.get("ref", ""))) is not None


def _work_for(job: Row, row: Row) -> dict[str, Any]:
    from batchyard.service.agents import work_for  # agents dispatches to this module

    return work_for(job, row, 1)


def place(
    ctx: Ctx, tx: Tx, job: Row, row: Row, nodes: list[tuple[str, str, dict[str, str]]], now: str, etag: str
) -> None:
    """Start a gang on ``nodes`` ((node id, address, nodeInfo); the first is the master): the task runs."""
    attempt = int(row["attempt"])
    gang: Body = {
        "attempt": attempt,
        "token": secrets.token_hex(16),
        "placed": now,
        "addresses": [a for _, a, _ in nodes],
        "instances": [
            {"id": i, "nodeId": n, "nodeInfo": info, "state": "running", "stateTransitionTime": now}
            for i, (n, _, info) in enumerate(nodes)
        ],
    }
    body = row["body"]
    body["_gang"] = gang
    body["nodeInfo"] = nodes[0][2]
    ei = body.setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
    ei["startTime"] = now
    ei.pop("endTime", None)
    move(tx, row, "running", now, etag, node_id=nodes[0][0])
    _assign_instances(ctx, job, row, gang)


def _assign_instances(ctx: Ctx, job: Row, row: Row, gang: Body) -> None:
    tref = task_ref(row["job_key"], row["key"])
    mis = multiinstance.settings(row["body"]) or {}
    members = []
    for inst in gang["instances"]:
        if inst.get("state") == "completed":
            continue
        i = int(inst["id"])
        iref = multiinstance.instance_ref(tref, i)
        w = _work_for(job, row)
        w.update(
            ref=f"{iref}#{gang['attempt']}",
            commandLine=mis.get("coordinationCommandLine", ""),
            resourceFiles=mis.get("commonResourceFiles") or [],
            outputFiles=[],
            nodeInfo=inst["nodeInfo"],
            mpi=_mpi(gang, i),
        )
        w["environment"] = [*w["environment"], *multiinstance.gang_env(gang["addresses"], i, "")]
        ctx.assignments.add(inst["nodeId"], iref, w, 1)
        ctx.assignments.started.add(iref)  # an instance starts at once: its node was free
        members.append(iref)
        if ctx.assignments.wake is not None:
            ctx.assignments.wake(inst["nodeId"])
    ctx.assignments.gangs[tref] = members
    if all(inst.get("coordinated") for inst in gang["instances"]):
        _assign_primary(ctx, job, row, gang)


def _mpi(gang: Body, index: int) -> dict[str, Any]:
    return {
        "index": index,
        "token": gang["token"],
        "address": gang["addresses"][index],
        "port": multiinstance.MASTER_PORT,
    }


def _assign_primary(ctx: Ctx, job: Row, row: Row, gang: Body) -> None:
    """Every coordination command succeeded: the primary's node runs the application command."""
    tref = task_ref(row["job_key"], row["key"])
    master = gang["instances"][0]
    w = _work_for(job, row)
    w.update(slots=0, nodeInfo=master["nodeInfo"], mpi=_mpi(gang, 0))
    w["environment"] = [*w["environment"], *multiinstance.gang_env(gang["addresses"], 0, "")]
    limit = w.get("maxWallClockSeconds")
    if limit is not None:
        # the task's wall clock runs from its start, coordination included
        spent = (parse_time(ctx.stamp()[1]) - parse_time(str(gang["placed"]))).total_seconds()
        w["maxWallClockSeconds"] = max(0.0, float(limit) - spent)
    ctx.assignments.add(master["nodeId"], tref, w, 0)
    ctx.assignments.started.add(tref)
    if ctx.assignments.wake is not None:
        ctx.assignments.wake(master["nodeId"])


def apply_events(ctx: Ctx, tx: Tx, node_id: str, events: list[Body], now: str, etag: str) -> bool:
    """Apply an agent's reports about instances (started, coordinated, completed); whether one ended (its
    node's slot is free again)."""
    freed = False
    for ev in events:
        parsed = multiinstance.parse_instance_ref(str(ev.get("ref", "")))
        if parsed is None:
            continue
        freed |= ev.get("type") == "completed"
        tref, index, attempt = parsed
        job_key, _, task_key = tref.partition("/")
        row = tx.get(schema.tasks, job_key=job_key, key=task_key)
        if row is None or int(row["attempt"]) != attempt:
            continue
        gang = row["body"].get("_gang")
        if not isinstance(gang, dict) or int(gang.get("attempt", -1)) != attempt:
            continue
        if index >= len(gang["instances"]) or gang["instances"][index]["nodeId"] != node_id:
            continue
        inst = gang["instances"][index]
        kind = ev.get("type")
        live = row["state"] == "running"
        if kind == "started" and live:
            inst["startTime"] = ev.get("time") or now
            _save(tx, row)
        elif kind == "coordinated" and live:
            inst["coordinated"] = True
            inst["exitCode"] = int(ev.get("exitCode") or 0)
            _save(tx, row)
            if all(i.get("coordinated") for i in gang["instances"]):
                job = tx.get(schema.jobs, key=job_key)
                if job is not None:
                    _assign_primary(ctx, job, row, gang)
        elif kind == "completed" and inst.get("state") != "completed":
            _end_instance(inst, ev, now)
            if live:
                _fail_gang(ctx, tx, row, ev, now, etag)
            else:
                _save(tx, row)
    return freed


def _end_instance(inst: Body, ev: Body, now: str) -> None:
    inst.setdefault("history", []).append(
        [inst.get("state", "running"), inst.get("stateTransitionTime", now)]
    )
    inst["state"] = "completed"
    inst["stateTransitionTime"] = inst["endTime"] = ev.get("endTime") or now
    if ev.get("exitCode") is not None:
        inst["exitCode"] = int(ev["exitCode"])
    failure = ev.get("failureInfo")
    if isinstance(failure, dict):
        inst["failureInfo"] = {k: v for k, v in failure.items() if k != "details" or v}
    else:
        inst.pop("failureInfo", None)


def _save(tx: Tx, row: Row) -> None:
    """Subtask progress is not a change of the task: its ETag stays."""
    tx.update(schema.tasks, {"body": row["body"]}, job_key=row["job_key"], key=row["key"])


def _fail_gang(ctx: Ctx, tx: Tx, row: Row, ev: Body, now: str, etag: str) -> None:
    """An instance ended while the task ran: every instance is ended and the task is retried as a whole,
    or fails with the instance's exit code and failure."""
    node = ctx.assignments.remove(task_ref(row["job_key"], row["key"]))
    if node is not None:
        ctx.hub.wake_node(node)
    body = row["body"]
    ei = body.setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
    max_retry = int(body["constraints"].get("maxTaskRetryCount", 0))
    retries = int(ei.get("retryCount", 0))
    if not ev.get("noRetry") and (max_retry == -1 or retries < max_retry):
        ei["retryCount"] = retries + 1
        ei["lastRetryTime"] = now
        for k in ("result", "failureInfo", "endTime"):
            ei.pop(k, None)
        move(tx, row, "active", now, etag, node_id=None, attempt=int(row["attempt"]) + 1)
        ctx.hub.wake_scheduler()
        return
    ei["endTime"] = ev.get("endTime") or now
    if ev.get("exitCode") is not None:
        ei["exitCode"] = int(ev["exitCode"])
    failure = ev.get("failureInfo")
    ei["result"] = "failure"
    ei["failureInfo"] = (
        {k: v for k, v in failure.items() if k != "details" or v}
        if isinstance(failure, dict)
        else SUBTASK_FAILED
    )
    move(tx, row, "completed", now, etag, node_id=None)
    job = tx.get(schema.jobs, key=row["job_key"])
    if job is not None:
        completion.finished(ctx, tx, job, row, now)
        completion.check_all_complete(ctx, tx, job)


def requeue_broken(ctx: Ctx, tx: Tx, now: str, etag: str) -> None:
    """Gangs that lost a node rerun as a whole: their tasks go back to the queue (requeueCount)."""
    broken, ctx.assignments.broken = ctx.assignments.broken, []
    for tref in broken:
        job_key, _, task_key = tref.partition("/")
        row = tx.get(schema.tasks, job_key=job_key, key=task_key)
        if row is None or row["state"] not in ("running", "preparing"):
            continue  # its primary's node was the lost one: already requeued
        ei = row["body"].setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
        ei["requeueCount"] = int(ei.get("requeueCount", 0)) + 1
        ei["lastRequeueTime"] = now
        ei.pop("startTime", None)
        row["body"].pop("nodeInfo", None)
        ctx.assignments.remove(tref)
        move(tx, row, "active", now, etag, node_id=None, attempt=int(row["attempt"]) + 1)
    if broken:
        ctx.hub.wake_scheduler()


def rebuild(ctx: Ctx, job: Row, row: Row) -> None:
    """After a server restart: the running gang's instances (and primary) are in the mailboxes again."""
    gang = row["body"].get("_gang")
    if isinstance(gang, dict) and int(gang.get("attempt", -1)) == int(row["attempt"]):
        _assign_instances(ctx, job, row, gang)


def list_subtasks(ctx: Ctx, job_id: str, task_id: str) -> list[Body]:
    """The subtasks (ids 1…N-1) of a multi-instance task; none for an ordinary task."""
    from batchyard.service.tasks import load

    with ctx.store.tx() as tx:
        _, row = load(tx, job_id, task_id)
    gang = row["body"].get("_gang")
    if not is_multi(row["body"]) or not isinstance(gang, dict):
        return []
    ended = None
    if row["state"] != "running" or int(gang.get("attempt", -1)) != int(row["attempt"]):
        ended = str(row["body"].get("stateTransitionTime"))
    return [multiinstance.subtask_view(inst, ended) for inst in gang["instances"][1:]]


def remove_instance_dirs(ctx: Ctx, job_id: str, row: Row) -> None:
    """A deleted multi-instance task takes its subtasks' directories with it."""
    gang = row["body"].get("_gang")
    if not isinstance(gang, dict):
        return
    for inst in gang["instances"][1:]:
        shutil.rmtree(ctx.node_root(str(inst["nodeId"])) / "workitems" / job_id / "job-1" / row["id"], True)


def check_pool(pool_body: Body, number: int) -> str | None:
    """Why a pool can never run a gang of ``number`` instances (None: it can, given enough nodes)."""
    if number > multiinstance.MAX_INSTANCES:
        return (
            f"The task requires {number} nodes but a pool with inter-node communication can have at most "
            f"{multiinstance.MAX_INSTANCES}."
        )
    return None
