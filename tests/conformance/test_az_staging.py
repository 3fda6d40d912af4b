"""`az batch task create --json-file` with a resource file and an output file (azure-cli 2.91.0, Azurite)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient

from tests.conformance.test_az_tutorial import Az, az  # noqa: F401
from tests.support.azurite import Azurite, azurite_server  # noqa: F401
from tests.support.batch import create_pool, wait_idle_nodes
from tests.support.live import LiveServer
from tests.support.semantics import new_job, wait_tasks_completed

pytestmark = pytest.mark.az


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, azurite: Azurite) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("srv"), extra_args=["--auto-storage", azurite.connection_string])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_az_task_with_resource_and_output_files(
    az: Az,  # noqa: F811
    client: BatchClient,
    azurite: Azurite,
    uid: str,
    tmp_path: Path,
) -> None:
    pool_id, job_id = f"azst-{uid}", f"azst-{uid}"
    create_pool(client, pool_id, nodes=1)
    wait_idle_nodes(client, pool_id, 1)
    new_job(client, job_id, pool_id)
    azurite.create_container(f"in-{uid}", {"input.txt": b"three\nlines\nhere\n"})
    azurite.create_container(f"out-{uid}")
    spec = {
        "id": "t1",
        "commandLine": "/bin/sh -c 'wc -l < input.txt > count.txt'",
        "resourceFiles": [
            {"httpUrl": azurite.blob_sas_url(f"in-{uid}", "input.txt"), "filePath": "input.txt"}
        ],
        "outputFiles": [
            {
                "filePattern": "count.txt",
                "destination": {
                    "container": {
                        "containerUrl": azurite.container_sas_url(f"out-{uid}", "w"),
                        "path": "t1/count.txt",
                    }
                },
                "uploadOptions": {"uploadCondition": "taskSuccess"},
            }
        ],
    }
    f = tmp_path / "task.json"
    f.write_text(json.dumps(spec))
    shown = az.json("batch", "task", "create", "--job-id", job_id, "--json-file", str(f))
    assert shown["id"] == "t1"
    assert shown["resourceFiles"][0]["filePath"] == "input.txt"
    assert shown["outputFiles"][0]["destination"]["container"]["path"] == "t1/count.txt"
    assert shown["outputFiles"][0]["uploadOptions"]["uploadCondition"] == "tasksuccess"
    t = wait_tasks_completed(client, job_id, ["t1"])["t1"]
    assert t.execution_info.result == "success", t.execution_info.failure_info
    assert azurite.read_blob(f"out-{uid}", "t1/count.txt").strip() == b"3"
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()
