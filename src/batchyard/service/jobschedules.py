"""Job schedule operations: create, read, list, update, disable, enable, terminate, delete.

A schedule row holds the resource body, the pending run's due time (`next_run`) and the number of jobs created
(`job_seq`); running the schedule (and the timer pass) is service.jobschedule_runs.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import func, select

from batchyard.models import errors, odata
from batchyard.models.clock import format_time, parse_time
from batchyard.models.ids import check_id, key_of
from batchyard.models.resources import new_job
from batchyard.models.schedule import due_after_update, parse_config
from batchyard.models.statistics import job_stats
from batchyard.service import autopools, completion, jobs, jobtasks
from batchyard.service import jobschedule_runs as runs
from batchyard.service.common import Body, item
from batchyard.service.context import NO_CONDITIONS, Conditions, Ctx, Written
from batchyard.service.listing import ListQuery, page_rows
from batchyard.store import schema
from batchyard.store.sql import DuplicateKey, Row, Tx

T = runs.T
S = runs.S


def _columns() -> dict[str, Any]:
    from batchyard.store.odata_sql import ColumnMap

    return {
        "id": ColumnMap(T.c.key, casefold=True),
        "state": ColumnMap(T.c.state, casefold=True),
        "creationTime": ColumnMap(T.c.creation_time),
        "lastModified": ColumnMap(T.c.last_modified),
    }


# --- validation ----------------------------------------------------------------------------------------------


def job_specification(ctx: Ctx, spec: object) -> Body:
    """Check a jobSpecification with the job rules and return it with the defaults the service materialises."""
    if not isinstance(spec, dict):
        raise errors.missing_required_property("jobSpecification")
    info = spec.get("poolInfo")
    if not isinstance(info, dict):
        raise errors.missing_required_property("jobSpecification.poolInfo")
    auto = info.get("autoPoolSpecification") is not None
    if not auto and not info.get("poolId"):
        raise errors.missing_required_property("jobSpecification.poolInfo.poolId")
    try:
        jobs.check_spec(spec, ctx, plain_job=False)
    except errors.BatchError as e:
        raise _prefixed(e) from None
    checked = new_job(spec, "", "")
    out: Body = {
        "priority": checked["priority"],
        "maxParallelTasks": checked["maxParallelTasks"],
        "allowTaskPreemption": checked["allowTaskPreemption"],
        "usesTaskDependencies": checked["usesTaskDependencies"],
        "onAllTasksComplete": checked["onAllTasksComplete"],
        "onTaskFailure": checked["onTaskFailure"],
        # the service's key order (recorded)
        "constraints": {
            "maxWallClockTime": checked["constraints"]["maxWallClockTime"],
            "maxTaskRetryCount": checked["constraints"]["maxTaskRetryCount"],
        },
    }
    jobtasks.check_job(checked)  # the job's own tasks, with the defaults the service materialises
    for k in ("jobManagerTask", "jobPreparationTask", "jobReleaseTask"):
        if k in checked:
            out[k] = checked[k]
    for k, v in spec.items():
        out.setdefault(k, copy.deepcopy(v))
    return out


def _prefixed(e: errors.BatchError) -> errors.BatchError:
    """A job validation error names the property inside jobSpecification."""
    values = [
        (k, f"jobSpecification.{v}" if k == "PropertyName" and not v.startswith("jobSpecification") else v)
        for k, v in e.values
    ]
    return errors.BatchError(e.status, e.code, e.message, values)


def _schedule_for_body(schedule: object) -> Body:
    if schedule is None:
        return {}
    if not isinstance(schedule, dict):
        raise errors.invalid_property_value("schedule", schedule)
    parse_config(schedule)
    return {
        k: schedule[k]
        for k in ("doNotRunUntil", "doNotRunAfter", "startWindow", "recurrenceInterval")
        if k in schedule
    }


# --- reads -----------------------------------------------------------------------------------------------


def load(tx: Tx, schedule_id: str, for_update: bool = True) -> Row:
    get = tx.get_for_update if for_update else tx.get
    row = get(T, key=key_of(schedule_id))
    if row is None:
        raise errors.job_schedule_not_found()
    return row


def _stats(tx: Tx, row: Row, now_text: str) -> Body:
    """Statistics summed over the task counts of the schedule's jobs (kept as tasks finish)."""
    tc = schema.task_counts
    cols = ("succeeded", "failed", *(c.name for c in tc.c if c.name.startswith("st_")))
    prefix = jobs.schedule_job_prefix(row["key"])
    stmt = select(*(func.coalesce(func.sum(tc.c[c]), 0).label(c) for c in cols)).where(
        tc.c.job_key.startswith(prefix, autoescape=True)
    )
    sums = {k: int(v) for k, v in tx.conn.execute(stmt).one()._mapping.items()}
    return job_stats(f"/jobschedules/{row['id']}", row["creation_time"], now_text, sums)


