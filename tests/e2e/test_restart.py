"""SIGKILL the server while tasks run, start it again on the same data dir: nothing is lost or stuck."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential

from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state, wait_tasks_done
from tests.support.live import LiveServer, kill_agents, wait_for

pytestmark = pytest.mark.slow


def _client(srv: LiveServer) -> BatchClient:
    return BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))


def _agent_pids(data_dir: Path) -> dict[str, int]:
    """node id -> agent pid, read from the running processes."""
    out: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"batchyard.agent.main" in cmd and any(str(data_dir).encode() in c for c in cmd):
            node = cmd[cmd.index(b"--node-id") + 1].decode()
            out[node] = int(entry.name)
    return out


def test_sigkill_restart_keeps_everything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = LiveServer(data).start()
    try:
        c = _client(srv)
        create_pool(c, "rp", nodes=2)
        nodes = wait_idle_nodes(c, "rp", 2)
        c.create_job(m.BatchJobCreateOptions(id="rj", pool_info=m.BatchPoolInfo(pool_id="rp")))
        c.create_task("rj", m.BatchTaskCreateOptions(id="quick", command_line="/bin/echo quick"))
        quick = wait_task_state(c, "rj", "quick", "completed")
        # two long tasks occupy both nodes; the queued ones wait behind them
        for i in range(2):
            c.create_task(
                "rj",
                m.BatchTaskCreateOptions(id=f"long{i}", command_line="/bin/sh -c 'sleep 4; echo finished'"),
            )
        for i in range(2):
            wait_task_state(c, "rj", f"long{i}", "running")
        c.create_task_collection(
            "rj",
            m.BatchTaskGroup(
                task_values=[m.BatchTaskCreateOptions(id=f"q{i}", command_line="/bin/true") for i in range(6)]
            ),
        )
        running = {t.id: t.node_info.node_id for t in c.list_tasks("rj") if t.state == "running"}
        assert set(running) == {"long0", "long1"}

        srv.kill(signal.SIGKILL)
        # while the server is down, one node's agent dies too (with the task it ran)
        victim_task = "long1"
        victim_node = running[victim_task]
        pids = _agent_pids(data)
        assert set(pids) == {n.id for n in nodes}
        os.killpg(pids[victim_node], signal.SIGKILL)

        srv2 = LiveServer(data, port=srv.port).start()
        srv = srv2
        c = _client(srv2)
        assert c.get_pool("rp").current_dedicated_nodes == 2
        done = wait_tasks_done(c, "rj", 9, timeout=90)
        by_id = {t.id: t for t in done}
        assert all(t.execution_info.exit_code == 0 for t in done)
        # completed work stays completed, untouched
        assert by_id["quick"].execution_info.end_time == quick.execution_info.end_time
        # the survivor's task finished on its node and was reported back, without a requeue
        survivor = by_id["long0"]
        assert survivor.execution_info.requeue_count == 0
        out = b"".join(c.download_task_file("rj", "long0", "stdout.txt")).decode()
        assert out == "finished\n"
        # the dead agent was respawned and its task requeued (requeueCount, not retryCount)
        lost = by_id[victim_task]
        assert lost.execution_info.requeue_count >= 1
        assert lost.execution_info.retry_count == 0
        wait_idle_nodes(c, "rp", 2)
        new_pids = _agent_pids(data)
        assert new_pids[victim_node] != pids[victim_node]
        assert new_pids[running["long0"]] == pids[running["long0"]]
        counts = c.get_job_task_counts("rj").task_counts
        assert (counts.active, counts.running, counts.completed, counts.succeeded) == (0, 0, 9, 9)
        wait_for(lambda: all(n.state == "idle" for n in c.list_nodes("rp")), 30, what="nodes idle")
    finally:
        srv.stop()
        kill_agents(data)
