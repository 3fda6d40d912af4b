"""HTTP contract of the implemented operations, checked on the wire with Shared Key signed raw requests.

Exact success codes and headers, defaults materialised on GET, conditional requests, paging, $select and
$filter, file reads, and the account-level lists; see shared/reference/azure-batch-api/rest_api.md §1.3-1.9.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.exceptions import HttpResponseError

from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error, assert_headers, pool_body

INFINITE = "P10675199DT2H48M5.4775807S"
ETAG_RE = re.compile(r"^0x[0-9A-F]{15}$")
STDOUT = b"hello world\n"


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Iterator[Raw]:
    r = Raw(live)
    yield r
    # Pools with nodes keep agents long-polling, which stalls the server's graceful shutdown past the
    # fixture's stop timeout: delete every pool (and so its nodes) before the server is stopped.
    ids = [p["id"] for p in r.json("/pools", params={"$select": "id"})["value"]]
    for pid in ids:
        r.delete(f"/pools/{pid}")
    wait_for(lambda: not r.json("/pools")["value"], 30, 0.1, "pools to be deleted")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create(raw: Raw, path: str, body: dict[str, Any]) -> None:
    r = raw.post(path, body)
    assert r.status_code == 201, r.text()


def make_pool(raw: Raw, nodes: int | str = 0, **extra: Any) -> str:
    """A pool whose allocation has settled (the pool manager's own write), so its ETag holds still."""
    pid = new_id("pool")
    create(raw, "/pools", pool_body(pid, nodes, **extra))
    wait_for(
        lambda: raw.json(f"/pools/{pid}")["allocationState"] == "steady", 30, 0.05, f"{pid} to be steady"
    )
    return pid


def make_job(raw: Raw, pool_id: str, **extra: Any) -> str:
    jid = new_id("job")
    create(raw, "/jobs", {"id": jid, "poolInfo": {"poolId": pool_id}, **extra})
    return jid


def assert_written(resp: Any, status: int, path: str, raw: Raw, location: bool = False) -> str:
    """A write's response: exact status, empty body, DataServiceId (+Location), ETag and Last-Modified."""
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text()}"
    assert_headers(resp)
    assert resp.content == b""
    assert resp.headers["DataServiceId"] == raw.endpoint + path
    if location:
        assert resp.headers["Location"] == raw.endpoint + path
    etag = resp.headers["ETag"]
    assert ETAG_RE.match(etag), etag
    assert parsedate_to_datetime(resp.headers["Last-Modified"]).tzinfo is not None
    return str(etag)


