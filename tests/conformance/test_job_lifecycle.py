"""Job lifecycle through the official azure-batch 15.1.0 SDK against a live server with real agents.

Covers the exit-condition job actions (onTaskFailure=performexitoptionsjobaction), onAllTasksComplete,
job constraints (maxWallClockTime, maxTaskRetryCount inherited by tasks), terminate / disable (requeue,
terminate, wait) / enable / delete, PUT resetting unspecified properties and adding tasks to a completed job.
Semantics: peers-and-semantics.md §5.3 and rest_api.md §1.10; the SDK's begin_terminate_job docstring.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models import _models as private_models
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state
from tests.support.live import LiveServer
from tests.support.raw import Raw
from tests.support.semantics import (
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

PERFORM = "performexitoptionsjobaction"
INFINITE = dt.timedelta(days=10675199, seconds=10085, microseconds=477581)  # P10675199DT2H48M5.4775807S


@pytest.fixture(scope="module")
def pool(client: BatchClient) -> Iterator[str]:
    """One node with four slots, shared by the tests of this module (each uses its own jobs)."""
    pool_id = f"life-{uuid.uuid4().hex[:8]}"
    create_pool(client, pool_id, nodes=1, slots=4)
    wait_idle_nodes(client, pool_id, 1)
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def terminate(client: BatchClient, job_id: str, reason: str = "Stopped by test") -> None:
    """begin_terminate_job with a non-empty options body. azure-batch 15.1.0 cannot send a terminate without a
    reason: with options=None (or an empty BatchJobTerminateOptions, which is falsy) it sets content-type None
    and fails in the client with ValueError. BatchJobTerminateOptions is not re-exported either."""
    options = private_models.BatchJobTerminateOptions(termination_reason=reason)
    client.begin_terminate_job(job_id, options, polling_interval=0.2).result()


def terminate_without_body(live: LiveServer, client: BatchClient, job_id: str) -> None:
    """POST /jobs/{id}/terminate with no body, as REST clients and az send it, then wait for completion."""
    resp = Raw(live).post(f"/jobs/{job_id}/terminate")
    assert resp.status_code == 202, resp.text()
    wait_job_state(client, job_id, "completed")


# --- exit-condition job actions ----------------------------------------------------------------------------


def test_failed_task_terminates_job_by_default(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"ja-term-{uid}"
    new_job(client, job_id, pool, task_failure_mode=PERFORM)
    client.create_task(job_id, pid_task("long", tmp_path / "long.pid"))
    pid = read_pid(tmp_path / "long.pid")
    client.create_task(job_id, task("bad", "exit 1"))  # no exitConditions: jobAction defaults to terminate
    job = wait_job_state(client, job_id, "completed")
    assert job.execution_info.termination_reason == "TaskFailed"
    assert job.execution_info.end_time is not None
    long = client.get_task(job_id, "long")
    assert long.state == "completed" and long.execution_info.result == "failure"
    wait_pid_gone(pid)


def test_pre_processing_error_terminates_job_by_default(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"ja-pre-{uid}"
    new_job(client, job_id, pool, task_failure_mode=PERFORM)
    client.create_task(job_id, m.BatchTaskCreateOptions(id="missing", command_line="/no/such/program"))
    job = wait_job_state(client, job_id, "completed")
    assert job.execution_info.termination_reason == "TaskFailed"
    t = client.get_task(job_id, "missing")
    assert t.execution_info.failure_info.code == "CommandProgramNotFound"


def test_job_action_none_and_noaction_job_keep_job_active(client: BatchClient, pool: str, uid: str) -> None:
    perform, plain = f"ja-none-{uid}", f"ja-plain-{uid}"
    new_job(client, perform, pool, task_failure_mode=PERFORM)
    new_job(client, plain, pool)  # onTaskFailure defaults to noaction: failures never act on the job
    none = m.ExitOptions(job_action="none")
    client.create_task(
        perform,
        task(
            "t",
            "exit 2",
            exit_conditions=m.ExitConditions(exit_codes=[m.ExitCodeMapping(code=2, exit_options=none)]),
        ),
    )
    client.create_task(plain, task("t", "exit 2"))
    client.create_task(
        perform,
        m.BatchTaskCreateOptions(
            id="missing",
            command_line="/no/such/program",
            exit_conditions=m.ExitConditions(pre_processing_error=none),
        ),
    )
    missing = wait_tasks_completed(client, perform, ["missing"])["missing"]
    assert missing.execution_info.failure_info.code == "CommandProgramNotFound"
    wait_tasks_completed(client, perform, ["t"])
    wait_tasks_completed(client, plain, ["t"])
    # the job action is taken when the task completes, so the job state already reflects it
    assert client.get_job(perform).state == "active"
    assert client.get_job(plain).state == "active"
    assert client.get_job(plain).task_failure_mode == "noaction"


def test_job_action_disable_requeues(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    job_id = f"ja-dis-{uid}"
    new_job(client, job_id, pool, task_failure_mode=PERFORM)
    client.create_task(job_id, pid_task("long", tmp_path / "long.pid"))
    pid = read_pid(tmp_path / "long.pid")
    disable = m.ExitOptions(job_action="disable")
    client.create_task(
        job_id,
        task(
            "bad",
            "exit 4",
            exit_conditions=m.ExitConditions(
                exit_code_ranges=[m.ExitCodeRangeMapping(start=3, end=5, exit_options=disable)]
            ),
        ),
    )
    job = wait_job_state(client, job_id, "disabled")
    assert job.execution_info.termination_reason is None
    long = wait_task_state(client, job_id, "long", "active")  # disable == Disable Job with requeue
    assert long.execution_info.requeue_count == 1
    wait_pid_gone(pid)
    terminate(client, job_id)


def test_job_action_needs_perform_exit_options(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"ja-bad-{uid}"
    new_job(client, job_id, pool)  # onTaskFailure noaction
    for opts in (
        m.ExitConditions(default=m.ExitOptions(job_action="terminate")),
        m.ExitConditions(
            exit_codes=[m.ExitCodeMapping(code=1, exit_options=m.ExitOptions(job_action="none"))]
        ),
    ):
        expect_error(
            lambda opts=opts: client.create_task(job_id, task("t", "exit 1", exit_conditions=opts)),
            400,
            "InvalidPropertyValue",
        )
    # dependencyAction alone is fine on such a job
    client.create_task(
        job_id,
        task(
            "ok",
            "exit 1",
            exit_conditions=m.ExitConditions(default=m.ExitOptions(dependency_action="satisfy")),
        ),
    )
    assert [t.id for t in client.list_tasks(job_id)] == ["ok"]


# --- onAllTasksComplete ------------------------------------------------------------------------------------


def test_terminatejob_with_no_tasks_completes_the_job(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"atc-empty-{uid}"
    new_job(client, job_id, pool, all_tasks_complete_mode="terminatejob")
    job = wait_job_state(client, job_id, "completed")
    assert job.execution_info.termination_reason == "AllTasksComplete"
    expect_error(lambda: client.create_task(job_id, task("late", "exit 0")), 409, "JobCompleted")
    with pytest.raises(ResourceExistsError):
        client.create_task(job_id, task("late", "exit 0"))


def test_patch_to_terminatejob_after_adding_tasks(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"atc-patch-{uid}"
    new_job(client, job_id, pool)
    client.create_task_collection(
        job_id,
        m.BatchTaskGroup(
            task_values=[task("quick", "exit 0"), task("slow", "sleep 2"), task("bad", "exit 1")]
        ),
    )
    wait_tasks_completed(client, job_id, ["quick", "bad"])
    assert client.get_job(job_id).state == "active"  # noaction: completed tasks do not end the job
    client.update_job(job_id, m.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    j = client.get_job(job_id)
    assert j.all_tasks_complete_mode == "terminatejob"
    assert j.state == "active", "slow is still running"
    job = wait_job_state(client, job_id, "completed")
    assert (
        job.execution_info.termination_reason == "AllTasksComplete"
    )  # a failed task still counts as complete
    slow = client.get_task(job_id, "slow")
    assert slow.execution_info.result == "success"
    assert slow.execution_info.end_time <= job.execution_info.end_time


# --- constraints -------------------------------------------------------------------------------------------


def test_max_wall_clock_time_ends_job_and_running_task(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"wall-{uid}"
    new_job(
        client, job_id, pool, constraints=m.BatchJobConstraints(max_wall_clock_time=dt.timedelta(seconds=2))
    )
    client.create_task(job_id, pid_task("long", tmp_path / "long.pid"))
    pid = read_pid(tmp_path / "long.pid")
    job = wait_job_state(client, job_id, "completed", timeout=15)
    assert job.execution_info.termination_reason == "MaxWallClockTimeExpiry"
    assert job.constraints.max_wall_clock_time == dt.timedelta(seconds=2)
    assert job.execution_info.end_time - job.creation_time < dt.timedelta(seconds=10)
    long = client.get_task(job_id, "long")
    assert long.state == "completed" and long.execution_info.result == "failure"
    wait_pid_gone(pid)


def test_job_max_task_retry_count_is_inherited(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"retry-{uid}"
    new_job(client, job_id, pool, constraints=m.BatchJobConstraints(max_task_retry_count=2))
    client.create_task(job_id, task("inherits", "exit 1"))
    client.create_task(
        job_id, task("own", "exit 1", constraints=m.BatchTaskConstraints(max_task_retry_count=0))
    )
    ts = wait_tasks_completed(client, job_id, ["inherits", "own"])
    assert ts["inherits"].constraints.max_task_retry_count == 2
    assert ts["inherits"].execution_info.retry_count == 2
    assert ts["own"].constraints.max_task_retry_count == 0
    assert ts["own"].execution_info.retry_count == 0
    assert ts["own"].constraints.max_wall_clock_time == INFINITE
    assert ts["own"].constraints.retention_time == dt.timedelta(days=7)


# --- terminate / disable / enable / delete -----------------------------------------------------------------


def test_terminate_kills_running_tasks_and_completes_job(
    live: LiveServer, client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"term-{uid}"
    new_job(client, job_id, pool)
    client.create_task(job_id, pid_task("long", tmp_path / "long.pid"))
    pid = read_pid(tmp_path / "long.pid")
    before = client.get_job(job_id).etag
    terminate_without_body(live, client, job_id)
    job = client.get_job(job_id)
    assert job.state == "completed"
    assert job.previous_state == "terminating"
    assert job.execution_info.termination_reason == "UserTerminate"
    assert job.execution_info.end_time is not None
    assert job.etag != before
    long = client.get_task(job_id, "long")
    assert long.state == "completed"
    assert long.execution_info.result == "failure"
    wait_pid_gone(pid)
    expect_error(lambda: client.create_task(job_id, task("late", "exit 0")), 409, "JobCompleted")
    # terminating a completed job again is refused
    expect_error(lambda: terminate(client, job_id), 409, "JobCompleted")


def test_terminate_with_reason(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"term-r-{uid}"
    new_job(client, job_id, pool)
    terminate(client, job_id, "Stopped by test")
    job = client.get_job(job_id)
    assert job.state == "completed"
    assert job.execution_info.termination_reason == "Stopped by test"


def test_terminate_leaves_active_tasks_active(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    """begin_terminate_job (REST Job - Terminate): "If there are any Tasks in the Job in the active state, they
    will remain in the active state. Once a Job is terminated, new Tasks cannot be added and any remaining
    active Tasks will not be scheduled." """
    job_id = f"term-act-{uid}"
    new_job(client, job_id, pool, max_parallel_tasks=1)
    client.create_task(job_id, pid_task("long", tmp_path / "long.pid"))
    read_pid(tmp_path / "long.pid")
    client.create_task(job_id, task("queued", "exit 0"))  # held back by maxParallelTasks=1
    terminate(client, job_id)
    assert client.get_task(job_id, "long").state == "completed"
    queued = client.get_task(job_id, "queued")
    assert queued.state == "active"
    assert queued.execution_info is None or queued.execution_info.result is None


