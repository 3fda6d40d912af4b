"""A server killed (SIGKILL) while a job's release task runs loses nothing: after the restart the job still
waits for its release, which runs once, and then completes; the preparation status survives too."""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models import _models as private_models
from azure.core.credentials import AzureNamedKeyCredential

from tests.support.batch import create_pool, wait_idle_nodes
from tests.support.live import LiveServer, kill_agents, wait_for
from tests.support.semantics import sh, task, wait_job_state, wait_tasks_completed

pytestmark = pytest.mark.slow


def _client(srv: LiveServer) -> BatchClient:
    return BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))


def test_server_killed_during_a_release(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="batchyard-jtr-"))
    base.chmod(0o755)
    data = base / "data"
    srv = LiveServer(data).start()
    try:
        c = _client(srv)
        create_pool(c, "p", nodes=1)
        wait_idle_nodes(c, "p", 1)
        c.create_job(
            m.BatchJobCreateOptions(
                id="j",
                pool_info=m.BatchPoolInfo(pool_id="p"),
                job_preparation_task=m.BatchJobPreparationTask(command_line="true"),
                job_release_task=m.BatchJobReleaseTask(
                    command_line=sh(f"date +%s%N > {tmp_path}/rel.$$; sleep 3")
                ),
            )
        )
        c.create_task("j", task("t", "true"))
        wait_tasks_completed(c, "j", ["t"])
        options = private_models.BatchJobTerminateOptions(termination_reason="UserTerminate")
        c.begin_terminate_job("j", options, polling_interval=0.2)
        wait_for(lambda: list(tmp_path.glob("rel.*")) or None, 20, 0.05, "the release to start")
        srv.kill(signal.SIGKILL)

        srv = LiveServer(data, port=srv.port).start()
        c = _client(srv)
        assert c.get_job("j").state == "terminating"
        job = wait_job_state(c, "j", "completed", timeout=60)
        assert job.execution_info.termination_reason == "UserTerminate"  # type: ignore[union-attr]
        assert len(list(tmp_path.glob("rel.*"))) == 1
        (s,) = list(c.list_job_preparation_and_release_task_status("j"))
        assert s.job_preparation_task_execution_info.result == "success"  # type: ignore[union-attr]
        assert s.job_release_task_execution_info.state == "completed"  # type: ignore[union-attr]
    finally:
        srv.stop()
        kill_agents(data)
        shutil.rmtree(base, ignore_errors=True)
