"""Job Preparation and Job Release tasks through the official azure-batch 15.1.0 SDK, against a live server
with real agents: preparation once per node before the job's tasks (its directory and environment), retries,
a failure that keeps the job's tasks off the node, waitForSuccess false, release on terminate and delete, the
per-node status list, and the errors of bad specs and clashing ids.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models import _models as private_models

from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state
from tests.support.httpserver import FileServer
from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error
from tests.support.semantics import expect_error, sh, task, wait_job_state, wait_tasks_completed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    """A data dir every user may traverse: tasks use AZ_BATCH_JOB_PREP_WORKING_DIR by its absolute path
    (pytest's own temp dirs sit under a 0700 directory, see decision 0010)."""
    base = Path(tempfile.mkdtemp(prefix="batchyard-jobprep-"))
    base.chmod(0o755)
    srv = LiveServer(base / "srv").start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)


def stamps(d: Path, prefix: str) -> dict[str, int]:
    """Files `<prefix>.<name>` holding a `date +%s%N` stamp (each writer its own file: tasks of different
    nodes run as different users and cannot append to one file)."""
    return {f.name[len(prefix) + 1 :]: int(f.read_text()) for f in d.glob(prefix + ".*")}


@pytest.fixture(scope="module")
def pool(client: BatchClient) -> Iterator[str]:
    pool_id = f"jp-{uuid.uuid4().hex[:8]}"
    create_pool(client, pool_id, nodes=2, slots=2)
    wait_idle_nodes(client, pool_id, 2)
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def terminate(client: BatchClient, job_id: str) -> None:
    """begin_terminate_job needs a non-empty options body with azure-batch 15.1.0 (see test_job_lifecycle)."""
    options = private_models.BatchJobTerminateOptions(termination_reason="UserTerminate")
    client.begin_terminate_job(job_id, options, polling_interval=0.2)


def create(
    client: BatchClient,
    job_id: str,
    pool_id: str,
    prep: m.BatchJobPreparationTask | None = None,
    release: m.BatchJobReleaseTask | None = None,
    **kw: object,
) -> None:
    client.create_job(
        m.BatchJobCreateOptions(
            id=job_id,
            pool_info=m.BatchPoolInfo(pool_id=pool_id),
            job_preparation_task=prep,
            job_release_task=release,
            **kw,  # type: ignore[arg-type]
        )
    )


def statuses(
    client: BatchClient, job_id: str, **kw: object
) -> list[m.BatchJobPreparationAndReleaseTaskStatus]:
    return list(client.list_job_preparation_and_release_task_status(job_id, **kw))  # type: ignore[arg-type]


