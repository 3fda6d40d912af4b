"""The server's inbound NAT forwarder end to end (decision 0132): a program listening on a node's backend port is
reached through the node's frontend port; the listeners close with the node; connections are bounded; and a node
user logs in with `ssh -p <remote login port>` and its key and runs a command on the node (the host's sshd)."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m

from batchyard.pools.nat import Forwarder
from tests.support.batch import IMAGE, SKU, create_pool, wait_idle_nodes
from tests.support.live import free_port, wait_for

pytestmark = pytest.mark.slow


class EchoServer:
    """A tiny TCP echo server on every address of the host (stands for a program listening on the node, whose
    own address is one of the host's loopback addresses)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("0.0.0.0", port))
        self.sock.settimeout(0.2)
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def stop(self) -> None:
        self.stopped = True
        self.sock.close()
        self.thread.join(5)


def roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def nat_pool(
    client: BatchClient, pool_id: str, backend: int, start: int, nodes: int = 1, protocol: str = "tcp"
) -> None:
    nat = m.BatchInboundNatPool(
        name="echo",
        protocol=protocol,
        backend_port=backend,
        frontend_port_range_start=start,
        frontend_port_range_end=start + 39,
    )
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=m.VirtualMachineConfiguration(
                image_reference=IMAGE, node_agent_sku_id=SKU
            ),
            target_dedicated_nodes=nodes,
            network_configuration=m.NetworkConfiguration(
                endpoint_configuration=m.BatchPoolEndpointConfiguration(inbound_nat_pools=[nat])
            ),
        )
    )


