"""Bad input on every /jobschedules route: a Batch error naming the property, and nothing written."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error, pool_body


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Iterator[Raw]:
    r = Raw(live)
    assert r.post("/pools", pool_body("jsi-pool")).status_code == 201
    yield r


def new_id() -> str:
    return "jsi-" + uuid.uuid4().hex[:8]


def body(sid: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": sid,
        "schedule": {"recurrenceInterval": "PT1H"},
        "jobSpecification": {"poolInfo": {"poolId": "jsi-pool"}},
    }
    out.update(extra)
    return out


@pytest.fixture
def sched(raw: Raw) -> str:
    sid = new_id()
    r = raw.post("/jobschedules", body(sid))
    assert r.status_code == 201, r.text()
    assert r.headers["Location"].endswith(f"/jobschedules/{sid}")
    return sid


def schedule_ids(raw: Raw) -> list[str]:
    return sorted(s["id"] for s in raw.json("/jobschedules", params={"$select": "id"})["value"])


@pytest.mark.parametrize(
    "extra,status,code,values",
    [
        (
            {"schedule": {"recurrenceInterval": "PT59S"}},
            400,
            "InvalidPropertyValue",
            {"PropertyName": "schedule.recurrenceInterval"},
        ),
        (
            {"schedule": {"startWindow": "PT10S"}},
            400,
            "InvalidPropertyValue",
            {"PropertyName": "schedule.startWindow"},
        ),
        ({"schedule": {"recurrenceInterval": "soon"}}, 400, "InvalidPropertyValue", {}),
        ({"schedule": {"doNotRunUntil": "tomorrow"}}, 400, "InvalidPropertyValue", {}),
        ({"schedule": "daily"}, 400, "InvalidPropertyValue", {"PropertyName": "schedule"}),
        ({"jobSpecification": {}}, 400, "MissingRequiredProperty", {}),
        (
            {"jobSpecification": {"poolInfo": {}}},
            400,
            "MissingRequiredProperty",
            {"PropertyName": "jobSpecification.poolInfo.poolId"},
        ),
        (
            {"jobSpecification": {"poolInfo": {"poolId": "p"}, "priority": 5000}},
            400,
            "InvalidPropertyValue",
            {"PropertyName": "jobSpecification.priority"},
        ),
        (
            {"jobSpecification": {"poolInfo": {"poolId": "p"}, "maxParallelTasks": 0}},
            400,
            "InvalidPropertyValue",
            {"PropertyName": "jobSpecification.maxParallelTasks"},
        ),
        (
            {"jobSpecification": {"poolInfo": {"poolId": "p"}, "onAllTasksComplete": "explode"}},
            400,
            "InvalidPropertyValue",
            {},
        ),
        (
            {
                "jobSpecification": {
                    "poolInfo": {"poolId": "p"},
                    "jobPreparationTask": {"commandLine": "x", "containerSettings": {"imageName": "i"}},
                }
            },
            501,
            "NotImplemented",
            {},
        ),
        (
            {"jobSpecification": {"poolInfo": {"poolId": "p"}, "jobReleaseTask": {"commandLine": "x"}}},
            400,
            "MissingRequiredProperty",
            {"PropertyName": "jobSpecification.jobPreparationTask"},
        ),
        (
            {
                "jobSpecification": {
                    "poolInfo": {"poolId": "p"},
                    "jobManagerTask": {"id": "jm", "commandLine": "x", "requiredSlots": 0},
                }
            },
            400,
            "InvalidPropertyValue",
            {"PropertyName": "jobSpecification.jobManagerTask.requiredSlots"},
        ),
        (
            {
                "jobSpecification": {
                    "poolInfo": {"autoPoolSpecification": {"poolLifetimeOption": "jobschedule"}}
                }
            },
            400,
            "MissingRequiredProperty",
            {},
        ),
        ({"bogus": 1}, 400, "UnsupportedProperty", {"PropertyName": "bogus"}),
    ],
)
def test_create_refuses_bad_bodies(
    raw: Raw, extra: dict[str, Any], status: int, code: str | None, values: dict[str, str]
) -> None:
    sid = new_id()
    before = schedule_ids(raw)
    r = raw.post("/jobschedules", body(sid, **extra))
    assert r.status_code == status, r.text()
    assert_error(r, status, code or r.json()["code"], **values)
    assert schedule_ids(raw) == before


def test_create_without_schedule_id_or_spec(raw: Raw) -> None:
    before = schedule_ids(raw)
    assert_error(
        raw.post("/jobschedules", {"schedule": {}, "jobSpecification": {"poolInfo": {"poolId": "p"}}}),
        400,
        "MissingRequiredProperty",
    )
    assert_error(
        raw.post("/jobschedules", {"id": "x", "jobSpecification": {"poolInfo": {"poolId": "p"}}}),
        400,
        "MissingRequiredProperty",
    )
    assert_error(raw.post("/jobschedules", {"id": "x", "schedule": {}}), 400, "MissingRequiredProperty")
    assert_error(raw.post("/jobschedules", body("bad id!")), 400, "InvalidPropertyValue", PropertyName="id")
    assert_error(raw.post("/jobschedules", body("x" * 65)), 400, "InvalidPropertyValue")
    assert_error(raw.request("POST", "/jobschedules", content="{not json"), 400, "InvalidRequestBody")
    assert schedule_ids(raw) == before


@pytest.mark.parametrize(
    "method,suffix,payload",
    [
        ("GET", "", None),
        ("HEAD", "", None),
        ("PATCH", "", {"metadata": []}),
        ("PUT", "", {"jobSpecification": {"poolInfo": {"poolId": "p"}}}),
        ("DELETE", "", None),
        ("POST", "/disable", None),
        ("POST", "/enable", None),
        ("POST", "/terminate", None),
        ("GET", "/jobs", None),
    ],
)
def test_missing_schedule_is_404_on_every_route(raw: Raw, method: str, suffix: str, payload: Any) -> None:
    r = raw.request(method, f"/jobschedules/no-such-schedule{suffix}", json_body=payload)
    if method == "HEAD":
        assert r.status_code == 404 and not r.text()
    else:
        assert_error(r, 404, "JobScheduleNotFound")


def test_update_refuses_bad_bodies_and_keeps_the_schedule(raw: Raw, sched: str) -> None:
    before = raw.json(f"/jobschedules/{sched}")
    for method, payload, code in [
        ("PATCH", {"schedule": {"recurrenceInterval": "PT1S"}}, "InvalidPropertyValue"),
        (
            "PATCH",
            {"jobSpecification": {"poolInfo": {"poolId": "p"}, "priority": -5000}},
            "InvalidPropertyValue",
        ),
        ("PATCH", {"id": "other"}, "UnsupportedProperty"),
        ("PUT", {"schedule": {}}, "MissingRequiredProperty"),
        ("PUT", {"jobSpecification": {"poolInfo": {}}}, "MissingRequiredProperty"),
    ]:
        r = raw.request(method, f"/jobschedules/{sched}", json_body=payload)
        assert_error(r, 400, code)
    assert raw.json(f"/jobschedules/{sched}")["eTag"] == before["eTag"]


def test_conditional_headers_and_state_errors(raw: Raw, sched: str) -> None:
    r = raw.request(
        "PATCH", f"/jobschedules/{sched}", json_body={"metadata": []}, headers={"If-Match": '"0x1"'}
    )
    assert_error(r, 412, "ConditionNotMet")
    assert raw.post(f"/jobschedules/{sched}/terminate").status_code == 202
    wait_for(lambda: raw.json(f"/jobschedules/{sched}")["state"] == "completed", 10, 0.05, "completed")
    assert_error(raw.post(f"/jobschedules/{sched}/disable"), 409, "JobScheduleCompleted")
    assert_error(raw.post(f"/jobschedules/{sched}/enable"), 409, "JobScheduleCompleted")
    assert_error(raw.post(f"/jobschedules/{sched}/terminate"), 409, "JobScheduleCompleted")
    assert raw.delete(f"/jobschedules/{sched}").status_code == 202


def test_query_errors(raw: Raw, sched: str) -> None:
    assert_error(
        raw.get("/jobschedules", params={"$filter": "priority eq 1"}), 400, "InvalidQueryParameterValue"
    )
    assert_error(raw.get("/jobschedules", params={"maxresults": "0"}), 400, "OutOfRangeQueryParameterValue")
    assert_error(
        raw.get(f"/jobschedules/{sched}", params={"$expand": "tasks"}), 400, "InvalidQueryParameterValue"
    )
    assert_error(
        raw.get(f"/jobschedules/{sched}/jobs", params={"$filter": "id eq 'x'"}),
        400,
        "InvalidQueryParameterValue",
    )
    assert_error(raw.get(f"/jobschedules/{sched}/nothing"), 400, "InvalidUri")
    assert_error(raw.request("PUT", f"/jobschedules/{sched}/disable"), 405, "UnsupportedHttpVerb")


def test_success_codes_and_headers(raw: Raw, sched: str) -> None:
    for path, status in [("/disable", 204), ("/enable", 204)]:
        r = raw.post(f"/jobschedules/{sched}{path}")
        assert r.status_code == status and r.headers["ETag"] and r.headers["Last-Modified"]
        assert r.headers["DataServiceId"].endswith(f"/jobschedules/{sched}{path}")
    r = raw.request("PATCH", f"/jobschedules/{sched}", json_body={"metadata": [{"name": "a", "value": "b"}]})
    assert r.status_code == 200 and r.headers["ETag"] == raw.json(f"/jobschedules/{sched}")["eTag"]
    h = raw.request("HEAD", f"/jobschedules/{sched}")
    assert h.status_code == 200 and h.headers["ETag"] == r.headers["ETag"]
    assert raw.post(f"/jobschedules/{sched}/terminate").status_code == 202
    assert raw.delete(f"/jobschedules/{sched}").status_code == 202
    assert raw.delete(f"/jobschedules/{sched}").status_code in (202, 404)


@pytest.mark.parametrize("version", ["2018-08-01.7.0", "2022-10-01.16.0", "2024-02-01.19.0"])
def test_older_api_versions_see_their_own_shape(raw: Raw, version: str) -> None:
    sid = new_id()
    r = raw.request("POST", "/jobschedules", json_body=body(sid), api_version=version)
    assert r.status_code == 201, r.text()
    got = raw.json(f"/jobschedules/{sid}", api_version=version)
    assert got["executionInfo"]["recentJob"]["id"] == f"{sid}:job-1"
    # maxParallelTasks / allowTaskPreemption came with 2020-09-15.12.0: not in the oldest version's shape
    assert ("maxParallelTasks" in got["jobSpecification"]) == (version >= "2020")
    jobs = raw.json(f"/jobschedules/{sid}/jobs", api_version=version)["value"]
    assert [j["id"] for j in jobs] == [f"{sid}:job-1"]
    assert raw.delete(f"/jobschedules/{sid}", api_version=version).status_code == 202
