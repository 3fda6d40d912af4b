"""Pool autoscale operations: enable, disable, evaluate, and the periodic run that resizes the pool.

The formula language is `batchyard.autoscale` (pure); this module feeds it the pool's figures and metric
samples and applies its targets through the pool's ordinary resize path (the pool manager). A pool's next due
evaluation (`_autoscaleNext`) and its last run (`autoScaleRun`) live in its body, written in the same
transaction as the targets, so a killed server neither skips nor repeats a due evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from batchyard.autoscale import Evaluation, Inputs, Program, Series, compile_formula
from batchyard.autoscale import FormulaError as _FormulaError
from batchyard.models import errors
from batchyard.models.clock import format_time, parse_time
from batchyard.models.decode import format_duration, parse_duration
from batchyard.models.ids import key_of
from batchyard.service.autoscale_state import DEFAULT_INTERVAL, MAX_INTERVAL
from batchyard.service.common import Body, stamp_body
from batchyard.service.context import Conditions, Ctx, Written
from batchyard.store import schema
from batchyard.store.sql import Row, Tx

#: Resource metrics sampled outside this module (pools.autoscaler, psutil): pool key -> metric -> value.
ResourceSampler = Callable[[Tx, str], Mapping[str, float]]

_TASK_METRICS = ("$ActiveTasks", "$RunningTasks", "$PendingTasks", "$SucceededTasks", "$FailedTasks")
_NEXT = "_autoscaleNext"
_ENABLED_AT = "_autoscaleEnabledAt"
#: The service takes one enableautoscale per pool every 30 s; a server with a shorter interval floor, that floor.
ENABLE_SPACING = timedelta(seconds=30)


# --- request checks -----------------------------------------------------------------------------------------


def compile_or_refuse(text: object) -> Program:
    """The formula compiled, or the 400 the service answers for a formula it cannot parse."""
    if not isinstance(text, str) or not text.strip():
        raise errors.invalid_property_value("autoScaleFormula", text)
    try:
        return compile_formula(text)
    except _FormulaError as e:
        raise errors.autoscale_formula(e.code, e.message, e.values) from None


def check_interval(ctx: Ctx, value: object) -> str:
    """The interval in the service's form; 400 outside [the server's floor (5 min by default), 168 h]."""
    if value is None:
        return format_duration(DEFAULT_INTERVAL)
    if not isinstance(value, str):
        raise errors.invalid_property_value("autoScaleEvaluationInterval", value)
    try:
        td = parse_duration(value)
    except ValueError:
        raise errors.invalid_property_value("autoScaleEvaluationInterval", value) from None
    low = ctx.autoscale.min_interval
    if td < low or td > MAX_INTERVAL:
        raise errors.invalid_property_value(
            "autoScaleEvaluationInterval",
            value,
            f"The evaluation interval must be between {format_duration(low)} and {format_duration(MAX_INTERVAL)}",
        )
    return format_duration(td)


def check_create(ctx: Ctx, spec: Body) -> Program | None:
    """Pool create: with `enableAutoScale` the formula is required and the targets are not allowed."""
    if not spec.get("enableAutoScale"):
        for k in ("autoScaleFormula", "autoScaleEvaluationInterval"):
            if spec.get(k) is not None:
                raise errors.invalid_autoscale_settings(f"{k} requires enableAutoScale")
        return None
    for k in ("targetDedicatedNodes", "targetLowPriorityNodes"):
        if spec.get(k) is not None:
            raise errors.invalid_autoscale_settings(f"{k} must not be specified with enableAutoScale")
    if spec.get("autoScaleFormula") is None:
        raise errors.missing_required_property("autoScaleFormula")
    program = compile_or_refuse(spec["autoScaleFormula"])
    spec["autoScaleEvaluationInterval"] = check_interval(ctx, spec.get("autoScaleEvaluationInterval"))
    return program


# --- operations ---------------------------------------------------------------------------------------------


def _load(tx: Tx, pool_id: str) -> Row:
    row = tx.get_for_update(schema.pools, key=key_of(pool_id))
    if row is None:
        raise errors.pool_not_found()
    if row["body"]["state"] == "deleting":
        raise errors.pool_being_deleted()
    return row


def enable(ctx: Ctx, pool_id: str, spec: Body, cond: Conditions) -> Written:
    """Enable or change autoscale; the formula runs at once (an extension: the service waits for its timer)."""
    formula, interval = spec.get("autoScaleFormula"), spec.get("autoScaleEvaluationInterval")
    with ctx.store.tx() as tx:
        row = _load(tx, pool_id)
        cond.check(row, write=True)
        body = row["body"]
        was_on = bool(body.get("enableAutoScale"))
        if formula is None and (not was_on or interval is None):
            raise errors.missing_required_property("autoScaleFormula")
        if not was_on and body["allocationState"] != "steady":
            raise errors.pool_being_resized()
        program = compile_or_refuse(formula if formula is not None else body["autoScaleFormula"])
        if interval is not None or not was_on:
            body["autoScaleEvaluationInterval"] = check_interval(ctx, interval)
        now = ctx.clock()
        last = body.get(_ENABLED_AT)
        if isinstance(last, str) and now - parse_time(last) < min(ENABLE_SPACING, ctx.autoscale.min_interval):
            raise errors.too_many_enable_autoscale_requests()
        body[_ENABLED_AT] = format_time(now)
        body["enableAutoScale"] = True
        body["autoScaleFormula"] = program.source or str(formula or body["autoScaleFormula"])
        run_now(ctx, tx, row, program)
        # recorded: enableautoscale answers with the pool's ETag unchanged (the GET after shows the same one);
        # DataServiceId is the operation's URL
        w = Written(row["etag"], row["last_modified"], f"/pools/{body['id']}/enableautoscale")
    ctx.hub.wake_pools()
    return w


def disable(ctx: Ctx, pool_id: str, cond: Conditions) -> Written:
    """Stop autoscaling; the pool keeps its current targets (recorded: a new ETag)."""
    with ctx.store.tx() as tx:
        row = _load(tx, pool_id)
        cond.check(row, write=True)
        body = row["body"]
        for k in ("autoScaleFormula", "autoScaleEvaluationInterval", "autoScaleRun", _NEXT, _ENABLED_AT):
            body.pop(k, None)
        body["enableAutoScale"] = False
        ctx.autoscale.track(row["key"], False)
        _, now_text, etag = ctx.stamp()
        stamp_body(body, etag, now_text)
        tx.update(
            schema.pools,
            {"body": body, "etag": etag, "last_modified": now_text, "alloc_state": body["allocationState"]},
            key=row["key"],
        )
        return Written(etag, now_text, f"/pools/{body['id']}/disableautoscale")


def evaluate(ctx: Ctx, pool_id: str, spec: Body) -> Body:
    """Run a formula against the pool's live figures without applying it: the `AutoScaleRun`."""
    program = compile_or_refuse(spec.get("autoScaleFormula"))
    with ctx.store.tx() as tx:
        row = tx.get(schema.pools, key=key_of(pool_id))
        if row is None:
            raise errors.pool_not_found()
        if not row["body"].get("enableAutoScale"):
            raise errors.autoscale_not_enabled()
        ev = program.evaluate(inputs_for(ctx, tx, row))
    return run_body(ev)


