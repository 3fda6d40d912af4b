"""`az batch task create --json-file` with multiInstanceSettings and `az batch task subtask list` (azure-cli
2.91.0, api-version 2024-02-01.19.0)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential

from tests.conformance.test_az_tutorial import Az, az  # noqa: F401
from tests.support.batch import create_pool, wait_idle_nodes
from tests.support.live import LiveServer
from tests.support.semantics import new_job, wait_tasks_completed

pytestmark = pytest.mark.az


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    top = Path(tempfile.mkdtemp(prefix="batchyard-azmi-", dir="/tmp"))
    os.chmod(top, 0o711)
    srv = LiveServer(top / "srv").start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def client(live: LiveServer) -> BatchClient:
    return BatchClient(endpoint=live.endpoint, credential=AzureNamedKeyCredential(live.account, live.key))


def test_az_multi_instance_task_and_subtasks(az: Az, client: BatchClient, uid: str, tmp_path: Path) -> None:  # noqa: F811
    pool_id, job_id = f"azmi-{uid}", f"azmi-{uid}"
    create_pool(client, pool_id, nodes=2, enable_inter_node_communication=True)
    wait_idle_nodes(client, pool_id, 2)
    new_job(client, job_id, pool_id)
    spec = {
        "id": "mi",
        "commandLine": "/bin/sh -c 'echo $AZ_BATCH_HOST_LIST'",
        "multiInstanceSettings": {"numberOfInstances": 2, "coordinationCommandLine": "/bin/true"},
    }
    f = tmp_path / "task.json"
    f.write_text(json.dumps(spec))
    shown = az.json("batch", "task", "create", "--job-id", job_id, "--json-file", str(f))
    assert shown["multiInstanceSettings"] == spec["multiInstanceSettings"]
    t = wait_tasks_completed(client, job_id, ["mi"])["mi"]
    assert t.execution_info.exit_code == 0
    subs = az.json("batch", "task", "subtask", "list", "--job-id", job_id, "--task-id", "mi")
    assert [s["id"] for s in subs] == [1]
    assert subs[0]["state"] == "completed" and subs[0]["nodeInfo"]["nodeId"] != t.node_info.node_id
