"""The Job Manager task through the official azure-batch 15.1.0 SDK, against a live server with real agents:
created with its job and listed as its task, killJobOnCompletion, runExclusive, allowLowPriorityNode,
retries, environment, job schedules, and the errors of bad specs.
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

from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state
from tests.support.live import wait_for
from tests.support.semantics import (
    expect_error,
    read_pid,
    sh,
    task,
    wait_job_state,
    wait_tasks_completed,
)

pytestmark = pytest.mark.slow


def terminate(client: BatchClient, job_id: str) -> None:
    """begin_terminate_job needs a non-empty options body with azure-batch 15.1.0 (see test_job_lifecycle)."""
    options = private_models.BatchJobTerminateOptions(termination_reason="UserTerminate")
    client.begin_terminate_job(job_id, options, polling_interval=0.2).result()


@pytest.fixture(scope="module")
def pool(client: BatchClient) -> Iterator[str]:
    pool_id = f"jm-{uuid.uuid4().hex[:8]}"
    create_pool(client, pool_id, nodes=2, slots=2)
    wait_idle_nodes(client, pool_id, 2)
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def jm(script: str, **kw: object) -> m.BatchJobManagerTask:
    return m.BatchJobManagerTask(id=str(kw.pop("id", "jm")), command_line=sh(script), **kw)  # type: ignore[arg-type]


def create(
    client: BatchClient, job_id: str, pool_id: str, manager: m.BatchJobManagerTask, **kw: object
) -> None:
    client.create_job(
        m.BatchJobCreateOptions(
            id=job_id,
            pool_info=m.BatchPoolInfo(pool_id=pool_id),
            job_manager_task=manager,
            **kw,  # type: ignore[arg-type]
        )
    )


def test_job_manager_is_a_task_of_its_job_and_ends_it(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"jm-{uid}"
    create(client, job_id, pool, jm("echo managing; exit 3", display_name="the manager"))
    job = client.get_job(job_id)
    spec = job.job_manager_task
    assert spec is not None and spec.id == "jm"
    # the defaults the service materialises (recorded)
    assert spec.kill_job_on_completion is True and spec.run_exclusive is True
    assert spec.allow_low_priority_node is True and spec.required_slots == 1
    assert spec.constraints is not None and spec.constraints.retention_time == dt.timedelta(days=7)
    assert spec.user_identity is not None and spec.user_identity.auto_user is not None
    assert [t.id for t in client.list_tasks(job_id)] == ["jm"]
    done = wait_job_state(client, job_id, "completed")
    assert done.execution_info is not None and done.execution_info.termination_reason == "JMComplete"
    t = client.get_task(job_id, "jm")
    assert t.state == "completed" and t.display_name == "the manager"
    assert t.execution_info is not None and t.execution_info.exit_code == 3
    assert t.execution_info.result == "failure"
    out = client.download_task_file(job_id, "jm", "stdout.txt")
    assert b"".join(out).strip() == b"managing"


def test_job_manager_completion_ends_other_running_tasks(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"jmk-{uid}"
    go = tmp_path / "go"
    create(client, job_id, pool, jm(f"while [ ! -e {go} ]; do sleep 0.05; done", run_exclusive=False))
    client.create_task(job_id, task("worker", f"echo $$ > {tmp_path / 'w.pid'}; exec sleep 60"))
    read_pid(tmp_path / "w.pid")
    wait_task_state(client, job_id, "worker", "running")
    go.touch()
    wait_job_state(client, job_id, "completed")
    w = client.get_task(job_id, "worker")
    assert w.state == "completed"
    assert w.execution_info is not None and w.execution_info.failure_info is not None
    assert w.execution_info.failure_info.code == "TaskEnded"


def test_kill_job_on_completion_false_keeps_the_job(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"jmf-{uid}"
    create(client, job_id, pool, jm("true", kill_job_on_completion=False))
    wait_tasks_completed(client, job_id, ["jm"])
    assert client.get_job(job_id).state == "active"
    assert client.get_job(job_id).job_manager_task.kill_job_on_completion is False  # type: ignore[union-attr]
    terminate(client, job_id)


def test_job_manager_runs_first_and_adds_tasks(client: BatchClient, pool: str, uid: str) -> None:
    """A manager that adds the job's tasks with its environment; onAllTasksComplete ends the job."""
    job_id = f"jma-{uid}"
    script = "echo $AZ_BATCH_JOB_ID $AZ_BATCH_TASK_ID $AZ_BATCH_TASK_WORKING_DIR $JM_VAR $COMMON"
    create(
        client,
        job_id,
        pool,
        jm(
            script,
            environment_settings=[m.EnvironmentSetting(name="JM_VAR", value="v1")],
            kill_job_on_completion=False,
        ),
        common_environment_settings=[m.EnvironmentSetting(name="COMMON", value="c1")],
    )
    client.create_task(job_id, task("after", "true"))
    tasks = wait_tasks_completed(client, job_id, ["jm", "after"])
    jm_ei, after_ei = tasks["jm"].execution_info, tasks["after"].execution_info
    assert jm_ei is not None and after_ei is not None
    assert jm_ei.result == "success"
    words = b"".join(client.download_task_file(job_id, "jm", "stdout.txt")).decode().split()
    assert words[0] == job_id and words[1] == "jm" and words[2].endswith(f"/workitems/{job_id}/job-1/jm/wd")
    assert words[3:] == ["v1", "c1"]
    terminate(client, job_id)