def run_body(ev: Evaluation) -> Body:
    out: Body = {"timestamp": format_time(ev.timestamp), "results": ev.results}
    if ev.error is not None:
        out["error"] = {
            "code": ev.error.code,
            "message": ev.error.message,
            "values": [{"name": n, "value": v} for n, v in ev.error.values],
        }
    return out


# --- evaluation ---------------------------------------------------------------------------------------------


def inputs_for(ctx: Ctx, tx: Tx, row: Row, resources: ResourceSampler | None = None) -> Inputs:
    """The pool's figures now and its metric histories (a fresh sample is taken when the last is stale)."""
    now = ctx.clock()
    state = ctx.autoscale
    last = state.last_sample.get(row["key"])
    if last is None or now - last >= state.sample_period:
        sample(ctx, tx, row, now, resources)
    body = row["body"]
    nodes = tx.select(schema.nodes, schema.nodes.c.pool_key == row["key"])
    dedicated = sum(1 for n in nodes if n["body"].get("isDedicated", True))
    per = state.samples.get(row["key"], {})
    return Inputs(
        now=now,
        target_dedicated=int(body.get("targetDedicatedNodes", 0)),
        target_low_priority=int(body.get("targetLowPriorityNodes", 0)),
        current_dedicated=dedicated,
        current_low_priority=len(nodes) - dedicated,
        preempted_nodes=sum(1 for n in nodes if n["state"] == "preempted"),
        usable_nodes=sum(1 for n in nodes if n["state"] in ("idle", "running")),
        task_slots_per_node=int(body.get("taskSlotsPerNode", 1)),
        metrics={name: Series.of(list(q)) for name, q in per.items()},
        sample_period=state.sample_period,
    )


