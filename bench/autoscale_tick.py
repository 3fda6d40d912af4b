"""Cost of the autoscale timer per pool, store included: N autoscale pools all due, one pass.

Run: PYTHONPATH=src python bench/autoscale_tick.py [pools]
Creates the pools on a fresh SQLite store (the server's default) with the docs' task-based formula and one
job of 10 tasks each, then times `run_due` when every pool is due (sample + evaluate + write, per pool) and
when none is (an idle pass).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from batchyard.service import autoscale, jobs, pools, tasks
from batchyard.service.context import Ctx
from batchyard.store.sql import SqlStore

FORMULA = (
    "$samples = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 15);\n"
    "$tasks = $samples < 70 ? max(0, $PendingTasks.GetSample(1)) : "
    "max($PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Minute * 15)));\n"
    "$TargetDedicatedNodes = max(0, min($tasks, 20));\n"
    "$NodeDeallocationOption = taskcompletion;"
)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    now = [datetime(2026, 12, 3, 9, 0, tzinfo=UTC)]
    data = Path(tempfile.mkdtemp(prefix="by-astick-"))
    store = SqlStore.for_data_dir(data)
    store.migrate()

    async def make() -> Ctx:
        return Ctx(store=store, data_dir=data, account="bench", clock=lambda: now[0])

    ctx = asyncio.run(make())
    image = {"publisher": "canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts"}
    for i in range(n):
        pools.create_pool(
            ctx,
            {
                "id": f"p{i}",
                "vmSize": "standard_d2s_v3",
                "virtualMachineConfiguration": {
                    "imageReference": image,
                    "nodeAgentSKUId": "batch.node.ubuntu 22.04",
                },
                "enableAutoScale": True,
                "autoScaleFormula": FORMULA,
            },
        )
        jobs.create_job(ctx, {"id": f"j{i}", "poolInfo": {"poolId": f"p{i}"}})
        for t in range(10):
            tasks.create_task(ctx, f"j{i}", {"id": f"t{t}", "commandLine": "true"})
    autoscale.run_due(ctx)  # reads the autoscale pools once
    now[0] += timedelta(minutes=15)
    t0 = time.perf_counter()
    ran = autoscale.run_due(ctx)
    due = time.perf_counter() - t0
    t0 = time.perf_counter()
    idle_ran = autoscale.run_due(ctx)
    idle = time.perf_counter() - t0
    assert ran == n and idle_ran == 0
    print(f"{n} autoscale pools, each with a job of 10 tasks (SQLite)")
    print(
        f"  all due:  {due * 1000:.1f} ms per pass, {due / n * 1e6:.0f} us per pool (sample + evaluate + write)"
    )
    print(f"  none due: {idle * 1000:.1f} ms per pass, {idle / n * 1e6:.0f} us per pool")


if __name__ == "__main__":
    main()
