"""Job schedule operations and the timer pass that runs them.

A schedule row holds the resource body, the pending run's due time (`next_run`) and the number of jobs created
(`job_seq`). Creating a run's job and advancing the schedule happen in one transaction, so a server killed at any
moment neither loses nor repeats a run. The decision itself is `models.schedule.decide` (pure).
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select

from batchyard.models import errors, odata
from batchyard.models.clock import format_time, parse_time
from batchyard.models.ids import check_id, key_of
from batchyard.models.resources import new_job
from batchyard.models.schedule import Decision, ScheduleConfig, decide, due_after_update, parse_config
from batchyard.models.states import JobScheduleState, check_job_schedule_transition
from batchyard.models.statistics import job_stats
from batchyard.service import completion, jobs
from batchyard.service.common import Body, item, set_state, stamp_body
from batchyard.service.context import NO_CONDITIONS, Conditions, Ctx, Written
from batchyard.service.listing import ListQuery, page_rows
from batchyard.store import schema
from batchyard.store.sql import DuplicateKey, Row, Tx

log = logging.getLogger("batchyard.jobschedules")

T = schema.job_schedules
S = JobScheduleState
#: jobs in these states no longer hold a schedule's next run back
_JOB_DONE = ("completed", "deleting")
#: the jobSpecification properties batchyard does not run yet (refused like on a job)
_SPEC_NOT_YET = ("jobManagerTask", "jobPreparationTask", "jobReleaseTask")


def _columns() -> dict[str, Any]:
    from batchyard.store.odata_sql import ColumnMap

    return {
        "id": ColumnMap(T.c.key, casefold=True),
        "state": ColumnMap(T.c.state, casefold=True),
        "creationTime": ColumnMap(T.c.creation_time),
        "lastModified": ColumnMap(T.c.last_modified),
    }


# --- validation ----------------------------------------------------------------------------------------------


def job_specification(spec: object) -> Body:
    """Check a jobSpecification with the job rules and return it with the defaults the service materialises."""
    if not isinstance(spec, dict):
        raise errors.missing_required_property("jobSpecification")
    for k in _SPEC_NOT_YET:
        if spec.get(k):
            raise errors.not_implemented(f"jobSpecification.{k}")
    info = spec.get("poolInfo")
    if not isinstance(info, dict):
        raise errors.missing_required_property("jobSpecification.poolInfo")
    if info.get("autoPoolSpecification"):
        raise errors.not_implemented("jobSpecification.poolInfo.autoPoolSpecification (auto pools)")
    if not info.get("poolId"):
        raise errors.missing_required_property("jobSpecification.poolInfo.poolId")
    try:
        jobs.check_spec(spec)
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


def _config(body: Body) -> ScheduleConfig:
    return parse_config(body.get("schedule"))


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
    job_spec = job_specification(spec.get("jobSpecification"))
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
        _set_next(row, due)
        try:
            tx.insert(T, row)
        except DuplicateKey:
            raise errors.job_schedule_exists() from None
        advance(ctx, tx, row, now)  # with no doNotRunUntil the first job is created right away
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


def _save(ctx: Ctx, tx: Tx, row: Row, stamp: bool = True) -> Written:
    """Write the row back; `stamp` = a schedule-level change (new ETag and lastModified). Creating a job does
    not change them (rule 9 of the reference)."""
    body = row["body"]
    if stamp:
        _, now_text, etag = ctx.stamp()
        stamp_body(body, etag, now_text)
    tx.update(
        T,
        {
            "body": body,
            "state": body["state"],
            "etag": body["eTag"],
            "last_modified": body["lastModified"],
            "next_run": row["next_run"],
            "job_seq": row["job_seq"],
        },
        key=row["key"],
    )
    return Written(body["eTag"], body["lastModified"], f"/jobschedules/{row['id']}")


def _set_next(row: Row, due: datetime | None) -> None:
    ei = row["body"].setdefault("executionInfo", {})
    row["next_run"] = None if due is None else format_time(due)
    if due is None:
        ei.pop("nextRunTime", None)
    else:
        ei["nextRunTime"] = row["next_run"]
    # the service's key order: nextRunTime, recentJob, endTime
    row["body"]["executionInfo"] = {k: ei[k] for k in ("nextRunTime", "recentJob", "endTime") if k in ei}


def _move(ctx: Ctx, row: Row, new: S) -> None:
    body = row["body"]
    check_job_schedule_transition(S(body["state"]), new)
    _, now_text, _ = ctx.stamp()
    set_state(body, new.value, now_text)
    row["state"] = new.value
    if new == S.COMPLETED:
        _set_next(row, None)
        body["executionInfo"]["endTime"] = now_text


def update_schedule(ctx: Ctx, schedule_id: str, spec: Body, cond: Conditions, replace: bool) -> Written:
    """PATCH replaces the given properties, PUT all of them (an omitted schedule or metadata is removed);
    the job already running keeps its specification."""
    schedule = _schedule_for_body(spec["schedule"]) if "schedule" in spec else None
    job_spec = job_specification(spec["jobSpecification"]) if "jobSpecification" in spec else None
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
            due = due_after_update(_config(body), parse_time(last) if last else None, now)
            _set_next(row, due)
        if job_spec is not None:
            body["jobSpecification"] = job_spec
        if "metadata" in spec:
            body["metadata"] = spec["metadata"]
        elif replace:
            body.pop("metadata", None)
        w = _save(ctx, tx, row)
        if row["state"] == S.ACTIVE:
            advance(ctx, tx, row, now)
    ctx.hub.wake_scheduler()
    return w


def disable_schedule(ctx: Ctx, schedule_id: str, cond: Conditions) -> Written:
    with ctx.store.tx() as tx:
        row = load(tx, schedule_id)
        cond.check(row, write=True)
        _require_open(row)
        if row["state"] == S.DISABLED:
            return Written(row["etag"], row["last_modified"], f"/jobschedules/{row['id']}/disable")
        _move(ctx, row, S.DISABLED)
        w = _save(ctx, tx, row)
    return Written(w.etag, w.last_modified, w.path + "/disable")


def enable_schedule(ctx: Ctx, schedule_id: str, cond: Conditions) -> Written:
    with ctx.store.tx() as tx:
        row = load(tx, schedule_id)
        cond.check(row, write=True)
        _require_open(row)
        if row["state"] == S.DISABLED:
            _move(ctx, row, S.ACTIVE)
            w = _save(ctx, tx, row)
            advance(ctx, tx, row, ctx.clock())
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
        _move(ctx, row, S.TERMINATING)
        _set_next(row, None)
        job = _recent_job(tx, row)
        if job is not None:
            completion.begin_terminate(ctx, tx, job, "TerminateJobSchedule")
        w = _save(ctx, tx, row)
        advance(ctx, tx, row, ctx.clock())
    ctx.hub.wake_scheduler()
    return Written(w.etag, w.last_modified, w.path + "/terminate")


def delete_schedule(ctx: Ctx, schedule_id: str, cond: Conditions) -> None:
    """The schedule and all its jobs and tasks go; the scheduler deletes the jobs, the timer pass the row."""
    with ctx.store.tx() as tx:
        row = load(tx, schedule_id)
        cond.check(row, write=True)
        if row["state"] == S.DELETING:
            return
        _move(ctx, row, S.DELETING)
        _set_next(row, None)
        _save(ctx, tx, row)
        for job in _jobs_of(tx, row):
            jobs.begin_delete(ctx, tx, job)
    ctx.hub.wake_scheduler()


# --- running the schedule ------------------------------------------------------------------------------------


def _jobs_of(tx: Tx, row: Row) -> list[Row]:
    prefix = jobs.schedule_job_prefix(row["key"])
    return tx.select(schema.jobs, schema.jobs.c.key.startswith(prefix, autoescape=True))


def _recent_job(tx: Tx, row: Row) -> Row | None:
    """The schedule's most recent job while it is not finished (None once completed, deleting or gone)."""
    recent = row["body"].get("executionInfo", {}).get("recentJob")
    if not recent:
        return None
    job = tx.get_for_update(schema.jobs, key=key_of(recent["id"]))
    if job is None or job["state"] in _JOB_DONE:
        return None
    return job


