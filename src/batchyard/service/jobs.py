"""Job operations. Deleting and terminating are finished by the scheduler loop (they touch running tasks)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from batchyard.models import errors, odata
from batchyard.models.clock import format_time, parse_time
from batchyard.models.decode import parse_duration
from batchyard.models.ids import check_id, key_of
from batchyard.models.resources import INFINITE, new_job
from batchyard.models.states import JobState, check_job_transition
from batchyard.models.statistics import job_stats
from batchyard.service import autopools, completion, jobtasks
from batchyard.service.common import Body, item, set_state, stamp_body
from batchyard.service.context import NO_CONDITIONS, Conditions, Ctx, Written
from batchyard.service.listing import ListQuery, page_rows
from batchyard.store import schema
from batchyard.store.sql import DuplicateKey, Row, Tx


def _columns() -> dict[str, Any]:
    from batchyard.store.odata_sql import ColumnMap

    t = schema.jobs
    return {
        "id": ColumnMap(t.c.key, casefold=True),
        "state": ColumnMap(t.c.state, casefold=True),
        "priority": ColumnMap(t.c.priority),
        "creationTime": ColumnMap(t.c.creation_time),
        "lastModified": ColumnMap(t.c.last_modified),
    }


def load(tx: Tx, job_id: str) -> Row:
    row = tx.get_for_update(schema.jobs, key=key_of(job_id))
    if row is None:
        raise errors.job_not_found()
    return row


def save(tx: Tx, ctx: Ctx, row: Row, body: Body) -> Written:
    _, now_text, etag = ctx.stamp()
    stamp_body(body, etag, now_text)
    tx.update(
        schema.jobs,
        {
            "body": body,
            "etag": etag,
            "last_modified": now_text,
            "state": body["state"],
            "priority": int(body.get("priority", 0)),
            "pool_key": key_of(pool_of(body)),
            "deadline": deadline(body),
        },
        key=row["key"],
    )
    row["body"] = body
    row["state"] = body["state"]
    return Written(etag, now_text, f"/jobs/{body['id']}")


def pool_of(body: Body) -> str:
    """The pool a job runs on: its auto pool's id is in executionInfo, poolInfo keeps the specification."""
    return str(body["poolInfo"].get("poolId") or body.get("executionInfo", {}).get("poolId") or "")


def deadline(body: Body) -> str | None:
    """When the job's maxWallClockTime runs out (measured from creation), or None if unbounded."""
    wall = str(body.get("constraints", {}).get("maxWallClockTime", INFINITE))
    if wall.startswith("P10675199D"):
        return None
    try:
        return format_time(parse_time(body["creationTime"]) + parse_duration(wall))
    except (ValueError, OverflowError):
        return None


def _pool_id(spec: Body) -> str:
    """The job's pool id; "" for an auto pool (its id is chosen when the pool is created with the job)."""
    info = spec.get("poolInfo")
    if not isinstance(info, dict):
        raise errors.missing_required_property("poolInfo")
    if info.get("autoPoolSpecification") is not None:
        return ""
    pool_id = info.get("poolId")
    if not pool_id:
        raise errors.missing_required_property("poolInfo.poolId")
    return check_id(pool_id, "poolInfo.poolId")


def check_spec(spec: Body, ctx: Ctx | None = None, plain_job: bool = True) -> str:
    """Everything job creation refuses, without creating anything (job schedules check their jobSpecification
    with it); returns the pool id ("" for an auto pool). An auto pool specification gets its defaults in place."""
    pool_id = _pool_id(spec)
    if not pool_id and ctx is not None:
        spec["poolInfo"] = {"autoPoolSpecification": autopools.check(ctx, spec["poolInfo"], plain_job)}
    jobtasks.check_job(new_job(spec, "", pool_id))
    return pool_id


def create_job(ctx: Ctx, spec: Body) -> Written:
    job_id = check_id(spec.get("id"))
    check_spec(spec, ctx)
    with ctx.store.tx() as tx:
        if tx.exists(schema.job_schedules, key=key_of(job_id)):
            raise errors.job_schedule_with_same_id_exists()
        w = insert_job(ctx, tx, job_id, spec)
    ctx.hub.wake_scheduler()
    return w


