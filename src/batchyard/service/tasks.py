"""Task operations: add (one or a collection), read, list, update constraints, terminate, reactivate, delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchyard.models import dependencies as deps_model
from batchyard.models import errors, exitconditions, odata
from batchyard.models.ids import check_id, key_of
from batchyard.models.resources import new_task
from batchyard.models.statistics import task_stats
from batchyard.service import completion, jobs, jobtasks, subtasks
from batchyard.service.common import Body, item, stamp_body
from batchyard.service.context import NO_CONDITIONS, Conditions, Ctx, Written, task_ref
from batchyard.service.listing import ListQuery, page_rows, page_texts
from batchyard.service.staging import check_staging
from batchyard.service.taskstate import move, result_of
from batchyard.store import schema
from batchyard.store.sql import Row, Tx, json_text

MAX_COLLECTION = 100


def _columns() -> dict[str, Any]:
    from batchyard.store.odata_sql import ColumnMap

    t = schema.tasks
    return {
        "id": ColumnMap(t.c.key, casefold=True),
        "state": ColumnMap(t.c.state, casefold=True),
        "creationTime": ColumnMap(t.c.creation_time),
        "lastModified": ColumnMap(t.c.last_modified),
        "stateTransitionTime": ColumnMap(t.c.state_transition_time),
        "executionInfo/exitCode": ColumnMap(t.c.exit_code),
        "executionInfo/result": ColumnMap(t.c.result, casefold=True),
        "executionInfo/startTime": ColumnMap(t.c.start_time),
        "executionInfo/endTime": ColumnMap(t.c.end_time),
    }


def _job_accepting(tx: Tx, job_id: str) -> Row:
    job = jobs.load(tx, job_id)
    st = job["state"]
    if st == "completed":
        raise errors.job_completed()
    if st == "deleting":
        raise errors.job_being_deleted()
    if st == "terminating":
        raise errors.job_being_terminated()
    return job


def _new_row(job: Row, spec: Body, seq: int, now_text: str, etag: str, owned: bool = False) -> Row:
    task_id = check_id(spec.get("id"))
    jobtasks.check_task_id(job, task_id)
    body = new_task(spec, now_text, job["body"], owned)
    check_staging(body)
    exitconditions.check(body.get("exitConditions"), str(job["body"].get("onTaskFailure", "noaction")))
    parsed = deps_model.parse(body.get("dependsOn"), task_id)
    stamp_body(body, etag, now_text)
    return {
        "job_key": job["key"],
        "key": key_of(task_id),
        "id": task_id,
        "seq": seq,
        "state": "active",
        "node_id": None,
        "slots": body["requiredSlots"],
        "attempt": 0,
        "etag": etag,
        "last_modified": now_text,
        "creation_time": now_text,
        "body": body,
        "num_id": deps_model.numeric_id(task_id),
        "deps_remaining": 0,
        "state_transition_time": now_text,
        "_deps": parsed,
    }


# the columns a new task row sets, in the order `Tx.insert_rows` receives them
_INSERT_COLUMNS = (
    "job_key",
    "key",
    "id",
    "seq",
    "state",
    "node_id",
    "slots",
    "attempt",
    "etag",
    "last_modified",
    "creation_time",
    "body",
    "num_id",
    "deps_remaining",
    "state_transition_time",
)


def _added(tx: Tx, job: Row, rows: list[Row]) -> None:
    parsed = {r["key"]: r.pop("_deps") for r in rows}
    completion.register(tx, job["key"], rows, parsed)
    tx.insert_rows(
        schema.tasks,
        _INSERT_COLUMNS,
        [tuple(json_text(r[c]) if c == "body" else r[c] for c in _INSERT_COLUMNS) for r in rows],
    )
    slots = sum(int(r["slots"]) for r in rows)
    tx.add_counts(job["key"], {"active": len(rows), "slots_active": slots})
    tx.update(schema.jobs, {"task_seq": job["task_seq"] + len(rows)}, key=job["key"])


def new_row(job: Row, spec: Body, seq: int, now_text: str, etag: str) -> Row:
    """A checked task row (not inserted yet): the job's Job Manager is added this way."""
    return _new_row(job, spec, seq, now_text, etag)


def insert_rows(tx: Tx, job: Row, rows: list[Row]) -> None:
    """Insert rows made by `new_row` inside the caller's transaction, counts and sequence included."""
    _added(tx, job, rows)


def create_task(ctx: Ctx, job_id: str, spec: Body) -> Written:
    _, now_text, etag = ctx.stamp()
    with ctx.store.tx() as tx:
        job = _job_accepting(tx, job_id)
        row = _new_row(job, spec, job["task_seq"] + 1, now_text, etag)
        if tx.exists(schema.tasks, job_key=job["key"], key=row["key"]):
            raise errors.task_exists()
        _added(tx, job, [row])
    ctx.hub.wake_scheduler()
    return Written(etag, now_text, f"/jobs/{job['id']}/tasks/{row['id']}")


