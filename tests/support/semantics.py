"""Helpers for the task/job semantics conformance tests (official SDK against a live server)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError

from tests.support.live import wait_for


def sh(script: str) -> str:
    """A task command line running `script` under /bin/sh (single quotes are not allowed inside)."""
    assert "'" not in script, script
    return f"/bin/sh -c '{script}'"


def task(task_id: str, script: str, **kw: Any) -> m.BatchTaskCreateOptions:
    return m.BatchTaskCreateOptions(id=task_id, command_line=sh(script), **kw)


def pid_task(task_id: str, pid_file: Path, secs: int = 30, **kw: Any) -> m.BatchTaskCreateOptions:
    """A long task that records the pid of its sleep process (exec keeps the pid) so tests can check it is killed."""
    return task(task_id, f"echo $$ > {pid_file}; exec sleep {secs}", **kw)


def new_job(client: BatchClient, job_id: str, pool_id: str, **kw: Any) -> None:
    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id), **kw))


def error_code(exc: HttpResponseError) -> str | None:
    return exc.error.code if exc.error is not None else None


def expect_error(fn: Callable[[], Any], status: int, code: str) -> HttpResponseError:
    """Run fn, require an HttpResponseError with this status and Batch error code, and return it."""
    with pytest.raises(HttpResponseError) as info:
        fn()
    exc = info.value
    assert exc.status_code == status, f"status {exc.status_code} != {status}: {exc}"
    assert error_code(exc) == code, f"error code {error_code(exc)!r} != {code!r}: {exc}"
    return exc


def wait_job_state(client: BatchClient, job_id: str, state: str, timeout: float = 30) -> m.BatchJob:
    def reached() -> m.BatchJob | None:
        j = client.get_job(job_id)
        return j if j.state == state else None

    return wait_for(reached, timeout, 0.05, f"job {job_id} to be {state}")


def wait_tasks_completed(
    client: BatchClient, job_id: str, task_ids: Iterable[str], timeout: float = 30
) -> dict[str, m.BatchTask]:
    """Wait until the named tasks (a subset of the job's) are all completed; returns them by id."""
    wanted = set(task_ids)

    def done() -> dict[str, m.BatchTask] | None:
        ts = {t.id: t for t in client.list_tasks(job_id) if t.id in wanted}
        return ts if set(ts) == wanted and all(t.state == "completed" for t in ts.values()) else None

    return wait_for(done, timeout, 0.05, f"tasks {sorted(wanted)} of {job_id} to complete")


def read_pid(pid_file: Path, timeout: float = 15) -> int:
    def ready() -> int | None:
        try:
            text = pid_file.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text else None

    return wait_for(ready, timeout, 0.05, f"pid in {pid_file}")


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has already exited


def wait_pid_gone(pid: int, timeout: float = 15) -> None:
    wait_for(lambda: not pid_alive(pid), timeout, 0.05, f"process {pid} to be killed")


def max_overlap(intervals: Iterable[tuple[dt.datetime, dt.datetime]]) -> int:
    """The largest number of [start, end) intervals open at one instant."""
    events: list[tuple[dt.datetime, int]] = []
    for s, e in intervals:
        events.append((s, 1))
        events.append((e, -1))
    events.sort(key=lambda x: (x[0], x[1]))  # an end at the same instant closes before a start opens
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def intervals(tasks: Iterable[m.BatchTask]) -> list[tuple[dt.datetime, dt.datetime]]:
    out = []
    for t in tasks:
        ei = t.execution_info
        assert ei is not None and ei.start_time is not None and ei.end_time is not None, t.id
        out.append((ei.start_time, ei.end_time))
    return out
