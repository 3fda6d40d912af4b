"""Bad input on the wire: every rejection is a Batch error in the service's shape, and writes nothing.

Each rejected write is followed by a read that proves the store is unchanged (404 on the id, the same list,
the same task counts). Requests are Shared Key signed by the official SDK's policy (tests/support/raw.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from azure.core.pipeline.policies import SansIOHTTPPolicy

from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error, assert_headers, pool_body

ONE_MB = 1024 * 1024


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Iterator[Raw]:
    r = Raw(live)
    yield r
    for pid in [p["id"] for p in r.json("/pools", params={"$select": "id"})["value"]]:
        r.delete(f"/pools/{pid}")
    wait_for(lambda: not r.json("/pools")["value"], 30, 0.1, "pools to be deleted")


@pytest.fixture(scope="module")
def pool(raw: Raw) -> str:
    """A pool without nodes: tasks added to its jobs stay active, so counts only move when we add tasks."""
    pid = "badin-pool-" + uuid.uuid4().hex[:6]
    assert raw.post("/pools", pool_body(pid)).status_code == 201
    return pid


@pytest.fixture
def job(raw: Raw, pool: str) -> str:
    jid = "badin-job-" + uuid.uuid4().hex[:8]
    r = raw.post("/jobs", {"id": jid, "poolInfo": {"poolId": pool}})
    assert r.status_code == 201, r.text()
    return jid


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def pool_ids(raw: Raw) -> list[str]:
    return sorted(p["id"] for p in raw.json("/pools", params={"$select": "id"})["value"])


def job_ids(raw: Raw) -> list[str]:
    return sorted(j["id"] for j in raw.json("/jobs", params={"$select": "id"})["value"])


def task_state(raw: Raw, job_id: str) -> tuple[list[str], dict[str, int]]:
    """The job's task ids and task counts: what a rejected task write must leave alone."""
    ids = sorted(t["id"] for t in raw.json(f"/jobs/{job_id}/tasks", params={"$select": "id"})["value"])
    return ids, raw.json(f"/jobs/{job_id}/taskcounts")["taskCounts"]


def job_body(jid: str, pool_id: str = "some-pool", **extra: Any) -> dict[str, Any]:
    return {"id": jid, "poolInfo": {"poolId": pool_id}, **extra}


def task_body(tid: str, **extra: Any) -> dict[str, Any]:
    return {"id": tid, "commandLine": "/bin/true", **extra}


# --- malformed bodies --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b'{"id": "x", ',
        b"{not json",
        b"[1, 2]",
        b'"a string"',
        b"",
        b'{"id": "\xff\xfe"}',
        b'{"id": "p", "vmSize": "\xc3"}',
    ],
)
def test_invalid_json_pool(raw: Raw, content: bytes) -> None:
    before = pool_ids(raw)
    body = assert_error(raw.request("POST", "/pools", content=content), 400, "InvalidRequestBody")
    assert "Reason" in {v["key"] for v in body.get("values", [])}
    assert pool_ids(raw) == before


def test_invalid_json_job_and_task(raw: Raw, job: str) -> None:
    jid = new_id("badjson")
    text = json.dumps(job_body(jid))[:-1]  # the closing brace is missing
    assert_error(raw.request("POST", "/jobs", content=text), 400, "InvalidRequestBody")
    assert_error(raw.get(f"/jobs/{jid}"), 404, "JobNotFound")

    before = task_state(raw, job)
    text = json.dumps(task_body("t1"))[:-1]
    assert_error(raw.request("POST", f"/jobs/{job}/tasks", content=text), 400, "InvalidRequestBody")
    text = json.dumps({"value": [task_body("t1")]})[:-2]
    assert_error(
        raw.request("POST", f"/jobs/{job}/addtaskcollection", content=text), 400, "InvalidRequestBody"
    )
    assert task_state(raw, job) == before


