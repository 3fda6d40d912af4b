"""What this node really uses, sampled off the task path (decision 0141).

A background loop samples the agent's process tree (the agent, its launcher helpers and every task) from
/proc every `interval` seconds and keeps cumulative figures; a sync only attaches the
newest snapshot (`take`), so dispatch never waits for a sample. CPU time counts each process's own time plus
what its reaped children used, taken as deltas between samples, so a task that ends between two samples is
still counted (through its parent). Disk space is the node directory's size, measured every few samples and
bounded. Network figures are those of the agent's network namespace since the agent started (a local node
shares the host's namespace).

The figures are psutil's, read straight from /proc (decision 0183): psutil cost each node ~1.5 MiB and a
worker thread, and its tree walk reads every process of the host even when the agent has no child — at 1,000
nodes on one host that walk alone would use most of a core. The host's process table is only read when the
agent has children (``waitid`` says so without reaping); the node directory's size is measured in a worker
thread once it is large.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("batchyard.agent.usage")

GIB = float(1 << 30)
#: Seconds between samples (BATCHYARD_STATS_INTERVAL overrides, e.g. in tests).
DEFAULT_INTERVAL = 10.0
#: Every how many samples the node directory's size is measured, and the most entries one measure visits.
DISK_EVERY = 6
#: Figures wait for another sync at most this many samples before the sampler sends them itself.
SEND_EVERY = 3
DISK_MAX_ENTRIES = 200_000

_Key = tuple[int, float]  # pid, start time: a pid reused by another process is another process
CLK_TCK = float(os.sysconf("SC_CLK_TCK"))
PAGE = os.sysconf("SC_PAGE_SIZE")
#: A node directory with more entries than this is measured in a worker thread, off the agent's loop.
INLINE_ENTRIES = 2_000


class Gone(Exception):
    """The process ended while being read."""


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, ...] (field 3 onwards)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        raise Gone from None
    return data[data.rindex(b")") + 2 :].decode().split()


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def create_time(pid: int) -> float:
    """psutil's ``Process.create_time()``: boot time + start ticks / CLK_TCK (``Gone`` if it ended)."""
    return _boot_time() + float(_stat(pid)[19]) / CLK_TCK


def _children(me: int) -> list[int]:
    """Every descendant of ``me``: the host's process table is only read when ``me`` has a child at all."""
    try:  # succeeds while any child exists (running, or ended and not yet reaped); reaps nothing
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return []
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                ppid = int(_stat(int(name))[1])
            except (Gone, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(name))
    out: list[int] = []
    stack = [me]
    while stack:
        for child in kids.get(stack.pop(), ()):
            out.append(child)
            stack.append(child)
    return out


def _interval() -> float:
    try:
        return max(0.2, float(os.environ.get("BATCHYARD_STATS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def dir_size(root: Path, max_entries: int = DISK_MAX_ENTRIES) -> int:
    """Bytes allocated under `root` (st_blocks), visiting at most `max_entries` entries; never follows links."""
    return _dir_size(root, max_entries)[0]


def _dir_size(root: Path, max_entries: int = DISK_MAX_ENTRIES) -> tuple[int, int]:
    """`dir_size` and the number of entries visited."""
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
    return total, seen


class UsageSampler:
    def __init__(self, root: Path, interval: float | None = None) -> None:
        self.root = root
        self.interval = _interval() if interval is None else interval
        self.boot = os.urandom(6).hex()  # this process: the server folds an earlier one's figures
        self.cores = os.cpu_count() or 1
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
            created = create_time(os.getpid())
            self._last = time.monotonic() - max(time.time() - created, 0.0)
        except (Gone, OSError, IndexError, ValueError):
            self._last = time.monotonic()
        self._disk_entries = 0
        self._sent = time.monotonic()
        self._disk = 0.0
        self._samples = 0
        self._fresh: dict[str, Any] | None = None

    @staticmethod
    def _net() -> tuple[int, int]:
        """Bytes received and sent by every interface of this network namespace (psutil.net_io_counters)."""
        try:
            rx = tx = 0
            with open("/proc/net/dev") as f:
                for line in f.readlines()[2:]:
                    cols = line.split(":", 1)[1].split()
                    rx, tx = rx + int(cols[0]), tx + int(cols[8])
            return rx, tx
        except (OSError, IndexError, ValueError):
            return 0, 0

    def sample(self, disk: tuple[int, int] | None = None) -> None:
        """One sample: cheap unless the node has many processes (``disk``: the node directory's size, when
        measured elsewhere)."""
        now = time.monotonic()
        dt = max(now - self._last, 0.0)
        self._last = now
        cpu: dict[_Key, float] = {}
        io: dict[_Key, tuple[int, int, int, int]] = {}
        rss = 0
        me = os.getpid()
        for pid in (me, *_children(me)):
            try:
                st = _stat(pid)
                key = (pid, float(st[19]))
                cpu[key] = (int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])) / CLK_TCK
                with open(f"/proc/{pid}/statm", "rb") as f:
                    rss += int(f.read().split()[1]) * PAGE
            except (Gone, OSError, IndexError, ValueError):
                continue
            try:
                with open(f"/proc/{pid}/io", "rb") as f:
                    c = {k: v for k, _, v in (line.partition(b": ") for line in f.read().splitlines())}
                io[key] = (int(c[b"syscr"]), int(c[b"syscw"]), int(c[b"read_bytes"]), int(c[b"write_bytes"]))
            except (OSError, KeyError, ValueError):  # another user's process: no I/O figures (as psutil)
                pass
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
        if disk is None and self._samples % DISK_EVERY == 0:
            disk = _dir_size(self.root)
        if disk is not None:
            self._disk, self._disk_entries = disk[0] / GIB, disk[1]
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
                disk = None
                if self._samples % DISK_EVERY == 0 and self._disk_entries > INLINE_ENTRIES:
                    disk = await asyncio.to_thread(_dir_size, self.root)  # a big directory: off the loop
                self.sample(disk)
                if self.overdue():
                    await send()
            except Exception:  # sampling must never stop the agent
                log.exception("usage sample failed")
            await asyncio.sleep(self.interval)
