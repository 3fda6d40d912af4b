"""The tutorial flow through the official azure-batch 15.1.0 SDK, against a live server with real agents."""

from __future__ import annotations

import datetime as dt
import socket

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import ResourceNotFoundError

from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state, wait_tasks_done

pytestmark = pytest.mark.slow


def test_tutorial_flow_with_sdk(client: BatchClient, uid: str) -> None:
    pool_id, job_id = f"pool-{uid}", f"job-{uid}"
    images = list(client.list_supported_images())
    ubuntu = next(i for i in images if i.node_agent_sku_id == "batch.node.ubuntu 22.04")
    assert ubuntu.os_type == "linux"

    create_pool(client, pool_id, nodes=1)
    pool = client.get_pool(pool_id)
    assert pool.vm_size == "standard_d2s_v3"
    assert pool.target_dedicated_nodes == 1
    nodes = wait_idle_nodes(client, pool_id, 1)
    assert nodes[0].id.startswith("tvmps_") and nodes[0].id.endswith("_d")
    assert client.get_pool(pool_id).current_dedicated_nodes == 1

    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    script = "echo Task $AZ_BATCH_TASK_ID on host: $(hostname); echo err >&2; echo done"
    client.create_task(job_id, m.BatchTaskCreateOptions(id="task1", command_line=f"/bin/bash -c '{script}'"))
    result = client.create_task_collection(
        job_id,
        m.BatchTaskGroup(
            task_values=[
                m.BatchTaskCreateOptions(
                    id=f"task{i}", command_line=f"/bin/bash -c 'echo Task {i}; sleep 0.2'"
                )
                for i in range(2, 6)
            ]
        ),
    )
    assert sorted(r.task_id for r in result.result_values) == ["task2", "task3", "task4", "task5"]
    assert {r.status.lower() for r in result.result_values} == {"success"}

    tasks = wait_tasks_done(client, job_id, 5)
    for t in tasks:
        assert t.execution_info.exit_code == 0
        assert t.execution_info.result == "success"
        assert t.execution_info.start_time <= t.execution_info.end_time
        assert t.node_info.node_id == nodes[0].id
        assert t.previous_state == "running"

    out = b"".join(client.download_task_file(job_id, "task1", "stdout.txt")).decode()
    assert out.splitlines() == [f"Task task1 on host: {socket.gethostname()}", "done"]
    err = b"".join(client.download_task_file(job_id, "task1", "stderr.txt")).decode()
    assert err == "err\n"
    props = client.get_task_file_properties(job_id, "task1", "stdout.txt")
    assert props.content_length == len(out.encode())
    assert props.is_directory is False
    names = {f.name for f in client.list_task_files(job_id, "task1", recursive=True)}
    assert {"stdout.txt", "stderr.txt", "wd"} <= names
    counts = client.get_job_task_counts(job_id)
    assert (counts.task_counts.completed, counts.task_counts.succeeded, counts.task_counts.failed) == (
        5,
        5,
        0,
    )
    assert counts.task_counts.active == 0 and counts.task_counts.running == 0

    client.begin_delete_job(job_id, polling_interval=0.2).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_job(job_id)
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_pool(pool_id)


def test_environment_retries_and_wall_clock(client: BatchClient, uid: str) -> None:
    pool_id, job_id = f"envpool-{uid}", f"envjob-{uid}"
    create_pool(client, pool_id, nodes=1, slots=4)
    wait_idle_nodes(client, pool_id, 1)
    client.create_job(
        m.BatchJobCreateOptions(
            id=job_id,
            pool_info=m.BatchPoolInfo(pool_id=pool_id),
            common_environment_settings=[m.EnvironmentSetting(name="COMMON", value="c1")],
        )
    )
    env_cmd = "/bin/sh -c 'echo $AZ_BATCH_JOB_ID $AZ_BATCH_POOL_ID $COMMON $OWN; pwd'"
    client.create_task(
        job_id,
        m.BatchTaskCreateOptions(
            id="env",
            command_line=env_cmd,
            environment_settings=[m.EnvironmentSetting(name="OWN", value="o1")],
        ),
    )
    client.create_task(
        job_id,
        m.BatchTaskCreateOptions(
            id="flaky",
            command_line="/bin/sh -c 'exit 3'",
            constraints=m.BatchTaskConstraints(max_task_retry_count=2),
        ),
    )
    client.create_task(
        job_id,
        m.BatchTaskCreateOptions(
            id="slow",
            command_line="/bin/sh -c 'sleep 60'",
            constraints=m.BatchTaskConstraints(max_wall_clock_time=dt.timedelta(seconds=1)),
        ),
    )
    client.create_task(job_id, m.BatchTaskCreateOptions(id="missing", command_line="/no/such/program"))
    wait_tasks_done(client, job_id, 4)

    env = client.get_task(job_id, "env")
    out = b"".join(client.download_task_file(job_id, "env", "stdout.txt")).decode().splitlines()
    assert out[0] == f"{job_id} {pool_id} c1 o1"
    assert out[1].endswith(f"/workitems/{job_id}/job-1/env/wd")
    assert env.execution_info.exit_code == 0

    flaky = client.get_task(job_id, "flaky")
    assert flaky.execution_info.exit_code == 3
    assert flaky.execution_info.retry_count == 2
    assert flaky.execution_info.result == "failure"
    assert flaky.execution_info.failure_info.code == "FailureExitCode"

    slow = client.get_task(job_id, "slow")
    assert slow.execution_info.result == "failure"
    elapsed = slow.execution_info.end_time - slow.execution_info.start_time
    assert elapsed < dt.timedelta(seconds=20)

    missing = client.get_task(job_id, "missing")
    assert missing.execution_info.failure_info.code == "CommandProgramNotFound"
    assert missing.execution_info.exit_code is None

    counts = client.get_job_task_counts(job_id).task_counts
    assert (counts.completed, counts.succeeded, counts.failed) == (4, 1, 3)

    client.terminate_task(job_id, "env")  # terminating a completed task changes nothing
    assert client.get_task(job_id, "env").execution_info.result == "success"
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_terminate_running_task_and_resize(client: BatchClient, uid: str) -> None:
    pool_id, job_id = f"rzpool-{uid}", f"rzjob-{uid}"
    create_pool(client, pool_id, nodes=1)
    wait_idle_nodes(client, pool_id, 1)
    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(job_id, m.BatchTaskCreateOptions(id="long", command_line="/bin/sh -c 'sleep 120'"))
    wait_task_state(client, job_id, "long", "running")
    client.terminate_task(job_id, "long")
    t = client.get_task(job_id, "long")
    assert t.state == "completed"
    assert t.execution_info.failure_info.code == "TaskEnded"

    client.begin_resize_pool(
        pool_id, m.BatchPoolResizeOptions(target_dedicated_nodes=3), polling_interval=0.2
    ).result()
    wait_idle_nodes(client, pool_id, 3)
    assert client.get_pool(pool_id).current_dedicated_nodes == 3
    client.begin_resize_pool(
        pool_id, m.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=0.2
    ).result()
    wait_idle_nodes(client, pool_id, 1)
    counts = list(client.list_pool_node_counts())
    mine = next(c for c in counts if c.pool_id == pool_id)
    assert mine.dedicated.total == 1
    client.begin_delete_job(job_id, polling_interval=0.2).result()
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()