def _shaper(tx: Tx, expand: list[str] | None, now_text: str) -> Any:
    wanted = [e.lower() for e in expand or []]
    for e in wanted:
        if e != "stats":
            raise errors.invalid_query_parameter(
                "$expand", ",".join(expand or []), "Only stats can be expanded"
            )

    def shape(row: Row) -> Body:
        body = item(row)
        spec = body.get("jobSpecification")
        if isinstance(spec, dict) and "poolInfo" in spec:
            body["jobSpecification"] = dict(spec, poolInfo=autopools.view(spec["poolInfo"]))
        if not body.get("schedule"):
            body.pop("schedule", None)  # an empty schedule is omitted (openapi example JobScheduleGet)
        if wanted:
            body["stats"] = _stats(tx, row, now_text)
        return body

    return shape


def get_schedule(
    ctx: Ctx, schedule_id: str, cond: Conditions = NO_CONDITIONS, expand: list[str] | None = None
) -> Body:
    _, now_text, _ = ctx.stamp()
    with ctx.store.tx() as tx:
        row = load(tx, schedule_id, for_update=False)
        cond.check(row, write=False)
        body: Body = _shaper(tx, expand, now_text)(row)
        return body


def list_schedules(ctx: Ctx, q: ListQuery) -> tuple[list[Body], str | None]:
    _, now_text, _ = ctx.stamp()
    with ctx.store.tx() as tx:
        shape = _shaper(tx, q.expand, now_text)
        return page_rows(tx, T, "key", None, q, odata.JOB_SCHEDULES, _columns(), shape)


def list_jobs(ctx: Ctx, schedule_id: str, q: ListQuery) -> tuple[list[Body], str | None]:
    with ctx.store.tx() as tx:
        row = load(tx, schedule_id, for_update=False)
        return jobs.list_schedule_jobs(tx, row["key"], q)


# --- writes ------------------------------------------------------------------------------------------------


def create_schedule(ctx: Ctx, spec: Body) -> Written:
    schedule_id = check_id(spec.get("id"))
    if "schedule" not in spec:
        raise errors.missing_required_property("schedule")
    schedule = _schedule_for_body(spec.get("schedule"))
    job_spec = job_specification(ctx, spec.get("jobSpecification"))
    now, now_text, etag = ctx.stamp()
    body: Body = {"id": schedule_id}
    if "displayName" in spec:
        body["displayName"] = spec["displayName"]
    body.update(
        {
            "eTag": etag,
            "lastModified": now_text,
            "creationTime": now_text,
            "state": S.ACTIVE.value,
            "stateTransitionTime": now_text,
            "schedule": schedule,
            "jobSpecification": job_spec,
            "executionInfo": {},
        }
    )
    if spec.get("metadata") is not None:
        body["metadata"] = spec["metadata"]
    cfg = parse_config(schedule)
    due = cfg.do_not_run_until or now
    with ctx.store.tx() as tx:
        if tx.exists(schema.jobs, key=key_of(schedule_id)):
            raise errors.job_with_same_id_exists()
        row: Row = {
            "key": key_of(schedule_id),
            "id": schedule_id,
            "state": S.ACTIVE.value,
            "next_run": format_time(due),
            "job_seq": 0,
            "etag": etag,
            "last_modified": now_text,
            "creation_time": now_text,
            "body": body,
        }
        runs.set_next(row, due)
        try:
            tx.insert(T, row)
        except DuplicateKey:
            raise errors.job_schedule_exists() from None
        runs.advance(ctx, tx, row, now)  # with no doNotRunUntil the first job is created right away
    ctx.hub.wake_scheduler()
    return Written(body["eTag"], body["lastModified"], f"/jobschedules/{schedule_id}")


