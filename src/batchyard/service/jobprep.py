"""Job Preparation and Job Release tasks, server side.

Preparation runs on a node the first time a task of the job runs there, before that task: every task attempt
of a job with a preparation task carries its spec (`task_work`) and the agent runs it once (agent.jobprep),
reporting `jobprep` events (running, completed) and, per waiting task, `preparing` (the task waits: state
`preparing`) or `prepfailed` (preparation failed for good with waitForSuccess: the task goes back to `active`
and the node takes no more tasks of the job, `blocked_nodes`).

Release runs when the job ends (terminated, or deleted while active) on every node where preparation ran and
completed: the scheduler keeps the job `terminating`/`deleting` while `releasing` says so; the releases reach
the agents through `ctx.releases` (offered with every sync until done, unless the agent lists it running) and come back as
`jobrelease` events. A failed release still lets the job end; a node that is gone or unusable is skipped.

Per-node records live in the job body (internal `_prep`, keyed by node id: pool, node url, the preparation
and release execution info), which `GET /jobs/{id}/jobpreparationandreleasetaskstatus` lists.
"""

from __future__ import annotations

from typing import Any

from batchyard.models import errors, odata
from batchyard.models.decode import parse_duration
from batchyard.models.ids import key_of
from batchyard.models.jobtasks import INFINITE
from batchyard.service.common import Body
from batchyard.service.context import Ctx, task_ref
from batchyard.service.listing import ListQuery, decode_token, encode_token, parse_filter
from batchyard.service.taskstate import TaskWriter, move
from batchyard.store import schema
from batchyard.store.sql import Row, Tx

PREP = "_prep"
RELEASE_PHASE = "_releasePhase"  # absent -> "releasing" -> "released": release runs once per job
EVENTS = frozenset({"jobprep", "jobrelease", "preparing", "prepfailed"})
JOB_EVENTS = frozenset({"jobprep", "jobrelease"})  # their ref is a job key, not a task attempt
RELEASE_SUFFIX = "@release"  # `<job key>@release` in the agent's running list: a release it runs
# node states in which an agent still answers and can run a release
_REACHABLE = ("idle", "running", "waitingforstarttask", "starttaskfailed", "unknown", "creating", "starting")


def _seconds(wall: object) -> float | None:
    text = str(wall or INFINITE)
    if text.startswith("P10675199D"):
        return None
    return parse_duration(text).total_seconds()


def _env(settings: Any) -> list[list[str]]:
    return [[e["name"], e.get("value", "")] for e in settings or []]


def _dir(job_id: str, task_id: str) -> str:
    return f"workitems/{job_id}/job-1/{task_id}"


# --- what the agent is sent -------------------------------------------------------------------------------------


def task_work(job: Row) -> Body:
    """Extra fields of a task attempt's work when its job has a preparation task (else nothing)."""
    jb = job["body"]
    prep = jb.get("jobPreparationTask")
    if not prep:
        return {}
    cons = prep.get("constraints") or {}
    return {
        "jobPrepTaskId": prep["id"],
        "jobPreparation": {
            "ref": job["key"],
            "jobId": job["id"],
            "taskId": prep["id"],
            "commandLine": prep["commandLine"],
            "commonEnvironment": _env(jb.get("commonEnvironmentSettings")),
            "environment": _env(prep.get("environmentSettings")),
            "maxWallClockSeconds": _seconds(cons.get("maxWallClockTime")),
            "maxTaskRetryCount": int(cons.get("maxTaskRetryCount", 0)),
            "userIdentity": prep.get("userIdentity"),
            "resourceFiles": prep.get("resourceFiles") or [],
            "waitForSuccess": bool(prep.get("waitForSuccess", True)),
            "rerunOnNodeRebootAfterSuccess": bool(prep.get("rerunOnNodeRebootAfterSuccess", True)),
        },
    }


def _release_work(job: Row) -> Body:
    jb = job["body"]
    rel = jb["jobReleaseTask"]
    return {
        "ref": job["key"],
        "jobId": job["id"],
        "taskId": rel["id"],
        "jobPrepTaskId": jb["jobPreparationTask"]["id"],
        "commandLine": rel["commandLine"],
        "commonEnvironment": _env(jb.get("commonEnvironmentSettings")),
        "environment": _env(rel.get("environmentSettings")),
        "maxWallClockSeconds": _seconds(rel.get("maxWallClockTime", "PT15M")),
        "userIdentity": rel.get("userIdentity"),
        "resourceFiles": rel.get("resourceFiles") or [],
    }


