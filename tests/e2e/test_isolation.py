"""Tasks cannot read secrets, the server's data or other nodes' files (issue 7 item 2, decision 0010).

Run as root (as in CI) the tasks run as the pool's auto-user, a separate uid per node; as an ordinary user
the tasks run as that user, and only the checks that hold then are run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import DEV_KEY, LiveServer, wait_for
from tests.support.raw import Raw, assert_error, pool_body, raw_deleting_pools

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="separate task users need a server running as root")
UID_BASE = 1_800_000_000


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    # Task users must be able to pass through the data dir's parents (pytest's own temp dir is root's, 0700).
    data_dir = Path(tempfile.mkdtemp(prefix="batchyard-iso-", dir="/tmp"))
    # The key comes from the environment, as a deployment would set it: it must not reach any task.
    old = os.environ.get("BATCHYARD_ACCOUNT_KEY")
    os.environ["BATCHYARD_ACCOUNT_KEY"] = DEV_KEY
    try:
        srv = LiveServer(data_dir).start()
    finally:
        if old is None:
            os.environ.pop("BATCHYARD_ACCOUNT_KEY")
        else:
            os.environ["BATCHYARD_ACCOUNT_KEY"] = old
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Iterator[Raw]:
    yield from raw_deleting_pools(live)


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _pool(raw: Raw, nodes: int = 1, **extra: Any) -> str:
    pid = _id("iso")
    r = raw.post("/pools", pool_body(pid, nodes, **extra))
    assert r.status_code == 201, r.text()
    wait_for(
        lambda: len([n for n in raw.json(f"/pools/{pid}/nodes")["value"] if n["state"] == "idle"]) == nodes,
        60,
        0.1,
        "nodes to be idle",
    )
    return pid


@pytest.fixture(scope="module")
def pool(raw: Raw) -> str:
    return _pool(raw, 2, taskSlotsPerNode=2)


def run(raw: Raw, pool_id: str, script: str, **task: Any) -> dict[str, Any]:
    """Run ``/bin/sh -c script`` as a task; the completed task with its stdout and stderr."""
    jid = _id("job")
    assert raw.post("/jobs", {"id": jid, "poolInfo": {"poolId": pool_id}}).status_code == 201
    body = {"id": "t", "commandLine": f"/bin/sh -c {shlex.quote(script)}", **task}
    r = raw.post(f"/jobs/{jid}/tasks", body)
    assert r.status_code == 201, r.text()

    def done() -> dict[str, Any] | None:
        t = raw.json(f"/jobs/{jid}/tasks/t")
        return t if t["state"] == "completed" else None

    t: dict[str, Any] = wait_for(done, 60, 0.05, "the task to complete")
    for name in ("stdout", "stderr"):
        f = raw.get(f"/jobs/{jid}/tasks/t/files/{name}.txt")
        t[name] = f.content.decode() if f.status_code == 200 else f"<{f.status_code}>"
    return t


def test_agent_environment_has_no_account_key(raw: Raw, pool: str, live: LiveServer) -> None:
    t = run(raw, pool, "env; cat /proc/$PPID/environ | tr '\\0' '\\n'; exit 0")
    assert DEV_KEY not in t["stdout"], "a task sees the account key"
    assert "BATCHYARD_ACCOUNT_KEY" not in t["stdout"]
    node = t["nodeInfo"]["nodeId"]
    # Read the agent's start-up environment as the test (root or the same user) can: no account key, and no
    # token either, an agent being forked by the agent zygote (its token is in its os.environ only, decision 0200)
    agents = [p for p in Path("/proc").iterdir() if p.name.isdigit()]
    for p in agents:
        try:
            cmd = (p / "cmdline").read_bytes()
            if b"batchyard.agent.main" in cmd and node.encode() in cmd:
                env = (p / "environ").read_bytes()
                assert DEV_KEY.encode() not in env and b"BATCHYARD_ACCOUNT_KEY" not in env
                assert b"BATCHYARD_NODE_TOKEN=" not in env
                break
        except OSError:
            continue
    else:
        pytest.fail("agent process not found")


@needs_root
def test_task_cannot_read_any_batchyard_process_environment(raw: Raw, pool: str) -> None:
    # Every process's environment the task can open: its own and its children's only.
    script = "for p in /proc/[0-9]*; do cat $p/environ 2>/dev/null; echo; done | tr '\\0' '\\n' | grep BATCHYARD_; echo end"
    t = run(raw, pool, script)
    assert t["stdout"].strip() == "end", t["stdout"]
    assert "BATCHYARD_NODE_TOKEN" not in t["stdout"] and DEV_KEY not in t["stdout"]


@needs_root
def test_task_runs_as_pool_auto_user_not_root(raw: Raw, pool: str) -> None:
    t = run(
        raw, pool, 'echo "$(id -u) $(id -g) $(id -G) $AZ_BATCH_TASK_USER $AZ_BATCH_TASK_USER_IDENTITY $USER"'
    )
    uid, gid, groups, user, ident, env_user = t["stdout"].split()
    assert int(uid) >= UID_BASE and int(uid) != os.geteuid()
    assert gid == uid and groups == uid, "no supplementary groups (root's are dropped)"
    assert (user, ident, env_user) == ("_azbatch", "PoolNonAdmin", "_azbatch")


@needs_root
def test_task_cannot_reach_server_data(raw: Raw, pool: str, live: LiveServer) -> None:
    script = (
        'D="$AZ_BATCH_NODE_ROOT_DIR/../.."; '
        'for f in "$D"/batchyard.db "$D"/server.log; do cat "$f" >/dev/null 2>&1 && echo "READ $f"; done; '
        'ls "$D" >/dev/null 2>&1 && echo LISTED; '
        'touch "$D/planted" 2>/dev/null && echo WROTE; '
        'ls "$AZ_BATCH_NODE_ROOT_DIR/.." >/dev/null 2>&1 && echo LISTED_NODES; '
        'cat "$AZ_BATCH_NODE_ROOT_DIR/.agent.log" >/dev/null 2>&1 && echo READ_AGENT_LOG; '
        "echo done"
    )
    t = run(raw, pool, script)
    assert t["stdout"].strip() == "done", t["stdout"]
    assert not (live.data_dir / "planted").exists()
    assert any(live.data_dir.glob("*.db")), "the database this test guards is where the task looked"


@needs_root
def test_task_cannot_reach_other_node(raw: Raw, pool: str) -> None:
    nodes = [n["id"] for n in raw.json(f"/pools/{pool}/nodes")["value"]]
    assert len(nodes) == 2
    # Each node leaves a file in its shared dir; then every node tries to read the other's.
    script = (
        'echo mine > "$AZ_BATCH_NODE_SHARED_DIR/secret-$AZ_BATCH_NODE_ID"; '
        "for n in " + " ".join(nodes) + '; do [ "$n" = "$AZ_BATCH_NODE_ID" ] && continue; '
        'cat "$AZ_BATCH_NODE_ROOT_DIR/../$n/shared/secret-$n" 2>/dev/null && echo "READ $n"; '
        'ls "$AZ_BATCH_NODE_ROOT_DIR/../$n" >/dev/null 2>&1 && echo "LISTED $n"; done; echo done'
    )
    seen = set()
    for _ in range(8):  # spread over both nodes
        t = run(raw, pool, script)
        assert t["stdout"].strip().endswith("done") and "READ" not in t["stdout"], t["stdout"]
        assert "LISTED" not in t["stdout"], t["stdout"]
        seen.add(t["nodeInfo"]["nodeId"])
        if len(seen) == 2:
            break
    uids = set()
    for _ in range(8):
        t = run(raw, pool, "id -u")
        uids.add((t["nodeInfo"]["nodeId"], t["stdout"].strip()))
        if len({n for n, _ in uids}) == 2:
            break
    if len({n for n, _ in uids}) == 2:
        assert len({u for _, u in uids}) == 2, f"two nodes share a task uid: {uids}"


@needs_root
def test_task_reaches_its_own_dirs_and_the_node_shared_dir(raw: Raw, pool: str) -> None:
    script = (
        "echo w > wd_file && "
        'echo s > "$AZ_BATCH_NODE_SHARED_DIR/s-$$" && '
        'ls "$AZ_BATCH_NODE_ROOT_DIR/applications" "$AZ_BATCH_NODE_STARTUP_DIR" >/dev/null && '
        'ls "$AZ_BATCH_TASK_DIR" >/dev/null && echo ok'
    )
    t = run(raw, pool, script)
    assert t["stdout"].strip() == "ok", (t["stdout"], t["stderr"])


@needs_root
def test_admin_auto_user_is_root(raw: Raw, pool: str) -> None:
    t = run(
        raw,
        pool,
        'echo "$(id -u) $AZ_BATCH_TASK_USER_IDENTITY"',
        userIdentity={"autoUser": {"scope": "pool", "elevationLevel": "admin"}},
    )
    assert t["stdout"].split() == ["0", "PoolAdmin"]


@needs_root
def test_task_scope_auto_user_is_another_user(raw: Raw, pool: str) -> None:
    pool_uid = run(raw, pool, "id -u")["stdout"].strip()
    t = run(
        raw,
        pool,
        'echo "$(id -u) $AZ_BATCH_TASK_USER_IDENTITY"',
        userIdentity={"autoUser": {"scope": "task"}},
    )
    uid, ident = t["stdout"].split()
    assert ident == "TaskNonAdmin" and int(uid) >= UID_BASE and uid != pool_uid and uid != "0"


@needs_root
def test_named_user_accounts(raw: Raw) -> None:
    accounts = [
        {"name": "alice", "password": "x"},
        {"name": "bob", "password": "x", "linuxUserConfiguration": {"uid": 4242, "gid": 4343}},
        {"name": "carol", "password": "x", "elevationLevel": "admin"},
    ]
    pid = _pool(raw, 1, userAccounts=accounts)
    alice = run(raw, pid, 'echo "$(id -u) $USER $AZ_BATCH_TASK_USER"', userIdentity={"username": "alice"})
    uid, user, task_user = alice["stdout"].split()
    assert int(uid) >= UID_BASE and user == task_user == "alice"
    bob = run(
        raw, pid, 'echo "$(id -u) $(id -g)"; ls "$AZ_BATCH_NODE_SHARED_DIR"', userIdentity={"username": "bob"}
    )
    assert bob["stdout"].split()[:2] == ["4242", "4343"], bob
    assert bob["executionInfo"]["exitCode"] == 0, bob["stderr"]
    out = raw.get(f"/jobs/{bob['url'].rsplit('/jobs/', 1)[1].split('/')[0]}/tasks/t/files/stdout.txt")
    assert out.status_code == 200, "files of a pinned-uid account are served"
    carol = run(raw, pid, "id -u", userIdentity={"username": "carol"})
    assert carol["stdout"].strip() == "0"
    nobody = run(raw, pid, "id -u", userIdentity={"username": "dave"})
    assert nobody["executionInfo"]["result"] == "failure"
    assert nobody["executionInfo"]["failureInfo"]["code"] == "UserIdentityNotFound"


@pytest.mark.parametrize(
    "accounts,prop",
    [
        (
            [{"name": "a", "password": "x", "linuxUserConfiguration": {"uid": 5000}}],
            "userAccounts[0].linuxUserConfiguration",
        ),
        (
            [{"name": "a", "password": "x", "windowsUserConfiguration": {"loginMode": "batch"}}],
            "userAccounts[0].windowsUserConfiguration",
        ),
        ([{"name": "a", "password": "x"}, {"name": "A", "password": "y"}], "userAccounts[1].name"),
        ([{"name": "x" * 21, "password": "x"}], "userAccounts[0].name"),
        (
            [{"name": "a", "password": "x", "linuxUserConfiguration": {"uid": 0, "gid": 0}}],
            "userAccounts[0].linuxUserConfiguration.uid",
        ),
    ],
)
def test_bad_user_accounts_are_400(raw: Raw, accounts: list[dict[str, Any]], prop: str) -> None:
    pid = _id("bad")
    r = raw.post("/pools", pool_body(pid, 0, userAccounts=accounts))
    assert_error(r, 400, "InvalidPropertyValue", PropertyName=prop)
    assert raw.get(f"/pools/{pid}").status_code == 404


def test_admin_account_with_pinned_uid_is_501(raw: Raw) -> None:
    pid = _id("bad")
    acct = {
        "name": "a",
        "password": "x",
        "elevationLevel": "admin",
        "linuxUserConfiguration": {"uid": 5000, "gid": 5000},
    }
    r = raw.post("/pools", pool_body(pid, 0, userAccounts=[acct]))
    assert_error(r, 501, "NotImplemented")


def test_user_identity_with_both_username_and_auto_user_is_400(raw: Raw) -> None:
    pid = _pool(raw, 0)
    jid = _id("job")
    raw.post("/jobs", {"id": jid, "poolInfo": {"poolId": pid}})
    r = raw.post(
        f"/jobs/{jid}/tasks",
        {"id": "t", "commandLine": "true", "userIdentity": {"username": "a", "autoUser": {"scope": "pool"}}},
    )
    assert_error(r, 400, "InvalidPropertyValue", PropertyName="userIdentity")
