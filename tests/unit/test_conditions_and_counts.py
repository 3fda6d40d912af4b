"""Pure pieces of the service layer: conditional headers, task-count buckets, state transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batchyard.models.errors import BatchError
from batchyard.models.states import (
    IllegalTransition,
    JobState,
    TaskState,
    check_job_transition,
    check_task_transition,
)
from batchyard.service.context import Assignments, Conditions
from batchyard.service.taskstate import bucket, count_deltas

ROW = {"etag": "0x8DD000000000001", "last_modified": "2026-01-01T10:00:00.0000000Z"}
LM = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cond", "write", "status"),
    [
        (Conditions(if_match='"0x8DD000000000001"'), True, None),
        (Conditions(if_match="0x8DD000000000001"), True, None),
        (Conditions(if_match="*"), True, None),
        (Conditions(if_match='"0x1"'), True, 412),
        (Conditions(if_none_match='"0x8DD000000000001"'), False, 304),
        (Conditions(if_none_match="*"), True, 412),
        (Conditions(if_none_match='"0x1"'), False, None),
        (Conditions(if_modified_since=LM), False, 304),
        (Conditions(if_modified_since=LM - timedelta(seconds=1)), False, None),
        (Conditions(if_unmodified_since=LM - timedelta(seconds=1)), True, 412),
        (Conditions(if_unmodified_since=LM), True, None),
    ],
)
def test_conditions(cond: Conditions, write: bool, status: int | None) -> None:
    if status is None:
        cond.check(ROW, write)
    else:
        with pytest.raises(BatchError) as e:
            cond.check(ROW, write)
        assert (e.value.status, e.value.code) == (status, "ConditionNotMet")


def test_if_match_on_missing_resource_fails() -> None:
    with pytest.raises(BatchError) as e:
        Conditions(if_match="*").check(None, True)
    assert e.value.status == 412


def test_buckets_and_deltas() -> None:
    assert bucket("active", None) == ["active"]
    assert bucket("preparing", None) == bucket("running", None) == ["running"]
    assert bucket("completed", "success") == ["completed", "succeeded"]
    assert bucket("completed", "failure") == ["completed", "failed"]
    d = count_deltas(bucket("running", None), bucket("completed", "failure"), 2)
    assert d == {
        "running": -1,
        "slots_running": -2,
        "completed": 1,
        "slots_completed": 2,
        "failed": 1,
        "slots_failed": 2,
    }
    assert count_deltas(["active"], ["active"], 1) == {"active": 0, "slots_active": 0}


def test_task_transitions() -> None:
    check_task_transition(TaskState.ACTIVE, TaskState.PREPARING)
    check_task_transition(TaskState.RUNNING, TaskState.ACTIVE)  # requeue / retry
    check_task_transition(TaskState.COMPLETED, TaskState.ACTIVE)  # reactivate
    with pytest.raises(IllegalTransition):
        check_task_transition(TaskState.COMPLETED, TaskState.RUNNING)


def test_job_transitions() -> None:
    check_job_transition(JobState.ACTIVE, JobState.TERMINATING)
    check_job_transition(JobState.DISABLED, JobState.ENABLING)
    with pytest.raises(IllegalTransition):
        check_job_transition(JobState.COMPLETED, JobState.ACTIVE)
    with pytest.raises(IllegalTransition):
        check_job_transition(JobState.DELETING, JobState.ACTIVE)


def test_assignments_track_slots() -> None:
    a = Assignments()
    a.add("n1", "j/t1", {"ref": "j/t1#0", "slots": 2}, 2)
    a.add("n1", "j/t2", {"ref": "j/t2#0", "slots": 1}, 1)
    assert a.used_slots("n1") == 3
    assert a.remove("j/t1") == "n1"
    assert a.used_slots("n1") == 1
    assert a.remove("j/t1") is None
    assert a.drop_node("n1") == ["j/t2"]
    assert a.used_slots("n1") == 0 and a.node_of == {}
