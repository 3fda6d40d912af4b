"""The pure rules of multi-instance tasks (models/multiinstance.py): input, addresses, refs, environment, view."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from batchyard.models import errors, multiinstance


def test_defaults_and_input_rules() -> None:
    body: dict[str, Any] = {"multiInstanceSettings": {"coordinationCommandLine": "c"}}
    multiinstance.check_new_task(body)
    assert body["multiInstanceSettings"]["numberOfInstances"] == 1
    for bad in (0, -1, True, "2", 1.5):
        with pytest.raises(errors.BatchError) as info:
            multiinstance.check_new_task(
                {"multiInstanceSettings": {"numberOfInstances": bad, "coordinationCommandLine": "c"}}
            )
        assert info.value.code == "InvalidPropertyValue"
    with pytest.raises(errors.BatchError) as info:
        multiinstance.check_new_task({"multiInstanceSettings": {"numberOfInstances": 2}})
    assert info.value.code == "MissingRequiredProperty"
    with pytest.raises(errors.BatchError):
        multiinstance.check_new_task(
            {
                "requiredSlots": 2,
                "multiInstanceSettings": {"numberOfInstances": 2, "coordinationCommandLine": "c"},
            }
        )
    multiinstance.check_new_task({"commandLine": "x"})  # not multi-instance: nothing to check


def test_addresses_are_distinct_loopback_addresses() -> None:
    seen = set()
    for i in range(0, 3 * 254 * 256, 7):
        a = multiinstance.address(i)
        ip = ipaddress.ip_address(a)
        assert ip.is_loopback and a != "127.0.0.1"
        last = int(a.rsplit(".", 1)[1])
        assert 1 <= last <= 254
        seen.add(a)
    assert len(seen) == len(range(0, 3 * 254 * 256, 7))
    used = {multiinstance.pick_address("/data", set())}
    nxt = multiinstance.pick_address("/data", used)
    assert nxt not in used and multiinstance.pick_address("/other", set()) != next(iter(used))


def test_instance_refs() -> None:
    ref = multiinstance.instance_ref("j1/t~x", 3) + "#7"
    assert multiinstance.parse_instance_ref(ref) == ("j1/t~x", 3, 7)
    assert multiinstance.parse_instance_ref("j1/t#7") is None
    assert multiinstance.parse_instance_ref("j1/t~x#7") is None


def test_gang_environment() -> None:
    env = dict(multiinstance.gang_env(["127.1.0.1", "127.1.0.2"], 1, "/n/workitems/j/job-1/t"))
    assert env == {
        "AZ_BATCH_HOST_LIST": "127.1.0.1,127.1.0.2",
        "AZ_BATCH_NODE_LIST": "127.1.0.1;127.1.0.2",
        "AZ_BATCH_MASTER_NODE": "127.1.0.1:6000",
        "AZ_BATCH_IS_CURRENT_NODE_MASTER": "false",
        "AZ_BATCH_TASK_SHARED_DIR": "/n/workitems/j/job-1/t",
        "CCP_NODES": "2 127.1.0.1 1 127.1.0.2 1",
    }


def test_subtask_view() -> None:
    inst = {
        "id": 1,
        "nodeInfo": {"nodeId": "n"},
        "state": "running",
        "stateTransitionTime": "T0",
        "startTime": "T0",
    }
    running = multiinstance.subtask_view(inst, None)
    assert running == {
        "id": 1,
        "nodeInfo": {"nodeId": "n"},
        "startTime": "T0",
        "state": "running",
        "stateTransitionTime": "T0",
    }
    ended = multiinstance.subtask_view(inst, "T9")
    assert ended["state"] == "completed" and ended["endTime"] == "T9" and ended["result"] == "success"
    assert (ended["previousState"], ended["previousStateTransitionTime"]) == ("running", "T0")
    failed = dict(
        inst,
        state="completed",
        stateTransitionTime="T5",
        endTime="T5",
        exitCode=3,
        failureInfo={"code": "FailureExitCode"},
        history=[["running", "T0"]],
    )
    v = multiinstance.subtask_view(failed, "T9")
    assert (v["endTime"], v["exitCode"], v["result"], v["failureInfo"]) == (
        "T5",
        3,
        "failure",
        {"code": "FailureExitCode"},
    )