def assert_entity_headers(resp: Any) -> dict[str, Any]:
    """GET of an entity: 200, ETag/Last-Modified headers matching the body's eTag/lastModified."""
    assert resp.status_code == 200, resp.text()
    assert_headers(resp)
    body: dict[str, Any] = resp.json()
    assert resp.headers["ETag"] == body["eTag"]
    lm = datetime.strptime(body["lastModified"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    assert parsedate_to_datetime(resp.headers["Last-Modified"]) == lm
    return body


# --- a pool with one node and a finished task, shared by the file and node-count tests --------------------


@pytest.fixture(scope="module")
def ran(raw: Raw) -> dict[str, str]:
    pid = new_id("nodepool")
    # az sends numbers as strings and durations in long form; both must be accepted
    r = raw.post("/pools", pool_body(pid, "1", resizeTimeout="PT15M00S"))
    assert r.status_code == 201, r.text()
    jid = make_job(raw, pid)
    tid = "t1"
    cmd = "/bin/sh -c 'echo hello world; mkdir -p sub/deeper; echo x > sub/a.txt; echo y > sub/deeper/b.txt'"
    create(raw, f"/jobs/{jid}/tasks", {"id": tid, "commandLine": cmd})

    def done() -> dict[str, Any] | None:
        t = raw.json(f"/jobs/{jid}/tasks/{tid}")
        return t if t["state"] == "completed" else None

    task = wait_for(done, 60, 0.1, "the file task to complete")
    assert task["executionInfo"]["exitCode"] == 0, task
    return {"pool": pid, "job": jid, "task": tid, "node": task["nodeInfo"]["nodeId"]}


# --- create/read headers and defaults -----------------------------------------------------------------------


def test_create_pool_201_headers_and_get_etag(raw: Raw) -> None:
    pid = new_id("pool")
    r = raw.post("/pools", pool_body(pid))
    etag = assert_written(r, 201, f"/pools/{pid}", raw, location=True)
    body = assert_entity_headers(raw.get(f"/pools/{pid}"))
    if body["lastModified"] == body["creationTime"]:
        assert body["eTag"] == etag
    else:  # the pool manager has already moved the allocation state on
        assert body["eTag"] != etag and body["allocationState"] == "steady"
    assert body["id"] == pid
    assert body["url"] == f"{raw.endpoint}/pools/{pid}"
    assert body["odata.metadata"].endswith("$metadata#pools/@Element")


def test_pool_defaults_materialised(raw: Raw) -> None:
    pid = make_pool(raw)
    p = raw.json(f"/pools/{pid}")
    assert p["resizeTimeout"] == "PT15M"
    assert p["taskSlotsPerNode"] == 1
    assert p["taskSchedulingPolicy"]["nodeFillType"] == "Spread"
    assert p["virtualMachineConfiguration"]["imageReference"]["version"] == "latest"
    assert p["enableAutoScale"] is False
    assert p["enableInterNodeCommunication"] is False
    assert p["state"] == "active"
    assert p["allocationState"] in ("resizing", "steady")
    assert p["currentDedicatedNodes"] == 0 and p["targetDedicatedNodes"] == 0
    assert p["currentLowPriorityNodes"] == 0 and p["targetLowPriorityNodes"] == 0


def test_az_quirk_bodies_accepted(raw: Raw, ran: dict[str, str]) -> None:
    p = raw.json(f"/pools/{ran['pool']}")
    assert p["targetDedicatedNodes"] == 1  # sent as the string "1"
    assert p["resizeTimeout"] == "PT15M"  # sent as "PT15M00S", read back in the service's form


def test_durations_read_back_normalised(raw: Raw) -> None:
    pid = new_id("dur")
    create(raw, "/pools", pool_body(pid, resizeTimeout="PT15M00S"))
    jid = new_id("dur")
    create(
        raw,
        "/jobs",
        {"id": jid, "poolInfo": {"poolId": pid}, "constraints": {"maxWallClockTime": "P3Y6M4DT12H30M5S"}},
    )
    assert raw.json(f"/jobs/{jid}")["constraints"]["maxWallClockTime"] == "P1279DT12H30M5S"
    assert raw.json(f"/pools/{pid}")["resizeTimeout"] == "PT15M"


def test_job_defaults_materialised(raw: Raw) -> None:
    pid = make_pool(raw)
    r = raw.post("/jobs", {"id": (jid := new_id("job")), "poolInfo": {"poolId": pid}})
    assert_written(r, 201, f"/jobs/{jid}", raw, location=True)
    j = assert_entity_headers(raw.get(f"/jobs/{jid}"))
    assert j["priority"] == 0
    assert j["maxParallelTasks"] == -1
    assert j["constraints"] == {"maxWallClockTime": INFINITE, "maxTaskRetryCount": 0}
    assert j["onAllTasksComplete"] == "noaction"
    assert j["onTaskFailure"] == "noaction"
    assert j["usesTaskDependencies"] is False
    assert j["allowTaskPreemption"] is False
    assert j["state"] == "active"
    assert j["executionInfo"]["poolId"] == pid


def test_task_defaults_materialised(raw: Raw) -> None:
    jid = make_job(raw, make_pool(raw))
    r = raw.post(f"/jobs/{jid}/tasks", {"id": "t", "commandLine": "true"})
    assert_written(r, 201, f"/jobs/{jid}/tasks/t", raw, location=True)
    t = assert_entity_headers(raw.get(f"/jobs/{jid}/tasks/t"))
    assert t["constraints"] == {"maxWallClockTime": INFINITE, "retentionTime": "P7D", "maxTaskRetryCount": 0}
    assert t["requiredSlots"] == 1
    assert t["userIdentity"] == {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}
    assert t["executionInfo"]["retryCount"] == 0
    assert t["executionInfo"]["requeueCount"] == 0
    assert t["state"] == "active"
    assert t["url"] == f"{raw.endpoint}/jobs/{jid}/tasks/t"


# --- exact success codes of every write --------------------------------------------------------------------


def test_pool_write_status_codes(raw: Raw) -> None:
    pid = make_pool(raw)
    path = f"/pools/{pid}"
    before = raw.json(path)["eTag"]

    r = raw.request("PATCH", path, json_body={"metadata": [{"name": "a", "value": "1"}]})
    etag = assert_written(r, 200, path, raw)
    assert etag != before
    assert raw.json(path)["metadata"] == [{"name": "a", "value": "1"}]

    r = raw.post(f"{path}/updateproperties", {"applicationPackageReferences": [], "metadata": []})
    assert_written(r, 204, path, raw)
    assert "metadata" not in raw.json(path)

    r = raw.post(f"{path}/resize", {"targetDedicatedNodes": 0, "resizeTimeout": "PT10M"})
    assert_written(r, 202, path, raw)
    r = raw.post(f"{path}/stopresize")
    assert_written(r, 202, path, raw)

    r = raw.delete(path)
    assert r.status_code == 202, r.text()
    assert_headers(r)
    assert r.content == b""

    def gone_or_deleting() -> bool:
        g = raw.get(path)
        return g.status_code == 404 or (g.status_code == 200 and g.json()["state"] == "deleting")

    wait_for(gone_or_deleting, 10, 0.05, "the pool to be deleting")


def test_job_write_status_codes(raw: Raw) -> None:
    pid = make_pool(raw)
    jid = make_job(raw, pid, metadata=[{"name": "m", "value": "v"}])
    path = f"/jobs/{jid}"
    before = raw.json(path)["eTag"]

    etag = assert_written(raw.request("PATCH", path, json_body={"priority": 5}), 200, path, raw)
    assert etag != before
    assert raw.json(path)["priority"] == 5

    r = raw.request("PUT", path, json_body={"poolInfo": {"poolId": pid}, "onAllTasksComplete": "noaction"})
    assert_written(r, 200, path, raw)
    j = raw.json(path)
    assert j["priority"] == 0 and "metadata" not in j  # PUT resets what it does not name

    assert_written(raw.post(f"{path}/disable", {"disableTasks": "requeue"}), 202, path, raw)
    wait_for(lambda: raw.json(path)["state"] == "disabled", 10, 0.05, "the job to be disabled")
    assert_written(raw.post(f"{path}/enable"), 202, path, raw)
    wait_for(lambda: raw.json(path)["state"] == "active", 10, 0.05, "the job to be active again")
    assert_written(raw.post(f"{path}/terminate", {"terminateReason": "because"}), 202, path, raw)
    j = wait_for(lambda: (b := raw.json(path))["state"] == "completed" and b, 10, 0.05, "the job to complete")
    assert j["executionInfo"]["terminateReason"] == "because"

    r = raw.delete(path)
    assert r.status_code == 202, r.text()
    assert_headers(r)
    assert r.content == b""
    wait_for(lambda: raw.get(path).status_code == 404, 10, 0.05, "the job to be deleted")


def test_task_write_status_codes(raw: Raw) -> None:
    jid = make_job(raw, make_pool(raw))  # no nodes: the task stays active
    path = f"/jobs/{jid}/tasks/t"
    create(raw, f"/jobs/{jid}/tasks", {"id": "t", "commandLine": "true"})

    r = raw.request("PUT", path, json_body={"constraints": {"maxTaskRetryCount": 3}})
    assert_written(r, 200, path, raw)
    assert raw.json(path)["constraints"]["maxTaskRetryCount"] == 3

    assert_written(raw.post(f"{path}/terminate"), 204, path, raw)
    t = raw.json(path)
    assert t["state"] == "completed"
    assert t["executionInfo"]["result"] == "failure"

    assert_written(raw.post(f"{path}/reactivate"), 204, path, raw)
    assert raw.json(path)["state"] == "active"

    r = raw.delete(path)
    assert r.status_code == 200, r.text()
    assert_headers(r)
    assert r.content == b""
    assert_error(raw.get(path), 404, "TaskNotFound")


def test_addtaskcollection_200_success(raw: Raw) -> None:
    jid = make_job(raw, make_pool(raw))
    tasks = [{"id": f"t{i}", "commandLine": "true"} for i in range(5)]
    r = raw.post(f"/jobs/{jid}/addtaskcollection", {"value": tasks})
    assert r.status_code == 200, r.text()
    assert_headers(r)
    body = r.json()
    assert body["odata.metadata"].endswith("$metadata#taskaddresult")
    by_id = {x["taskId"]: x for x in body["value"]}
    assert set(by_id) == {t["id"] for t in tasks}
    for tid, res in by_id.items():
        assert res["status"] == "Success"
        assert ETAG_RE.match(res["eTag"])
        assert res["location"] == f"{raw.endpoint}/jobs/{jid}/tasks/{tid}"
        assert "lastModified" in res and "error" not in res
    counts = raw.json(f"/jobs/{jid}/taskcounts")["taskCounts"]
    assert counts["active"] + counts["running"] + counts["completed"] == 5


# --- headers on every response ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/pools"),
        ("GET", "/pools/no-such-pool"),
        ("GET", "/jobs/no-such-job/tasks"),
        ("GET", "/no/such/route"),
        ("GET", "/jobschedules"),
        ("DELETE", "/jobs/no-such-job"),
        ("HEAD", "/pools/no-such-pool"),
    ],
)
def test_request_id_and_dataserviceversion_on_every_response(raw: Raw, method: str, path: str) -> None:
    r = raw.request(method, path)
    assert_headers(r)
    if r.status_code >= 400 and method != "HEAD":
        assert r.json()["message"]["value"].split("\nRequestId:")[1].startswith(r.headers["request-id"])


