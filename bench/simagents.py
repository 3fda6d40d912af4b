"""Simulated node agents: thousands of nodes from one asyncio process, speaking the real agent protocol.

A benchmark and test tool, never part of a deployment. It pairs with `batchyard server --simulated-agents`
(decision 0187), whose pools are real pools of real nodes except that no agent process is started: the
server hands each node's spec (id, token, pool, handle) to this simulator over `<data dir>/simagents.sock`
(mode 0600: run this as the server's user). Each simulated agent then does what `batchyard agent` does on
the wire (src/batchyard/agent/main.py):

- joins: `GET /batchyard/agent/v1/packages` with its node id and token headers;
- syncs: `POST /batchyard/agent/v1/sync` with its boot id, `needStartTask` until answered, the start-up report
  (`nodeErrors: []`), its mount report until answered, cumulative resource `stats` every `--stats-every`
  seconds, and otherwise long polls with `wait` = `--poll-wait` (20 s, the agent's default);
- runs work instantly: a task it is given is reported `started` and `completed` with exit code 0 in the next
  sync, and a start task likewise (so pools with start tasks, and jobs, work on simulated nodes);
- stops when the server answers 401/403/404/409 or says `stop`, or when the server stops the node.

Each agent holds one keep-alive HTTP/1.1 connection (a real agent's client keeps one too), written with
asyncio streams rather than an HTTP library so that 10,000 agents fit in one process.

    python bench/simagents.py --socket DATA_DIR/simagents.sock [--procs 2] [--poll-wait 20]

With `--procs N` the nodes are split between N processes (by a hash of the node id). `--crash NODE_ID` is
not offered: to test respawns, send {"op": "exited", "nodeId", "handle"} on the socket yourself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import signal
import sys
import time
import zlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("simagents")

SYNC_PATH = "/batchyard/agent/v1/sync"
PACKAGES_PATH = "/batchyard/agent/v1/packages"
GIB = float(1 << 30)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Http:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, bytes]:
        if self.w is None:
            self.r, self.w = await asyncio.open_connection(self.host, self.port)
        assert self.r is not None
        head = [f"{method} {path} HTTP/1.1", f"host: {self.host}:{self.port}", f"content-length: {len(body)}"]
        if body:
            head.append("content-type: application/json")
        head += [f"{k}: {v}" for k, v in headers.items()]
        try:
            self.w.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            status_line = await self.r.readline()
            if not status_line:
                raise ConnectionError("closed by the server")
            status = int(status_line.split()[1])
            length, chunked, close = 0, False, False
            while True:
                line = await self.r.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding" and "chunked" in value:
                    chunked = True
                elif name == "connection" and value == "close":
                    close = True
            if chunked:
                parts = []
                while True:
                    size = int((await self.r.readline()).strip() or b"0", 16)
                    if size == 0:
                        await self.r.readline()
                        break
                    parts.append(await self.r.readexactly(size))
                    await self.r.readline()
                data = b"".join(parts)
            else:
                data = await self.r.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.close()
            raise ConnectionError("connection lost") from None
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.w is not None:
            self.w.close()
        self.r = self.w = None


class Agent:
    """One simulated node agent."""

    def __init__(self, sim: Sim, node_id: str, token: str, pool_id: str, handle: int) -> None:
        self.sim = sim
        self.node_id, self.token, self.pool_id, self.handle = node_id, token, pool_id, handle
        self.headers = {"x-batchyard-node-token": token, "x-batchyard-node-id": node_id}
        self.http = Http(sim.host, sim.port)
        self.boot = secrets.token_hex(8)
        self.seq = 0
        self.events: list[dict[str, Any]] = []
        self.need_start_task = True
        self.node_errors: list[Any] | None = []  # the start-up report: joined cleanly
        self.mounts: dict[str, Any] | None = {"state": "unknown", "errors": []}
        self.started = time.monotonic()
        self.stats_at = 0.0
        self.syncs = 0

    def _event(self, **ev: Any) -> None:
        self.seq += 1
        ev["seq"] = self.seq
        self.events.append(ev)

    def _stats(self) -> dict[str, Any]:
        t = time.monotonic() - self.started
        mem = 0.015  # GiB: the lean agent's target
        return {
            "boot": self.boot,
            "seconds": t,
            "cpuSeconds": t * 0.001,
            "coreSeconds": t,
            "memGiBSeconds": mem * t,
            "memPeakGiB": mem,
            "diskGiBSeconds": 0.0,
            "diskPeakGiB": 0.0,
            "diskReadOps": 0.0,
            "diskWriteOps": 0.0,
            "diskReadBytes": 0.0,
            "diskWriteBytes": 0.0,
            "netReadBytes": 0.0,
            "netWriteBytes": 0.0,
        }

    async def run(self) -> None:
        try:
            async with self.sim.joining:  # a bounded number of agents join at once, as processes start slowly
                await self._join()
                await self._sync_once(0.0)
            backoff = 0.05
            while True:
                if await self._sync_once(self.sim.poll_wait):
                    backoff = 0.05
                    continue
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        except _Stop:
            pass
        finally:
            self.http.close()
            self.sim.agents.pop(self.node_id, None)

    async def _join(self) -> None:
        delay = 0.2
        while True:
            try:
                status, _ = await self.http.request("GET", PACKAGES_PATH, self.headers)
                if status == 200 or status in (401, 403, 404):
                    return
            except ConnectionError:
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _sync_once(self, wait: float) -> bool:
        payload: dict[str, Any] = {
            "nodeId": self.node_id,
            "pid": self.handle,
            "events": self.events,
            "running": [],
            "wait": wait,
            "boot": self.boot,
            "needStartTask": self.need_start_task,
        }
        if self.node_errors is not None:
            payload["nodeErrors"] = self.node_errors
        if self.mounts is not None:
            payload["mounts"] = self.mounts
        now = time.monotonic()
        if now - self.stats_at >= self.sim.stats_every:
            payload["stats"] = self._stats()
            self.stats_at = now
        try:
            status, data = await self.http.request(
                "POST", SYNC_PATH, self.headers, json.dumps(payload).encode()
            )
        except ConnectionError:
            self.sim.errors += 1
            return False
        self.syncs += 1
        self.sim.syncs += 1
        if status in (401, 403, 404, 409):
            raise _Stop
        if status != 200:
            self.sim.errors += 1
            return False
        self.node_errors = None
        reply = json.loads(data)
        ack = int(reply.get("ack", 0))
        self.events = [e for e in self.events if e["seq"] > ack]
        if reply.get("stop"):
            raise _Stop
        if self.mounts is not None and isinstance(reply.get("mountConfiguration"), list):
            self.mounts = None  # nothing to mount in a simulation: mounted
        if self.need_start_task and "startTask" in reply:
            self.need_start_task = False
            if isinstance(reply["startTask"], dict):
                ref, t = f"starttask:{self.boot}", _now()
                self._event(type="startTaskStarted", ref=ref, time=t, retryCount=0)
                self._event(type="startTaskCompleted", ref=ref, exitCode=0, startTime=t, endTime=_now())
        sent = {e["ref"] for e in self.events if e.get("type") == "completed"}
        for w in reply.get("run") or []:
            if w["ref"] in sent:
                continue
            t = _now()
            self._event(type="started", ref=w["ref"], time=t)
            self._event(type="completed", ref=w["ref"], exitCode=0, startTime=t, endTime=_now(), usage={})
            self.sim.tasks += 1
        return True


class _Stop(Exception):
    """The server no longer wants this agent."""


class Sim:
    def __init__(
        self, socket_path: str, poll_wait: float, stats_every: float, procs: int, index: int
    ) -> None:
        self.socket_path = socket_path
        self.poll_wait = poll_wait
        self.stats_every = stats_every
        self.procs, self.index = procs, index
        self.host, self.port = "127.0.0.1", 0
        self.agents: dict[str, tuple[int, asyncio.Task[None]]] = {}
        self.joining = asyncio.Semaphore(128)
        self.syncs = self.errors = self.tasks = 0

    def mine(self, node_id: str) -> bool:
        return zlib.crc32(node_id.encode()) % self.procs == self.index

    async def run(self) -> None:
        reader, _writer = await asyncio.open_unix_connection(self.socket_path, limit=1 << 20)
        while True:
            line = await reader.readline()
            if not line:
                log.info("the server closed the socket")
                return
            msg = json.loads(line)
            op = msg.get("op")
            if op == "hello":
                url = urlsplit(msg["server"])
                self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
            elif op == "start" and self.mine(msg["nodeId"]):
                self._stop(msg["nodeId"])  # a node started again (respawn, reboot): a new agent process
                agent = Agent(self, msg["nodeId"], msg["token"], msg["poolId"], int(msg["handle"]))
                # agents start spread over a moment, as processes would, not in one burst of connects
                self.agents[agent.node_id] = (agent.handle, asyncio.ensure_future(agent.run()))
            elif op == "stop" and self.mine(msg["nodeId"]):
                held = self.agents.get(msg["nodeId"])
                if held is not None and held[0] == int(msg["handle"]):
                    self._stop(msg["nodeId"])

    def _stop(self, node_id: str) -> None:
        held = self.agents.pop(node_id, None)
        if held is not None:
            held[1].cancel()


async def _report(sims: Sim, every: float) -> None:
    t0, s0 = time.monotonic(), sims.syncs
    while True:
        await asyncio.sleep(every)
        t, s = time.monotonic(), sims.syncs
        cpu = os.times()
        print(
            json.dumps(
                {
                    "proc": sims.index,
                    "agents": len(sims.agents),
                    "syncs_per_s": round((s - s0) / (t - t0), 1),
                    "syncs": s,
                    "errors": sims.errors,
                    "tasks": sims.tasks,
                    "cpu_s": round(cpu.user + cpu.system, 2),
                }
            ),
            flush=True,
        )
        t0, s0 = t, s


def _child(a: argparse.Namespace, index: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    random.seed(index)

    async def main() -> None:
        sim = Sim(a.socket, a.poll_wait, a.stats_every, a.procs, index)
        reporter = asyncio.ensure_future(_report(sim, a.report_every)) if a.report_every > 0 else None
        try:
            await sim.run()
        finally:
            if reporter is not None:
                reporter.cancel()
            for _, task in list(sim.agents.values()):
                task.cancel()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/simagents.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", required=True, help="the server's <data dir>/simagents.sock")
    p.add_argument("--procs", type=int, default=1, help="processes sharing the nodes (default 1)")
    p.add_argument("--poll-wait", type=float, default=20.0, help="long-poll wait, as the agent's --poll-wait")
    p.add_argument("--stats-every", type=float, default=20.0, help="seconds between resource reports")
    p.add_argument("--report-every", type=float, default=0.0, help="print counters every N s (0: never)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s simagents %(message)s")
    if a.procs <= 1:
        _child(a, 0)
        return 0
    kids = []
    for i in range(a.procs):
        pid = os.fork()
        if pid == 0:
            _child(a, i)
            os._exit(0)
        kids.append(pid)

    def forward(sig: int, _frame: Any) -> None:
        for k in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(k, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for k in kids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(k, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
