"""Data-staging benchmark: tasks with a resource file and an output file on Azurite vs the same tasks without.

    PYTHONPATH=src python bench/staging.py [--tasks 1000] [--shared-tasks 20]

Starts Azurite (tests/support/azurite.py, `scripts/azurite-deps`) and one `batchyard server --auto-storage …`
with a pool of 2 nodes × 4 slots, then measures, in one run:

1. `plain`: N tasks `/bin/sh -c 'echo x > out.txt'` (first add -> last task end);
2. `files`: the same N tasks, each with its own 1 MiB blob as `httpUrl` resource file (blob SAS) and
   `out.txt` as an output file to a container (SAS with write);
3. `shared`: M tasks naming the same 100 MiB blob, and the bytes Azurite served (GET bodies) per node.

Prints a JSON result; record it in BENCHMARKS.md. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from azure.batch import BatchClient  # noqa: E402
from azure.batch import models as m  # noqa: E402
from azure.core.credentials import AzureNamedKeyCredential  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402
from tests.support.batch import create_pool, wait_idle_nodes  # noqa: E402
from tests.support.live import LiveServer, wait_for  # noqa: E402

from bench.client import agent_pids, proc_cpu_seconds  # noqa: E402

MIB = 1 << 20


def add_all(client: BatchClient, job_id: str, tasks: list[m.BatchTaskCreateOptions]) -> None:
    for i in range(0, len(tasks), 100):
        client.create_task_collection(job_id, m.BatchTaskGroup(task_values=tasks[i : i + 100]))


def cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    out = {}
    for name, ps in pids.items():
        total = 0.0
        for pid in ps:
            try:
                total += proc_cpu_seconds(pid)
            except OSError:
                pass
        out[name] = total
    return out


PIDS: dict[str, list[int]] = {}


def run_job(client: BatchClient, pool_id: str, tasks: list[m.BatchTaskCreateOptions]) -> dict[str, float]:
    job_id = f"bench-{uuid.uuid4().hex[:8]}"
    cpu0 = cpu(PIDS)
    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    t0 = time.time()
    add_all(client, job_id, tasks)

    def done() -> bool:
        c = client.get_job_task_counts(job_id).task_counts
        return c.completed == len(tasks)

    wait_for(done, 1800, 0.5, "all tasks completed")
    listed = list(client.list_tasks(job_id, select=["id", "executionInfo"]))
    failed = [t.id for t in listed if t.execution_info.result != "success"]
    assert not failed, f"{len(failed)} tasks failed, e.g. {client.get_task(job_id, failed[0]).execution_info}"
    last_end = max(t.execution_info.end_time.timestamp() for t in listed)
    wall = last_end - t0
    used = {f"cpu_ms_per_task_{k}": round((v - cpu0[k]) * 1000 / len(tasks), 2) for k, v in cpu(PIDS).items()}
    return {"tasks": len(tasks), "wall_s": round(wall, 2), "tasks_per_s": round(len(tasks) / wall, 1), **used}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--shared-tasks", type=int, default=20)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batchyard-bench-staging-", dir="/tmp"))
    os.chmod(work, 0o755)
    az = Azurite(work / "azurite").start()
    srv = LiveServer(work / "srv", extra_args=["--auto-storage", az.connection_string]).start()
    out: dict[str, object] = {"nodes": 2, "slots_per_node": 4, "load_before": os.getloadavg()}
    try:
        client = BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))
        pool_id = "bench-staging"
        create_pool(client, pool_id, nodes=2, slots=4)
        wait_idle_nodes(client, pool_id, 2, timeout=120)
        assert srv.proc is not None and az.proc is not None
        PIDS.update(server=[srv.proc.pid], agents=agent_pids(srv.data_dir), azurite=[az.proc.pid])
        n = a.tasks
        blob = os.urandom(MIB)
        svc = az.service()
        inp = svc.create_container("inputs")
        for i in range(n):
            inp.upload_blob(f"in/{i}.bin", blob)
        svc.create_container("outputs")
        wsas = az.container_sas_url("outputs", "w")
        cmd = "/bin/sh -c 'echo x > out.txt'"
        plain = [m.BatchTaskCreateOptions(id=f"t{i}", command_line=cmd) for i in range(n)]
        with_files = [
            m.BatchTaskCreateOptions(
                id=f"t{i}",
                command_line=cmd,
                resource_files=[
                    m.ResourceFile(http_url=az.blob_sas_url("inputs", f"in/{i}.bin"), file_path="in.bin")
                ],
                output_files=[
                    m.OutputFile(
                        file_pattern="out.txt",
                        destination=m.OutputFileDestination(
                            container=m.OutputFileBlobContainerDestination(
                                container_url=wsas, path=f"o/{i}.txt"
                            )
                        ),
                        upload_options=m.OutputFileUploadConfiguration(upload_condition="taskcompletion"),
                    )
                ],
            )
            for i in range(n)
        ]
        out["plain"] = run_job(client, pool_id, plain)
        out["files"] = run_job(client, pool_id, with_files)
        out["files_vs_plain_throughput"] = round(
            out["files"]["tasks_per_s"] / out["plain"]["tasks_per_s"],
            3,  # type: ignore[index]
        )
        uploaded = len(list(svc.get_container_client("outputs").list_blobs(name_starts_with="o/")))
        assert uploaded == n, f"{uploaded} output blobs, expected {n}"
        # the shared input: one 100 MiB blob named by every task
        inp.upload_blob("shared.bin", os.urandom(100 * MIB))
        before = sum(b for _, b in az.log_entries("GET", "/inputs/shared.bin"))
        url = az.blob_sas_url("inputs", "shared.bin")
        shared = [
            m.BatchTaskCreateOptions(
                id=f"s{i}",
                command_line="/bin/sh -c 'test $(stat -c %s big.bin) = 104857600'",
                resource_files=[m.ResourceFile(http_url=url, file_path="big.bin")],
            )
            for i in range(a.shared_tasks)
        ]
        out["shared"] = run_job(client, pool_id, shared)
        entries = az.wait_log_entries("GET", "/inputs/shared.bin", a.shared_tasks)
        fetched = sum(b for _, b in entries) - before
        out["shared_bytes_fetched_total"] = fetched
        out["shared_bytes_fetched_per_node"] = fetched / 2
        out["shared_requests"] = len(entries)
        out["shared_naive_bytes"] = a.shared_tasks * 100 * MIB
        out["load_after"] = os.getloadavg()
        client.begin_delete_pool(pool_id, polling_interval=0.5).result()
    finally:
        srv.stop()
        az.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
