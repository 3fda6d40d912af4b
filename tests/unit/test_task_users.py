"""Task users: identity resolution, the launcher helper, output files a task cannot redirect, liveness."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchyard.agent.layout import NodeLayout, TaskEnvInputs
from batchyard.agent.runner import RunResult, RunSpec, TaskProcess
from batchyard.agent.spawner import Spawner
from batchyard.models import identity
from batchyard.pools.local import LocalProvider, agent_env

ROOT = os.geteuid() == 0
BASE = identity.base_of_slot(7)


def test_auto_users_resolve_per_node_and_scope() -> None:
    pool = identity.resolve(None, [], BASE, 1)
    assert (pool.uid, pool.gid, pool.name, pool.label) == (BASE, BASE, "_azbatch", "PoolNonAdmin")
    task_a = identity.resolve({"autoUser": {"scope": "task"}}, [], BASE, 1)
    task_b = identity.resolve({"autoUser": {"scope": "task"}}, [], BASE, 2)
    assert task_a.uid != task_b.uid and task_a.gid == BASE and task_a.label == "TaskNonAdmin"
    assert all(u.uid in identity.node_uids(BASE) for u in (pool, task_a, task_b))
    admin = identity.resolve({"autoUser": {"elevationLevel": "admin"}}, [], BASE, 1)
    assert (admin.uid, admin.gid, admin.label) == (0, 0, "PoolAdmin")
    other = identity.resolve(None, [], identity.base_of_slot(8), 1)
    assert other.uid not in identity.node_uids(BASE)


def test_named_accounts_resolve() -> None:
    accounts = [
        {"name": "a"},
        {"name": "b", "linuxUserConfiguration": {"uid": 5000, "gid": 6000}},
        {"name": "c", "elevationLevel": "admin"},
    ]
    a = identity.resolve({"username": "a"}, accounts, BASE, 1)
    assert (a.uid, a.gid, a.name) == (BASE + 1, BASE, "a")
    b = identity.resolve({"username": "b"}, accounts, BASE, 1)
    assert (b.uid, b.gid, b.extra_groups) == (5000, 6000, (BASE,))
    assert identity.resolve({"username": "c"}, accounts, BASE, 1).uid == 0
    with pytest.raises(identity.UnknownUser):
        identity.resolve({"username": "zz"}, accounts, BASE, 1)
    assert identity.explicit_uids(accounts) == {5000}


def test_unprivileged_runs_everything_as_the_agent_user() -> None:
    for ident in (None, {"autoUser": {"scope": "task", "elevationLevel": "admin"}}, {"username": "a"}):
        assert identity.resolve(ident, [{"name": "a"}], None, 1).uid is None


def test_node_slots_round_trip() -> None:
    assert identity.slot_of_gid(identity.base_of_slot(123)) == 123
    assert identity.slot_of_gid(identity.base_of_slot(123) + 1) is None
    assert identity.slot_of_gid(0) is None
    assert identity.base_of_slot(identity.MAX_SLOTS - 1) + identity.BLOCK <= 2**31 - 1


def test_agent_env_carries_the_token_not_the_server_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_ACCOUNT_KEY", "secret-key")
    monkeypatch.setenv("BATCHYARD_DATABASE_URL", "postgresql://u:pw@h/db")
    env = agent_env(
        "tok", [{"name": "a", "password": "pw", "linuxUserConfiguration": {"sshPrivateKey": "k"}}]
    )
    assert env["BATCHYARD_NODE_TOKEN"] == "tok"
    assert "secret-key" not in repr(env) and "pw" not in env.get("BATCHYARD_USER_ACCOUNTS", "")
    assert '"k"' not in env["BATCHYARD_USER_ACCOUNTS"]
    assert not any(
        k.startswith("BATCHYARD_")
        for k in env
        if k not in ("BATCHYARD_NODE_TOKEN", "BATCHYARD_USER_ACCOUNTS")
    )


def test_liveness_uses_process_table() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "batchyard.agent.main", "node-x"]
    )
    try:
        assert LocalProvider.alive(proc.pid, "node-x")
        assert not LocalProvider.alive(proc.pid, "node-y") or proc.pid != proc.pid
    finally:
        proc.kill()
        proc.wait()
    assert not LocalProvider.alive(proc.pid, "node-x")
    assert not LocalProvider.alive(None, "node-x")


def _spec(root: Path, cmd: str, **kw: object) -> RunSpec:
    layout = NodeLayout(root)
    layout.ensure()
    env = layout.task_env(TaskEnvInputs("acct", "http://x", "pool", "node", True, "job", "t1"))
    spec = RunSpec(cmd, env, layout.task_dir("job", "t1"), layout.working_dir("job", "t1"), None, 1.0)
    return dataclasses.replace(spec, **kw)  # type: ignore[arg-type]


#: the SigIgn bits of signals 32 and 33, reserved by glibc for itself
GLIBC_INTERNAL_SIGNALS = (1 << 31) | (1 << 32)


def _run(spec: RunSpec, spawner: str = "") -> RunResult:
    async def go() -> RunResult:
        sp = None
        if spawner == "root":
            sp = Spawner()
        elif spawner == "user":
            sp = Spawner(spec.uid, spec.gid, spec.groups)
        try:
            proc = await TaskProcess.start(spec, sp)
            return await asyncio.wait_for(proc.wait(), 20)
        finally:
            if sp is not None:
                sp.close()

    return asyncio.run(go())


def test_stdout_left_as_a_symlink_or_hard_link_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    spec = _spec(tmp_path / "node", "/bin/echo out")
    spec.task_dir.mkdir(parents=True)
    (spec.task_dir / "stdout.txt").symlink_to(victim)
    os.link(victim, spec.task_dir / "stderr.txt")
    res = _run(spec)
    assert res.exit_code == 0
    assert victim.read_text() == "precious"
    assert (spec.task_dir / "stdout.txt").read_text() == "out\n"
    assert not (spec.task_dir / "stdout.txt").is_symlink()


@pytest.mark.skipif(not ROOT, reason="switching users needs root")
@pytest.mark.parametrize("helper", ["root", "user"])
def test_launcher_runs_as_the_task_user_and_reports_exit_and_usage(tmp_path: Path, helper: str) -> None:
    os.chmod(tmp_path, 0o755)
    spec = _spec(tmp_path / "node", "/bin/sh -c 'id -u; id -G; exit 3'", uid=BASE, gid=BASE, dir_gid=BASE)
    res = _run(spec, spawner=helper)
    assert res.exit_code == 3 and res.failure is not None
    assert (spec.task_dir / "stdout.txt").read_text().split() == [str(BASE), str(BASE)]
    st = os.stat(spec.working_dir)
    assert (st.st_uid, st.st_gid) == (BASE, BASE)
    assert os.stat(spec.task_dir / "stdout.txt").st_uid == BASE
    missing = _run(
        _spec(tmp_path / "node2", "/no/such/program", uid=BASE, gid=BASE, dir_gid=BASE), spawner=helper
    )
    assert missing.failure is not None and missing.failure.code == "CommandProgramNotFound"


@pytest.mark.skipif(not ROOT, reason="switching users needs root")
@pytest.mark.parametrize("helper", ["root", "user"])
def test_launcher_kill_ends_the_whole_group(tmp_path: Path, helper: str) -> None:
    os.chmod(tmp_path, 0o755)
    spec = _spec(
        tmp_path / "node",
        "/bin/sh -c 'sleep 60 & sleep 60'",
        uid=BASE,
        gid=BASE,
        dir_gid=BASE,
        max_wall_clock=0.3,
    )
    res = _run(spec, spawner=helper)
    assert res.timed_out and res.failure is not None and res.failure.code == "TaskEnded"
    deadline = time.monotonic() + 5
    while True:  # the killed sleeps may take a moment to be reaped by init
        out = subprocess.run(
            ["pgrep", "-u", str(BASE), "-r", "RSDT", "sleep"], capture_output=True, text=True
        )
        if out.stdout.strip() == "" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert out.stdout.strip() == "", "stragglers of the group survive"


@pytest.mark.skipif(not ROOT, reason="switching users needs root")
@pytest.mark.parametrize("helper", ["root", "user"])
def test_a_launched_task_sees_a_clean_process_whichever_helper_starts_it(tmp_path: Path, helper: str) -> None:
    """Both launch paths (Popen in the root helper, posix_spawn in a user's helper) give the task the same
    process: no signal ignored (Python ignores SIGPIPE and SIGXFSZ), no descriptor beyond 0-2, its own
    session, umask 022, its working directory, and the program found in the task's own PATH."""
    os.chmod(tmp_path, 0o755)
    tools = tmp_path / "tools"
    tools.mkdir()
    os.chmod(tools, 0o755)  # whatever the umask: the task user searches it
    (tools / "whoami-here").write_text(
        "#!/bin/sh\ngrep -E '^(SigIgn|SigBlk)' /proc/self/status\nls /proc/self/fd\n"
        "ps -o sid= -p $$; echo $$\numask\npwd\n"
    )
    os.chmod(tools / "whoami-here", 0o755)
    spec = _spec(tmp_path / "node", "whoami-here", uid=BASE, gid=BASE, dir_gid=BASE)
    spec = dataclasses.replace(spec, env={**spec.env, "PATH": f"/nonexistent:{tools}:/usr/bin:/bin"})
    res = _run(spec, spawner=helper)
    out = (spec.task_dir / "stdout.txt").read_text().split("\n")
    assert res.exit_code == 0, (spec.task_dir / "stderr.txt").read_text()
    assert out[0].split() == ["SigBlk:", "0000000000000000"]
    # glibc's posix_spawn leaves its two internal signals (32, 33) ignored: no glibc program may use them
    # (sigaction refuses them), so only the others must be at their default
    assert int(out[1].split()[1], 16) & ~GLIBC_INTERNAL_SIGNALS == 0, out[1]
    fds = out[2:-5]
    assert fds == ["0", "1", "2", "3"], fds  # 3: the directory ls is reading
    sid, pid = out[-5].strip(), out[-4].strip()
    assert sid == pid  # the shell leads its own session
    assert out[-3] == "0022"
    assert Path(out[-2]) == spec.working_dir
    for cmd, code in (
        ("no-such-program-anywhere", "CommandProgramNotFound"),
        ("/no/such", "CommandProgramNotFound"),
    ):
        bad = _run(
            _spec(tmp_path / f"node-{code}-{len(cmd)}", cmd, uid=BASE, gid=BASE, dir_gid=BASE), spawner=helper
        )
        assert bad.failure is not None and bad.failure.code == code


@pytest.mark.skipif(not ROOT, reason="switching users needs root")
@pytest.mark.parametrize("helper", ["root", "user"])
def test_each_launch_gets_exactly_its_own_environment(tmp_path: Path, helper: str) -> None:
    """The helper is sent only what changed in the environment since its previous launch: every task must still
    see exactly its own variables, none left over from the task before it."""
    os.chmod(tmp_path, 0o755)
    envs = [
        {"PATH": "/usr/bin:/bin", "A": "1", "B": "2", "C": "3", "D": "4"},
        {"PATH": "/usr/bin:/bin", "A": "1", "B": "20", "C": "3", "D": "4"},  # one changed
        {"PATH": "/usr/bin:/bin", "A": "1", "C": "3", "D": "4", "E": "5"},  # one gone, one new
        {"PATH": "/usr/bin:/bin", "X": "9"},  # mostly different: sent whole
        {"PATH": "/usr/bin:/bin", "X": "9"},  # nothing changed
    ]

    async def go() -> list[str]:
        sp = Spawner() if helper == "root" else Spawner(BASE, BASE, ())
        outs = []
        try:
            for i, env in enumerate(envs):
                spec = _spec(tmp_path / f"n{i}", "/usr/bin/env", uid=BASE, gid=BASE, dir_gid=BASE)
                proc = await TaskProcess.start(dataclasses.replace(spec, env=env), sp)
                res = await asyncio.wait_for(proc.wait(), 20)
                assert res.exit_code == 0
                outs.append((spec.task_dir / "stdout.txt").read_text())
        finally:
            sp.close()
        return outs

    outs = asyncio.run(go())
    for env, out in zip(envs, outs, strict=True):
        assert dict(line.split("=", 1) for line in out.splitlines()) == env