def test_disable_requeue_then_enable(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    job_id = f"dis-rq-{uid}"
    go = tmp_path / "go"
    new_job(client, job_id, pool)
    # the first run records its pid and sleeps; once the test has created `go` a rerun succeeds at once
    client.create_task(
        job_id,
        task("t", f"if [ -e {go} ]; then exit 0; fi; echo $$ > {tmp_path}/t.pid; exec sleep 30"),
    )
    pid = read_pid(tmp_path / "t.pid")
    wait_task_state(client, job_id, "t", "running")
    client.begin_disable_job(
        job_id, m.BatchJobDisableOptions(disable_tasks="requeue"), polling_interval=0.2
    ).result()
    job = client.get_job(job_id)
    assert job.state == "disabled"
    t = client.get_task(job_id, "t")
    assert t.state == "active"
    assert t.execution_info.requeue_count == 1
    assert t.execution_info.retry_count == 0
    wait_pid_gone(pid)

    # nothing of a disabled job is scheduled: a probe in another job on the same pool runs meanwhile
    probe_job = f"dis-probe-{uid}"
    new_job(client, probe_job, pool)
    client.create_task(probe_job, task("probe", "exit 0"))
    wait_tasks_completed(client, probe_job, ["probe"])
    assert client.get_task(job_id, "t").state == "active"
    client.create_task(job_id, task("added-while-disabled", "exit 0"))  # a disabled job accepts tasks

    go.touch()
    client.begin_enable_job(job_id, polling_interval=0.2).result()
    assert client.get_job(job_id).state == "active"
    ts = wait_tasks_completed(client, job_id, ["t", "added-while-disabled"])
    assert ts["t"].execution_info.result == "success"
    assert ts["t"].execution_info.requeue_count == 1
    assert ts["added-while-disabled"].execution_info.result == "success"


def test_disable_terminate_and_wait(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    term, wait = f"dis-term-{uid}", f"dis-wait-{uid}"
    new_job(client, term, pool)
    new_job(client, wait, pool)
    client.create_task(term, pid_task("t", tmp_path / "term.pid"))
    client.create_task(wait, task("t", f"echo $$ > {tmp_path}/wait.pid; sleep 2"))
    term_pid = read_pid(tmp_path / "term.pid")
    read_pid(tmp_path / "wait.pid")
    wait_task_state(client, term, "t", "running")
    wait_task_state(client, wait, "t", "running")

    client.begin_disable_job(
        term, m.BatchJobDisableOptions(disable_tasks="terminate"), polling_interval=0.2
    ).result()
    assert client.get_job(term).state == "disabled"
    t = client.get_task(term, "t")
    assert t.state == "completed" and t.execution_info.result == "failure"
    wait_pid_gone(term_pid)

    client.begin_disable_job(
        wait, m.BatchJobDisableOptions(disable_tasks="wait"), polling_interval=0.2
    ).result()
    t = wait_tasks_completed(client, wait, ["t"])["t"]
    assert t.execution_info.result == "success", "wait lets the running task finish"
    assert t.execution_info.requeue_count == 0
    assert client.get_job(wait).state == "disabled"


def test_delete_job_kills_its_tasks(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    job_id = f"del-{uid}"
    new_job(client, job_id, pool)
    client.create_task(job_id, pid_task("long", tmp_path / "long.pid"))
    pid = read_pid(tmp_path / "long.pid")
    assert pid_alive(pid)
    client.begin_delete_job(job_id, polling_interval=0.2).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_job(job_id)
    assert job_id not in {j.id for j in client.list_jobs()}
    wait_pid_gone(pid)


# --- update / replace --------------------------------------------------------------------------------------


def test_put_resets_unspecified_properties(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"put-{uid}"
    new_job(
        client,
        job_id,
        pool,
        priority=10,
        max_parallel_tasks=3,
        metadata=[m.BatchMetadataItem(name="owner", value="tests")],
        constraints=m.BatchJobConstraints(max_wall_clock_time=dt.timedelta(hours=1), max_task_retry_count=3),
    )
    # PATCH keeps what it does not name
    client.update_job(job_id, m.BatchJobUpdateOptions(priority=20))
    j = client.get_job(job_id)
    assert (j.priority, j.max_parallel_tasks, j.constraints.max_task_retry_count) == (20, 3, 3)
    assert [(x.name, x.value) for x in j.metadata] == [("owner", "tests")]

    # PUT replaces: everything it does not name goes back to its default
    client.replace_job(job_id, m.BatchJob(pool_info=m.BatchPoolInfo(pool_id=pool), priority=5))
    j = client.get_job(job_id)
    assert j.priority == 5
    assert not j.metadata
    assert j.max_parallel_tasks == -1
    assert j.constraints.max_task_retry_count == 0
    assert j.constraints.max_wall_clock_time == INFINITE
    assert j.all_tasks_complete_mode == "noaction"
    assert j.pool_info.pool_id == pool
    assert j.state == "active"
