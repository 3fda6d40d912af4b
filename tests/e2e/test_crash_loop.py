"""kill -9 the server 10 times during a 2,000-task job, restarting it on the same store each time.

What a user must see at the end: all 2,000 tasks completed successfully, none lost, none run twice without
being counted (a task's `requeueCount` is exactly the number of extra times it ran), and the job's task
counts agree. Only the server is killed; the agents (and their tasks) live on and are re-adopted.

Each task appends its id to `$AZ_BATCH_NODE_SHARED_DIR/runs.log` (the node's shared folder is a place every
task may write, as on Azure) and fails if it cannot, so the test counts real runs independently of what the
server says. Kills are spread over
the job by progress (after every ~1/12 of the tasks completes, and only once the restarted server has
completed some work), so all ten land while tasks are running.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import PG_URL, require_pg
from tests.support.live import LiveServer, kill_agents, wait_for
from tests.support.raw import Raw, pool_body

pytestmark = pytest.mark.slow

TASKS = 2000
KILLS = 10
NODES, SLOTS = 4, 4


def command(i: int) -> str:
    """Short but not instant: 0.05-0.20 s, spread deterministically."""
    sleep = 0.05 + (i * 37 % 16) * 0.01
    return f"/bin/sh -c 'echo $AZ_BATCH_TASK_ID >> $AZ_BATCH_NODE_SHARED_DIR/runs.log && sleep {sleep:.2f}'"


def completed(raw: Raw, job: str) -> int | None:
    """Completed task count, or None while the server is down or restarting."""
    try:
        r = raw.get(f"/jobs/{job}/taskcounts")
    except Exception:  # connection refused while the server is down
        return None
    return int(r.json()["taskCounts"]["completed"]) if r.status_code == 200 else None


def runs(data_dir: Path) -> Counter[str]:
    """How many times each task really started, from every node's shared runs.log."""
    out: Counter[str] = Counter()
    for log in (data_dir / "nodes").glob("*/shared/runs.log"):
        out.update(line.strip() for line in log.read_text().splitlines() if line.strip())
    return out