def insert_job(ctx: Ctx, tx: Tx, job_id: str, spec: Body) -> Written:
    """Create one job inside the caller's transaction (a job schedule creates its runs this way)."""
    pool_id = _pool_id(spec)
    failure = None
    if not pool_id:  # an auto pool, created with its job in this transaction (decision 0140)
        pool_id, failure = autopools.create_for_job(ctx, tx, key_of(job_id), spec["poolInfo"])
    _, now_text, etag = ctx.stamp()
    body = new_job({"id": job_id, **spec}, now_text, pool_id)
    jobtasks.check_job(body)
    if failure is not None:  # the job exists, completed at once with the reason (recorded)
        body["state"] = "completed"
        body["executionInfo"].update(endTime=now_text, schedulingError=failure)
    stamp_body(body, etag, now_text)
    seq = tx.next_counter("job_seq")
    try:
        tx.insert(
            schema.jobs,
            {
                "key": key_of(job_id),
                "id": job_id,
                "pool_key": key_of(pool_id),
                "state": body["state"],
                "priority": body["priority"],
                "seq": seq,
                "task_seq": 0,
                "etag": etag,
                "last_modified": now_text,
                "creation_time": now_text,
                "body": body,
                "deadline": deadline(body),
            },
        )
    except DuplicateKey:
        raise errors.job_exists() from None
    tx.insert(schema.task_counts, {"job_key": key_of(job_id)})
    job = tx.get(schema.jobs, key=key_of(job_id))
    if job is not None and failure is None:
        jobtasks.add_job_manager(ctx, tx, job)  # the job's first task
    if job is not None and completion.check_all_complete(ctx, tx, job):
        etag, now_text = job["body"]["eTag"], job["body"]["lastModified"]
    return Written(etag, now_text, f"/jobs/{job_id}")


def _shaper(tx: Tx, expand: list[str] | None) -> Callable[[Row], Body]:
    """The job body a read returns; with `$expand=stats`, its statistics (kept with the task counts)."""
    stats = any(e.lower() == "stats" for e in expand or [])

    def shape(row: Row) -> Body:
        body = item(row)
        if "poolInfo" in body:
            body["poolInfo"] = autopools.view(body["poolInfo"])
        if stats:
            counts = tx.get(schema.task_counts, job_key=row["key"]) or {}
            body["stats"] = job_stats(
                f"/jobs/{row['id']}", row["creation_time"], row["last_modified"], counts
            )
        return body

    return shape


def get_job(ctx: Ctx, job_id: str, cond: Conditions = NO_CONDITIONS, expand: list[str] | None = None) -> Body:
    with ctx.store.tx() as tx:
        row = tx.get(schema.jobs, key=key_of(job_id))
        if row is None:
            raise errors.job_not_found()
        cond.check(row, write=False)
        return _shaper(tx, expand)(row)


def list_jobs(ctx: Ctx, q: ListQuery) -> tuple[list[Body], str | None]:
    with ctx.store.tx() as tx:
        return page_rows(tx, schema.jobs, "key", None, q, odata.JOBS, _columns(), _shaper(tx, q.expand))


def schedule_job_prefix(schedule_key: str) -> str:
    """The key prefix of the jobs a schedule created (`<scheduleId>:job-<n>`; user job ids cannot hold ':')."""
    return schedule_key + ":job-"


def list_schedule_jobs(tx: Tx, schedule_key: str, q: ListQuery) -> tuple[list[Body], str | None]:
    """One page of the jobs a schedule created, inside the caller's transaction."""
    base = schema.jobs.c.key.startswith(schedule_job_prefix(schedule_key), autoescape=True)
    return page_rows(
        tx, schema.jobs, "key", base, q, odata.JOBS_FROM_SCHEDULE, _columns(), _shaper(tx, q.expand)
    )


def _require_updatable(body: Body) -> None:
    st = body["state"]
    if st == "completed":
        raise errors.job_completed()
    if st == "deleting":
        raise errors.job_being_deleted()
    if st == "terminating":
        raise errors.job_being_terminated()


def _update_auto_pool(tx: Tx, body: Body, auto: Body) -> None:
    """An update may change an auto pool's keepAlive; anything else of the specification is refused."""
    current = body["poolInfo"].get("autoPoolSpecification")
    if not isinstance(current, dict):
        raise errors.not_implemented(
            "poolInfo.autoPoolSpecification in a job update (moving a job to an auto pool)"
        )
    keep = auto.get("keepAlive", False)
    if not isinstance(keep, bool):
        raise errors.invalid_property_value("poolInfo.autoPoolSpecification.keepAlive", keep)
    others = {k: v for k, v in auto.items() if k != "keepAlive"}
    mine = {k: v for k, v in current.items() if k != "keepAlive" and k in others}
    if others.get("pool") is not None and others["pool"] != current.get("pool"):
        raise errors.not_implemented("poolInfo.autoPoolSpecification.pool in a job update")
    if any(others.get(k) != mine.get(k) for k in ("autoPoolIdPrefix", "poolLifetimeOption") if k in others):
        raise errors.not_implemented(
            "poolInfo.autoPoolSpecification in a job update (only keepAlive changes)"
        )
    current["keepAlive"] = keep
    autopools.set_keep_alive(tx, pool_of(body), keep)


