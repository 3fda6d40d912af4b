"""Node users through the official SDK: real accounts on this host (decision 0131), created, replaced and deleted
as the service answers (201 / 200 / 200, `NodeUserExists`, `NodeUserNotFound`), and gone with their node."""

from __future__ import annotations

import datetime
import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models._models import BatchNodeReimageOptions
from azure.core.exceptions import HttpResponseError

from tests.support.batch import create_pool, wait_idle_nodes
from tests.support.live import LiveServer, free_port, wait_for
from tests.support.raw import Raw, assert_error

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnlyAAAAAAAAAAAAAAAAAAAAAAAA test@batchyard"


def shadow(name: str) -> list[str]:
    for line in Path("/etc/shadow").read_text().splitlines():
        if line.split(":", 1)[0] == name:
            return line.split(":")
    raise AssertionError(f"{name} not in /etc/shadow")


def account(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def code_of(e: HttpResponseError) -> str:
    return str(getattr(e.error, "code", ""))


@pytest.fixture(scope="module")
def node(client: BatchClient, live: LiveServer) -> Iterator[tuple[str, str, str]]:
    pool_id = f"users-{os.getpid()}"
    create_pool(client, pool_id, nodes=2)
    nodes = wait_idle_nodes(client, pool_id, 2)
    yield pool_id, nodes[0].id, nodes[1].id
    client.begin_delete_pool(pool_id)


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Raw:
    return Raw(live)


def test_create_replace_delete_user(client: BatchClient, node: tuple[str, str, str], uid: str) -> None:
    pool_id, node_id, _ = node
    name = f"bu{uid}"
    expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3, hours=1)
    client.create_node_user(
        pool_id,
        node_id,
        m.BatchNodeUserCreateOptions(name=name, password="Pa55word!", ssh_public_key=KEY, expiry_time=expiry),
    )
    pw = account(name)
    assert pw is not None, "no host account"
    assert pw.pw_gecos.endswith(node_id)
    fields = shadow(name)
    assert fields[1].startswith("$"), "the password is stored as a hash"
    expected_day = (expiry.date() + datetime.timedelta(days=1)) - datetime.date(1970, 1, 1)
    assert int(fields[7]) == expected_day.days  # account expiry, day precision (rounded up)
    keys = Path(pw.pw_dir, ".ssh", "authorized_keys")
    assert keys.read_text() == KEY + "\n"
    st = keys.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (pw.pw_uid, 0o600)
    groups = subprocess.run(["id", "-nG", name], capture_output=True, text=True, check=True).stdout.split()
    assert "sudo" not in groups

    with pytest.raises(HttpResponseError) as ei:
        client.create_node_user(pool_id, node_id, m.BatchNodeUserCreateOptions(name=name, password="x"))
    assert ei.value.status_code == 409 and code_of(ei.value) == "NodeUserExists"

    # PUT replaces everything: no key given -> the key goes; no expiry -> now + 1 day
    client.replace_node_user(pool_id, node_id, name, m.BatchNodeUserReplaceOptions(password="0ther!pw"))
    assert not keys.exists()
    assert shadow(name)[1].startswith("$") and shadow(name)[1] != fields[1]
    tomorrow = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    assert int(shadow(name)[7]) - (tomorrow.date() - datetime.date(1970, 1, 1)).days in (0, 1)
    client.replace_node_user(pool_id, node_id, name, m.BatchNodeUserReplaceOptions(ssh_public_key=KEY))
    assert keys.read_text() == KEY + "\n"
    assert shadow(name)[1] == "*"  # no password any more

    client.delete_node_user(pool_id, node_id, name)
    assert account(name) is None
    assert not Path(pw.pw_dir).exists()
    with pytest.raises(HttpResponseError) as ei:
        client.delete_node_user(pool_id, node_id, name)
    assert ei.value.status_code == 404 and code_of(ei.value) == "NodeUserNotFound"
    with pytest.raises(HttpResponseError) as ei:
        client.replace_node_user(pool_id, node_id, name, m.BatchNodeUserReplaceOptions(password="x"))
    assert ei.value.status_code == 404 and code_of(ei.value) == "NodeUserNotFound"


def test_admin_user_gets_sudo(client: BatchClient, node: tuple[str, str, str], uid: str) -> None:
    pool_id, node_id, _ = node
    name = f"ba{uid}"
    client.create_node_user(
        pool_id, node_id, m.BatchNodeUserCreateOptions(name=name, is_admin=True, password="pw")
    )
    try:
        groups = subprocess.run(
            ["id", "-nG", name], capture_output=True, text=True, check=True
        ).stdout.split()
        assert "sudo" in groups
    finally:
        client.delete_node_user(pool_id, node_id, name)


