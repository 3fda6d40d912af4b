"""Node users across a server SIGKILL (decision 0131): recorded accounts stay and are still managed; accounts
no node records (what a crash between `useradd` and the store write leaves) are deleted when the server starts."""

from __future__ import annotations

import pwd
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential

from batchyard.pools.hostusers import HostAccounts
from tests.support.batch import create_pool, wait_idle_nodes
from tests.support.live import LiveServer, wait_for

pytestmark = pytest.mark.slow


def _client(srv: LiveServer) -> BatchClient:
    return BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_node_users_survive_a_restart_and_leftovers_are_swept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = LiveServer(data).start()
    tag = uuid.uuid4().hex[:6]
    kept, leftover, unrelated = f"keep{tag}", f"left{tag}", f"other{tag}"
    try:
        c = _client(srv)
        create_pool(c, "up", nodes=1)
        (n,) = wait_idle_nodes(c, "up", 1)
        c.create_node_user("up", n.id, m.BatchNodeUserCreateOptions(name=kept, password="pw"))
        srv.kill(signal.SIGKILL)
        # what a crash between useradd and the store write leaves: an account marked for this data dir
        marker = HostAccounts(data).marker(n.id)
        subprocess.run(["useradd", "-M", "-c", marker, leftover], check=True)
        # an account of another data dir (another server on this host) is never touched
        subprocess.run(
            ["useradd", "-M", "-c", HostAccounts(tmp_path / "elsewhere").marker(n.id), unrelated], check=True
        )
        srv = LiveServer(data, port=srv.port).start()
        c = _client(srv)
        wait_for(lambda: not _exists(leftover), 30, 0.1, "the unrecorded account to be deleted")
        assert _exists(kept) and _exists(unrelated)
        c.replace_node_user("up", n.id, kept, m.BatchNodeUserReplaceOptions(password="0ther"))
        c.delete_node_user("up", n.id, kept)
        assert not _exists(kept)
    finally:
        for name in (kept, leftover, unrelated):
            if _exists(name):
                subprocess.run(["userdel", "-f", "-r", name], capture_output=True)
        srv.stop()
