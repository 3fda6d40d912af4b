"""Running job schedules: the due-run decision applied to a schedule row, and the timer pass.

Creating a run's job and advancing the schedule (its counter `job_seq`, `next_run`, recentJob) happen in one
transaction, so a server killed at any moment neither loses nor repeats a run. The decision itself is
`models.schedule.decide` (pure); the operations are in service.jobschedules.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import and_, or_

from batchyard.models import errors
from batchyard.models.clock import format_time, parse_time
from batchyard.models.ids import key_of
from batchyard.models.schedule import Decision, ScheduleConfig, decide, parse_config
from batchyard.models.states import JobScheduleState, check_job_schedule_transition
from batchyard.service import jobs
from batchyard.service.common import Body, set_state, stamp_body
from batchyard.service.context import Ctx, Written
from batchyard.store import schema
from batchyard.store.sql import Row, Tx

log = logging.getLogger("batchyard.jobschedules")

T = schema.job_schedules
S = JobScheduleState
#: jobs in these states no longer hold a schedule's next run back
JOB_DONE = ("completed", "deleting")


def config(body: Body) -> ScheduleConfig:
    return parse_config(body.get("schedule"))


def save(ctx: Ctx, tx: Tx, row: Row, stamp: bool = True) -> Written:
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


def set_next(row: Row, due: datetime | None) -> None:
    ei = row["body"].setdefault("executionInfo", {})
    row["next_run"] = None if due is None else format_time(due)
    if due is None:
        ei.pop("nextRunTime", None)
    else:
        ei["nextRunTime"] = row["next_run"]
    # the service's key order: nextRunTime, recentJob, endTime
    row["body"]["executionInfo"] = {k: ei[k] for k in ("nextRunTime", "recentJob", "endTime") if k in ei}


def move(ctx: Ctx, row: Row, new: S) -> None:
    body = row["body"]
    check_job_schedule_transition(S(body["state"]), new)
    _, now_text, _ = ctx.stamp()
    set_state(body, new.value, now_text)
    row["state"] = new.value
    if new == S.COMPLETED:
        set_next(row, None)
        body["executionInfo"]["endTime"] = now_text


def jobs_of(tx: Tx, row: Row) -> list[Row]:
    prefix = jobs.schedule_job_prefix(row["key"])
    return tx.select(schema.jobs, schema.jobs.c.key.startswith(prefix, autoescape=True))


def recent_job(tx: Tx, row: Row) -> Row | None:
    """The schedule's most recent job while it is not finished (None once completed, deleting or gone)."""
    recent = row["body"].get("executionInfo", {}).get("recentJob")
    if not recent:
        return None
    job = tx.get_for_update(schema.jobs, key=key_of(recent["id"]))
    if job is None or job["state"] in JOB_DONE:
        return None
    return job


def _decision(row: Row, job_active: bool, now: datetime) -> Decision | None:
    """What the schedule does now; None when nothing changes."""
    st = row["state"]
    body = row["body"]
    if st == S.ACTIVE:
        due = parse_time(row["next_run"]) if row["next_run"] else None
        d = decide(config(body), due, job_active, now)
        if d.create_job or d.complete or d.next_due != due:
            return d
        return None
    if st == S.DISABLED:
        # a disabled schedule creates no job, but it still ends at doNotRunAfter
        end = config(body).do_not_run_after
        if end is not None and now > end and not job_active:
            return Decision(False, None, True)
        return None
    if st == S.TERMINATING and not job_active:
        return Decision(False, None, True)
    return None


def advance(ctx: Ctx, tx: Tx, row: Row, now: datetime) -> bool:
    """Apply the schedule's due-run decision inside the caller's transaction; True when anything changed."""
    if row["state"] == S.DELETING:
        if jobs_of(tx, row):
            return False
        tx.delete(T, key=row["key"])
        return True
    d = _decision(row, recent_job(tx, row) is not None, now)
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
    set_next(row, d.next_due)
    if d.complete:
        move(ctx, row, S.COMPLETED)
        save(ctx, tx, row)
    else:
        save(ctx, tx, row, stamp=False)
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
                if not jobs_of(tx, row):
                    out.append(row["key"])
                continue
            recent = row["body"].get("executionInfo", {}).get("recentJob")
            job = tx.get(schema.jobs, key=key_of(recent["id"])) if recent else None
            active = job is not None and job["state"] not in JOB_DONE
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