def list_all(raw: Raw, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """Every page of a list (1,000 items per page), following odata.nextLink."""
    page = raw.json(path, params=params)
    items = list(page["value"])
    while page.get("odata.nextLink"):
        r = raw.request("GET", "", url=page["odata.nextLink"])
        assert r.status_code == 200, r.text()
        page = r.json()
        items += page["value"]
    return items


def crash_loop(srv: LiveServer) -> dict[str, Any]:
    raw = Raw(srv)
    pool, job = "crash-pool", "crash-job"
    assert raw.post("/pools", pool_body(pool, NODES, taskSlotsPerNode=SLOTS)).status_code == 201
    wait_for(
        lambda: len([n for n in raw.json(f"/pools/{pool}/nodes")["value"] if n["state"] == "idle"]) == NODES,
        90,
        0.2,
        f"{NODES} idle nodes",
    )
    assert raw.post("/jobs", {"id": job, "poolInfo": {"poolId": pool}}).status_code == 201
    ids = [f"t{i:04d}" for i in range(TASKS)]
    for start in range(0, TASKS, 100):
        chunk = [{"id": ids[i], "commandLine": command(i)} for i in range(start, start + 100)]
        r = raw.post(f"/jobs/{job}/addtaskcollection", {"value": chunk})
        assert r.status_code == 200 and {x["status"] for x in r.json()["value"]} == {"Success"}, r.text()

    started = time.monotonic()
    kills: list[tuple[float, int]] = []
    previous = 0
    for k in range(1, KILLS + 1):
        # spread over the job, and never before the restarted server has completed some work
        threshold = max(k * TASKS // (KILLS + 2), previous + TASKS // 50)
        wait_for(lambda t=threshold: (completed(raw, job) or 0) >= t, 120, 0.05, f"{threshold} tasks done")
        n = completed(raw, job) or 0
        assert n < TASKS, f"the job finished before kill {k}; the tasks are too short for this loop"
        srv.kill(signal.SIGKILL)
        kills.append((round(time.monotonic() - started, 1), n))
        previous = n
        srv.start()  # same port, same data dir, same store
    timeline: list[tuple[float, int | None]] = []

    def finished() -> bool:
        n = completed(raw, job)
        timeline.append((round(time.monotonic() - started, 1), n))
        return n == TASKS

    wait_for(finished, 180, 0.5, "all tasks to complete")
    took = time.monotonic() - started

    tasks = list_all(raw, f"/jobs/{job}/tasks", {"$select": "id,state,executionInfo"})
    counts = raw.json(f"/jobs/{job}/taskcounts")
    return {
        "tasks": tasks,
        "counts": counts,
        "runs": runs(srv.data_dir),
        "kills": kills,
        "took": took,
        "tail": timeline,
    }


def check(result: dict[str, Any]) -> None:
    tasks, ran = result["tasks"], result["runs"]
    print(
        f"\ncrash loop: {TASKS} tasks, kills at (s, completed) {result['kills']}, done in {result['took']:.0f}s"
    )
    requeued = {t["id"]: t["executionInfo"].get("requeueCount", 0) for t in tasks if t.get("executionInfo")}
    print(
        f"  requeued tasks: {sum(1 for v in requeued.values() if v)}; tasks run more than once: "
        f"{sum(1 for v in ran.values() if v > 1)}"
    )
    print(f"  after the last restart (s, completed): {result['tail'][::4]}")
    problems: list[str] = []
    by_id = {t["id"]: t for t in tasks}
    lost = sorted({f"t{i:04d}" for i in range(TASKS)} - set(by_id))
    if lost:
        problems.append(f"{len(lost)} tasks lost: {lost[:10]}")
    for tid, t in sorted(by_id.items()):
        info = t.get("executionInfo") or {}
        if t["state"] != "completed" or info.get("result") != "success" or info.get("exitCode") != 0:
            problems.append(
                f"{tid}: state {t['state']} result {info.get('result')} exit {info.get('exitCode')}"
            )
        extra_runs = ran.get(tid, 0) - 1
        if ran.get(tid, 0) == 0:
            problems.append(f"{tid}: completed but never ran")
        if info.get("retryCount", 0) != 0:
            problems.append(f"{tid}: retryCount {info.get('retryCount')} (every run succeeds)")
        if info.get("requeueCount", 0) != extra_runs:
            problems.append(
                f"{tid}: ran {ran.get(tid, 0)} times but requeueCount is {info.get('requeueCount', 0)}"
            )
    c = result["counts"]["taskCounts"]
    if (c["active"], c["running"], c["completed"], c["succeeded"], c["failed"]) != (0, 0, TASKS, TASKS, 0):
        problems.append(f"task counts {c}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:60])


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir whose parents every user may traverse: tasks may run as their own OS users, and the
    node's shared folder must be reachable by its absolute path (pytest's tmp_path sits under a 0700 dir)."""
    base = Path(tempfile.mkdtemp(prefix="batchyard-crash-"))
    base.chmod(0o755)
    try:
        yield base / "data"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_crash_loop_sqlite(data_dir: Path) -> None:
    srv = LiveServer(data_dir)
    try:
        srv.start()
        check(crash_loop(srv))
    finally:
        srv.stop()
        kill_agents(srv.data_dir)


@pytest.fixture
def pg_url() -> Iterator[str]:
    require_pg()
    name = f"crash_{uuid.uuid4().hex}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


@pytest.mark.postgres
def test_crash_loop_postgres(data_dir: Path, pg_url: str) -> None:
    srv = LiveServer(data_dir, database_url=pg_url)
    try:
        srv.start()
        check(crash_loop(srv))
    finally:
        srv.stop()
        kill_agents(srv.data_dir)
