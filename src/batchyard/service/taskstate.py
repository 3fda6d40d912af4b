"""Task state changes and the task counts they move, kept in one place so counts never drift."""

from __future__ import annotations

from typing import Any

from batchyard.models.states import TaskState, check_task_transition
from batchyard.service.common import Body, set_state, stamp_body
from batchyard.store import schema
from batchyard.store.sql import Row, Tx


def bucket(state: str, result: str | None) -> list[str]:
    """Which task-count columns a task in this state occupies."""
    if state == "active":
        return ["active"]
    if state in ("preparing", "running"):
        return ["running"]
    return ["completed", "failed" if result == "failure" else "succeeded"]


def count_deltas(old: list[str], new: list[str], slots: int) -> dict[str, int]:
    d: dict[str, int] = {}
    for b in old:
        d[b] = d.get(b, 0) - 1
        d["slots_" + b] = d.get("slots_" + b, 0) - slots
    for b in new:
        d[b] = d.get(b, 0) + 1
        d["slots_" + b] = d.get("slots_" + b, 0) + slots
    return d


def result_of(body: Body) -> str | None:
    ei = body.get("executionInfo") or {}
    r = ei.get("result")
    return str(r) if r is not None else None


def move(
    tx: Tx,
    row: Row,
    new_state: str,
    now_text: str,
    etag: str,
    *,
    node_id: str | None | object = ...,
    attempt: int | None = None,
    counts: dict[str, dict[str, int]] | None = None,
    old_result: str | None = None,
    writer: TaskWriter | None = None,
) -> dict[str, Any]:
    """Change a task's state (body already edited by the caller except for state) and persist it.

    `old_result` is the task's result before the caller edited executionInfo (completed tasks only).
    Count deltas are applied immediately, or accumulated into `counts` (per job key) when the caller
    batches many moves into one update; with a `writer` the row write is deferred to its flush.
    """
    body: Body = row["body"]
    old_state = row["state"]
    old_bucket = bucket(old_state, old_result)
    if new_state != old_state:
        check_task_transition(TaskState(old_state), TaskState(new_state))
    set_state(body, new_state, now_text)
    stamp_body(body, etag, now_text)
    values: dict[str, Any] = {"state": new_state, "body": body, "etag": etag, "last_modified": now_text}
    values.update(derived_columns(body))
    if node_id is not ...:
        values["node_id"] = node_id
    if attempt is not None:
        values["attempt"] = attempt
    if writer is None:
        tx.update(schema.tasks, values, job_key=row["job_key"], key=row["key"])
    deltas = count_deltas(old_bucket, bucket(new_state, result_of(body)), int(row["slots"]))
    if counts is None:
        tx.add_counts(row["job_key"], deltas)
    else:
        acc = counts.setdefault(row["job_key"], {})
        for k, v in deltas.items():
            acc[k] = acc.get(k, 0) + v
    row.update(values)
    if writer is not None:
        writer.add(row)
    return values


_WRITTEN = (
    "state",
    "body",
    "etag",
    "last_modified",
    "node_id",
    "attempt",
    "exit_code",
    "result",
    "start_time",
    "end_time",
    "state_transition_time",
    "dep_outcome",
    "cleanup_at",
)


class TaskWriter:
    """Collects changed task rows and writes them in one executemany (the hot paths change many at once)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}

    def add(self, row: Row) -> None:
        self.rows[(row["job_key"], row["key"])] = row

    def flush(self, tx: Tx) -> None:
        if not self.rows:
            return
        batch = [{c: r.get(c) for c in ("job_key", "key", *_WRITTEN)} for r in self.rows.values()]
        tx.update_many(schema.tasks, ["job_key", "key"], batch)
        self.rows.clear()


def derived_columns(body: Body) -> dict[str, Any]:
    """The filterable columns that mirror the task body (kept in step on every write)."""
    ei = body.get("executionInfo") or {}
    return {
        "exit_code": ei.get("exitCode"),
        "result": ei.get("result"),
        "start_time": ei.get("startTime"),
        "end_time": ei.get("endTime"),
        "state_transition_time": body.get("stateTransitionTime"),
    }