def _decision(row: Row, job_active: bool, now: datetime) -> Decision | None:
    """What the schedule does now; None when nothing changes."""
    st = row["state"]
    body = row["body"]
    if st == S.ACTIVE:
        due = parse_time(row["next_run"]) if row["next_run"] else None
        d = decide(_config(body), due, job_active, now)
        if d.create_job or d.complete or d.next_due != due:
            return d
        return None
    if st == S.DISABLED:
        # a disabled schedule creates no job, but it still ends at doNotRunAfter
        end = _config(body).do_not_run_after
        if end is not None and now > end and not job_active:
            return Decision(False, None, True)
        return None
    if st == S.TERMINATING and not job_active:
        return Decision(False, None, True)
    return None


def advance(ctx: Ctx, tx: Tx, row: Row, now: datetime) -> bool:
    """Apply the schedule's due-run decision inside the caller's transaction; True when anything changed."""
    if row["state"] == S.DELETING:
        if _jobs_of(tx, row):
            return False
        tx.delete(T, key=row["key"])
        return True
    d = _decision(row, _recent_job(tx, row) is not None, now)
    if d is None:
        return False
    body = row["body"]
    if d.create_job:
        n = int(row["job_seq"]) + 1
        job_id = f"{row['id']}:job-{n}"
        jobs.insert_job(ctx, tx, job_id, body["jobSpecification"])
        row["job_seq"] = n
        body.setdefault("executionInfo", {})["recentJob"] = {"url": f"/jobs/{job_id}", "id": job_id}
        body["_lastDue"] = format_time(d.run_due or now)
    if d.skipped:
        log.info("job schedule %s: %d run(s) skipped (start window passed)", row["id"], d.skipped)
    _set_next(row, d.next_due)
    if d.complete:
        _move(ctx, row, S.COMPLETED)
        _save(ctx, tx, row)
    else:
        _save(ctx, tx, row, stamp=False)
    return True


