"""Local agents forked by the agent zygote (decision 0200) are agents like any other: they join, run tasks, see only
their own token, survive the server and are adopted by the next one; the zygote is never taken for an agent, a
dead zygote is replaced, and with the zygote switched off agents start as programs."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential

from batchyard.pools import zygote
from batchyard.pools.local import AGENT_ENV, AGENT_TUNING_ENV, LocalProvider
from tests.support.batch import create_pool, wait_idle_nodes, wait_task_state, wait_tasks_done
from tests.support.live import LiveServer, kill_agents, wait_for

pytestmark = pytest.mark.slow


def _client(srv: LiveServer) -> BatchClient:
    return BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))


def _procs() -> Iterator[tuple[int, list[bytes], int, str]]:
    """(pid, command line, parent pid, state) of every process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(entry.name), cmd, int(stat[1]), stat[0]


def _agents(data_dir: Path) -> dict[str, tuple[int, int]]:
    """node id -> (agent pid, its parent), found by command line as tests, ps and `stop-nodes` find them."""
    out: dict[str, tuple[int, int]] = {}
    for pid, cmd, ppid, state in _procs():
        if b"batchyard.agent.main" in cmd and any(str(data_dir).encode() in c for c in cmd) and state != "Z":
            out[cmd[cmd.index(b"--node-id") + 1].decode()] = (pid, ppid)
    return out


def _zygotes(server_pid: int) -> list[int]:
    return [
        pid
        for pid, cmd, ppid, state in _procs()
        if zygote.ZYGOTE_MODULE.encode() in cmd and ppid == server_pid and state != "Z"
    ]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(kv.decode().split("=", 1) for kv in raw.split(b"\0") if b"=" in kv)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_forked_agents_join_run_tasks_and_hold_no_other_secret(tmp_path: Path) -> None:
    data = tmp_path / "data"
    files = tmp_path / "files"
    files.mkdir()
    (files / "in.txt").write_text("staged\n")
    srv = LiveServer(data, extra_args=["--file-url-root", str(files)]).start()
    try:
        assert srv.proc is not None
        c = _client(srv)
        create_pool(c, "zp", nodes=2)
        nodes = wait_idle_nodes(c, "zp", 2)
        (zpid,) = _zygotes(srv.proc.pid)
        agents = _agents(data)
        assert set(agents) == {n.id for n in nodes}
        assert all(ppid == zpid for _, ppid in agents.values())  # forked, not started as programs
        # what other processes of the server's user can read: no token in the zygote's or the agents' startup
        # environment (each agent's token is in its own os.environ only), nothing of the server's beyond agent_env
        allowed = {*AGENT_ENV, *AGENT_TUNING_ENV, "PYTHONPATH"}
        for pid in [zpid, *(pid for pid, _ in agents.values())]:
            env = _environ(pid)
            assert set(env) <= allowed, env
            assert not any("TOKEN" in k or "KEY" in k for k in env)
        c.create_job(m.BatchJobCreateOptions(id="zj", pool_info=m.BatchPoolInfo(pool_id="zp")))
        for (
            n
        ) in nodes:  # one task per node; the first stages a file:// input (agent.lean.full_site in a child)
            c.create_task(
                "zj",
                m.BatchTaskCreateOptions(
                    id=f"t-{n.id[-8:]}",
                    command_line="/bin/sh -c 'cat in.txt; env'",
                    resource_files=[m.ResourceFile(http_url=f"file://{files}/in.txt", file_path="in.txt")],
                    affinity_info=m.BatchAffinityInfo(affinity_id=f"TVM:{n.id}"),
                ),
            )
        done = wait_tasks_done(c, "zj", 2, timeout=60)
        assert {t.node_info.node_id for t in done} == {n.id for n in nodes}
        for t in done:
            assert t.execution_info.exit_code == 0, t.execution_info
            out = b"".join(c.download_task_file("zj", t.id, "stdout.txt")).decode()
            assert out.startswith("staged\n")
            assert "BATCHYARD_" not in out
    finally:
        srv.stop()
        kill_agents(data)


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str]] = []

    def _any(self) -> None:
        _Recorder.seen.append(
            (self.headers.get("x-batchyard-node-id", ""), self.headers.get("x-batchyard-node-token", ""))
        )
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _any

    def log_message(self, *args: object) -> None:
        pass


