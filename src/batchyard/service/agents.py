"""The server side of the agent protocol: apply a node's batched events, hand it its work.

The protocol reconciles instead of acknowledging each task: an agent reports every attempt it runs,
the server answers with the attempts assigned to it that it does not run yet (start them) and the
ones it runs that are no longer assigned (kill them). A lost response or a server restart therefore
loses nothing; completion events are resent until acknowledged.
"""

from __future__ import annotations

import hmac
from typing import Any

from sqlalchemy import and_

from batchyard.models import errors, startlog
from batchyard.models.clock import monotonic, parse_time
from batchyard.models.decode import parse_duration
from batchyard.models.statistics import attempt_usage
from batchyard.service import completion, jobprep, jobtasks, nodemounts, starttask, subtasks
from batchyard.service.common import Body, set_state
from batchyard.service.context import Assignments, Ctx, task_ref
from batchyard.service.taskstate import TaskWriter, move
from batchyard.store import schema
from batchyard.store.sql import Row, Tx


def node_info(pool_id: str, node_id: str, job_id: str, task_id: str) -> dict[str, str]:
    """The task's nodeInfo (urls relative; the API makes them absolute)."""
    root = f"workitems/{job_id}/job-1/{task_id}"
    return {
        "affinityId": f"TVM:{node_id}",
        "nodeUrl": f"/pools/{pool_id}/nodes/{node_id}",
        "poolId": pool_id,
        "nodeId": node_id,
        "taskRootDirectory": root,
        "taskRootDirectoryUrl": f"/pools/{pool_id}/nodes/{node_id}/files/{root}",
    }


def work_for(job: Row, task: Row, node_slots: int = 1) -> dict[str, Any]:
    """What an agent needs to run one attempt of a task."""
    tb = task["body"]
    jb = job["body"]
    common = [[e["name"], e.get("value", "")] for e in jb.get("commonEnvironmentSettings") or []]
    env = [[e["name"], e.get("value", "")] for e in tb.get("environmentSettings") or []]
    wall = tb["constraints"].get("maxWallClockTime")
    secs = None
    if wall and not str(wall).startswith("P10675199D"):
        secs = parse_duration(str(wall)).total_seconds()
    return {
        "ref": f"{task_ref(task['job_key'], task['key'])}#{task['attempt']}",
        "jobId": job["id"],
        "taskId": task["id"],
        "commandLine": tb["commandLine"],
        "commonEnvironment": common,
        "environment": env,
        "maxWallClockSeconds": secs,
        "userIdentity": tb.get("userIdentity"),
        "resourceFiles": tb.get("resourceFiles") or [],
        "outputFiles": tb.get("outputFiles") or [],
        "applicationPackageReferences": tb.get("applicationPackageReferences") or [],
        "containerSettings": tb.get("containerSettings"),
        "slots": jobtasks.run_slots(task, node_slots),
        "nodeSlots": node_slots,
        **jobprep.task_work(job),
    }


def node_error(ev: Body) -> Body:
    """A node ``errors[]`` entry from an agent's ``nodeError`` event (its failureInfo, bounded)."""
    info = ev.get("failureInfo") or {}
    details = [
        {"name": str(d.get("name", ""))[:256], "value": str(d.get("value", ""))[:1024]}
        for d in (info.get("details") or [])[:8]
    ]
    out: Body = {"code": str(info.get("code", ""))[:128], "message": str(info.get("message", ""))[:1024]}
    if details:
        out["errorDetails"] = details
    return out


def split_ref(ref: str) -> tuple[str, str, int]:
    base, _, attempt = ref.rpartition("#")
    job_key, _, task_key = base.partition("/")
    if not attempt.isdigit():
        return job_key, task_key, -1  # not an attempt reference: matches no task
    return job_key, task_key, int(attempt)


def authenticate(tx: Tx, node_id: str, token: str, pid: int | None = None) -> Row:
    row = tx.get(schema.nodes, id=node_id)
    if row is None:
        raise errors.node_not_found()
    if not hmac.compare_digest(str(row["token"]), token):
        raise errors.authentication_failed("The node token is not valid")
    if pid is not None and row["pid"] and int(row["pid"]) != pid:
        # a local node has exactly one agent: the one the provider spawned last (a stale one must stop)
        raise errors.BatchError(409, "NodeAgentReplaced", "Another agent process now serves this node.")
    return row