def add_collection(ctx: Ctx, job_id: str, specs: list[Body], base_url: str) -> list[Body]:
    """Add up to 100 tasks in one transaction; each task gets its own result."""
    if len(specs) > MAX_COLLECTION:
        raise errors.request_body_too_large(f"A collection may hold at most {MAX_COLLECTION} tasks")
    _, now_text, etag = ctx.stamp()
    results: list[Body] = []
    with ctx.store.tx() as tx:
        job = _job_accepting(tx, job_id)
        keys = [key_of(str(s.get("id", ""))) for s in specs]
        existing = tx.existing_task_keys(job["key"], keys)
        rows: list[Row] = []
        seq = job["task_seq"]
        for spec in specs:
            tid = str(spec.get("id", ""))
            try:
                row = _new_row(job, spec, seq + 1, now_text, etag, owned=True)
            except errors.BatchError as e:
                results.append({"status": "ClientError", "taskId": tid, "error": error_body(e)})
                continue
            if row["key"] in existing:
                results.append(
                    {"status": "ClientError", "taskId": tid, "error": error_body(errors.task_exists())}
                )
                continue
            existing.add(row["key"])
            seq += 1
            rows.append(row)
            results.append(
                {
                    "status": "Success",
                    "taskId": tid,
                    "eTag": etag,
                    "lastModified": now_text,
                    "location": f"{base_url}/jobs/{job['id']}/tasks/{tid}",
                }
            )
        _added(tx, job, rows)
    if rows:
        ctx.hub.wake_scheduler()
    return results


def error_body(e: errors.BatchError) -> Body:
    out: Body = {"code": e.code, "message": {"lang": "en-US", "value": e.message}}
    if e.values:
        out["values"] = [{"key": k, "value": v} for k, v in e.values]
    return out


def load(tx: Tx, job_id: str, task_id: str) -> tuple[Row, Row]:
    job = jobs.load(tx, job_id)
    row = tx.get_for_update(schema.tasks, job_key=job["key"], key=key_of(task_id))
    if row is None:
        raise errors.task_not_found()
    return job, row


def _shaper(job_id: str, expand: list[str] | None) -> Callable[[Row], Body]:
    """The task body a read returns; with `$expand=stats`, its statistics too."""
    stats = any(e.lower() == "stats" for e in expand or [])

    def shape(row: Row) -> Body:
        body = item(row)
        if stats:
            body["stats"] = task_stats(
                f"/jobs/{job_id}/tasks/{row['id']}",
                row["body"]["creationTime"],
                row["last_modified"],
                row["body"].get("_stats") or {},
            )
        return body

    return shape


def get_task(
    ctx: Ctx, job_id: str, task_id: str, cond: Conditions = NO_CONDITIONS, expand: list[str] | None = None
) -> Body:
    with ctx.store.tx() as tx:
        job, row = load(tx, job_id, task_id)
        cond.check(row, write=False)
        return _shaper(job["id"], expand)(row)


def list_tasks(ctx: Ctx, job_id: str, q: ListQuery) -> tuple[list[Body], str | None]:
    with ctx.store.tx() as tx:
        job = jobs.load(tx, job_id)
        base = schema.tasks.c.job_key == job["key"]
        return page_rows(
            tx, schema.tasks, "key", base, q, odata.TASKS, _columns(), _shaper(job["id"], q.expand)
        )


def list_task_texts(ctx: Ctx, job_id: str, q: ListQuery) -> tuple[list[tuple[str, str]], str | None] | None:
    """A page of (task id, stored body JSON), or None when the filter needs decoded bodies."""
    with ctx.store.tx() as tx:
        job = jobs.load(tx, job_id)
        base = schema.tasks.c.job_key == job["key"]
        return page_texts(tx, schema.tasks, "key", base, q, odata.TASKS, _columns())


def replace_task(ctx: Ctx, job_id: str, task_id: str, spec: Body, cond: Conditions) -> Written:
    with ctx.store.tx() as tx:
        job, row = load(tx, job_id, task_id)
        cond.check(row, write=True)
        body = row["body"]
        if row["state"] == "completed":
            raise errors.task_completed()
        cons = dict(body["constraints"])
        new = spec.get("constraints") or {}
        for k in ("maxWallClockTime", "retentionTime", "maxTaskRetryCount"):
            if k in new:
                cons[k] = new[k]
        cons["maxTaskRetryCount"] = int(cons["maxTaskRetryCount"])
        if cons["maxTaskRetryCount"] < -1:
            raise errors.invalid_property_value("constraints.maxTaskRetryCount", cons["maxTaskRetryCount"])
        body["constraints"] = cons
        _, now_text, etag = ctx.stamp()
        stamp_body(body, etag, now_text)
        tx.update(
            schema.tasks,
            {"body": body, "etag": etag, "last_modified": now_text},
            job_key=row["job_key"],
            key=row["key"],
        )
    return Written(etag, now_text, f"/jobs/{job['id']}/tasks/{row['id']}")


