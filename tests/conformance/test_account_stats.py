"""Account lifetime statistics (`GET /lifetimejobstats`, `/lifetimepoolstats`) of the api-versions that have them.

They exist up to 2023-05-01.17.0 (the 2023-11-01.18.0 spec dropped both operations); newer versions answer
the unknown-URI error. The job figures cover every job the account ran, deleted ones included.
"""

from __future__ import annotations

from typing import Any

from azure.batch import BatchClient
from azure.batch import models as m

from tests.support.batch import create_pool, wait_idle_nodes, wait_tasks_done
from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error

OLD = "2022-10-01.16.0"


def _stats(raw: Raw) -> dict[str, Any]:
    body: dict[str, Any] = raw.json("/lifetimejobstats", api_version=OLD)
    return body


def test_lifetime_job_stats_count_deleted_jobs(live: LiveServer, client: BatchClient, uid: str) -> None:
    raw = Raw(live)
    before = _stats(raw)
    assert before["url"] == f"{live.endpoint}/lifetimejobstats"
    for k in ("startTime", "lastUpdateTime", "userCPUTime", "kernelCPUTime", "wallClockTime", "waitTime"):
        assert isinstance(before[k], str), k

    pool = f"ls-{uid}"
    create_pool(client, pool, nodes=1, slots=2)
    wait_idle_nodes(client, pool, 1)
    job = f"lsj-{uid}"
    client.create_job(m.BatchJobCreateOptions(id=job, pool_info=m.BatchPoolInfo(pool_id=pool)))
    client.create_tasks(
        job,
        [
            m.BatchTaskCreateOptions(
                id="ok", command_line="/bin/sh -c 'head -c 100000 /dev/urandom | sha256sum'"
            )
        ]
        + [m.BatchTaskCreateOptions(id="bad", command_line="/bin/sh -c 'exit 3'")],
    )
    wait_tasks_done(client, job, 2)
    during = _stats(raw)
    assert int(during["numSucceededTasks"]) == int(before["numSucceededTasks"]) + 1
    assert int(during["numFailedTasks"]) == int(before["numFailedTasks"]) + 1
    assert during["startTime"] == before["startTime"]

    client.begin_delete_job(job)

    def gone() -> bool:
        return raw.get(f"/jobs/{job}").status_code == 404

    wait_for(gone, 30, what="job deleted")
    after = _stats(raw)  # the deleted job's figures stay in the account's totals
    for k in ("numSucceededTasks", "numFailedTasks", "userCPUTime", "wallClockTime"):
        assert after[k] == during[k], k
    client.begin_delete_pool(pool)


def test_lifetime_stats_only_in_the_versions_that_have_them(live: LiveServer) -> None:
    raw = Raw(live)
    assert raw.get("/lifetimejobstats", api_version="2023-05-01.17.0").status_code == 200
    for path in ("/lifetimejobstats", "/lifetimepoolstats"):
        assert_error(raw.get(path, api_version="2024-07-01.20.0"), 400, "InvalidUri")
        assert_error(raw.get(path, api_version="2025-06-01"), 400, "InvalidUri")
        assert_error(raw.post(path, {}, api_version=OLD), 405, "UnsupportedHttpVerb")
        assert_error(raw.get(path, api_version=OLD, key="d3Jvbmc="), 403, "AuthenticationFailed")
    assert (
        raw.get("/lifetimepoolstats", api_version=OLD).status_code == 200
    )  # tests/conformance/test_pool_stats.py
