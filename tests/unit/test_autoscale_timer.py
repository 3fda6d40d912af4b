"""The autoscale timer against a real SQLite store and a clock the test drives: runs at the pool's interval,
resizes through the pool manager, and a restart neither skips nor repeats a due evaluation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batchyard.models import errors
from batchyard.pools.local import LocalProvider
from batchyard.pools.manager import PoolManager
from batchyard.pools.quota import Quotas
from batchyard.service import autoscale, jobs, pools, tasks
from batchyard.service.context import NO_CONDITIONS, Ctx
from batchyard.store import schema
from batchyard.store.sql import SqlStore
from tests.support.raw import pool_body

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
FORMULA = (
    "$tasks = max($PendingTasks.GetSample(1));\n"
    "$TargetDedicatedNodes = $tasks > 0 ? 2 : 0;\n"
    "$NodeDeallocationOption = taskcompletion;"
)


class NoProcesses(LocalProvider):
    """Starts nothing: node rows are written, no agent runs."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:1", "acct")
        self.spawned = 0

    def spawn(self, *args: Any) -> int:
        self.spawned += 1
        return 10_000_000 + self.spawned  # never a real pid


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _ctx(tmp_path: Path, clock: Clock) -> Ctx:
    async def make() -> Ctx:  # the hub's events want a running loop
        return Ctx(store=store, data_dir=tmp_path, account="acct", clock=clock)

    store = SqlStore.for_data_dir(tmp_path)
    store.migrate()
    return asyncio.run(make())


def _pool(ctx: Ctx, pool_id: str, interval: str = "PT10M", formula: str = FORMULA) -> dict[str, Any]:
    body = pool_body(
        pool_id, enableAutoScale=True, autoScaleFormula=formula, autoScaleEvaluationInterval=interval
    )
    body.pop("targetDedicatedNodes")
    pools.create_pool(ctx, body)
    return _body(ctx, pool_id)


def _body(ctx: Ctx, pool_id: str) -> dict[str, Any]:
    with ctx.store.tx() as tx:
        row = tx.get(schema.pools, key=pool_id)
        assert row is not None
        body: dict[str, Any] = row["body"]
        return body


def test_runs_at_the_interval_and_resizes_through_the_manager(tmp_path: Path) -> None:
    clock = Clock()
    ctx = _ctx(tmp_path, clock)
    first = _pool(ctx, "p")
    assert first["autoScaleRun"]["timestamp"].startswith("2026-01-05T12:00:00")
    assert first["targetDedicatedNodes"] == 0
    jobs.create_job(ctx, {"id": "j", "poolInfo": {"poolId": "p"}})
    tasks.create_task(ctx, "j", {"id": "t", "commandLine": "true"})

    clock.now = T0 + timedelta(minutes=9, seconds=59)
    assert autoscale.run_due(ctx) == 0  # not due yet: the queued task does not move the pool
    assert _body(ctx, "p")["targetDedicatedNodes"] == 0
    clock.now = T0 + timedelta(minutes=10)
    assert autoscale.run_due(ctx) == 1
    body = _body(ctx, "p")
    assert body["targetDedicatedNodes"] == 2 and body["allocationState"] == "resizing"
    assert body["_deallocation"] == "taskcompletion"
    assert "$tasks=1" in body["autoScaleRun"]["results"]
    assert autoscale.run_due(ctx) == 0  # the same moment never runs twice

    manager = PoolManager(ctx, NoProcesses(), quotas=Quotas(500, 10))
    for _ in range(3):
        manager._record_spawns(manager._spawn_all(manager.reconcile()))
    with ctx.store.tx() as tx:
        assert tx.count(schema.nodes, schema.nodes.c.pool_key == "p") == 2
    assert _body(ctx, "p")["allocationState"] == "steady"

    history = autoscale.history(ctx, "p")
    assert [r["inputs"]["targetDedicatedNodes"] for r in history["runs"]] == [0, 0]
    assert history["nextEvaluationTime"].startswith("2026-01-05T12:20:00")


def test_a_restart_runs_an_overdue_evaluation_once_and_keeps_the_schedule(tmp_path: Path) -> None:
    clock = Clock()
    ctx = _ctx(tmp_path, clock)
    _pool(ctx, "p", formula="$TargetDedicatedNodes = 1;")
    clock.now = T0 + timedelta(minutes=10)
    assert autoscale.run_due(ctx) == 1

    # the server is killed; a new one (fresh memory, same store) starts 25 minutes later
    clock.now = T0 + timedelta(minutes=35)
    restarted = _ctx(tmp_path, clock)
    assert autoscale.run_due(restarted) == 1  # overdue: evaluated once, not once per missed interval
    assert autoscale.run_due(restarted) == 0
    assert _body(restarted, "p")["autoScaleRun"]["timestamp"].startswith("2026-01-05T12:35:00")
    clock.now = T0 + timedelta(minutes=44)
    assert autoscale.run_due(restarted) == 0
    clock.now = T0 + timedelta(minutes=45)
    assert autoscale.run_due(restarted) == 1


def test_a_run_that_fails_keeps_the_pool_and_records_the_error(tmp_path: Path) -> None:
    clock = Clock()
    ctx = _ctx(tmp_path, clock)
    body = _pool(ctx, "p", formula="$TargetDedicatedNodes = $PendingTasks.GetSample(TimeInterval_Hour, 50);")
    assert body["targetDedicatedNodes"] == 0
    assert body["autoScaleRun"]["error"]["code"] == "InsufficientSampleData"
    assert body["autoScaleRun"]["error"]["values"][0]["name"] == "Message"


