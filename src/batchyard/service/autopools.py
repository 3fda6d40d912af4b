"""Auto pools: a job's `poolInfo.autoPoolSpecification` (decision 0140).

The pool is inserted in the same transaction as its job, so a server killed between the two loses nothing
and leaves no pool without an owner. The pool's body remembers its owner (`_autoPool`: the job or job
schedule key and keepAlive); `tick` deletes, from the store alone, every auto pool whose owner has completed
or is gone, so a restart in the middle of a deletion finishes it on the next pass.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from sqlalchemy import and_

from batchyard.models import errors, mounts
from batchyard.models.ids import check_id, key_of
from batchyard.models.resources import new_pool
from batchyard.service import autoscale, certificates, pools
from batchyard.service import starttask as start_task
from batchyard.service.common import Body
from batchyard.service.context import Ctx
from batchyard.store import schema
from batchyard.store.sql import Tx

SPEC = "poolInfo.autoPoolSpecification"
#: The longest autoPoolIdPrefix the service accepts.
MAX_PREFIX = 20
_LIFETIMES = {"job": "job", "jobschedule": "jobschedule"}
#: The pool specification's materialised defaults, in the order the service returns them (recorded).
_SPEC_ORDER = (
    "displayName",
    "vmSize",
    "taskSlotsPerNode",
    "taskSchedulingPolicy",
    "resizeTimeout",
    "targetDedicatedNodes",
    "targetLowPriorityNodes",
    "enableAutoScale",
    "autoScaleFormula",
    "autoScaleEvaluationInterval",
    "enableInterNodeCommunication",
    "networkConfiguration",
    "startTask",
)
#: Pool body properties that describe the pool's life, not its specification.
_NOT_SPEC = {
    "id",
    "state",
    "stateTransitionTime",
    "allocationState",
    "allocationStateTransitionTime",
    "creationTime",
    "currentDedicatedNodes",
    "currentLowPriorityNodes",
    "eTag",
    "lastModified",
}


def _prefixed(e: errors.BatchError, prefix: str) -> errors.BatchError:
    """An error of the pool rules, naming the property inside the auto pool specification."""
    if e.status == 501:
        op = dict(e.values).get("Operation", e.message)
        return errors.not_implemented(f"{prefix}.{op}")
    values = [(k, f"{prefix}.{v}" if k == "PropertyName" else v) for k, v in e.values]
    return errors.BatchError(e.status, e.code, e.message, values)


#: A formula that compiles, put in place of one that does not while the rest of a specification is checked.
_PLACEHOLDER_FORMULA = "$TargetDedicatedNodes = 0;"


def formula_error(pool_spec: Body) -> Body | None:
    """The job's schedulingError when the auto pool's autoscale formula does not compile: the service accepts
    the job and completes it at once with this error instead of creating the pool."""
    formula = pool_spec.get("autoScaleFormula")
    if not pool_spec.get("enableAutoScale") or not isinstance(formula, str) or not formula.strip():
        return None
    try:
        autoscale.compile_or_refuse(formula)
    except errors.BatchError as e:
        return {
            "category": "UserError",
            "code": "InvalidAutoScaleFormulaInAutoPool",
            "message": "The specified autoscale formula for the auto pool is invalid",
            "details": [
                {"name": "Reason", "value": e.message},
                *({"name": k, "value": v} for k, v in e.values),
            ],
        }
    return None


def _pool_body(ctx: Ctx, pool_spec: Body, at: str) -> tuple[Body, Any]:
    """The pool rules of pool create, errors named under `at`; returns the pool body and autoscale program.
    A formula that does not compile is not a request error here (see `formula_error`)."""
    if "id" in pool_spec:
        raise errors.invalid_property_value(f"{at}.id", pool_spec["id"], "An auto pool's id is generated")
    spec = copy.deepcopy(pool_spec)
    if formula_error(spec) is not None:
        spec["autoScaleFormula"] = _PLACEHOLDER_FORMULA
    try:
        program = autoscale.check_create(ctx, spec)
        body = new_pool(spec, "")
        start_task.check(body)
    except errors.BatchError as e:
        raise _prefixed(e, at) from None
    return body, program


def check(ctx: Ctx, info: Body, plain_job: bool, at: str = SPEC) -> Body:
    """Validate an autoPoolSpecification; returns it with the defaults the service materialises."""
    auto = info.get("autoPoolSpecification")
    if not isinstance(auto, dict):
        raise errors.missing_required_property(at)
    if info.get("poolId"):
        raise errors.invalid_property_value(
            "poolInfo.poolId", info["poolId"], "poolId and autoPoolSpecification are mutually exclusive"
        )
    lifetime = auto.get("poolLifetimeOption")
    if lifetime is None:
        raise errors.missing_required_property(f"{at}.poolLifetimeOption")
    life = _LIFETIMES.get(str(lifetime).lower())
    if life is None or (plain_job and life == "jobschedule"):
        reason = "A job that is not created by a job schedule cannot use the jobschedule pool lifetime"
        raise errors.invalid_property_value(f"{at}.poolLifetimeOption", lifetime, reason if life else "")
    prefix = auto.get("autoPoolIdPrefix")
    if prefix is not None:
        if not isinstance(prefix, str) or len(prefix) > MAX_PREFIX:
            raise errors.invalid_property_value(f"{at}.autoPoolIdPrefix", prefix)
        if prefix:
            check_id(prefix, f"{at}.autoPoolIdPrefix")
    keep = auto.get("keepAlive", False)
    if not isinstance(keep, bool):
        raise errors.invalid_property_value(f"{at}.keepAlive", keep)
    pool_spec = auto.get("pool")
    if not isinstance(pool_spec, dict):
        raise errors.missing_required_property(f"{at}.pool")
    try:  # as pool create: unknown certificates 409, known ones 501 (decision 0130)
        certificates.check_references(ctx, pool_spec.get("certificateReferences"))
    except errors.BatchError as e:
        raise _prefixed(e, f"{at}.pool") from None
    body, _ = _pool_body(ctx, pool_spec, f"{at}.pool")
    if "autoScaleFormula" in body:
        body["autoScaleFormula"] = pool_spec["autoScaleFormula"]  # as sent, even one that does not compile
    out: Body = {}
    if prefix:
        out["autoPoolIdPrefix"] = prefix
    out.update(poolLifetimeOption=life, keepAlive=keep, pool=_spec_view(body))
    return out


def _spec_view(body: Body) -> Body:
    """A checked pool body as the pool specification the service echoes in the job (defaults included)."""
    rest = {k: v for k, v in body.items() if k not in _NOT_SPEC}
    out = {k: rest.pop(k) for k in _SPEC_ORDER if k in rest}
    out.update(rest)
    return out


def view(info: object) -> object:
    """A poolInfo as reads return it: an auto pool specification's mount credentials are never returned."""
    if not isinstance(info, dict) or not isinstance(info.get("autoPoolSpecification"), dict):
        return info
    auto = info["autoPoolSpecification"]
    pool = auto.get("pool")
    if not isinstance(pool, dict) or not pool.get("mountConfiguration"):
        return info
    pool = dict(pool, mountConfiguration=mounts.view(pool["mountConfiguration"]))
    return dict(info, autoPoolSpecification=dict(auto, pool=pool))