# states the agent's own reports decide (a start task may hold a node in starting/waiting/failed)
_BOOTED = {"creating", "starting", "unknown", "idle", "running", "offline"}
_BOOTED |= {"waitingforstarttask", "starttaskfailed"}


def _node_state_after(ctx: Ctx, node_id: str, current: str, body: Body) -> str:
    if current in _BOOTED:
        held = starttask.gate(body)
        if held is not None:
            return held
        if ctx.assignments.running_on(node_id):
            return "running"
        # scheduling disabled: `offline` once its tasks are gone (decision 0101)
        return "offline" if body.get("schedulingState") == "disabled" else "idle"
    return current


def sync(
    ctx: Ctx,
    node_id: str,
    token: str,
    events: list[Body],
    running: list[str],
    pid: int | None = None,
    boot: tuple[str | None, bool] = (None, False),
    node_errors: list[Body] | None = None,
    mounts: Body | None = None,
) -> Body:
    """Apply events, refresh the node, and compute what the agent must start and kill.

    ``boot`` is the agent's boot id and whether it still needs its start task (`service.starttask`);
    ``mounts`` its report on mounting the pool's file systems (`service.nodemounts`), which come first.
    """
    ctx.last_seen[node_id] = monotonic()
    freed = False
    with ctx.store.tx() as tx:
        node = authenticate(tx, node_id, token, pid)
        nbody = node["body"]
        counts: dict[str, dict[str, int]] = {}
        jobs: dict[str, Row] = {}
        writer = TaskWriter()
        st_events = [e for e in events if e.get("type") in starttask.KINDS]
        if st_events:
            events = [e for e in events if e.get("type") not in starttask.KINDS]
        node_dirty, booted = starttask.apply(tx, node, boot[0], st_events)
        instance_events = [e for e in events if subtasks.is_instance_event(e)]
        if instance_events:  # multi-instance tasks' instances (service.subtasks)
            freed |= subtasks.apply_events(ctx, tx, node_id, instance_events, *ctx.stamp()[1:])
        rows = _load_rows(tx, [e for e in events if e.get("type") not in jobprep.JOB_EVENTS])
        _, now_text, etag = ctx.stamp()
        max_seq = max((int(e.get("seq", 0)) for e in st_events), default=0)
        unusable = False
        for ev in events:
            max_seq = max(max_seq, int(ev.get("seq", 0)))
            kind = ev.get("type")
            if kind == "nodeError":  # a setup step failed when the node joined (e.g. a container image pull)
                # one agent start reports all its setup errors in one batch: they replace older ones
                nbody["errors"] = (
                    [*(nbody.get("errors") or []), node_error(ev)] if unusable else [node_error(ev)]
                )
                unusable = node_dirty = True
                continue
            row = rows.get(str(ev.get("ref")))
            if kind in jobprep.EVENTS:
                jobprep.on_event(ctx, tx, node, ev, row, jobs, now_text, etag, counts, writer)
                continue
            if row is None:
                continue
            if kind == "started":
                _started(tx, row, ev, now_text, etag, counts, writer, ctx.assignments)
            elif kind == "completed":
                done = _completed(ctx, tx, node_id, row, ev, now_text, etag, counts, jobs, writer)
                if done is not None:
                    freed = True
                    totals = ctx.node_totals.setdefault(node_id, [0, 0])
                    totals[0] += 1
                    totals[1] += int(done)
                    _note_recent(ctx, node_id, row)
        writer.flush(tx)
        for jk, d in counts.items():
            tx.add_counts(jk, d)
        for job in jobs.values():
            completion.check_all_complete(ctx, tx, job)
        current = "starting" if booted and node["state"] in starttask.BOOTING else node["state"]
        if booted and not unusable and nbody.get("errors"):  # a new agent whose image pulls all worked
            kept = [e for e in nbody["errors"] if not str(e.get("code", "")).startswith("Container")]
            nbody["errors"] = kept
            if not kept:
                del nbody["errors"]
            node_dirty = True
        new_state = "unusable" if unusable else _node_state_after(ctx, node_id, current, nbody)
        if node_errors is not None:  # the agent's start-up report (application packages)
            node_dirty = True
            if unusable:  # a container image failed in the same start-up: keep every error
                nbody["errors"] = [*(nbody.get("errors") or []), *node_errors]
                if node_errors:
                    nbody["_agentErrors"] = True
            else:
                new_state = _agent_errors(nbody, new_state, node_errors)
        new_state, mount_reply, mounting = nodemounts.gate(
            tx, node["pool_key"], current, mounts, new_state, nbody
        )
        if new_state != node["state"]:
            set_state(nbody, new_state, now_text)
            if current in ("creating", "starting"):
                nbody["lastBootTime"] = now_text
            node_dirty = True
        if node_dirty:
            _add_totals(ctx, node_id, nbody)
            tx.update(
                schema.nodes,
                {"state": new_state, "body": nbody, "state_transition_time": nbody["stateTransitionTime"]},
                id=node_id,
            )
        woken: set[str] = set()
        more = False
        if (freed or node_dirty) and ctx.place_now is not None:
            # place new work on this pool now, so this very reply carries it
            here = {**node, "state": new_state, "body": nbody}
            woken, more = ctx.place_now(tx, node["pool_key"], here)
    for other in woken - {node_id}:
        ctx.hub.wake_node(other)
    transitional = any(j["state"] != "active" for j in jobs.values())  # e.g. disabling with 'wait'
    if more or transitional or ((freed or node_dirty) and ctx.place_now is None):
        ctx.hub.wake_scheduler()
    start = {} if mounting else starttask.reply(nbody, *boot)  # the start task runs once mounts are made
    return {"ack": max_seq, **plan(ctx, node_id, running), **start, **mount_reply}


