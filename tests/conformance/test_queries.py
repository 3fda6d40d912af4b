"""Bulk adds, task queries, task counts and conditional requests through the official azure-batch 15.1.0 SDK.

rest_api.md §1.9 (addtaskcollection: at most 100 tasks, else RequestBodyTooLarge; the `create_tasks` helper
chunks by 100), §1.12 ($filter), §1.7 (If-Match: a stale ETag on a write is 412 ConditionNotMet, which the
SDK raises as ResourceModifiedError).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError

from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state, wait_tasks_done
from tests.support.semantics import error_code, expect_error, new_job, task, wait_tasks_completed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pool(client: BatchClient) -> Iterator[str]:
    """One node with three slots."""
    pool_id = f"q-{uuid.uuid4().hex[:8]}"
    create_pool(client, pool_id, nodes=1, slots=3)
    wait_idle_nodes(client, pool_id, 1)
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


@pytest.fixture(scope="module")
def empty_pool(client: BatchClient) -> Iterator[str]:
    """A pool without nodes: its jobs' tasks stay active, which is all the bulk tests need."""
    pool_id = f"q0-{uuid.uuid4().hex[:8]}"
    create_pool(client, pool_id, nodes=0)
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


# --- bulk --------------------------------------------------------------------------------------------------


def test_collection_of_101_tasks_is_rejected_whole(client: BatchClient, empty_pool: str, uid: str) -> None:
    job_id = f"c101-{uid}"
    new_job(client, job_id, empty_pool)
    group = m.BatchTaskGroup(task_values=[task(f"t{i}", "exit 0") for i in range(101)])
    expect_error(lambda: client.create_task_collection(job_id, group), 413, "RequestBodyTooLarge")
    assert list(client.list_tasks(job_id)) == []
    assert client.get_job_task_counts(job_id).task_counts.active == 0
    # exactly 100 is fine
    res = client.create_task_collection(job_id, m.BatchTaskGroup(task_values=group.task_values[:100]))
    assert len(res.result_values) == 100
    assert {r.status.lower() for r in res.result_values} == {"success"}


@pytest.mark.parametrize("concurrency", [None, 4])
def test_create_tasks_helper_adds_hundreds(
    client: BatchClient, empty_pool: str, uid: str, concurrency: int | None
) -> None:
    job_id = f"bulk-{concurrency}-{uid}"
    new_job(client, job_id, empty_pool)
    n = 300 if concurrency is None else 257
    res = client.create_tasks(
        job_id, [task(f"task-{i:04d}", "exit 0") for i in range(n)], max_concurrency=concurrency
    )
    assert len(res.result_values) == n
    assert {r.status.lower() for r in res.result_values} == {"success"}
    assert sorted(r.task_id for r in res.result_values) == [f"task-{i:04d}" for i in range(n)]
    listed = [t.id for t in client.list_tasks(job_id, max_results=120)]  # several pages
    assert sorted(listed) == [f"task-{i:04d}" for i in range(n)]
    counts = client.get_job_task_counts(job_id)
    assert counts.task_counts.active == n and counts.task_slot_counts.active == n
    client.begin_delete_job(job_id, polling_interval=0.2).result()


# --- filters and select ------------------------------------------------------------------------------------


