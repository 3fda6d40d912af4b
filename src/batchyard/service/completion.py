"""What happens when a task reaches its final state: dependents released or blocked, the job's exit-option
action, onAllTasksComplete, and the retention deadline. Runs inside the caller's transaction.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, select, update

from batchyard.models import dependencies as deps_model
from batchyard.models.clock import format_time, parse_time
from batchyard.models.decode import parse_duration
from batchyard.models.exitconditions import outcome_of, resolve
from batchyard.models.states import JobState, check_job_transition
from batchyard.service.common import Body, set_state, stamp_body
from batchyard.service.context import Ctx
from batchyard.service.taskstate import TaskWriter
from batchyard.store import schema
from batchyard.store.sql import Row, Tx

TASKS = schema.tasks


# --- registering a dependent -------------------------------------------------------------------------------


def register(tx: Tx, job_key: str, rows: list[Row], parsed: dict[str, deps_model.Dependencies]) -> None:
    """Record each new task's parent references and set how many are still unmet."""
    dep_rows: list[dict[str, object]] = []
    range_rows: list[dict[str, object]] = []
    for row in rows:
        d = parsed.get(row["key"])
        if d is None or d.empty:
            continue
        dep_rows += [
            {"job_key": job_key, "parent_key": k, "child_key": row["key"]} for k in sorted(d.task_keys)
        ]
        range_rows += [
            {"job_key": job_key, "child_key": row["key"], "start": s, "end": e} for s, e in d.ranges
        ]
        row["deps_remaining"] = _unmet(tx, job_key, d)
    tx.insert_many(schema.task_deps, dep_rows)
    tx.insert_many(schema.dep_ranges, range_rows)


def _unmet(tx: Tx, job_key: str, d: deps_model.Dependencies) -> int:
    n = 0
    if d.task_keys:
        satisfied = tx.count(
            TASKS,
            and_(
                TASKS.c.job_key == job_key,
                TASKS.c.key.in_(sorted(d.task_keys)),
                TASKS.c.dep_outcome == "satisfy",
            ),
        )
        n += len(d.task_keys) - satisfied
    ds = schema.dep_satisfied
    for s, e in d.ranges:
        done = tx.count(ds, and_(ds.c.job_key == job_key, ds.c.num >= s, ds.c.num <= e))
        n += (e - s + 1) - done
    return n


def _release(tx: Tx, job_key: str, parent: Row) -> int:
    """A parent satisfied its dependents: decrement their unmet counts; returns how many became runnable."""
    released = 0
    td = schema.task_deps
    children = select(td.c.child_key).where(and_(td.c.job_key == job_key, td.c.parent_key == parent["key"]))
    res = tx.conn.execute(
        update(TASKS)
        .where(and_(TASKS.c.job_key == job_key, TASKS.c.key.in_(children), TASKS.c.deps_remaining > 0))
        .values(deps_remaining=TASKS.c.deps_remaining - 1)
    )
    released += int(res.rowcount)
    num = parent.get("num_id")
    if num is not None:
        ds = schema.dep_satisfied
        if not tx.exists(ds, job_key=job_key, num=num):
            tx.insert(ds, {"job_key": job_key, "num": num})
            dr = schema.dep_ranges
            kids = select(dr.c.child_key).where(
                and_(dr.c.job_key == job_key, dr.c.start <= num, dr.c.end >= num)
            )
            res = tx.conn.execute(
                update(TASKS)
                .where(and_(TASKS.c.job_key == job_key, TASKS.c.key.in_(kids), TASKS.c.deps_remaining > 0))
                .values(deps_remaining=TASKS.c.deps_remaining - 1)
            )
            released += int(res.rowcount)
    return released


def forget_job(tx: Tx, job_key: str) -> None:
    for t in (schema.task_deps, schema.dep_ranges, schema.dep_satisfied):
        tx.delete_where(t, t.c.job_key == job_key)


# --- finishing a task ------------------------------------------------------------------------------------------


def finished(
    ctx: Ctx,
    tx: Tx,
    job: Row,
    row: Row,
    now_text: str,
    *,
    apply_job_action: bool = True,
    writer: TaskWriter | None = None,
) -> None:
    """Called once a task is completed for good (no retry left)."""
    body = row["body"]
    ei = body.get("executionInfo") or {}
    failure = ei.get("failureInfo") or {}
    opts = resolve(body.get("exitConditions"), ei.get("exitCode"), outcome_of(failure.get("code")))
    values: dict[str, object] = {"dep_outcome": opts.dependency_action}
    retention = body.get("constraints", {}).get("retentionTime")
    if retention:
        try:
            values["cleanup_at"] = format_time(
                parse_time(now_text) + min(parse_duration(retention), timedelta(days=36500))
            )
        except (ValueError, OverflowError):
            values["cleanup_at"] = None
    previous = row.get("dep_outcome")
    row.update(values)
    if writer is not None:
        writer.add(row)
    else:
        tx.update(TASKS, values, job_key=row["job_key"], key=row["key"])
    if (
        opts.dependency_action == "satisfy"
        and previous != "satisfy"
        and job["body"].get("usesTaskDependencies")
    ):
        if _release(tx, row["job_key"], row):
            ctx.hub.wake_scheduler()
    if body.get("_jobManager") and body["_jobManager"].get("killJobOnCompletion", True):
        begin_terminate(ctx, tx, job, "JMComplete")  # service.jobtasks: the Job Manager ends its job
    if apply_job_action and job["body"].get("onTaskFailure") == "performexitoptionsjobaction":
        if opts.job_action == "terminate":
            begin_terminate(ctx, tx, job, "TaskFailed")
        elif opts.job_action == "disable":
            begin_disable(ctx, tx, job, "requeue")


def begin_terminate(ctx: Ctx, tx: Tx, job: Row, reason: str) -> bool:
    """Move an active/disabled job to terminating; the scheduler ends its tasks and completes it."""
    if job["state"] not in ("active", "disabling", "disabled", "enabling"):
        return False
    body = job["body"]
    body.setdefault("executionInfo", {})["terminateReason"] = reason
    _job_state(ctx, tx, job, JobState.TERMINATING)
    return True


def begin_disable(ctx: Ctx, tx: Tx, job: Row, option: str) -> None:
    if job["state"] != "active":
        return
    job["body"]["_disableTasks"] = option
    _job_state(ctx, tx, job, JobState.DISABLING)


def _job_state(ctx: Ctx, tx: Tx, job: Row, new: JobState) -> None:
    body: Body = job["body"]
    check_job_transition(JobState(body["state"]), new)
    _, now_text, etag = ctx.stamp()
    set_state(body, new.value, now_text)
    stamp_body(body, etag, now_text)
    tx.update(
        schema.jobs,
        {"state": new.value, "body": body, "etag": etag, "last_modified": now_text},
        key=job["key"],
    )
    job["state"] = new.value
    ctx.hub.wake_scheduler()


def check_all_complete(ctx: Ctx, tx: Tx, job: Row) -> bool:
    """onAllTasksComplete=terminatejob: a job whose tasks are all completed (or that has none) terminates."""
    if job["state"] != "active" or job["body"].get("onAllTasksComplete") != "terminatejob":
        return False
    c = tx.get(schema.task_counts, job_key=job["key"])
    if c is not None and (int(c["active"]) > 0 or int(c["running"]) > 0):
        return False
    return begin_terminate(ctx, tx, job, "AllTasksComplete")