@pytest.mark.parametrize(
    "kind,extra,prop",
    [
        ("pool", {"bogus": 1}, "bogus"),
        (
            "pool",
            {
                "virtualMachineConfiguration": {
                    "imageReference": {"publisher": "canonical", "offer": "o", "sku": "s"},
                    "nodeAgentSKUId": "x",
                    "nested": True,
                }
            },
            "virtualMachineConfiguration.nested",
        ),
        ("pool", {"startTask": {"commandLine": "true", "frobnicate": "yes"}}, "startTask.frobnicate"),
        ("job", {"bogus": 1}, "bogus"),
        ("job", {"poolInfo": {"poolId": "p", "bogus": 1}}, "poolInfo.bogus"),
        ("job", {"constraints": {"maxTaskRetryCount": 1, "bogus": 2}}, "constraints.bogus"),
    ],
)
def test_unknown_property_pool_job(raw: Raw, kind: str, extra: dict[str, Any], prop: str) -> None:
    rid = new_id("unk")
    if kind == "pool":
        r = raw.post("/pools", pool_body(rid, **extra))
        path, missing = f"/pools/{rid}", "PoolNotFound"
    else:
        r = raw.post("/jobs", job_body(rid, **extra))
        path, missing = f"/jobs/{rid}", "JobNotFound"
    assert_error(r, 400, "UnsupportedProperty", PropertyName=prop)
    assert_error(raw.get(path), 404, missing)


@pytest.mark.parametrize(
    "extra,prop",
    [
        ({"bogus": 1}, "bogus"),
        ({"constraints": {"maxTaskRetryCount": 1, "bogus": 2}}, "constraints.bogus"),
        ({"userIdentity": {"autoUser": {"scope": "task", "bogus": 1}}}, "userIdentity.autoUser.bogus"),
    ],
)
def test_unknown_property_task(raw: Raw, job: str, extra: dict[str, Any], prop: str) -> None:
    before = task_state(raw, job)
    assert_error(
        raw.post(f"/jobs/{job}/tasks", task_body("t", **extra)), 400, "UnsupportedProperty", PropertyName=prop
    )
    assert_error(raw.get(f"/jobs/{job}/tasks/t"), 404, "TaskNotFound")
    assert task_state(raw, job) == before


def test_missing_required_properties(raw: Raw, job: str) -> None:
    pid = new_id("noreq")
    body = pool_body(pid)
    del body["vmSize"]
    assert_error(raw.post("/pools", body), 400, "MissingRequiredProperty", PropertyName="vmSize")
    assert_error(raw.get(f"/pools/{pid}"), 404, "PoolNotFound")

    body = pool_body(pid)
    del body["virtualMachineConfiguration"]["nodeAgentSKUId"]
    assert_error(
        raw.post("/pools", body),
        400,
        "MissingRequiredProperty",
        PropertyName="virtualMachineConfiguration.nodeAgentSKUId",
    )
    assert_error(raw.get(f"/pools/{pid}"), 404, "PoolNotFound")

    before = pool_ids(raw)
    body = pool_body(pid)
    del body["id"]
    assert_error(raw.post("/pools", body), 400, "MissingRequiredProperty", PropertyName="id")
    assert pool_ids(raw) == before

    jid = new_id("noreq")
    assert_error(raw.post("/jobs", {"id": jid}), 400, "MissingRequiredProperty", PropertyName="poolInfo")
    assert_error(raw.get(f"/jobs/{jid}"), 404, "JobNotFound")

    before_tasks = task_state(raw, job)
    assert_error(
        raw.post(f"/jobs/{job}/tasks", {"id": "t"}),
        400,
        "MissingRequiredProperty",
        PropertyName="commandLine",
    )
    assert_error(
        raw.post(f"/jobs/{job}/tasks", {"commandLine": "true"}),
        400,
        "MissingRequiredProperty",
        PropertyName="id",
    )
    assert_error(raw.get(f"/jobs/{job}/tasks/t"), 404, "TaskNotFound")
    assert task_state(raw, job) == before_tasks


