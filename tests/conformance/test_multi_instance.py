"""Multi-instance tasks through the official azure-batch 15.1.0 SDK against a live server with real agents:
gang placement, coordination before the application command, the instances' environment, subtasksinfo,
subtask files, failure/retry/terminate/wall clock/lost node, and the input rules.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError

from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state
from tests.support.httpserver import FileServer
from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw
from tests.support.semantics import expect_error, new_job, pid_alive, sh

pytestmark = pytest.mark.slow

NODES = 3


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    # below /tmp so that tasks (other uids) reach their node's absolute paths (AZ_BATCH_TASK_SHARED_DIR)
    top = Path(tempfile.mkdtemp(prefix="batchyard-mi-", dir="/tmp"))
    os.chmod(top, 0o711)
    srv = LiveServer(top / "srv").start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def client(live: LiveServer) -> BatchClient:
    return BatchClient(endpoint=live.endpoint, credential=AzureNamedKeyCredential(live.account, live.key))


@pytest.fixture(scope="module")
def pool(client: BatchClient) -> Iterator[str]:
    pool_id = f"mi-{uuid.uuid4().hex[:8]}"
    create_pool(client, pool_id, nodes=NODES, enable_inter_node_communication=True)
    wait_idle_nodes(client, pool_id, NODES)
    yield pool_id
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def mi_task(
    task_id: str, app: str, coordination: str, n: int = NODES, **kw: object
) -> m.BatchTaskCreateOptions:
    return m.BatchTaskCreateOptions(
        id=task_id,
        command_line=sh(app),
        multi_instance_settings=m.MultiInstanceSettings(
            number_of_instances=n, coordination_command_line=sh(coordination)
        ),
        **kw,  # type: ignore[arg-type]
    )


def wait_done(client: BatchClient, job_id: str, task_id: str, timeout: float = 60) -> m.BatchTask:
    return wait_task_state(client, job_id, task_id, "completed", timeout)


def node_file(client: BatchClient, pool_id: str, node_id: str, path: str) -> str:
    return b"".join(client.download_node_file(pool_id, node_id, path)).decode()


def test_gang_runs_coordination_everywhere_then_the_primary(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"mi-{uid}"
    new_job(client, job_id, pool)
    marks = tmp_path / "marks"
    marks.mkdir(mode=0o1777)
    os.chmod(marks, 0o1777)
    coordination = (
        f"echo $AZ_BATCH_NODE_ID > {marks}/coord-$AZ_BATCH_NODE_ID; "
        "echo coordinated on $AZ_BATCH_NODE_ID; echo shared > $AZ_BATCH_TASK_SHARED_DIR/shared.txt"
    )
    app = (
        f"test $(ls {marks} | wc -l) -eq {NODES} || exit 9; "
        "for v in AZ_BATCH_HOST_LIST AZ_BATCH_NODE_LIST AZ_BATCH_MASTER_NODE AZ_BATCH_IS_CURRENT_NODE_MASTER "
        "AZ_BATCH_TASK_SHARED_DIR CCP_NODES AZ_BATCH_TASK_DIR AZ_BATCH_NODE_ID; do echo $v=$(printenv $v); done"
    )
    client.create_task(job_id, mi_task("t", app, coordination))
    t = wait_done(client, job_id, "t")
    assert t.execution_info.result == "success", t.execution_info.failure_info
    assert t.execution_info.exit_code == 0
    assert t.multi_instance_settings.number_of_instances == NODES
    out = b"".join(client.download_task_file(job_id, "t", "stdout.txt")).decode()
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    nodes = {n.id: n for n in client.list_nodes(pool)}
    addresses = {n.ip_address for n in nodes.values()}
    assert len(addresses) == NODES and all(a.startswith("127.") for a in addresses)
    hosts = env["AZ_BATCH_HOST_LIST"].split(",")
    master = nodes[t.node_info.node_id]
    assert set(hosts) == addresses and hosts[0] == master.ip_address
    assert env["AZ_BATCH_NODE_LIST"] == ";".join(hosts)
    assert env["AZ_BATCH_MASTER_NODE"] == f"{master.ip_address}:6000"
    assert env["AZ_BATCH_IS_CURRENT_NODE_MASTER"] == "true"
    assert env["AZ_BATCH_TASK_SHARED_DIR"] == env["AZ_BATCH_TASK_DIR"]
    assert env["CCP_NODES"] == " ".join([str(NODES), *(f"{h} 1" for h in hosts)])
    assert env["AZ_BATCH_NODE_ID"] == master.id

    subs = list(client.list_subtasks(job_id, "t"))
    assert sorted(s.id for s in subs) == list(range(1, NODES))
    used = {t.node_info.node_id} | {s.node_info.node_id for s in subs}
    assert used == set(nodes)  # one instance per node
    assert all(s.start_time >= t.execution_info.start_time for s in subs)  # the task started with its gang
    for s in subs:
        assert s.state == "completed" and s.previous_state == "running"
        assert s.result == "success" and s.exit_code == 0
        assert s.start_time is not None and s.end_time is not None and s.end_time >= s.start_time
        assert s.node_info.pool_id == pool
        root = s.node_info.task_root_directory
        assert root == f"workitems/{job_id}/job-1/t"
        text = node_file(client, pool, s.node_info.node_id, f"{root}/stdout.txt")
        assert text.strip() == f"coordinated on {s.node_info.node_id}"
        assert node_file(client, pool, s.node_info.node_id, f"{root}/shared.txt").strip() == "shared"


def test_ordinary_task_has_no_subtasks(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"plain-{uid}"
    new_job(client, job_id, pool)
    client.create_task(job_id, m.BatchTaskCreateOptions(id="p", command_line="/bin/true"))
    wait_done(client, job_id, "p")
    assert list(client.list_subtasks(job_id, "p")) == []
    expect_error(lambda: list(client.list_subtasks(job_id, "nope")), 404, "TaskNotFound")


def test_failing_subtask_fails_and_retries_the_whole_gang(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"fail-{uid}"
    new_job(client, job_id, pool)
    ran = tmp_path / "app-ran"
    coordination = 'test "$AZ_BATCH_IS_CURRENT_NODE_MASTER" = true || exit 3'
    client.create_task(
        job_id,
        mi_task(
            "f", f"touch {ran}", coordination, constraints=m.BatchTaskConstraints(max_task_retry_count=1)
        ),
    )
    t = wait_done(client, job_id, "f")
    assert t.execution_info.result == "failure"
    assert t.execution_info.retry_count == 1
    assert t.execution_info.exit_code == 3
    assert t.execution_info.failure_info.code == "FailureExitCode"
    assert not ran.exists()  # the application command never ran
    subs = list(client.list_subtasks(job_id, "f"))
    assert {s.exit_code for s in subs if s.result == "failure"} == {3}
    wait_for(lambda: all(n.state == "idle" for n in client.list_nodes(pool)), 30, what="nodes idle again")


def _wait_pids(pid_dir: Path, count: int) -> list[int]:
    def pids() -> list[int] | None:
        found = [int(p.read_text()) for p in pid_dir.glob("pid-*") if p.read_text().strip()]
        return found if len(found) == count else None

    return wait_for(pids, 30, 0.05, f"{count} pid files in {pid_dir}")


def _gone(pids: list[int]) -> None:
    wait_for(lambda: not any(pid_alive(p) for p in pids), 20, 0.05, f"processes {pids} to end")


BACKGROUND = "sleep 300 > /dev/null 2>&1 & echo $! > {d}/pid-$AZ_BATCH_NODE_ID"


def test_terminate_ends_every_instance(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    job_id = f"term-{uid}"
    new_job(client, job_id, pool)
    client.create_task(job_id, mi_task("long", "exec sleep 300", BACKGROUND.format(d=tmp_path)))
    pids = _wait_pids(tmp_path, NODES)  # a background process per node, left by the coordination command
    wait_task_state(client, job_id, "long", "running")
    client.terminate_task(job_id, "long")
    t = client.get_task(job_id, "long")
    assert t.state == "completed" and t.execution_info.failure_info.code == "TaskEnded"
    _gone(pids)
    subs = wait_for(
        lambda: (
            (s := list(client.list_subtasks(job_id, "long"))) and all(x.state == "completed" for x in s) and s
        ),
        20,
        what="subtasks completed",
    )
    assert len(subs) == NODES - 1


def test_wall_clock_expiry_ends_the_gang(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    job_id = f"wall-{uid}"
    new_job(client, job_id, pool)
    cons = m.BatchTaskConstraints(max_wall_clock_time=dt.timedelta(seconds=2))
    client.create_task(
        job_id, mi_task("w", "exec sleep 300", BACKGROUND.format(d=tmp_path), constraints=cons)
    )
    pids = _wait_pids(tmp_path, NODES)
    t = wait_done(client, job_id, "w", 30)
    assert t.execution_info.result == "failure"
    assert t.execution_info.failure_info.code == "TaskEnded"
    _gone(pids)


def _agent_of(node_id: str) -> psutil.Process:
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "batchyard.agent.main" in cmd and node_id in cmd:
            return p
    raise AssertionError(f"no agent process for {node_id}")


def test_lost_instance_node_requeues_the_gang(
    client: BatchClient, pool: str, uid: str, tmp_path: Path
) -> None:
    job_id = f"lost-{uid}"
    new_job(client, job_id, pool)
    first = tmp_path / "first"
    first.mkdir()
    os.chmod(first, 0o1777)
    done = tmp_path / "done"
    # the first attempt's application command waits; a rerun finishes at once
    app = f"if [ -e {done} ]; then exit 0; fi; touch {done}; exec sleep 300"
    client.create_task(job_id, mi_task("l", app, BACKGROUND.format(d=first)))
    pids = _wait_pids(first, NODES)
    wait_for(lambda: done.exists(), 30, what="the primary to start")
    t = client.get_task(job_id, "l")
    sub = next(s for s in client.list_subtasks(job_id, "l") if s.id == 1)
    _agent_of(sub.node_info.node_id).send_signal(signal.SIGKILL)
    t = wait_done(client, job_id, "l", 90)
    assert t.execution_info.result == "success"
    assert t.execution_info.requeue_count >= 1
    _gone(pids)  # the first attempt's processes on every node, the lost one included


# --- input rules --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1])
def test_number_of_instances_below_one_is_refused(client: BatchClient, pool: str, uid: str, n: int) -> None:
    job_id = f"bad-{uid}"
    new_job(client, job_id, pool)
    exc = expect_error(
        lambda: client.create_task(job_id, mi_task("b", "true", "true", n=n)), 400, "InvalidPropertyValue"
    )
    assert "numberOfInstances" in str(exc)


def test_coordination_command_is_required(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"nocoord-{uid}"
    new_job(client, job_id, pool)
    body = {"id": "c", "commandLine": "/bin/true", "multiInstanceSettings": {"numberOfInstances": 2}}
    with pytest.raises(HttpResponseError) as info:
        client.create_task(job_id, body)  # type: ignore[arg-type]
    assert info.value.status_code == 400
    assert info.value.error is not None and info.value.error.code == "MissingRequiredProperty"


def test_required_slots_is_refused_on_multi_instance(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"slots-{uid}"
    new_job(client, job_id, pool)
    expect_error(
        lambda: client.create_task(job_id, mi_task("s", "true", "true", required_slots=2)),
        400,
        "InvalidPropertyValue",
    )


def test_more_instances_than_a_pool_can_have_fails(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"huge-{uid}"
    new_job(client, job_id, pool)
    client.create_task(job_id, mi_task("h", "true", "true", n=101))
    t = wait_done(client, job_id, "h")
    assert t.execution_info.failure_info.code == "TaskSchedulingConstraintFailed"


def test_dependencies_need_the_job_setting(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"deps-{uid}"
    new_job(client, job_id, pool)
    deps = m.BatchTaskDependencies(task_ids=["a"])
    expect_error(
        lambda: client.create_task(job_id, mi_task("d", "true", "true", depends_on=deps)),
        400,
        "TaskDependenciesNotSpecifiedOnJob",
    )
    job2 = f"deps2-{uid}"
    new_job(client, job2, pool, uses_task_dependencies=True)
    client.create_task(job2, m.BatchTaskCreateOptions(id="a", command_line="/bin/true"))
    client.create_task(job2, mi_task("d", "true", "true", n=2, depends_on=deps))
    assert wait_done(client, job2, "d").execution_info.result == "success"


@pytest.mark.parametrize(
    "pool_kw", [{}, {"enable_inter_node_communication": True, "slots": 2}], ids=["no-internode", "two-slots"]
)
def test_pool_the_service_would_not_use_never_schedules(
    client: BatchClient, uid: str, pool_kw: dict[str, object]
) -> None:
    pool_id = f"noinc-{uid}"
    create_pool(client, pool_id, nodes=1, **pool_kw)  # type: ignore[arg-type]
    try:
        wait_idle_nodes(client, pool_id, 1)
        job_id = f"noinc-{uid}"
        new_job(client, job_id, pool_id)
        client.create_task(job_id, mi_task("m", "true", "true", n=1))
        client.create_task(job_id, m.BatchTaskCreateOptions(id="after", command_line="/bin/true"))
        wait_done(client, job_id, "after")  # the pool works, the multi-instance task waits (as on Azure)
        assert client.get_task(job_id, "m").state == "active"
    finally:
        client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_server_restart_keeps_the_gang(tmp_path: Path) -> None:
    """The server is SIGKILLed while the instances coordinate; after the restart the gang goes on."""
    top = tmp_path / "restart"
    top.mkdir()
    os.chmod(top, 0o711)
    srv = LiveServer(top / "srv").start()
    try:
        c = BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))
        create_pool(c, "rp", nodes=2, enable_inter_node_communication=True)
        wait_idle_nodes(c, "rp", 2)
        new_job(c, "rj", "rp")
        go = tmp_path / "go"
        coordination = f"touch {tmp_path}/started-$AZ_BATCH_NODE_ID; while [ ! -e {go} ]; do sleep 0.05; done"
        c.create_task("rj", mi_task("g", "echo primary done", coordination, n=2))
        wait_for(lambda: len(list(tmp_path.glob("started-*"))) == 2, 30, what="both coordination commands")
        srv.kill(signal.SIGKILL)
        srv = LiveServer(top / "srv", port=srv.port).start()
        c = BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))
        go.touch()
        t = wait_done(c, "rj", "g")
        assert t.execution_info.result == "success"
        assert t.execution_info.requeue_count == 0
        assert b"".join(c.download_task_file("rj", "g", "stdout.txt")) == b"primary done\n"
        (sub,) = c.list_subtasks("rj", "g")
        assert sub.state == "completed" and sub.exit_code == 0
    finally:
        srv.stop()


def test_common_resource_files_reach_every_instance_and_delete_removes_them(
    client: BatchClient, pool: str, uid: str
) -> None:
    files = FileServer().start()
    try:
        url = files.put("common.txt", b"common data\n")
        prim = files.put("primary.txt", b"primary data\n")
        job_id = f"crf-{uid}"
        new_job(client, job_id, pool)
        task = mi_task(
            "c",
            "cat ../common.txt primary.txt",
            "cat $AZ_BATCH_TASK_SHARED_DIR/common.txt; test ! -e $AZ_BATCH_TASK_WORKING_DIR/primary.txt",
            resource_files=[m.ResourceFile(http_url=prim, file_path="primary.txt")],
        )
        task.multi_instance_settings.common_resource_files = [
            m.ResourceFile(http_url=url, file_path="common.txt")
        ]
        client.create_task(job_id, task)
        t = wait_done(client, job_id, "c")
        assert t.execution_info.result == "success", t.execution_info.failure_info
        out = b"".join(client.download_task_file(job_id, "c", "stdout.txt")).decode()
        assert out == "common data\nprimary data\n"
        subs = list(client.list_subtasks(job_id, "c"))
        for s in subs:
            root = s.node_info.task_root_directory
            assert node_file(client, pool, s.node_info.node_id, f"{root}/common.txt") == "common data\n"
            assert node_file(client, pool, s.node_info.node_id, f"{root}/stdout.txt") == "common data\n"
        client.delete_task(job_id, "c")
        for s in subs:
            with pytest.raises(HttpResponseError) as info:
                node_file(client, pool, s.node_info.node_id, f"{s.node_info.task_root_directory}/common.txt")
            assert info.value.status_code == 404
    finally:
        files.stop()


def test_bad_common_resource_file_is_refused(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"badcrf-{uid}"
    new_job(client, job_id, pool)
    task = mi_task("b", "true", "true")
    task.multi_instance_settings.common_resource_files = [m.ResourceFile(file_path="x")]  # no source
    exc = expect_error(lambda: client.create_task(job_id, task), 400, "InvalidPropertyValue")
    assert "multiInstanceSettings.commonResourceFiles[0]" in str(exc)


def test_a_waiting_gang_is_not_overtaken(client: BatchClient, pool: str, uid: str, tmp_path: Path) -> None:
    job_id = f"fifo-{uid}"
    new_job(client, job_id, pool)
    go = tmp_path / "go"
    client.create_task(
        job_id,
        m.BatchTaskCreateOptions(id="blocker", command_line=sh(f"while [ ! -e {go} ]; do sleep 0.05; done")),
    )
    wait_task_state(client, job_id, "blocker", "running")
    client.create_task(job_id, mi_task("gang", "true", "true"))
    client.create_task_collection(
        job_id,
        m.BatchTaskGroup(
            task_values=[m.BatchTaskCreateOptions(id=f"q{i}", command_line="/bin/true") for i in range(4)]
        ),
    )
    # two nodes are idle, but they are kept for the gang: the later tasks wait behind it
    assert all(client.get_task(job_id, f"q{i}").state == "active" for i in range(4))
    go.touch()
    tasks = {t.id: t for t in (wait_done(client, job_id, x) for x in ["gang", "q0", "q1", "q2", "q3"])}
    assert tasks["gang"].execution_info.result == "success"
    assert all(
        tasks[f"q{i}"].execution_info.start_time >= tasks["gang"].execution_info.start_time for i in range(4)
    )


def test_launcher_files_are_not_node_files(client: BatchClient, pool: str, uid: str) -> None:
    job_id = f"hidden-{uid}"
    new_job(client, job_id, pool)
    client.create_task(job_id, mi_task("h", "true", "true"))
    t = wait_done(client, job_id, "h")
    node = t.node_info.node_id
    names = [f.name for f in client.list_node_files(pool, node, recursive=True)]
    assert not [n for n in names if n.startswith((".batchyard", ".agent"))], names
    for path in (".batchyard-bin/batchyard-rsh", ".agent-mpi-sessions"):
        with pytest.raises(HttpResponseError) as info:
            node_file(client, pool, node, path)
        assert info.value.status_code == 404


def test_preempted_spot_node_reruns_the_whole_gang(
    live: LiveServer, client: BatchClient, uid: str, tmp_path: Path
) -> None:
    pool_id = f"mispot-{uid}"
    create_pool(client, pool_id, nodes=0, target_low_priority_nodes=2, enable_inter_node_communication=True)
    try:
        wait_for(
            lambda: len([n for n in client.list_nodes(pool_id) if n.state == "idle"]) == 2,
            60,
            what="2 spot nodes",
        )
        job_id = f"mispot-{uid}"
        new_job(client, job_id, pool_id)
        first = tmp_path / "first"
        first.mkdir()
        os.chmod(first, 0o1777)
        done = tmp_path / "done"
        app = f"if [ -e {done} ]; then exit 0; fi; touch {done}; exec sleep 300"
        client.create_task(job_id, mi_task("s", app, BACKGROUND.format(d=first), n=2))
        pids = _wait_pids(first, 2)
        wait_for(lambda: done.exists(), 30, what="the primary to start")
        (sub,) = client.list_subtasks(job_id, "s")
        r = Raw(live).post(
            f"/batchyard/pools/{pool_id}/nodes/{sub.node_info.node_id}/preempt", {"returnAfter": "PT1S"}
        )
        assert r.status_code == 200, r.text()
        _gone(pids)  # every instance of the first run ended, on both nodes
        t = wait_done(client, job_id, "s", 90)
        assert t.execution_info.result == "success"
        assert t.execution_info.requeue_count >= 1 and t.execution_info.retry_count == 0
    finally:
        client.begin_delete_pool(pool_id, polling_interval=0.2).result()