def _require_open(row: Row) -> None:
    st = row["state"]
    if st == S.COMPLETED:
        raise errors.job_schedule_completed()
    if st == S.DELETING:
        raise errors.job_schedule_being_deleted()
    if st == S.TERMINATING:
        raise errors.job_schedule_being_terminated()


def update_schedule(ctx: Ctx, schedule_id: str, spec: Body, cond: Conditions, replace: bool) -> Written:
    """PATCH replaces the given properties, PUT all of them (an omitted schedule or metadata is removed);
    the job already running keeps its specification."""
    schedule = _schedule_for_body(spec["schedule"]) if "schedule" in spec else None
    job_spec = job_specification(ctx, spec["jobSpecification"]) if "jobSpecification" in spec else None
    if replace and job_spec is None:
        raise errors.missing_required_property("jobSpecification")
    now = ctx.clock()
    with ctx.store.tx() as tx:
        row = load(tx, schedule_id)
        cond.check(row, write=True)
        _require_open(row)
        body = row["body"]
        if schedule is not None or replace:
            body["schedule"] = schedule or {}
            last = body.get("_lastDue")
            due = due_after_update(runs.config(body), parse_time(last) if last else None, now)
            runs.set_next(row, due)
        if job_spec is not None:
            body["jobSpecification"] = job_spec
        if "metadata" in spec:
            body["metadata"] = spec["metadata"]
        elif replace:
            body.pop("metadata", None)
        w = runs.save(ctx, tx, row)
        if row["state"] == S.ACTIVE:
            runs.advance(ctx, tx, row, now)
    ctx.hub.wake_scheduler()
    return w


def disable_schedule(ctx: Ctx, schedule_id: str, cond: Conditions) -> Written:
    with ctx.store.tx() as tx:
        row = load(tx, schedule_id)
        cond.check(row, write=True)
        _require_open(row)
        if row["state"] == S.DISABLED:
            return Written(row["etag"], row["last_modified"], f"/jobschedules/{row['id']}/disable")
        runs.move(ctx, row, S.DISABLED)
        w = runs.save(ctx, tx, row)
    return Written(w.etag, w.last_modified, w.path + "/disable")


def enable_schedule(ctx: Ctx, schedule_id: str, cond: Conditions) -> Written:
    with ctx.store.tx() as tx:
        row = load(tx, schedule_id)
        cond.check(row, write=True)
        _require_open(row)
        if row["state"] == S.DISABLED:
            runs.move(ctx, row, S.ACTIVE)
            w = runs.save(ctx, tx, row)
            runs.advance(ctx, tx, row, ctx.clock())
        else:
            w = Written(row["etag"], row["last_modified"], f"/jobschedules/{row['id']}")
    ctx.hub.wake_scheduler()
    return Written(w.etag, w.last_modified, f"/jobschedules/{row['id']}/enable")


def terminate_schedule(ctx: Ctx, schedule_id: str, cond: Conditions) -> Written:
    """No more jobs; the active job is terminated (reason TerminateJobSchedule); the timer pass completes the
    schedule once that job has finished."""
    with ctx.store.tx() as tx:
        row = load(tx, schedule_id)
        cond.check(row, write=True)
        _require_open(row)
        runs.move(ctx, row, S.TERMINATING)
        runs.set_next(row, None)
        job = runs.recent_job(tx, row)
        if job is not None:
            completion.begin_terminate(ctx, tx, job, "TerminateJobSchedule")
        w = runs.save(ctx, tx, row)
        runs.advance(ctx, tx, row, ctx.clock())
    ctx.hub.wake_scheduler()
    return Written(w.etag, w.last_modified, w.path + "/terminate")


def delete_schedule(ctx: Ctx, schedule_id: str, cond: Conditions) -> None:
    """The schedule and all its jobs and tasks go; the scheduler deletes the jobs, the timer pass the row."""
    with ctx.store.tx() as tx:
        row = load(tx, schedule_id)
        cond.check(row, write=True)
        if row["state"] == S.DELETING:
            return
        runs.move(ctx, row, S.DELETING)
        runs.set_next(row, None)
        runs.save(ctx, tx, row)
        for job in runs.jobs_of(tx, row):
            jobs.begin_delete(ctx, tx, job)
    ctx.hub.wake_scheduler()