@pytest.mark.parametrize(
    "kind,extra,prop,value",
    [
        ("pool", {"targetDedicatedNodes": "abc"}, "targetDedicatedNodes", "abc"),
        ("pool", {"targetDedicatedNodes": {"n": 1}}, "targetDedicatedNodes", '{"n":1}'),
        ("pool", {"enableInterNodeCommunication": "maybe"}, "enableInterNodeCommunication", "maybe"),
        ("pool", {"metadata": {"name": "a"}}, "metadata", '{"name":"a"}'),
        ("job", {"priority": "high"}, "priority", "high"),
        ("job", {"priority": [1]}, "priority", "[1]"),
        ("job", {"poolInfo": "pool-1"}, "poolInfo", "pool-1"),
        ("task", {"commandLine": 123}, "commandLine", "123"),
        ("task", {"requiredSlots": "two"}, "requiredSlots", "two"),
        ("task", {"constraints": {"maxTaskRetryCount": "lots"}}, "constraints.maxTaskRetryCount", "lots"),
    ],
)
def test_wrong_type(raw: Raw, job: str, kind: str, extra: dict[str, Any], prop: str, value: str) -> None:
    rid = new_id("type")
    if kind == "pool":
        before: Any = pool_ids(raw)
        r = raw.post("/pools", pool_body(rid, **extra))
    elif kind == "job":
        before = job_ids(raw)
        r = raw.post("/jobs", job_body(rid, **extra))
    else:
        before = task_state(raw, job)
        r = raw.post(f"/jobs/{job}/tasks", task_body(rid, **extra))
    body = assert_error(r, 400, "InvalidPropertyValue", PropertyName=prop, PropertyValue=value)
    assert any(v["key"] == "Reason" for v in body["values"])
    after = pool_ids(raw) if kind == "pool" else job_ids(raw) if kind == "job" else task_state(raw, job)
    assert after == before


@pytest.mark.parametrize(
    "kind,extra,prop",
    [
        ("pool", {"taskSlotsPerNode": 0}, "taskSlotsPerNode"),
        ("pool", {"taskSlotsPerNode": 257}, "taskSlotsPerNode"),
        ("pool", {"targetDedicatedNodes": -1}, "targetDedicatedNodes"),
        ("pool", {"taskSchedulingPolicy": {"nodeFillType": "diagonal"}}, "taskSchedulingPolicy.nodeFillType"),
        ("job", {"priority": 1001}, "priority"),
        ("job", {"maxParallelTasks": 0}, "maxParallelTasks"),
        ("job", {"constraints": {"maxTaskRetryCount": -2}}, "constraints.maxTaskRetryCount"),
        ("task", {"requiredSlots": 0}, "requiredSlots"),
        ("task", {"constraints": {"maxTaskRetryCount": -2}}, "constraints.maxTaskRetryCount"),
    ],
)
def test_out_of_range_values(raw: Raw, job: str, kind: str, extra: dict[str, Any], prop: str) -> None:
    rid = new_id("range")
    if kind == "pool":
        r = raw.post("/pools", pool_body(rid, **extra))
        gone = raw.get(f"/pools/{rid}"), "PoolNotFound"
    elif kind == "job":
        r = raw.post("/jobs", job_body(rid, **extra))
        gone = raw.get(f"/jobs/{rid}"), "JobNotFound"
    else:
        before = task_state(raw, job)
        r = raw.post(f"/jobs/{job}/tasks", task_body(rid, **extra))
        assert task_state(raw, job) == before
        gone = raw.get(f"/jobs/{job}/tasks/{rid}"), "TaskNotFound"
    assert_error(r, 400, "InvalidPropertyValue", PropertyName=prop)
    assert_error(gone[0], 404, gone[1])


def test_invalid_duration(raw: Raw) -> None:
    pid = new_id("dur")
    assert_error(
        raw.post("/pools", pool_body(pid, resizeTimeout="fifteen minutes")),
        400,
        "InvalidPropertyValue",
        PropertyName="resizeTimeout",
        PropertyValue="fifteen minutes",
    )
    assert_error(raw.get(f"/pools/{pid}"), 404, "PoolNotFound")


# --- identifiers ------------------------------------------------------------------------------------------------