def test_names_are_host_wide(client: BatchClient, node: tuple[str, str, str], uid: str, raw: Raw) -> None:
    """Local nodes share the host's accounts: a name taken by another node, or by the host, is a 409."""
    pool_id, first, second = node
    name = f"bs{uid}"
    client.create_node_user(pool_id, first, m.BatchNodeUserCreateOptions(name=name, password="pw"))
    try:
        r = raw.post(f"/pools/{pool_id}/nodes/{second}/users", {"name": name, "password": "pw"})
        body = assert_error(r, 409, "NodeUserExists")
        assert "share the host" in {v["key"]: v["value"] for v in body["values"]}["Reason"]
    finally:
        client.delete_node_user(pool_id, first, name)
    assert_error(
        raw.post(f"/pools/{pool_id}/nodes/{second}/users", {"name": "root", "password": "pw"}),
        409,
        "NodeUserExists",
    )
    assert_error(
        raw.post(f"/pools/{pool_id}/nodes/{second}/users", {"name": "daemon", "password": "pw"}),
        409,
        "NodeUserExists",
    )
    assert account("root") is not None and account("daemon") is not None
    r = raw.post(f"/pools/{pool_id}/nodes/{second}/users", {"name": "users", "password": "pw"})
    assert_error(r, 409, "NodeUserExists")  # a group of that name: useradd would need it for the user's group
    assert account("users") is None


def test_bad_node_user_input(node: tuple[str, str, str], raw: Raw, uid: str) -> None:
    pool_id, node_id, _ = node
    users = f"/pools/{pool_id}/nodes/{node_id}/users"
    past = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)).isoformat()
    cases = [
        ({"password": "pw"}, 400, "MissingRequiredProperty", "name"),
        ({"name": "", "password": "pw"}, 400, "MissingRequiredProperty", "name"),
        ({"name": "-rf", "password": "pw"}, 400, "InvalidPropertyValue", "name"),
        ({"name": "a/b", "password": "pw"}, 400, "InvalidPropertyValue", "name"),
        ({"name": "x" * 33, "password": "pw"}, 400, "InvalidPropertyValue", "name"),
        ({"name": "12345", "password": "pw"}, 400, "InvalidPropertyValue", "name"),
        ({"name": f"u{uid}", "password": ""}, 400, "InvalidPropertyValue", "password"),
        ({"name": f"u{uid}", "password": "a:b"}, 400, "InvalidPropertyValue", "password"),
        ({"name": f"u{uid}", "password": "a\nroot::0:0::/:/bin/sh"}, 400, "InvalidPropertyValue", "password"),
        ({"name": f"u{uid}", "sshPublicKey": "not a key"}, 400, "InvalidPropertyValue", "sshPublicKey"),
        (
            {"name": f"u{uid}", "sshPublicKey": KEY + "\nssh-rsa AAAA x"},
            400,
            "InvalidPropertyValue",
            "sshPublicKey",
        ),
        (
            {"name": f"u{uid}", "password": "pw", "expiryTime": past},
            400,
            "InvalidPropertyValue",
            "expiryTime",
        ),
        (
            {"name": f"u{uid}", "password": "pw", "expiryTime": "soon"},
            400,
            "InvalidPropertyValue",
            "expiryTime",
        ),
        ({"name": f"u{uid}", "password": "pw", "isAdmin": "yes"}, 400, "InvalidPropertyValue", "isAdmin"),
        ({"name": f"u{uid}", "password": "pw", "shell": "/bin/sh"}, 400, "UnsupportedProperty", "shell"),
    ]
    for body, status, code, prop in cases:
        assert_error(raw.post(users, body), status, code, PropertyName=prop)
        assert account(f"u{uid}") is None
    assert_error(raw.request("POST", users, content=b"{", headers={}), 400, "InvalidRequestBody")
    assert_error(
        raw.post(f"/pools/{pool_id}/nodes/nosuchnode/users", {"name": "a", "password": "p"}),
        404,
        "NodeNotFound",
    )
    assert_error(
        raw.post(f"/pools/nosuchpool/nodes/{node_id}/users", {"name": "a", "password": "p"}),
        404,
        "PoolNotFound",
    )
    r = raw.request("PUT", f"{users}/nosuch{uid}", json_body={"password": "pw"})
    assert_error(r, 404, "NodeUserNotFound")
    assert_error(raw.request("PUT", f"{users}/x", json_body={"bad": 1}), 400, "UnsupportedProperty")
    assert_error(raw.request("PATCH", f"{users}/x", json_body={}), 405, "UnsupportedHttpVerb")
    assert_error(raw.delete(f"{users}/nosuch{uid}"), 404, "NodeUserNotFound")


