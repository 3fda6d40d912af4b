"""The Job Manager task: created with its job as the job's first task, scheduled first, and ending the job
when it completes (`killJobOnCompletion`). Also the job-create checks of the three job-level tasks.

The Job Manager is an ordinary row of the job's tasks (listed, gettable, retried, terminated like any task);
its job-level settings ride along in the row's internal `_jobManager` (never shown): `runExclusive` (it takes a
whole node: every slot of it, see `run_slots`), `allowLowPriorityNode` and `killJobOnCompletion`.
"""

from __future__ import annotations

from batchyard.models import jobtasks as model
from batchyard.service.common import Body
from batchyard.service.context import Ctx
from batchyard.service.staging import check_staging
from batchyard.store.sql import Row, Tx

JOB_MANAGER = "_jobManager"


def check_job(body: Body) -> None:
    """Validate and materialise the job's Job Manager / Preparation / Release specs (in place)."""
    model.materialise(body)
    for name in ("jobManagerTask", "jobPreparationTask", "jobReleaseTask"):
        spec = body.get(name)
        if spec:
            _check_files(name, spec)


def _check_files(name: str, spec: Body) -> None:
    from batchyard.models import errors

    try:
        check_staging(spec)
    except errors.BatchError as e:
        # the property is the job-level task's: jobManagerTask.resourceFiles[0].filePath
        if e.code == "NotImplemented":
            op = dict(e.values).get("Operation", "")
            raise errors.not_implemented(f"{name}.{op}") from None
        vals = [(k, f"{name}.{v}" if k == "PropertyName" else v) for k, v in e.values]
        raise errors.BatchError(e.status, e.code, e.message, vals) from None


def add_job_manager(ctx: Ctx, tx: Tx, job: Row) -> None:
    """Insert the Job Manager's task inside the job-create transaction: its first task (lowest sequence)."""
    from batchyard.service import tasks

    jm = job["body"].get("jobManagerTask")
    if not jm:
        return
    _, now_text, etag = ctx.stamp()
    row = tasks.new_row(job, model.job_manager_task_spec(jm), 1, now_text, etag)
    row["body"][JOB_MANAGER] = model.job_manager_flags(jm)
    tasks.insert_rows(tx, job, [row])
    job["task_seq"] = int(job.get("task_seq", 0)) + 1


def check_task_id(job: Row, task_id: str) -> None:
    """409 for a task taking the id of the job's Preparation or Release task."""
    model.check_task_id(job["body"], task_id)


def flags(task: Row) -> Body | None:
    jm = task["body"].get(JOB_MANAGER)
    return jm if isinstance(jm, dict) else None


def kills_job(task: Row) -> bool:
    """Whether this task's completion ends its job (a Job Manager with killJobOnCompletion)."""
    jm = flags(task)
    return jm is not None and bool(jm.get("killJobOnCompletion", True))


def run_slots(task: Row, node_slots: int) -> int:
    """The slots an attempt holds on its node: all of them for an exclusive Job Manager.

    Only placement and the agent see this: the job's task slot counts keep the task's `requiredSlots`."""
    jm = flags(task)
    if jm is not None and jm.get("runExclusive", True):
        return max(int(task["slots"]), node_slots)
    return int(task["slots"])


def dedicated_only(task: Row) -> bool:
    jm = flags(task)
    return jm is not None and not jm.get("allowLowPriorityNode", True)
