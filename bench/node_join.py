"""Node join time: create a pool with a start task -> every node idle.

Run: PYTHONPATH=src python bench/node_join.py [nodes] [rounds]
Starts one `batchyard server` and, per round, creates a pool of `nodes` (default 8) local nodes, alternating
between a pool without a start task and one whose start task is `/bin/true` (waitForSuccess, the default),
and times the pool create request -> every node `idle` (polled every 20 ms; nodes listed over raw HTTP). Also
reports each node's own join time (its `allocationTime` -> the moment it was first seen idle) and, with a
start task, its `startTaskInfo` run time. Prints p50 over the rounds as JSON. The pools are deleted between
rounds. Not part of the test suite.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.client import Server, wait_for  # noqa: E402

IMAGE = {"publisher": "canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts"}


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "")[:26] + "+00:00").timestamp()


def one_round(raw: Any, pool_id: str, nodes: int, start_task: dict[str, Any] | None) -> dict[str, float]:
    body: dict[str, Any] = {
        "id": pool_id,
        "vmSize": "standard_d2s_v3",
        "virtualMachineConfiguration": {"imageReference": IMAGE, "nodeAgentSKUId": "batch.node.ubuntu 22.04"},
        "targetDedicatedNodes": nodes,
    }
    if start_task is not None:
        body["startTask"] = start_task
    t0 = time.time()
    raw.ok("POST", "/pools", body=body)
    first_idle: dict[str, float] = {}
    listed: list[dict[str, Any]] = []

    def all_idle() -> bool:
        nonlocal listed
        listed = raw.list_all(f"/pools/{pool_id}/nodes")
        now = time.time()
        for n in listed:
            if n["state"] == "idle":
                first_idle.setdefault(n["id"], now)
        return len(listed) == nodes and all(n["state"] == "idle" for n in listed)

    wait_for(all_idle, 300, 0.02, "all nodes idle")
    wall = time.time() - t0
    per_node = [first_idle[n["id"]] - _ts(n["allocationTime"]) for n in listed]
    out = {"all_idle_s": wall, "node_join_p50_s": statistics.median(per_node)}
    if start_task is not None:
        runs = [
            _ts(n["startTaskInfo"]["endTime"]) - _ts(n["startTaskInfo"]["startTime"])
            for n in listed
            if n.get("startTaskInfo", {}).get("endTime")
        ]
        assert len(runs) == nodes and all(n["startTaskInfo"]["result"] == "success" for n in listed)
        out["start_task_run_p50_s"] = statistics.median(runs)
    raw.ok("DELETE", f"/pools/{pool_id}")
    wait_for(lambda: raw.request("GET", f"/pools/{pool_id}").status_code == 404, 120, 0.1, "pool deleted")
    return out


def main() -> None:
    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    work = Path(tempfile.mkdtemp(prefix="by-joinbench-", dir="/tmp"))
    work.chmod(0o755)
    srv = Server(work / "data").start()
    raw = srv.raw()
    results: dict[str, list[dict[str, float]]] = {"no_start_task": [], "start_task": []}
    try:
        one_round(raw, "warmup", nodes, None)
        for i in range(rounds):
            results["no_start_task"].append(one_round(raw, f"plain{i}", nodes, None))
            results["start_task"].append(
                one_round(raw, f"st{i}", nodes, {"commandLine": "/bin/true", "waitForSuccess": True})
            )
    finally:
        srv.stop()
    summary: dict[str, Any] = {"nodes": nodes, "rounds": rounds}
    for kind, rows in results.items():
        for key in rows[0]:
            summary[f"{kind}.{key}.p50"] = round(statistics.median(r[key] for r in rows), 3)
            summary[f"{kind}.{key}.all"] = [round(r[key], 3) for r in rows]
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
