"""Scheduling through the official azure-batch 15.1.0 SDK against a live server with real agents.

Job priority across jobs sharing a pool, maxParallelTasks, requiredSlots larger than a node, node fill type
(pack vs spread) and affinity. Orderings are read from the tasks' own start/end times and node ids, not
from sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.batch import BatchClient
from azure.batch import models as m

from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state, wait_tasks_done
from tests.support.live import wait_for
from tests.support.semantics import intervals, max_overlap, new_job, task, wait_tasks_completed

pytestmark = pytest.mark.slow


def _pool(client: BatchClient, fill: str) -> str:
    pool_id = f"{fill}-{uuid.uuid4().hex[:8]}"
    create_pool(
        client,
        pool_id,
        nodes=2,
        slots=2,
        task_scheduling_policy=m.BatchTaskSchedulingPolicy(node_fill_type=fill),
    )
    return pool_id


@pytest.fixture(scope="module")
def fill_pools(client: BatchClient) -> Iterator[dict[str, str]]:
    """Two pools of 2 nodes x 2 slots, one packing and one spreading (created together, started in parallel)."""
    pools = {fill: _pool(client, fill) for fill in ("pack", "spread")}
    for pool_id in pools.values():
        wait_idle_nodes(client, pool_id, 2)
    yield pools
    for pool_id in pools.values():
        client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_higher_priority_job_runs_first_on_one_slot(client: BatchClient, uid: str) -> None:
    pool_id = f"prio-{uid}"
    create_pool(client, pool_id, nodes=0, slots=1)  # no node yet: both jobs queue up before anything runs
    low, high = f"prio-low-{uid}", f"prio-high-{uid}"
    new_job(client, low, pool_id, priority=-10)  # created first: creation order must not win
    new_job(client, high, pool_id, priority=100)
    client.create_task_collection(
        low, m.BatchTaskGroup(task_values=[task(f"l{i}", "exit 0") for i in range(3)])
    )
    client.create_task_collection(
        high, m.BatchTaskGroup(task_values=[task(f"h{i}", "exit 0") for i in range(3)])
    )
    assert client.get_job(high).priority == 100

    client.begin_resize_pool(
        pool_id, m.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=0.2
    ).result()
    lows = wait_tasks_done(client, low, 3)
    highs = wait_tasks_done(client, high, 3)
    assert max_overlap(intervals(lows + highs)) == 1
    last_high = max(t.execution_info.end_time for t in highs)
    first_low = min(t.execution_info.start_time for t in lows)
    assert last_high <= first_low, "every task of the priority-100 job must run before the priority -10 job"
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_max_parallel_tasks_never_exceeded(client: BatchClient, uid: str) -> None:
    pool_id, job_id = f"mpt-{uid}", f"mpt-{uid}"
    create_pool(client, pool_id, nodes=1, slots=4)
    wait_idle_nodes(client, pool_id, 1)
    new_job(client, job_id, pool_id, max_parallel_tasks=2)
    assert client.get_job(job_id).max_parallel_tasks == 2
    client.create_task_collection(
        job_id, m.BatchTaskGroup(task_values=[task(f"t{i}", "sleep 0.3") for i in range(6)])
    )
    samples: list[int] = []

    def sample() -> bool:  # the counts while the job runs: never more than two running
        c = client.get_job_task_counts(job_id).task_counts
        samples.append(c.running)
        assert c.running <= 2, f"maxParallelTasks=2 exceeded: {c}"
        return c.completed == 6

    wait_for(sample, 30, 0.02, "all six tasks to complete")
    ts = wait_tasks_done(client, job_id, 6, timeout=5)
    assert max_overlap(intervals(ts)) == 2, "two tasks at a time: not more, and not serialised to one"
    assert max(samples) >= 1
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_required_slots_above_node_slots_fails_instead_of_hanging(client: BatchClient, uid: str) -> None:
    pool_id, job_id = f"slots-{uid}", f"slots-{uid}"
    create_pool(client, pool_id, nodes=1, slots=2)
    wait_idle_nodes(client, pool_id, 1)
    new_job(client, job_id, pool_id)
    client.create_task(job_id, task("too-big", "exit 0", required_slots=3))
    client.create_task(job_id, task("fits", "exit 0", required_slots=2))
    ts = wait_tasks_completed(client, job_id, ["too-big", "fits"])
    big = ts["too-big"]
    assert big.required_slots == 3
    assert big.execution_info.result == "failure"
    assert big.execution_info.failure_info.code == "TaskSchedulingConstraintFailed"
    assert big.execution_info.failure_info.category == "usererror"
    assert ts["fits"].execution_info.result == "success"
    slots = client.get_job_task_counts(job_id).task_slot_counts
    assert (slots.completed, slots.failed, slots.succeeded) == (5, 3, 2)
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_pack_fills_one_node_and_spread_uses_both(
    client: BatchClient, fill_pools: dict[str, str], uid: str
) -> None:
    nodes_used = {}
    for fill, pool_id in fill_pools.items():
        # the service reports the fill type capitalised ("Spread", "Pack" in the recordings)
        assert client.get_pool(pool_id).task_scheduling_policy.node_fill_type.lower() == fill
        job_id = f"fill-{fill}-{uid}"
        new_job(client, job_id, pool_id)
        client.create_task_collection(
            job_id, m.BatchTaskGroup(task_values=[task("a", "sleep 0.5"), task("b", "sleep 0.5")])
        )
        ts = wait_tasks_done(client, job_id, 2)
        assert max_overlap(intervals(ts)) == 2, f"{fill}: both tasks must run at the same time"
        nodes_used[fill] = {t.node_info.node_id for t in ts}
    assert len(nodes_used["pack"]) == 1, "pack puts both tasks on one node"
    assert len(nodes_used["spread"]) == 2, "spread puts them on different nodes"


def test_affinity_prefers_the_named_node(client: BatchClient, fill_pools: dict[str, str], uid: str) -> None:
    pool_id = fill_pools["spread"]
    nodes = sorted(n.id for n in client.list_nodes(pool_id))
    job_id = f"aff-{uid}"
    new_job(client, job_id, pool_id)
    for target in nodes:  # whichever node spread would choose first, affinity overrides it
        aff = m.BatchAffinityInfo(affinity_id=f"TVM:{target}")
        client.create_task_collection(
            job_id,
            m.BatchTaskGroup(
                task_values=[task(f"{t}-{target[-6:]}", "sleep 0.3", affinity_info=aff) for t in ("a", "b")]
            ),
        )
        ts = wait_tasks_completed(client, job_id, [f"a-{target[-6:]}", f"b-{target[-6:]}"])
        assert {t.node_info.node_id for t in ts.values()} == {target}
        assert all(t.affinity_info.affinity_id == f"TVM:{target}" for t in ts.values())

    # affinity is a preference: when the preferred node is full the task runs elsewhere
    busy = nodes[0]
    hold = m.BatchAffinityInfo(affinity_id=f"TVM:{busy}")
    client.create_task_collection(
        job_id,
        m.BatchTaskGroup(task_values=[task(f"hold{i}", "sleep 30", affinity_info=hold) for i in range(2)]),
    )
    for i in range(2):
        assert wait_task_state(client, job_id, f"hold{i}", "running").node_info.node_id == busy
    client.create_task(job_id, task("elsewhere", "exit 0", affinity_info=hold))
    t = wait_tasks_completed(client, job_id, ["elsewhere"])["elsewhere"]
    assert t.node_info.node_id == nodes[1]
    for i in range(2):
        client.terminate_task(job_id, f"hold{i}")
