"""Pool start tasks through the official azure-batch 15.1.0 SDK (and `az batch`), against a live server.

Azure semantics (reference semantics/node-lifecycle.md §1, §5, §12): the start task runs on every node when it
joins (and after each reboot/reimage), in `startup/` with working directory `startup/wd`; with `waitForSuccess`
(the default) the node is `waitingforstarttask` while it runs, `idle` after a success and `starttaskfailed`
after its last retry, and takes no task before a success; without it the node is `idle` at once. The node's
`startTaskInfo` reports it; a start task changed on the pool reaches a node at its next boot.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models._models import BatchNodeRebootOptions, BatchNodeReimageOptions
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ResourceNotFoundError

from tests.conformance.test_az_tutorial import Az, az  # noqa: F401 - the az fixture
from tests.support.batch import IMAGE, SKU, create_pool
from tests.support.httpserver import FileServer
from tests.support.live import LiveServer, wait_for
from tests.support.semantics import expect_error, new_job, wait_pid_gone, wait_tasks_completed

pytestmark = pytest.mark.slow

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="separate task users need a server running as root")
UID_BASE = 1_800_000_000
BLOCK = 4096


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    # Start tasks run as other users: the data dir's parents must let them pass (pytest's temp dir does not).
    data_dir = Path(tempfile.mkdtemp(prefix="batchyard-st-", dir="/tmp"))
    os.chmod(data_dir, 0o755)
    srv = LiveServer(data_dir).start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def client(live: LiveServer) -> BatchClient:
    return BatchClient(endpoint=live.endpoint, credential=AzureNamedKeyCredential(live.account, live.key))


@pytest.fixture
def pools(client: BatchClient) -> Iterator[list[str]]:
    """Pool ids a test created: deleted afterwards, so their agents do not outlive the test."""
    created: list[str] = []
    yield created
    for pool_id in created:
        client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def sh(script: str) -> str:
    return f"/bin/sh -c {shlex.quote(script)}"


def start_pool(
    client: BatchClient, pools: list[str], start_task: m.BatchStartTask, nodes: int = 1, **kw: Any
) -> str:
    pool_id = f"st-{uuid.uuid4().hex[:8]}"
    create_pool(client, pool_id, nodes=nodes, start_task=start_task, **kw)
    pools.append(pool_id)
    return pool_id


def wait_nodes(
    client: BatchClient,
    pool_id: str,
    ok: Callable[[m.BatchNode], bool],
    count: int = 1,
    what: str = "",
    timeout: float = 60,
) -> list[m.BatchNode]:
    def reached() -> list[m.BatchNode] | None:
        nodes = list(client.list_nodes(pool_id))
        return nodes if len(nodes) == count and all(ok(n) for n in nodes) else None

    return wait_for(reached, timeout, 0.05, what or f"{count} nodes of {pool_id}")


def node_file(client: BatchClient, pool_id: str, node_id: str, path: str) -> str:
    return b"".join(client.download_node_file(pool_id, node_id, path)).decode()


def stays(fn: Callable[[], bool], seconds: float, what: str) -> None:
    """Assert that ``fn`` keeps holding for a while (the scheduler has had many passes meanwhile)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert fn(), what
        time.sleep(0.05)


