"""Spot / low-priority nodes through the official SDK, and preemption through the batchyard extension routes:
a preempted node is listed as `preempted`, its running task is requeued (requeueCount, not retryCount), and the
pool brings the node back with the same id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m

from tests.support.batch import create_pool, wait_task_state
from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error
from tests.support.semantics import new_job, pid_task, read_pid, task, wait_pid_gone

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Raw:
    return Raw(live)


def wait_ready(client: BatchClient, pool_id: str, count: int) -> list[m.BatchNode]:
    def ready() -> list[m.BatchNode] | None:
        nodes = list(client.list_nodes(pool_id))
        ok = len(nodes) == count and all(n.state in ("idle", "running") for n in nodes)
        return nodes if ok else None

    return wait_for(ready, 60, 0.1, f"{count} ready nodes in {pool_id}")


@pytest.fixture
def spot(client: BatchClient) -> Iterator[str]:
    pool_id = f"spot-{uuid.uuid4().hex[:8]}"
    create_pool(client, pool_id, nodes=0, target_low_priority_nodes=2)
    wait_ready(client, pool_id, 2)
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_low_priority_nodes(client: BatchClient, spot: str, uid: str) -> None:
    p = client.get_pool(spot)
    assert p.target_low_priority_nodes == 2 and p.current_low_priority_nodes == 2
    assert p.current_dedicated_nodes == 0
    nodes = list(client.list_nodes(spot))
    assert all(n.is_dedicated is False for n in nodes)
    assert all(n.id.endswith("_p") for n in nodes), [n.id for n in nodes]
    (counts,) = [c for c in client.list_pool_node_counts() if c.pool_id == spot]
    assert counts.low_priority.total == 2 and counts.low_priority.idle + counts.low_priority.running == 2
    assert counts.dedicated.total == 0
    job_id = f"lp-{uid}"
    new_job(client, job_id, spot)
    client.create_task(job_id, task("env", "test $AZ_BATCH_NODE_IS_DEDICATED = false"))
    assert wait_task_state(client, job_id, "env", "completed").execution_info.exit_code == 0


def test_preempt_requeues_and_the_node_comes_back(
    raw: Raw, client: BatchClient, spot: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"pe-{uid}"
    new_job(client, job_id, spot)
    client.create_task(job_id, pid_task("long", tmp_path / "p.pid", secs=60))
    pid = read_pid(tmp_path / "p.pid")
    t = wait_task_state(client, job_id, "long", "running")
    node_id = t.node_info.node_id
    resp = raw.post(f"/batchyard/pools/{spot}/nodes/{node_id}/preempt", {"returnAfter": "PT2S"})
    assert resp.status_code == 200, resp.text()
    assert resp.json()["preempted"] == [node_id]
    n = client.get_node(spot, node_id)
    assert n.state == "preempted"
    assert any(x.id == node_id for x in client.list_nodes(spot))  # still listed
    (counts,) = [c for c in client.list_pool_node_counts() if c.pool_id == spot]
    assert counts.low_priority.preempted == 1 and counts.low_priority.total == 2
    assert client.get_pool(spot).current_low_priority_nodes == 2
    # preempting it again is a conflict
    assert_error(
        raw.post(f"/batchyard/pools/{spot}/nodes/{node_id}/preempt", {}), 409, "OperationNotValidOnNode"
    )
    wait_pid_gone(pid)
    t = client.get_task(job_id, "long")
    assert t.execution_info.requeue_count == 1 and t.execution_info.retry_count == 0
    # the task runs again (on the other node, or on this one once it is back)
    wait_task_state(client, job_id, "long", "running", timeout=60)
    # the pool brings the node back with the same id, through creating/starting
    seen: set[str] = set()

    def back() -> bool:
        st = client.get_node(spot, node_id).state
        seen.add(st)
        return st in ("idle", "running")

    wait_for(back, 60, 0.05, "the preempted node to come back")
    assert "preempted" not in seen or seen & {"creating", "starting", "idle", "running"}
    client.terminate_task(job_id, "long")


def test_preempt_a_fraction_of_a_pool(raw: Raw, client: BatchClient, spot: str) -> None:
    resp = raw.post(f"/batchyard/pools/{spot}/preempt", {"fraction": 0.5, "returnAfter": "PT1S"})
    assert resp.status_code == 200, resp.text()
    (node_id,) = resp.json()["preempted"]
    assert client.get_node(spot, node_id).state == "preempted"
    wait_ready(client, spot, 2)
    resp = raw.post(f"/batchyard/pools/{spot}/preempt", {"count": 5, "returnAfter": "PT0S"})
    assert sorted(resp.json()["preempted"]) == sorted(n.id for n in client.list_nodes(spot))
    wait_ready(client, spot, 2)


def test_chaos_rate_preempts_at_random(raw: Raw, client: BatchClient, spot: str) -> None:
    path = f"/batchyard/pools/{spot}/chaos"
    assert raw.json(path)["preemptionsPerNodeHour"] == 0
    resp = raw.request("PUT", path, json_body={"preemptionsPerNodeHour": 3600, "returnAfter": "PT1S"})
    assert resp.status_code == 200, resp.text()
    assert resp.json()["preemptionsPerNodeHour"] == 3600
    counts = lambda: [c for c in client.list_pool_node_counts() if c.pool_id == spot][0]  # noqa: E731
    wait_for(lambda: counts().low_priority.preempted > 0, 30, 0.1, "a random preemption")
    raw.request("PUT", path, json_body={"preemptionsPerNodeHour": 0})
    assert raw.json(path)["preemptionsPerNodeHour"] == 0
    wait_ready(client, spot, 2)


def test_preempt_bad_input(raw: Raw, client: BatchClient, uid: str) -> None:
    pool_id = f"ded-{uid}"
    create_pool(client, pool_id, nodes=1)
    (node,) = wait_ready(client, pool_id, 1)
    x = f"/batchyard/pools/{pool_id}"
    # a dedicated node is never preempted
    assert_error(raw.post(f"{x}/nodes/{node.id}/preempt", {}), 409, "OperationNotValidOnNode")
    assert_error(raw.post(f"{x}/nodes/tvmps_nope_p/preempt", {}), 404, "NodeNotFound")
    assert_error(raw.post(f"/batchyard/pools/nope-{uid}/preempt", {"fraction": 1}), 404, "PoolNotFound")
    assert_error(
        raw.post(f"{x}/preempt", {"fraction": 2}), 400, "InvalidPropertyValue", PropertyName="fraction"
    )
    assert_error(raw.post(f"{x}/preempt", {"count": -1}), 400, "InvalidPropertyValue", PropertyName="count")
    assert_error(raw.post(f"{x}/preempt", {"fraction": 0.5, "count": 1}), 400, "InvalidRequestBody")
    assert_error(raw.post(f"{x}/preempt", {"fraction": 0.5, "when": 1}), 400, "UnsupportedProperty")
    assert_error(raw.post(f"{x}/preempt", "[1,"), 400, "InvalidRequestBody")
    assert_error(
        raw.post(f"{x}/nodes/{node.id}/preempt", {"returnAfter": "soon"}),
        400,
        "InvalidPropertyValue",
        PropertyName="returnAfter",
    )
    chaos = f"{x}/chaos"
    assert_error(
        raw.request("PUT", chaos, json_body={"preemptionsPerNodeHour": -1}),
        400,
        "InvalidPropertyValue",
        PropertyName="preemptionsPerNodeHour",
    )
    assert_error(
        raw.request("PUT", chaos, json_body={"rate": 1}), 400, "UnsupportedProperty", PropertyName="rate"
    )
    # a dedicated-only pool has nothing to preempt
    resp = raw.post(f"{x}/preempt", {"fraction": 1})
    assert resp.status_code == 200 and resp.json()["preempted"] == []
    assert client.get_node(pool_id, node.id).state == "idle"
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def _cli(live: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        AZURE_BATCH_ENDPOINT=live.endpoint,
        AZURE_BATCH_ACCOUNT=live.account,
        AZURE_BATCH_ACCESS_KEY=live.key,
    )
    return subprocess.run(
        [sys.executable, "-m", "batchyard.cli.main", "preempt", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_preempt_command(live: LiveServer, client: BatchClient, spot: str) -> None:
    nodes = sorted(n.id for n in client.list_nodes(spot))
    out = _cli(live, spot, nodes[0], "--return-after", "PT1S")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["preempted"] == [nodes[0]]
    assert client.get_node(spot, nodes[0]).state == "preempted"
    wait_ready(client, spot, 2)
    out = _cli(live, spot, "--fraction", "1", "--return-after", "PT0S")
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["preempted"]) == nodes
    wait_ready(client, spot, 2)
    out = _cli(live, spot, "--rate", "0")
    assert out.returncode == 0 and json.loads(out.stdout)["preemptionsPerNodeHour"] == 0
    # errors are the server's, on stderr, with a non-zero exit
    out = _cli(live, spot, "--fraction", "3")
    assert out.returncode != 0 and "InvalidPropertyValue" in out.stderr and "fraction" in out.stderr
    out = _cli(live, spot)
    assert out.returncode != 0 and "give node ids" in out.stderr
    bad = dict(os.environ, AZURE_BATCH_ENDPOINT=live.endpoint, AZURE_BATCH_ACCESS_KEY="d3Jvbmc=")
    out = subprocess.run(
        [sys.executable, "-m", "batchyard.cli.main", "preempt", spot, "--count", "1"],
        env=bad,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and ("403" in out.stderr or "401" in out.stderr), out.stderr
