"""Task and node file routes against hostile files and paths (issue 7 items 1, 3 and 9; decision 0011).

A FIFO never blocks the server, special files, symlinks and hard links are never served or listed,
agent-internal files are neither readable nor deletable, and malformed paths get a 4xx Batch error.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error, pool_body, raw_deleting_pools


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    data_dir = Path(tempfile.mkdtemp(prefix="batchyard-files-", dir="/tmp"))
    srv = LiveServer(data_dir).start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Iterator[Raw]:
    yield from raw_deleting_pools(live)


SCRIPT = (
    "mkfifo fifo && mkdir d && echo ok > plain && echo orig > orig && ln orig linked && "
    "ln -s /etc/passwd sym && ln -s / rootlink && echo data > d/inner"
)


@pytest.fixture(scope="module")
def ran(raw: Raw) -> dict[str, str]:
    pid = f"files-{uuid.uuid4().hex[:8]}"
    assert raw.post("/pools", pool_body(pid, 1)).status_code == 201
    jid = f"job-{uuid.uuid4().hex[:8]}"
    assert raw.post("/jobs", {"id": jid, "poolInfo": {"poolId": pid}}).status_code == 201
    r = raw.post(f"/jobs/{jid}/tasks", {"id": "t", "commandLine": f"/bin/sh -c {shlex.quote(SCRIPT)}"})
    assert r.status_code == 201, r.text()

    def done() -> dict[str, Any] | None:
        t = raw.json(f"/jobs/{jid}/tasks/t")
        return t if t["state"] == "completed" else None

    t = wait_for(done, 60, 0.05, "the task to complete")
    assert t["executionInfo"]["exitCode"] == 0, raw.get(f"/jobs/{jid}/tasks/t/files/stderr.txt").content
    node = t["nodeInfo"]["nodeId"]
    return {
        "pool": pid,
        "job": jid,
        "node": node,
        "task_files": f"/jobs/{jid}/tasks/t/files",
        "node_files": f"/pools/{pid}/nodes/{node}/files",
        "wd_rel": f"workitems/{jid}/job-1/t/wd",
    }


def _get_in_background(raw: Raw, path: str) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def go() -> None:
        try:
            out.append(raw.get(path))
        except Exception as exc:  # the assertion below reports it
            out.append(exc)

    th = threading.Thread(target=go, daemon=True)
    th.start()
    return th, out


@pytest.mark.parametrize("route", ["task", "node"])
def test_fifo_is_not_served_and_never_blocks_the_server(raw: Raw, ran: dict[str, str], route: str) -> None:
    path = f"{ran['task_files']}/wd/fifo" if route == "task" else f"{ran['node_files']}/{ran['wd_rel']}/fifo"
    th, out = _get_in_background(raw, path)
    th.join(10)
    # Whatever happened to that request, the server keeps answering others at once.
    t0 = time.monotonic()
    assert raw.get("/pools").status_code == 200
    assert time.monotonic() - t0 < 5, "the server stalled"
    assert not th.is_alive(), "GET of a FIFO hangs"
    assert_error(out[0], 404, "FileNotFound")


def test_special_files_symlinks_and_hard_links_are_neither_listed_nor_served(
    raw: Raw, ran: dict[str, str]
) -> None:
    names = {f["name"] for f in raw.json(ran["task_files"], params={"recursive": "true"})["value"]}
    assert {"wd/plain", "wd/d", "wd/d/inner", "stdout.txt"} <= names, names
    for hidden in ("wd/fifo", "wd/sym", "wd/rootlink", "wd/orig", "wd/linked"):
        assert hidden not in names
    assert raw.get(f"{ran['task_files']}/wd/plain").content == b"ok\n"
    for bad in ("wd/sym", "wd/rootlink/etc/passwd", "wd/linked", "wd/orig", "wd/rootlink"):
        assert_error(raw.get(f"{ran['task_files']}/{bad}"), 404, "FileNotFound")
        assert raw.request("HEAD", f"{ran['task_files']}/{bad}").status_code == 404


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a file owned by another user")
def test_file_owned_by_a_foreign_user_is_not_served(raw: Raw, ran: dict[str, str], live: LiveServer) -> None:
    wd = live.data_dir / "nodes" / ran["node"] / ran["wd_rel"]
    planted = wd / "foreign"
    planted.write_text("not the task's")
    os.chown(planted, 12345, 12345)  # e.g. moved in from another user's directory
    assert_error(raw.get(f"{ran['task_files']}/wd/foreign"), 404, "FileNotFound")
    names = {f["name"] for f in raw.json(f"{ran['task_files']}", params={"recursive": "true"})["value"]}
    assert "wd/foreign" not in names


@pytest.mark.parametrize("route", ["task", "node"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
def test_nul_byte_and_overlong_names_are_400(raw: Raw, ran: dict[str, str], route: str, method: str) -> None:
    base = ran["task_files"] if route == "task" else ran["node_files"]
    for suffix in ("wd/%00", "wd/a%00b", "x" * 10_000, "wd/" + "y" * 300):
        r = raw.request(method, f"{base}/{suffix}")
        assert r.status_code == 400, (suffix[:20], r.status_code)
        if method != "HEAD":
            assert_error(r, 400, "InvalidUri")


def test_agent_log_is_neither_listed_nor_readable_nor_deletable(
    raw: Raw, ran: dict[str, str], live: LiveServer
) -> None:
    log = live.data_dir / "nodes" / ran["node"] / ".agent.log"
    assert log.exists()
    for params in ({}, {"recursive": "true"}):
        names = {f["name"] for f in raw.json(ran["node_files"], params=params)["value"]}
        assert not any(n.startswith(".agent") for n in names)
    for path in (".agent.log",):
        assert_error(raw.get(f"{ran['node_files']}/{path}"), 404, "FileNotFound")
        assert_error(raw.delete(f"{ran['node_files']}/{path}"), 404, "FileNotFound")
    assert log.exists()


def test_delete_through_symlink_does_not_escape(raw: Raw, ran: dict[str, str]) -> None:
    assert_error(raw.delete(f"{ran['task_files']}/wd/rootlink/etc/hostname"), 404, "FileNotFound")
    assert Path("/etc/hostname").exists()
    r = raw.delete(f"{ran['task_files']}/wd/d", params={"recursive": "true"})
    assert r.status_code == 200
    assert_error(raw.get(f"{ran['task_files']}/wd/d/inner"), 404, "FileNotFound")
