"""Task dependencies through the official azure-batch 15.1.0 SDK against a live server with real agents.

Azure semantics (peers-and-semantics.md §5.1-5.2): `dependsOn.taskIds` and inclusive integer `taskIdRanges`
(only integer ids fall in a range, leading zeros are insignificant); a parent satisfies its dependents when
it completes with exit code 0, a failed parent blocks them and they stay `active`; the parent's
`exitConditions.*.exitOptions.dependencyAction` overrides; a job without `usesTaskDependencies` refuses
`dependsOn` with 400 TaskDependenciesNotSpecifiedOnJob.

"Blocked" is shown without sleeping: a probe task added after the dependents (so later in the job's queue)
is run to completion; had a dependent been runnable it would have been placed first.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m

from tests.support.batch import create_pool, wait_idle_nodes
from tests.support.semantics import expect_error, new_job, task, wait_tasks_completed

pytestmark = pytest.mark.slow

SATISFY = m.ExitOptions(dependency_action="satisfy")
BLOCK = m.ExitOptions(dependency_action="block")


@pytest.fixture(scope="module")
def pool(client: BatchClient) -> Iterator[str]:
    """One node with four slots, shared by the tests of this module (each uses its own job)."""
    pool_id = f"deps-{uuid.uuid4().hex[:8]}"
    create_pool(client, pool_id, nodes=1, slots=4)
    wait_idle_nodes(client, pool_id, 1)
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def deps(
    ids: list[str] | None = None, ranges: list[tuple[int, int]] | None = None
) -> m.BatchTaskDependencies:
    return m.BatchTaskDependencies(
        task_ids=ids, task_id_ranges=[m.BatchTaskIdRange(start=s, end=e) for s, e in ranges or []] or None
    )


def assert_blocked(client: BatchClient, job_id: str, blocked: list[str]) -> None:
    """Run a probe task queued after `blocked`; once it has completed, the blocked tasks must still be
    active and never started."""
    client.create_task(job_id, task("probe", "exit 0"))
    wait_tasks_completed(client, job_id, ["probe"])
    for tid in blocked:
        t = client.get_task(job_id, tid)
        assert t.state == "active", f"{tid} should be blocked (active) but is {t.state}"
        assert t.execution_info is None or t.execution_info.start_time is None, tid
        assert t.node_info is None, tid


def test_task_ids_and_ranges_with_leading_zeros(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"deps-ids-{uid}"
    new_job(client, job_id, pool, uses_task_dependencies=True)
    assert client.get_job(job_id).uses_task_dependencies is True
    parents = [
        task("1", "sleep 0.3"),
        task("2", "exit 0"),
        task("003", "exit 0"),  # counts as 3 in a range
        task("3x", "exit 1"),  # not an integer id: outside every range, so its failure blocks nothing
    ]
    dependents = [
        task("all", "exit 0", depends_on=deps(ranges=[(1, 3)])),
        task("named", "exit 0", depends_on=deps(ids=["2", "003"])),
        task("mixed", "exit 0", depends_on=deps(ids=["all"], ranges=[(2, 2)])),
    ]
    # dependents first: a dependency may name a task that does not exist yet
    client.create_task_collection(job_id, m.BatchTaskGroup(task_values=dependents))
    client.create_task_collection(job_id, m.BatchTaskGroup(task_values=parents))
    ts = wait_tasks_completed(client, job_id, ["1", "2", "003", "3x", "all", "named", "mixed"])

    assert ts["3x"].execution_info.result == "failure"
    for tid in ("all", "named", "mixed"):
        assert ts[tid].execution_info.result == "success", tid
    end = {tid: ts[tid].execution_info.end_time for tid in ts}
    start = {tid: ts[tid].execution_info.start_time for tid in ts}
    assert start["all"] >= max(end["1"], end["2"], end["003"])
    assert start["named"] >= max(end["2"], end["003"])
    assert start["mixed"] >= end["all"]

    got = client.get_task(job_id, "mixed").depends_on
    assert got.task_ids == ["all"]
    assert [(r.start, r.end) for r in got.task_id_ranges] == [(2, 2)]


def test_failed_parent_blocks_dependents(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"deps-block-{uid}"
    new_job(client, job_id, pool, uses_task_dependencies=True)
    client.create_task_collection(
        job_id,
        m.BatchTaskGroup(
            task_values=[
                task("p", "exit 1"),
                task("10", "exit 0"),
                task("11", "exit 2"),
                task("after-p", "exit 0", depends_on=deps(ids=["p"])),
                task("after-range", "exit 0", depends_on=deps(ranges=[(10, 11)])),
                task("after-10", "exit 0", depends_on=deps(ranges=[(10, 10)])),
            ]
        ),
    )
    ts = wait_tasks_completed(client, job_id, ["p", "10", "11", "after-10"])
    assert ts["p"].execution_info.failure_info.code == "FailureExitCode"
    assert ts["after-10"].execution_info.result == "success"
    assert_blocked(client, job_id, ["after-p", "after-range"])
    counts = client.get_job_task_counts(job_id).task_counts
    assert (counts.active, counts.running, counts.completed, counts.failed) == (2, 0, 5, 2)


def test_exit_conditions_override_dependency_action(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"deps-exit-{uid}"
    new_job(client, job_id, pool, uses_task_dependencies=True)
    ec = m.ExitConditions
    parents = {
        # a listed nonzero code that satisfies
        "a": task(
            "a", "exit 3", exit_conditions=ec(exit_codes=[m.ExitCodeMapping(code=3, exit_options=SATISFY)])
        ),
        # exit code 0 listed explicitly as block
        "b": task(
            "b", "exit 0", exit_conditions=ec(exit_codes=[m.ExitCodeMapping(code=0, exit_options=BLOCK)])
        ),
        # a code inside a satisfying range
        "c": task(
            "c",
            "exit 5",
            exit_conditions=ec(
                exit_code_ranges=[m.ExitCodeRangeMapping(start=4, end=6, exit_options=SATISFY)]
            ),
        ),
        # the program cannot be started: preProcessingError decides
        "d": m.BatchTaskCreateOptions(
            id="d", command_line="/no/such/program", exit_conditions=ec(pre_processing_error=SATISFY)
        ),
        # an unlisted nonzero code falls to default
        "e": task("e", "exit 9", exit_conditions=ec(default=SATISFY)),
        # a listed code wins over default
        "f": task(
            "f",
            "exit 9",
            exit_conditions=ec(exit_codes=[m.ExitCodeMapping(code=9, exit_options=BLOCK)], default=SATISFY),
        ),
        # default also covers a pre-processing error when preProcessingError is absent
        "g": m.BatchTaskCreateOptions(
            id="g", command_line="/no/such/program", exit_conditions=ec(default=SATISFY)
        ),
        # default does not apply to exit code 0: it still satisfies
        "h": task("h", "exit 0", exit_conditions=ec(default=BLOCK)),
    }
    children = [task(f"c-{p}", "exit 0", depends_on=deps(ids=[p])) for p in parents]
    client.create_task_collection(job_id, m.BatchTaskGroup(task_values=list(parents.values()) + children))

    runs = ["c-a", "c-c", "c-d", "c-e", "c-g", "c-h"]
    ts = wait_tasks_completed(client, job_id, list(parents) + runs)
    assert ts["d"].execution_info.failure_info.code == "CommandProgramNotFound"
    assert ts["a"].execution_info.result == "failure"  # satisfying dependents does not make it a success
    for tid in runs:
        assert ts[tid].execution_info.result == "success", tid
    assert_blocked(client, job_id, ["c-b", "c-f"])


def test_dependencies_need_uses_task_dependencies(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"deps-off-{uid}"
    new_job(client, job_id, pool)
    assert client.get_job(job_id).uses_task_dependencies is False
    expect_error(
        lambda: client.create_task(job_id, task("c", "exit 0", depends_on=deps(ids=["p"]))),
        400,
        "TaskDependenciesNotSpecifiedOnJob",
    )
    res = client.create_task_collection(
        job_id,
        m.BatchTaskGroup(
            task_values=[task("ok", "exit 0"), task("c", "exit 0", depends_on=deps(ranges=[(1, 2)]))]
        ),
    )
    by_id = {r.task_id: r for r in res.result_values}
    assert by_id["ok"].status.lower() == "success"
    assert by_id["c"].status.lower() == "clienterror"
    assert by_id["c"].error.code == "TaskDependenciesNotSpecifiedOnJob"
    assert [t.id for t in client.list_tasks(job_id)] == ["ok"]


def test_first_of_equal_integer_ids_satisfies_the_range(client: BatchClient, pool: str, uid: str) -> None:
    """'4' and '04' both count as 4 in a range: the first of them to complete satisfies it."""
    job_id = f"deps-zeros-{uid}"
    new_job(client, job_id, pool, uses_task_dependencies=True)
    client.create_task_collection(
        job_id,
        m.BatchTaskGroup(
            task_values=[
                task("4", "sleep 30"),
                task("04", "exit 0"),
                task("child", "exit 0", depends_on=deps(ranges=[(3, 4)])),
                task("3", "exit 0"),
            ]
        ),
    )
    ts = wait_tasks_completed(client, job_id, ["04", "3", "child"])
    assert ts["child"].execution_info.result == "success"
    assert client.get_task(job_id, "4").state == "running"
    client.terminate_task(job_id, "4")


def test_reactivated_parent_that_succeeds_releases_blocked_dependent(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"deps-react-{uid}"
    go = tmp_path / "go"
    new_job(client, job_id, pool, uses_task_dependencies=True)
    client.create_task_collection(
        job_id,
        m.BatchTaskGroup(
            task_values=[
                # fails until the test creates `go`
                task("p", f"test -e {go}"),
                task("c", "exit 0", depends_on=deps(ids=["p"])),
            ]
        ),
    )
    assert wait_tasks_completed(client, job_id, ["p"])["p"].execution_info.result == "failure"
    assert_blocked(client, job_id, ["c"])
    go.touch()
    client.reactivate_task(job_id, "p")
    ts = wait_tasks_completed(client, job_id, ["p", "c"])
    assert ts["p"].execution_info.result == "success"
    assert ts["c"].execution_info.result == "success"
    assert ts["c"].execution_info.start_time >= ts["p"].execution_info.end_time