def env_of(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_start_task_runs_first_and_reports_its_info_and_files(
    client: BatchClient, pools: list[str], tmp_path: Path
) -> None:
    go = tmp_path / "go"
    st = m.BatchStartTask(
        command_line=sh(
            f"echo started; echo oops >&2; echo made > made.txt; while [ ! -e {go} ]; do sleep 0.05; done"
        ),
    )
    pool_id = start_pool(client, pools, st)
    pool = client.get_pool(pool_id)
    assert pool.start_task is not None
    assert pool.start_task.wait_for_success is True and pool.start_task.max_task_retry_count == 0
    ident = pool.start_task.user_identity
    assert ident is not None and ident.auto_user is not None
    assert (ident.auto_user.scope, ident.auto_user.elevation_level) == ("pool", "nonadmin")

    (node,) = wait_nodes(
        client, pool_id, lambda n: n.state == "waitingforstarttask", what="waitingforstarttask"
    )
    info = node.start_task_info
    assert info is not None and info.state == "running" and info.retry_count == 0
    assert (
        info.start_time is not None
        and info.end_time is None
        and info.exit_code is None
        and info.result is None
    )
    assert node.last_boot_time is not None

    job_id = f"stj-{uuid.uuid4().hex[:8]}"
    new_job(client, job_id, pool_id)
    client.create_task(job_id, m.BatchTaskCreateOptions(id="t1", command_line="/bin/true"))
    stays(
        lambda: (
            client.get_task(job_id, "t1").state == "active"
            and client.get_node(pool_id, node.id).state == "waitingforstarttask"
        ),
        1.0,
        "no task may run before the start task succeeds",
    )

    go.touch()
    (node,) = wait_nodes(
        client, pool_id, lambda n: n.state in ("idle", "running"), what="the node to be ready"
    )
    t = wait_tasks_completed(client, job_id, ["t1"])["t1"]
    node = client.get_node(pool_id, node.id)
    info = node.start_task_info
    assert info is not None and info.state == "completed" and info.result == "success"
    assert info.exit_code == 0 and info.failure_info is None and info.retry_count == 0
    assert info.last_retry_time is None
    assert info.end_time is not None and info.start_time is not None and info.end_time >= info.start_time
    assert t.execution_info is not None and t.execution_info.start_time is not None
    assert t.execution_info.start_time >= info.end_time

    # its files: stdout/stderr in startup/, what it made in startup/wd, through the node file routes
    assert node_file(client, pool_id, node.id, "startup/stdout.txt") == "started\n"
    assert node_file(client, pool_id, node.id, "startup/stderr.txt") == "oops\n"
    assert node_file(client, pool_id, node.id, "startup/wd/made.txt") == "made\n"
    names = {f.name for f in client.list_node_files(pool_id, node.id, recursive=True)}
    assert {"startup/stdout.txt", "startup/stderr.txt", "startup/wd/made.txt"} <= names, names
    props = client.get_node_file_properties(pool_id, node.id, "startup/stdout.txt")
    assert props is not None
    counts = {c.pool_id: c for c in client.list_pool_node_counts()}[pool_id]
    assert counts.dedicated is not None and counts.dedicated.waiting_for_start_task == 0
    filtered = list(client.list_nodes(pool_id, filter="startTaskInfo/result eq 'success'"))
    assert [n.id for n in filtered] == [node.id]


def test_without_wait_for_success_the_node_takes_tasks_at_once(
    client: BatchClient, pools: list[str], tmp_path: Path
) -> None:
    go = tmp_path / "go"
    st = m.BatchStartTask(
        command_line=sh(f"while [ ! -e {go} ]; do sleep 0.05; done"), wait_for_success=False
    )
    pool_id = start_pool(client, pools, st)
    assert client.get_pool(pool_id).start_task.wait_for_success is False  # type: ignore[union-attr]
    (node,) = wait_nodes(
        client,
        pool_id,
        lambda n: (
            n.state == "idle" and n.start_task_info is not None and n.start_task_info.state == "running"
        ),
        what="an idle node whose start task runs",
    )
    job_id = f"stj-{uuid.uuid4().hex[:8]}"
    new_job(client, job_id, pool_id)
    client.create_task(job_id, m.BatchTaskCreateOptions(id="t1", command_line="/bin/true"))
    t = wait_tasks_completed(client, job_id, ["t1"])["t1"]
    assert t.execution_info is not None and t.execution_info.result == "success"
    info = client.get_node(pool_id, node.id).start_task_info
    assert info is not None and info.state == "running"  # the task ran while the start task still ran
    go.touch()
    wait_nodes(
        client,
        pool_id,
        lambda n: n.start_task_info is not None and n.start_task_info.result == "success",
        what="the start task to complete",
    )


def test_failure_after_retries_makes_the_node_starttaskfailed(client: BatchClient, pools: list[str]) -> None:
    st = m.BatchStartTask(
        command_line=sh("echo x >> tries.txt; echo failing >&2; exit 3"), max_task_retry_count=2
    )
    pool_id = start_pool(client, pools, st, nodes=1)
    (node,) = wait_nodes(client, pool_id, lambda n: n.state == "starttaskfailed", what="starttaskfailed")
    info = node.start_task_info
    assert info is not None and info.state == "completed" and info.result == "failure"
    assert info.exit_code == 3 and info.retry_count == 2
    assert info.last_retry_time is not None and info.start_time is not None
    assert info.last_retry_time <= info.start_time + (info.end_time - info.start_time)  # type: ignore[operator]
    assert info.failure_info is not None
    assert (info.failure_info.category, info.failure_info.code) == ("usererror", "FailureExitCode")
    # three attempts (the first and two retries), each in the same working directory
    assert node_file(client, pool_id, node.id, "startup/wd/tries.txt") == "x\nx\nx\n"
    assert node_file(client, pool_id, node.id, "startup/stderr.txt") == "failing\n"
    counts = {c.pool_id: c for c in client.list_pool_node_counts()}[pool_id]
    assert counts.dedicated is not None and counts.dedicated.start_task_failed == 1
    failed = list(client.list_nodes(pool_id, filter="startTaskInfo/result eq 'failure'"))
    assert [n.id for n in failed] == [node.id]

    # no task is placed on it
    job_id = f"stj-{uuid.uuid4().hex[:8]}"
    new_job(client, job_id, pool_id)
    client.create_task(job_id, m.BatchTaskCreateOptions(id="t1", command_line="/bin/true"))
    stays(
        lambda: (
            client.get_task(job_id, "t1").state == "active"
            and client.get_node(pool_id, node.id).state == "starttaskfailed"
        ),
        1.0,
        "a task was placed on a node whose start task failed",
    )


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    fs = FileServer().start()
    try:
        yield fs
    finally:
        fs.stop()


def test_resource_files_are_staged_into_the_working_directory(
    client: BatchClient, pools: list[str], files: FileServer
) -> None:
    url = files.put(f"setup-{uuid.uuid4().hex[:6]}.sh", b"echo installed from $(pwd)\n")
    st = m.BatchStartTask(
        command_line="/bin/sh tools/setup.sh",
        resource_files=[m.ResourceFile(http_url=url, file_path="tools/setup.sh")],
    )
    pool_id = start_pool(client, pools, st)
    (node,) = wait_nodes(client, pool_id, lambda n: n.state == "idle", what="idle")
    out = node_file(client, pool_id, node.id, "startup/stdout.txt")
    assert out.startswith("installed from /") and out.rstrip().endswith("/startup/wd"), out
    assert node_file(client, pool_id, node.id, "startup/wd/tools/setup.sh").startswith("echo installed")


def test_a_failure_before_the_command_runs_is_not_retried(
    client: BatchClient, pools: list[str], files: FileServer
) -> None:
    st = m.BatchStartTask(
        command_line="/bin/true",
        resource_files=[m.ResourceFile(http_url=f"{files.url}/status/404", file_path="missing.bin")],
        max_task_retry_count=3,
    )
    pool_id = start_pool(client, pools, st)
    (node,) = wait_nodes(client, pool_id, lambda n: n.state == "starttaskfailed", what="starttaskfailed")
    info = node.start_task_info
    assert info is not None and info.result == "failure" and info.retry_count == 0
    assert info.exit_code is None  # the command never ran
    assert info.failure_info is not None and info.failure_info.category == "usererror", info
    assert files.count("/status/404") == 1  # not retried


def test_no_start_task_and_missing_program(client: BatchClient, pools: list[str]) -> None:
    pool_id = start_pool(
        client, pools, m.BatchStartTask(command_line="no-such-program-here", wait_for_success=False)
    )
    (node,) = wait_nodes(
        client,
        pool_id,
        lambda n: (
            n.state == "idle" and n.start_task_info is not None and n.start_task_info.state == "completed"
        ),
        what="idle with a completed start task",
    )
    info = node.start_task_info
    assert info is not None and info.result == "failure" and info.exit_code is None
    assert info.failure_info is not None and info.failure_info.code == "CommandProgramNotFound"


def test_start_task_environment(client: BatchClient, pools: list[str]) -> None:
    st = m.BatchStartTask(
        command_line=sh("env; echo PWD_IS=$(pwd)"),
        environment_settings=[m.EnvironmentSetting(name="MY_SETTING", value="a b=c")],
    )
    pool_id = start_pool(client, pools, st)
    (node,) = wait_nodes(client, pool_id, lambda n: n.state == "idle", what="idle")
    env = env_of(node_file(client, pool_id, node.id, "startup/stdout.txt"))
    root = env["AZ_BATCH_NODE_ROOT_DIR"]
    expected = {
        "AZ_BATCH_ACCOUNT_NAME",
        "AZ_BATCH_ACCOUNT_URL",
        "AZ_BATCH_POOL_ID",
        "AZ_BATCH_NODE_ID",
        "AZ_BATCH_NODE_IS_DEDICATED",
        "AZ_BATCH_NODE_ROOT_DIR",
        "AZ_BATCH_NODE_SHARED_DIR",
        "AZ_BATCH_NODE_STARTUP_DIR",
        "AZ_BATCH_NODE_STARTUP_WORKING_DIR",
        "AZ_BATCH_NODE_MOUNTS_DIR",
        "AZ_BATCH_TASK_DIR",
        "AZ_BATCH_TASK_WORKING_DIR",
        "AZ_BATCH_CERTIFICATES_DIR",
        "AZ_BATCH_TASK_USER",
        "AZ_BATCH_TASK_USER_IDENTITY",
    }
    assert {k for k in env if k.startswith("AZ_BATCH_")} == expected  # no AZ_BATCH_JOB_ID / _TASK_ID
    assert env["AZ_BATCH_POOL_ID"] == pool_id and env["AZ_BATCH_NODE_ID"] == node.id
    assert env["AZ_BATCH_NODE_IS_DEDICATED"] == "true"
    assert env["AZ_BATCH_ACCOUNT_NAME"] == "devbatchaccount1"
    assert env["AZ_BATCH_NODE_STARTUP_DIR"] == env["AZ_BATCH_TASK_DIR"] == f"{root}/startup"
    wd = f"{root}/startup/wd"
    assert env["AZ_BATCH_NODE_STARTUP_WORKING_DIR"] == env["AZ_BATCH_TASK_WORKING_DIR"] == wd
    assert env["PWD_IS"] == wd and env["HOME"] == wd
    assert env["AZ_BATCH_NODE_SHARED_DIR"] == f"{root}/shared"
    assert env["AZ_BATCH_NODE_MOUNTS_DIR"] == f"{root}/fsmounts"
    assert env["AZ_BATCH_TASK_USER_IDENTITY"] == "PoolNonAdmin"
    assert env["MY_SETTING"] == "a b=c"


@needs_root
def test_start_task_user_identity(client: BatchClient, pools: list[str]) -> None:
    script = sh("echo UID=$(id -u); echo WHO=$AZ_BATCH_TASK_USER; echo AS=$AZ_BATCH_TASK_USER_IDENTITY")
    admin = start_pool(
        client,
        pools,
        m.BatchStartTask(
            command_line=script,
            user_identity=m.UserIdentity(auto_user=m.AutoUserSpecification(elevation_level="admin")),
        ),
    )
    task_scope = start_pool(
        client,
        pools,
        m.BatchStartTask(
            command_line=script, user_identity=m.UserIdentity(auto_user=m.AutoUserSpecification(scope="task"))
        ),
    )
    named = start_pool(
        client,
        pools,
        m.BatchStartTask(
            command_line=sh(
                "echo UID=$(id -u); echo WHO=$AZ_BATCH_TASK_USER; echo tool > $AZ_BATCH_NODE_SHARED_DIR/tool.txt"
            ),
            user_identity=m.UserIdentity(username="installer"),
        ),
        user_accounts=[m.UserAccount(name="installer", password="unused-here")],
    )
    outs = {}
    for pool_id in (admin, task_scope, named):
        (node,) = wait_nodes(client, pool_id, lambda n: n.state == "idle", what=f"{pool_id} idle")
        outs[pool_id] = (node, env_of(node_file(client, pool_id, node.id, "startup/stdout.txt")))

    _, out = outs[admin]
    assert out["UID"] == "0" and out["AS"] == "PoolAdmin" and out["WHO"] == "root"
    _, out = outs[task_scope]
    assert int(out["UID"]) >= UID_BASE and (int(out["UID"]) - UID_BASE) % BLOCK >= 64, out
    assert out["AS"] == "TaskNonAdmin"
    node, out = outs[named]
    uid = int(out["UID"])
    assert out["WHO"] == "installer" and uid >= UID_BASE and (uid - UID_BASE) % BLOCK == 1, out
    # what the start task installs in the shared dir, a task of the pool (the pool's auto-user) can use
    job_id = f"stj-{uuid.uuid4().hex[:8]}"
    new_job(client, job_id, named)
    client.create_task(
        job_id,
        m.BatchTaskCreateOptions(id="t1", command_line=sh("cat $AZ_BATCH_NODE_SHARED_DIR/tool.txt; id -u")),
    )
    t = wait_tasks_completed(client, job_id, ["t1"])["t1"]
    assert t.execution_info is not None and t.execution_info.result == "success", t.execution_info
    lines = b"".join(client.download_task_file(job_id, "t1", "stdout.txt")).decode().split()
    assert lines[0] == "tool" and int(lines[1]) == uid - 1  # the pool auto-user, not the installer


def test_a_changed_start_task_reaches_nodes_at_their_next_boot(client: BatchClient, pools: list[str]) -> None:
    pool_id = start_pool(client, pools, m.BatchStartTask(command_line="/bin/echo first"))
    (first,) = wait_nodes(client, pool_id, lambda n: n.state == "idle", what="idle")
    assert node_file(client, pool_id, first.id, "startup/stdout.txt") == "first\n"

    client.update_pool(
        pool_id, m.BatchPoolUpdateOptions(start_task=m.BatchStartTask(command_line="/bin/echo second"))
    )
    st = client.get_pool(pool_id).start_task
    assert st is not None and st.command_line == "/bin/echo second" and st.wait_for_success is True
    client.begin_resize_pool(
        pool_id, m.BatchPoolResizeOptions(target_dedicated_nodes=2), polling_interval=0.1
    ).result()
    nodes = wait_nodes(client, pool_id, lambda n: n.state == "idle", count=2, what="2 idle nodes")
    (second,) = [n for n in nodes if n.id != first.id]
    assert node_file(client, pool_id, second.id, "startup/stdout.txt") == "second\n"
    assert node_file(client, pool_id, first.id, "startup/stdout.txt") == "first\n"  # not rerun without a boot
    info = client.get_node(pool_id, first.id).start_task_info
    assert info is not None and info.result == "success"

    # updateproperties without a start task removes it: a node joining now has none
    wait_for(lambda: client.get_pool(pool_id).allocation_state == "steady", 30, 0.05, "steady")
    client.replace_pool_properties(
        pool_id,
        m.BatchPoolReplaceOptions(application_package_references=[], metadata=[]),
    )
    assert client.get_pool(pool_id).start_task is None
    client.begin_resize_pool(
        pool_id, m.BatchPoolResizeOptions(target_dedicated_nodes=3), polling_interval=0.1
    ).result()
    nodes = wait_nodes(client, pool_id, lambda n: n.state == "idle", count=3, what="3 idle nodes")
    (third,) = [n for n in nodes if n.id not in (first.id, second.id)]
    assert third.start_task_info is None
    with pytest.raises(ResourceNotFoundError):
        node_file(client, pool_id, third.id, "startup/stdout.txt")

    # updateproperties with one sets it, with the service's defaults
    client.replace_pool_properties(
        pool_id,
        m.BatchPoolReplaceOptions(
            start_task=m.BatchStartTask(command_line="/bin/true", wait_for_success=False),
            application_package_references=[],
            metadata=[],
        ),
    )
    st = client.get_pool(pool_id).start_task
    assert st is not None and st.wait_for_success is False and st.max_task_retry_count == 0


def test_reboot_and_reimage_run_the_start_task_again(
    client: BatchClient, pools: list[str], tmp_path: Path
) -> None:
    fail = tmp_path / "fail"
    fail.touch()
    script = f"echo run >> runs.txt; if [ -e {fail} ]; then exit 1; fi; echo ok"
    pool_id = start_pool(client, pools, m.BatchStartTask(command_line=sh(script)))
    (node,) = wait_nodes(client, pool_id, lambda n: n.state == "starttaskfailed", what="starttaskfailed")
    first = node.start_task_info
    assert first is not None and first.start_time is not None
    fail.unlink()
    # a reboot is the remedy for starttaskfailed: the start task runs again, on the same disk
    client.begin_reboot_node(
        pool_id, node.id, BatchNodeRebootOptions(node_reboot_kind="requeue"), polling_interval=0.5
    ).result()
    (node,) = wait_nodes(client, pool_id, lambda n: n.state == "idle", what="idle after the reboot")
    info = node.start_task_info
    assert info is not None and info.result == "success" and info.retry_count == 0
    assert info.start_time is not None and info.start_time > first.start_time
    assert node_file(client, pool_id, node.id, "startup/wd/runs.txt") == "run\nrun\n"

    # a changed start task reaches the node at its next reimage, which also wipes its directories
    new = m.BatchStartTask(command_line=sh("echo new >> runs.txt"))
    client.update_pool(pool_id, m.BatchPoolUpdateOptions(start_task=new))
    client.begin_reimage_node(
        pool_id, node.id, BatchNodeReimageOptions(node_reimage_option="requeue"), polling_interval=0.5
    ).result()
    (node,) = wait_nodes(
        client,
        pool_id,
        lambda n: (
            n.state == "idle" and n.start_task_info is not None and n.start_task_info.state == "completed"
        ),
        what="idle after the reimage",
    )
    assert node_file(client, pool_id, node.id, "startup/wd/runs.txt") == "new\n"


def _agent_pid(node_id: str) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"batchyard.agent.main" in cmd and node_id.encode() in cmd:
            return int(entry.name)
    raise AssertionError(f"no agent process for {node_id}")


def test_an_agent_killed_during_its_start_task_is_a_node_failure(
    client: BatchClient, pools: list[str], tmp_path: Path
) -> None:
    mark, pid_file = tmp_path / "mark", tmp_path / "pid"
    script = (
        f"if [ -e {mark} ]; then echo again; exit 0; fi; touch {mark}; echo $$ > {pid_file}; exec sleep 60"
    )
    pool_id = start_pool(client, pools, m.BatchStartTask(command_line=sh(script)))
    (node,) = wait_nodes(client, pool_id, lambda n: n.state == "waitingforstarttask", what="waiting")
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, 0.05, "the start task's pid")
    first_run = int(pid_file.read_text())
    agent = _agent_pid(node.id)
    os.killpg(agent, signal.SIGKILL)

    # the node's agent comes back, ends what the dead one left running, and runs the start task again
    (node,) = wait_nodes(client, pool_id, lambda n: n.state == "idle", what="the node back and idle")
    wait_pid_gone(first_run)
    info = node.start_task_info
    assert info is not None and info.result == "success" and info.retry_count == 0  # not a task failure
    assert node_file(client, pool_id, node.id, "startup/stdout.txt") == "again\n"
    assert _agent_pid(node.id) != agent


