"""The six scenarios. Each starts its own server (fresh data dir, free port) and stops it and its agents."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.batch import models as m
from azure.core.exceptions import HttpResponseError

from bench.client import (
    AsyncRawClient,
    LazyBodies,
    RawClient,
    Server,
    agent_pids,
    collection_bodies,
    parse_time,
    proc_hwm_bytes,
    proc_rss_bytes,
)
from bench.profile import Profiler
from bench.report import ScenarioResult
from bench.slurm import Slurm, SlurmUnavailable
from bench.sniff import SyncCounter

IMAGE = m.BatchVmImageReference(publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts")
SKU = "batch.node.ubuntu 22.04"
AGENT_POLL_WAIT = (
    20.0  # `batchyard agent --poll-wait` default: a quiet agent syncs once per this many seconds
)


# --- small helpers -------------------------------------------------------------------------------------------


def pct(xs: list[float], p: float) -> float:
    """Percentile with linear interpolation between closest ranks (numpy's default)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class SystemCpu:
    """Busy CPU of the whole machine between start() and stop(), in cores (from /proc/stat)."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.busy0 = 0

    @staticmethod
    def _busy() -> int:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = f[3] + (f[4] if len(f) > 4 else 0)
        return sum(f[:8]) - idle

    def start(self) -> SystemCpu:
        self.t0, self.busy0 = time.monotonic(), self._busy()
        return self

    def stop(self) -> float:
        from bench.client import CLK_TCK

        dt = time.monotonic() - self.t0
        return (self._busy() - self.busy0) / CLK_TCK / dt if dt > 0 else 0.0


def agents_cpu(data_dir: Path) -> dict[str, float]:
    """CPU seconds of every agent (``agents``), of its live children, the launcher helpers (``helpers``), and
    of the processes those reaped, the tasks (``tasks``): utime+stime, and cutime+cstime for the tasks."""
    from bench.client import CLK_TCK

    agents = set(agent_pids(data_dir))
    out = {"agents": 0, "helpers": 0, "tasks": 0}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = "agents" if int(d.name) in agents else "helpers" if int(f[1]) in agents else None
        if kind is not None:
            out[kind] += int(f[11]) + int(f[12])
            out["tasks"] += int(f[13]) + int(f[14])
    return {k: v / CLK_TCK for k, v in out.items()}


def agents_rss(data_dir: Path) -> int:
    total = 0
    for pid in agent_pids(data_dir):
        with contextlib.suppress(OSError):
            total += proc_rss_bytes(pid)
    return total


def agents_memory(data_dir: Path) -> list[tuple[int, int, int]]:
    """(RSS, PSS, USS) in KiB of every agent of this server: VmRSS counts shared pages whole, Pss splits them,
    USS (Private_Clean + Private_Dirty) is what one more node adds."""
    out: list[tuple[int, int, int]] = []
    for pid in agent_pids(data_dir):
        with contextlib.suppress(OSError, ValueError, StopIteration):
            rss = proc_rss_bytes(pid) // 1024
            rollup = {
                k: int(v.split()[0])
                for k, _, v in (
                    line.partition(":") for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                )
                if v.strip().endswith("kB")
            }
            out.append((rss, rollup["Pss"], rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)))
    return out


def agents_cpu_each(data_dir: Path) -> list[float]:
    """utime+stime of each agent of this server, in seconds."""
    from bench.client import CLK_TCK

    out: list[float] = []
    for pid in agent_pids(data_dir):
        with contextlib.suppress(OSError, ValueError, IndexError):
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out.append((int(f[11]) + int(f[12])) / CLK_TCK)
    return out


def summary_f(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"median": float("nan"), "max": float("nan"), "min": float("nan")}
    return {"median": statistics.median(xs), "max": max(xs), "min": min(xs)}


def summary(xs: list[int]) -> dict[str, float]:
    if not xs:
        return {"median": float("nan"), "max": float("nan"), "min": float("nan")}
    return {"median": statistics.median(xs), "max": max(xs), "min": min(xs)}


def create_pool(client: Any, pool_id: str, nodes: int, slots: int) -> None:
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=m.VirtualMachineConfiguration(
                image_reference=IMAGE, node_agent_sku_id=SKU
            ),
            target_dedicated_nodes=nodes,
            task_slots_per_node=slots,
        )
    )


def create_job(client: Any, job_id: str, pool_id: str, deps: bool = False) -> None:
    client.create_job(
        m.BatchJobCreateOptions(
            id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id), uses_task_dependencies=deps or None
        )
    )


def true_tasks(prefix: str, n: int) -> list[m.BatchTaskCreateOptions]:
    return [m.BatchTaskCreateOptions(id=f"{prefix}{i:07d}", command_line="/bin/true") for i in range(n)]


def wait_nodes_ready(raw: RawClient, pool_id: str, n: int, timeout: float) -> float:
    """Seconds until the pool has n nodes, all idle or running."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    states: dict[str, int] = {}
    while time.monotonic() < deadline:
        nodes = raw.list_all(f"/pools/{pool_id}/nodes", {"$select": "id,state"})
        states = {}
        for nd in nodes:
            states[nd["state"]] = states.get(nd["state"], 0) + 1
        if len(nodes) == n and states.get("idle", 0) + states.get("running", 0) == n:
            return time.monotonic() - t0
        # listing 1,000 nodes costs the server ~0.1 s: a faster poll would measure the poll, not the nodes
        time.sleep(0.1 if n <= 20 else 0.5 if n <= 200 else 2.0)
    raise TimeoutError(f"{pool_id}: nodes not ready after {timeout:.0f}s: {states}")


def counts(raw: RawClient, job_id: str) -> dict[str, int]:
    data = raw.ok("GET", f"/jobs/{job_id}/taskcounts")
    return dict(data["taskCounts"])


def wait_completed(
    raw: RawClient, job_id: str, n: int, timeout: float, interval: float = 0.25
) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    c: dict[str, int] = {}
    while time.monotonic() < deadline:
        c = counts(raw, job_id)
        if c.get("completed", 0) >= n:
            return c
        time.sleep(interval)
    raise TimeoutError(f"job {job_id}: not all {n} tasks completed after {timeout:.0f}s: {c}")


def timed(fn: Callable[[], Any], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def verify_tasks(
    raw: RawClient, data_dir: Path, job_id: str, n: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every task completed, exit 0, with creation/start/end times, its directory and stdout/stderr files."""
    items = raw.list_all(f"/jobs/{job_id}/tasks", {"$select": "id,state,creationTime,executionInfo,nodeInfo"})
    ok_state = sum(1 for t in items if t.get("state") == "completed")
    ei = [t.get("executionInfo") or {} for t in items]
    ok_exit = sum(1 for e in ei if e.get("exitCode") == 0 and e.get("result") == "success")
    ok_times = sum(
        1
        for t, e in zip(items, ei, strict=True)
        if t.get("creationTime") and e.get("startTime") and e.get("endTime")
    )
    ok_files = 0
    for t in items:
        root = (t.get("nodeInfo") or {}).get("taskRootDirectory")
        node = (t.get("nodeInfo") or {}).get("nodeId")
        if not root or not node:
            continue
        d = data_dir / "nodes" / node / root
        if (d / "stdout.txt").is_file() and (d / "stderr.txt").is_file() and (d / "wd").is_dir():
            ok_files += 1
    check = {
        "tasks_listed": len(items),
        "completed": ok_state,
        "exit0_success": ok_exit,
        "with_creation_start_end_times": ok_times,
        "with_dir_stdout_stderr": ok_files,
    }
    check["all_ok"] = all(v == n for v in check.values() if isinstance(v, int))
    return check, items


# --- the bench context ------------------------------------------------------------------------------------------


@dataclass
class Bench:
    quick: bool
    tmp: Path
    profile_dir: Path | None = None
    dispatch_tasks: int = 20_000
    dispatch_slots: int = 4
    scale_tasks: int = 1_000_000
    scale_budget: float = 900.0
    scale_connections: int = 8
    scale_store: str | None = None  # postgresql://... : the scale scenario runs on a schema of its own there
    nodes: int = 200
    nodes_interval: float = 60.0
    idle_nodes: int = 1_000
    sim_nodes: int = 10_000
    sim_procs: int = 1
    sim_step: int = 1_000
    idle_interval: float = 60.0
    skip_real: bool = False
    slurm_reps: int = 3
    no_slurm: bool = False
    keep: bool = False
    _slurm: Slurm | None = None
    _slurm_error: str | None = None
    _slurm_warm: bool = False
    servers: list[Server] = field(default_factory=list)

    # sizes
    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def slurm(self) -> Slurm | None:
        if self.no_slurm:
            self._slurm_error = "disabled with --no-slurm"
            return None
        if self._slurm is None and self._slurm_error is None:
            sl = Slurm(slots=8)
            try:
                sl.start()
                self._slurm = sl
            except (SlurmUnavailable, OSError, subprocess.SubprocessError) as exc:
                sl.stop()
                self._slurm_error = str(exc)
        return self._slurm

    def slurm_skip_line(self) -> str:
        return f"skipped slurm baseline: {self._slurm_error}"

    def warm_slurm(self, sl: Slurm) -> None:
        if not self._slurm_warm:
            sl.array(200)
            self._slurm_warm = True

    def close(self) -> None:
        if self._slurm is not None:
            self._slurm.stop()
            self._slurm = None
        for s in self.servers:
            s.stop()

    @contextlib.contextmanager
    def server(
        self, name: str, extra_args: list[str] | None = None, database_url: str | None = None
    ) -> Iterator[Server]:
        """A fresh server; with --profile it runs under bench/sqlcount.py so SQL statements can be counted."""
        d = self.tmp / f"{name}-{int(time.time())}"
        dump = self.tmp / f"{name}-sql.json" if self.profile_dir is not None else None
        extra = list(extra_args or []) + (["--database-url", database_url] if database_url else [])
        srv = Server(d, sql_dump=dump, extra_args=extra).start()
        self.servers.append(srv)
        try:
            yield srv
        finally:
            srv.stop()
            self.servers.remove(srv)
            if not self.keep:
                shutil.rmtree(d, ignore_errors=True)

    @contextlib.contextmanager
    def profiled(
        self, srv: Server, res: ScenarioResult, label: str, agent: bool = False, per: int | None = None
    ) -> Iterator[None]:
        """With --profile: py-spy the server (and with agent=True one agent), count SQL statements and agent
        syncs while the block runs; `per` (tasks) normalises the counts. Without --profile: nothing."""
        if self.profile_dir is None:
            yield
            return
        profs = {label: Profiler(srv.pid, self.profile_dir / f"{res.name}-{label}.txt").start()}
        pids = sorted(agent_pids(srv.data_dir)) if agent else []
        if pids:
            out = self.profile_dir / f"{res.name}-{label}-agent.txt"
            profs[f"{label}-agent"] = Profiler(pids[0], out).start()
        sql0 = srv.sql_counts() if srv.sql_dump is not None else None
        counter = SyncCounter(srv.port).start() if SyncCounter.available() is None else None
        cpu0 = srv.cpu_seconds()
        try:
            yield
        finally:
            cpu = srv.cpu_seconds() - cpu0
            syncs = counter.stop() if counter is not None else None
            sql1 = srv.sql_counts() if srv.sql_dump is not None else None
            prof = res.details.setdefault("profiles", {})
            for name, p in profs.items():
                prof[name] = p.stop()
            summary: dict[str, Any] = {"server_cpu_s": round(cpu, 3), "agent_syncs": syncs}
            if sql0 is not None and sql1 is not None:
                stm = {k: v - sql0["statements"].get(k, 0) for k, v in sql1["statements"].items()}
                rows = {k: v - sql0["rows"].get(k, 0) for k, v in sql1["rows"].items()}
                summary["commits"] = sql1["commits"] - sql0["commits"]
                summary["statements"] = sum(stm.values())
                summary["top_statements"] = sorted(
                    ([k, v, rows.get(k, v)] for k, v in stm.items() if v), key=lambda x: -x[1]
                )[:25]
            if per:
                summary["per_task"] = {
                    "server_cpu_ms": round(cpu / per * 1000, 3),
                    "agent_syncs": None if syncs is None else round(syncs / per, 3),
                    "commits": round(summary["commits"] / per, 3) if "commits" in summary else None,
                    "statements": round(summary["statements"] / per, 2) if "statements" in summary else None,
                }
            if syncs:
                summary["server_cpu_ms_per_sync"] = round(cpu / syncs * 1000, 3)
            prof[f"{label}-counts"] = summary


# --- 1. dispatch throughput ------------------------------------------------------------------------------------


def dispatch(b: Bench, res: ScenarioResult) -> None:
    n = b.size(b.dispatch_tasks, min(b.dispatch_tasks, 2_000))
    res.details["tasks"] = n
    slots = b.dispatch_slots
    res.details["pool"] = f"2 local nodes x {slots} slots"
    res.details["client"] = (
        "SDK create_tasks(max_concurrency=4) to add; raw HTTP taskcounts poll every 0.25 s"
    )
    with b.server("dispatch") as srv:
        c, raw = srv.sdk(), srv.raw()
        create_pool(c, "p", nodes=2, slots=slots)
        res.details["nodes_ready_s"] = round(wait_nodes_ready(raw, "p", 2, 120), 2)
        create_job(c, "warm", "p")
        c.create_tasks("warm", true_tasks("w", 200), max_concurrency=4)
        wait_completed(raw, "warm", 200, 120)
        create_job(c, "j", "p")
        tasks = true_tasks("t", n)
        s_cpu0, a_cpu0, c_cpu0 = srv.cpu_seconds(), agents_cpu(srv.data_dir), time.process_time()
        sys_cpu = SystemCpu().start()
        t0_wall = datetime.now(UTC)
        t0 = time.monotonic()
        with b.profiled(srv, res, "server", agent=True, per=n):
            c.create_tasks("j", tasks, max_concurrency=4)
            t_added = time.monotonic() - t0
            wait_completed(raw, "j", n, timeout=n / 20 + 300)
        seen = time.monotonic() - t0
        s_cpu, a_cpu, c_cpu = (
            srv.cpu_seconds() - s_cpu0,
            {k: v - a_cpu0[k] for k, v in agents_cpu(srv.data_dir).items()},
            time.process_time() - c_cpu0,
        )
        busy = sys_cpu.stop()
        check, items = verify_tasks(raw, srv.data_dir, "j", n)
        res.details["verify"] = check
        if not check["all_ok"]:
            res.note(f"verification failed: {check}")
        ends = [
            parse_time(t["executionInfo"]["endTime"])
            for t in items
            if (t.get("executionInfo") or {}).get("endTime")
        ]
        wall = (max(ends) - t0_wall).total_seconds() if ends else seen
        rate = n / wall
        res.details.update(
            {
                "add_seconds": round(t_added, 2),
                "wall_s_last_endTime": round(wall, 2),
                "wall_s_observed": round(seen, 2),
                "rate": round(rate, 1),
                "server_cpu_s": round(s_cpu, 2),
                "agents_helpers_tasks_cpu_s": {k: round(v, 2) for k, v in a_cpu.items()},
                "client_cpu_s": round(c_cpu, 2),
                "system_busy_cores": round(busy, 2),
                "other_processes_cores": round(busy - (s_cpu + sum(a_cpu.values()) + c_cpu) / seen, 2),
                "server_rss_bytes": srv.rss_bytes(),
            }
        )
    # baseline: the fork/exec floor
    reps = 1 if b.quick else 3
    xr: list[float] = []
    for _ in range(reps):
        t = time.monotonic()
        subprocess.run(f"seq {n} | xargs -P 8 -n 1 /bin/true", shell=True, check=True)
        xr.append(n / (time.monotonic() - t))
    x_rate = statistics.median(xr)
    res.details["xargs_rates"] = [round(x, 1) for x in xr]
    baselines = {"xargs -P 8": x_rate}
    ratios = {"xargs": rate / x_rate}
    # baseline: Slurm
    sl = b.slurm() if slots == 4 else None
    s_rate: float | None = None
    if slots != 4:
        res.note("skipped slurm baseline: its profile has 8 slots; compare with --dispatch-slots 4")
    elif sl is None:
        res.note(b.slurm_skip_line())
    else:
        sn = b.size(2_000, 500)
        try:
            b.warm_slurm(sl)
            srs, cpus = [], []
            for _ in range(1 if b.quick else b.slurm_reps):
                cpu0 = sl.daemon_cpu()
                wall_s = sl.array(sn)
                cpu1 = sl.daemon_cpu()
                srs.append(sn / wall_s)
                cpus.append({k: round((cpu1[k] - cpu0.get(k, 0.0)) / sn * 1000, 2) for k in cpu1})
            s_rate = statistics.median(srs)
            res.details["slurm"] = {
                "array_tasks": sn,
                "rates": [round(x, 1) for x in srs],
                "daemon_cpu_ms_per_task": cpus,
            }
            baselines[f"slurm 22.05 (array {sn})"] = s_rate
            ratios["slurm"] = rate / s_rate
        except SlurmUnavailable as exc:
            res.note(f"skipped slurm baseline: {exc}")
    met = rate >= 0.75 * x_rate and (s_rate is None or rate >= 20 * s_rate)  # issue 13's target
    res.row(
        f"throughput, {n:,} x /bin/true, 2x{slots} slots (first add -> last end)",
        "tasks/s",
        rate,
        baselines=baselines,
        ratios=ratios,
        target=">=0.75x xargs, >=20x slurm",
        met=met,
    )
    res.row(f"wall time for {n:,} tasks", "s", wall, baselines={"xargs -P 8": n / x_rate})
    sl_cpu = res.details.get("slurm", {}).get("daemon_cpu_ms_per_task")
    sb = {}
    if sl_cpu:
        last = sl_cpu[len(sl_cpu) // 2]
        sb["slurmctld+slurmd+munged"] = sum(last.values())
    res.row("server CPU per task", "ms", s_cpu / n * 1000, baselines=sb)
    res.row("agents CPU per task", "ms", a_cpu["agents"] / n * 1000)
    res.row("launcher helpers CPU per task", "ms", a_cpu["helpers"] / n * 1000)
    res.row(
        "task processes CPU per task (/bin/true, reaped by agents and helpers)",
        "ms",
        a_cpu["tasks"] / n * 1000,
    )
    res.row("client (SDK) CPU per task", "ms", c_cpu / n * 1000)


# --- 2. submission rate -----------------------------------------------------------------------------------------


def submit(b: Bench, res: ScenarioResult) -> None:
    n = b.size(20_000, 2_000)
    res.details["tasks"] = n
    with b.server("submit") as srv:
        c, raw = srv.sdk(), srv.raw()
        create_pool(c, "p", nodes=0, slots=1)
        create_job(c, "warm", "p")
        c.create_tasks("warm", true_tasks("w", 500), max_concurrency=4)
        # SDK path
        create_job(c, "sdk", "p")
        tasks = true_tasks("t", n)
        s0, c0 = srv.cpu_seconds(), time.process_time()
        with b.profiled(srv, res, "sdk", per=n):
            t = time.monotonic()
            c.create_tasks("sdk", tasks, max_concurrency=4)
            sdk_s = time.monotonic() - t
        sdk_server_cpu, sdk_client_cpu = srv.cpu_seconds() - s0, time.process_time() - c0
        got = counts(raw, "sdk")
        if got.get("active") != n:
            res.note(f"SDK add: expected {n} active tasks, taskcounts says {got}")
        # raw HTTP path: same bodies the SDK sends (100 tasks per request), 4 connections
        create_job(c, "raw", "p")
        bodies = collection_bodies("t", n)
        s0, c0 = srv.cpu_seconds(), time.process_time()
        ac = srv.async_raw(4)
        with b.profiled(srv, res, "raw", per=n):
            t = time.monotonic()
            accepted = asyncio.run(_add_all(ac, "raw", bodies))
            raw_s = time.monotonic() - t
        raw_server_cpu, raw_client_cpu = srv.cpu_seconds() - s0, time.process_time() - c0
        if accepted != n:
            res.note(f"raw add: {accepted} of {n} accepted")
    sdk_rate, raw_rate = n / sdk_s, n / raw_s
    res.details.update(
        {
            "sdk": {
                "seconds": round(sdk_s, 2),
                "server_cpu_s": round(sdk_server_cpu, 2),
                "client_cpu_s": round(sdk_client_cpu, 2),
            },
            "raw": {
                "seconds": round(raw_s, 2),
                "server_cpu_s": round(raw_server_cpu, 2),
                "client_cpu_s": round(raw_client_cpu, 2),
            },
        }
    )
    res.row(
        f"addtaskcollection, SDK create_tasks max_concurrency=4 ({n:,} tasks)",
        "tasks/s",
        sdk_rate,
        baselines={"raw HTTP 4 conns": raw_rate},
        ratios={"raw": sdk_rate / raw_rate},
        target=">=10,000 tasks/s",
        met=sdk_rate >= 10_000,
    )
    res.row(
        "addtaskcollection, raw HTTP, 4 connections",
        "tasks/s",
        raw_rate,
        target=">=10,000 tasks/s",
        met=raw_rate >= 10_000,
    )
    res.row(
        "server CPU per task added (raw path)",
        "ms",
        raw_server_cpu / n * 1000,
        note=f"server-bound ceiling ~{n / raw_server_cpu:,.0f} tasks/s on one core",
    )
    res.row(
        "client CPU per task added (SDK path)",
        "ms",
        sdk_client_cpu / n * 1000,
        baselines={"raw client": raw_client_cpu / n * 1000},
    )


async def _add_all(ac: AsyncRawClient, job_id: str, bodies: list[bytes]) -> int:
    try:
        return await ac.add_collections(job_id, bodies)
    finally:
        await ac.aclose()


# --- 3. start latency -------------------------------------------------------------------------------------------


def latency(b: Bench, res: ScenarioResult) -> None:
    n = b.size(200, 20)
    res.details["tasks"] = n
    res.details["client"] = "SDK create_task, then SDK get_task every 5 ms until completed"
    start_lat: list[float] = []
    walls: list[float] = []
    with b.server("latency") as srv:
        c, raw = srv.sdk(), srv.raw()
        create_pool(c, "p", nodes=1, slots=1)
        wait_nodes_ready(raw, "p", 1, 120)
        create_job(c, "j", "p")
        with b.profiled(srv, res, "server", per=n + 5):
            for i in range(-5, n):  # five warm-up tasks
                time.sleep(random.uniform(0, 0.02))
                tid = f"l{i + 5:05d}"
                t = time.monotonic()
                c.create_task("j", m.BatchTaskCreateOptions(id=tid, command_line="/bin/true"))
                while True:
                    task = c.get_task("j", tid)
                    if task.state == "completed":
                        break
                    time.sleep(0.005)
                wall = time.monotonic() - t
                if i < 0:
                    continue
                walls.append(wall * 1000)
                ei = task.execution_info
                start_lat.append((ei.start_time - task.creation_time).total_seconds() * 1000)
    res.details["start_latency_ms"] = {
        "p50": pct(start_lat, 50),
        "p99": pct(start_lat, 99),
        "max": max(start_lat),
    }
    res.details["add_to_completed_ms"] = {"p50": pct(walls, 50), "p99": pct(walls, 99), "max": max(walls)}
    srun: list[float] = []
    sbatch: list[float] = []
    sl = b.slurm()
    if sl is None:
        res.note(b.slurm_skip_line())
    else:
        reps = b.size(20, 5)
        try:
            srun = [x * 1000 for x in sl.srun_latency(reps)]
            sbatch = [x * 1000 for x in sl.sbatch_latency(reps)]
            res.details["slurm"] = {"srun_ms": srun, "sbatch_submit_to_done_ms": sbatch}
        except SlurmUnavailable as exc:
            res.note(f"skipped slurm baseline: {exc}")
    p50, p99 = pct(start_lat, 50), pct(start_lat, 99)
    b50: dict[str, float] = {"slurm srun /bin/true wall p50": pct(srun, 50)} if srun else {}
    res.row(
        f"start latency p50 (startTime - creationTime, {n} tasks)",
        "ms",
        p50,
        baselines=b50,
        ratios={"srun": p50 / b50["slurm srun /bin/true wall p50"]} if b50 else {},
        target="<=10 ms",
        met=p50 <= 10,
    )
    res.row("start latency p99", "ms", p99)
    w50, w99 = pct(walls, 50), pct(walls, 99)
    bw = {"slurm sbatch submit->done p50": pct(sbatch, 50)} if sbatch else {}
    res.row(
        "add request -> observed completed, p50",
        "ms",
        w50,
        baselines=bw,
        ratios={"sbatch": w50 / bw["slurm sbatch submit->done p50"]} if bw else {},
    )
    bw99 = {"slurm sbatch p99": pct(sbatch, 99)} if sbatch else {}
    res.row("add request -> observed completed, p99", "ms", w99, baselines=bw99)


# --- 4. dependency hop -----------------------------------------------------------------------------------------


def deps(b: Bench, res: ScenarioResult) -> None:
    n = b.size(200, 20)
    res.details["tasks"] = n
    res.details["pool"] = "1 local node x 4 slots (so an unenforced dependency would show as overlap)"
    with b.server("deps") as srv:
        c, raw = srv.sdk(), srv.raw()
        create_pool(c, "p", nodes=1, slots=4)
        wait_nodes_ready(raw, "p", 1, 120)
        try:
            create_job(c, "j", "p", deps=True)
            tasks = [
                m.BatchTaskCreateOptions(
                    id=f"c{i:05d}",
                    command_line="/bin/true",
                    depends_on=m.BatchTaskDependencies(task_ids=[f"c{i - 1:05d}"]) if i else None,
                )
                for i in range(n)
            ]
            t0 = time.monotonic()
            c.create_tasks("j", tasks)
        except (HttpResponseError, m.CreateTasksError) as exc:
            res.note(f"not available: {_short_error(exc)}")
            res.row("dependency hop p50", "ms", None, target="<=20 ms", note="not available")
            return
        with b.profiled(srv, res, "server", per=n):
            try:
                wait_completed(raw, "j", n, timeout=n * 5 + 60, interval=0.1)
            except TimeoutError as exc:
                res.note(f"not available: {exc}")
                res.row("dependency hop p50", "ms", None, target="<=20 ms", note="not available")
                return
        chain_s = time.monotonic() - t0
        items = {t["id"]: t for t in raw.list_all("/jobs/j/tasks", {"$select": "id,executionInfo"})}
    hops: list[float] = []
    overlaps = 0
    for i in range(1, n):
        parent = items[f"c{i - 1:05d}"]["executionInfo"]
        child = items[f"c{i:05d}"]["executionInfo"]
        h = (parse_time(child["startTime"]) - parse_time(parent["endTime"])).total_seconds()
        if h < 0:
            overlaps += 1
        hops.append(h * 1000)
    res.details["chain_seconds"] = round(chain_s, 2)
    if overlaps:
        msg = f"not available: dependsOn accepted but not enforced ({overlaps} of {n - 1} children started before their parent ended)"
        res.note(msg)
        res.details["hops_ms_unenforced"] = {"p50": pct(hops, 50), "p99": pct(hops, 99)}
        res.row("dependency hop p50", "ms", None, target="<=20 ms", note="not enforced")
        return
    res.details["hop_ms"] = {"p50": pct(hops, 50), "p99": pct(hops, 99), "max": max(hops)}
    baselines: dict[str, float] = {}
    sl = b.slurm()
    if sl is None:
        res.note(b.slurm_skip_line())
    else:
        sn = b.size(20, 5)
        try:
            wall = sl.chain(sn)
            baselines[f"slurm afterok chain of {sn}, per link"] = wall / sn * 1000
            res.details["slurm_chain"] = {"jobs": sn, "wall_s": round(wall, 2)}
        except SlurmUnavailable as exc:
            res.note(f"skipped slurm baseline: {exc}")
    p50 = pct(hops, 50)
    res.row(
        f"dependency hop p50 (start(child) - end(parent), chain of {n})",
        "ms",
        p50,
        target="<=20 ms",
        met=p50 <= 20,
    )
    res.row("dependency hop p99", "ms", pct(hops, 99))
    per_link = chain_s / n * 1000
    res.row(
        "chain wall time per link",
        "ms",
        per_link,
        baselines=baselines,
        ratios={"slurm": per_link / next(iter(baselines.values()))} if baselines else {},
    )


def _short_error(exc: Exception) -> str:
    if isinstance(exc, m.CreateTasksError):
        failures = getattr(exc, "failure_tasks", None) or []
        errs = getattr(exc, "errors", None) or []
        if failures:
            f = failures[0]
            e = getattr(f, "error", None)
            return f"{getattr(e, 'code', '')}: {getattr(getattr(e, 'message', None), 'value', '')}".strip()
        if errs:
            return _short_error(errs[0]) if isinstance(errs[0], Exception) else str(errs[0])[:300]
    text = str(exc).splitlines()
    return " ".join(text[:2])[:300]


# --- 5. scale --------------------------------------------------------------------------------------------------


def scale(b: Bench, res: ScenarioResult) -> None:
    n = b.scale_tasks if not b.quick else min(b.scale_tasks, 20_000)
    conns = b.scale_connections
    res.details.update(
        {
            "tasks_requested": n,
            "connections": conns,
            "per_request": 100,
            "client": "raw HTTP (httpx, asyncio)",
            "store": "postgresql" if b.scale_store else "sqlite",
        }
    )
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(_pg_schema(b.scale_store, b.keep)) if b.scale_store else None
        _scale(
            b, res, n, conns, stack.enter_context(b.server("scale", database_url=pg.url if pg else None)), pg
        )


@dataclass
class PgSchema:
    """A schema of its own on the PostgreSQL server given with --scale-store, dropped afterwards."""

    base: str
    name: str

    @property
    def url(self) -> str:
        sep = "&" if "?" in self.base else "?"
        return f"{self.base}{sep}options=-csearch_path%3D{self.name}"

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, autocommit=True)


@contextlib.contextmanager
def _pg_schema(base: str, keep: bool = False) -> Iterator[PgSchema]:
    """With --keep the schema stays (its name is printed), as the data directories do."""
    import psycopg

    sch = PgSchema(base, f"bench_scale_{int(time.time())}")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {sch.name}")
    try:
        yield sch
    finally:
        if keep:
            print(f"  [scale] kept PostgreSQL schema {sch.name}", flush=True)
        else:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {sch.name} CASCADE")


def _scale(b: Bench, res: ScenarioResult, n: int, conns: int, srv: Server, pg: PgSchema | None) -> None:
    c, raw = srv.sdk(), srv.raw()
    create_pool(c, "p", nodes=0, slots=1)
    create_job(c, "j", "p")
    bodies = LazyBodies("t", n)
    progress: list[tuple[float, int]] = []
    t0 = time.monotonic()
    deadline = t0 + b.scale_budget
    step = max(1, n // 20)
    next_mark = [step]

    def on_progress(accepted: int) -> None:
        if accepted >= next_mark[0]:
            progress.append((round(time.monotonic() - t0, 2), accepted))
            next_mark[0] += step
            if len(progress) % 2 == 0:
                print(
                    f"  [scale] {accepted:,} tasks added after {time.monotonic() - t0:.0f}s "
                    f"(load {' '.join(Path('/proc/loadavg').read_text().split()[:3])})",
                    flush=True,
                )

    s0 = srv.cpu_seconds()
    with b.profiled(srv, res, "add", per=n):
        added = asyncio.run(_add_budget(srv, bodies, conns, deadline, on_progress))
    add_s = time.monotonic() - t0
    add_cpu = srv.cpu_seconds() - s0
    got = counts(raw, "j")
    complete = added == n
    rate = added / add_s
    slices = []
    prev_t, prev_n = 0.0, 0
    for t, k in progress:
        if t > prev_t:
            slices.append(round((k - prev_n) / (t - prev_t)))
        prev_t, prev_n = t, k
    res.details.update(
        {
            "tasks_added": added,
            "add_seconds": round(add_s, 1),
            "add_rate": round(rate, 1),
            "add_rate_per_5pct_slice": slices,
            "add_server_cpu_s": round(add_cpu, 1),
            "taskcounts_after_add": got,
            "rss_after_add_bytes": srv.rss_bytes(),
        }
    )
    if not complete:
        res.note(
            f"added {added:,} of {n:,} tasks within the {b.scale_budget:.0f}s budget; add time extrapolated"
        )
    q: dict[str, str | int] = {"$filter": "state eq 'active'", "maxresults": 1000}
    with b.profiled(srv, res, "queries"):
        first = timed(lambda: raw.ok("GET", "/jobs/j/tasks", q), 20)
        deep = _walk_pages(raw, "/jobs/j/tasks", q, 10)
        unfiltered = timed(lambda: raw.ok("GET", "/jobs/j/tasks", {"maxresults": 1000}), 10)
        none = timed(
            lambda: raw.ok("GET", "/jobs/j/tasks", {"$filter": "state eq 'completed'", "maxresults": 1000}),
            5,
        )
        tc = timed(lambda: raw.ok("GET", "/jobs/j/taskcounts"), 50)
    sdk_first = timed(lambda: list(_first_page_sdk(c)), 5)
    rss, hwm = srv.rss_bytes(), proc_hwm_bytes(srv.pid)
    if pg is None:
        db_bytes = sum(p.stat().st_size for p in srv.data_dir.glob("batchyard.db*"))
        floor = _sqlite_floor(srv.data_dir / "batchyard.db")
    else:
        db_bytes, floor = _pg_floor(pg)
    store = "postgresql" if pg is not None else "sqlite"
    trend = _slice_trend(slices)
    res.details.update(
        {
            "list_first_page_ms": _dist(first),
            "list_pages_2_to_10_ms": _dist(deep),
            "list_unfiltered_first_page_ms": _dist(unfiltered),
            "list_filter_matching_nothing_ms": _dist(none),
            "list_first_page_via_sdk_ms": _dist(sdk_first),
            "taskcounts_ms": _dist(tc),
            "rss_bytes": rss,
            "vm_hwm_bytes": hwm,
            "db_bytes": db_bytes,
            f"{store}_floor_ms": floor,
            "add_rate_trend": trend,
        }
    )
    full_add = add_s if complete else n / rate
    res.row(
        f"time to add {n:,} tasks ({store}, raw HTTP, {conns} conns, 100/request)",
        "s",
        full_add,
        note="" if complete else f"extrapolated from {added:,} in {add_s:.0f}s",
    )
    res.row("add rate (whole run)", "tasks/s", rate)
    if trend:
        res.row(
            "add rate, last 4 slices / first 4 slices (5 % each)",
            "x",
            trend["last4_over_first4"],
            note=f"slices {min(slices):,}..{max(slices):,} tasks/s",
        )
    alone = f"{store} query alone"
    fb = {alone: floor["list_page"]} if floor.get("list_page") is not None else {}
    p50 = statistics.median(first)
    res.row(
        f"list page p50 ($filter state eq 'active', maxresults=1000) at {added:,} tasks",
        "ms",
        p50,
        baselines=fb,
        ratios={store: p50 / fb[alone]} if fb else {},
        target="<=50 ms",
        met=p50 <= 50,
    )
    deep50 = statistics.median(deep)
    res.row("list pages 2-10 p50 (following nextLink)", "ms", deep50, target="<=50 ms", met=deep50 <= 50)
    unf50 = statistics.median(unfiltered)
    res.row("list unfiltered page p50", "ms", unf50, target="<=50 ms", met=unf50 <= 50)
    none50 = statistics.median(none)
    res.row("list with a filter matching nothing, p50", "ms", none50, target="<=50 ms", met=none50 <= 50)
    tb = {alone: floor["taskcounts"]} if floor.get("taskcounts") is not None else {}
    t50 = statistics.median(tc)
    res.row(
        "taskcounts p50",
        "ms",
        t50,
        baselines=tb,
        ratios={store: t50 / tb[alone]} if tb else {},
        target="<=10 ms",
        met=t50 <= 10,
    )
    res.row(
        f"server RSS after add + queries ({added:,} tasks)",
        "MiB",
        rss / 2**20,
        target="<=1024 MiB (peak)",
        met=hwm <= 2**30 and ((rss / added * n) <= 2**30 if added else True),
        note=f"peak (VmHWM) {hwm / 2**20:.0f} MiB"
        + ("" if complete else f"; ~{rss / added * n / 2**20:.0f} MiB at {n:,} if linear"),
    )
    res.row("database size on disk", "MiB", db_bytes / 2**20)


def _slice_trend(slices: list[int]) -> dict[str, float]:
    """Whether adding slows down as the job grows: the last 4 slices' mean over the first 4's, and the
    least-squares slope in (tasks/s) per slice."""
    if len(slices) < 8:
        return {}
    first, last = statistics.mean(slices[:4]), statistics.mean(slices[-4:])
    xs = range(len(slices))
    mx, my = statistics.mean(xs), statistics.mean(slices)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, slices, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return {
        "first4_mean": round(first),
        "last4_mean": round(last),
        "last4_over_first4": round(last / first, 3),
        "slope_per_slice": round(slope, 1),
    }


async def _add_budget(
    srv: Server, bodies: Sequence[bytes], conns: int, deadline: float, progress: Callable[[int], None]
) -> int:
    ac = srv.async_raw(conns)
    try:
        return await ac.add_collections("j", bodies, progress, deadline=deadline)
    finally:
        await ac.aclose()


def _walk_pages(raw: RawClient, path: str, params: dict[str, str | int], pages: int) -> list[float]:
    """Times of pages 2..pages, following odata.nextLink."""
    data = raw.ok("GET", path, params)
    out: list[float] = []
    for _ in range(pages - 1):
        nxt = data.get("odata.nextLink")
        if not nxt:
            break
        t = time.perf_counter()
        resp = raw.http.get(nxt, headers=raw.signer.headers("GET", nxt, None))
        data = resp.json()
        out.append((time.perf_counter() - t) * 1000)
    return out or [float("nan")]


def _first_page_sdk(c: Any) -> Iterator[Any]:
    pager = c.list_tasks("j", filter="state eq 'active'", max_results=1000)
    for i, t in enumerate(pager):
        yield t
        if i >= 999:
            return


def _dist(xs: list[float]) -> dict[str, float]:
    return {
        "p50": round(pct(xs, 50), 2),
        "p99": round(pct(xs, 99), 2),
        "min": round(min(xs), 2),
        "n": len(xs),
    }


# the queries a list page and a task count cost in the store alone (current schema), with their plans
_FLOOR_SQL = {
    "list_page": "SELECT * FROM tasks WHERE job_key = {p} AND state = 'active' ORDER BY key LIMIT 1001",
    "list_page_after": (
        "SELECT * FROM tasks WHERE job_key = {p} AND state = 'active' AND key > 't0005000' ORDER BY key LIMIT 1001"
    ),
    "list_unfiltered": "SELECT * FROM tasks WHERE job_key = {p} ORDER BY key LIMIT 1001",
    "list_none": "SELECT * FROM tasks WHERE job_key = {p} AND state = 'completed' ORDER BY key LIMIT 1001",
    "taskcounts": "SELECT * FROM task_counts WHERE job_key = {p}",
}


def _sqlite_floor(db: Path) -> dict[str, Any]:
    """The same page and counts read straight from the SQLite file: what the store alone costs (info only).

    Uses the current schema (tasks.job_key/state/key/body, task_counts); None if it has changed."""
    out: dict[str, Any] = {"list_page": None, "taskcounts": None, "plans": {}}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        jk = con.execute("SELECT key FROM jobs WHERE id = 'j'").fetchone()[0]
        for name, sql in _FLOOR_SQL.items():
            q = sql.format(p="?")
            out["plans"][name] = [r[-1] for r in con.execute("EXPLAIN QUERY PLAN " + q, (jk,))]

            def run(q: str = q) -> None:
                con.execute(q, (jk,)).fetchall()

            out[name] = round(statistics.median(timed(run, 10 if name != "taskcounts" else 20)), 3)
        con.close()
    except (sqlite3.Error, TypeError, AssertionError) as exc:
        out["error"] = str(exc)
        print(f"  [scale] sqlite floor not measured: {exc}")
    return out


def _pg_floor(pg: PgSchema) -> tuple[int, dict[str, Any]]:
    """The schema's size on disk, and the same queries as `_sqlite_floor` run straight on PostgreSQL."""
    out: dict[str, Any] = {"list_page": None, "taskcounts": None, "plans": {}}
    with pg.connect() as con:
        size = con.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
            (pg.name,),
        ).fetchone()
        jk = con.execute("SELECT key FROM jobs WHERE id = 'j'").fetchone()
        if jk is None:
            return int(size[0]) if size else 0, out
        for name, sql in _FLOOR_SQL.items():
            q = sql.format(p="%s")
            plan = con.execute("EXPLAIN (ANALYZE, BUFFERS) " + q, (jk[0],)).fetchall()
            out["plans"][name] = [r[0] for r in plan]

            def run(q: str = q) -> None:
                con.execute(q, (jk[0],)).fetchall()

            out[name] = round(statistics.median(timed(run, 10 if name != "taskcounts" else 20)), 3)
    return int(size[0]) if size else 0, out


# --- 6. many nodes ---------------------------------------------------------------------------------------------


def nodes(b: Bench, res: ScenarioResult) -> None:
    n = b.nodes if not b.quick else min(b.nodes, 20)
    interval = b.nodes_interval if not b.quick else min(b.nodes_interval, 20.0)
    res.details.update(
        {"nodes": n, "slots_per_node": 1, "interval_s": interval, "agent_poll_wait_s": AGENT_POLL_WAIT}
    )
    why_not = SyncCounter.available()
    # the pool's standard_d2s_v3 nodes have 2 cores each: the default quota (500) stops at 250 nodes
    quota = ["--dedicated-core-quota", str(max(500, 2 * n))]
    with b.server("nodes", extra_args=quota) as srv:
        c, raw = srv.sdk(), srv.raw()
        # baseline: the same server with no nodes, over the same interval
        time.sleep(2)
        idle0 = srv.cpu_seconds()
        time.sleep(min(interval, 20.0))
        idle_cores = (srv.cpu_seconds() - idle0) / min(interval, 20.0)
        create_pool(c, "p", nodes=n, slots=1)
        ready_s = wait_nodes_ready(raw, "p", n, timeout=max(180.0, n * 2.0))
        res.details["nodes_ready_s"] = round(ready_s, 1)
        # CPU each agent used to start and join (utime+stime): what bounds the time to idle on a busy host
        start_cpu = agents_cpu_each(srv.data_dir)
        server_cpu_join = srv.cpu_seconds()
        time.sleep(AGENT_POLL_WAIT + 5 if not b.quick else 5)  # let start-up syncs settle into long polls
        counter = SyncCounter(srv.port).start() if why_not is None else None
        sys_cpu = SystemCpu().start()
        cpu0 = srv.cpu_seconds()
        t0 = time.monotonic()
        with b.profiled(srv, res, "quiet"):
            time.sleep(interval)
        dt = time.monotonic() - t0
        cpu = srv.cpu_seconds() - cpu0
        busy = sys_cpu.stop()
        syncs = counter.stop() if counter is not None else None
        rss = srv.rss_bytes()
        a_rss = agents_rss(srv.data_dir)
        per_agent_all = agents_memory(srv.data_dir)
        per_agent = [(r, p) for r, p, _ in per_agent_all]
    expected = n * dt / AGENT_POLL_WAIT
    if syncs is None:
        res.note(f"sync count not captured ({why_not}); using the protocol's expected count {expected:.0f}")
        syncs_used = expected
        how = "expected: nodes x interval / poll-wait (20 s)"
    else:
        syncs_used = float(syncs)
        how = "counted on lo with an AF_PACKET socket: requests starting 'POST /batchyard/agent/v1/sync'"
    cores = cpu / dt
    per_node = (cores - idle_cores) / n
    per_sync_ms = cpu / syncs_used * 1000 if syncs_used else float("nan")
    res.details.update(
        {
            "server_cpu_s": round(cpu, 3),
            "interval_measured_s": round(dt, 2),
            "syncs": syncs_used,
            "syncs_expected": round(expected, 1),
            "how_syncs_counted": how,
            "server_cores": round(cores, 4),
            "idle_server_cores": round(idle_cores, 4),
            "system_busy_cores": round(busy, 2),
            "server_rss_bytes": rss,
            "agents_rss_bytes": a_rss,
            "agents_measured": len(per_agent),
            "agent_start_cpu_ms": {k: round(v * 1000, 1) for k, v in summary_f(start_cpu).items()},
            "server_cpu_s_until_idle": round(server_cpu_join, 2),
            "agent_rss_kib": summary([r for r, _ in per_agent]),
            "agent_pss_kib": summary([p for _, p in per_agent]),
            "agent_uss_kib": summary([u for _, _, u in per_agent_all]),
        }
    )
    res.row(
        f"server CPU per agent sync ({n} nodes, quiet, {dt:.0f}s)",
        "ms",
        per_sync_ms,
        note=f"{syncs_used:.0f} syncs, {cpu:.2f} s CPU; includes all per-node background work",
    )
    res.row(f"server CPU, {n} idle nodes", "cores", cores, baselines={"server with 0 nodes": idle_cores})
    res.row("server CPU per node (above idle)", "ms/s", per_node * 1000)
    for big in (1_000, 10_000):
        res.row(
            f"extrapolated server CPU at {big:,} nodes", "cores", idle_cores + per_node * big, note="linear"
        )
    res.row(
        f"time until {n} nodes idle",
        "s",
        ready_s,
        target="<= 60 s at 1,000 nodes",
        met=ready_s <= 60.0 if n >= 1_000 else None,
    )
    sc = summary_f(start_cpu)
    res.row(
        "agent CPU to start and join (median)",
        "ms",
        sc["median"] * 1000,
        note=f"max {sc['max'] * 1000:.0f} ms; x{n} = {sum(start_cpu):.0f} CPU-s; server {server_cpu_join:.0f} CPU-s until idle",
    )
    uss = [u for _, _, u in per_agent_all]
    for what, figures in (
        ("RSS", [r for r, _ in per_agent]),
        ("PSS", [p for _, p in per_agent]),
        ("USS", uss),
    ):
        s = summary(figures)
        res.row(
            f"agent {what} (median of {len(figures)})",
            "MiB",
            s["median"] / 1024,
            target="<= 15 MiB" if what == "RSS" else "",
            met=s["median"] <= 15 * 1024 and s["max"] <= 15 * 1024 if what == "RSS" else None,
            note=f"max {s['max'] / 1024:.1f} MiB; /proc/<pid>/"
            + {"RSS": "status VmRSS", "PSS": "smaps_rollup Pss", "USS": "smaps_rollup Private_*"}[what],
        )
    res.row(
        f"server RSS with {n} nodes",
        "MiB",
        rss / 2**20,
        baselines={},
        note=f"agents total {a_rss / 2**20:.0f} MiB",
    )


# --- 7. idle nodes: what a quiet pool costs the server ---------------------------------------------------------

#: Memory of one idle `batchyard agent`, with a wide margin (forked from the agent zygote it adds ~6.6 MiB, 17 MiB
#: RSS; started as a program 11.8 MiB PSS): caps the real node count at what free memory holds, before starting any.
AGENT_MIB_ESTIMATE = 16.0


def _idle_counts(raw: RawClient, pool_id: str) -> dict[str, int]:
    for item in raw.list_all("/nodecounts"):
        if item["poolId"] == pool_id:
            return {k: int(v) for k, v in item["dedicated"].items()}
    return {}


def _wait_idle(raw: RawClient, pool_id: str, n: int, timeout: float) -> float:
    """Seconds until the pool's n nodes are all idle (read from /nodecounts: one request at any size)."""
    t0 = time.monotonic()
    c: dict[str, int] = {}
    while time.monotonic() - t0 < timeout:
        c = _idle_counts(raw, pool_id)
        if c.get("idle", 0) >= n:
            return time.monotonic() - t0
        time.sleep(1.0 if n <= 1000 else 5.0)  # /nodecounts reads every node: not too often at 10,000
    raise TimeoutError(f"{pool_id}: {n} nodes not idle after {timeout:.0f}s: {c}")


def _quiet_cpu(srv: Server, seconds: float) -> tuple[float, float]:
    """Server CPU (cores) over a quiet window, and the window's length."""
    cpu0, t0 = srv.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    return (srv.cpu_seconds() - cpu0) / dt, dt


def _free_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def idle(b: Bench, res: ScenarioResult) -> None:
    """Real local nodes idle, then simulated agents idle: the server's CPU over a quiet window (decision 0189)."""
    interval = b.idle_interval if not b.quick else min(b.idle_interval, 20.0)
    settle = AGENT_POLL_WAIT + 5 if not b.quick else 5.0
    res.details["interval_s"] = interval
    # 1. real local nodes (each a `batchyard agent` process)
    want = b.size(b.idle_nodes, min(b.idle_nodes, 20))
    fits = int(_free_mib() * 0.7 / AGENT_MIB_ESTIMATE)
    n = min(want, fits)
    if n < want:
        res.note(
            f"real nodes: {want} asked, {n} started: {want} agents of ~{AGENT_MIB_ESTIMATE:.0f} MiB would not "
            f"fit in the {_free_mib():.0f} MiB available"
        )
    if n > 0 and not b.skip_real:
        with b.server("idle-real", ["--dedicated-core-quota", str(n * 16)]) as srv:
            c, raw = srv.sdk(), srv.raw()
            time.sleep(2)
            base, _ = _quiet_cpu(srv, min(interval, 20.0))
            create_pool(c, "p", nodes=n, slots=1)
            ready = _wait_idle(raw, "p", n, timeout=max(300.0, n * 1.0))
            time.sleep(settle)  # start-up syncs settle into long polls
            with b.profiled(srv, res, "real"):
                cores, dt = _quiet_cpu(srv, interval)
            a_rss = agents_rss(srv.data_dir)
            mem = agents_memory(srv.data_dir)
            res.details["real"] = {
                "nodes": n,
                "ready_s": round(ready, 1),
                "server_cores": round(cores, 4),
                "server_cores_no_nodes": round(base, 4),
                "window_s": round(dt, 1),
                "server_rss_bytes": srv.rss_bytes(),
                "agents_rss_bytes": a_rss,
                "agent_rss_kib": summary([r for r, _, _ in mem]),
                "agent_pss_kib": summary([p for _, p, _ in mem]),
                "agent_uss_kib": summary([u for _, _, u in mem]),
            }
        big = n >= 1000
        res.row(
            f"time until {n} local nodes idle",
            "s",
            ready,
            **({"target": "<= 60 s", "met": ready <= 60} if big else {}),
        )
        res.row(
            f"server CPU, {n} idle local nodes",
            "% of a core",
            cores * 100,
            baselines={"server with 0 nodes": base * 100},
            **({"target": "<= 10 %", "met": cores <= 0.10} if big else {}),
            note=f"{(cores - base) / n * 1e6:.0f} us/s per node; agents {a_rss / 2**20 / n:.0f} MiB each",
        )
        for what, i in (("RSS", 0), ("PSS", 1), ("USS", 2)):
            s = summary([m[i] for m in mem])
            res.row(
                f"agent {what} with {n} idle local nodes (median)",
                "MiB",
                s["median"] / 1024,
                **({"target": "<= 15 MiB", "met": s["median"] <= 15 * 1024} if what == "RSS" else {}),
                note=f"max {s['max'] / 1024:.1f} MiB",
            )
    # 2. simulated agents (bench/simagents.py) for real nodes of a real pool
    sim_n = b.size(b.sim_nodes, min(b.sim_nodes, 500))
    if sim_n <= 0:
        return
    # a connection per agent, and cores enough for the pool (the default quota holds 250 two-core nodes)
    extra = ["--simulated-agents", "--max-connections", str(sim_n + 2048)]
    extra += ["--dedicated-core-quota", str(sim_n * 16)]
    with b.server("idle-sim", extra_args=extra) as srv:
        sock = srv.data_dir / "simagents.sock"
        log = open(srv.data_dir / "simagents.log", "ab")  # noqa: SIM115 - owned by the child
        sim = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("simagents.py")),
                "--socket",
                str(sock),
                "--procs",
                str(b.sim_procs),
                "--report-every",
                "10",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            c, raw = srv.sdk(), srv.raw()
            time.sleep(2)
            base, _ = _quiet_cpu(srv, min(interval, 20.0))
            ready = _grow(c, raw, "p", sim_n, b.sim_step)
            time.sleep(settle)
            sim_cpu0 = _tree_cpu(sim.pid)
            with b.profiled(srv, res, "simulated"):
                cores, dt = _quiet_cpu(srv, interval)
            sim_cores = (_tree_cpu(sim.pid) - sim_cpu0) / dt
            syncs = _sim_syncs(srv.data_dir / "simagents.log")
            res.details["simulated"] = {
                "nodes": sim_n,
                "simulator_processes": b.sim_procs,
                "ready_s": round(ready, 1),
                "server_cores": round(cores, 4),
                "server_cores_no_nodes": round(base, 4),
                "simulator_cores": round(sim_cores, 4),
                "window_s": round(dt, 1),
                "server_rss_bytes": srv.rss_bytes(),
                "simulator_syncs_per_s": syncs,
            }
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sim.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                sim.wait(10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sim.pid, signal.SIGKILL)
    res.row(f"time until {sim_n:,} simulated nodes idle", "s", ready)
    res.row(
        f"server CPU, {sim_n:,} idle simulated agents",
        "cores",
        cores,
        baselines={"server with 0 nodes": base},
        **({"target": "<= 1 core", "met": cores <= 1.0} if sim_n >= 10_000 else {}),
        note=f"{syncs} syncs/s; simulator {sim_cores:.2f} cores",
    )


def _grow(c: Any, raw: RawClient, pool_id: str, n: int, step: int) -> float:
    """Seconds until the pool has n idle nodes, grown `step` nodes at a time (each step idle before the next),
    as an operator grows a large pool; the server keeps answering meanwhile on a busy machine."""
    t0 = time.monotonic()
    target = min(n, step)
    create_pool(c, pool_id, nodes=target, slots=1)
    while True:
        _wait_idle(raw, pool_id, target, timeout=max(300.0, step * 0.5))
        if target >= n:
            return time.monotonic() - t0
        target = min(n, target + step)
        for _ in range(120):  # the pool is steady once its last nodes are recorded: a resize before is a 409
            resp = raw.request("POST", f"/pools/{pool_id}/resize", body={"targetDedicatedNodes": target})
            if resp.status_code < 300:
                break
            time.sleep(1.0)
        else:
            raise RuntimeError(f"resize to {target}: {resp.status_code} {resp.text[:300]}")


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the simulator's processes), live and reaped."""
    from bench.client import CLK_TCK

    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        with contextlib.suppress(OSError):
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in f[11:13]) / CLK_TCK
    return total


def _sim_syncs(log: Path) -> float | None:
    """The simulator's latest sync rate (summed over its processes), from its counter lines."""
    latest: dict[int, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError, KeyError):
                d = json.loads(line)
                latest[int(d["proc"])] = float(d["syncs_per_s"])
    return round(sum(latest.values()), 1) if latest else None