def test_users_go_with_their_node(client: BatchClient, uid: str) -> None:
    pool_id = f"ug-{uid}"
    create_pool(client, pool_id, nodes=1)
    (n,) = wait_idle_nodes(client, pool_id, 1)
    name = f"bg{uid}"
    client.create_node_user(pool_id, n.id, m.BatchNodeUserCreateOptions(name=name, password="pw"))
    assert account(name) is not None
    client.begin_delete_pool(pool_id)
    wait_for(lambda: account(name) is None, 30, 0.1, "the node user to be deleted with its pool")


def test_unprivileged_server_refuses_node_users(tmp_path: Path) -> None:
    """A server that is not root cannot make host accounts: a clear Batch error saying why, nothing faked."""
    data = tmp_path / "data"
    data.mkdir()
    srv = _UnprivilegedServer(data, port=free_port())
    srv.start()
    try:
        c = BatchClient(endpoint=srv.endpoint, credential=_cred(srv))
        pool_id = "nobody-pool"
        create_pool(c, pool_id, nodes=1)
        (n,) = wait_idle_nodes(c, pool_id, 1)
        r = Raw(srv).post(f"/pools/{pool_id}/nodes/{n.id}/users", {"name": "nobodyuser", "password": "pw"})
        body = assert_error(r, 501, "NotImplemented")
        assert "root" in {v["key"]: v["value"] for v in body["values"]}["Reason"]
        assert account("nobodyuser") is None
    finally:
        srv.stop()


def _cred(srv: LiveServer):  # type: ignore[no-untyped-def]
    from azure.core.credentials import AzureNamedKeyCredential

    return AzureNamedKeyCredential(srv.account, srv.key)


class _UnprivilegedServer(LiveServer):
    """The same server, not root: in a user namespace where it is uid 1000 (and has no capabilities on the
    host), so that it can still read the interpreter wherever it is installed."""

    def start(self) -> LiveServer:
        import socket

        unshare = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
        args = [*unshare, sys.executable, "-m", "batchyard.cli.main", "server", "--port", str(self.port)]
        args += ["--data-dir", str(self.data_dir)]
        log = open(self.data_dir.parent / "server.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited: {(self.data_dir.parent / 'server.log').read_text()[-3000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(up, 30, what="server to listen")
        return self


def test_concurrent_creates_of_one_name(node: tuple[str, str, str], raw: Raw, uid: str) -> None:
    """Two creates of one name at once: one account, one 201 and one 409 (never two successes)."""
    import threading

    pool_id, node_id, _ = node
    name = f"bc{uid}"
    statuses: list[int] = []

    def create() -> None:
        statuses.append(
            raw.post(f"/pools/{pool_id}/nodes/{node_id}/users", {"name": name, "password": "pw"}).status_code
        )

    threads = [threading.Thread(target=create) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert sorted(statuses) == [201, 409, 409]
        assert account(name) is not None
    finally:
        raw.delete(f"/pools/{pool_id}/nodes/{node_id}/users/{name}")
    assert account(name) is None


def test_windows_node_users(client: BatchClient, raw: Raw, uid: str) -> None:
    """Windows pools (decision 0060): a password is required, SSH keys are refused, names have 20 characters."""
    pool_id = f"uw-{uid}"
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="STANDARD_D1_v2",
            virtual_machine_configuration=m.VirtualMachineConfiguration(
                image_reference=m.BatchVmImageReference(
                    publisher="MicrosoftWindowsServer", offer="WindowsServer", sku="2019-datacenter-smalldisk"
                ),
                node_agent_sku_id="batch.node.windows amd64",
            ),
            target_dedicated_nodes=1,
        )
    )
    try:
        (n,) = wait_idle_nodes(client, pool_id, 1)
        users = f"/pools/{pool_id}/nodes/{n.id}/users"
        name = f"w{uid}"
        assert_error(raw.post(users, {"name": name}), 400, "MissingRequiredProperty", PropertyName="password")
        r = raw.post(users, {"name": name, "password": "pw", "sshPublicKey": KEY})
        assert_error(r, 400, "InvalidPropertyValue", PropertyName="sshPublicKey")
        r = raw.post(users, {"name": "w" * 21, "password": "pw"})
        assert_error(r, 400, "InvalidPropertyValue", PropertyName="name")
        assert raw.post(users, {"name": name, "password": "pw"}).status_code == 201
        assert account(name) is not None
        rl = client.get_node_remote_login_settings(pool_id, n.id)
        (ep,) = client.get_node(pool_id, n.id).endpoint_configuration.inbound_endpoints
        assert (ep.backend_port, rl.remote_login_port) == (3389, ep.frontend_port)
        assert raw.delete(f"{users}/{name}").status_code == 200
        assert account(name) is None
    finally:
        client.begin_delete_pool(pool_id)