def new_pool_id(prefix: str | None) -> str:
    """`<prefix>_<GUID>` in upper case, as the service names auto pools; just the GUID without a prefix."""
    guid = str(uuid.uuid4()).upper()
    return f"{prefix}_{guid}" if prefix else guid


def _schedule_pool_id(prefix: str | None, schedule_key: str, created: str) -> str:
    """A schedule-lifetime pool's id, the same for every job of the schedule (no extra state to keep)."""
    guid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"batchyard:jobschedule:{schedule_key}:{created}")).upper()
    return f"{prefix}_{guid}" if prefix else guid


def create_for_job(ctx: Ctx, tx: Tx, job_key: str, info: Body) -> tuple[str, Body | None]:
    """Create (or, for a schedule-lifetime pool, find) the job's auto pool inside the job's transaction;
    returns the pool id and, when the pool cannot be created, the job's schedulingError (no pool then)."""
    auto = info["autoPoolSpecification"]
    prefix = auto.get("autoPoolIdPrefix") or None
    failure = formula_error(auto["pool"])
    if failure is not None:
        return new_pool_id(prefix), failure
    owner: Body
    if auto["poolLifetimeOption"] == "jobschedule":
        schedule_key = job_key.split(":", 1)[0]
        sched = tx.get(schema.job_schedules, key=schedule_key)
        created = sched["creation_time"] if sched else ""
        pool_id = _schedule_pool_id(prefix, schedule_key, created)
        existing = tx.get(schema.pools, key=key_of(pool_id))
        if existing is not None and existing["state"] != "deleting":
            return pool_id, None
        owner = {"schedule": schedule_key}
    else:
        pool_id = new_pool_id(prefix)
        owner = {"job": job_key}
    body, program = _pool_body(ctx, auto["pool"], f"{SPEC}.pool")
    body = {"id": pool_id, **body, "_autoPool": {**owner, "keepAlive": bool(auto.get("keepAlive"))}}
    pools.insert_pool(ctx, tx, pool_id, body, program)
    ctx.hub.wake_pools()
    return pool_id, None


def set_keep_alive(tx: Tx, pool_id: str, keep: bool) -> None:
    """A job update changed keepAlive: the pool's owner record follows."""
    row = tx.get_for_update(schema.pools, key=key_of(pool_id))
    if row is None or "_autoPool" not in row["body"]:
        return
    row["body"]["_autoPool"]["keepAlive"] = keep
    tx.update(schema.pools, {"body": row["body"]}, key=row["key"])


def _owner_done(tx: Tx, owner: Body) -> bool:
    if "job" in owner:
        job = tx.get(schema.jobs, key=owner["job"])
        return job is None or job["state"] == "completed"
    sched = tx.get(schema.job_schedules, key=owner.get("schedule", ""))
    return sched is None or sched["state"] == "completed"


def tick(ctx: Ctx) -> int:
    """Delete the auto pools whose job or schedule has completed or is gone (unless keepAlive); returns how
    many. Store-driven and idempotent: the pool manager then removes the nodes of a `deleting` pool."""
    deleted = 0
    with ctx.store.tx() as tx:
        rows = tx.select(
            schema.pools,
            and_(
                schema.pools.c.state == "active", schema.pools.c.body.contains('"_autoPool"', autoescape=True)
            ),
        )
        candidates = [
            r["key"]
            for r in rows
            if isinstance(r["body"].get("_autoPool"), dict) and not r["body"]["_autoPool"].get("keepAlive")
        ]
    for key in candidates:
        with ctx.store.tx() as tx:
            row = tx.get_for_update(schema.pools, key=key)
            if row is None or row["state"] != "active" or not _owner_done(tx, row["body"]["_autoPool"]):
                continue
            pools.begin_delete(ctx, tx, row)
            deleted += 1
    if deleted:
        ctx.hub.wake_pools()
    return deleted
