"""Bad input for multi-instance tasks and the subtasksinfo route, on the wire: Batch errors naming the property,
nothing stored. Requests are Shared Key signed by the official SDK's policy (tests/support/raw.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.live import LiveServer
from tests.support.raw import Raw, assert_error, pool_body, raw_deleting_pools


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Iterator[Raw]:
    yield from raw_deleting_pools(live)


@pytest.fixture(scope="module")
def job(raw: Raw) -> str:
    pid = "mi-in-" + uuid.uuid4().hex[:6]
    assert raw.post("/pools", pool_body(pid, enableInterNodeCommunication=True)).status_code == 201
    jid = "mi-in-job-" + uuid.uuid4().hex[:6]
    assert raw.post("/jobs", {"id": jid, "poolInfo": {"poolId": pid}}).status_code == 201
    return jid


def mi(tid: str, **settings: Any) -> dict[str, Any]:
    return {"id": tid, "commandLine": "/bin/true", "multiInstanceSettings": settings}


@pytest.mark.parametrize(
    ("settings", "code", "prop"),
    [
        ({"numberOfInstances": 0, "coordinationCommandLine": "/bin/true"}, "InvalidPropertyValue", None),
        ({"numberOfInstances": -3, "coordinationCommandLine": "/bin/true"}, "InvalidPropertyValue", None),
        ({"numberOfInstances": 2}, "MissingRequiredProperty", None),
        ({"numberOfInstances": 2, "coordinationCommandLine": ""}, "MissingRequiredProperty", None),
        ({"numberOfInstances": "two", "coordinationCommandLine": "/bin/true"}, None, None),
        ({"numberOfInstances": 2, "coordinationCommandLine": "/bin/true", "bogus": 1}, None, None),
    ],
)
def test_bad_settings_are_refused(
    raw: Raw, job: str, settings: dict[str, Any], code: str | None, prop: None
) -> None:
    tid = "t-" + uuid.uuid4().hex[:6]
    r = raw.post(f"/jobs/{job}/tasks", mi(tid, **settings))
    assert r.status_code == 400, r.text()
    body = r.json()
    if code is not None:
        assert body["code"] == code
    assert "multiInstanceSettings" in r.text() or "numberOfInstances" in r.text() or "bogus" in r.text()
    assert raw.get(f"/jobs/{job}/tasks/{tid}").status_code == 404


def test_required_slots_with_multi_instance(raw: Raw, job: str) -> None:
    body = mi("rs", numberOfInstances=2, coordinationCommandLine="/bin/true")
    body["requiredSlots"] = 2
    r = raw.post(f"/jobs/{job}/tasks", body)
    assert_error(r, 400, "InvalidPropertyValue", PropertyName="requiredSlots")


def test_subtasksinfo_of_missing_job_and_task(raw: Raw, job: str) -> None:
    assert_error(raw.get("/jobs/nope-job/tasks/t/subtasksinfo"), 404, "JobNotFound")
    assert_error(raw.get(f"/jobs/{job}/tasks/nope/subtasksinfo"), 404, "TaskNotFound")


def test_subtasksinfo_of_a_waiting_task_is_empty(raw: Raw, job: str) -> None:
    assert (
        raw.post(
            f"/jobs/{job}/tasks", mi("w", numberOfInstances=2, coordinationCommandLine="/bin/true")
        ).status_code
        == 201
    )
    r = raw.json(f"/jobs/{job}/tasks/w/subtasksinfo", params={"$select": "id,state"})
    assert r["value"] == []
    old = raw.json(f"/jobs/{job}/tasks/w/subtasksinfo", api_version="2018-08-01.7.0")
    assert old["value"] == []
    t = raw.json(f"/jobs/{job}/tasks/w")
    assert t["multiInstanceSettings"] == {"numberOfInstances": 2, "coordinationCommandLine": "/bin/true"}


def test_subtasksinfo_refuses_writes(raw: Raw, job: str) -> None:
    r = raw.post(f"/jobs/{job}/tasks/w/subtasksinfo", {})
    assert r.status_code in (404, 405), r.text()
    assert r.status_code < 500