def test_pool_start_task_is_validated(client: BatchClient) -> None:
    def refused(
        st: m.BatchStartTask, prop: str, code: str = "InvalidPropertyValue", status: int = 400
    ) -> None:
        pool_id = f"bad-{uuid.uuid4().hex[:8]}"
        exc = expect_error(lambda: create_pool(client, pool_id, nodes=0, start_task=st), status, code)
        values = {v["key"]: v["value"] for v in exc.response.json().get("values") or []}
        assert values.get("PropertyName", "").startswith(prop), values

    refused(m.BatchStartTask(command_line="x", max_task_retry_count=-2), "startTask.maxTaskRetryCount")
    refused(
        m.BatchStartTask(command_line="x", user_identity=m.UserIdentity(username="nobody")),
        "startTask.userIdentity.username",
    )
    refused(
        m.BatchStartTask(command_line="x", resource_files=[m.ResourceFile(file_path="a.txt")]),
        "startTask.resourceFiles[0]",
    )
    refused(m.BatchStartTask(command_line=" "), "startTask.commandLine", "MissingRequiredProperty")
    big = [m.EnvironmentSetting(name=f"V{i}", value="x" * 100) for i in range(400)]
    big_st = m.BatchStartTask(command_line="x", environment_settings=big)
    expect_error(
        lambda: create_pool(client, "bad-big", nodes=0, start_task=big_st), 413, "RequestBodyTooLarge"
    )