def test_each_forked_agent_speaks_with_its_own_token_and_alive_knows_it(tmp_path: Path) -> None:
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    prov = LocalProvider(f"http://127.0.0.1:{web.server_address[1]}", "acct")
    assert prov.zygote is not None
    pids: dict[str, int] = {}
    # a process that is not ours (a reused pid): started by a shell that exits at once
    unrelated = int(subprocess.check_output(["/bin/sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"]))
    try:
        for node in ("node-a", "node-b"):
            pids[node] = prov.spawn(node, f"token-of-{node}", "p", tmp_path / "nodes" / node, True)
        zpid = prov.zygote.pid
        assert zpid is not None
        wait_for(lambda: {"node-a", "node-b"} <= {n for n, _ in _Recorder.seen}, 30, what="both agents")
        assert all(tok == f"token-of-{node}" for node, tok in _Recorder.seen)
        assert prov.alive(pids["node-a"], "node-a") and prov.alive(pids["node-b"], "node-b")
        assert not prov.alive(pids["node-a"], "node-b")  # a pid that is another node's agent
        assert not prov.alive(zpid, "node-a")  # the zygote, though a child of ours
        assert not prov.alive(unrelated, "node-a")  # a reused pid: any other process
        assert not prov.alive(os.getpid(), "node-a")
        # the zygote reaps: a stopped agent leaves no zombie behind
        prov.stop(pids["node-a"], "node-a")
        wait_for(lambda: not Path(f"/proc/{pids['node-a']}").exists(), 15, what="node-a's agent to be reaped")
        assert not prov.alive(pids["node-a"], "node-a")
        assert prov.alive(pids["node-b"], "node-b")
        # the server going away ends the zygote, not its agents
        prov.zygote.close()
        wait_for(lambda: _gone(zpid), 10, what="the zygote to exit")
        assert prov.alive(pids["node-b"], "node-b")
    finally:
        for node, pid in pids.items():
            prov.kill(pid, node)
        os.kill(unrelated, signal.SIGKILL)
        web.shutdown()
        if prov.zygote is not None:
            prov.zygote.close()