def test_the_interval_floor_is_the_services_unless_configured(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, Clock())
    with pytest.raises(errors.BatchError) as e:
        _pool(ctx, "p", interval="PT4M59S")
    assert (
        e.value.code == "InvalidPropertyValue"
        and ("PropertyName", "autoScaleEvaluationInterval") in e.value.values
    )
    _pool(ctx, "q", interval="PT5M")
    ctx.autoscale.min_interval = timedelta(seconds=5)
    assert _pool(ctx, "r", interval="PT5S")["autoScaleEvaluationInterval"] == "PT5S"
    assert ctx.autoscale.sample_period == timedelta(seconds=5)


def test_enable_while_resizing_is_refused_and_disable_keeps_the_size(tmp_path: Path) -> None:
    clock = Clock()
    ctx = _ctx(tmp_path, clock)
    pools.create_pool(ctx, pool_body("m", 2))  # no manager runs: the pool stays resizing
    with pytest.raises(errors.BatchError) as e:
        autoscale.enable(ctx, "m", {"autoScaleFormula": "$TargetDedicatedNodes=1"}, NO_CONDITIONS)
    assert (e.value.status, e.value.code) == (409, "PoolBeingResized")
    assert _body(ctx, "m")["enableAutoScale"] is False

    _pool(ctx, "a", formula="$TargetDedicatedNodes = 3;")
    autoscale.enable(ctx, "a", {"autoScaleFormula": "$TargetDedicatedNodes = 3;"}, NO_CONDITIONS)
    # the service takes one enable per pool every 30 s
    clock.now += timedelta(seconds=29)
    with pytest.raises(errors.BatchError) as e:
        autoscale.enable(ctx, "a", {"autoScaleFormula": "$TargetDedicatedNodes = 4;"}, NO_CONDITIONS)
    assert (e.value.status, e.value.code) == (503, "TooManyEnableAutoScaleRequests")
    clock.now += timedelta(seconds=1)
    # a formula change while autoscale's own resize runs is allowed, and evaluated at once
    autoscale.enable(ctx, "a", {"autoScaleFormula": "$TargetDedicatedNodes = 4;"}, NO_CONDITIONS)
    assert _body(ctx, "a")["targetDedicatedNodes"] == 4
    autoscale.disable(ctx, "a", NO_CONDITIONS)
    off = _body(ctx, "a")
    assert off["enableAutoScale"] is False and off["targetDedicatedNodes"] == 4
    assert "autoScaleFormula" not in off and "_autoscaleNext" not in off
    assert autoscale.run_due(ctx) == 0


def test_task_metrics_leave_out_blocked_tasks_and_slot_metrics_count_slots(tmp_path: Path) -> None:
    clock = Clock()
    ctx = _ctx(tmp_path, clock)
    formula = (
        "$a = max($ActiveTasks.GetSample(1)); $p = max($PendingTasks.GetSample(1));"
        "$s = max($PendingTaskSlots.GetSample(1)); $TargetDedicatedNodes = ceil($s / $TaskSlotsPerNode);"
    )
    body = pool_body("p", taskSlotsPerNode=4, enableAutoScale=True, autoScaleFormula=formula)
    body.pop("targetDedicatedNodes")
    pools.create_pool(ctx, body)
    jobs.create_job(ctx, {"id": "j", "poolInfo": {"poolId": "p"}, "usesTaskDependencies": True})
    tasks.create_task(ctx, "j", {"id": "a", "commandLine": "true", "requiredSlots": 3})
    tasks.create_task(
        ctx, "j", {"id": "b", "commandLine": "true", "requiredSlots": 2, "dependsOn": {"taskIds": ["a"]}}
    )
    assert (
        "$p=0" in autoscale.evaluate(ctx, "p", {"autoScaleFormula": formula})["results"]
    )  # last sample: at create
    clock.now += timedelta(seconds=30)  # the next sample, one sample period later
    run = autoscale.evaluate(ctx, "p", {"autoScaleFormula": formula})
    assert run["results"] == (
        "$TargetDedicatedNodes=1;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;$a=1;$p=1;$s=3"
    ), run


def test_the_next_run_resumes_a_stopped_resize(tmp_path: Path) -> None:
    clock = Clock()
    ctx = _ctx(tmp_path, clock)
    _pool(ctx, "p", formula="$TargetDedicatedNodes = 2;")
    pools.stop_resize(ctx, "p", NO_CONDITIONS)
    manager = PoolManager(ctx, NoProcesses(), quotas=Quotas(500, 10))
    manager.reconcile()
    body = _body(ctx, "p")
    assert (body["allocationState"], body["currentDedicatedNodes"], body["targetDedicatedNodes"]) == (
        "steady",
        0,
        2,
    )
    clock.now += timedelta(minutes=10)
    assert autoscale.run_due(ctx) == 1
    assert _body(ctx, "p")["allocationState"] == "resizing"
    for _ in range(3):
        manager._record_spawns(manager._spawn_all(manager.reconcile()))
    body = _body(ctx, "p")
    assert (body["allocationState"], body["currentDedicatedNodes"]) == ("steady", 2)