BAD_IDS = ["x" * 65, "has space", "dot.ted", "sl/ash", "ünïcode", "semi;colon", "star*"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_pool_and_job_ids(raw: Raw, bad: str) -> None:
    pools, jobs = pool_ids(raw), job_ids(raw)
    assert_error(
        raw.post("/pools", pool_body(bad)), 400, "InvalidPropertyValue", PropertyName="id", PropertyValue=bad
    )
    assert_error(
        raw.post("/jobs", job_body(bad)), 400, "InvalidPropertyValue", PropertyName="id", PropertyValue=bad
    )
    assert pool_ids(raw) == pools and job_ids(raw) == jobs


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_task_ids(raw: Raw, job: str, bad: str) -> None:
    before = task_state(raw, job)
    assert_error(
        raw.post(f"/jobs/{job}/tasks", task_body(bad)),
        400,
        "InvalidPropertyValue",
        PropertyName="id",
        PropertyValue=bad,
    )
    assert task_state(raw, job) == before


def test_sixty_four_character_ids_are_fine(raw: Raw, pool: str) -> None:
    longest = "a" + uuid.uuid4().hex[:8] + "-_" * 27 + "z"
    assert len(longest) == 64
    assert raw.post("/jobs", job_body(longest, pool)).status_code == 201
    assert raw.post(f"/jobs/{longest}/tasks", task_body(longest)).status_code == 201
    assert raw.json(f"/jobs/{longest}/tasks/{longest}")["id"] == longest


def test_invalid_pool_id_in_job_pool_info(raw: Raw) -> None:
    jid = new_id("pinfo")
    assert_error(
        raw.post("/jobs", job_body(jid, "bad pool id")),
        400,
        "InvalidPropertyValue",
        PropertyName="poolInfo.poolId",
    )
    assert_error(raw.get(f"/jobs/{jid}"), 404, "JobNotFound")


def test_pool_ids_differing_only_in_case_conflict(raw: Raw) -> None:
    pid = new_id("Case")
    assert raw.post("/pools", pool_body(pid, metadata=[{"name": "n", "value": "first"}])).status_code == 201
    # the pool manager settles the allocation state (a write); compare ETags only after that
    before = wait_for(lambda: (b := raw.json(f"/pools/{pid}"))["allocationState"] == "steady" and b, 10, 0.05)
    for other in (pid, pid.upper(), pid.lower()):
        r = raw.post("/pools", pool_body(other, metadata=[{"name": "n", "value": "second"}]))
        assert_error(r, 409, "PoolExists")
    after = raw.json(f"/pools/{pid.lower()}")  # lookups are case-insensitive too
    assert after["id"] == pid and after["eTag"] == before["eTag"]
    assert after["metadata"] == [{"name": "n", "value": "first"}]
    assert [p for p in pool_ids(raw) if p.lower() == pid.lower()] == [pid]


def test_job_ids_differing_only_in_case_conflict(raw: Raw, pool: str) -> None:
    jid = new_id("Case")
    assert raw.post("/jobs", job_body(jid, pool, priority=1)).status_code == 201
    before = raw.json(f"/jobs/{jid}")
    for other in (jid, jid.upper(), jid.lower()):
        assert_error(raw.post("/jobs", job_body(other, pool, priority=2)), 409, "JobExists")
    after = raw.json(f"/jobs/{jid.upper()}")
    assert after["id"] == jid and after["priority"] == 1 and after["eTag"] == before["eTag"]
    assert [j for j in job_ids(raw) if j.lower() == jid.lower()] == [jid]


def test_task_ids_differing_only_in_case_conflict(raw: Raw, job: str) -> None:
    assert raw.post(f"/jobs/{job}/tasks", task_body("Task-A", displayName="first")).status_code == 201
    before = task_state(raw, job)
    for other in ("Task-A", "TASK-A", "task-a"):
        assert_error(
            raw.post(f"/jobs/{job}/tasks", task_body(other, displayName="second")), 409, "TaskExists"
        )
    assert task_state(raw, job) == before == (["Task-A"], {**before[1], "active": 1})
    t = raw.json(f"/jobs/{job}/tasks/task-a")
    assert t["id"] == "Task-A" and t["displayName"] == "first"


# --- tasks on jobs that cannot take them -------------------------------------------------------------------


def test_task_on_missing_job(raw: Raw) -> None:
    jid = new_id("nojob")
    assert_error(raw.post(f"/jobs/{jid}/tasks", task_body("t")), 404, "JobNotFound")
    assert_error(raw.post(f"/jobs/{jid}/addtaskcollection", {"value": [task_body("t")]}), 404, "JobNotFound")
    assert_error(raw.get(f"/jobs/{jid}"), 404, "JobNotFound")
    assert_error(raw.get(f"/jobs/{jid}/tasks/t"), 404, "JobNotFound")
    assert jid not in job_ids(raw)


def test_task_on_completed_job(raw: Raw, job: str) -> None:
    assert raw.post(f"/jobs/{job}/tasks", task_body("before")).status_code == 201
    assert raw.post(f"/jobs/{job}/terminate").status_code == 202
    wait_for(lambda: raw.json(f"/jobs/{job}")["state"] == "completed", 15, 0.05, "the job to complete")
    before = task_state(raw, job)
    assert_error(raw.post(f"/jobs/{job}/tasks", task_body("after")), 409, "JobCompleted")
    assert_error(
        raw.post(f"/jobs/{job}/addtaskcollection", {"value": [task_body("after2")]}), 409, "JobCompleted"
    )
    assert_error(raw.get(f"/jobs/{job}/tasks/after"), 404, "TaskNotFound")
    assert task_state(raw, job) == before
    assert before[0] == ["before"]


# --- sizes --------------------------------------------------------------------------------------------------


def test_body_over_one_megabyte(raw: Raw, job: str) -> None:
    big = "x" * (ONE_MB + 16)
    pid = new_id("big")
    r = raw.post("/pools", pool_body(pid, metadata=[{"name": "big", "value": big}]))
    assert_error(r, 413, "RequestBodyTooLarge")
    assert_error(raw.get(f"/pools/{pid}"), 404, "PoolNotFound")

    jid = new_id("big")
    assert_error(
        raw.post("/jobs", job_body(jid, metadata=[{"name": "big", "value": big}])), 413, "RequestBodyTooLarge"
    )
    assert_error(raw.get(f"/jobs/{jid}"), 404, "JobNotFound")

    before = task_state(raw, job)
    r = raw.post(f"/jobs/{job}/tasks", task_body("big", environmentSettings=[{"name": "B", "value": big}]))
    assert_error(r, 413, "RequestBodyTooLarge")
    # under the 100-task limit but over 1 MB in total
    chunk = "y" * (ONE_MB // 10)
    tasks = [task_body(f"c{i}", environmentSettings=[{"name": "E", "value": chunk}]) for i in range(11)]
    assert_error(raw.post(f"/jobs/{job}/addtaskcollection", {"value": tasks}), 413, "RequestBodyTooLarge")
    assert task_state(raw, job) == before


def test_addtaskcollection_101_tasks_rejected_whole(raw: Raw, job: str) -> None:
    before = task_state(raw, job)
    tasks = [task_body(f"t{i:03d}") for i in range(101)]
    assert_error(raw.post(f"/jobs/{job}/addtaskcollection", {"value": tasks}), 413, "RequestBodyTooLarge")
    assert task_state(raw, job) == before == ([], before[1])
    assert_error(raw.get(f"/jobs/{job}/tasks/t000"), 404, "TaskNotFound")

    # exactly 100 is fine
    r = raw.post(f"/jobs/{job}/addtaskcollection", {"value": tasks[:100]})
    assert r.status_code == 200, r.text()
    assert [x["status"] for x in r.json()["value"]] == ["Success"] * 100
    assert len(task_state(raw, job)[0]) == 100


def test_addtaskcollection_duplicates_are_per_task_client_errors(raw: Raw, job: str) -> None:
    assert raw.post(f"/jobs/{job}/tasks", task_body("existing")).status_code == 201
    _, counts_before = task_state(raw, job)
    tasks = [task_body("a"), task_body("EXISTING"), task_body("b"), task_body("A"), task_body("c")]
    r = raw.post(f"/jobs/{job}/addtaskcollection", {"value": tasks})
    assert r.status_code == 200, r.text()
    assert_headers(r)
    results = r.json()["value"]
    assert len(results) == 5
    ok = sorted(x["taskId"] for x in results if x["status"] == "Success")
    failed = [x for x in results if x["status"] != "Success"]
    assert ok == ["a", "b", "c"]
    assert sorted(x["taskId"] for x in failed) == ["A", "EXISTING"]
    for x in failed:
        assert x["status"] == "ClientError"
        assert x["error"]["code"] == "TaskExists"
        assert x["error"]["message"]["value"]
        assert "eTag" not in x and "location" not in x
    ids, counts = task_state(raw, job)
    assert ids == ["a", "b", "c", "existing"]
    assert counts["active"] == counts_before["active"] + 3


# --- the request line: api-version, auth, routes --------------------------------------------------------------


def test_unsupported_api_version(raw: Raw) -> None:
    r = raw.get("/pools", api_version="2099-01-01")
    assert_error(
        r,
        400,
        "UnsupportedRequestVersion",
        QueryParameterName="api-version",
        QueryParameterValue="2099-01-01",
    )
    pid = new_id("ver")
    assert_error(
        raw.post("/pools", pool_body(pid), api_version="2012-01-01.1.0"), 400, "UnsupportedRequestVersion"
    )
    assert_error(raw.get(f"/pools/{pid}"), 404, "PoolNotFound")


@pytest.mark.parametrize("version", ["2024-02-01.19.0", "2024-07-01.20.0", "2025-06-01", "2025-06-01.21.0"])
def test_supported_api_versions(raw: Raw, version: str) -> None:
    assert raw.get("/pools", api_version=version).status_code == 200


def test_missing_api_version(raw: Raw) -> None:
    assert_error(
        raw.get("/pools", api_version=None),
        400,
        "MissingRequiredQueryParameter",
        QueryParameterName="api-version",
    )
    jid = new_id("nover")
    assert_error(raw.post("/jobs", job_body(jid), api_version=None), 400, "MissingRequiredQueryParameter")
    assert_error(raw.get(f"/jobs/{jid}"), 404, "JobNotFound")


def test_missing_authorization_401(raw: Raw) -> None:
    r = raw.get("/pools", key=None)
    assert r.status_code == 401
    assert_error(r, 401, r.json()["code"])
    jid = new_id("noauth")
    r = raw.post("/jobs", job_body(jid), key=None)
    assert r.status_code == 401
    assert_error(raw.get(f"/jobs/{jid}"), 404, "JobNotFound")


def test_bad_signature_403(raw: Raw, job: str) -> None:
    wrong_key = "A" * 86 + "=="
    body = assert_error(raw.get("/pools", key=wrong_key), 403, "AuthenticationFailed")
    assert "AuthenticationErrorDetail" in {v["key"] for v in body["values"]}

    pid = new_id("badsig")
    assert_error(raw.post("/pools", pool_body(pid), key=wrong_key), 403, "AuthenticationFailed")
    assert_error(raw.get(f"/pools/{pid}"), 404, "PoolNotFound")

    before = task_state(raw, job)
    assert_error(raw.post(f"/jobs/{job}/tasks", task_body("t"), key=wrong_key), 403, "AuthenticationFailed")
    assert_error(raw.delete(f"/jobs/{job}", key=wrong_key), 403, "AuthenticationFailed")
    assert raw.json(f"/jobs/{job}")["state"] == "active"
    assert task_state(raw, job) == before


def test_stale_ocp_date_is_rejected(raw: Raw) -> None:
    """A correctly signed request whose ocp-date is far outside the allowed clock skew is refused."""
    pid = new_id("stale")
    stale = format_datetime(datetime.now(UTC) - timedelta(hours=2), usegmt=True)
    assert_error(raw.post("/pools", pool_body(pid), headers={"ocp-date": stale}), 403, "AuthenticationFailed")
    assert_error(raw.get(f"/pools/{pid}"), 404, "PoolNotFound")


class _Retarget(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Runs after signing and points the request at another pool: the signature no longer matches."""

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def on_request(self, request: Any) -> None:
        request.http_request.url = request.http_request.url.replace(self.old, self.new)


def test_signature_binds_the_path(raw: Raw, pool: str) -> None:
    from azure.batch._patch import BatchSharedKeyAuthPolicy
    from azure.core import PipelineClient
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.core.rest import HttpRequest, HttpResponse

    victim = new_id("victim")
    assert raw.post("/pools", pool_body(victim)).status_code == 201
    signer = BatchSharedKeyAuthPolicy(AzureNamedKeyCredential(raw.account, raw.key))
    tampering: PipelineClient[HttpRequest, HttpResponse] = PipelineClient(
        raw.endpoint, policies=[signer, _Retarget(f"/pools/{pool}", f"/pools/{victim}")]
    )
    resp = tampering.send_request(HttpRequest("DELETE", raw.url(f"/pools/{pool}")))
    resp.read()
    assert_error(resp, 403, "AuthenticationFailed")
    assert raw.json(f"/pools/{victim}")["state"] == "active"


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/nosuchthing"),
        ("GET", "/pools/p/nosuchthing"),
        ("POST", "/jobs/j/tasks/t/frobnicate"),
        ("GET", "/"),
    ],
)
def test_unknown_route_is_a_json_batch_error(raw: Raw, method: str, path: str) -> None:
    r = raw.request(method, path)
    assert r.status_code in (400, 404), r.text()
    body = assert_error(r, r.status_code, r.json()["code"])
    assert body["code"] in ("InvalidUri", "ResourceNotFound")
    assert r.headers["content-type"].startswith("application/json")


def test_unknown_route_without_version_or_auth_is_still_json(raw: Raw) -> None:
    r = raw.get("/nosuchthing", api_version=None, key=None)
    assert r.status_code in (400, 401, 404)
    assert_error(r, r.status_code, r.json()["code"])


def test_unsupported_verb_is_a_json_batch_error(raw: Raw) -> None:
    assert_error(raw.request("PUT", "/pools"), 405, "UnsupportedHttpVerb", HttpVerb="PUT")
    before = pool_ids(raw)
    assert_error(
        raw.request("PUT", "/pools", json_body=pool_body(new_id("verb"))), 405, "UnsupportedHttpVerb"
    )
    assert pool_ids(raw) == before


@pytest.mark.parametrize(
    "method,path,body",
    [
        # properties that cannot be honoured here: refused, nothing written
        ("POST", "/jobs", {"id": "j-501a", "poolInfo": {"poolId": "p"}, "allowTaskPreemption": True}),
        (
            "POST",
            "/jobs",
            {"id": "j-501b", "poolInfo": {"poolId": "p"}, "networkConfiguration": {"subnetId": "s"}},
        ),
    ],
)
def test_unimplemented_operation_501(raw: Raw, pool: str, method: str, path: str, body: Any) -> None:
    before = raw.json(f"/pools/{pool}")
    r = raw.request(method, path.format(pool=pool), json_body=body)
    assert_error(r, 501, "NotImplemented")
    assert raw.json(f"/pools/{pool}")["eTag"] == before["eTag"]


# --- query and header values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params,code",
    [
        ({"maxresults": "0"}, "OutOfRangeQueryParameterValue"),
        ({"maxresults": "1001"}, "OutOfRangeQueryParameterValue"),
        ({"maxresults": "ten"}, "InvalidQueryParameterValue"),
        ({"$filter": "id eq"}, "InvalidQueryParameterValue"),
        ({"$filter": "state eq 'nosuchstate' or"}, "InvalidQueryParameterValue"),
    ],
)
def test_bad_list_query(raw: Raw, params: dict[str, str], code: str) -> None:
    assert_error(raw.get("/pools", params=params), 400, code)


def test_bad_conditional_header_value(raw: Raw, pool: str) -> None:
    assert_error(
        raw.get(f"/pools/{pool}", headers={"If-Modified-Since": "yesterday"}),
        400,
        "InvalidHeaderValue",
        HeaderName="If-Modified-Since",
    )
    before = raw.json(f"/pools/{pool}")
    r = raw.request(
        "PATCH",
        f"/pools/{pool}",
        json_body={"metadata": [{"name": "x", "value": "y"}]},
        headers={"If-Unmodified-Since": "not a date"},
    )
    assert_error(r, 400, "InvalidHeaderValue")
    assert raw.json(f"/pools/{pool}")["eTag"] == before["eTag"]


def test_sdk_sees_batch_errors(client: Any) -> None:
    """The official client turns these bodies into its exceptions with code and message intact."""
    from azure.batch import models as m
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    with pytest.raises(ResourceNotFoundError) as nf:
        client.get_pool("no-such-pool-" + uuid.uuid4().hex[:6])
    assert nf.value.error is not None and nf.value.error.code == "PoolNotFound"
    assert "(PoolNotFound) The specified pool does not exist." in str(nf.value)

    with pytest.raises(HttpResponseError) as bad:
        client.create_job(m.BatchJobCreateOptions(id="bad id", pool_info=m.BatchPoolInfo(pool_id="p")))
    assert bad.value.status_code == 400
    assert bad.value.error is not None and bad.value.error.code == "InvalidPropertyValue"
