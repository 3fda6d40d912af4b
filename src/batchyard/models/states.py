"""State enums (wire values) and the transitions each entity may take."""

from __future__ import annotations

from enum import StrEnum


class PoolState(StrEnum):
    ACTIVE = "active"
    DELETING = "deleting"


class AllocationState(StrEnum):
    STEADY = "steady"
    RESIZING = "resizing"
    STOPPING = "stopping"


class JobState(StrEnum):
    ACTIVE = "active"
    DISABLING = "disabling"
    DISABLED = "disabled"
    ENABLING = "enabling"
    TERMINATING = "terminating"
    COMPLETED = "completed"
    DELETING = "deleting"


class TaskState(StrEnum):
    ACTIVE = "active"
    PREPARING = "preparing"
    RUNNING = "running"
    COMPLETED = "completed"


class NodeState(StrEnum):
    IDLE = "idle"
    REBOOTING = "rebooting"
    REIMAGING = "reimaging"
    RUNNING = "running"
    UNUSABLE = "unusable"
    CREATING = "creating"
    STARTING = "starting"
    WAITING_FOR_START_TASK = "waitingforstarttask"
    START_TASK_FAILED = "starttaskfailed"
    UNKNOWN = "unknown"
    LEAVING_POOL = "leavingpool"
    OFFLINE = "offline"
    PREEMPTED = "preempted"
    UPGRADING_OS = "upgradingos"
    DEALLOCATED = "deallocated"
    DEALLOCATING = "deallocating"


class IllegalTransition(Exception):
    """A state change the model does not allow; a bug in the caller, never a user error."""


_TASK: dict[TaskState, frozenset[TaskState]] = {
    TaskState.ACTIVE: frozenset({TaskState.PREPARING, TaskState.RUNNING, TaskState.COMPLETED}),
    # a placed task can be requeued (node lost, job disabled) or finish without running (terminate)
    TaskState.PREPARING: frozenset({TaskState.RUNNING, TaskState.ACTIVE, TaskState.COMPLETED}),
    TaskState.RUNNING: frozenset({TaskState.COMPLETED, TaskState.ACTIVE}),
    # reactivate
    TaskState.COMPLETED: frozenset({TaskState.ACTIVE}),
}

_JOB: dict[JobState, frozenset[JobState]] = {
    JobState.ACTIVE: frozenset(
        {JobState.DISABLING, JobState.TERMINATING, JobState.COMPLETED, JobState.DELETING}
    ),
    JobState.DISABLING: frozenset({JobState.DISABLED, JobState.TERMINATING, JobState.DELETING}),
    JobState.DISABLED: frozenset({JobState.ENABLING, JobState.TERMINATING, JobState.DELETING}),
    JobState.ENABLING: frozenset({JobState.ACTIVE, JobState.TERMINATING, JobState.DELETING}),
    JobState.TERMINATING: frozenset({JobState.COMPLETED, JobState.DELETING}),
    JobState.COMPLETED: frozenset({JobState.DELETING}),
    JobState.DELETING: frozenset(),
}

_NODE_SCHEDULABLE = frozenset({NodeState.IDLE, NodeState.RUNNING})


def check_task_transition(old: TaskState, new: TaskState) -> None:
    if new not in _TASK[old]:
        raise IllegalTransition(f"task {old} -> {new}")


def check_job_transition(old: JobState, new: JobState) -> None:
    if new not in _JOB[old]:
        raise IllegalTransition(f"job {old} -> {new}")


def node_accepts_tasks(state: NodeState) -> bool:
    return state in _NODE_SCHEDULABLE


class JobScheduleState(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    TERMINATING = "terminating"
    COMPLETED = "completed"
    DELETING = "deleting"


_JOB_SCHEDULE: dict[JobScheduleState, frozenset[JobScheduleState]] = {
    # disable/enable; terminate; the end of the schedule (doNotRunAfter, one-shot job done); delete
    JobScheduleState.ACTIVE: frozenset(
        {
            JobScheduleState.DISABLED,
            JobScheduleState.TERMINATING,
            JobScheduleState.COMPLETED,
            JobScheduleState.DELETING,
        }
    ),
    JobScheduleState.DISABLED: frozenset(
        {
            JobScheduleState.ACTIVE,
            JobScheduleState.TERMINATING,
            JobScheduleState.COMPLETED,
            JobScheduleState.DELETING,
        }
    ),
    JobScheduleState.TERMINATING: frozenset({JobScheduleState.COMPLETED, JobScheduleState.DELETING}),
    JobScheduleState.COMPLETED: frozenset({JobScheduleState.DELETING}),
    JobScheduleState.DELETING: frozenset(),
}


def check_job_schedule_transition(old: JobScheduleState, new: JobScheduleState) -> None:
    if new not in _JOB_SCHEDULE[old]:
        raise IllegalTransition(f"job schedule {old} -> {new}")
