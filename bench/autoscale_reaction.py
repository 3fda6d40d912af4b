"""Autoscale reaction time: a burst of queued tasks to the extra nodes ready, and back to empty when idle.

Run: PYTHONPATH=src python bench/autoscale_reaction.py [tasks] [max_nodes]
Starts `batchyard server --autoscale-min-interval PT1S` (the shortest interval this benchmark configures), an
empty autoscale pool whose formula follows `$PendingTasks` (interval PT1S), submits the burst with
addtaskcollection (the tasks wait for a go-file, so the work stays queued), and times:
  - burst submitted → the formula's new target on the pool (the autoscale run),
  - burst submitted → every target node idle or running (the extra nodes ready),
  - go-file created → the pool back to zero nodes (scale down when idle, taskcompletion).
For comparison, the service evaluates at most every 5 minutes and its nodes take minutes to start.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.client import Server, collection_bodies, wait_for  # noqa: E402

IMAGE = {"publisher": "canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts"}


def main() -> None:
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    max_nodes = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    work = Path(tempfile.mkdtemp(prefix="by-asbench-", dir="/tmp"))
    work.chmod(0o1777)
    go = work / "go"
    srv = Server(work / "data", extra_args=["--autoscale-min-interval", "PT1S"]).start()
    raw = srv.raw()
    try:
        formula = (
            f"$tasks = max(0, $PendingTasks.GetSample(1));\n"
            f"$TargetDedicatedNodes = min({max_nodes}, $tasks);\n"
            "$NodeDeallocationOption = taskcompletion;"
        )
        pool = {
            "id": "asbench",
            "vmSize": "standard_d2s_v3",
            "virtualMachineConfiguration": {
                "imageReference": IMAGE,
                "nodeAgentSKUId": "batch.node.ubuntu 22.04",
            },
            "enableAutoScale": True,
            "autoScaleFormula": formula,
            "autoScaleEvaluationInterval": "PT1S",
        }
        raw.ok("POST", "/pools", body=pool)
        raw.ok("POST", "/jobs", body={"id": "asjob", "poolInfo": {"poolId": "asbench"}})
        command = f"/bin/sh -c 'while [ ! -e {go} ]; do sleep 0.2; done'"
        t0 = time.monotonic()
        for body in collection_bodies("t", tasks, command):
            raw.ok("POST", "/jobs/asjob/addtaskcollection", body=json.loads(body))
        submitted = time.monotonic() - t0
        wait_for(
            lambda: raw.ok("GET", "/pools/asbench")["targetDedicatedNodes"] == max_nodes, 60, 0.02, "target"
        )
        t_target = time.monotonic() - t0

        def ready() -> bool:
            nodes = raw.list_all("/pools/asbench/nodes")
            return len(nodes) == max_nodes and all(n["state"] in ("idle", "running") for n in nodes)

        wait_for(ready, 120, 0.05, "nodes ready")
        t_ready = time.monotonic() - t0
        t1 = time.monotonic()
        go.touch()
        wait_for(lambda: not raw.list_all("/pools/asbench/nodes"), 600, 0.1, "pool empty")
        t_down = time.monotonic() - t1
        print(f"burst of {tasks:,} queued tasks, formula target {max_nodes} nodes, interval PT1S")
        print(f"  submit (addtaskcollection x{(tasks + 99) // 100}): {submitted:.2f} s")
        print(f"  burst -> new target on the pool:       {t_target:.2f} s")
        print(f"  burst -> {max_nodes} nodes idle/running:         {t_ready:.2f} s")
        print(
            f"  work done -> pool back to 0 nodes:     {t_down:.2f} s (includes running the {tasks:,} tasks)"
        )
    finally:
        raw.close()
        srv.stop()


if __name__ == "__main__":
    main()