@pytest.mark.az
def test_az_pool_create_with_a_start_task(az: Az, client: BatchClient, uid: str) -> None:  # noqa: F811
    pool_id = f"azst-{uid}"
    image = f"{IMAGE.publisher}:{IMAGE.offer}:{IMAGE.sku}:latest"
    az.silent(
        "batch", "pool", "create", "--id", pool_id, "--vm-size", "standard_d2s_v3",
        "--image", image, "--node-agent-sku-id", SKU, "--target-dedicated-nodes", "1",
        "--start-task-command-line", "/bin/sh -c 'echo from az; echo $FROM_AZ'",
        "--start-task-environment-settings", "FROM_AZ=yes",
        "--start-task-max-task-retry-count", "1",
        "--start-task-wait-for-success",
    )  # fmt: skip
    try:
        pool = az.json("batch", "pool", "show", "--pool-id", pool_id)
        st = pool["startTask"]
        assert st["commandLine"] == "/bin/sh -c 'echo from az; echo $FROM_AZ'"
        assert st["maxTaskRetryCount"] == 1 and st["waitForSuccess"] is True
        assert st["environmentSettings"] == [{"name": "FROM_AZ", "value": "yes"}]
        assert st["userIdentity"] == {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}

        def idle() -> list[dict[str, Any]] | None:
            nodes = az.json("batch", "node", "list", "--pool-id", pool_id)
            return nodes if len(nodes) == 1 and nodes[0]["state"] == "idle" else None

        (node,) = wait_for(idle, 90, 0.5, "the az pool's node to be idle")
        shown = az.json("batch", "node", "show", "--pool-id", pool_id, "--node-id", node["id"])
        info = shown["startTaskInfo"]
        assert info["state"] == "completed" and info["result"] == "success" and info["exitCode"] == 0
        assert node_file(client, pool_id, node["id"], "startup/stdout.txt") == "from az\nyes\n"

        # az batch pool set (PATCH) changes it; az batch pool reset (updateproperties) replaces it
        az.run(
            "batch",
            "pool",
            "set",
            "--pool-id",
            pool_id,
            "--start-task-command-line",
            "/bin/echo set",
            "-o",
            "json",
        )
        st = az.json("batch", "pool", "show", "--pool-id", pool_id)["startTask"]
        assert (
            st["commandLine"] == "/bin/echo set"
            and st["waitForSuccess"] is True
            and "environmentSettings" not in st
        )
        az.run(
            "batch",
            "pool",
            "reset",
            "--pool-id",
            pool_id,
            "--start-task-command-line",
            "/bin/echo reset",
            "-o",
            "json",
        )
        st = az.json("batch", "pool", "show", "--pool-id", pool_id)["startTask"]
        assert st["commandLine"] == "/bin/echo reset" and st["maxTaskRetryCount"] == 0
        # the node keeps the start task it booted with
        assert node_file(client, pool_id, node["id"], "startup/stdout.txt") == "from az\nyes\n"
    finally:
        client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_a_server_killed_during_a_start_task_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    go, done = tmp_path / "go", "done.txt"
    srv = LiveServer(data).start()
    try:
        c = BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))
        script = f"echo ran >> runs.txt; while [ ! -e {go} ]; do sleep 0.05; done; echo ok > {done}"
        create_pool(c, "rst", nodes=1, start_task=m.BatchStartTask(command_line=sh(script)))
        (node,) = wait_nodes(c, "rst", lambda n: n.state == "waitingforstarttask", what="waiting")
        srv.kill()
        # the start task completes while the server is down: its report waits in the agent
        go.touch()
        wd = data / "nodes" / node.id / "startup" / "wd"
        wait_for(lambda: (wd / done).exists(), 30, 0.05, "the start task to finish")
        srv = LiveServer(data, port=srv.port).start()
        c = BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))
        (node,) = wait_nodes(c, "rst", lambda n: n.state == "idle", what="idle after the restart")
        info = node.start_task_info
        assert info is not None and info.result == "success" and info.retry_count == 0
        assert node_file(c, "rst", node.id, "startup/wd/runs.txt") == "ran\n"  # ran once, not again
    finally:
        srv.stop()