def test_client_request_id_echoed_only_when_asked(raw: Raw) -> None:
    crid = str(uuid.uuid4())
    r = raw.get("/pools", headers={"client-request-id": crid, "return-client-request-id": "true"})
    assert r.headers.get("client-request-id") == crid
    r = raw.get(
        "/pools/no-such-pool", headers={"client-request-id": crid, "return-client-request-id": "true"}
    )
    assert r.status_code == 404 and r.headers.get("client-request-id") == crid
    r = raw.get("/pools", headers={"client-request-id": crid})
    assert "client-request-id" not in r.headers
    r = raw.get("/pools", headers={"client-request-id": crid, "return-client-request-id": "false"})
    assert "client-request-id" not in r.headers
    assert r.headers["request-id"] != crid


# --- conditional requests ----------------------------------------------------------------------------------


def test_if_match_stale_412_then_matching_200(raw: Raw) -> None:
    pid = make_pool(raw)
    path = f"/pools/{pid}"
    old = raw.get(path).headers["ETag"]
    assert_written(
        raw.request("PATCH", path, json_body={"metadata": [{"name": "k", "value": "1"}]}), 200, path, raw
    )
    current = raw.json(path)
    assert current["eTag"] != old

    r = raw.request(
        "PATCH", path, json_body={"metadata": [{"name": "k", "value": "2"}]}, headers={"If-Match": f'"{old}"'}
    )
    assert_error(r, 412, "ConditionNotMet")
    after = raw.json(path)
    assert after["metadata"] == [{"name": "k", "value": "1"}] and after["eTag"] == current["eTag"]

    r = raw.request(
        "PATCH",
        path,
        json_body={"metadata": [{"name": "k", "value": "3"}]},
        headers={"If-Match": f'"{current["eTag"]}"'},
    )
    etag = assert_written(r, 200, path, raw)
    g = raw.get(path)
    assert g.headers["ETag"] == etag == g.json()["eTag"]
    assert g.json()["metadata"] == [{"name": "k", "value": "3"}]

    # a stale If-Match on delete leaves the pool alone too
    assert_error(raw.delete(path, headers={"If-Match": f'"{old}"'}), 412, "ConditionNotMet")
    assert raw.json(path)["state"] == "active"