def test_run_exclusive_takes_the_whole_node(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    job_id = f"jmx-{uid}"
    go = tmp_path / "go"
    create(client, job_id, pool, jm(f"while [ ! -e {go} ]; do sleep 0.05; done"))
    wait_task_state(client, job_id, "jm", "running")
    jm_node = client.get_task(job_id, "jm").node_info.node_id  # type: ignore[union-attr]
    for i in range(3):
        client.create_task(job_id, task(f"t{i}", f"while [ ! -e {go} ]; do sleep 0.05; done"))
    # the other node has 2 slots: two of them run there, the third waits; none joins the manager
    wait_for(
        lambda: sum(1 for t in client.list_tasks(job_id) if t.state == "running") == 3 or None,
        30,
        0.1,
        "two workers running",
    )
    running = [t for t in client.list_tasks(job_id) if t.state == "running" and t.id != "jm"]
    assert len(running) == 2
    assert all(t.node_info.node_id != jm_node for t in running)  # type: ignore[union-attr]
    counts = client.get_job_task_counts(job_id)
    assert counts.task_slot_counts.running == 3  # the manager counts its requiredSlots, not the node's
    go.touch()
    wait_job_state(client, job_id, "completed")


def test_job_manager_retries(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"jmr-{uid}"
    create(
        client,
        job_id,
        pool,
        jm("exit 1"),
        constraints=m.BatchJobConstraints(max_task_retry_count=2),
    )
    wait_job_state(client, job_id, "completed")
    t = client.get_task(job_id, "jm")
    assert t.constraints is not None and t.constraints.max_task_retry_count == 2  # the job's, by default
    assert t.execution_info is not None and t.execution_info.retry_count == 2


def test_job_manager_on_dedicated_nodes_only(client: BatchClient, uid: str) -> None:
    pool_id = f"jml-{uid}"
    create_pool(client, pool_id, nodes=0, target_low_priority_nodes=1)
    try:
        wait_idle_nodes(client, pool_id, 1)
        job_id = f"jml-{uid}"
        create(client, job_id, pool_id, jm("true", allow_low_priority_node=False))
        client.create_task(job_id, task("other", "true"))
        wait_tasks_completed(client, job_id, ["other"])
        assert client.get_task(job_id, "jm").state == "active"  # no dedicated node: it waits
        create(client, f"jml2-{uid}", pool_id, jm("true"))
        wait_job_state(client, f"jml2-{uid}", "completed")
        terminate(client, job_id)
    finally:
        client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_task_with_the_job_managers_id_is_task_exists(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"jmi-{uid}"
    create(client, job_id, pool, jm("true", id="Manager", kill_job_on_completion=False))
    expect_error(lambda: client.create_task(job_id, task("manager", "true")), 409, "TaskExists")
    terminate(client, job_id)


@pytest.mark.parametrize(
    "manager,prop",
    [
        (m.BatchJobManagerTask(id="bad id", command_line="true"), "jobManagerTask.id"),
        (
            m.BatchJobManagerTask(id="jm", command_line="true", required_slots=0),
            "jobManagerTask.requiredSlots",
        ),
        (
            m.BatchJobManagerTask(
                id="jm", command_line="true", constraints=m.BatchTaskConstraints(max_task_retry_count=-2)
            ),
            "jobManagerTask.constraints.maxTaskRetryCount",
        ),
        (
            m.BatchJobManagerTask(
                id="jm",
                command_line="true",
                resource_files=[m.ResourceFile(http_url="ftp://x/y", file_path="y")],
            ),
            "jobManagerTask.resourceFiles[0].httpUrl",
        ),
    ],
)
def test_bad_job_manager_is_400_and_no_job(
    client: BatchClient, pool: str, uid: str, manager: m.BatchJobManagerTask, prop: str
) -> None:
    job_id = f"jmb-{uid}"
    exc = expect_error(lambda: create(client, job_id, pool, manager), 400, "InvalidPropertyValue")
    values = {v["key"]: v["value"] for v in exc.response.json().get("values", [])}
    assert values.get("PropertyName") == prop
    expect_error(lambda: client.get_job(job_id), 404, "JobNotFound")


def test_unsupported_job_manager_property_is_501(client: BatchClient, pool: str, uid: str) -> None:
    manager = m.BatchJobManagerTask(
        id="jm",
        command_line="true",
        container_settings=m.BatchTaskContainerSettings(image_name="busybox"),
    )
    expect_error(lambda: create(client, f"jmn-{uid}", pool, manager), 501, "NotImplemented")


def test_job_schedule_creates_jobs_with_their_manager(client: BatchClient, pool: str, uid: str) -> None:
    sid = f"jms-{uid}"
    client.create_job_schedule(
        m.BatchJobScheduleCreateOptions(
            id=sid,
            schedule=m.BatchJobScheduleConfiguration(recurrence_interval=dt.timedelta(hours=1)),
            job_specification=m.BatchJobSpecification(
                pool_info=m.BatchPoolInfo(pool_id=pool), job_manager_task=jm("echo scheduled")
            ),
        )
    )
    try:
        got = client.get_job_schedule(sid).job_specification.job_manager_task
        assert got is not None and got.kill_job_on_completion is True and got.run_exclusive is True
        job = wait_for(
            lambda: next(iter(client.list_jobs_from_schedule(sid)), None), 30, 0.1, "the first job"
        )
        wait_job_state(client, job.id, "completed")  # type: ignore[arg-type]
        assert [t.id for t in client.list_tasks(job.id)] == ["jm"]  # type: ignore[arg-type]
    finally:
        client.begin_delete_job_schedule(sid, polling_interval=0.2).result()