def releases_for(ctx: Ctx, node_id: str, running: set[str]) -> list[Body]:
    """The releases a node must start: the due ones its agent does not report running (`<job key>@release`);
    an agent that restarted during a release gets it again, as the service reruns it after a reboot."""
    box = ctx.releases.get(node_id)
    if not box:
        return []
    return [w for k, w in box.items() if k + RELEASE_SUFFIX not in running]


# --- placement ---------------------------------------------------------------------------------------------------


def blocked_nodes(job: Row) -> set[str]:
    """Nodes where the job's preparation task failed for good with waitForSuccess: none of its tasks go there."""
    recs = job["body"].get(PREP)
    if not recs:
        return set()
    prep = job["body"].get("jobPreparationTask") or {}
    if not prep.get("waitForSuccess", True):
        return set()
    return {
        n
        for n, r in recs.items()
        if r.get("prep", {}).get("state") == "completed" and r["prep"].get("result") == "failure"
    }


# --- agent events ---------------------------------------------------------------------------------------------------


def on_event(
    ctx: Ctx,
    tx: Tx,
    node: Row,
    ev: Body,
    row: Row | None,
    jobs: dict[str, Row],
    now_text: str,
    etag: str,
    counts: dict[str, dict[str, int]],
    writer: TaskWriter,
) -> None:
    """Apply one of the agent's `EVENTS` inside the sync transaction (`jobs` is the sync's job cache)."""
    kind = ev.get("type")
    if kind == "preparing":
        if row is not None and row["state"] == "active" and row["node_id"] == node["id"]:
            move(tx, row, "preparing", now_text, etag, counts=counts, writer=writer)
            ctx.assignments.started.add(task_ref(row["job_key"], row["key"]))
        return
    if kind == "prepfailed":
        if row is not None and row["state"] in ("active", "preparing") and row["node_id"] == node["id"]:
            ctx.assignments.remove(task_ref(row["job_key"], row["key"]))
            # back to the queue for another node; a new attempt (this one never ran)
            attempt = int(row["attempt"]) + 1
            move(
                tx, row, "active", now_text, etag, node_id=None, attempt=attempt, counts=counts, writer=writer
            )
            ctx.hub.wake_scheduler()
        return
    job_key = str(ev.get("ref"))
    job = jobs.get(job_key)
    if job is None:
        job = tx.get(schema.jobs, key=job_key)
        if job is None:
            return
        jobs[job_key] = job
    if job["pool_key"] != node["pool_key"] or not job["body"].get("jobPreparationTask"):
        return  # not a job this node can have prepared
    body = job["body"]
    recs = body.setdefault(PREP, {})
    pool_id = str(body.get("executionInfo", {}).get("poolId", ""))
    rec = recs.setdefault(node["id"], {"poolId": pool_id, "nodeUrl": f"/pools/{pool_id}/nodes/{node['id']}"})
    if kind == "jobprep":
        task_id = str((body.get("jobPreparationTask") or {}).get("id", "jobpreparation"))
        rec["prep"] = _info(ev, pool_id, node["id"], job["id"], task_id, with_retries=True)
    else:
        if "release" not in rec:
            return  # not a release this job asked for
        task_id = str((body.get("jobReleaseTask") or {}).get("id", "jobrelease"))
        rec["release"] = _info(ev, pool_id, node["id"], job["id"], task_id, with_retries=False)
        box = ctx.releases.get(node["id"])
        if box is not None and ev.get("state") == "completed":
            box.pop(job_key, None)
    tx.update(schema.jobs, {"body": body}, key=job_key)  # status only: the job's ETag does not change
    if ev.get("state") == "completed":
        ctx.hub.wake_scheduler()


def _info(ev: Body, pool_id: str, node_id: str, job_id: str, task_id: str, with_retries: bool) -> Body:
    """An execution info in the service's key order."""
    root = _dir(job_id, task_id)
    out: Body = {"startTime": ev.get("startTime")}
    done = ev.get("state") == "completed"
    if done and ev.get("endTime"):
        out["endTime"] = ev["endTime"]
    out["state"] = "completed" if done else "running"
    out["taskRootDirectory"] = root
    out["taskRootDirectoryUrl"] = f"/pools/{pool_id}/nodes/{node_id}/files/{root}"
    if done and ev.get("exitCode") is not None:
        out["exitCode"] = int(ev["exitCode"])
    failure = ev.get("failureInfo")
    if done and failure:
        out["failureInfo"] = {k: v for k, v in failure.items() if v or k != "details"}
    if with_retries:
        out["retryCount"] = int(ev.get("retryCount") or 0)
        if ev.get("lastRetryTime"):
            out["lastRetryTime"] = ev["lastRetryTime"]
    if done:
        out["result"] = "failure" if failure or ev.get("exitCode") != 0 else "success"
    return out