def task_metrics(tx: Tx, pool_key: str) -> dict[str, float]:
    """Task metrics over the pool's jobs; `$ActiveTasks` leaves out tasks still waiting on dependencies.

    The `…TaskSlots` metrics (batchyard-only) count the slots those tasks take (`requiredSlots`)."""
    jobs = tx.select(schema.jobs, schema.jobs.c.pool_key == pool_key)
    active = running = succeeded = failed = active_slots = running_slots = 0
    for j in jobs:
        c = tx.get(schema.task_counts, job_key=j["key"]) or {}
        active += int(c.get("active", 0))
        running += int(c.get("running", 0))
        succeeded += int(c.get("succeeded", 0))
        failed += int(c.get("failed", 0))
        active_slots += int(c.get("slots_active", 0))
        running_slots += int(c.get("slots_running", 0))
        if j["body"].get("usesTaskDependencies"):
            t = schema.tasks.c
            waiting = (t.job_key == j["key"]) & (t.state == "active") & (t.deps_remaining > 0)
            for r in tx.select(schema.tasks, waiting):
                active -= 1
                active_slots -= int(r["slots"])
    active, active_slots = max(active, 0), max(active_slots, 0)
    return {
        "$ActiveTaskSlots": float(active_slots),
        "$RunningTaskSlots": float(running_slots),
        "$PendingTaskSlots": float(active_slots + running_slots),
        "$ActiveTasks": float(active),
        "$RunningTasks": float(running),
        "$PendingTasks": float(active + running),
        "$SucceededTasks": float(succeeded),
        "$FailedTasks": float(failed),
    }


def sample(
    ctx: Ctx, tx: Tx, row: Row, now: datetime | None = None, resources: ResourceSampler | None = None
) -> None:
    """One sample of every metric batchyard measures for the pool (task, node, and resource metrics)."""
    now = now or ctx.clock()
    values = task_metrics(tx, row["key"])
    nodes = tx.select(schema.nodes, schema.nodes.c.pool_key == row["key"])
    dedicated = sum(1 for n in nodes if n["body"].get("isDedicated", True))
    values.update(
        {
            "$CurrentDedicatedNodes": float(dedicated),
            "$CurrentLowPriorityNodes": float(len(nodes) - dedicated),
            "$PreemptedNodeCount": float(sum(1 for n in nodes if n["state"] == "preempted")),
            "$UsableNodeCount": float(sum(1 for n in nodes if n["state"] in ("idle", "running"))),
            "$TaskSlotsPerNode": float(row["body"].get("taskSlotsPerNode", 1)),
            "$SampleNodeCount": float(len(nodes)),
        }
    )
    if resources is not None:
        values.update(resources(tx, row["key"]))
    ctx.autoscale.record(row["key"], now, values)


def run_now(
    ctx: Ctx, tx: Tx, row: Row, program: Program, resources: ResourceSampler | None = None
) -> Evaluation:
    """Evaluate the pool's formula, apply its targets, store the run and the next due time (one transaction)."""
    ctx.autoscale.track(row["key"], True)
    inputs = inputs_for(ctx, tx, row, resources)
    ev = program.evaluate(inputs)
    body = row["body"]
    run = run_body(ev)
    body["autoScaleRun"] = run
    interval = parse_duration(str(body.get("autoScaleEvaluationInterval", "PT15M")))
    body[_NEXT] = format_time(ev.timestamp + interval)
    ctx.autoscale.next_due[row["key"]] = ev.timestamp + interval
    if ev.error is None and ev.target_dedicated is not None and ev.target_low_priority is not None:
        _apply(
            ctx, body, ev.target_dedicated, ev.target_low_priority, ev.node_deallocation_option or "requeue"
        )
    # the service's own evaluation keeps the pool's ETag, like its allocation progress
    tx.update(schema.pools, {"body": body, "alloc_state": body["allocationState"]}, key=row["key"])
    ctx.autoscale.remember(
        row["key"], {**run, "inputs": _inputs_summary(inputs), "formula": body["autoScaleFormula"]}
    )
    return ev