def end_task(
    ctx: Ctx, tx: Tx, row: Row, now_text: str, etag: str, code: str, message: str, counts: Any = None
) -> None:
    """Complete a task that has not finished by itself (terminate, job end): failure info TaskEnded."""
    body = row["body"]
    ei = body.setdefault("executionInfo", {"retryCount": 0, "requeueCount": 0})
    if row["state"] in ("running", "preparing"):
        ei.setdefault("startTime", now_text)
    ei["endTime"] = now_text
    ei["result"] = "failure"
    ei["failureInfo"] = {"category": "usererror", "code": code, "message": message}
    ctx.assignments.remove(task_ref(row["job_key"], row["key"]))
    move(tx, row, "completed", now_text, etag, node_id=None, counts=counts)
    job = tx.get(schema.jobs, key=row["job_key"])
    if job is not None:
        completion.finished(ctx, tx, job, row, now_text, apply_job_action=False)


def terminate_task(ctx: Ctx, job_id: str, task_id: str, cond: Conditions) -> Written:
    with ctx.store.tx() as tx:
        job, row = load(tx, job_id, task_id)
        cond.check(row, write=True)
        _, now_text, etag = ctx.stamp()
        if row["state"] != "completed":
            node = row["node_id"]
            end_task(ctx, tx, row, now_text, etag, "TaskEnded", "Task Was Ended by User Request")
            if node:
                ctx.hub.wake_node(node)
            completion.check_all_complete(ctx, tx, job)
    ctx.hub.wake_scheduler()
    return Written(row["etag"], row["last_modified"], f"/jobs/{job['id']}/tasks/{row['id']}")


def reactivate_task(ctx: Ctx, job_id: str, task_id: str, cond: Conditions) -> Written:
    with ctx.store.tx() as tx:
        job, row = load(tx, job_id, task_id)
        cond.check(row, write=True)
        if job["state"] in ("completed", "terminating", "deleting"):
            raise errors.job_completed() if job["state"] == "completed" else errors.job_being_terminated()
        if row["state"] != "completed":
            raise errors.task_not_completed()
        body = row["body"]
        old_result = result_of(body)
        if old_result != "failure":
            raise errors.task_succeeded()
        _, now_text, etag = ctx.stamp()
        body["executionInfo"] = {
            "retryCount": 0,
            "requeueCount": int(body.get("executionInfo", {}).get("requeueCount", 0)),
        }
        body.pop("nodeInfo", None)
        # a new attempt: agents never run the same attempt twice
        move(
            tx,
            row,
            "active",
            now_text,
            etag,
            node_id=None,
            attempt=int(row["attempt"]) + 1,
            old_result=old_result,
        )
        tx.update(schema.tasks, {"cleanup_at": None}, job_key=row["job_key"], key=row["key"])
    ctx.hub.wake_scheduler()
    return Written(etag, now_text, f"/jobs/{job['id']}/tasks/{row['id']}")


def delete_task(ctx: Ctx, job_id: str, task_id: str, cond: Conditions) -> tuple[str, str, str | None]:
    """Delete the task; a running attempt is killed by its agent once it is no longer assigned.

    Returns (job id, task id, node id) so the caller can remove the task's directory."""
    with ctx.store.tx() as tx:
        job, row = load(tx, job_id, task_id)
        cond.check(row, write=True)
        remove_rows(ctx, tx, [row])
        completion.check_all_complete(ctx, tx, job)
    ctx.hub.wake_scheduler()
    subtasks.remove_instance_dirs(ctx, job["id"], row)  # the primary's: by the caller
    return job["id"], row["id"], row["body"].get("nodeInfo", {}).get("nodeId")


def remove_rows(ctx: Ctx, tx: Tx, rows: list[Row]) -> None:
    """Delete task rows, freeing their nodes and moving the counts."""
    from batchyard.service.taskstate import bucket, count_deltas

    totals: dict[str, dict[str, int]] = {}
    for row in rows:
        node = ctx.assignments.remove(task_ref(row["job_key"], row["key"]))
        if node:
            ctx.hub.wake_node(node)
        tx.delete(schema.tasks, job_key=row["job_key"], key=row["key"])
        d = count_deltas(bucket(row["state"], result_of(row["body"])), [], int(row["slots"]))
        acc = totals.setdefault(row["job_key"], {})
        for k, v in d.items():
            acc[k] = acc.get(k, 0) + v
    for jk, d in totals.items():
        tx.add_counts(jk, d)
