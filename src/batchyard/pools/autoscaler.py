"""The autoscale timer: samples every autoscale pool's metrics and runs the formulas that are due.

Resource metrics are measured here, on the server, from the local agents' process trees (the pids are in the
nodes table) with psutil: `$CPUPercent` (the node's processes' CPU time over the sample period as a share of
the node's cores, averaged over nodes), `$MemoryBytes` (resident bytes, averaged over nodes), `$DiskBytes`
(bytes used on the file system of the node's directory, averaged), and `$DiskReadBytes/$DiskWriteBytes/
$DiskReadOps/$DiskWriteOps` (per sample period, summed over the pool). Network bytes and `$WallClockSeconds`
cannot be measured per local node and stay without samples (a formula reading them sees 0% of its samples).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Mapping

import psutil

from batchyard.pools.quota import vm_cores
from batchyard.service import autoscale
from batchyard.service.context import Ctx
from batchyard.store import schema
from batchyard.store.sql import Tx

log = logging.getLogger("batchyard.autoscale")


class ResourceProbe:
    """psutil readings of each node's process tree; rates are differences from the previous reading."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        # pool key -> node id -> (monotonic time, cpu seconds, read bytes, write bytes, read ops, write ops)
        self._last: dict[str, dict[str, tuple[float, float, int, int, int, int]]] = {}

    def __call__(self, tx: Tx, pool_key: str) -> Mapping[str, float]:
        pool = tx.get(schema.pools, key=pool_key)
        cores = max(1, vm_cores(str(pool["body"].get("vmSize", "")))) if pool else 1
        cpu: list[float] = []
        mem: list[float] = []
        disk: list[float] = []
        io = [0, 0, 0, 0]
        last = self._last.get(pool_key, {})
        seen: dict[str, tuple[float, float, int, int, int, int]] = {}
        for n in tx.select(schema.nodes, schema.nodes.c.pool_key == pool_key):
            reading = _read_tree(n["pid"])
            if reading is None:
                continue
            cpu_s, rss, counters = reading
            now = time.monotonic()
            prev = last.get(n["id"])
            seen[n["id"]] = (now, cpu_s, *counters)
            mem.append(float(rss))
            with contextlib.suppress(OSError):
                disk.append(float(shutil.disk_usage(self.ctx.node_root(n["id"])).used))
            if prev is not None and now > prev[0]:
                cpu.append(max(0.0, (cpu_s - prev[1]) / (now - prev[0]) / cores * 100.0))
                for i in range(4):
                    io[i] += max(0, counters[i] - int(prev[2 + i]))
        self._last[pool_key] = seen  # nodes gone from the pool are forgotten
        out: dict[str, float] = {}
        if cpu:
            out["$CPUPercent"] = sum(cpu) / len(cpu)
            for name, v in zip(
                ("$DiskReadBytes", "$DiskWriteBytes", "$DiskReadOps", "$DiskWriteOps"), io, strict=True
            ):
                out[name] = float(v)
        if mem:
            out["$MemoryBytes"] = sum(mem) / len(mem)
        if disk:
            out["$DiskBytes"] = sum(disk) / len(disk)
        return out


def _read_tree(pid: int | None) -> tuple[float, int, tuple[int, int, int, int]] | None:
    if not pid:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    cpu_s = 0.0
    rss = 0
    counters = [0, 0, 0, 0]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            t = p.cpu_times()
            cpu_s += t.user + t.system + t.children_user + t.children_system
            rss += p.memory_info().rss
            c = p.io_counters()
            for i, v in enumerate((c.read_bytes, c.write_bytes, c.read_count, c.write_count)):
                counters[i] += v
    return cpu_s, rss, (counters[0], counters[1], counters[2], counters[3])


class Autoscaler:
    """Wakes about once a second (or each sample period, if shorter); all timing reads `ctx.clock`."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.probe = ResourceProbe(ctx)

    def tick(self) -> int:
        return autoscale.run_due(self.ctx, self.probe)

    async def run(self) -> None:
        pause = min(1.0, self.ctx.autoscale.sample_period.total_seconds())
        while True:
            try:
                self.tick()  # a few queries per autoscale pool, on the loop (the hub is not thread-safe)
            except Exception:  # keep the timer alive; the next tick retries
                log.exception("autoscale pass failed")
            await asyncio.sleep(pause)