# --- release when the job ends --------------------------------------------------------------------------------------


def _release_due(rec: Body, wait_for_success: bool) -> bool:
    prep = rec.get("prep") or {}
    if prep.get("state") != "completed":
        return False
    return prep.get("result") == "success" or not wait_for_success


def releasing(ctx: Ctx, tx: Tx, job: Row) -> bool:
    """Whether the ending job still waits for release tasks (starting them the first time it is asked)."""
    body = job["body"]
    if not body.get("jobReleaseTask") or body.get(RELEASE_PHASE) == "released":
        return False
    recs: dict[str, Body] = body.get(PREP) or {}
    dirty = False
    if body.get(RELEASE_PHASE) != "releasing":
        wait = bool((body.get("jobPreparationTask") or {}).get("waitForSuccess", True))
        for rec in recs.values():
            if _release_due(rec, wait):
                rec["release"] = {}  # due: filled in by the agent's jobrelease events
        body[RELEASE_PHASE] = "releasing"
        dirty = True
    due = [n for n, r in recs.items() if "release" in r and r["release"].get("state") != "completed"]
    if due:
        nodes = tx.select(schema.nodes, schema.nodes.c.id.in_(due), columns=["id", "state"])
        reachable = {n["id"] for n in nodes if n["state"] in _REACHABLE}
        for n in due:
            if n not in reachable:
                del recs[n]["release"]  # the node is gone: nothing runs there any more
                ctx.releases.get(n, {}).pop(job["key"], None)
                dirty = True
        due = [n for n in due if n in reachable]
    if not due:
        body[RELEASE_PHASE] = "released"
        dirty = True
    if dirty:
        tx.update(schema.jobs, {"body": body}, key=job["key"])
    work = _release_work(job) if due else None
    for n in due:
        if work is not None:  # offered until it completes (releases_for skips the ones running)
            box = ctx.releases.setdefault(n, {})
            if job["key"] not in box:
                box[job["key"]] = work
                ctx.hub.wake_node(n)
    return bool(due)


def node_reimaged(tx: Tx, node: Row) -> None:
    """For node reimage: the node may run the jobs again whose preparation failed there (it reruns it).

    Inside the reimage transaction; the agent's success markers go with the wiped node root."""
    for job in tx.select(schema.jobs, schema.jobs.c.pool_key == node["pool_key"]):
        rec = (job["body"].get(PREP) or {}).get(node["id"])
        if rec and (rec.get("prep") or {}).get("result") == "failure":
            del rec["prep"]
            tx.update(schema.jobs, {"body": job["body"]}, key=job["key"])


def forget_job(ctx: Ctx, job_key: str) -> None:
    for box in ctx.releases.values():
        box.pop(job_key, None)


# --- GET /jobs/{id}/jobpreparationandreleasetaskstatus ------------------------------------------------------------


def list_status(ctx: Ctx, job_id: str, q: ListQuery) -> tuple[list[Body], str | None]:
    """One page of the per-node preparation/release status, in node id order."""
    expr = parse_filter(q, odata.PREP_RELEASE_STATUS)
    with ctx.store.tx() as tx:
        job = tx.get(schema.jobs, key=key_of(job_id))
        if job is None:
            raise errors.job_not_found()
        if not job["body"].get("jobPreparationTask"):
            raise errors.job_preparation_task_not_specified()
        recs: dict[str, Body] = dict(job["body"].get(PREP) or {})
    after = decode_token(q.skiptoken) if q.skiptoken else None
    limit = max(1, min(q.max_results, 1000))
    out: list[Body] = []
    for node_id in sorted(recs):
        if after is not None and node_id <= after:
            continue
        rec = recs[node_id]
        if "prep" not in rec:
            continue
        item: Body = {"poolId": rec["poolId"], "nodeId": node_id, "nodeUrl": rec["nodeUrl"]}
        item["jobPreparationTaskExecutionInfo"] = rec["prep"]
        if rec.get("release"):
            item["jobReleaseTaskExecutionInfo"] = rec["release"]
        if expr is not None and not odata.evaluate(expr, item):
            continue
        if len(out) == limit:
            return out, encode_token(out[-1]["nodeId"])
        out.append(item)
    return out, None
