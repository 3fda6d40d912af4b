"""What every service operation needs: the store, the clock, ETags, and the hub that wakes loops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from batchyard.models import errors
from batchyard.models.clock import EtagSource, format_time, parse_time, utcnow
from batchyard.service.autoscale_state import AutoscaleState
from batchyard.store.sql import Row, SqlStore, Tx


class _NodeEvent(asyncio.Event):
    """A node's wake-up; once the server is closing it stays set, so no long poll starts waiting."""

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self._hub = hub

    def clear(self) -> None:
        if not self._hub.closing:
            super().clear()


class Hub:
    """In-process wake-ups: the scheduler, the pool manager and long-polling agents wait on these."""

    def __init__(self) -> None:
        self.scheduler = asyncio.Event()
        self.pools = asyncio.Event()
        self._nodes: dict[str, _NodeEvent] = {}
        # set when the server stops: long polls answer at once so shutdown never waits for them
        self.closing = False

    def close(self) -> None:
        self.closing = True
        for ev in self._nodes.values():
            ev.set()

    def wake_scheduler(self) -> None:
        self.scheduler.set()

    def wake_pools(self) -> None:
        self.pools.set()

    def node_event(self, node_id: str) -> asyncio.Event:
        ev = self._nodes.get(node_id)
        if ev is None:
            ev = self._nodes[node_id] = _NodeEvent(self)
        if self.closing:
            ev.set()
        return ev

    def wake_node(self, node_id: str) -> None:
        ev = self._nodes.get(node_id)
        if ev is not None:
            ev.set()

    def forget_node(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)


class EndpointPorts(Protocol):
    """Where a node's inbound rules are reachable (the server's port forwarder, decision 0132)."""

    def frontends(
        self,
        node_id: str,
        ordinal: int,
        address: str,
        rules: list[tuple[str, str, int, tuple[int, int] | None]],
    ) -> dict[str, tuple[str, int]]: ...


@dataclass
class Ctx:
    store: SqlStore
    data_dir: Path
    account: str
    hub: Hub = field(default_factory=Hub)
    assignments: Assignments = field(default_factory=lambda: Assignments())
    # node id -> monotonic time of its last sync: the heartbeat lease, kept in memory only
    last_seen: dict[str, float] = field(default_factory=dict)
    etags: EtagSource = field(default_factory=EtagSource)
    clock: Callable[[], datetime] = utcnow
    # set by the server to the scheduler's cycle: an agent that freed slots gets new work in the same reply
    place_now: Callable[[Tx, str, Row | None], tuple[set[str], bool]] | None = None
    # node id -> [tasks run, tasks succeeded] counted since the node row was last written
    node_totals: dict[str, list[int]] = field(default_factory=dict)
    # node id -> [job key, task key] of the tasks completed there since the node row was last written
    recent_tasks: dict[str, list[list[str]]] = field(default_factory=dict)
    # node id -> job key -> the Job Release work the node must start (service.jobprep)
    releases: dict[str, dict[str, dict[str, object]]] = field(default_factory=dict)
    # autoscale: the interval floor, per-pool metric samples and recent runs (service.autoscale)
    autoscale: AutoscaleState = field(default_factory=AutoscaleState)
    # ids of nodes with an operation in progress (a `_op` in their body), for the pool manager (decision 0101)
    node_ops: set[str] = field(default_factory=set)
    # the inbound NAT forwarder (set by the server); without one, endpoints are the nodes' own ports
    endpoints: EndpointPorts | None = None
    # node id -> the newest cumulative resource figures its agent reported (service.usage)
    node_stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.assignments.wake = self.hub.wake_node  # ending a gang kills instances on other nodes

    def node_root(self, node_id: str) -> Path:
        """A local node's directory (its agent's root)."""
        return self.data_dir / "nodes" / node_id

    def stamp(self) -> tuple[datetime, str, str]:
        """Now, its wire text, and a fresh ETag."""
        now = self.clock()
        return now, format_time(now), self.etags.next(now)


@dataclass(frozen=True)
class Written:
    """What a write returns for the response headers."""

    etag: str
    last_modified: str
    path: str


