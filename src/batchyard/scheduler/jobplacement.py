"""Placement rules a job's own tasks add: nodes where the job's preparation task failed take none of its
tasks, an exclusive Job Manager holds every slot of its node, and a Job Manager that does not allow
low-priority nodes goes to a dedicated one only."""

from __future__ import annotations

from collections.abc import Callable

from batchyard.scheduler.placement import Candidate, NodeSlots, place
from batchyard.service import jobprep, jobtasks
from batchyard.store.sql import Row


def plan_job(
    job: Row,
    rows: dict[str, Row],
    nodes: list[NodeSlots],
    per_node: int,
    pack: bool,
    low_priority: set[str],
    affinity: Callable[[Row], str | None],
) -> list[tuple[Candidate, str]]:
    """The placement plan of one job's runnable rows (ref -> row, in order) on the pool's free slots."""
    blocked = jobprep.blocked_nodes(job)
    usable = [n for n in nodes if n.node_id not in blocked] if blocked else nodes
    plan: list[tuple[Candidate, str]] = []
    rest: list[Candidate] = []
    for ref, r in rows.items():
        c = Candidate(ref, jobtasks.run_slots(r, per_node), affinity(r))
        if jobtasks.dedicated_only(r):
            plan += place([n for n in usable if n.node_id not in low_priority], [c], pack, prefetch=True)
        else:
            rest.append(c)
    return plan + place(usable, rest, pack, prefetch=True)