LEGACY_FLOW = r"""
import json, sys
import azure.batch.models as m
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials
from azure.batch.models import BatchErrorException

endpoint, account, key, pool_id, node_id, name = sys.argv[1:7]
client = BatchServiceClient(SharedKeyCredentials(account, key), batch_url=endpoint)
client.compute_node.add_user(pool_id, node_id, m.ComputeNodeUser(name=name, password="pw", is_admin=False))
try:
    client.compute_node.add_user(pool_id, node_id, m.ComputeNodeUser(name=name, password="pw"))
    dup = "ok"
except BatchErrorException as e:
    dup = e.error.code
client.compute_node.update_user(pool_id, node_id, name, m.NodeUpdateUserParameter(password="other"))
rl = client.compute_node.get_remote_login_settings(pool_id, node_id)
client.compute_node.delete_user(pool_id, node_id, name)
try:
    client.compute_node.delete_user(pool_id, node_id, name)
    gone = "ok"
except BatchErrorException as e:
    gone = e.error.code
print(json.dumps({"dup": dup, "gone": gone, "port": rl.remote_login_port, "ip": rl.remote_login_ip_address}))
"""


def test_legacy_sdk_node_users(
    client: BatchClient, live: LiveServer, node: tuple[str, str, str], uid: str
) -> None:
    """azure-batch 14.2.0 (api-version 2024-02-01.19.0): the same operations under their legacy names."""
    import json

    venv = Path(os.environ.get("BATCHYARD_SDK_VENVS", Path(__file__).resolve().parents[2] / ".venv-sdk"))
    py = venv / "14.2.0" / "bin" / "python"
    if not py.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no venv for azure-batch 14.2.0 at {py}: run scripts/sdk-venvs")
        pytest.skip("no azure-batch 14.2.0 venv")
    pool_id, node_id, _ = node
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    args = [str(py), "-c", LEGACY_FLOW, live.endpoint, live.account, live.key, pool_id, node_id, f"bl{uid}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    rl = client.get_node_remote_login_settings(pool_id, node_id)
    assert got == {
        "dup": "NodeUserExists",
        "gone": "NodeUserNotFound",
        "port": rl.remote_login_port,
        "ip": rl.remote_login_ip_address,
    }
    assert account(f"bl{uid}") is None


def test_reimage_removes_node_users(client: BatchClient, uid: str) -> None:
    """A reimaged node has a fresh OS disk: its node users are gone, and the name can be created again."""
    pool_id = f"ur-{uid}"
    create_pool(client, pool_id, nodes=1)
    try:
        (n,) = wait_idle_nodes(client, pool_id, 1)
        name = f"br{uid}"
        client.create_node_user(pool_id, n.id, m.BatchNodeUserCreateOptions(name=name, password="pw"))
        assert account(name) is not None
        client.begin_reimage_node(
            pool_id, n.id, BatchNodeReimageOptions(node_reimage_option="requeue"), polling_interval=1
        )
        wait_for(lambda: account(name) is None, 60, 0.1, "the node user to go with the reimage")
        wait_idle_nodes(client, pool_id, 1)
        with pytest.raises(HttpResponseError) as ei:
            client.delete_node_user(pool_id, n.id, name)
        assert ei.value.status_code == 404 and code_of(ei.value) == "NodeUserNotFound"
        client.create_node_user(pool_id, n.id, m.BatchNodeUserCreateOptions(name=name, password="pw"))
        assert account(name) is not None
    finally:
        client.begin_delete_pool(pool_id)
        wait_for(lambda: account(f"br{uid}") is None, 30, 0.1, "the node user to go with its pool")