@dataclass(frozen=True)
class Conditions:
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: datetime | None = None
    if_unmodified_since: datetime | None = None

    def check(self, row: Row | None, write: bool) -> None:
        """Evaluate the conditional headers against the row read inside the transaction."""
        etag = row["etag"] if row else None
        if self.if_match is not None:
            wanted = self.if_match.strip()
            if row is None or (wanted != "*" and _unquote(wanted) != etag):
                raise errors.condition_not_met(write)
        if self.if_none_match is not None:
            wanted = self.if_none_match.strip()
            if row is not None and (wanted == "*" or _unquote(wanted) == etag):
                raise errors.condition_not_met(write)
        if row is None:
            return
        lm = parse_time(row["last_modified"]).replace(microsecond=0)
        if self.if_modified_since is not None and not lm > self.if_modified_since:
            raise errors.condition_not_met(write)
        if self.if_unmodified_since is not None and lm > self.if_unmodified_since:
            raise errors.condition_not_met(write)


NO_CONDITIONS = Conditions()


def _unquote(v: str) -> str:
    v = v.strip()
    if v.startswith("W/"):
        v = v[2:]
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return v[1:-1]
    return v


class Assignments:
    """Which task attempts are placed on which node: the agents' mailboxes, rebuilt from the store on start."""

    def __init__(self) -> None:
        self.by_node: dict[str, dict[str, dict[str, object]]] = {}
        self.node_of: dict[str, str] = {}
        self.slots: dict[str, int] = {}
        self.started: set[str] = (
            set()
        )  # placed tasks whose process has started (the rest are queued on the agent)
        # multi-instance tasks: task ref -> its instances' refs (service.subtasks); task refs whose gang
        # lost a node (to be requeued by whoever dropped it); how to tell a node its mailbox changed
        self.gangs: dict[str, list[str]] = {}
        self.broken: list[str] = []
        self.wake: Callable[[str], None] | None = None

    def add(self, node_id: str, ref: str, work: dict[str, object], slots: int) -> None:
        self.by_node.setdefault(node_id, {})[ref] = work
        self.node_of[ref] = node_id
        self.slots[node_id] = self.slots.get(node_id, 0) + slots

    def remove(self, ref: str) -> str | None:
        if ref in self.gangs:
            self.release_gang(ref)
        return self._remove_one(ref)

    def release_gang(self, task_ref: str) -> None:
        """Take back every instance of a multi-instance task: their agents end them."""
        for iref in self.gangs.pop(task_ref, []):
            node_id = self._remove_one(iref)
            if node_id is not None and self.wake is not None:
                self.wake(node_id)

    def _remove_one(self, ref: str) -> str | None:
        node_id = self.node_of.pop(ref, None)
        self.started.discard(ref)
        if node_id is not None:
            work = self.by_node.get(node_id, {}).pop(ref, None)
            if work is not None:
                self.slots[node_id] = self.slots.get(node_id, 0) - int(str(work.get("slots", 1)))
        return node_id

    def running_on(self, node_id: str) -> bool:
        """Whether any placed task of the node has started (queued ones do not make it 'running')."""
        return any(ref in self.started for ref in self.by_node.get(node_id, {}))

    def unstarted(self, job_key: str) -> list[str]:
        """Placed-but-not-started task refs of a job (queued on agents)."""
        prefix = job_key + "/"
        return [r for r in self.node_of if r.startswith(prefix) and r not in self.started]

    def used_slots(self, node_id: str) -> int:
        return self.slots.get(node_id, 0)

    def of_node(self, node_id: str) -> dict[str, dict[str, object]]:
        return self.by_node.get(node_id, {})

    def drop_node(self, node_id: str) -> list[str]:
        refs = list(self.by_node.pop(node_id, {}))
        for r in refs:
            self.node_of.pop(r, None)
            self.started.discard(r)
        self.slots.pop(node_id, None)
        for task, members in list(self.gangs.items()):
            if any(m in refs for m in members):
                self.broken.append(task)  # a gang that lost a node reruns as a whole
                self.release_gang(task)
        return refs


def task_ref(job_key: str, task_key: str) -> str:
    return f"{job_key}/{task_key}"
