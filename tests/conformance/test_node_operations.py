"""Node operations through the official azure-batch 15.1.0 SDK against a live server with real agents:
reboot, reimage, disable/enable scheduling, deallocate/start, remove nodes, and their wrong-state and bad-option
answers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models._models import (
    BatchNodeDeallocateOptions,
    BatchNodeRebootOptions,
    BatchNodeReimageOptions,
)

from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state
from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error
from tests.support.semantics import expect_error, new_job, pid_alive, pid_task, read_pid, task, wait_pid_gone

pytestmark = pytest.mark.slow
# the 15.1.0 SDK cannot send these operations with no option set (it fails building the request)
REBOOT = BatchNodeRebootOptions(node_reboot_kind="requeue")


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    """A server whose data dir tasks can reach by absolute path ($AZ_BATCH_NODE_SHARED_DIR)."""
    d = Path(tempfile.mkdtemp(prefix="batchyard-nodes-", dir="/tmp"))
    os.chmod(d, 0o755)
    srv = LiveServer(d / "srv").start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Raw:
    return Raw(live)


@pytest.fixture
def pool(client: BatchClient) -> Iterator[str]:
    pool_id = f"nop-{uuid.uuid4().hex[:8]}"
    create_pool(client, pool_id, nodes=1, slots=2)
    wait_idle_nodes(client, pool_id, 1)
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def only_node(client: BatchClient, pool_id: str) -> m.BatchNode:
    (node,) = list(client.list_nodes(pool_id))
    return node


def wait_node(
    client: BatchClient, pool_id: str, node_id: str, *states: str, timeout: float = 60
) -> m.BatchNode:
    def reached() -> m.BatchNode | None:
        n = client.get_node(pool_id, node_id)
        return n if n.state in states else None

    return wait_for(reached, timeout, 0.05, f"node {node_id} to be {states}")


def test_reboot_requeues_running_task_and_comes_back(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    node = only_node(client, pool)
    job_id = f"rb-{uid}"
    new_job(client, job_id, pool)
    marker = tmp_path / "kept"
    client.create_task(job_id, task("keep", f"touch $AZ_BATCH_NODE_SHARED_DIR/kept && touch {marker}"))
    wait_for(marker.exists, 30, what="the shared-dir file")
    client.create_task(job_id, pid_task("long", tmp_path / "long.pid", secs=60))
    pid = read_pid(tmp_path / "long.pid")
    wait_task_state(client, job_id, "long", "running")
    boot = client.get_node(pool, node.id).last_boot_time

    poller = client.begin_reboot_node(
        pool, node.id, BatchNodeRebootOptions(node_reboot_kind="requeue"), polling_interval=1
    )
    n = client.get_node(pool, node.id)
    assert n.state == "rebooting"
    # already rebooting: the real 409
    expect_error(lambda: client.begin_reboot_node(pool, node.id, REBOOT), 409, "NodeBeingRebooted")
    expect_error(
        lambda: client.begin_reimage_node(
            pool, node.id, BatchNodeReimageOptions(node_reimage_option="requeue")
        ),
        409,
        "NodeBeingRebooted",
    )
    poller.result()
    wait_pid_gone(pid)
    t = client.get_task(job_id, "long")
    assert t.execution_info.requeue_count == 1 and t.execution_info.retry_count == 0
    back = wait_node(client, pool, node.id, "idle", "running")
    assert back.last_boot_time is not None and back.last_boot_time > boot
    # a reboot keeps the node's disk: the shared dir file is still there (listed through the node files API)
    names = [f.name for f in client.list_node_files(pool, node.id, recursive=True)]
    assert "shared/kept" in names, names
    # the requeued task runs again
    wait_task_state(client, job_id, "long", "running", timeout=30)
    client.terminate_task(job_id, "long")


def test_reimage_wipes_the_node(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    node = only_node(client, pool)
    job_id = f"ri-{uid}"
    new_job(client, job_id, pool)
    client.create_task(job_id, task("keep", "touch $AZ_BATCH_NODE_SHARED_DIR/wiped"))
    wait_task_state(client, job_id, "keep", "completed")
    client.begin_reimage_node(
        pool, node.id, BatchNodeReimageOptions(node_reimage_option="terminate"), polling_interval=1
    )
    assert client.get_node(pool, node.id).state == "reimaging"
    expect_error(lambda: client.begin_reboot_node(pool, node.id, REBOOT), 409, "NodeBeingReimaged")
    wait_node(client, pool, node.id, "idle")
    names = [f.name for f in client.list_node_files(pool, node.id, recursive=True)]
    assert "shared/wiped" not in names, names


def test_reboot_terminate_ends_the_task(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    node = only_node(client, pool)
    job_id = f"rt-{uid}"
    new_job(client, job_id, pool)
    client.create_task(job_id, pid_task("long", tmp_path / "t.pid", secs=60))
    pid = read_pid(tmp_path / "t.pid")
    wait_task_state(client, job_id, "long", "running")
    client.begin_reboot_node(
        pool, node.id, BatchNodeRebootOptions(node_reboot_kind="terminate"), polling_interval=1
    ).result()
    wait_pid_gone(pid)
    t = client.get_task(job_id, "long")
    assert t.state == "completed"
    assert t.execution_info.result == "failure"
    assert t.execution_info.failure_info.code == "TaskEnded"
    assert t.execution_info.requeue_count == 0
    wait_node(client, pool, node.id, "idle")


def test_reboot_taskcompletion_waits_for_the_task(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    node = only_node(client, pool)
    job_id = f"rc-{uid}"
    new_job(client, job_id, pool)
    go = tmp_path / "go"
    client.create_task(job_id, task("wait", f"while [ ! -e {go} ]; do sleep 0.05; done"))
    wait_task_state(client, job_id, "wait", "running")
    client.begin_reboot_node(pool, node.id, BatchNodeRebootOptions(node_reboot_kind="taskcompletion"))
    # the node waits for its running task; no new task is placed on it meanwhile
    client.create_task(job_id, task("later", "true"))
    assert client.get_node(pool, node.id).state == "running"
    expect_error(lambda: client.begin_reboot_node(pool, node.id, REBOOT), 409, "NodeBeingRebooted")
    assert client.get_task(job_id, "later").state == "active"
    go.touch()
    t = wait_task_state(client, job_id, "wait", "completed")
    assert t.execution_info.result == "success"
    wait_node(client, pool, node.id, "rebooting", "starting", "idle", "running")
    wait_task_state(client, job_id, "later", "completed", timeout=60)
    n = wait_node(client, pool, node.id, "idle")
    assert n.total_tasks_run >= 2 and n.total_tasks_succeeded >= 2


def test_disable_and_enable_scheduling(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    node = only_node(client, pool)
    client.disable_node_scheduling(
        pool, node.id, m.BatchNodeDisableSchedulingOptions(node_disable_scheduling_option="requeue")
    )
    n = client.get_node(pool, node.id)
    assert n.scheduling_state == "disabled" and n.state == "offline"
    expect_error(
        lambda: client.disable_node_scheduling(
            pool, node.id, m.BatchNodeDisableSchedulingOptions(node_disable_scheduling_option="requeue")
        ),
        409,
        "NodeAlreadyInTargetSchedulingState",
    )
    job_id = f"ds-{uid}"
    new_job(client, job_id, pool)
    client.create_task(job_id, task("t", "true"))
    wait_for(lambda: client.get_task(job_id, "t").state == "active", 5, what="task stays active")
    assert client.get_node(pool, node.id).state == "offline"
    client.enable_node_scheduling(pool, node.id)
    expect_error(
        lambda: client.enable_node_scheduling(pool, node.id), 409, "NodeAlreadyInTargetSchedulingState"
    )
    wait_task_state(client, job_id, "t", "completed")
    n = wait_node(client, pool, node.id, "idle")
    assert n.scheduling_state == "enabled"
    # the node's counters and recent tasks
    assert n.total_tasks_run >= 1 and n.running_tasks_count == 0 and n.running_task_slots_count == 0
    assert n.recent_tasks and any(r.task_id == "t" for r in n.recent_tasks)
    assert n.node_agent_info.version


def test_disable_scheduling_taskcompletion_goes_offline_after_the_task(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    node = only_node(client, pool)
    job_id = f"dc-{uid}"
    new_job(client, job_id, pool)
    go = tmp_path / "go"
    client.create_task(job_id, task("wait", f"while [ ! -e {go} ]; do sleep 0.05; done"))
    wait_task_state(client, job_id, "wait", "running")
    client.disable_node_scheduling(
        pool, node.id, m.BatchNodeDisableSchedulingOptions(node_disable_scheduling_option="taskcompletion")
    )
    n = client.get_node(pool, node.id)
    assert n.state == "running" and n.scheduling_state == "disabled"
    assert n.running_tasks_count == 1 and n.running_task_slots_count == 1
    go.touch()
    assert wait_task_state(client, job_id, "wait", "completed").execution_info.result == "success"
    wait_node(client, pool, node.id, "offline")
    client.enable_node_scheduling(pool, node.id)


def test_deallocate_and_start(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    node = only_node(client, pool)
    client.begin_deallocate_node(
        pool, node.id, BatchNodeDeallocateOptions(node_deallocate_option="requeue"), polling_interval=1
    ).result()
    n = wait_node(client, pool, node.id, "deallocated")
    expect_error(lambda: client.begin_reboot_node(pool, node.id, REBOOT), 409, "OperationNotValidOnNode")
    expect_error(
        lambda: client.begin_deallocate_node(
            pool, node.id, BatchNodeDeallocateOptions(node_deallocate_option="requeue")
        ),
        409,
        "OperationNotValidOnNode",
    )
    client.begin_start_node(pool, node.id, polling_interval=1).result()
    n = wait_node(client, pool, node.id, "idle")
    assert n.state == "idle"
    expect_error(lambda: client.begin_start_node(pool, node.id), 409, "OperationNotValidOnNode")


def test_remove_nodes(client: BatchClient, uid: str) -> None:
    pool_id = f"rm-{uid}"
    create_pool(client, pool_id, nodes=3)
    nodes = wait_idle_nodes(client, pool_id, 3)
    gone = [nodes[0].id, nodes[2].id]
    expect_error(
        lambda: client.begin_remove_nodes(pool_id, m.BatchNodeRemoveOptions(node_ids=["tvmps_nope_d"])),
        409,
        "OperationNotValidOnPool",
    )
    # A task on each node, and removal once running tasks complete: the pool stays resizing for those seconds
    # (an agent forked from the zygote stops in milliseconds, faster than a client's next request)
    job_id = f"rmj-{uid}"
    new_job(client, job_id, pool_id)
    for i in range(3):
        client.create_task(job_id, task(f"t{i}", "sleep 3"))
    for i in range(3):
        wait_task_state(client, job_id, f"t{i}", "running")
    opts = m.BatchNodeRemoveOptions(node_ids=gone, node_deallocation_option="taskcompletion")
    poller = client.begin_remove_nodes(pool_id, opts, polling_interval=1)
    p = client.get_pool(pool_id)
    assert p.allocation_state == "resizing" and p.target_dedicated_nodes == 1
    expect_error(
        lambda: client.begin_remove_nodes(pool_id, m.BatchNodeRemoveOptions(node_ids=[nodes[1].id])),
        409,
        "PoolBeingResized",
    )
    poller.result()
    left = [n.id for n in client.list_nodes(pool_id)]
    assert left == [nodes[1].id]
    p = client.get_pool(pool_id)
    assert p.allocation_state == "steady" and p.current_dedicated_nodes == 1 and p.target_dedicated_nodes == 1
    for i in range(3):  # the removed nodes' tasks completed there, none was requeued
        t = wait_task_state(client, job_id, f"t{i}", "completed")
        assert t.execution_info.requeue_count == 0 and t.execution_info.exit_code == 0
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_bad_options_and_missing_nodes(raw: Raw, client: BatchClient, pool: str) -> None:
    node = only_node(client, pool)
    n = f"/pools/{pool}/nodes/{node.id}"
    for op, prop in (
        ("reboot", "nodeRebootOption"),
        ("reimage", "nodeReimageOption"),
        ("deallocate", "nodeDeallocateOption"),
        ("disablescheduling", "nodeDisableSchedulingOption"),
    ):
        assert_error(
            raw.post(f"{n}/{op}", {prop: "sometimes"}), 400, "InvalidPropertyValue", PropertyName=prop
        )
    # retaineddata is not an option of disable scheduling
    assert_error(
        raw.post(f"{n}/disablescheduling", {"nodeDisableSchedulingOption": "retaineddata"}),
        400,
        "InvalidPropertyValue",
        PropertyName="nodeDisableSchedulingOption",
    )
    assert_error(
        raw.post(f"{n}/reboot", {"nodeRebootOption": "requeue", "x": 1}),
        400,
        "UnsupportedProperty",
        PropertyName="x",
    )
    assert_error(raw.post(f"{n}/reboot", "[1"), 400, "InvalidRequestBody")
    assert_error(raw.post(f"/pools/{pool}/nodes/tvmps_nope_d/reboot", {}), 404, "NodeNotFound")
    assert_error(raw.post(f"/pools/nope-{pool}/nodes/{node.id}/reimage", {}), 404, "PoolNotFound")
    rm = f"/pools/{pool}/removenodes"
    assert_error(raw.post(rm, {}), 400, "MissingRequiredProperty", PropertyName="nodeList")
    assert_error(raw.post(rm, {"nodeList": []}), 400, "InvalidPropertyValue", PropertyName="nodeList")
    assert_error(
        raw.post(rm, {"nodeList": ["x"] * 101}), 400, "InvalidPropertyValue", PropertyName="nodeList"
    )
    assert_error(
        raw.post(rm, {"nodeList": [node.id], "nodeDeallocationOption": "later"}),
        400,
        "InvalidPropertyValue",
        PropertyName="nodeDeallocationOption",
    )
    assert_error(
        raw.post(rm, {"nodeList": [node.id], "resizeTimeout": "PT1M"}),
        400,
        "InvalidPropertyValue",
        PropertyName="resizeTimeout",
    )
    # deallocate and start came with api-version 2024-07-01.20.0; before it they are unknown URIs
    for op in ("deallocate", "start"):
        assert_error(raw.post(f"{n}/{op}", {}, api_version="2024-02-01.19.0"), 400, "InvalidUri")
    # nothing changed
    assert client.get_node(pool, node.id).state == "idle"
    assert client.get_pool(pool).allocation_state == "steady"


def test_operations_need_shared_key(raw: Raw, client: BatchClient, pool: str) -> None:
    node = only_node(client, pool)
    resp = raw.post(f"/pools/{pool}/nodes/{node.id}/reboot", {}, key=None)
    assert resp.status_code == 401
    resp = raw.post(f"/batchyard/pools/{pool}/nodes/{node.id}/preempt", {}, key=None)
    assert resp.status_code == 401
    assert client.get_node(pool, node.id).state == "idle"
    assert pid_alive is not None
