"""Task list pages spliced from stored JSON (api.rawlist) say exactly what the decoded path says."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from batchyard.api import rawlist
from batchyard.api import versions as api_versions
from batchyard.api.render import absolute as _absolute
from batchyard.models import versions
from batchyard.service.common import item

BASE = "http://127.0.0.1:1/acct"
NOW = "2026-12-03T15:00:00.0000000Z"


def _task(task_id: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": task_id,
        "commandLine": "/bin/true",
        "state": "active",
        "stateTransitionTime": NOW,
        "creationTime": NOW,
        "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}},
        "constraints": {"maxWallClockTime": "P10675199DT2H48M5.4775807S", "retentionTime": "P7D"},
        "requiredSlots": 1,
        "executionInfo": {"retryCount": 0, "requeueCount": 0},
        "eTag": "0x8DD0000000000001",
        "lastModified": NOW,
    }
    body.update(extra)
    return body


BODIES = [
    _task("plain"),
    _task("quotes", commandLine='/bin/sh -c "echo \\"_x\\" \\\\ \t é 🚀"'),
    _task("internal", _stats={"userCpuMs": 5}, _deps=None),
    _task("ran", state="completed", nodeInfo={"nodeId": "n1", "nodeUrl": "/pools/p/nodes/n1"}),
    _task("files", resourceFiles=[{"httpUrl": "https://example.invalid/a", "filePath": "a"}]),
    _task("env", environmentSettings=[{"name": "A", "value": "1"}], url="/stale"),
    _task("mounts", containerSettings={"imageName": "x", "containerHostBatchBindMounts": []}),
]


def _reference(version: str, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """What `api.render.collection` makes of one stored body (no $select)."""
    it = item({"body": body})
    out = _absolute(BASE, dict(it, url=f"{BASE}/jobs/{job_id}/tasks/{it['id']}"))
    return api_versions.response("tasks", version, out)


@pytest.mark.parametrize("version", sorted(versions.ACCEPTED))
@pytest.mark.parametrize("next_link", [None, f"{BASE}/jobs/j/tasks?$skiptoken=abc"])
def test_spliced_page_equals_the_decoded_page(version: str, next_link: str | None) -> None:
    skip = rawlist.needles("task", version)
    assert skip is not None  # task lists always take the spliced path where bodies allow
    rows = [(b["id"], msgspec.json.encode(b).decode()) for b in BODIES]
    data = rawlist.page_bytes(
        f"{BASE}/$metadata#tasks",
        rows,
        lambda task_id: f"{BASE}/jobs/j/tasks/{task_id}",
        lambda it: api_versions.response(
            "tasks", version, _absolute(BASE, dict(it, url=f"{BASE}/jobs/j/tasks/{it['id']}"))
        ),
        skip,
        next_link,
    )
    want: dict[str, Any] = {
        "odata.metadata": f"{BASE}/$metadata#tasks",
        "value": [_reference(version, "j", b) for b in BODIES],
    }
    if next_link:
        want["odata.nextLink"] = next_link
    assert json.loads(data) == want


def test_plain_bodies_are_not_decoded() -> None:
    """The point of the splice: a new task's stored body is served as it is in the newest versions."""
    text = msgspec.json.encode(_task("plain")).decode()
    for version in ("2024-07-01.20.0", versions.NEWEST):
        skip = rawlist.needles("task", version)
        assert skip is not None and not any(n in text for n in skip)

    def never(_: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("decoded")

    data = rawlist.page_bytes("m", [("plain", text)], lambda t: f"{BASE}/{t}", never, skip, None)
    assert json.loads(data)["value"][0]["url"] == f"{BASE}/plain"


def test_unknown_version_takes_the_ordinary_path() -> None:
    assert rawlist.needles("task", "2099-01-01.99.0") is None
