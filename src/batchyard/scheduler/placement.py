"""Placement: which free node slot each runnable task goes to. Pure; fed snapshots, returns a plan."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class NodeSlots:
    node_id: str
    free: int
    total: int
    reserve: int = 0  # room to queue work on the node beyond its free slots (prefetch)


@dataclass(frozen=True)
class Candidate:
    ref: str
    slots: int
    preferred_node: str | None = None


def place(
    nodes: list[NodeSlots], candidates: Iterable[Candidate], pack: bool, prefetch: bool = False
) -> list[tuple[Candidate, str]]:
    """Assign candidates in order. A free preferred node (affinity) wins; otherwise spread favours the node
    with most free slots and pack the fullest one that still fits. A task that fits nowhere now is skipped
    (it waits for the next cycle)."""
    plan: list[tuple[Candidate, str]] = []
    waiting: list[Candidate] = []
    for c in candidates:
        fitting = [n for n in nodes if n.free >= c.slots]
        if not fitting:
            waiting.append(c)
            continue
        preferred = [n for n in fitting if n.node_id == c.preferred_node]
        if preferred:
            target = preferred[0]
        elif pack:
            target = min(fitting, key=lambda n: (n.free, n.node_id))
        else:
            target = max(fitting, key=lambda n: (n.free, n.node_id))
        target.free -= c.slots
        plan.append((c, target.node_id))
    if prefetch:
        # the rest queues on the nodes whose queue is shortest, to start the moment a slot frees up
        for c in waiting:
            room = [n for n in nodes if n.reserve >= c.slots]
            if not room:
                break
            target = max(room, key=lambda n: (n.reserve, n.node_id))
            target.reserve -= c.slots
            plan.append((c, target.node_id))
    return plan


def free_capacity(nodes: list[NodeSlots], prefetch: bool = False) -> int:
    return sum(max(0, n.free) + (max(0, n.reserve) if prefetch else 0) for n in nodes)