def _agent_errors(nbody: Body, state: str, node_errors: list[Body]) -> str:
    """Errors the agent found joining (a pool package it could not install) make the node `unusable`; a
    clean report after a restart (reboot, reimage) clears the errors an earlier one set."""
    if node_errors:
        nbody["errors"] = node_errors
        nbody["_agentErrors"] = True
        return "unusable"
    if nbody.pop("_agentErrors", None):
        nbody.pop("errors", None)
        if state == "unusable":
            return "idle"
    return state


RECENT_TASKS = 10  # node agent 1.10.7's notes: a node's task history holds 10 entries


def _note_recent(ctx: Ctx, node_id: str, row: Row) -> None:
    """Remember a task that completed on the node, for the node's `recentTasks` (bounded in memory)."""
    recent = ctx.recent_tasks.setdefault(node_id, [])
    recent.append([row["job_key"], row["key"]])
    if len(recent) > 2 * RECENT_TASKS:
        del recent[:-RECENT_TASKS]


def _add_totals(ctx: Ctx, node_id: str, body: Body) -> None:
    totals = ctx.node_totals.pop(node_id, None)
    if totals:
        body["totalTasksRun"] = int(body.get("totalTasksRun", 0)) + totals[0]
        body["totalTasksSucceeded"] = int(body.get("totalTasksSucceeded", 0)) + totals[1]
    recent = ctx.recent_tasks.pop(node_id, None)
    if recent:
        body["_recentTasks"] = (list(body.get("_recentTasks") or []) + recent)[-RECENT_TASKS:]


def node_view(ctx: Ctx, node_id: str, body: Body) -> Body:
    """A node body with the task totals not yet written to the store."""
    totals = ctx.node_totals.get(node_id)
    if totals:
        body = dict(body)
        body["totalTasksRun"] = int(body.get("totalTasksRun", 0)) + totals[0]
        body["totalTasksSucceeded"] = int(body.get("totalTasksSucceeded", 0)) + totals[1]
    return body


def flush_node_totals(ctx: Ctx) -> None:
    """Write the per-node task totals counted in memory (kept off the hot path of every sync)."""
    if not ctx.node_totals:
        return
    with ctx.store.tx() as tx:
        for node_id in list(ctx.node_totals):
            row = tx.get(schema.nodes, id=node_id)
            if row is None:
                ctx.node_totals.pop(node_id, None)
                continue
            _add_totals(ctx, node_id, row["body"])
            tx.update(schema.nodes, {"body": row["body"]}, id=node_id)


def plan(ctx: Ctx, node_id: str, running: list[str]) -> Body:
    assigned = ctx.assignments.of_node(node_id)
    have = set(running)
    start = [w for w in assigned.values() if w["ref"] not in have]
    kill = []
    for ref in running:
        if ref.endswith(jobprep.RELEASE_SUFFIX):
            continue  # a job release task the agent runs (service.jobprep)
        base = ref.rpartition("#")[0]
        w = assigned.get(base)
        if w is None or w["ref"] != ref:
            kill.append(ref)
    return {"run": start, "kill": kill, "release": jobprep.releases_for(ctx, node_id, have)}


