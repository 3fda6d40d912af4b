"""Task control through the official azure-batch 15.1.0 SDK against a live server with real agents:
terminate, reactivate, delete a running task, PUT constraints, retentionTime.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state
from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw
from tests.support.semantics import (
    error_code,
    expect_error,
    new_job,
    pid_alive,
    pid_task,
    read_pid,
    task,
    wait_job_state,
    wait_pid_gone,
    wait_tasks_completed,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pool(client: BatchClient) -> Iterator[str]:
    pool_id = f"ctl-{uuid.uuid4().hex[:8]}"
    create_pool(client, pool_id, nodes=1, slots=4)
    wait_idle_nodes(client, pool_id, 1)
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def node_running_slots(client: BatchClient, pool_id: str) -> int:
    (node,) = list(client.list_nodes(pool_id))
    return int(node.running_task_slots_count or 0)


def test_terminate_running_task(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    job_id = f"tt-{uid}"
    new_job(client, job_id, pool)
    client.create_task(job_id, pid_task("long", tmp_path / "long.pid", required_slots=2))
    pid = read_pid(tmp_path / "long.pid")
    wait_task_state(client, job_id, "long", "running")
    client.terminate_task(job_id, "long")
    t = client.get_task(job_id, "long")
    assert t.state == "completed"
    assert t.previous_state == "running"
    assert t.execution_info.result == "failure"
    assert t.execution_info.failure_info.code == "TaskEnded"
    assert t.execution_info.end_time is not None
    wait_pid_gone(pid)
    counts = client.get_job_task_counts(job_id)
    assert (counts.task_counts.running, counts.task_counts.completed, counts.task_counts.failed) == (0, 1, 1)
    assert (counts.task_slot_counts.running, counts.task_slot_counts.failed) == (0, 2)
    assert client.get_job(job_id).state == "active"  # ending a task does not end its job


def test_reactivate_failed_task_resets_retry_count(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"react-{uid}"
    go = tmp_path / "go"
    new_job(client, job_id, pool)
    # fails (the try and its one retry) until the test creates `go`
    client.create_task(
        job_id,
        task("flaky", f"test -e {go}", constraints=m.BatchTaskConstraints(max_task_retry_count=1)),
    )
    client.create_task(job_id, task("fine", "exit 0"))
    ts = wait_tasks_completed(client, job_id, ["flaky", "fine"])
    failed = ts["flaky"]
    assert failed.execution_info.result == "failure"
    assert failed.execution_info.retry_count == 1
    assert failed.execution_info.exit_code == 1

    with pytest.raises(HttpResponseError) as succeeded:
        client.reactivate_task(job_id, "fine")  # only a failed task can be reactivated
    assert succeeded.value.status_code == 409

    go.touch()
    client.reactivate_task(job_id, "flaky")
    again = wait_tasks_completed(client, job_id, ["flaky"])["flaky"]
    assert again.execution_info.result == "success"
    assert again.execution_info.retry_count == 0, "reactivation resets the retry count"
    assert again.execution_info.failure_info is None
    assert again.execution_info.exit_code == 0
    counts = client.get_job_task_counts(job_id).task_counts
    assert (counts.completed, counts.succeeded, counts.failed) == (2, 2, 0)


def test_reactivated_task_is_active_again(client: BatchClient, pool: str, uid: str) -> None:
    """Seen through a disabled job, so the reactivated task cannot be picked up before it is read."""
    job_id = f"react-dis-{uid}"
    new_job(client, job_id, pool)
    client.create_task(job_id, task("bad", "exit 7"))
    wait_tasks_completed(client, job_id, ["bad"])
    client.begin_disable_job(
        job_id, m.BatchJobDisableOptions(disable_tasks="wait"), polling_interval=0.2
    ).result()
    client.reactivate_task(job_id, "bad")
    t = client.get_task(job_id, "bad")
    assert t.state == "active"
    assert t.previous_state == "completed"
    assert t.execution_info.retry_count == 0
    assert t.execution_info.result is None and t.execution_info.exit_code is None
    assert t.execution_info.failure_info is None
    counts = client.get_job_task_counts(job_id).task_counts
    assert (counts.active, counts.completed, counts.failed) == (1, 0, 0)


def test_delete_running_task(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    job_id = f"tdel-{uid}"
    new_job(client, job_id, pool)
    client.create_task(job_id, pid_task("long", tmp_path / "long.pid", required_slots=3))
    pid = read_pid(tmp_path / "long.pid")
    wait_task_state(client, job_id, "long", "running")
    assert pid_alive(pid)
    client.delete_task(job_id, "long")
    with pytest.raises(ResourceNotFoundError):
        client.get_task(job_id, "long")
    wait_pid_gone(pid)
    wait_for(lambda: node_running_slots(client, pool) == 0, 15, 0.05, "the node to free the task's slots")
    counts = client.get_job_task_counts(job_id)
    assert counts.task_counts.running == 0 and counts.task_slot_counts.running == 0
    assert list(client.list_tasks(job_id)) == []


def test_put_constraints(client: BatchClient, pool: str, uid: str) -> None:
    """PUT a task's constraints while it waits (its job is disabled), then let it run under them."""
    job_id = f"tput-{uid}"
    new_job(client, job_id, pool)
    client.begin_disable_job(
        job_id, m.BatchJobDisableOptions(disable_tasks="wait"), polling_interval=0.2
    ).result()
    client.create_task(job_id, task("t", "exit 1"))
    t = client.get_task(job_id, "t")
    assert t.state == "active"
    assert t.constraints.max_task_retry_count == 0
    before = t.etag

    t.constraints = m.BatchTaskConstraints(
        max_task_retry_count=2,
        max_wall_clock_time=dt.timedelta(minutes=5),
        retention_time=dt.timedelta(hours=1),
    )
    client.replace_task(job_id, "t", t)
    got = client.get_task(job_id, "t")
    assert got.constraints.max_task_retry_count == 2
    assert got.constraints.max_wall_clock_time == dt.timedelta(minutes=5)
    assert got.constraints.retention_time == dt.timedelta(hours=1)
    assert got.etag != before

    client.begin_enable_job(job_id, polling_interval=0.2).result()
    done = wait_tasks_completed(client, job_id, ["t"])["t"]
    assert done.execution_info.retry_count == 2, "the new maxTaskRetryCount applied"
    # a completed task's constraints can no longer change
    expect_error(lambda: client.replace_task(job_id, "t", done), 409, "TaskCompleted")


