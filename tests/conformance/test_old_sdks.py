"""Older official azure-batch releases (msrest clients, api-versions 2018-12-01.8.0 .. 2024-02-01.19.0) drive
their own basic flow: pool, node idle, job, task, task completes, read stdout.

Each release lives in its own venv made by `scripts/sdk-venvs` (called by `scripts/test`); the flow runs as a
subprocess with that venv's python. Under CI=true a missing venv fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.live import LiveServer

REPO = Path(__file__).resolve().parents[2]
VENVS = Path(os.environ.get("BATCHYARD_SDK_VENVS", REPO / ".venv-sdk"))

# release -> the api-version it sends (from each release's operations modules)
RELEASES = {
    "14.2.0": "2024-02-01.19.0",
    "13.0.0": "2022-10-01.16.0",
    "12.0.0": "2022-01-01.15.0",
    "10.0.0": "2020-09-01.12.0",
    "9.0.0": "2020-03-01.11.0",
    "8.0.0": "2019-08-01.10.0",
    "6.0.0": "2018-12-01.8.0",
}

# The flow, in the client's own API. Releases before 10.0.0 (api-version 2020-09-01.12.0) name the pool's
# slot count maxTasksPerNode; later ones taskSlotsPerNode. Prints one JSON line with what it observed.
FLOW = r"""
import json, sys, time
import azure.batch.models as m
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials

endpoint, account, key, uid = sys.argv[1:5]
client = BatchServiceClient(SharedKeyCredentials(account, key), batch_url=endpoint)
pool_id, job_id, task_id = "pool-" + uid, "job-" + uid, "task-" + uid
vmc = m.VirtualMachineConfiguration(
    image_reference=m.ImageReference(
        publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts", version="latest"),
    node_agent_sku_id="batch.node.ubuntu 22.04")
slots = {"task_slots_per_node": 2} if hasattr(m.PoolAddParameter(id="x", vm_size="x"), "task_slots_per_node") \
    else {"max_tasks_per_node": 2}
client.pool.add(m.PoolAddParameter(
    id=pool_id, vm_size="standard_d2s_v3", virtual_machine_configuration=vmc, target_dedicated_nodes=1, **slots))


def wait(what, fn, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.1)
    raise SystemExit("timed out waiting for " + what)


nodes = wait("an idle node", lambda: [n for n in client.compute_node.list(pool_id) if n.state == m.ComputeNodeState.idle])
pool = client.pool.get(pool_id)
client.job.add(m.JobAddParameter(id=job_id, pool_info=m.PoolInformation(pool_id=pool_id)))
client.task.add(job_id, m.TaskAddParameter(id=task_id, command_line="/bin/sh -c 'echo hello from $AZ_BATCH_TASK_ID'"))
task = wait("the task to complete", lambda: (lambda t: t if t.state == m.TaskState.completed else None)(
    client.task.get(job_id, task_id)))
stdout = b"".join(client.file.get_from_task(job_id, task_id, "stdout.txt")).decode()
added = client.task.add_collection(job_id, [m.TaskAddParameter(id="more%d" % i, command_line="/bin/true")
                                            for i in range(3)])
statuses = sorted(str(getattr(r.status, "value", r.status)).lower() for r in added.value)
wait("all tasks to complete", lambda: all(t.state == m.TaskState.completed for t in client.task.list(job_id)))
listed = sorted(t.id for t in client.task.list(job_id, m.TaskListOptions(filter="state eq 'completed'")))
counts = client.job.get_task_counts(job_id)
counts = getattr(counts, "task_counts", counts)
out = {
    "api_version": client.pool.api_version,
    "node_state": str(nodes[0].state.value if hasattr(nodes[0].state, "value") else nodes[0].state),
    "slots": getattr(pool, "task_slots_per_node", None) or getattr(pool, "max_tasks_per_node", None),
    "exit_code": task.execution_info.exit_code,
    "stdout": stdout,
    "completed": counts.completed,
    "statuses": statuses,
    "listed": listed,
    "exists": client.pool.exists(pool_id),
}
client.job.delete(job_id)
client.pool.delete(pool_id)
print(json.dumps(out))
"""


def _python(release: str) -> Path:
    py = VENVS / release / "bin" / "python"
    if not py.exists():
        msg = f"no venv for azure-batch {release} at {py}: run scripts/sdk-venvs"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return py


@pytest.mark.parametrize("release", list(RELEASES))
def test_old_sdk_flow(live: LiveServer, release: str, uid: str) -> None:
    py = _python(release)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(
        [str(py), "-c", FLOW, live.endpoint, live.account, live.key, f"{release.replace('.', '')}-{uid}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, f"azure-batch {release} flow failed:\n{proc.stderr[-4000:]}"
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["api_version"] == RELEASES[release]
    assert got["node_state"] == "idle"
    assert got["slots"] == 2
    assert got["exit_code"] == 0
    assert got["stdout"] == f"hello from task-{release.replace('.', '')}-{uid}\n"
    assert got["completed"] == 4
    assert got["statuses"] == ["success"] * 3
    assert got["listed"] == sorted(["more0", "more1", "more2", f"task-{release.replace('.', '')}-{uid}"])
    assert got["exists"] is True