def test_if_none_match_on_get_304(raw: Raw) -> None:
    jid = make_job(raw, make_pool(raw))
    etag = raw.get(f"/jobs/{jid}").headers["ETag"]
    r = raw.get(f"/jobs/{jid}", headers={"If-None-Match": f'"{etag}"'})
    assert r.status_code == 304
    assert_headers(r)
    assert r.content == b""
    r = raw.get(f"/jobs/{jid}", headers={"If-None-Match": '"0x8DD000000000000"'})
    assert r.status_code == 200 and r.json()["eTag"] == etag


def test_if_unmodified_since_older_on_put_412(raw: Raw) -> None:
    pid = make_pool(raw)
    jid = make_job(raw, pid, priority=7)
    job = raw.json(f"/jobs/{jid}")
    lm = datetime.strptime(job["lastModified"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    older = format_datetime(lm - timedelta(days=1), usegmt=True)
    r = raw.request(
        "PUT", f"/jobs/{jid}", json_body={"poolInfo": {"poolId": pid}}, headers={"If-Unmodified-Since": older}
    )
    assert_error(r, 412, "ConditionNotMet")
    after = raw.json(f"/jobs/{jid}")
    assert after["priority"] == 7 and after["eTag"] == job["eTag"]

    later = format_datetime(lm + timedelta(days=1), usegmt=True)
    r = raw.request(
        "PUT", f"/jobs/{jid}", json_body={"poolInfo": {"poolId": pid}}, headers={"If-Unmodified-Since": later}
    )
    assert_written(r, 200, f"/jobs/{jid}", raw)
    assert raw.json(f"/jobs/{jid}")["priority"] == 0


def test_head_pool(raw: Raw) -> None:
    pid = make_pool(raw)
    r = raw.request("HEAD", f"/pools/{pid}")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["ETag"] == raw.json(f"/pools/{pid}")["eTag"]
    r = raw.request("HEAD", f"/pools/{pid}-missing")
    assert r.status_code == 404 and r.content == b""
    assert_headers(r)


# --- paging, $select, $filter ------------------------------------------------------------------------------


def test_paging_next_link(raw: Raw, client: Any) -> None:
    prefix = "pg" + uuid.uuid4().hex[:6]
    ids = [f"{prefix}-{i}" for i in range(3)]
    for pid in ids:
        create(raw, "/pools", pool_body(pid))
    flt = f"startswith(id,'{prefix}')"
    r = raw.get("/pools", params={"maxresults": 1, "$filter": flt})
    assert r.status_code == 200
    page = r.json()
    seen = [p["id"] for p in page["value"]]
    assert len(seen) == 1
    links = []
    while "odata.nextLink" in page:
        link = page["odata.nextLink"]
        links.append(link)
        u = urlsplit(link)
        assert f"{u.scheme}://{u.netloc}" == raw.endpoint and u.path == "/pools", link
        q = parse_qs(u.query)
        assert q["api-version"] == ["2025-06-01"] and q["maxresults"] == ["1"], link
        assert q["$filter"] == [flt], link
        assert re.fullmatch(r"[A-Za-z0-9_-]+", q["$skiptoken"][0]), link
        nxt = raw.get("", url=link)
        assert nxt.status_code == 200, nxt.text()
        page = nxt.json()
        assert len(page["value"]) <= 1
        seen += [p["id"] for p in page["value"]]
    assert len(links) >= 2
    assert sorted(seen) == ids and len(set(seen)) == 3

    # the SDK follows the same links (it re-adds its own api-version)
    assert [p.id for p in client.list_pools(max_results=1, filter=flt)] == sorted(ids)
    everything = [p["id"] for p in raw.json("/pools")["value"]]
    assert len(list(client.list_pools(max_results=1))) == len(everything)


def test_select_omits_other_properties(raw: Raw) -> None:
    pid = make_pool(raw)
    listed = raw.json("/pools", params={"$select": "id,state", "$filter": f"id eq '{pid}'"})["value"]
    assert listed == [{"id": pid, "state": "active"}]
    one = raw.json(f"/pools/{pid}", params={"$select": "id,state"})
    assert {k for k in one if not k.startswith("odata.")} == {"id", "state"}


def test_filter_startswith_and_state(raw: Raw) -> None:
    pid = make_pool(raw)
    prefix = "flt" + uuid.uuid4().hex[:6]
    active, done = f"{prefix}-a", f"{prefix}-b"
    create(raw, "/jobs", {"id": active, "poolInfo": {"poolId": pid}})
    create(raw, "/jobs", {"id": done, "poolInfo": {"poolId": pid}})
    create(raw, "/jobs", {"id": "other" + prefix, "poolInfo": {"poolId": pid}})
    assert raw.post(f"/jobs/{done}/terminate").status_code == 202
    wait_for(lambda: raw.json(f"/jobs/{done}")["state"] == "completed", 10, 0.05, "the job to complete")

    got = raw.json("/jobs", params={"$filter": f"startswith(id,'{prefix}')"})["value"]
    assert sorted(j["id"] for j in got) == [active, done]
    got = raw.json("/jobs", params={"$filter": f"startswith(id,'{prefix}') and state eq 'active'"})["value"]
    assert [j["id"] for j in got] == [active]
    got = raw.json("/jobs", params={"$filter": "state eq 'active'"})["value"]
    assert got and all(j["state"] == "active" for j in got)
    assert done not in {j["id"] for j in got}


@pytest.mark.parametrize("path,flt", [("/pools", "displayName eq 'x'"), ("/jobs", "nosuchprop eq 1")])
def test_unsupported_filter_property_400(raw: Raw, path: str, flt: str) -> None:
    r = raw.get(path, params={"$filter": flt})
    assert_error(r, 400, "InvalidQueryParameterValue", QueryParameterName="$filter")


# --- files ---------------------------------------------------------------------------------------------------


def test_file_get_with_ocp_range(raw: Raw, ran: dict[str, str]) -> None:
    base = f"/jobs/{ran['job']}/tasks/{ran['task']}/files"
    r = raw.get(f"{base}/stdout.txt", headers={"ocp-range": "bytes=0-4"})
    assert r.status_code == 200, r.text()
    assert_headers(r)
    assert r.content == b"hello"
    r = raw.get(f"{base}/stdout.txt")
    assert r.status_code == 200 and r.content == STDOUT
    assert r.headers["Content-Type"].startswith("text/plain")


def test_file_head_headers(raw: Raw, ran: dict[str, str]) -> None:
    path = f"/jobs/{ran['job']}/tasks/{ran['task']}/files/stdout.txt"
    r = raw.request("HEAD", path)
    assert r.status_code == 200
    assert_headers(r)
    assert r.content == b""
    assert r.headers["Content-Length"] == str(len(STDOUT))
    assert r.headers["ocp-batch-file-isdirectory"] == "False"
    assert r.headers["ocp-batch-file-url"] == (raw.endpoint + path).replace(":", "%3A").replace("/", "%2F")
    assert r.headers["ocp-batch-file-mode"]
    assert parsedate_to_datetime(r.headers["ocp-creation-time"])
    assert parsedate_to_datetime(r.headers["Last-Modified"])


def test_task_file_list_recursive(raw: Raw, ran: dict[str, str]) -> None:
    base = f"/jobs/{ran['job']}/tasks/{ran['task']}/files"
    flat = raw.json(base)["value"]
    names = {f["name"] for f in flat}
    assert {"stdout.txt", "stderr.txt"} <= names
    assert not any(n.endswith("a.txt") for n in names)

    deep = raw.json(base, params={"recursive": "true"})["value"]
    by_name = {f["name"]: f for f in deep}
    a = next(f for n, f in by_name.items() if n.endswith("sub/a.txt"))
    b = next(f for n, f in by_name.items() if n.endswith("sub/deeper/b.txt"))
    assert a["isDirectory"] is False and a["properties"]["contentLength"] == "2"
    assert b["url"] == f"{raw.endpoint}{base}/{b['name']}"
    sub = next(f for n, f in by_name.items() if n.endswith("sub"))
    assert sub["isDirectory"] is True and "properties" not in sub
    out = by_name["stdout.txt"]
    assert out["properties"]["contentLength"] == str(len(STDOUT))  # Int64 as a JSON string
    assert out["properties"]["contentType"].startswith("text/plain")


def test_invalid_range_416(raw: Raw, ran: dict[str, str]) -> None:
    r = raw.get(
        f"/jobs/{ran['job']}/tasks/{ran['task']}/files/stdout.txt", headers={"ocp-range": "bytes=100-200"}
    )
    assert_error(r, 416, "InvalidRange")
    r = raw.get(f"/jobs/{ran['job']}/tasks/{ran['task']}/files/nope.txt")
    assert_error(r, 404, "FileNotFound")


# --- account-level lists -------------------------------------------------------------------------------------


def test_nodecounts_shape(raw: Raw, ran: dict[str, str]) -> None:
    def counted() -> dict[str, Any] | None:
        items = raw.json("/nodecounts")["value"]
        mine = [c for c in items if c["poolId"] == ran["pool"]]
        return mine[0] if mine and mine[0]["dedicated"]["total"] == 1 else None

    c = wait_for(counted, 30, 0.1, "node counts for the node pool")
    states = {
        "creating",
        "idle",
        "offline",
        "preempted",
        "rebooting",
        "reimaging",
        "running",
        "starting",
        "startTaskFailed",
        "leavingPool",
        "unknown",
        "unusable",
        "waitingForStartTask",
        "total",
    }
    for kind in ("dedicated", "lowPriority"):
        assert states <= set(c[kind]), c[kind]
        assert all(isinstance(v, int) for v in c[kind].values())
        assert c[kind]["total"] == sum(v for k, v in c[kind].items() if k != "total")
    assert c["lowPriority"]["total"] == 0


def test_supportedimages_shape(raw: Raw, client: Any) -> None:
    r = raw.get("/supportedimages")
    assert r.status_code == 200
    body = r.json()
    assert body["odata.metadata"].endswith("$metadata#supportedimages")
    assert body["value"]
    for img in body["value"]:
        assert set(img["imageReference"]) >= {"publisher", "offer", "sku", "version"}
        assert img["osType"] in ("linux", "windows")
        assert img["verificationType"] in ("verified", "unverified")
        assert img.get("capabilities", ["omitted when empty"]), img  # the service omits an empty list
    assert "batch.node.ubuntu 22.04" in {i["nodeAgentSKUId"] for i in body["value"]}
    assert len(list(client.list_supported_images())) == len(body["value"])


def test_batch_client_send_request_signs(live: LiveServer, client: Any) -> None:
    """BatchClient.send_request runs the SDK's Shared Key policy (raw.py relies on the same policy)."""
    from azure.core.rest import HttpRequest

    resp = client.send_request(HttpRequest("GET", f"{live.endpoint}/pools?api-version=2025-06-01"))
    assert resp.status_code == 200
    assert resp.request.headers["Authorization"].startswith(f"SharedKey {live.account}:")
    assert resp.request.headers["ocp-date"]
    # but its BatchExceptionPolicy raises on any non-2xx, which is why raw.py builds its own pipeline
    with pytest.raises(HttpResponseError):
        client.send_request(HttpRequest("GET", f"{live.endpoint}/pools/nope?api-version=2025-06-01"))


def test_unimplemented_operation_through_sdk(client: Any) -> None:
    """What batchyard cannot honour reaches the SDK as a 501 Batch error (every operation exists now; some
    properties cannot be honoured: the scheduler never preempts a running task for another job's)."""
    import azure.batch.models as bm

    opts = bm.BatchJobCreateOptions(
        id="j501", pool_info=bm.BatchPoolInfo(pool_id="p501"), allow_task_preemption=True
    )
    with pytest.raises(HttpResponseError) as ei:
        client.create_job(opts)
    assert ei.value.status_code == 501
    assert ei.value.error is not None and ei.value.error.code == "NotImplemented"