def _load_rows(tx: Tx, events: list[Body]) -> dict[str, Row]:
    """The task rows the events refer to, read in one query per job; stale attempts are left out."""
    wanted: dict[str, dict[str, tuple[str, int]]] = {}
    for ev in events:
        ref = str(ev.get("ref"))
        job_key, task_key, attempt = split_ref(ref)
        wanted.setdefault(job_key, {})[task_key] = (ref, attempt)
    out: dict[str, Row] = {}
    for job_key, keys in wanted.items():
        for row in tx.task_rows(job_key, list(keys)):
            for ev_ref, attempt in [keys[row["key"]]]:
                if int(row["attempt"]) == attempt:
                    out[ev_ref] = row
    return out


def _started(
    tx: Tx,
    row: Row,
    ev: Body,
    now_text: str,
    etag: str,
    counts: dict[str, dict[str, int]],
    writer: TaskWriter,
    assignments: Assignments,
) -> None:
    if row["state"] not in ("active", "preparing") or row["node_id"] is None:
        return
    ref = task_ref(row["job_key"], row["key"])
    work = assignments.of_node(row["node_id"]).get(ref)
    if work is not None and isinstance(work.get("nodeInfo"), dict):
        row["body"]["nodeInfo"] = work["nodeInfo"]
    ei = row["body"].setdefault("executionInfo", {})
    ei["startTime"] = ev.get("time") or now_text
    ei.pop("endTime", None)
    move(tx, row, "running", now_text, etag, counts=counts, writer=writer)
    assignments.started.add(ref)


def _completed(
    ctx: Ctx,
    tx: Tx,
    node_id: str,
    row: Row,
    ev: Body,
    now_text: str,
    etag: str,
    counts: dict[str, dict[str, int]],
    jobs: dict[str, Row],
    writer: TaskWriter,
) -> bool | None:
    """Record a finished attempt; returns None if stale, else whether it succeeded."""
    ref = str(ev.get("ref"))
    if row["state"] not in ("active", "preparing", "running") or row["node_id"] != node_id:
        return None
    body = row["body"]
    ei = body.setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
    if "_gang" not in body or not ei.get("startTime"):  # a gang's task started with its instances
        ei["startTime"] = ev.get("startTime") or ei.get("startTime") or now_text
    ei["endTime"] = ev.get("endTime") or now_text
    exit_code = ev.get("exitCode")
    if exit_code is not None:
        ei["exitCode"] = int(exit_code)
    else:
        ei.pop("exitCode", None)
    container = ev.get("containerInfo")
    if container:
        ei["containerInfo"] = {k: str(v)[:1024] for k, v in container.items() if v}
    else:
        ei.pop("containerInfo", None)
    failure = ev.get("failureInfo")
    if failure is not None and not failure.get("details"):
        failure = {k: v for k, v in failure.items() if k != "details"}
    ok = failure is None and exit_code == 0
    _account(body, ev, counts.setdefault(row["job_key"], {}))
    base = ref.rpartition("#")[0]
    work = ctx.assignments.of_node(node_id).get(base)
    if "nodeInfo" not in body and work is not None and isinstance(work.get("nodeInfo"), dict):
        # its 'started' event may still be in flight in the agent's other request
        body["nodeInfo"] = work["nodeInfo"]
    ctx.assignments.remove(base)
    job = jobs.get(row["job_key"])
    if job is None:
        job = tx.get(schema.jobs, key=row["job_key"])
        if job is None:
            return None
        jobs[row["job_key"]] = job
    if ok:
        ei["result"] = "success"
        ei.pop("failureInfo", None)
        move(tx, row, "completed", now_text, etag, counts=counts, writer=writer)
        completion.finished(ctx, tx, job, row, now_text, writer=writer)
        return True
    max_retry = int(body["constraints"].get("maxTaskRetryCount", 0))
    retries = int(ei.get("retryCount", 0))
    # a resource-file or output-file failure is final: the service does not retry it
    if not ev.get("noRetry") and (max_retry == -1 or retries < max_retry):
        ei["retryCount"] = retries + 1
        acc = counts.setdefault(row["job_key"], {})
        acc["st_retries"] = acc.get("st_retries", 0) + 1
        ei["lastRetryTime"] = now_text
        ei.pop("result", None)
        ei.pop("failureInfo", None)
        ei.pop("endTime", None)
        move(
            tx,
            row,
            "active",
            now_text,
            etag,
            node_id=None,
            attempt=int(row["attempt"]) + 1,
            counts=counts,
            writer=writer,
        )
        return False
    ei["result"] = "failure"
    ei["failureInfo"] = failure or {
        "category": "usererror",
        "code": "FailureExitCode",
        "message": "The task exited with an exit code representing a failure",
    }
    move(tx, row, "completed", now_text, etag, counts=counts, writer=writer)
    completion.finished(ctx, tx, job, row, now_text, writer=writer)
    return False


