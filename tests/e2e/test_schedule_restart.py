"""A SIGKILLed server neither loses nor repeats a job schedule's run (job creation and the schedule's counter
and nextRunTime commit in one transaction), driven by the fake clock instead of waiting an hour."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models import _models as private_models
from azure.core.credentials import AzureNamedKeyCredential

from batchyard.service import jobschedule_runs, jobschedules
from batchyard.service.context import Ctx
from batchyard.store.sql import SqlStore
from tests.support.live import FileClock, LiveServer, wait_for

pytestmark = pytest.mark.slow


def _client(srv: LiveServer) -> BatchClient:
    return BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))


def _end(c: BatchClient, job_id: str) -> None:
    opts = private_models.BatchJobTerminateOptions(termination_reason="done")
    c.begin_terminate_job(job_id, opts, polling_interval=0.2).result()  # type: ignore[arg-type]


def _jobs(c: BatchClient, sid: str) -> list[str]:
    return sorted(
        (j.id for j in c.list_jobs_from_schedule(sid) if j.id), key=lambda i: int(i.rsplit("-", 1)[1])
    )


def test_sigkill_neither_loses_nor_repeats_a_run(tmp_path: Path) -> None:
    clock = FileClock(tmp_path / "clock")
    srv = LiveServer(tmp_path / "data", extra_args=["--fake-clock-file", str(clock.path)]).start()
    try:
        c = _client(srv)
        c.create_job_schedule(
            m.BatchJobScheduleCreateOptions(
                id="rs",
                schedule=m.BatchJobScheduleConfiguration(recurrence_interval=timedelta(hours=1)),
                job_specification=m.BatchJobSpecification(pool_info=m.BatchPoolInfo(pool_id="nopool")),
            )
        )
        created = c.get_job_schedule("rs").creation_time
        assert _jobs(c, "rs") == ["rs:job-1"]
        rng = random.Random(11)
        for n in range(2, 6):
            _end(c, f"rs:job-{n - 1}")
            # the server is killed at a random moment around the run coming due (before, during or after it)
            clock.advance(timedelta(hours=1))
            time.sleep(rng.uniform(0.0, 1.5))  # the kill's timing is the point of the test, not a wait
            srv.kill()
            srv.start()
            c = _client(srv)
            wait_for(lambda c=c, n=n: len(_jobs(c, "rs")) == n or None, 15, 0.05, f"job-{n}")  # type: ignore[misc]
            assert _jobs(c, "rs") == [f"rs:job-{i}" for i in range(1, n + 1)]
            s = c.get_job_schedule("rs")
            assert s.execution_info is not None and s.execution_info.recent_job is not None
            assert s.execution_info.recent_job.id == f"rs:job-{n}"
            assert s.execution_info.next_run_time == created + timedelta(hours=n)
        # a few more timer passes with nothing due: still exactly five jobs
        time.sleep(1.5)
        assert len(_jobs(c, "rs")) == 5
    finally:
        srv.stop()


def test_a_failed_run_commits_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the schedule write fails after the job insert; the job is rolled back with it, and the
    next pass creates the run exactly once."""
    store = SqlStore.for_data_dir(tmp_path)
    store.migrate()
    ctx = Ctx(store=store, data_dir=tmp_path, account="a")
    jobschedules.create_schedule(
        ctx,
        {
            "id": "s",
            "schedule": {"recurrenceInterval": "PT1H"},
            "jobSpecification": {"poolInfo": {"poolId": "p"}},
        },
    )
    from batchyard.service import jobs

    jobs.terminate_job(ctx, "s:job-1", None, jobs.NO_CONDITIONS)
    with store.tx() as tx:  # the scheduler would complete it; do it here without the loop
        row = jobs.load(tx, "s:job-1")
        row["body"]["state"] = "completed"
        jobs.save(tx, ctx, row, row["body"])
    real_clock = ctx.clock
    ctx.clock = lambda: real_clock() + timedelta(hours=1, seconds=1)
    real_save = jobschedule_runs.save

    def failing_save(*a: object, **kw: object) -> object:
        raise RuntimeError("disk full")

    monkeypatch.setattr(jobschedule_runs, "save", failing_save)
    with pytest.raises(RuntimeError):
        jobschedule_runs.tick(ctx)
    with store.tx() as tx:
        assert not tx.exists(jobs.schema.jobs, key="s:job-2")
        assert tx.get(jobs.schema.job_schedules, key="s")["job_seq"] == 1  # type: ignore[index]
    monkeypatch.setattr(jobschedule_runs, "save", real_save)
    assert jobschedule_runs.tick(ctx) == 1
    assert jobschedule_runs.tick(ctx) == 0
    with store.tx() as tx:
        assert tx.exists(jobs.schema.jobs, key="s:job-2")
        assert not tx.exists(jobs.schema.jobs, key="s:job-3")
        assert tx.get(jobs.schema.job_schedules, key="s")["job_seq"] == 2  # type: ignore[index]
    store.dispose()
