"""Bad pool start tasks on pool create, PATCH and updateproperties: 400s naming the property, nothing written.

Rules: decision 0110 (`models/starttask.py`); shapes: reference models_dump_15.1.0.md `BatchStartTask`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.live import LiveServer
from tests.support.raw import Raw, assert_error, pool_body, raw_deleting_pools


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Iterator[Raw]:
    yield from raw_deleting_pools(live)


@pytest.fixture(scope="module")
def pool(raw: Raw) -> str:
    pid = "stin-" + uuid.uuid4().hex[:6]
    body = pool_body(
        pid, 0, startTask={"commandLine": "/bin/true"}, userAccounts=[{"name": "ops", "password": "x"}]
    )
    r = raw.post("/pools", body)
    assert r.status_code == 201, r.text()
    return pid


BAD: list[tuple[dict[str, Any], int, str, str]] = [
    ({}, 400, "MissingRequiredProperty", "startTask.commandLine"),
    ({"commandLine": "  "}, 400, "MissingRequiredProperty", "startTask.commandLine"),
    (
        {"commandLine": "x", "maxTaskRetryCount": -2},
        400,
        "InvalidPropertyValue",
        "startTask.maxTaskRetryCount",
    ),
    (
        {"commandLine": "x", "maxTaskRetryCount": "many"},
        400,
        "InvalidPropertyValue",
        "startTask.maxTaskRetryCount",
    ),
    (
        {"commandLine": "x", "waitForSuccess": "maybe"},
        400,
        "InvalidPropertyValue",
        "startTask.waitForSuccess",
    ),
    (
        {"commandLine": "x", "userIdentity": {"username": "nobody"}},
        400,
        "InvalidPropertyValue",
        "startTask.userIdentity.username",
    ),
    (
        {"commandLine": "x", "userIdentity": {"username": "ops", "autoUser": {"scope": "pool"}}},
        400,
        "InvalidPropertyValue",
        "startTask.userIdentity",
    ),
    (
        {"commandLine": "x", "userIdentity": {"autoUser": {"scope": "node"}}},
        400,
        "InvalidPropertyValue",
        "startTask.userIdentity.autoUser.scope",
    ),
    (
        {
            "commandLine": "x",
            "environmentSettings": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
        },
        400,
        "InvalidPropertyValue",
        "startTask.environmentSettings[1].name",
    ),
    (
        {"commandLine": "x", "environmentSettings": [{"name": "A=B", "value": "1"}]},
        400,
        "InvalidPropertyValue",
        "startTask.environmentSettings[0].name",
    ),
    (
        {"commandLine": "x", "resourceFiles": [{"filePath": "a.txt"}]},
        400,
        "InvalidPropertyValue",
        "startTask.resourceFiles[0]",
    ),
    (
        {"commandLine": "x", "resourceFiles": [{"httpUrl": "ftp://example.com/a", "filePath": "a"}]},
        400,
        "InvalidPropertyValue",
        "startTask.resourceFiles[0].httpUrl",
    ),
    (
        {"commandLine": "x", "resourceFiles": [{"httpUrl": "http://example.com/a", "filePath": "../a"}]},
        400,
        "InvalidPropertyValue",
        "startTask.resourceFiles[0].filePath",
    ),
    ({"commandLine": "x", "bogus": 1}, 400, "UnsupportedProperty", "startTask.bogus"),
]


def _check(r: Any, status: int, code: str, prop: str) -> None:
    body = assert_error(r, status, code)
    values = {v["key"]: v["value"] for v in body.get("values") or []}
    assert values.get("PropertyName", "").startswith(prop), (values, prop)


@pytest.mark.parametrize("st,status,code,prop", BAD)
def test_bad_start_task_on_create(raw: Raw, st: dict[str, Any], status: int, code: str, prop: str) -> None:
    pid = "stbad-" + uuid.uuid4().hex[:6]
    body = pool_body(pid, 0, startTask=st, userAccounts=[{"name": "ops", "password": "x"}])
    _check(raw.post("/pools", body), status, code, prop)
    assert_error(raw.get(f"/pools/{pid}"), 404, "PoolNotFound")


@pytest.mark.parametrize("st,status,code,prop", BAD)
def test_bad_start_task_on_patch_and_updateproperties(
    raw: Raw, pool: str, st: dict[str, Any], status: int, code: str, prop: str
) -> None:
    before = raw.json(f"/pools/{pool}")
    _check(raw.request("PATCH", f"/pools/{pool}", json_body={"startTask": st}), status, code, prop)
    replace = {"startTask": st, "applicationPackageReferences": [], "metadata": []}
    _check(raw.post(f"/pools/{pool}/updateproperties", replace), status, code, prop)
    after = raw.json(f"/pools/{pool}")
    assert after["startTask"] == before["startTask"] and after["eTag"] == before["eTag"]


def test_start_task_size_limit_and_containers(raw: Raw, pool: str) -> None:
    big = {
        "commandLine": "x",
        "environmentSettings": [{"name": f"V{i}", "value": "x" * 100} for i in range(400)],
    }
    assert_error(raw.post("/pools", pool_body("stbig", 0, startTask=big)), 413, "RequestBodyTooLarge")
    assert_error(
        raw.request("PATCH", f"/pools/{pool}", json_body={"startTask": big}), 413, "RequestBodyTooLarge"
    )
    container = {"commandLine": "x", "containerSettings": {"imageName": "ubuntu"}}
    assert_error(raw.post("/pools", pool_body("stctr", 0, startTask=container)), 501, "NotImplemented")
    assert_error(raw.get("/pools/stbig"), 404, "PoolNotFound")


def test_start_task_defaults_and_updates(raw: Raw, pool: str) -> None:
    st = raw.json(f"/pools/{pool}")["startTask"]
    assert st == {
        "commandLine": "/bin/true",
        "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}},
        "maxTaskRetryCount": 0,
        "waitForSuccess": True,
    }
    r = raw.request(
        "PATCH",
        f"/pools/{pool}",
        json_body={"startTask": {"commandLine": "/bin/echo", "userIdentity": {"username": "ops"}}},
    )
    assert r.status_code == 200, r.text()
    st = raw.json(f"/pools/{pool}")["startTask"]
    assert st["userIdentity"] == {"username": "ops"} and st["waitForSuccess"] is True
    r = raw.request("PATCH", f"/pools/{pool}", json_body={"displayName": "kept"})  # absent: unchanged
    assert r.status_code == 200 and raw.json(f"/pools/{pool}")["startTask"]["commandLine"] == "/bin/echo"
    r = raw.post(f"/pools/{pool}/updateproperties", {"applicationPackageReferences": [], "metadata": []})
    assert r.status_code == 204, r.text()
    assert "startTask" not in raw.json(f"/pools/{pool}")  # updateproperties without it removes it


def test_start_task_update_on_a_deleting_pool(raw: Raw) -> None:
    pid = "stdel-" + uuid.uuid4().hex[:6]
    assert raw.post("/pools", pool_body(pid, 0)).status_code == 201
    assert raw.delete(f"/pools/{pid}").status_code == 202
    r = raw.request("PATCH", f"/pools/{pid}", json_body={"startTask": {"commandLine": "x"}})
    if r.status_code != 404:  # it may already be gone
        assert_error(r, 409, "PoolBeingDeleted")


def test_start_task_in_an_old_api_version(raw: Raw) -> None:
    """2018-08-01.7.0 names a resource file's URL `blobSource`: stored as `httpUrl`, returned as it was sent."""
    pid = "stold-" + uuid.uuid4().hex[:6]
    old = "2018-08-01.7.0"
    st = {
        "commandLine": "/bin/true",
        "resourceFiles": [{"blobSource": "http://example.com/a", "filePath": "a"}],
    }
    r = raw.post("/pools", pool_body(pid, 0, startTask=st), api_version=old)
    assert r.status_code == 201, r.text()
    assert raw.json(f"/pools/{pid}")["startTask"]["resourceFiles"] == [
        {"httpUrl": "http://example.com/a", "filePath": "a"}
    ]
    shown = raw.json(f"/pools/{pid}", api_version=old)["startTask"]
    assert shown["resourceFiles"] == [{"blobSource": "http://example.com/a", "filePath": "a"}]
    assert shown["waitForSuccess"] is True and shown["maxTaskRetryCount"] == 0