def _account(body: Body, ev: Body, job_deltas: dict[str, int]) -> None:
    """Add a finished attempt's resource usage to the task's statistics and its job's."""
    ei = body.get("executionInfo") or {}
    try:
        start = parse_time(str(ei.get("startTime"))).timestamp()
        end = parse_time(str(ei.get("endTime"))).timestamp()
        created = parse_time(str(body.get("creationTime"))).timestamp()
    except ValueError:
        return
    add, deltas = attempt_usage(ev.get("usage"), start, end, created)
    acc = body.setdefault("_stats", {})
    for k, v in add.items():
        acc[k] = acc.get(k, 0) + v
    for k, v in deltas.items():
        job_deltas[k] = job_deltas.get(k, 0) + v


def requeue_node_tasks(ctx: Ctx, tx: Tx, node_id: str, now_text: str, etag: str) -> int:
    """Put every attempt placed on a lost node back in the queue.

    Attempts that started count a requeue (requeueCount, not retryCount), including those whose start was
    never reported: the agent's start log in the node root shows them.
    """
    ctx.assignments.drop_node(node_id)
    rows = tx.select(
        schema.tasks, and_(schema.tasks.c.node_id == node_id, schema.tasks.c.state != "completed")
    )
    ran: set[str] | None = None
    for row in rows:
        if row["state"] == "active":
            if ran is None:
                ran = startlog.started(ctx.node_root(node_id))
            if f"{task_ref(row['job_key'], row['key'])}#{row['attempt']}" not in ran:
                # queued on the node and never started: it just goes back to the pool (decision 0008)
                tx.update(schema.tasks, {"node_id": None}, job_key=row["job_key"], key=row["key"])
                continue
            # started (the agent's start log says so) but the report was lost with the agent: a rerun
        requeue(tx, row, now_text, etag)
    subtasks.requeue_broken(ctx, tx, now_text, etag)  # gangs with an instance on the node rerun too
    if rows:
        ctx.hub.wake_scheduler()
    return len(rows)


def requeue(tx: Tx, row: Row, now_text: str, etag: str) -> None:
    """A started attempt goes back to the queue as a new attempt (requeueCount, not retryCount)."""
    ei = row["body"].setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
    ei["requeueCount"] = int(ei.get("requeueCount", 0)) + 1
    ei["lastRequeueTime"] = now_text
    ei.pop("startTime", None)
    row["body"].pop("nodeInfo", None)
    move(tx, row, "active", now_text, etag, node_id=None, attempt=int(row["attempt"]) + 1)


def rebuild_assignments(ctx: Ctx) -> None:
    """On start, the mailboxes are rebuilt from the placed tasks in the store."""
    with ctx.store.tx() as tx:
        rows = tx.select(
            schema.tasks, and_(schema.tasks.c.node_id.is_not(None), schema.tasks.c.state != "completed")
        )
        jobs: dict[str, Row] = {}
        pools: dict[str, Row] = {}
        for r in rows:
            if r["node_id"] is None:
                continue
            job = jobs.get(r["job_key"])
            if job is None:
                job = tx.get(schema.jobs, key=r["job_key"])
                if job is None:
                    continue
                jobs[r["job_key"]] = job
            pool = pools.get(job["pool_key"])
            if pool is None:
                pool = pools[job["pool_key"]] = tx.get(schema.pools, key=job["pool_key"]) or {"body": {}}
            if subtasks.is_multi(r["body"]):
                if r["state"] == "running":
                    subtasks.rebuild(ctx, job, r)
                continue
            slots = int(pool["body"].get("taskSlotsPerNode", 1))
            ref = task_ref(r["job_key"], r["key"])
            work = work_for(job, r, slots)
            work["nodeInfo"] = node_info(str(pool["body"].get("id", "")), r["node_id"], job["id"], r["id"])
            ctx.assignments.add(r["node_id"], ref, work, int(r["slots"]))
            if r["state"] == "running":
                ctx.assignments.started.add(ref)


def node_exists(ctx: Ctx, node_id: str) -> bool:
    with ctx.store.tx() as tx:
        return tx.exists(schema.nodes, id=node_id)
