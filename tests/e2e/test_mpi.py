"""A real MPI program across four local nodes: a multi-instance task whose primary runs Open MPI's mpirun over
AZ_BATCH_HOST_LIST; the ranks start on the other nodes through the node's batchyard-rsh launcher, each reports
its node, and the allreduce result is checked. Under CI=true a missing Open MPI fails (scripts/mpi-deps
installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential

from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state
from tests.support.live import LiveServer, wait_for
from tests.support.semantics import new_job, pid_alive, sh

pytestmark = pytest.mark.slow

NODES = 4

PROGRAM = r"""
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int rank, size, sum = 0;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int v = rank + 1;
  MPI_Allreduce(&v, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  const char *node = getenv("AZ_BATCH_NODE_ID");
  printf("rank %d of %d node %s uid %d sum %d\n", rank, size, node ? node : "?", (int)getuid(), sum);
  fflush(stdout);
  if (argc > 1) {  /* hang: the test ends the task and checks that every rank is gone */
    FILE *f = fopen(argv[1], "a");
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    for (;;) sleep(1);
  }
  MPI_Finalize();
  return 0;
}
"""


def _mpi_tools() -> tuple[str, str]:
    mpicc, mpirun = shutil.which("mpicc"), shutil.which("mpirun")
    if mpicc is None or mpirun is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Open MPI (mpicc, mpirun) is missing: run scripts/mpi-deps")
        pytest.skip("Open MPI is not installed (scripts/mpi-deps)")
    return mpicc, mpirun


@pytest.fixture(scope="module")
def top() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="batchyard-mpi-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def program(top: Path) -> Path:
    mpicc, _ = _mpi_tools()
    src = top / "allreduce.c"
    src.write_text(PROGRAM)
    exe = top / "allreduce"
    subprocess.run([mpicc, "-O1", "-o", str(exe), str(src)], check=True, capture_output=True, timeout=120)
    os.chmod(exe, 0o755)
    return exe


@pytest.fixture(scope="module")
def live(top: Path) -> Iterator[LiveServer]:
    srv = LiveServer(top / "srv").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(live: LiveServer) -> BatchClient:
    return BatchClient(endpoint=live.endpoint, credential=AzureNamedKeyCredential(live.account, live.key))


@pytest.fixture(scope="module")
def pool(client: BatchClient) -> Iterator[str]:
    pool_id = f"mpi-{uuid.uuid4().hex[:8]}"
    create_pool(client, pool_id, nodes=NODES, enable_inter_node_communication=True)
    wait_idle_nodes(client, pool_id, NODES)
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def mpi_task(task_id: str, app: str) -> m.BatchTaskCreateOptions:
    return m.BatchTaskCreateOptions(
        id=task_id,
        command_line=sh(app),
        multi_instance_settings=m.MultiInstanceSettings(
            number_of_instances=NODES, coordination_command_line="/bin/true"
        ),
    )


def test_mpirun_over_the_host_list(client: BatchClient, pool: str, program: Path) -> None:
    job_id = f"mpi-{uuid.uuid4().hex[:8]}"
    new_job(client, job_id, pool)
    client.create_task(
        job_id, mpi_task("allreduce", f"mpirun -np {NODES} --host $AZ_BATCH_HOST_LIST {program}")
    )
    t = wait_task_state(client, job_id, "allreduce", "completed", 120)
    out = b"".join(client.download_task_file(job_id, "allreduce", "stdout.txt")).decode()
    err = b"".join(client.download_task_file(job_id, "allreduce", "stderr.txt")).decode()
    assert t.execution_info.exit_code == 0, f"{out}\n{err}"
    lines = [line.split() for line in out.splitlines() if line.startswith("rank ")]
    assert len(lines) == NODES, out
    ranks = {int(w[1]): w for w in lines}
    assert sorted(ranks) == list(range(NODES))
    assert {w[5] for w in lines} == {n.id for n in client.list_nodes(pool)}  # one rank on every node
    assert all(int(w[9]) == NODES * (NODES + 1) // 2 for w in lines)  # the allreduce
    assert all(int(w[7]) != 0 for w in lines)  # ranks run as the task's user, not root


def test_ending_the_task_kills_every_rank(client: BatchClient, pool: str, program: Path, top: Path) -> None:
    job_id = f"mpikill-{uuid.uuid4().hex[:8]}"
    new_job(client, job_id, pool)
    pids = top / f"pids-{job_id}"
    pids.touch()
    os.chmod(pids, 0o666)
    client.create_task(
        job_id, mpi_task("hang", f"mpirun -np {NODES} --host $AZ_BATCH_HOST_LIST {program} {pids}")
    )

    def ranks() -> list[int] | None:
        found = [int(x) for x in pids.read_text().split()]
        return found if len(found) == NODES else None

    found = wait_for(ranks, 60, 0.1, "every rank to start")
    client.terminate_task(job_id, "hang")
    wait_for(lambda: not any(pid_alive(p) for p in found), 30, 0.1, "every rank to be killed")
    wait_for(lambda: not _orteds_under(top), 30, 0.1, "no Open MPI daemon left on the nodes")


def _orteds_under(top: Path) -> list[int]:
    out = []
    for p in psutil.process_iter(["name", "cwd"]):
        if p.info["name"] == "orted" and str(p.info["cwd"] or "").startswith(str(top)):
            out.append(p.pid)
    return out


def test_killed_agent_requeues_the_gang_and_leaves_no_rank(
    client: BatchClient, pool: str, program: Path, top: Path
) -> None:
    job_id = f"mpilost-{uuid.uuid4().hex[:8]}"
    new_job(client, job_id, pool)
    pids = top / f"pids-{job_id}"
    pids.touch()
    os.chmod(pids, 0o666)
    client.create_task(
        job_id, mpi_task("hang", f"mpirun -np {NODES} --host $AZ_BATCH_HOST_LIST {program} {pids}")
    )

    def ranks() -> list[int] | None:
        found = [int(x) for x in pids.read_text().split()]
        return found if len(found) >= NODES else None

    first = wait_for(ranks, 60, 0.1, "every rank to start")[:NODES]
    sub = next(s for s in client.list_subtasks(job_id, "hang") if s.id == 1)
    agent = next(
        p
        for p in psutil.process_iter(["cmdline"])
        if "batchyard.agent.main" in (p.info["cmdline"] or []) and sub.node_info.node_id in p.info["cmdline"]
    )
    agent.kill()
    # the gang is requeued as a whole: the first attempt's ranks die everywhere, the lost node's included
    wait_for(lambda: not any(pid_alive(p) for p in first), 60, 0.1, "the first attempt's ranks to be gone")
    t = wait_for(
        lambda: (x := client.get_task(job_id, "hang")).execution_info.requeue_count >= 1 and x,
        60,
        0.1,
        "a requeue",
    )
    assert t.execution_info.retry_count == 0
    client.terminate_task(job_id, "hang")
    wait_for(lambda: not _orteds_under(top), 30, 0.1, "no Open MPI daemon left on the nodes")
    wait_idle_nodes(client, pool, NODES)
