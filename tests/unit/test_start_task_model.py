"""The pure start-task rules: defaults, input checks, the node's start gate and its startTaskInfo."""

from __future__ import annotations

from typing import Any

import pytest

from batchyard.models import errors, starttask


def test_defaults_in_the_service_order() -> None:
    st = starttask.normalise({"waitForSuccess": False, "commandLine": "x", "environmentSettings": []})
    assert list(st) == [
        "commandLine",
        "environmentSettings",
        "userIdentity",
        "maxTaskRetryCount",
        "waitForSuccess",
    ]
    assert st["userIdentity"] == {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}
    assert st["maxTaskRetryCount"] == 0 and st["waitForSuccess"] is False


@pytest.mark.parametrize(
    "spec,status,prop",
    [
        ({"commandLine": ""}, 400, "startTask.commandLine"),
        ({"commandLine": "x", "maxTaskRetryCount": -5}, 400, "startTask.maxTaskRetryCount"),
        ({"commandLine": "x", "maxTaskRetryCount": True}, 400, "startTask.maxTaskRetryCount"),
        ({"commandLine": "x", "userIdentity": {"username": "u"}}, 400, "startTask.userIdentity.username"),
        (
            {"commandLine": "x", "environmentSettings": [{"value": "1"}]},
            400,
            "startTask.environmentSettings[0].name",
        ),
        ({"commandLine": "x", "containerSettings": {"imageName": "i"}}, 501, None),
        ({"commandLine": "x" * 40_000}, 413, None),
    ],
)
def test_refused(spec: dict[str, Any], status: int, prop: str | None) -> None:
    with pytest.raises(errors.BatchError) as err:
        starttask.normalise(spec)
    assert err.value.status == status
    if prop is not None:
        assert dict(err.value.values)["PropertyName"] == prop


def test_named_user_must_exist() -> None:
    st = starttask.normalise({"commandLine": "x", "userIdentity": {"username": "ops"}}, [{"name": "ops"}])
    assert st["userIdentity"] == {"username": "ops"}


def test_gate() -> None:
    wait = {"_startTask": {"waitForSuccess": True}}
    assert starttask.gate({}) is None
    assert (
        starttask.gate({"_startTask": {"waitForSuccess": False}, "startTaskInfo": {"state": "running"}})
        is None
    )
    assert starttask.gate(wait) == "starting"
    assert starttask.gate({**wait, "startTaskInfo": {"state": "running"}}) == "waitingforstarttask"
    assert starttask.gate({**wait, "startTaskInfo": {"state": "completed", "result": "success"}}) is None
    assert (
        starttask.gate({**wait, "startTaskInfo": {"state": "completed", "result": "failure"}})
        == "starttaskfailed"
    )


def test_info_shapes() -> None:
    first = starttask.started("t0", 0)
    assert first == {"state": "running", "startTime": "t0", "retryCount": 0}
    retry = starttask.started("t1", 1)
    assert retry["lastRetryTime"] == "t1"
    done = starttask.completed(retry, "t1", "t2", 1, 3, None)
    assert list(done) == [
        "state",
        "startTime",
        "endTime",
        "exitCode",
        "failureInfo",
        "retryCount",
        "lastRetryTime",
        "result",
    ]
    assert done["failureInfo"]["code"] == "FailureExitCode" and done["result"] == "failure"
    ok = starttask.completed(first, "t0", "t1", 0, 0, None)
    assert ok == {
        "state": "completed",
        "startTime": "t0",
        "endTime": "t1",
        "exitCode": 0,
        "retryCount": 0,
        "result": "success",
    }
    never_ran = starttask.completed(
        first, "t0", "t0", 0, None, {"category": "usererror", "code": "BlobNotFound", "message": "m"}
    )
    assert "exitCode" not in never_ran and never_ran["failureInfo"]["code"] == "BlobNotFound"
