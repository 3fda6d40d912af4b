"""`az batch job-schedule create` (azure-cli 2.91.0, api-version 2024-02-01.19.0) against a live server: the CLI's
flags become a schedule whose first job exists at once, and show/list/jobs/delete read it back."""

from __future__ import annotations

import pytest

from tests.conformance.test_az_tutorial import Az, az  # noqa: F401 - the az fixture
from tests.support.live import wait_for

pytestmark = pytest.mark.az


def test_az_job_schedule_create(az: Az, uid: str) -> None:  # noqa: F811
    sid = f"azsched-{uid}"
    az.silent(
        "batch",
        "job-schedule",
        "create",
        "--id",
        sid,
        "--pool-id",
        f"nopool-{uid}",
        "--recurrence-interval",
        "PT01H00M00S",
        "--start-window",
        "PT10M",
        "--priority",
        "3",
        "--job-max-task-retry-count",
        "2",
        "--metadata",
        "team=qa",
    )
    s = az.json("batch", "job-schedule", "show", "--job-schedule-id", sid)
    assert s["state"] == "active"
    # az prints durations in its own form; either way they are the ones sent (PT01H00M00S normalised)
    assert s["schedule"]["recurrenceInterval"] in ("PT1H", "1:00:00"), s["schedule"]
    assert s["schedule"]["startWindow"] in ("PT10M", "0:10:00"), s["schedule"]
    assert s["jobSpecification"]["priority"] == 3
    assert s["jobSpecification"]["constraints"]["maxTaskRetryCount"] == 2
    assert s["metadata"] == [{"name": "team", "value": "qa"}]
    assert s["executionInfo"]["recentJob"]["id"] == f"{sid}:job-1"
    assert sid in [x["id"] for x in az.json("batch", "job-schedule", "list")]
    jobs = az.json("batch", "job", "list", "--job-schedule-id", sid)
    assert [j["id"] for j in jobs] == [f"{sid}:job-1"] and jobs[0]["priority"] == 3
    az.silent("batch", "job-schedule", "disable", "--job-schedule-id", sid)
    assert az.json("batch", "job-schedule", "show", "--job-schedule-id", sid)["state"] == "disabled"
    az.silent("batch", "job-schedule", "delete", "--job-schedule-id", sid, "--yes")

    def gone() -> bool:
        # deleting is asynchronous (the schedule shows `deleting` first); az exits 3 once it is not found
        try:
            az.run("batch", "job-schedule", "show", "--job-schedule-id", sid, rc=3)
        except AssertionError:
            return False
        return True

    wait_for(gone, 30, 0.5, "the schedule to be gone")
