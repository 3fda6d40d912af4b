"""A node's agent killed in the middle of a resource-file download or an output-file upload.

Azure's rule (issue 10, semantics/data-staging.md): a node lost mid-task requeues the task (requeueCount, not
retryCount); no half-downloaded file is used and no output blob is reported uploaded that was not. Here the
agent is SIGKILLed while a slow HTTP server has sent half a resource file (`/stallonce`), or while a proxy in
front of Azurite holds the second half of an upload; the server respawns the agent and the requeued task
then completes exactly once.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m

from tests.support.azurite import Azurite, azurite_server  # noqa: F401 - provides the azurite fixture
from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state
from tests.support.httpserver import FileServer, StallingProxy
from tests.support.live import LiveServer, wait_for
from tests.support.semantics import new_job, task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pool(client: BatchClient) -> Iterator[str]:
    pool_id = "killstage"
    create_pool(client, pool_id, nodes=1)
    wait_idle_nodes(client, pool_id, 1)
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def agent_pid(node_id: str) -> int | None:
    """The pid of the agent process serving ``node_id`` (its process group leader)."""
    needle = node_id.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"batchyard.agent.main" in cmd and needle in cmd.split(b"\0"):
            return int(entry.name)
    return None


def kill_agent_of(client: BatchClient, job_id: str, task_id: str) -> None:
    t = wait_task_state(client, job_id, task_id, "running")
    node_id = t.node_info.node_id
    pid = wait_for(lambda: agent_pid(node_id), 10, 0.05, f"the agent of {node_id}")
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: agent_pid(node_id) not in (None, pid), 30, 0.1, "the agent to be respawned")


def wait_completed(client: BatchClient, job_id: str, task_id: str) -> m.BatchTask:
    return wait_task_state(client, job_id, task_id, "completed", timeout=120)


def test_agent_killed_mid_download(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    files = FileServer().start()
    try:
        data = os.urandom(4 << 20)
        files.files["big.bin"] = data
        marker = tmp_path / "ran.txt"
        job_id = f"kill-dl-{uid}"
        new_job(client, job_id, pool)
        client.create_task(
            job_id,
            task(
                "t",
                f"sha256sum big.bin | cut -c1-64 >> {marker}",
                resource_files=[
                    m.ResourceFile(http_url=f"{files.url}/stallonce/big.bin", file_path="big.bin")
                ],
            ),
        )
        assert files.stalled.wait(60), "the download never started"
        kill_agent_of(client, job_id, "t")
        t = wait_completed(client, job_id, "t")
    finally:
        files.stop()
    ei = t.execution_info
    assert ei.result == "success" and ei.exit_code == 0, ei
    assert (ei.requeue_count, ei.retry_count) == (1, 0), ei
    # the command ran once, on the whole file: the half download of the killed attempt was never used
    assert marker.read_text().split() == [hashlib.sha256(data).hexdigest()]
    assert files.count("/stallonce/big.bin") == 2
    counts = client.get_job_task_counts(job_id).task_counts
    assert (counts.completed, counts.succeeded, counts.failed) == (1, 1, 0)


def test_agent_killed_mid_upload(
    client: BatchClient, live: LiveServer, pool: str, azurite: Azurite, uid: str, tmp_path: Path
) -> None:
    container = f"kill-up-{uid}"
    azurite.create_container(container)
    proxy = StallingProxy(azurite.port, limit=256 << 10, once=True).start()
    try:
        url = azurite.container_sas_url(container, "w").replace(f":{azurite.port}/", f":{proxy.port}/")
        marker = tmp_path / "ran.txt"
        job_id = f"kill-up-{uid}"
        new_job(client, job_id, pool)
        client.create_task(
            job_id,
            task(
                "t",
                f"head -c 2097152 /dev/urandom > out.bin; sha256sum out.bin | cut -c1-64 > ../sum; "
                f"cat ../sum >> {marker}",
                output_files=[
                    m.OutputFile(
                        file_pattern="out.bin",
                        destination=m.OutputFileDestination(
                            container=m.OutputFileBlobContainerDestination(
                                container_url=url, path="r/out.bin"
                            )
                        ),
                        upload_options=m.OutputFileUploadConfiguration(upload_condition="tasksuccess"),
                    )
                ],
            ),
        )
        assert proxy.stalled.wait(60), "the upload never reached the proxy"
        assert azurite.blob_names(container) == [], "half an upload is no blob"
        kill_agent_of(client, job_id, "t")
        t = wait_completed(client, job_id, "t")
    finally:
        proxy.stop()
    ei = t.execution_info
    assert ei.result == "success" and ei.exit_code == 0, ei
    assert (ei.requeue_count, ei.retry_count) == (1, 0), ei
    runs = marker.read_text().split()
    assert len(runs) == 2, "the lost node's attempt ran, the requeued one ran again (as on Azure)"
    assert azurite.blob_names(container) == ["r/out.bin"]
    blob = azurite.read_blob(container, "r/out.bin")
    assert len(blob) == 2 << 20 and hashlib.sha256(blob).hexdigest() == runs[1], "the blob is the last run's"
    counts = client.get_job_task_counts(job_id).task_counts
    assert (counts.completed, counts.succeeded, counts.failed) == (1, 1, 0)