def _due_rows(ctx: Ctx, now: datetime) -> list[str]:
    """Keys of the schedules whose decision would change something now (read-only first look)."""
    out = []
    with ctx.store.tx() as tx:
        # an active schedule whose next run is ahead has nothing to do: its run is never after doNotRunAfter
        # (decide drops such a run), so neither creating nor completing can happen before next_run
        waiting = and_(
            T.c.state == S.ACTIVE.value, or_(T.c.next_run.is_(None), T.c.next_run <= format_time(now))
        )
        others = T.c.state.in_([S.DISABLED.value, S.TERMINATING.value, S.DELETING.value])
        rows = tx.select(T, or_(waiting, others))
        for row in rows:
            if row["state"] == S.DELETING:
                if not _jobs_of(tx, row):
                    out.append(row["key"])
                continue
            recent = row["body"].get("executionInfo", {}).get("recentJob")
            job = tx.get(schema.jobs, key=key_of(recent["id"])) if recent else None
            active = job is not None and job["state"] not in _JOB_DONE
            if _decision(row, active, now) is not None:
                out.append(row["key"])
    return out


def tick(ctx: Ctx) -> int:
    """The timer pass: each schedule with something to do advances in its own transaction (job creation and
    the schedule's counter and nextRunTime commit together). Returns how many schedules changed."""
    now = ctx.clock()
    changed = 0
    for key in _due_rows(ctx, now):
        try:
            with ctx.store.tx() as tx:
                row = tx.get_for_update(T, key=key)
                if row is not None and advance(ctx, tx, row, now):
                    changed += 1
        except errors.BatchError as e:  # e.g. the pool's quota; the run is retried on the next pass
            log.warning("job schedule %s: could not create its job: %s", key, e)
    if changed:
        ctx.hub.wake_scheduler()
    return changed
