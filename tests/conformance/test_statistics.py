"""`$expand=stats` on jobs and tasks: real CPU and wall-clock figures from the task processes."""

from __future__ import annotations

import datetime as dt

import pytest
from azure.batch import BatchClient
from azure.batch import models as m

from tests.support.batch import create_pool, wait_idle_nodes, wait_tasks_done

pytestmark = pytest.mark.slow

BURN = "/bin/sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'"


def test_job_and_task_statistics(client: BatchClient, uid: str) -> None:
    pool_id, job_id = f"stpool-{uid}", f"stjob-{uid}"
    create_pool(client, pool_id, nodes=1, slots=2)
    wait_idle_nodes(client, pool_id, 1)
    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(job_id, m.BatchTaskCreateOptions(id="burn", command_line=BURN))
    client.create_task(
        job_id,
        m.BatchTaskCreateOptions(
            id="flaky",
            command_line="/bin/sh -c 'exit 4'",
            constraints=m.BatchTaskConstraints(max_task_retry_count=1),
        ),
    )
    wait_tasks_done(client, job_id, 2)

    plain = client.get_task(job_id, "burn")
    assert plain.task_statistics is None  # only with $expand=stats
    t = client.get_task(job_id, "burn", expand=["stats"])
    assert t.task_statistics is not None
    assert t.task_statistics.url.endswith(f"/jobs/{job_id}/tasks/burn")
    assert t.task_statistics.user_cpu_time + t.task_statistics.kernel_cpu_time > dt.timedelta(0)
    wall = t.execution_info.end_time - t.execution_info.start_time
    assert abs(t.task_statistics.wall_clock_time - wall) < dt.timedelta(milliseconds=5)

    j = client.get_job(job_id, expand=["stats"])
    assert j.job_statistics is not None
    assert (
        j.job_statistics.succeeded_tasks_count,
        j.job_statistics.failed_tasks_count,
        j.job_statistics.task_retries_count,
    ) == (1, 1, 1)
    assert j.job_statistics.user_cpu_time >= t.task_statistics.user_cpu_time
    assert j.job_statistics.wall_clock_time >= t.task_statistics.wall_clock_time
    listed = {x.id: x for x in client.list_tasks(job_id, expand=["stats"])}
    assert listed["burn"].task_statistics is not None and listed["flaky"].task_statistics is not None
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()
