"""SIGKILL the server in the middle of node operations and start it again on the same data dir: a rebooting node
comes back, a half-done removal completes, a preempted node returns, and no task is counted twice.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models._models import BatchNodeRebootOptions
from azure.core.credentials import AzureNamedKeyCredential

from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state
from tests.support.live import LiveServer, kill_agents, wait_for
from tests.support.raw import Raw

pytestmark = pytest.mark.slow


def _client(srv: LiveServer) -> BatchClient:
    return BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))


class Servers:
    """The server of a test, restarted on the same data dir and port after a SIGKILL."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.srv = LiveServer(data).start()

    def crash_and_restart(self) -> BatchClient:
        self.srv.kill(signal.SIGKILL)
        self.srv = LiveServer(self.data, port=self.srv.port).start()
        return _client(self.srv)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path / "data")
    try:
        yield s
    finally:
        s.srv.stop()
        kill_agents(s.data)


def _wait_task(tmp_path: Path, name: str) -> tuple[m.BatchTaskCreateOptions, Path]:
    go = tmp_path / f"{name}.go"
    cmd = f"/bin/sh -c 'while [ ! -e {go} ]; do sleep 0.05; done; echo done'"
    return m.BatchTaskCreateOptions(id=name, command_line=cmd), go


def _job(c: BatchClient, job_id: str, pool_id: str) -> None:
    c.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))


def test_sigkill_during_reboot(servers: Servers, tmp_path: Path) -> None:
    c = _client(servers.srv)
    create_pool(c, "rbp", nodes=1)
    (node,) = wait_idle_nodes(c, "rbp", 1)
    _job(c, "rbj", "rbp")
    t, go = _wait_task(tmp_path, "t")
    c.create_task("rbj", t)
    wait_task_state(c, "rbj", "t", "running")
    c.begin_reboot_node("rbp", node.id, BatchNodeRebootOptions(node_reboot_kind="requeue"))
    c = servers.crash_and_restart()
    # the node comes back, whatever step the reboot had reached
    wait_for(lambda: c.get_node("rbp", node.id).state in ("idle", "running"), 60, what="the node back")
    wait_task_state(c, "rbj", "t", "running", timeout=60)
    go.touch()
    done = wait_task_state(c, "rbj", "t", "completed", timeout=60)
    assert done.execution_info.exit_code == 0
    assert done.execution_info.requeue_count == 1 and done.execution_info.retry_count == 0
    counts = c.get_job_task_counts("rbj").task_counts
    assert (counts.active, counts.running, counts.completed, counts.succeeded) == (0, 0, 1, 1)
    n = wait_for(lambda: (lambda x: x if x.state == "idle" else None)(c.get_node("rbp", node.id)), 30)
    assert n.total_tasks_run == 1 and n.total_tasks_succeeded == 1


def test_sigkill_during_taskcompletion_removal(servers: Servers, tmp_path: Path) -> None:
    c = _client(servers.srv)
    create_pool(c, "rmp", nodes=2)
    wait_idle_nodes(c, "rmp", 2)
    _job(c, "rmj", "rmp")
    t, go = _wait_task(tmp_path, "t")
    c.create_task("rmj", t)
    busy = wait_task_state(c, "rmj", "t", "running").node_info.node_id
    c.begin_remove_nodes(
        "rmp", m.BatchNodeRemoveOptions(node_ids=[busy], node_deallocation_option="taskcompletion")
    )
    assert c.get_pool("rmp").allocation_state == "resizing"
    c = servers.crash_and_restart()
    assert c.get_pool("rmp").allocation_state == "resizing"
    assert c.get_node("rmp", busy).state == "running"  # still finishing its task
    go.touch()
    done = wait_task_state(c, "rmj", "t", "completed", timeout=60)
    assert done.execution_info.exit_code == 0
    assert done.execution_info.requeue_count == 0 and done.execution_info.retry_count == 0
    wait_for(lambda: c.get_pool("rmp").allocation_state == "steady", 60, what="the removal to complete")
    left = [n.id for n in c.list_nodes("rmp")]
    assert busy not in left and len(left) == 1
    p = c.get_pool("rmp")
    assert p.target_dedicated_nodes == 1 and p.current_dedicated_nodes == 1
    counts = c.get_job_task_counts("rmj").task_counts
    assert (counts.completed, counts.succeeded) == (1, 1)


def test_sigkill_while_preempted(servers: Servers, tmp_path: Path) -> None:
    c = _client(servers.srv)
    create_pool(c, "pp", nodes=0, target_low_priority_nodes=1)
    (node,) = wait_for(
        lambda: [n for n in c.list_nodes("pp") if n.state == "idle"] or None, 60, what="a spot node"
    )
    _job(c, "pj", "pp")
    t, go = _wait_task(tmp_path, "t")
    c.create_task("pj", t)
    wait_task_state(c, "pj", "t", "running")
    resp = Raw(servers.srv).post(f"/batchyard/pools/pp/nodes/{node.id}/preempt", {"returnAfter": "PT2S"})
    assert resp.status_code == 200, resp.text()
    c = servers.crash_and_restart()
    assert c.get_node("pp", node.id).state in ("preempted", "creating", "starting", "idle", "running")
    wait_task_state(c, "pj", "t", "running", timeout=60)
    assert c.get_node("pp", node.id).state in ("idle", "running")
    go.touch()
    done = wait_task_state(c, "pj", "t", "completed", timeout=60)
    assert done.execution_info.requeue_count == 1 and done.execution_info.retry_count == 0
    assert c.get_pool("pp").current_low_priority_nodes == 1
