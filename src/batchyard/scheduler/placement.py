"""Placement: which free node slot each runnable task goes to. Pure; fed snapshots, returns a plan."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class NodeSlots:
    node_id: str
    free: int
    total: int


@dataclass(frozen=True)
class Candidate:
    ref: str
    slots: int
    preferred_node: str | None = None


def place(nodes: list[NodeSlots], candidates: Iterable[Candidate], pack: bool) -> list[tuple[Candidate, str]]:
    """Assign candidates in order. A free preferred node (affinity) wins; otherwise spread favours the node
    with most free slots and pack the fullest one that still fits. A task that fits nowhere now is skipped
    (it waits for the next cycle)."""
    plan: list[tuple[Candidate, str]] = []
    for c in candidates:
        fitting = [n for n in nodes if n.free >= c.slots]
        if not fitting:
            if not any(n.free > 0 for n in nodes):
                break
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
    return plan


def free_capacity(nodes: list[NodeSlots]) -> int:
    return sum(max(0, n.free) for n in nodes)