def _apply_update(tx: Tx, body: Body, spec: Body, replace: bool) -> None:
    if "poolInfo" in spec and spec["poolInfo"].get("autoPoolSpecification") is not None:
        _update_auto_pool(tx, body, spec["poolInfo"]["autoPoolSpecification"])
    elif "poolInfo" in spec or replace:
        pool_id = _pool_id(spec if "poolInfo" in spec else body)
        if "poolInfo" in spec:
            body["poolInfo"] = spec["poolInfo"]
        if pool_id:
            body.setdefault("executionInfo", {})["poolId"] = pool_id
    fields = {
        "priority": 0,
        "maxParallelTasks": -1,
        "allowTaskPreemption": False,
        "constraints": {"maxWallClockTime": INFINITE, "maxTaskRetryCount": 0},
        "onAllTasksComplete": "noaction",
        "metadata": None,
        "networkConfiguration": None,
    }
    for k, default in fields.items():
        if k in spec:
            body[k] = copy.deepcopy(spec[k])
        elif replace:
            if default is None:
                body.pop(k, None)
            else:
                body[k] = copy.deepcopy(default)
    if "onTaskFailure" in spec:
        body["onTaskFailure"] = spec["onTaskFailure"]
    # re-validate through the same rules as create
    checked = new_job({k: v for k, v in body.items() if k not in ("state", "executionInfo")}, "", "")
    for k in ("priority", "maxParallelTasks", "constraints", "onAllTasksComplete", "onTaskFailure"):
        body[k] = checked[k]
    if body.get("metadata") is None:
        body.pop("metadata", None)


def update_job(ctx: Ctx, job_id: str, spec: Body, cond: Conditions, replace: bool) -> Written:
    with ctx.store.tx() as tx:
        row = load(tx, job_id)
        cond.check(row, write=True)
        body = row["body"]
        _require_updatable(body)
        _apply_update(tx, body, spec, replace)
        w = save(tx, ctx, row, body)
        if completion.check_all_complete(ctx, tx, row):
            w = Written(row["body"]["eTag"], row["body"]["lastModified"], w.path)
    ctx.hub.wake_scheduler()
    return w


def _transition(tx: Tx, ctx: Ctx, row: Row, new: JobState) -> Written:
    body = row["body"]
    check_job_transition(JobState(body["state"]), new)
    _, now_text, _ = ctx.stamp()
    set_state(body, new.value, now_text)
    return save(tx, ctx, row, body)


def delete_job(ctx: Ctx, job_id: str, cond: Conditions) -> None:
    with ctx.store.tx() as tx:
        row = load(tx, job_id)
        cond.check(row, write=True)
        if row["state"] != "deleting":
            _transition(tx, ctx, row, JobState.DELETING)
    ctx.hub.wake_scheduler()


def begin_delete(ctx: Ctx, tx: Tx, row: Row) -> None:
    """Mark a job for deletion inside the caller's transaction (its schedule is being deleted)."""
    if row["state"] != "deleting":
        _transition(tx, ctx, row, JobState.DELETING)


def terminate_job(ctx: Ctx, job_id: str, reason: str | None, cond: Conditions) -> Written:
    with ctx.store.tx() as tx:
        row = load(tx, job_id)
        cond.check(row, write=True)
        _require_updatable(row["body"])
        row["body"].setdefault("executionInfo", {})["terminateReason"] = reason or "UserTerminate"
        w = _transition(tx, ctx, row, JobState.TERMINATING)
    ctx.hub.wake_scheduler()
    return w


def disable_job(ctx: Ctx, job_id: str, option: str, cond: Conditions) -> Written:
    opt = (option or "").lower()
    if opt not in ("requeue", "terminate", "wait"):
        raise errors.invalid_property_value("disableTasks", option)
    with ctx.store.tx() as tx:
        row = load(tx, job_id)
        cond.check(row, write=True)
        _require_updatable(row["body"])
        if row["state"] != "active":
            raise errors.job_not_active()
        row["body"]["_disableTasks"] = opt
        w = _transition(tx, ctx, row, JobState.DISABLING)
    ctx.hub.wake_scheduler()
    return w


def enable_job(ctx: Ctx, job_id: str, cond: Conditions) -> Written:
    with ctx.store.tx() as tx:
        row = load(tx, job_id)
        cond.check(row, write=True)
        _require_updatable(row["body"])
        if row["state"] not in ("disabled", "disabling"):
            raise errors.BatchError(409, "JobNotDisabled", "The specified job is not in a disabled state.")
        w = _transition(tx, ctx, row, JobState.ENABLING)
    ctx.hub.wake_scheduler()
    return w


def task_counts(ctx: Ctx, job_id: str) -> Body:
    with ctx.store.tx() as tx:
        row = load(tx, job_id)
        c = tx.get(schema.task_counts, job_key=row["key"]) or {}
    names = ("active", "running", "completed", "succeeded", "failed")
    return {
        "taskCounts": {n: int(c.get(n, 0)) for n in names},
        "taskSlotCounts": {n: int(c.get("slots_" + n, 0)) for n in names},
    }
