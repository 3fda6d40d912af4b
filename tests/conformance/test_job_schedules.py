"""Job schedules through the official SDK (azure-batch 15.1.0) against a live server whose clock the tests drive.

The server runs with `--fake-clock-file` (decision 0081): moving time forward is writing a number of seconds into
a file, so recurrences of an hour are tested in a second. Rules: reference semantics/job-schedules.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models import _models as private_models
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from tests.support.batch import create_pool
from tests.support.live import FileClock as Clock
from tests.support.live import LiveServer, wait_for

POOL = "sched-pool"  # no nodes: tasks added to schedule jobs stay active, which keeps those jobs active


@pytest.fixture(scope="module")
def clock(tmp_path_factory: pytest.TempPathFactory) -> Clock:
    return Clock(tmp_path_factory.mktemp("clock") / "offset")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, clock: Clock) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path_factory.mktemp("srv"), extra_args=["--fake-clock-file", str(clock.path)]).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def c(srv: LiveServer) -> BatchClient:
    client = BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))
    create_pool(client, POOL, nodes=0)
    return client


def sid() -> str:
    return "sched-" + uuid.uuid4().hex[:8]


def spec(**kw: object) -> m.BatchJobSpecification:
    return m.BatchJobSpecification(pool_info=m.BatchPoolInfo(pool_id=POOL), **kw)  # type: ignore[arg-type]


def create(c: BatchClient, schedule_id: str, **schedule: object) -> m.BatchJobSchedule:
    c.create_job_schedule(
        m.BatchJobScheduleCreateOptions(
            id=schedule_id,
            schedule=m.BatchJobScheduleConfiguration(**schedule),  # type: ignore[arg-type]
            job_specification=spec(),
        )
    )
    return c.get_job_schedule(schedule_id)


def job_ids(c: BatchClient, schedule_id: str) -> list[str]:
    return sorted(j.id for j in c.list_jobs_from_schedule(schedule_id) if j.id)


def keep_busy(c: BatchClient, job_id: str) -> None:
    """A task that cannot run (the pool has no node) keeps the job active."""
    c.create_task(job_id, m.BatchTaskCreateOptions(id="t", command_line="/bin/true"))


def end_job(c: BatchClient, job_id: str) -> None:
    """azure-batch 15.1.0 cannot terminate a job without a reason (see test_job_lifecycle.terminate)."""
    options = private_models.BatchJobTerminateOptions(termination_reason="done")
    c.begin_terminate_job(job_id, options, polling_interval=0.2).result()  # type: ignore[arg-type]


def delete(c: BatchClient, schedule_id: str | None) -> None:
    assert schedule_id
    c.begin_delete_job_schedule(schedule_id, polling_interval=0.2).result()


def wait_state(c: BatchClient, schedule_id: str, state: str) -> m.BatchJobSchedule:
    return wait_for(
        lambda: s if (s := c.get_job_schedule(schedule_id)).state == state else None,
        15,
        0.05,
        f"schedule {schedule_id} to be {state}",
    )


def wait_jobs(c: BatchClient, schedule_id: str, ids: list[str]) -> None:
    wait_for(lambda: job_ids(c, schedule_id) == ids or None, 15, 0.05, f"jobs {ids} of {schedule_id}")


def test_recorded_flow(c: BatchClient) -> None:
    """The recording's sequence: create, list, get, exists, list jobs, disable, enable, PUT, PATCH, terminate,
    delete, with the bodies the service returns."""
    s_id = sid()
    c.create_job_schedule(
        m.BatchJobScheduleCreateOptions(
            id=s_id,
            schedule=m.BatchJobScheduleConfiguration(start_window="PT01H00M00S", recurrence_interval="P1D"),
            job_specification=spec(constraints=m.BatchJobConstraints(max_task_retry_count=2)),
        )
    )
    assert s_id in [s.id for s in c.list_job_schedules()]
    s = c.get_job_schedule(s_id)
    assert s.state == "active" and s.previous_state is None
    assert s.schedule is not None
    assert (s.schedule.start_window, s.schedule.recurrence_interval) == (
        timedelta(hours=1),
        timedelta(days=1),
    )
    assert s.job_specification.priority == 0 and s.job_specification.max_parallel_tasks == -1
    assert s.job_specification.constraints is not None
    assert s.job_specification.constraints.max_wall_clock_time == timedelta(
        days=10675199, seconds=10085, microseconds=477581
    )
    assert s.execution_info is not None and s.execution_info.recent_job is not None
    assert s.execution_info.next_run_time == s.creation_time + timedelta(days=1)
    assert s.execution_info.recent_job.id == f"{s_id}:job-1"
    assert str(s.execution_info.recent_job.url).endswith(f"/jobs/{s_id}:job-1")
    assert c.job_schedule_exists(s_id) is True
    # the first job exists right away, as an ordinary job that carries the specification
    job = c.get_job(f"{s_id}:job-1")
    assert job.state == "active" and job.constraints is not None and job.constraints.max_task_retry_count == 2
    assert job_ids(c, s_id) == [f"{s_id}:job-1"]

    c.disable_job_schedule(s_id)
    assert c.get_job_schedule(s_id).state == "disabled"
    c.enable_job_schedule(s_id)
    s = c.get_job_schedule(s_id)
    assert s.state == "active" and s.previous_state == "disabled"
    s.schedule = m.BatchJobScheduleConfiguration(recurrence_interval=timedelta(hours=10))
    c.replace_job_schedule(s_id, s)
    c.update_job_schedule(
        s_id,
        m.BatchJobScheduleUpdateOptions(
            schedule=m.BatchJobScheduleConfiguration(recurrence_interval=timedelta(hours=5))
        ),
    )
    s = c.get_job_schedule(s_id)
    assert s.schedule is not None and s.schedule.recurrence_interval == timedelta(hours=5)
    assert s.schedule.start_window is None  # the schedule element is replaced as a whole
    assert s.execution_info is not None and s.execution_info.next_run_time is not None
    # the next run is anchored on job-1's run: creation + 5 h
    assert s.execution_info.next_run_time == s.creation_time + timedelta(hours=5)

    c.begin_terminate_job_schedule(s_id, polling_interval=0.2).result()
    s = c.get_job_schedule(s_id)
    assert s.state == "completed" and s.execution_info is not None and s.execution_info.end_time is not None
    assert s.execution_info.next_run_time is None
    job = c.get_job(f"{s_id}:job-1")
    assert job.state == "completed"
    assert job.execution_info is not None and job.execution_info.termination_reason == "TerminateJobSchedule"
    delete(c, s_id)
    with pytest.raises(ResourceNotFoundError) as ei:
        c.get_job_schedule(s_id)
    assert ei.value.error is not None and ei.value.error.code == "JobScheduleNotFound"
    with pytest.raises(ResourceNotFoundError):
        c.get_job(f"{s_id}:job-1")  # the schedule's jobs went with it


def test_exists_of_a_missing_schedule_is_a_bare_404(c: BatchClient) -> None:
    # azure-batch 15.1.0 raises on the 404 (its exception policy runs before the operation's 200/404 check)
    with pytest.raises(ResourceNotFoundError) as ei:
        c.job_schedule_exists("no-such-schedule")
    assert ei.value.status_code == 404


def test_recurrence_waits_for_the_active_job_and_skips_after_the_start_window(
    c: BatchClient, clock: Clock
) -> None:
    s_id = sid()
    s = create(c, s_id, recurrence_interval=timedelta(hours=1), start_window=timedelta(minutes=10))
    assert s.execution_info is not None
    first_due = s.execution_info.next_run_time
    assert first_due is not None
    keep_busy(c, f"{s_id}:job-1")
    clock.advance(timedelta(hours=1, minutes=1))
    # due, but job-1 is still active: no job-2, the run waits (nextRunTime stays on it)
    wait_for(lambda: c.get_job_schedule(s_id).execution_info.next_run_time == first_due, 5, 0.05)  # type: ignore[union-attr]
    clock.advance(timedelta(minutes=10))
    # past its start window: that run is lost, the next is one interval later
    wait_for(
        lambda: c.get_job_schedule(s_id).execution_info.next_run_time == first_due + timedelta(hours=1),  # type: ignore[union-attr]
        5,
        0.05,
        "the waiting run to be skipped",
    )
    assert job_ids(c, s_id) == [f"{s_id}:job-1"]
    end_job(c, f"{s_id}:job-1")
    clock.advance(timedelta(minutes=50))  # 1 minute into the next run's window
    wait_jobs(c, s_id, [f"{s_id}:job-1", f"{s_id}:job-2"])
    s = c.get_job_schedule(s_id)
    assert s.execution_info is not None and s.execution_info.recent_job is not None
    assert s.execution_info.recent_job.id == f"{s_id}:job-2"
    delete(c, s_id)


def test_waiting_run_starts_when_the_previous_job_finishes(c: BatchClient, clock: Clock) -> None:
    s_id = sid()
    create(c, s_id, recurrence_interval=timedelta(hours=1))  # default start window: infinite
    keep_busy(c, f"{s_id}:job-1")
    clock.advance(timedelta(hours=3))
    wait_for(lambda: c.get_job_schedule(s_id).execution_info.next_run_time is not None, 5, 0.05)  # type: ignore[union-attr]
    assert job_ids(c, s_id) == [f"{s_id}:job-1"]
    end_job(c, f"{s_id}:job-1")
    # one job for the waiting run, not one per missed interval
    wait_jobs(c, s_id, [f"{s_id}:job-1", f"{s_id}:job-2"])
    s = c.get_job_schedule(s_id)
    assert s.execution_info is not None and s.execution_info.next_run_time is not None
    assert s.execution_info.next_run_time > c.get_job(f"{s_id}:job-2").creation_time
    delete(c, s_id)


def test_one_shot_completes_when_its_job_finishes(c: BatchClient) -> None:
    s_id = sid()
    s = create(c, s_id)
    assert s.execution_info is not None and s.execution_info.next_run_time is None
    keep_busy(c, f"{s_id}:job-1")
    assert c.get_job_schedule(s_id).state == "active"
    end_job(c, f"{s_id}:job-1")
    s = wait_state(c, s_id, "completed")
    assert s.execution_info is not None and s.execution_info.end_time is not None
    assert job_ids(c, s_id) == [f"{s_id}:job-1"]
    with pytest.raises(ResourceExistsError) as ei:
        c.disable_job_schedule(s_id)
    assert ei.value.error is not None and ei.value.error.code == "JobScheduleCompleted"
    delete(c, s_id)


def test_do_not_run_until_and_after(c: BatchClient, clock: Clock) -> None:
    base = create(c, sid()).creation_time  # the server's (fake) time as the base
    s_id = sid()
    create(
        c,
        s_id,
        do_not_run_until=base + timedelta(hours=2),
        do_not_run_after=base + timedelta(hours=2, minutes=30),
        recurrence_interval=timedelta(minutes=20),
    )
    assert job_ids(c, s_id) == []
    s = c.get_job_schedule(s_id)
    assert s.execution_info is not None and s.execution_info.next_run_time == base + timedelta(hours=2)
    clock.advance(timedelta(hours=2, minutes=1))
    wait_jobs(c, s_id, [f"{s_id}:job-1"])
    end_job(c, f"{s_id}:job-1")
    clock.advance(timedelta(minutes=20))
    wait_jobs(c, s_id, [f"{s_id}:job-1", f"{s_id}:job-2"])
    clock.advance(timedelta(minutes=20))  # past doNotRunAfter; job-2 (no tasks, noaction) is still active
    wait_for(lambda: c.get_job_schedule(s_id).execution_info.next_run_time is None, 5, 0.05)  # type: ignore[union-attr]
    assert c.get_job_schedule(s_id).state == "active"
    end_job(c, f"{s_id}:job-2")
    s = wait_state(c, s_id, "completed")
    assert job_ids(c, s_id) == [f"{s_id}:job-1", f"{s_id}:job-2"]
    delete(c, s_id)


def test_disabled_schedule_creates_no_job_until_enabled(c: BatchClient, clock: Clock) -> None:
    s_id = sid()
    create(c, s_id, recurrence_interval=timedelta(hours=1))
    end_job(c, f"{s_id}:job-1")
    c.disable_job_schedule(s_id)
    c.disable_job_schedule(s_id)  # again: still 204
    clock.advance(timedelta(hours=1, minutes=5))
    wait_for(lambda: c.get_job(f"{s_id}:job-1").state == "completed", 5, 0.05)
    s = c.get_job_schedule(s_id)
    assert s.state == "disabled" and job_ids(c, s_id) == [f"{s_id}:job-1"]
    c.enable_job_schedule(s_id)
    wait_jobs(c, s_id, [f"{s_id}:job-1", f"{s_id}:job-2"])
    delete(c, s_id)


def test_updates_affect_only_later_jobs_and_keep_the_etag_when_jobs_are_created(
    c: BatchClient, clock: Clock
) -> None:
    s_id = sid()
    s = create(c, s_id, recurrence_interval=timedelta(hours=1))
    c.update_job_schedule(
        s_id,
        m.BatchJobScheduleUpdateOptions(
            job_specification=spec(priority=7, display_name="later"),
            metadata=[m.BatchMetadataItem(name="k", value="v")],
        ),
    )
    after_update = c.get_job_schedule(s_id)
    assert after_update.etag != s.etag and after_update.job_specification.priority == 7
    assert after_update.schedule is not None and after_update.schedule.recurrence_interval == timedelta(
        hours=1
    )
    assert [(i.name, i.value) for i in after_update.metadata or []] == [("k", "v")]
    assert c.get_job(f"{s_id}:job-1").priority == 0  # the running job keeps the old specification
    end_job(c, f"{s_id}:job-1")
    clock.advance(timedelta(hours=1, minutes=1))
    wait_jobs(c, s_id, [f"{s_id}:job-1", f"{s_id}:job-2"])
    job2 = c.get_job(f"{s_id}:job-2")
    assert job2.priority == 7 and job2.display_name == "later"
    # creating a job is not a change of the schedule: same ETag
    assert c.get_job_schedule(s_id).etag == after_update.etag
    delete(c, s_id)


def test_terminate_ends_the_active_job_and_delete_removes_jobs_and_tasks(c: BatchClient) -> None:
    s_id = sid()
    create(c, s_id, recurrence_interval=timedelta(hours=1))
    keep_busy(c, f"{s_id}:job-1")
    c.begin_terminate_job_schedule(s_id, polling_interval=0.2).result()
    s = c.get_job_schedule(s_id)
    assert s.state == "completed" and s.previous_state == "terminating"
    job = c.get_job(f"{s_id}:job-1")
    assert job.state == "completed" and job.execution_info is not None
    assert job.execution_info.termination_reason == "TerminateJobSchedule"
    with pytest.raises(ResourceExistsError) as ei:
        c.update_job_schedule(s_id, m.BatchJobScheduleUpdateOptions(metadata=[]))
    assert ei.value.error is not None and ei.value.error.code == "JobScheduleCompleted"

    s2 = sid()
    create(c, s2)
    keep_busy(c, f"{s2}:job-1")
    delete(c, s2)
    with pytest.raises(ResourceNotFoundError):
        c.get_job(f"{s2}:job-1")
    assert not [j for j in c.list_jobs() if j.id and j.id.startswith(s2)]
    delete(c, s_id)


def test_jobs_and_schedules_share_one_id_namespace(c: BatchClient) -> None:
    s_id = sid()
    create(c, s_id)
    with pytest.raises(ResourceExistsError) as ei:
        c.create_job(m.BatchJobCreateOptions(id=s_id.upper(), pool_info=m.BatchPoolInfo(pool_id=POOL)))
    assert ei.value.error is not None and ei.value.error.code == "JobScheduleWithSameIdExists"
    with pytest.raises(ResourceExistsError) as ei:
        create(c, s_id)
    assert ei.value.error is not None and ei.value.error.code == "JobScheduleExists"
    j_id = sid()
    c.create_job(m.BatchJobCreateOptions(id=j_id, pool_info=m.BatchPoolInfo(pool_id=POOL)))
    with pytest.raises(ResourceExistsError) as ei:
        create(c, j_id)
    assert ei.value.error is not None and ei.value.error.code == "JobWithSameIdExists"
    c.begin_delete_job(j_id, polling_interval=0.2).result()
    delete(c, s_id)


def test_lists_filter_select_expand_and_page(c: BatchClient) -> None:
    ids = sorted(sid() for _ in range(3))
    for i in ids:
        create(c, i, recurrence_interval=timedelta(hours=1))
    c.disable_job_schedule(ids[0])
    got = [s.id for s in c.list_job_schedules(filter="state eq 'disabled'") if s.id in ids]
    assert got == [ids[0]]
    got = [s.id for s in c.list_job_schedules(filter=f"startswith(id, '{ids[1]}')")]
    assert got == [ids[1]]
    paged = [s.id for s in c.list_job_schedules(max_results=1) if s.id in ids]
    assert paged == ids
    sel = [s for s in c.list_job_schedules(select=["id", "state"]) if s.id in ids]
    assert all(s.schedule is None and s.state for s in sel)
    s = c.get_job_schedule(ids[1], expand=["stats"])
    assert s.job_schedule_statistics is not None
    assert s.job_schedule_statistics.succeeded_tasks_count == 0
    assert str(s.job_schedule_statistics.url).endswith(f"/jobschedules/{ids[1]}")
    jobs = list(c.list_jobs_from_schedule(ids[1], filter="state eq 'active'", select=["id"]))
    assert [j.id for j in jobs] == [f"{ids[1]}:job-1"]
    with pytest.raises(HttpResponseError) as ei:
        list(c.list_jobs_from_schedule(ids[1], filter="priority eq 1"))
    assert ei.value.status_code == 400
    with pytest.raises(ResourceNotFoundError) as ei:
        list(c.list_jobs_from_schedule("no-such-schedule"))
    assert ei.value.error is not None and ei.value.error.code == "JobScheduleNotFound"
    for i in ids:
        delete(c, i)


def test_refused_job_specification_properties_are_501(c: BatchClient) -> None:
    s_id = sid()
    with pytest.raises(HttpResponseError) as ei:
        c.create_job_schedule(
            m.BatchJobScheduleCreateOptions(
                id=s_id,
                schedule=m.BatchJobScheduleConfiguration(),
                job_specification=spec(
                    job_manager_task=m.BatchJobManagerTask(
                        id="jm",
                        command_line="/bin/true",
                        container_settings=m.BatchTaskContainerSettings(image_name="busybox"),
                    )
                ),
            )
        )
    assert ei.value.status_code == 501
    with pytest.raises(ResourceNotFoundError):
        c.get_job_schedule(s_id)


def test_stats_sum_the_tasks_of_the_schedules_jobs(c: BatchClient) -> None:
    """$expand=stats aggregates the schedule's jobs: a task that really ran on a node is counted."""
    from tests.support.batch import wait_idle_nodes, wait_tasks_done

    pool = "sched-stats-" + uuid.uuid4().hex[:6]
    create_pool(c, pool, nodes=1)
    wait_idle_nodes(c, pool, 1)
    s_id = sid()
    c.create_job_schedule(
        m.BatchJobScheduleCreateOptions(
            id=s_id,
            schedule=m.BatchJobScheduleConfiguration(),
            job_specification=m.BatchJobSpecification(pool_info=m.BatchPoolInfo(pool_id=pool)),
        )
    )
    c.create_task(f"{s_id}:job-1", m.BatchTaskCreateOptions(id="ok", command_line="/bin/true"))
    c.create_task(f"{s_id}:job-1", m.BatchTaskCreateOptions(id="bad", command_line="/bin/false"))
    wait_tasks_done(c, f"{s_id}:job-1", 2)
    st = c.get_job_schedule(s_id, expand=["stats"]).job_schedule_statistics
    assert st is not None
    assert (st.succeeded_tasks_count, st.failed_tasks_count) == (1, 1)
    assert st.wall_clock_time > timedelta(0)
    delete(c, s_id)
    c.begin_delete_pool(pool, polling_interval=0.2).result()  # type: ignore[arg-type]
