"""`az batch job create --json-file` with an auto pool (azure-cli 2.91.0, api-version 2024-02-01.19.0): the job
runs its task on the pool created with it, az shows the pool id in `executionInfo.poolId`, and the pool goes
when the job is deleted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conformance.test_az_tutorial import Az, az  # noqa: F401 - the az fixture
from tests.support.live import wait_for

pytestmark = pytest.mark.az


def test_az_job_create_with_auto_pool(az: Az, uid: str, tmp_path: Path) -> None:  # noqa: F811
    job_id = f"azauto-{uid}"
    spec = {
        "id": job_id,
        "poolInfo": {
            "autoPoolSpecification": {
                "autoPoolIdPrefix": "azap",
                "poolLifetimeOption": "job",
                "pool": {
                    "vmSize": "STANDARD_D2S_V3",
                    "virtualMachineConfiguration": {
                        "imageReference": {
                            "publisher": "canonical",
                            "offer": "0001-com-ubuntu-server-jammy",
                            "sku": "22_04-lts",
                        },
                        "nodeAgentSKUId": "batch.node.ubuntu 22.04",
                    },
                    "targetDedicatedNodes": 1,
                },
            }
        },
    }
    f = tmp_path / "job.json"
    f.write_text(json.dumps(spec))
    az.silent("batch", "job", "create", "--json-file", str(f))
    job = az.json("batch", "job", "show", "--job-id", job_id)
    pool_id = job["executionInfo"]["poolId"]
    assert re.fullmatch(r"azap_[0-9A-F-]{36}", pool_id), pool_id
    auto = job["poolInfo"]["autoPoolSpecification"]
    assert auto["keepAlive"] is False and auto["pool"]["vmSize"] == "standard_d2s_v3"
    assert az.json("batch", "pool", "show", "--pool-id", pool_id)["targetDedicatedNodes"] == 1
    az.json("batch", "task", "create", "--job-id", job_id, "--task-id", "t1", "--command-line", "/bin/true")

    def done() -> dict[str, object] | None:
        t = az.json("batch", "task", "show", "--job-id", job_id, "--task-id", "t1")
        return t if t["state"] == "completed" else None

    task = wait_for(done, 90, 0.5, "the task on the auto pool")
    assert task["executionInfo"]["result"] == "success" and task["nodeInfo"]["poolId"] == pool_id
    az.silent("batch", "job", "delete", "--job-id", job_id, "--yes")

    def pool_gone() -> bool:
        try:
            az.run("batch", "pool", "show", "--pool-id", pool_id, rc=3)
        except AssertionError:
            return False
        return True

    wait_for(pool_gone, 60, 0.5, "the auto pool to be deleted with its job")