def test_preparation_runs_once_per_node_before_the_tasks(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"jp-{uid}"
    prep = m.BatchJobPreparationTask(
        command_line=sh(
            f"date +%s%N > {tmp_path}/prep.$AZ_BATCH_NODE_ID.$$; echo ready > prepared.txt; echo $AZ_BATCH_TASK_ID"
        ),
        environment_settings=[m.EnvironmentSetting(name="PREP_VAR", value="p")],
    )
    create(client, job_id, pool, prep)
    got = client.get_job(job_id).job_preparation_task
    assert got is not None and got.id == "jobpreparation"  # the defaults the service materialises
    assert got.wait_for_success is True and got.rerun_on_node_reboot_after_success is True
    assert got.constraints is not None and got.constraints.max_task_retry_count == 0
    assert statuses(client, job_id) == []  # nothing ran yet
    script = (
        "cat $AZ_BATCH_JOB_PREP_WORKING_DIR/prepared.txt; echo $AZ_BATCH_JOB_PREP_DIR; "
        f"date +%s%N > {tmp_path}/task.$AZ_BATCH_TASK_ID"
    )
    for i in range(6):
        client.create_task(job_id, task(f"t{i}", script))
    done = wait_tasks_completed(client, job_id, [f"t{i}" for i in range(6)])
    assert all(t.execution_info.result == "success" for t in done.values())  # type: ignore[union-attr]
    used = {t.node_info.node_id for t in done.values()}  # type: ignore[union-attr]
    preps = stamps(tmp_path, "prep")
    ran = stamps(tmp_path, "task")
    for node in used:
        mine = [v for k, v in preps.items() if k.startswith(node + ".")]
        assert len(mine) == 1  # once per node
        first = min(ran[t.id] for t in done.values() if t.node_info.node_id == node)  # type: ignore[union-attr]
        assert mine[0] <= first  # before the job's tasks there
    out = b"".join(client.download_task_file(job_id, "t0", "stdout.txt")).decode().split()
    assert out[0] == "ready" and out[1].endswith(f"/workitems/{job_id}/job-1/jobpreparation")
    st = statuses(client, job_id)
    assert {s.node_id for s in st} == used and all(s.pool_id == pool for s in st)
    for s in st:
        info = s.job_preparation_task_execution_info
        assert info is not None and info.state == "completed" and info.exit_code == 0
        assert info.result == "success" and info.retry_count == 0
        assert info.task_root_directory == f"workitems/{job_id}/job-1/jobpreparation"
        assert s.node_url is not None and s.node_url.endswith(f"/pools/{pool}/nodes/{s.node_id}")
        assert s.job_release_task_execution_info is None
        # its files, where the service puts them
        stdout = b"".join(
            client.download_node_file(pool, s.node_id, f"workitems/{job_id}/job-1/jobpreparation/stdout.txt")  # type: ignore[arg-type]
        )
        assert stdout.strip() == b"jobpreparation"
    one = statuses(client, job_id, max_results=1, filter=f"nodeId eq '{sorted(used)[0]}'")
    assert [s.node_id for s in one] == [sorted(used)[0]]
    paged = statuses(client, job_id, max_results=1)  # one per page: the SDK follows odata.nextLink
    assert [s.node_id for s in paged] == sorted(used)
    (only,) = statuses(client, job_id, select=["nodeId"], filter=f"nodeId eq '{sorted(used)[0]}'")
    assert only.node_id == sorted(used)[0] and only.pool_id is None
    terminate(client, job_id)


def test_preparation_failure_keeps_the_jobs_tasks_off_the_node(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"jpf-{uid}"
    marker = tmp_path / "bad-node"
    # the first node to prepare fails, after one retry; the other succeeds
    script = (
        f"if [ ! -e {marker} ] || [ $(cat {marker}) = $AZ_BATCH_NODE_ID ]; then "
        f"echo $AZ_BATCH_NODE_ID > {marker}; chmod 644 {marker}; exit 7; fi"
    )
    prep = m.BatchJobPreparationTask(
        command_line=sh(script), constraints=m.BatchTaskConstraints(max_task_retry_count=1)
    )
    create(client, job_id, pool, prep)
    for i in range(4):
        client.create_task(job_id, task(f"t{i}", "sleep 0.2"))
    done = wait_tasks_completed(client, job_id, [f"t{i}" for i in range(4)])
    bad = marker.read_text().strip()
    assert all(t.execution_info.result == "success" for t in done.values())  # type: ignore[union-attr]
    assert all(t.node_info.node_id != bad for t in done.values())  # type: ignore[union-attr]
    by_node = {s.node_id: s.job_preparation_task_execution_info for s in statuses(client, job_id)}
    failed = by_node[bad]
    assert failed is not None and failed.state == "completed" and failed.result == "failure"
    assert failed.exit_code == 7 and failed.retry_count == 1 and failed.last_retry_time is not None
    assert failed.failure_info is not None and failed.failure_info.code == "FailureExitCode"
    only_failed = statuses(client, job_id, filter="jobPreparationTaskExecutionInfo/exitCode ne 0")
    assert [s.node_id for s in only_failed] == [bad]
    # the node is still fine for other jobs
    other = f"jpo-{uid}"
    create(client, other, pool)
    for i in range(4):
        client.create_task(other, task(f"o{i}", "sleep 0.3"))
    ran = wait_tasks_completed(client, other, [f"o{i}" for i in range(4)])
    assert bad in {t.node_info.node_id for t in ran.values()}  # type: ignore[union-attr]
    terminate(client, job_id)
    terminate(client, other)


def test_preparing_state_while_preparation_runs(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"jpw-{uid}"
    go = tmp_path / "go"
    prep = m.BatchJobPreparationTask(command_line=sh(f"while [ ! -e {go} ]; do sleep 0.05; done"))
    create(client, job_id, pool, prep)
    client.create_task(job_id, task("t", "true"))
    wait_task_state(client, job_id, "t", "preparing")
    (s,) = statuses(client, job_id)
    assert s.job_preparation_task_execution_info.state == "running"  # type: ignore[union-attr]
    go.touch()
    wait_tasks_completed(client, job_id, ["t"])
    terminate(client, job_id)


def test_wait_for_success_false_lets_tasks_run_anyway(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"jpn-{uid}"
    create(client, job_id, pool, m.BatchJobPreparationTask(command_line="/bin/false", wait_for_success=False))
    client.create_task(job_id, task("t", "true"))
    t = wait_tasks_completed(client, job_id, ["t"])["t"]
    assert t.execution_info.result == "success"  # type: ignore[union-attr]
    terminate(client, job_id)


def test_release_runs_where_preparation_ran_when_the_job_ends(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"jr-{uid}"
    prep = m.BatchJobPreparationTask(command_line=sh(f"date +%s%N > {tmp_path}/prep.$$"))
    release = m.BatchJobReleaseTask(
        command_line=sh(
            f"sleep 0.5; echo $AZ_BATCH_TASK_ID $AZ_BATCH_JOB_PREP_DIR > {tmp_path}/release.$$; exit 4"
        ),
    )
    create(client, job_id, pool, prep, release)
    got = client.get_job(job_id).job_release_task
    assert got is not None and got.id == "jobrelease" and got.max_wall_clock_time == dt.timedelta(minutes=15)
    assert got.retention_time == dt.timedelta(days=7)
    client.create_task(job_id, task("t", "true"))
    node = wait_tasks_completed(client, job_id, ["t"])["t"].node_info.node_id  # type: ignore[union-attr]
    terminate(client, job_id)
    assert client.get_job(job_id).state == "terminating"  # until its release has run
    job = wait_job_state(client, job_id, "completed")
    assert job.execution_info.termination_reason == "UserTerminate"  # type: ignore[union-attr]
    assert len(list(tmp_path.glob("prep.*"))) == 1
    (released,) = tmp_path.glob("release.*")
    rid, prep_dir = released.read_text().split()
    assert rid == "jobrelease" and prep_dir.endswith(f"/workitems/{job_id}/job-1/jobpreparation")
    (s,) = statuses(client, job_id)
    assert s.node_id == node
    rel = s.job_release_task_execution_info
    # a failed release still lets the job complete
    assert rel is not None and rel.state == "completed" and rel.exit_code == 4 and rel.result == "failure"
    assert rel.task_root_directory == f"workitems/{job_id}/job-1/jobrelease"
    # deleting the completed job does not run release again
    client.begin_delete_job(job_id, polling_interval=0.2).result()
    assert len(list(tmp_path.glob("release.*"))) == 1


def test_release_runs_when_an_active_job_is_deleted(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"jrd-{uid}"
    create(
        client,
        job_id,
        pool,
        m.BatchJobPreparationTask(command_line="true"),
        m.BatchJobReleaseTask(command_line=sh(f"echo released > {tmp_path}/released")),
    )
    client.create_task(job_id, task("t", "true"))
    wait_tasks_completed(client, job_id, ["t"])
    client.begin_delete_job(job_id, polling_interval=0.2).result()
    assert (tmp_path / "released").read_text() == "released\n"
    expect_error(lambda: client.get_job(job_id), 404, "JobNotFound")


def test_release_without_preparation_runs_is_immediate(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"jre-{uid}"
    create(
        client,
        job_id,
        pool,
        m.BatchJobPreparationTask(command_line="true"),
        m.BatchJobReleaseTask(command_line="true"),
    )
    terminate(client, job_id)
    wait_job_state(client, job_id, "completed", timeout=10)


def test_job_manager_waits_for_preparation(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    job_id = f"jpm-{uid}"
    create(
        client,
        job_id,
        pool,
        m.BatchJobPreparationTask(command_line=sh(f"date +%s%N > {tmp_path}/at.prep")),
        m.BatchJobReleaseTask(command_line=sh(f"date +%s%N > {tmp_path}/at.release")),
        job_manager_task=m.BatchJobManagerTask(id="jm", command_line=sh(f"date +%s%N > {tmp_path}/at.jm")),
    )
    job = wait_job_state(client, job_id, "completed")
    assert job.execution_info.termination_reason == "JMComplete"  # type: ignore[union-attr]
    at = stamps(tmp_path, "at")
    assert at["prep"] <= at["jm"] <= at["release"]


def test_task_ids_of_preparation_and_release_are_taken(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"jpi-{uid}"
    create(
        client,
        job_id,
        pool,
        m.BatchJobPreparationTask(id="Prep", command_line="true"),
        m.BatchJobReleaseTask(command_line="true"),
    )
    expect_error(
        lambda: client.create_task(job_id, task("prep", "true")), 409, "TaskIdSameAsJobPreparationTask"
    )
    expect_error(
        lambda: client.create_task(job_id, task("jobrelease", "true")), 409, "TaskIdSameAsJobReleaseTask"
    )
    res = client.create_task_collection(
        job_id, m.BatchTaskGroup(task_values=[task("prep", "true"), task("ok", "true")])
    )
    errs = {r.task_id: r.error.code for r in res.result_values or [] if r.error is not None}  # type: ignore[union-attr]
    assert errs == {"prep": "TaskIdSameAsJobPreparationTask"}
    terminate(client, job_id)


def test_status_of_a_job_without_preparation_is_409(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"jpx-{uid}"
    create(client, job_id, pool)
    expect_error(lambda: statuses(client, job_id), 409, "JobPreparationTaskNotSpecified")
    expect_error(lambda: statuses(client, f"none-{uid}"), 404, "JobNotFound")
    terminate(client, job_id)


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Raw:
    return Raw(live)


@pytest.mark.parametrize(
    "extra,status,code,prop",
    [
        ({"jobReleaseTask": {"commandLine": "true"}}, 400, "MissingRequiredProperty", "jobPreparationTask"),
        (
            {
                "jobPreparationTask": {"commandLine": "true"},
                "jobReleaseTask": {"commandLine": "true", "maxWallClockTime": "PT16M"},
            },
            400,
            "InvalidPropertyValue",
            "jobReleaseTask.maxWallClockTime",
        ),
        (
            {
                "jobPreparationTask": {"commandLine": "true"},
                "jobReleaseTask": {"commandLine": "true", "maxWallClockTime": "soon"},
            },
            400,
            "InvalidPropertyValue",
            "jobReleaseTask.maxWallClockTime",
        ),
        (
            {"jobPreparationTask": {"id": "a b", "commandLine": "true"}},
            400,
            "InvalidPropertyValue",
            "jobPreparationTask.id",
        ),
        (
            {"jobPreparationTask": {"commandLine": ""}},
            400,
            "MissingRequiredProperty",
            "jobPreparationTask.commandLine",
        ),
        (
            {"jobPreparationTask": {"commandLine": "true", "constraints": {"maxTaskRetryCount": -5}}},
            400,
            "InvalidPropertyValue",
            "jobPreparationTask.constraints.maxTaskRetryCount",
        ),
        (
            {"jobPreparationTask": {"commandLine": "true", "waitForSuccess": "yes"}},
            400,
            "InvalidPropertyValue",
            None,
        ),
        (
            {"jobPreparationTask": {"commandLine": "true", "resourceFiles": [{"httpUrl": "http://x/y"}]}},
            400,
            "InvalidPropertyValue",
            None,
        ),
        (
            {"jobPreparationTask": {"commandLine": "true", "containerSettings": {"imageName": "busybox"}}},
            501,
            "NotImplemented",
            None,
        ),
        (
            {
                "jobPreparationTask": {"id": "x", "commandLine": "true"},
                "jobReleaseTask": {"id": "X", "commandLine": "true"},
            },
            400,
            "InvalidPropertyValue",
            "jobReleaseTask.id",
        ),
        (
            {
                "jobPreparationTask": {"id": "jm", "commandLine": "true"},
                "jobManagerTask": {"id": "JM", "commandLine": "true"},
            },
            409,
            "TaskIdSameAsJobPreparationTask",
            None,
        ),
        ({"jobReleaseTask": {"commandLine": "true", "bogus": 1}}, 400, "UnsupportedProperty", None),
    ],
)
def test_bad_preparation_or_release_is_refused_and_no_job(
    raw: Raw, pool: str, extra: dict[str, object], status: int, code: str, prop: str | None
) -> None:
    job_id = f"jpb-{uuid.uuid4().hex[:8]}"
    r = raw.post("/jobs", {"id": job_id, "poolInfo": {"poolId": pool}, **extra})
    values = {"PropertyName": prop} if prop else {}
    assert_error(r, status, code, **values)
    assert raw.get(f"/jobs/{job_id}").status_code == 404


@pytest.mark.parametrize(
    "params,code",
    [
        ({"$filter": "nodeId eq"}, "InvalidQueryParameterValue"),
        ({"$filter": "state eq 'active'"}, "InvalidQueryParameterValue"),
        ({"maxresults": "0"}, "OutOfRangeQueryParameterValue"),
        ({"$skiptoken": "!!"}, "InvalidQueryParameterValue"),
    ],
)
def test_bad_status_queries_are_400(raw: Raw, pool: str, params: dict[str, str], code: str) -> None:
    job_id = f"jpq-{uuid.uuid4().hex[:8]}"
    assert (
        raw.post(
            "/jobs",
            {"id": job_id, "poolInfo": {"poolId": pool}, "jobPreparationTask": {"commandLine": "true"}},
        ).status_code
        == 201
    )
    r = raw.get(f"/jobs/{job_id}/jobpreparationandreleasetaskstatus", params=params)
    assert_error(r, 400, code)
    wait_for(lambda: raw.delete(f"/jobs/{job_id}").status_code == 202 or None, 10, 0.1, "job delete")


def _agent_pid(data_dir: Path, node_id: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"batchyard.agent.main" in cmd and str(data_dir).encode() in b" ".join(cmd):
            if cmd[cmd.index(b"--node-id") + 1].decode() == node_id:
                return int(entry.name)
    return None


@pytest.mark.parametrize("rerun", [True, False])
def test_rerun_on_node_reboot_after_success(
    client: BatchClient, live: LiveServer, uid: str, tmp_path: Path, rerun: bool
) -> None:
    """A node whose agent process restarts (what a reboot is here) runs a successful preparation again only
    with rerunOnNodeRebootAfterSuccess."""
    import os
    import signal

    pool_id = f"jpb-{uid}"
    create_pool(client, pool_id, nodes=1)
    try:
        (node,) = wait_idle_nodes(client, pool_id, 1)
        job_id = f"jpb-{uid}"
        prep = m.BatchJobPreparationTask(
            command_line=sh(f"date +%s%N > {tmp_path}/prep.$$"), rerun_on_node_reboot_after_success=rerun
        )
        create(client, job_id, pool_id, prep)
        client.create_task(job_id, task("t1", "true"))
        wait_tasks_completed(client, job_id, ["t1"])
        pid = _agent_pid(live.data_dir, str(node.id))
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        wait_for(
            lambda: (p := _agent_pid(live.data_dir, str(node.id))) is not None and p != pid or None,
            60,
            0.1,
            "the node's agent to come back",
        )
        wait_idle_nodes(client, pool_id, 1)
        client.create_task(job_id, task("t2", "true"))
        wait_tasks_completed(client, job_id, ["t2"], timeout=60)
        assert len(list(tmp_path.glob("prep.*"))) == (2 if rerun else 1)
        terminate(client, job_id)
    finally:
        client.begin_delete_pool(pool_id, polling_interval=0.2).result()


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    fs = FileServer().start()
    try:
        yield fs
    finally:
        fs.stop()


def test_preparation_resource_files(client: BatchClient, pool: str, uid: str, files: FileServer) -> None:
    job_id = f"jpr-{uid}"
    url = files.put(f"tool-{uid}.sh", b"echo tool ran\n")
    prep = m.BatchJobPreparationTask(
        command_line="/bin/sh tool.sh", resource_files=[m.ResourceFile(http_url=url, file_path="tool.sh")]
    )
    create(client, job_id, pool, prep)
    client.create_task(job_id, task("t", "cat $AZ_BATCH_JOB_PREP_WORKING_DIR/tool.sh"))
    t = wait_tasks_completed(client, job_id, ["t"])["t"]
    assert t.execution_info.result == "success"  # type: ignore[union-attr]
    (s,) = statuses(client, job_id)
    out = client.download_node_file(pool, s.node_id, f"workitems/{job_id}/job-1/jobpreparation/stdout.txt")  # type: ignore[arg-type]
    assert b"".join(out) == b"tool ran\n"
    terminate(client, job_id)


def test_preparation_resource_file_failure_is_not_retried(
    client: BatchClient, pool: str, uid: str, files: FileServer
) -> None:
    job_id = f"jpm-{uid}"
    prep = m.BatchJobPreparationTask(
        command_line="/bin/true",
        resource_files=[m.ResourceFile(http_url=f"{files.url}/files/missing-{uid}", file_path="x")],
        constraints=m.BatchTaskConstraints(max_task_retry_count=3),
    )
    create(client, job_id, pool, prep)
    client.create_task(job_id, task("t", "true"))

    def both_failed() -> list[m.BatchJobPreparationAndReleaseTaskStatus] | None:
        st = statuses(client, job_id, filter="jobPreparationTaskExecutionInfo/result eq 'failure'")
        return st if len(st) == 2 else None

    for s in wait_for(both_failed, 30, 0.1, "preparation to fail on both nodes"):
        info = s.job_preparation_task_execution_info
        assert info is not None and info.retry_count == 0 and info.exit_code is None
        assert info.failure_info is not None and info.failure_info.category == "usererror"
    # no node may run the job's tasks: the task waits in the queue
    t = client.get_task(job_id, "t")
    assert t.state == "active" and t.node_info is None
    terminate(client, job_id)
    wait_job_state(client, job_id, "completed")


def test_release_max_wall_clock_time_ends_it(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"jrw-{uid}"
    create(
        client,
        job_id,
        pool,
        m.BatchJobPreparationTask(command_line="true"),
        m.BatchJobReleaseTask(command_line="sleep 60", max_wall_clock_time=dt.timedelta(seconds=1)),
    )
    client.create_task(job_id, task("t", "true"))
    wait_tasks_completed(client, job_id, ["t"])
    terminate(client, job_id)
    wait_job_state(client, job_id, "completed", timeout=20)
    (s,) = statuses(client, job_id)
    rel = s.job_release_task_execution_info
    assert rel is not None and rel.result == "failure" and rel.failure_info is not None
    assert rel.failure_info.code == "TaskEnded"


def test_release_runs_again_after_an_agent_restart(
    client: BatchClient, live: LiveServer, uid: str, tmp_path: Path
) -> None:
    import os
    import signal

    pool_id = f"jrr-{uid}"
    create_pool(client, pool_id, nodes=1)
    try:
        (node,) = wait_idle_nodes(client, pool_id, 1)
        job_id = f"jrr-{uid}"
        release = m.BatchJobReleaseTask(command_line=sh(f"date +%s%N > {tmp_path}/rel.$$; sleep 2"))
        create(client, job_id, pool_id, m.BatchJobPreparationTask(command_line="true"), release)
        client.create_task(job_id, task("t", "true"))
        wait_tasks_completed(client, job_id, ["t"])
        terminate(client, job_id)
        wait_for(lambda: list(tmp_path.glob("rel.*")) or None, 20, 0.05, "the release to start")
        pid = _agent_pid(live.data_dir, str(node.id))
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        wait_job_state(client, job_id, "completed", timeout=60)
        assert len(list(tmp_path.glob("rel.*"))) == 2
    finally:
        client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_reimage_lets_a_node_whose_preparation_failed_run_the_job(
    client: BatchClient, uid: str, tmp_path: Path
) -> None:
    pool_id = f"jpi-{uid}"
    create_pool(client, pool_id, nodes=1)
    try:
        (node,) = wait_idle_nodes(client, pool_id, 1)
        job_id = f"jpi-{uid}"
        prep = m.BatchJobPreparationTask(command_line=f"test -e {tmp_path}/ok")
        create(client, job_id, pool_id, prep)
        client.create_task(job_id, task("t", "true"))
        wait_for(
            lambda: (
                statuses(client, job_id, filter="jobPreparationTaskExecutionInfo/result eq 'failure'") or None
            ),
            30,
            0.1,
            "the preparation to fail",
        )
        assert client.get_task(job_id, "t").state == "active"  # blocked on the only node
        (tmp_path / "ok").touch()
        client.begin_reimage_node(
            pool_id,
            str(node.id),
            private_models.BatchNodeReimageOptions(node_reimage_option="requeue"),
            polling_interval=0.5,
        ).result()
        t = wait_tasks_completed(client, job_id, ["t"], timeout=60)["t"]
        assert t.execution_info.result == "success"  # type: ignore[union-attr]
        (s,) = statuses(client, job_id)
        assert s.job_preparation_task_execution_info.result == "success"  # type: ignore[union-attr]
        terminate(client, job_id)
    finally:
        client.begin_delete_pool(pool_id, polling_interval=0.2).result()