def test_retention_time_cleans_up_task_files(
    live: LiveServer, client: BatchClient, pool: str, uid: str
) -> None:
    job_id = f"ret-{uid}"
    new_job(client, job_id, pool)
    client.create_task(
        job_id,
        task(
            "t",
            "echo kept-for-a-moment",
            constraints=m.BatchTaskConstraints(retention_time=dt.timedelta(seconds=3)),
        ),
    )
    client.create_task(job_id, task("keep", "echo kept"))
    wait_tasks_completed(client, job_id, ["t", "keep"])
    assert client.get_task(job_id, "t").constraints.retention_time == dt.timedelta(seconds=3)
    assert "stdout.txt" in {f.name for f in client.list_task_files(job_id, "t")}

    def cleaned() -> str | None:
        try:
            list(client.list_task_files(job_id, "t"))
        except HttpResponseError as e:
            return error_code(e)
        return None

    code = wait_for(cleaned, 15, 0.1, "the task's files to be cleaned up")
    assert code in ("TaskFilesCleanedup", "FileNotFound")
    with pytest.raises(HttpResponseError) as dl:
        b"".join(client.download_task_file(job_id, "t", "stdout.txt"))
    # the SDK streams downloads and does not read an error body, so only the status is visible here
    assert dl.value.status_code in (409, 404)
    body = Raw(live).get(f"/jobs/{job_id}/tasks/t/files/stdout.txt").json()
    assert body["code"] in ("TaskFilesCleanedup", "FileNotFound")
    # the task itself stays, and so do the files of a task with the default retention (7 days)
    assert client.get_task(job_id, "t").state == "completed"
    assert b"".join(client.download_task_file(job_id, "keep", "stdout.txt")) == b"kept\n"
    assert wait_job_state(client, job_id, "active").state == "active"


def test_each_attempt_runs_exactly_once(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    """Every try (the first run and each retry) starts the command once: no duplicate executions."""
    job_id = f"once-{uid}"
    log = tmp_path / "runs.log"
    new_job(client, job_id, pool, constraints=m.BatchJobConstraints(max_task_retry_count=1))
    client.create_task_collection(
        job_id,
        m.BatchTaskGroup(
            task_values=[task(f"t{i:02d}", f"echo $AZ_BATCH_TASK_ID >> {log}; exit 1") for i in range(24)]
        ),
    )
    ts = wait_tasks_completed(client, job_id, [f"t{i:02d}" for i in range(24)])
    assert all(t.execution_info.retry_count == 1 for t in ts.values())
    lines = log.read_text().split()
    assert {tid: lines.count(tid) for tid in ts} == {tid: 2 for tid in ts}