def test_frontend_port_reaches_the_backend_and_closes_with_the_pool(client: BatchClient) -> None:
    backend = free_port()
    echo = EchoServer(backend)
    pool_id = f"fw-{uuid.uuid4().hex[:8]}"
    start = random.randrange(20000, 32000)
    try:
        nat_pool(client, pool_id, backend, start)
        (n,) = wait_idle_nodes(client, pool_id, 1)
        (ep,) = n.endpoint_configuration.inbound_endpoints
        assert (ep.backend_port, ep.public_ip_address) == (backend, "127.0.0.1")
        assert start <= ep.frontend_port <= start + 39
        payload = bytes(range(256)) * 4096  # 1 MiB both ways
        assert roundtrip(ep.frontend_port, payload) == payload
        # several clients at once
        results: list[bytes] = []
        threads = [
            threading.Thread(target=lambda i=i: results.append(roundtrip(ep.frontend_port, b"c%d" % i)))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(results) == sorted(b"c%d" % i for i in range(8))
        client.begin_delete_pool(pool_id)
        wait_for(lambda: refused(ep.frontend_port), 30, 0.2, "the frontend port to close with its node")
    finally:
        echo.stop()


def test_udp_rule_is_forwarded(client: BatchClient) -> None:
    """A udp NAT rule (the recorded network-configuration pool used one): datagrams reach the backend and the
    replies come back to each client."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    backend.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = backend.recvfrom(65536)
            except TimeoutError:
                continue
            backend.sendto(b"echo:" + data, addr)

    server = threading.Thread(target=serve, daemon=True)
    pool_id = f"udp-{uuid.uuid4().hex[:8]}"
    start = random.randrange(20000, 32000)
    try:
        nat_pool(client, pool_id, port, start, protocol="udp")
        (n,) = wait_idle_nodes(client, pool_id, 1)
        # bound to the node's own address, so that replies leave from the address the flow was sent to
        backend.bind((n.ip_address, port))
        server.start()
        (ep,) = n.endpoint_configuration.inbound_endpoints
        assert (ep.protocol, ep.backend_port) == ("udp", port)
        assert start <= ep.frontend_port <= start + 39
        for i in range(2):  # two clients, two flows
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                c.settimeout(5)
                for j in range(3):
                    c.sendto(b"%d-%d" % (i, j), ("127.0.0.1", ep.frontend_port))
                    assert c.recvfrom(65536)[0] == b"echo:%d-%d" % (i, j)
    finally:
        client.begin_delete_pool(pool_id)
        stop.set()
        if server.is_alive():
            server.join(5)
        backend.close()


def test_forwarder_bounds_connections() -> None:
    """Beyond the connection limit a new connection is closed at once; the held ones keep working."""
    backend = free_port()
    echo = EchoServer(backend)

    async def scenario() -> tuple[bytes, bytes, bytes]:
        fw = Forwarder("127.0.0.1", "127.0.0.1", max_connections=2)
        fronts = fw.frontends("node-x", 0, "127.0.0.1", [("echo", "tcp", backend, None)])
        port = fronts["echo"][1]
        await asyncio.sleep(0.05)
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for r, w in held:
            w.write(b"ping")
            await w.drain()
            assert await asyncio.wait_for(r.readexactly(4), 5) == b"ping"
        r3, w3 = await asyncio.open_connection("127.0.0.1", port)
        third = await asyncio.wait_for(r3.read(), 5)  # closed by the forwarder: EOF, no data
        w3.close()
        r0, w0 = held[0]
        w0.write(b"pong")
        await w0.drain()
        again = await asyncio.wait_for(r0.readexactly(4), 5)
        for _, w in held:
            w.close()
        # a freed slot is usable again
        await asyncio.sleep(0.1)
        r4, w4 = await asyncio.open_connection("127.0.0.1", port)
        w4.write(b"back")
        await w4.drain()
        back = await asyncio.wait_for(r4.readexactly(4), 5)
        w4.close()
        fw.close_all()
        return third, again, back

    try:
        assert asyncio.run(scenario()) == (b"", b"pong", b"back")
    finally:
        echo.stop()


# --- ssh through the remote login settings -------------------------------------------------------------------


def _listening(port: int) -> bool:
    return not refused(port)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The host's sshd on port 22 (started here if none runs; installed by scripts/access-deps)."""
    if _listening(22):
        yield
        return
    exe = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(exe).exists():
        pytest.fail("openssh-server is not installed: run scripts/access-deps")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = tmp_path_factory.mktemp("sshd") / "sshd.log"
    proc = subprocess.Popen(
        [exe, "-D", "-e", "-o", "ListenAddress=0.0.0.0", "-p", "22"],
        stdout=open(log, "wb"),  # noqa: SIM115 - owned by the child
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _listening(22) or proc.poll() is not None, 15, 0.1, "sshd to listen")
        assert _listening(22), log.read_text()  # ours, or one another test started meanwhile
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def test_node_user_logs_in_with_ssh(client: BatchClient, sshd: None, tmp_path: Path) -> None:
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.fail("the OpenSSH client is not installed: run scripts/access-deps")
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pool_id = f"ssh-{uuid.uuid4().hex[:8]}"
    create_pool(client, pool_id, nodes=1)
    try:
        (n,) = wait_idle_nodes(client, pool_id, 1)
        user = f"sshu{uuid.uuid4().hex[:6]}"
        client.create_node_user(
            pool_id,
            n.id,
            m.BatchNodeUserCreateOptions(
                name=user, ssh_public_key=key.with_suffix(".pub").read_text().strip()
            ),
        )
        rl = client.get_node_remote_login_settings(pool_id, n.id)
        assert rl.remote_login_port != 22
        cmd = [
            "ssh",
            "-p",
            str(rl.remote_login_port),
            "-i",
            str(key),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            f"{user}@{rl.remote_login_ip_address}",
            "id -un; echo hello from the node",
        ]
        started = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split("\n")[:2] == [user, "hello from the node"]
        assert time.monotonic() - started < 30
        # the user is deleted: the same login fails
        client.delete_node_user(pool_id, n.id, user)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert p.returncode != 0
    finally:
        client.begin_delete_pool(pool_id)