def test_a_restarted_server_adopts_forked_agents_without_rerunning_tasks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = LiveServer(data).start()
    try:
        assert srv.proc is not None
        c = _client(srv)
        create_pool(c, "ra", nodes=2)
        wait_idle_nodes(c, "ra", 2)
        (zpid,) = _zygotes(srv.proc.pid)
        before = _agents(data)
        c.create_job(m.BatchJobCreateOptions(id="rj", pool_info=m.BatchPoolInfo(pool_id="ra")))
        c.create_task(
            "rj", m.BatchTaskCreateOptions(id="long", command_line="/bin/sh -c 'sleep 4; echo finished'")
        )
        wait_task_state(c, "rj", "long", "running")

        srv.kill(signal.SIGKILL)
        wait_for(lambda: _gone(zpid), 10, what="the zygote to exit with its server")
        assert _agents(data).keys() == before.keys()  # the agents keep running (and their task)

        srv = LiveServer(data, port=srv.port).start()
        c = _client(srv)
        (t,) = wait_tasks_done(c, "rj", 1, timeout=60)
        assert t.execution_info.exit_code == 0
        assert t.execution_info.requeue_count == 0 and t.execution_info.retry_count == 0
        assert b"".join(c.download_task_file("rj", "long", "stdout.txt")).decode() == "finished\n"
        wait_idle_nodes(c, "ra", 2)
        after = _agents(data)
        assert {n: p for n, (p, _) in after.items()} == {n: p for n, (p, _) in before.items()}  # adopted

        # and `batchyard stop-nodes` stops them once the server is gone
        srv.kill(signal.SIGTERM)
        p = subprocess.run(
            [sys.executable, "-m", "batchyard.cli.main", "stop-nodes", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == f"batchyard: stopped 2 node agent(s) of {data.resolve()}"
        assert _agents(data) == {}
    finally:
        srv.stop()
        kill_agents(data)


def test_a_killed_zygote_is_replaced_and_its_agents_live_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = LiveServer(data).start()
    try:
        assert srv.proc is not None
        c = _client(srv)
        create_pool(c, "kz", nodes=1)
        wait_idle_nodes(c, "kz", 1)
        (zpid,) = _zygotes(srv.proc.pid)
        first = _agents(data)
        os.kill(zpid, signal.SIGKILL)
        c.begin_resize_pool(
            "kz", m.BatchPoolResizeOptions(target_dedicated_nodes=2), polling_interval=0.2
        ).result()
        wait_idle_nodes(c, "kz", 2)
        (zpid2,) = _zygotes(srv.proc.pid)
        assert zpid2 != zpid
        agents = _agents(data)
        (new,) = set(agents) - set(first)
        assert agents[new][1] == zpid2  # forked by the new zygote
        assert {n: agents[n][0] for n in first} == {
            n: p for n, (p, _) in first.items()
        }  # the old one lives on
        c.create_job(m.BatchJobCreateOptions(id="kj", pool_info=m.BatchPoolInfo(pool_id="kz")))
        c.create_task_collection(
            "kj",
            m.BatchTaskGroup(
                task_values=[m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true") for i in range(4)]
            ),
        )
        assert all(t.execution_info.exit_code == 0 for t in wait_tasks_done(c, "kj", 4, timeout=60))
    finally:
        srv.stop()
        kill_agents(data)


def test_without_the_zygote_agents_start_as_programs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(zygote.ZYGOTE_ENV, "0")
    data = tmp_path / "data"
    srv = LiveServer(data).start()
    try:
        assert srv.proc is not None
        c = _client(srv)
        create_pool(c, "nz", nodes=1)
        wait_idle_nodes(c, "nz", 1)
        assert _zygotes(srv.proc.pid) == []
        ((_, ppid),) = _agents(data).values()
        assert ppid == srv.proc.pid
    finally:
        srv.stop()
        kill_agents(data)


def test_the_zygote_preloads_an_idle_agent_and_nothing_heavier() -> None:
    """What every forked agent inherits: the idle agent's modules, asyncio without TLS, no feature module."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    code = (
        "import sys\n"
        "from batchyard.agent import zygote\n"
        "zygote.preload()\n"
        "heavy = ['httpx', 'psutil', 'uvloop', 'azure', 'aiohttp', 'hashlib', 'shutil', 'tempfile', 'zipfile',\n"
        "         'batchyard.agent.containers', 'batchyard.agent.multiinstance', 'batchyard.storage.download',\n"
        "         'batchyard.storage.cache', 'batchyard.storage.packages']\n"
        "need = ['asyncio', 'h11', 'batchyard.agent.main', 'batchyard.agent.node', 'concurrent.futures.thread']\n"
        "print(sorted(m for m in heavy if m in sys.modules), sys.modules['ssl'], all(m in sys.modules for m in need))\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join([src, *sys.path[1:]])}
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[] None True"


def test_a_zygote_that_cannot_start_leaves_agents_to_start_as_programs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zygote, "ZYGOTE_MODULE", "batchyard.agent.no_such_module")
    prov = LocalProvider("http://127.0.0.1:9", "acct")
    assert prov.zygote is not None
    pids: dict[str, int] = {}
    try:
        for node in ("node-a", "node-b"):  # the second one does not try again (zygote.RETRY_PAUSE)
            pids[node] = prov.spawn(node, f"token-of-{node}", "p", tmp_path / "nodes" / node, True)
            assert prov.zygote.pid is None
        for node, pid in pids.items():
            assert prov.alive(pid, node)
            assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid()
    finally:
        for node, pid in pids.items():
            prov.kill(pid, node)
