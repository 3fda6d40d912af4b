"""Every api-version the real service accepts, each in its own request and response shape (raw HTTP).

Per version: a pool (slot count under that version's name), a job and a task are created and read back;
the keys that version has (and only those) come back. Properties a version did not have are refused with
400 UnsupportedProperty naming them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from batchyard.models.versions import ACCEPTED
from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error, pool_body

ALL = sorted(ACCEPTED)


def major(version: str) -> int:
    """2019-08-01.10.0 -> 10; the bare 2025-06-01 is 21."""
    parts = version.split(".")
    return int(parts[1]) if len(parts) == 3 else 21


def slots_key(version: str) -> str:
    return "taskSlotsPerNode" if major(version) >= 12 else "maxTasksPerNode"


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Raw:
    return Raw(live)


@pytest.fixture(scope="module")
def shared_pool(raw: Raw) -> Iterator[str]:
    """One pool with an idle node that every version's job runs on (created in the newest version)."""
    pid = "ver-shared"
    r = raw.post("/pools", pool_body(pid, 1, taskSlotsPerNode=4))
    assert r.status_code == 201, r.text()
    wait_for(
        lambda: [n for n in raw.json(f"/pools/{pid}/nodes")["value"] if n["state"] == "idle"],
        what="an idle node",
    )
    yield pid
    raw.delete(f"/pools/{pid}")


@pytest.mark.parametrize("version", ALL)
def test_pool_job_task_in_version_shape(raw: Raw, shared_pool: str, version: str) -> None:
    m = major(version)
    tag = version.replace(".", "-")
    pid, jid, tid = f"p-{tag}", f"j-{tag}", f"t-{tag}"

    def post(path: str, body: Any) -> None:
        r = raw.post(path, body, api_version=version)
        assert r.status_code == 201, (path, r.status_code, r.text())

    def get(path: str) -> Any:
        return raw.json(path, api_version=version)

    post("/pools", pool_body(pid, 0, **{slots_key(version): 3}))
    pool = get(f"/pools/{pid}")
    assert pool[slots_key(version)] == 3
    assert ("taskSlotsPerNode" in pool) == (m >= 12) and ("maxTasksPerNode" in pool) == (m < 12)
    assert ("jobDefaultOrder" in pool["taskSchedulingPolicy"]) == (m >= 21), pool["taskSchedulingPolicy"]
    if m <= 20:
        assert pool["certificateReferences"] == []
    else:
        assert "certificateReferences" not in pool
    listed = raw.json("/pools", api_version=version, params={"$filter": f"id eq '{pid}'"})["value"]
    assert [p[slots_key(version)] for p in listed] == [3]

    post("/jobs", {"id": jid, "poolInfo": {"poolId": shared_pool}, "onAllTasksComplete": "noaction"})
    job = get(f"/jobs/{jid}")
    assert job["poolInfo"] == {"poolId": shared_pool}
    assert ("maxParallelTasks" in job) == (m >= 14) and ("allowTaskPreemption" in job) == (m >= 15)

    post(f"/jobs/{jid}/tasks", {"id": tid, "commandLine": "/bin/sh -c 'echo v'"})
    task = wait_for(
        lambda: (lambda t: t if t["state"] == "completed" else None)(get(f"/jobs/{jid}/tasks/{tid}")),
        what="the task to complete",
    )
    assert task["executionInfo"]["exitCode"] == 0
    assert ("requiredSlots" in task) == (m >= 12)

    counts = get(f"/jobs/{jid}/taskcounts")
    if m >= 12:
        assert counts["taskCounts"]["completed"] == 1 and "taskSlotCounts" in counts
    else:  # before 2020-09-01.12.0 the counts were the body itself
        assert counts["completed"] == 1 and "taskCounts" not in counts

    node = get(f"/pools/{shared_pool}/nodes")["value"][0]
    assert ("runningTaskSlotsCount" in node) == (m >= 12)
    if m <= 20:
        assert node["certificateReferences"] == []
    else:
        assert "certificateReferences" not in node

    assert raw.delete(f"/jobs/{jid}", api_version=version).status_code == 202
    assert raw.delete(f"/pools/{pid}", api_version=version).status_code == 202