def _apply(ctx: Ctx, body: Body, dedicated: int, low: int, option: str) -> None:
    changed = (dedicated, low) != (body.get("targetDedicatedNodes", 0), body.get("targetLowPriorityNodes", 0))
    # the same targets resize again a steady pool short of them (after a stop-resize or a node lost)
    short = (dedicated, low) != (body.get("currentDedicatedNodes", 0), body.get("currentLowPriorityNodes", 0))
    if not changed and not (short and body["allocationState"] == "steady"):
        return
    body["targetDedicatedNodes"] = dedicated
    body["targetLowPriorityNodes"] = low
    body["_deallocation"] = option
    if changed:
        body.pop("resizeErrors", None)  # a new target replaces the errors of the last resize
    if body["allocationState"] == "steady":
        body["allocationState"] = "resizing"
        body["allocationStateTransitionTime"] = format_time(ctx.clock())


def _inputs_summary(inputs: Inputs) -> dict[str, Any]:
    last = {name: s.values[-1] for name, s in inputs.metrics.items() if s.values}
    return {
        "currentDedicatedNodes": inputs.current_dedicated,
        "currentLowPriorityNodes": inputs.current_low_priority,
        "targetDedicatedNodes": inputs.target_dedicated,
        "targetLowPriorityNodes": inputs.target_low_priority,
        "usableNodes": inputs.usable_nodes,
        "lastSamples": last,
    }


@lru_cache(maxsize=256)
def _compiled(text: str) -> Program:
    """Stored formulas compiled once (they were checked when stored)."""
    return compile_formula(text)


def due(body: Body, now: datetime) -> bool:
    text = body.get(_NEXT)
    return not isinstance(text, str) or parse_time(text) <= now


def run_due(ctx: Ctx, resources: ResourceSampler | None = None) -> int:
    """Evaluate every autoscale pool whose interval has elapsed (after a restart: the overdue ones, once)."""
    ran = 0
    state = ctx.autoscale
    if state.enabled is None:  # the first pass (or a restart): which pools autoscale, from the store
        with ctx.store.tx() as tx:
            rows = tx.select(schema.pools, schema.pools.c.state == "active")
            state.enabled = {r["key"] for r in rows if r["body"].get("enableAutoScale")}
    for key in sorted(state.enabled):
        now = ctx.clock()
        next_due, last = state.next_due.get(key), state.last_sample.get(key)
        if next_due is not None and next_due > now and last is not None and now - last < state.sample_period:
            continue  # nothing to do for this pool now: no store access
        with ctx.store.tx() as tx:
            row = tx.get_for_update(schema.pools, key=key)
            if row is None or row["state"] != "active" or not row["body"].get("enableAutoScale"):
                state.track(key, False)
                continue
            if due(row["body"], now):
                run_now(ctx, tx, row, _compiled(row["body"]["autoScaleFormula"]), resources)
                ran += 1
            else:
                state.next_due[key] = parse_time(row["body"][_NEXT])
                if last is None or now - last >= state.sample_period:
                    sample(ctx, tx, row, now, resources)
    if ran:
        ctx.hub.wake_pools()
    return ran


def history(ctx: Ctx, pool_id: str) -> Body:
    """batchyard-only: the pool's recent runs with their inputs, newest last."""
    with ctx.store.tx() as tx:
        row = tx.get(schema.pools, key=key_of(pool_id))
        if row is None:
            raise errors.pool_not_found()
    return {
        "poolId": row["id"],
        "enableAutoScale": bool(row["body"].get("enableAutoScale")),
        "minimumEvaluationInterval": format_duration(ctx.autoscale.min_interval),
        "samplePeriod": format_duration(ctx.autoscale.sample_period),
        "nextEvaluationTime": row["body"].get(_NEXT),
        "runs": list(ctx.autoscale.runs.get(row["key"], ())),
    }
