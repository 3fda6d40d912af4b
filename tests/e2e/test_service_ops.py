"""The server runs like a service: it checks its configuration up front, owns its data dir, stops quietly and
says what keeps running, and counts every rerun of a task whose node was lost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential

from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state, wait_tasks_done
from tests.support.live import LiveServer, free_port, kill_agents, wait_for
from tests.support.raw import Raw, pool_body

pytestmark = pytest.mark.slow

SERVER = [sys.executable, "-m", "batchyard.cli.main", "server"]


def _client(srv: LiveServer) -> BatchClient:
    return BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))


def _fails(args: list[str], timeout: float = 30) -> str:
    """Run a server that must refuse to start: non-zero exit, one line on stderr, no traceback."""
    p = subprocess.run([*SERVER, *args], capture_output=True, timeout=timeout, text=True)
    assert p.returncode != 0, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("batchyard: "), p.stderr
    assert "Traceback" not in p.stderr and "batchyard server on" not in p.stdout
    return lines[0]


def _agent_pids(data_dir: Path) -> set[int]:
    out: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"batchyard.agent.main" in cmd and str(data_dir).encode() in cmd and stat[0] != "Z":
            out.add(int(entry.name))
    return out


# --- configuration checked up front ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--port", "99999"], "--port 99999 is not a TCP port"),
        (["--port", "0"], "--port 0 is not a TCP port"),
        (["--orphan-timeout", "0"], "--orphan-timeout 0 must be greater than 0"),
        (["--dedicated-core-quota", "-1"], "--dedicated-core-quota -1 must not be negative"),
        (["--host", "no-such-host.invalid"], "--host no-such-host.invalid"),
        (["--host", "192.0.2.1"], "cannot listen on 192.0.2.1"),
        (["--database-url", "postgresql://nobody@127.0.0.1:1/none"], "cannot open the database"),
        (["--database-url", "nosuchdb://x/y"], "cannot open the database nosuchdb://x/y"),
        (["--log-level", "loud"], "--log-level loud"),
    ],
)
def test_bad_configuration_is_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    line = _fails(["--data-dir", str(tmp_path / "d"), "--port", str(free_port()), *args])
    assert needle in line


def test_database_password_is_not_printed(tmp_path: Path) -> None:
    line = _fails(
        ["--data-dir", str(tmp_path / "d"), "--database-url", "postgresql://u:s3cret@127.0.0.1:1/x"]
    )
    assert "s3cret" not in line and "postgresql://u:***@127.0.0.1:1/x" in line


def test_unwritable_data_dir_fails_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = _fails(["--data-dir", str(blocker / "data"), "--port", str(free_port())])
    assert f"data dir {blocker / 'data'} is not writable" in line


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = _fails(["--data-dir", str(tmp_path / "d"), "--port", str(port)])
    assert f"cannot listen on 127.0.0.1 port {port}" in line


# --- one server per data dir ---------------------------------------------------------------------------------


def test_second_server_on_the_same_data_dir_exits(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = LiveServer(data).start()
    try:
        c = _client(srv)
        create_pool(c, "lk", nodes=1)
        wait_idle_nodes(c, "lk", 1)
        before = _agent_pids(data)
        assert srv.proc is not None
        line = _fails(["--data-dir", str(data), "--port", str(free_port())], timeout=15)
        assert line == (
            f"batchyard: another batchyard server (pid {srv.proc.pid}) is using the data dir {data}; stop it first"
        )
        # the first server and its agent are untouched
        assert _agent_pids(data) == before
        assert [n.state for n in c.list_nodes("lk")] == ["idle"]
    finally:
        srv.stop()


# --- where agents dial -----------------------------------------------------------------------------------------


def test_ipv6_host_agents_dial_the_bound_address(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [*SERVER, "--host", "::1", "--port", str(port), "--data-dir", str(data)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    try:

        def up() -> bool:
            text = (tmp_path / "server.log").read_text()
            assert proc.poll() is None, text
            if f"batchyard server on http://[::1]:{port}" not in text:
                return False
            try:
                with socket.create_connection(("::1", port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(up, 30, what="server on [::1]")
        c = BatchClient(
            endpoint=f"http://[::1]:{port}",
            credential=AzureNamedKeyCredential(LiveServer.account, LiveServer.key),
        )
        create_pool(c, "v6", nodes=1)
        wait_idle_nodes(c, "v6", 1, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        kill_agents(data)


# --- a node that cannot be created ---------------------------------------------------------------------------


def test_node_creation_failure_is_a_resize_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = LiveServer(data).start()
    try:
        (data / "nodes").write_text("a file where the node directories go")
        raw = Raw(srv)
        assert raw.post("/pools", pool_body("broken", 2)).status_code == 201

        def settled() -> dict[str, object] | None:
            p: dict[str, object] = raw.json("/pools/broken")
            return p if p["allocationState"] == "steady" else None

        pool = wait_for(settled, 30, what="pool steady")
        assert pool["currentDedicatedNodes"] == 0
        errs = pool["resizeErrors"]
        assert isinstance(errs, list) and [e["code"] for e in errs] == ["AllocationFailed"]
        assert raw.json("/pools/broken/nodes")["value"] == []
        time.sleep(2.5)  # a few manager passes: no retry loop, no traceback
        log = srv.log_tail(400)
        assert "Traceback" not in log
        assert log.count("cannot start node agents") == 1
    finally:
        srv.stop()


# --- stopping ----------------------------------------------------------------------------------------------------


def test_ctrl_c_is_quick_and_quiet_and_says_what_keeps_running(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    proc = subprocess.Popen(
        # the request log (info) goes to stderr too: at warning, a quiet stop leaves stderr empty
        [
            *SERVER,
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--orphan-timeout",
            "300",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        srv = LiveServer(data, port=port)
        wait_for(lambda: _listening(port), 30, what="server")
        c = _client(srv)
        create_pool(c, "cc", nodes=1)
        wait_idle_nodes(c, "cc", 1)
        agents = _agent_pids(data)
        assert len(agents) == 1
        time.sleep(0.5)  # the agent is in its long poll now
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert err == ""
    assert took < 2.0, took
    assert "an agent without its server stops after 300 s" in out  # the banner says it
    last = out.strip().splitlines()[-1]
    assert last.startswith("batchyard: server stopped; 1 node agent(s) keep running their tasks")
    assert "300 s" in last and "batchyard stop-nodes" in last
    assert _agent_pids(data) == agents  # graceful stop of the server only

    # a clean full stop afterwards
    p = subprocess.run(
        [sys.executable, "-m", "batchyard.cli.main", "stop-nodes", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout.strip() == f"batchyard: stopped 1 node agent(s) of {data.resolve()}"
    assert _agent_pids(data) == set()

    # the next server starts the node again
    srv = LiveServer(data).start()
    try:
        nodes = wait_idle_nodes(_client(srv), "cc", 1)
        assert len(nodes) == 1
    finally:
        srv.stop()


def test_stop_nodes_refuses_while_the_server_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = LiveServer(data).start()
    try:
        p = subprocess.run(
            [sys.executable, "-m", "batchyard.cli.main", "stop-nodes", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode != 0
        assert p.stderr.strip().startswith("batchyard: another batchyard server (pid ")
    finally:
        srv.stop()


def test_server_stop_nodes_stops_agents_and_tasks_and_requeues(tmp_path: Path) -> None:
    data = tmp_path / "data"
    marker = tmp_path / "task-pid"
    srv = LiveServer(data, extra_args=["--stop-nodes"]).start()
    try:
        c = _client(srv)
        create_pool(c, "sn", nodes=1)
        wait_idle_nodes(c, "sn", 1)
        c.create_job(m.BatchJobCreateOptions(id="snj", pool_info=m.BatchPoolInfo(pool_id="sn")))
        c.create_task(
            "snj",
            m.BatchTaskCreateOptions(
                id="long", command_line=f"/bin/sh -c 'echo $$ > {marker}; sleep 3; echo done'"
            ),
        )
        wait_task_state(c, "snj", "long", "running")
        wait_for(lambda: marker.exists() and marker.read_text().strip(), 10, what="task pid")
        task_pid = int(marker.read_text())
        srv.kill(signal.SIGTERM)
        assert _agent_pids(data) == set()
        assert not _alive(task_pid)
        assert "its 1 node agent(s) with their tasks" in srv.log_tail(3)
        marker.unlink()
        srv = LiveServer(data, port=srv.port).start()
        c = _client(srv)
        (t,) = wait_tasks_done(c, "snj", 1, timeout=60)
        assert t.execution_info.exit_code == 0
        assert t.execution_info.requeue_count == 1 and t.execution_info.retry_count == 0
    finally:
        srv.stop()


def test_orphan_timeout_reaches_the_agents(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = LiveServer(data, extra_args=["--orphan-timeout", "1.5"]).start()
    try:
        c = _client(srv)
        create_pool(c, "ot", nodes=1)
        wait_idle_nodes(c, "ot", 1)
        assert len(_agent_pids(data)) == 1
        srv.kill(signal.SIGKILL)
        wait_for(lambda: not _agent_pids(data), 30, what="the orphaned agent to stop by itself")
    finally:
        srv.stop()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- every rerun is counted --------------------------------------------------------------------------------------


def test_lost_agent_reruns_are_counted_even_when_their_start_was_not_reported(tmp_path: Path) -> None:
    """The server dies while tasks are queued on a node; the agent runs them (its reports cannot arrive) and
    dies too. The next server reruns them, and each must show one requeue per extra run."""
    data = tmp_path / "data"
    runs = tmp_path / "runs"
    runs.mkdir(mode=0o777)  # tasks run as their node's user when the suite runs as root
    runs.chmod(0o777)
    srv = LiveServer(data).start()
    try:
        c = _client(srv)
        create_pool(c, "rq", nodes=1)
        wait_idle_nodes(c, "rq", 1)
        c.create_job(m.BatchJobCreateOptions(id="rqj", pool_info=m.BatchPoolInfo(pool_id="rq")))
        gate = tmp_path / "gate"
        ids = [f"q{i}" for i in range(3)]
        # one collection, placed in one pass: 'first' runs, the others queue behind it on the node's agent
        tasks = [
            m.BatchTaskCreateOptions(
                id="first",
                command_line=f"/bin/sh -c 'echo x >> {runs}/first; while [ ! -e {gate} ]; do sleep 0.05; done'",
            ),
            *(m.BatchTaskCreateOptions(id=i, command_line=f"/bin/sh -c 'echo x >> {runs}/{i}'") for i in ids),
        ]
        c.create_task_collection("rqj", m.BatchTaskGroup(task_values=tasks))
        wait_task_state(c, "rqj", "first", "running")
        assert _placed(srv, ids)
        srv.kill(signal.SIGKILL)
        # without its server the agent runs its queue; then it dies too, with its unsent reports
        gate.touch()
        wait_for(lambda: all((runs / i).exists() for i in ids), 20, what="queued tasks to run")
        (agent,) = _agent_pids(data)
        os.killpg(agent, signal.SIGKILL)
        srv = LiveServer(data, port=srv.port).start()
        c = _client(srv)
        done = wait_tasks_done(c, "rqj", 4, timeout=90)
    finally:
        srv.stop()
    for t in done:
        ran = len((runs / t.id).read_text().splitlines())
        assert t.execution_info.exit_code == 0
        assert ran == 2, (t.id, ran)
        assert t.execution_info.requeue_count == 1, t.id
        assert t.execution_info.retry_count == 0


def _placed(srv: LiveServer, ids: list[str]) -> bool:
    """Whether the tasks are queued on a node, read from the store (the API shows them as plain active)."""
    import sqlite3

    con = sqlite3.connect(srv.data_dir / "batchyard.db", timeout=5)
    try:
        marks = ",".join("?" * len(ids))
        rows = con.execute(
            f"SELECT id FROM tasks WHERE node_id IS NOT NULL AND state = 'active' AND id IN ({marks})", ids
        ).fetchall()
    finally:
        con.close()
    return len(rows) == len(ids)


def test_one_server_per_postgresql_database(tmp_path: Path) -> None:
    import uuid

    import psycopg

    from tests.conftest import PG_URL, require_pg

    require_pg()
    # a schema of its own, dropped afterwards: never the shared database's public schema
    name = f"by_lock_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    url = f"{PG_URL}?options=-csearch_path%3D{name}"
    srv = LiveServer(tmp_path / "a", database_url=url).start()
    try:
        line = _fails(["--data-dir", str(tmp_path / "b"), "--port", str(free_port()), "--database-url", url])
        assert "another batchyard server is using the database" in line
    finally:
        srv.stop()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def test_node_that_cannot_be_restarted_becomes_unusable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = LiveServer(data).start()
    try:
        c = _client(srv)
        create_pool(c, "un", nodes=1)
        (node,) = wait_idle_nodes(c, "un", 1)
        srv.kill(signal.SIGKILL)
        for pid in _agent_pids(data):
            os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: not _agent_pids(data), 10, what="agent gone")
        # the node's directory can no longer be created
        import shutil

        shutil.rmtree(data / "nodes")
        (data / "nodes").write_text("not a directory")
        srv = LiveServer(data, port=srv.port).start()
        c = _client(srv)
        n = wait_for(lambda: (x := c.get_node("un", node.id)).state == "unusable" and x, 30, what="unusable")
        assert [e.code for e in n.errors] == ["NodeAgentStartFailed"]
        time.sleep(2.5)  # a few manager passes: no retry loop, no traceback
        assert "Traceback" not in srv.log_tail(400)
        assert c.get_node("un", node.id).state == "unusable"
    finally:
        srv.stop()
