"""The job's own tasks (Job Manager, Job Preparation, Job Release): validation and the defaults the service
materialises in the job body (recorded: azcli `test_batch_job_list_cmd`, python `test_batch_jobs`). Pure.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

from batchyard.models import errors
from batchyard.models.decode import parse_duration
from batchyard.models.ids import check_id, key_of

Body = dict[str, Any]

INFINITE = "P10675199DT2H48M5.4775807S"
DEFAULT_PREP_ID = "jobpreparation"
DEFAULT_RELEASE_ID = "jobrelease"
#: The release task's maxWallClockTime: its default and its maximum (a longer one is a 400).
RELEASE_MAX_WALL = "PT15M"
_RELEASE_MAX = datetime.timedelta(minutes=15)

#: Properties of the three specs batchyard cannot honour yet (refused, never stored and ignored).
_NOT_YET = {
    "jobManagerTask": ("containerSettings", "applicationPackageReferences", "authenticationTokenSettings"),
    "jobPreparationTask": ("containerSettings",),
    "jobReleaseTask": ("containerSettings",),
}

#: The Job Manager properties that make up its task (the rest steer the job).
JM_TASK_FIELDS = (
    "id",
    "displayName",
    "commandLine",
    "resourceFiles",
    "outputFiles",
    "environmentSettings",
    "constraints",
    "requiredSlots",
    "userIdentity",
)


def _auto_user(identity: Any) -> Body:
    from batchyard.models.resources import _auto_user as auto

    out: Body = auto(identity)
    return out


def _duration(value: object, prop: str) -> datetime.timedelta:
    try:
        return parse_duration(str(value))
    except ValueError:
        raise errors.invalid_property_value(prop, value) from None


def _retries(value: object, prop: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise errors.invalid_property_value(prop, value)
    return value


def _refuse(kind: str, spec: Body) -> None:
    for prop in _NOT_YET[kind]:
        if spec.get(prop) not in (None, [], {}):
            raise errors.not_implemented(f"{kind}.{prop}")
    if not spec.get("commandLine"):
        raise errors.missing_required_property(f"{kind}.commandLine")


def _put(out: Body, spec: Body, *names: str) -> None:
    for n in names:
        if spec.get(n) is not None:
            out[n] = copy.deepcopy(spec[n])


def job_manager(spec: Body, job_retries: int) -> Body:
    """The Job Manager as the job body returns it, in the service's key order."""
    _refuse("jobManagerTask", spec)
    out: Body = {"id": check_id(spec.get("id"), "jobManagerTask.id")}
    _put(out, spec, "displayName", "commandLine", "resourceFiles", "outputFiles", "environmentSettings")
    cons = dict(spec.get("constraints") or {})
    wall = cons.get("maxWallClockTime", INFINITE)
    _duration(wall, "jobManagerTask.constraints.maxWallClockTime")
    retention = cons.get("retentionTime", "P7D")
    _duration(retention, "jobManagerTask.constraints.retentionTime")
    out["constraints"] = {
        "maxWallClockTime": wall,
        "retentionTime": retention,
        "maxTaskRetryCount": _retries(
            cons.get("maxTaskRetryCount", job_retries), "jobManagerTask.constraints.maxTaskRetryCount"
        ),
    }
    slots = spec.get("requiredSlots", 1)
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise errors.invalid_property_value("jobManagerTask.requiredSlots", slots)
    out["requiredSlots"] = slots
    out["userIdentity"] = _auto_user(spec.get("userIdentity"))
    _flags(out, spec, "jobManagerTask", "runExclusive", "allowLowPriorityNode", "killJobOnCompletion")
    return out


def preparation(spec: Body) -> Body:
    _refuse("jobPreparationTask", spec)
    out: Body = {"id": check_id(spec.get("id", DEFAULT_PREP_ID), "jobPreparationTask.id")}
    _put(out, spec, "commandLine", "resourceFiles", "environmentSettings")
    cons = dict(spec.get("constraints") or {})
    wall = cons.get("maxWallClockTime", INFINITE)
    _duration(wall, "jobPreparationTask.constraints.maxWallClockTime")
    retention = cons.get("retentionTime", "P7D")
    _duration(retention, "jobPreparationTask.constraints.retentionTime")
    out["constraints"] = {
        "maxWallClockTime": wall,
        "retentionTime": retention,
        # not the job's default: the recordings show 0 under a job with maxTaskRetryCount 3
        "maxTaskRetryCount": _retries(
            cons.get("maxTaskRetryCount", 0), "jobPreparationTask.constraints.maxTaskRetryCount"
        ),
    }
    out["userIdentity"] = _auto_user(spec.get("userIdentity"))
    _flags(out, spec, "jobPreparationTask", "waitForSuccess", "rerunOnNodeRebootAfterSuccess")
    return out