def test_filters_and_select(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"flt-{uid}"
    new_job(client, job_id, pool)
    client.create_task_collection(
        job_id,
        m.BatchTaskGroup(task_values=[task("x1", "exit 0"), task("x2", "exit 3"), task("y1", "exit 0")]),
    )
    wait_tasks_done(client, job_id, 3)
    client.create_task(job_id, task("x3", "sleep 30"))
    wait_task_state(client, job_id, "x3", "running")

    def ids(flt: str) -> list[str]:
        return sorted(t.id for t in client.list_tasks(job_id, filter=flt))

    assert ids("state eq 'completed'") == ["x1", "x2", "y1"]
    assert ids("state eq 'running'") == ["x3"]
    assert ids("executionInfo/exitCode ne 0") == ["x2"]
    assert ids("startswith(id,'x')") == ["x1", "x2", "x3"]
    assert ids("startswith(id,'x') and state eq 'completed'") == ["x1", "x2"]
    assert ids("executionInfo/result eq 'failure' or id eq 'y1'") == ["x2", "y1"]

    selected = list(client.list_tasks(job_id, filter="state eq 'completed'", select=["id", "state"]))
    assert sorted(t.id for t in selected) == ["x1", "x2", "y1"]
    for t in selected:
        assert t.state == "completed"
        assert t.command_line is None and t.execution_info is None and t.url is None and t.etag is None
    one = client.get_task(job_id, "x2", select=["id", "executionInfo"])
    assert one.id == "x2" and one.execution_info.exit_code == 3 and one.command_line is None

    with pytest.raises(HttpResponseError) as bad:
        list(client.list_tasks(job_id, filter="commandLine eq 'exit 0'"))
    assert bad.value.status_code == 400
    assert error_code(bad.value) == "InvalidQueryParameterValue"
    client.terminate_task(job_id, "x3")


# --- task counts -------------------------------------------------------------------------------------------


def test_task_and_slot_counts_are_exact(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"cnt-{uid}"
    new_job(client, job_id, pool)
    client.create_task_collection(
        job_id,
        m.BatchTaskGroup(
            task_values=[task("s1", "exit 0"), task("s2", "exit 0"), task("f1", "exit 1", required_slots=2)]
        ),
    )
    wait_tasks_completed(client, job_id, ["s1", "s2", "f1"])
    client.create_task(job_id, task("r1", "sleep 30", required_slots=3))  # fills the node's three slots
    wait_task_state(client, job_id, "r1", "running")
    client.create_task(job_id, task("a1", "exit 0"))  # no free slot: stays active
    c = client.get_job_task_counts(job_id)
    tc, sc = c.task_counts, c.task_slot_counts
    assert (tc.active, tc.running, tc.completed, tc.succeeded, tc.failed) == (1, 1, 3, 2, 1)
    assert (sc.active, sc.running, sc.completed, sc.succeeded, sc.failed) == (1, 3, 4, 2, 2)

    client.terminate_task(job_id, "r1")
    wait_tasks_completed(client, job_id, ["a1"])
    c = client.get_job_task_counts(job_id)
    tc, sc = c.task_counts, c.task_slot_counts
    assert (tc.active, tc.running, tc.completed, tc.succeeded, tc.failed) == (0, 0, 5, 3, 2)
    assert (sc.active, sc.running, sc.completed, sc.succeeded, sc.failed) == (0, 0, 8, 3, 5)


# --- conditional requests ----------------------------------------------------------------------------------


def test_if_match_on_job_update(client: BatchClient, empty_pool: str, uid: str) -> None:
    job_id = f"etag-{uid}"
    new_job(client, job_id, empty_pool)
    first = client.get_job(job_id)
    client.update_job(job_id, m.BatchJobUpdateOptions(priority=1))
    second = client.get_job(job_id)
    assert second.etag != first.etag, "every modification changes the ETag"
    assert second.last_modified >= first.last_modified

    with pytest.raises(ResourceModifiedError) as stale:
        client.update_job(
            job_id,
            m.BatchJobUpdateOptions(priority=2),
            etag=first.etag,
            match_condition=MatchConditions.IfNotModified,
        )
    assert stale.value.status_code == 412
    assert error_code(stale.value) == "ConditionNotMet"
    assert client.get_job(job_id).priority == 1, "a failed precondition changes nothing"
    assert client.get_job(job_id).etag == second.etag

    client.update_job(
        job_id,
        m.BatchJobUpdateOptions(priority=3),
        etag=second.etag,
        match_condition=MatchConditions.IfNotModified,
    )
    third = client.get_job(job_id)
    assert third.priority == 3 and third.etag not in (first.etag, second.etag)

    # other writes move the ETag too, and a stale one is refused on them as well
    client.create_task(job_id, task("t", "exit 0"))
    t = client.get_task(job_id, "t")
    client.replace_task(job_id, "t", t, etag=t.etag, match_condition=MatchConditions.IfNotModified)
    t2 = client.get_task(job_id, "t")
    assert t2.etag != t.etag
    with pytest.raises(ResourceModifiedError) as stale_task:
        client.replace_task(job_id, "t", t, etag=t.etag, match_condition=MatchConditions.IfNotModified)
    assert stale_task.value.status_code == 412
    client.begin_disable_job(
        job_id, m.BatchJobDisableOptions(disable_tasks="requeue"), polling_interval=0.2
    ).result()
    assert client.get_job(job_id).etag != third.etag
    with pytest.raises(ResourceModifiedError):
        client.begin_enable_job(
            job_id, etag=third.etag, match_condition=MatchConditions.IfNotModified, polling_interval=0.2
        ).result()
    assert client.get_job(job_id).state == "disabled"