@pytest.mark.parametrize("version", ALL)
def test_properties_the_version_lacks_are_refused(raw: Raw, version: str) -> None:
    m = major(version)
    tag = version.replace(".", "-")
    newer = pool_body(f"r-{tag}", 0, taskSchedulingPolicy={"nodeFillType": "pack", "jobDefaultOrder": "none"})
    r = raw.post("/pools", newer, api_version=version)
    if m < 21:
        assert_error(r, 400, "UnsupportedProperty", PropertyName="taskSchedulingPolicy.jobDefaultOrder")
    else:
        assert r.status_code == 201, r.text()
        raw.delete(f"/pools/r-{tag}")
    old = pool_body(f"o-{tag}", 0, maxTasksPerNode=2)
    if m >= 12:
        assert_error(raw.post("/pools", old, api_version=version), 400, "UnsupportedProperty",
                     PropertyName="maxTasksPerNode")  # fmt: skip
    task = {"id": "t", "commandLine": "x", "requiredSlots": 1}
    if m < 12:  # requiredSlots came with 2020-09-01.12.0; the job need not exist for the body to be refused
        assert_error(raw.post("/jobs/nojob/tasks", task, api_version=version), 400, "UnsupportedProperty",
                     PropertyName="requiredSlots")  # fmt: skip
        batch = {"value": [{"id": "a", "commandLine": "x"}, task]}
        assert_error(raw.post("/jobs/nojob/addtaskcollection", batch, api_version=version), 400,
                     "UnsupportedProperty", PropertyName="value[1].requiredSlots")  # fmt: skip


@pytest.mark.parametrize("version", ALL)
def test_cloud_service_pools(raw: Raw, version: str) -> None:
    """Cloud service pools parse in the versions that had them and get the retirement error; later
    versions never had the property."""
    body = pool_body("csc", 0)
    del body["virtualMachineConfiguration"]
    body["cloudServiceConfiguration"] = {"osFamily": "6"}
    r = raw.post("/pools", body, api_version=version)
    if major(version) <= 19:
        err = assert_error(r, 400, "InvalidPropertyValue", PropertyName="cloudServiceConfiguration")
        assert "retired" in err["values"][-1]["value"]
    else:
        assert_error(r, 400, "UnsupportedProperty", PropertyName="cloudServiceConfiguration")


def test_versions_listed() -> None:
    assert len(ALL) == 15 and "2018-08-01.7.0" in ALL and "2025-06-01" in ALL and "2022-10-01.16.0" in ALL


@pytest.mark.parametrize("version", ["2018-08-01.7.0", "2022-10-01.16.0", "2024-07-01.20.0"])
def test_bad_bodies_in_older_versions(raw: Raw, version: str) -> None:
    """The raw-JSON path of older versions hands malformed bodies to the decoder's usual errors."""
    assert_error(raw.request("POST", "/pools", content=b"{not json", api_version=version), 400,
                 "InvalidRequestBody")  # fmt: skip
    assert_error(raw.post("/pools", [1, 2], api_version=version), 400, "InvalidRequestBody")
    old = pool_body("bad", 0, maxTasksPerNode="x")
    if major(version) >= 12:
        assert_error(raw.post("/pools", old, api_version=version), 400, "UnsupportedProperty",
                     PropertyName="maxTasksPerNode")  # fmt: skip
    else:  # renamed on the way in, but the error names what the client sent
        assert_error(raw.post("/pools", old, api_version=version), 400, "InvalidPropertyValue",
                     PropertyName="maxTasksPerNode", PropertyValue="x")  # fmt: skip
        assert_error(raw.post("/pools", pool_body("bad", 0, maxTasksPerNode=999), api_version=version), 400,
                     "InvalidPropertyValue", PropertyName="maxTasksPerNode")  # fmt: skip
    # an optional body may be empty: the job is looked up, not the body refused
    assert_error(raw.request("POST", "/jobs/nosuchjob/terminate", api_version=version), 404, "JobNotFound")