def _flags(out: Body, spec: Body, kind: str, *names: str) -> None:
    """Boolean properties that default to true, each checked and copied."""
    for name in names:
        v = spec.get(name, True)
        if not isinstance(v, bool):
            raise errors.invalid_property_value(f"{kind}.{name}", v)
        out[name] = v


def release(spec: Body) -> Body:
    _refuse("jobReleaseTask", spec)
    out: Body = {"id": check_id(spec.get("id", DEFAULT_RELEASE_ID), "jobReleaseTask.id")}
    _put(out, spec, "commandLine", "resourceFiles", "environmentSettings")
    wall = spec.get("maxWallClockTime", RELEASE_MAX_WALL)
    if _duration(wall, "jobReleaseTask.maxWallClockTime") > _RELEASE_MAX:
        raise errors.invalid_property_value(
            "jobReleaseTask.maxWallClockTime", wall, "The maximum is 15 minutes (PT15M)"
        )
    out["maxWallClockTime"] = wall
    retention = spec.get("retentionTime", "P7D")
    _duration(retention, "jobReleaseTask.retentionTime")
    out["retentionTime"] = retention
    out["userIdentity"] = _auto_user(spec.get("userIdentity"))
    return out


def materialise(body: Body) -> None:
    """Validate the job's Job Manager / Preparation / Release specs in place, with their defaults.

    Raises the service's errors: 400 naming the property, 409 TaskIdSameAsJobPreparationTask /
    TaskIdSameAsJobReleaseTask when the Job Manager takes one of their ids, 501 for what batchyard cannot run.
    """
    retries = int((body.get("constraints") or {}).get("maxTaskRetryCount", 0))
    prep = body.get("jobPreparationTask")
    rel = body.get("jobReleaseTask")
    jm = body.get("jobManagerTask")
    if rel and not prep:
        # "A Job Release Task cannot be specified without also specifying a Job Preparation Task"
        raise errors.missing_required_property("jobPreparationTask")
    for name in ("jobManagerTask", "jobPreparationTask", "jobReleaseTask"):
        if name in body and not body[name]:
            del body[name]
    if prep:
        body["jobPreparationTask"] = preparation(prep)
    if rel:
        body["jobReleaseTask"] = release(rel)
        if key_of(body["jobReleaseTask"]["id"]) == key_of(body["jobPreparationTask"]["id"]):
            raise errors.invalid_property_value(
                "jobReleaseTask.id",
                body["jobReleaseTask"]["id"],
                "The Job Release task cannot have the id of the Job Preparation task",
            )
    if jm:
        body["jobManagerTask"] = job_manager(jm, retries)
        check_task_id(body, body["jobManagerTask"]["id"])


def check_task_id(job: Body, task_id: str) -> None:
    """A task of the job may not take the id of its Job Preparation or Job Release task (409)."""
    k = key_of(task_id)
    prep = job.get("jobPreparationTask")
    if prep and key_of(str(prep.get("id", DEFAULT_PREP_ID))) == k:
        raise errors.task_id_same_as_job_preparation_task()
    rel = job.get("jobReleaseTask")
    if rel and key_of(str(rel.get("id", DEFAULT_RELEASE_ID))) == k:
        raise errors.task_id_same_as_job_release_task()


def job_manager_task_spec(jm: Body) -> Body:
    """The task-add body of the Job Manager's task."""
    return {k: copy.deepcopy(jm[k]) for k in JM_TASK_FIELDS if k in jm}


def job_manager_flags(jm: Body) -> Body:
    """What the Job Manager's task row remembers of its job-level settings (kept in `_jobManager`)."""
    return {k: bool(jm.get(k, True)) for k in ("runExclusive", "allowLowPriorityNode", "killJobOnCompletion")}
