"""What this node really uses, sampled off the task path (decision 0141).

A background loop samples the agent's process tree (the agent, its launcher helpers and every task) with
psutil in a worker thread every `interval` seconds and keeps cumulative figures; a sync only attaches the
newest snapshot (`take`), so dispatch never waits for a sample. CPU time counts each process's own time plus
what its reaped children used, taken as deltas between samples, so a task that ends between two samples is
still counted (through its parent). Disk space is the node directory's size, measured every few samples and
bounded. Network figures are those of the agent's network namespace since the agent started (a local node
shares the host's namespace).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("batchyard.agent.usage")

GIB = float(1 << 30)
#: Seconds between samples (BATCHYARD_STATS_INTERVAL overrides, e.g. in tests).
DEFAULT_INTERVAL = 10.0
#: Every how many samples the node directory's size is measured, and the most entries one measure visits.
DISK_EVERY = 6
#: Figures wait for another sync at most this many samples before the sampler sends them itself.
SEND_EVERY = 3
DISK_MAX_ENTRIES = 200_000

_Key = tuple[int, float]  # pid, create time: a pid reused by another process is another process


def _interval() -> float:
    try:
        return max(0.2, float(os.environ.get("BATCHYARD_STATS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def dir_size(root: Path, max_entries: int = DISK_MAX_ENTRIES) -> int:
    """Bytes allocated under `root` (st_blocks), visiting at most `max_entries` entries; never follows links."""
    total, seen, stack = 0, 0, [str(root)]
    while stack and seen < max_entries:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    seen += 1
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if e.is_dir(follow_symlinks=False) and not os.path.ismount(e.path):
                        stack.append(e.path)
        except OSError:
            continue
    return total


class UsageSampler:
    def __init__(self, root: Path, interval: float | None = None) -> None:
        self.root = root
        self.interval = _interval() if interval is None else interval
        self.boot = secrets.token_hex(6)  # this process: the server folds an earlier one's figures
        self.cores = psutil.cpu_count() or 1
        self.totals: dict[str, float] = {
            "seconds": 0.0,
            "cpuSeconds": 0.0,
            "coreSeconds": 0.0,
            "memGiBSeconds": 0.0,
            "memPeakGiB": 0.0,
            "diskGiBSeconds": 0.0,
            "diskPeakGiB": 0.0,
            "diskReadOps": 0.0,
            "diskWriteOps": 0.0,
            "diskReadBytes": 0.0,
            "diskWriteBytes": 0.0,
            "netReadBytes": 0.0,
            "netWriteBytes": 0.0,
        }
        self._cpu: dict[_Key, float] = {}  # each process's own + reaped children's CPU seconds
        self._io: dict[_Key, tuple[int, int, int, int]] = {}
        self._net0 = self._net()
        try:  # the first sample covers the agent's life so far
            self._last = time.monotonic() - max(time.time() - psutil.Process(os.getpid()).create_time(), 0.0)
        except psutil.Error:
            self._last = time.monotonic()
        self._sent = time.monotonic()
        self._disk = 0.0
        self._samples = 0
        self._fresh: dict[str, Any] | None = None

    @staticmethod
    def _net() -> tuple[int, int]:
        try:
            n = psutil.net_io_counters()
            return int(n.bytes_recv), int(n.bytes_sent)
        except (OSError, AttributeError):
            return 0, 0

    def _tree(self) -> list[psutil.Process]:
        me = psutil.Process(os.getpid())
        try:
            return [me, *me.children(recursive=True)]
        except psutil.Error:
            return [me]

    def sample(self) -> None:
        """One sample (blocking: run it in a worker thread)."""
        now = time.monotonic()
        dt = max(now - self._last, 0.0)
        self._last = now
        cpu: dict[_Key, float] = {}
        io: dict[_Key, tuple[int, int, int, int]] = {}
        rss = 0
        for p in self._tree():
            try:
                with p.oneshot():
                    key = (p.pid, p.create_time())
                    t = p.cpu_times()
                    cpu[key] = t.user + t.system + t.children_user + t.children_system
                    rss += p.memory_info().rss
                    try:
                        c = p.io_counters()
                        io[key] = (c.read_count, c.write_count, c.read_bytes, c.write_bytes)
                    except (psutil.AccessDenied, AttributeError):
                        pass
            except psutil.Error:
                continue
        # the tree's total against the last sample's: a new process adds all its time so far; one that ended
        # leaves, and its whole time reappears in its parent's children time once reaped, so the difference is
        # its last interval (never below zero, e.g. when an orphan was reaped outside the tree)
        used = sum(cpu.values()) - sum(self._cpu.values())
        self._cpu = cpu
        d = [0, 0, 0, 0]
        for k, v in io.items():
            old = self._io.get(k, (0, 0, 0, 0))
            for i in range(4):
                d[i] += max(v[i] - old[i], 0)
        self._io = io
        if self._samples % DISK_EVERY == 0:
            self._disk = dir_size(self.root) / GIB
        self._samples += 1
        mem = rss / GIB
        t = self.totals
        t["seconds"] += dt
        t["cpuSeconds"] += max(used, 0.0)
        t["coreSeconds"] += dt * self.cores
        t["memGiBSeconds"] += mem * dt
        t["memPeakGiB"] = max(t["memPeakGiB"], mem)
        t["diskGiBSeconds"] += self._disk * dt
        t["diskPeakGiB"] = max(t["diskPeakGiB"], self._disk)
        t["diskReadOps"] += d[0]
        t["diskWriteOps"] += d[1]
        t["diskReadBytes"] += d[2]
        t["diskWriteBytes"] += d[3]
        rx, tx = self._net()
        t["netReadBytes"] = float(max(rx - self._net0[0], 0))
        t["netWriteBytes"] = float(max(tx - self._net0[1], 0))
        self._fresh = {"boot": self.boot, **t}

    def take(self) -> dict[str, Any] | None:
        """The newest snapshot not yet sent (None when nothing new): for the next sync's body."""
        fresh, self._fresh = self._fresh, None
        if fresh is not None:
            self._sent = time.monotonic()
        return fresh

    def overdue(self) -> bool:
        """A snapshot waits and no sync carried one for SEND_EVERY samples: worth a sync of its own."""
        return self._fresh is not None and time.monotonic() - self._sent >= SEND_EVERY * self.interval

    def give_back(self, snapshot: dict[str, Any] | None) -> None:
        """A sync that carried `snapshot` failed: send it (or a newer one) next time."""
        if snapshot is not None and self._fresh is None:
            self._fresh = snapshot

    async def run(self, send: Callable[[], Awaitable[object]]) -> None:
        """Sample forever; `send` (a sync without waiting) carries figures no other sync took for a while."""
        while True:
            try:
                await asyncio.to_thread(self.sample)
                if self.overdue():
                    await send()
            except Exception:  # sampling must never stop the agent
                log.exception("usage sample failed")
            await asyncio.sleep(self.interval)
