"""Inbound NAT for local nodes (decision 0132): the server listens on each node's frontend port and forwards
TCP connections to the backend port on the node's address.

A pool's `inboundNATPools` give each node the frontend port `start + ordinal` of the rule's range (the next free
one in the range if that port is taken on this host); the default remote-access rule (`SSHRule`, no range) gets a
port the kernel picks, forwarded to the host's SSH (or RDP) port. Listeners are opened when a node is first
shown (or by the reconcile pass) and closed when the node is gone. Connections are bounded: beyond the limit a
new connection is closed at once; listeners are bounded too (beyond that a rule is reported at the node's own
port, which reaches it directly). UDP rules are forwarded per client address (a flow with its own socket to the
backend), at most MAX_UDP_FLOWS flows per frontend, each closed after UDP_IDLE seconds without traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import select

from batchyard.models.resources import endpoint_rules
from batchyard.store import schema
from batchyard.store.sql import SqlStore

log = logging.getLogger("batchyard.pools")

Rule = tuple[str, str, int, tuple[int, int] | None]

MAX_CONNECTIONS = 256
#: UDP flows per frontend, and the seconds a flow lives without traffic.
MAX_UDP_FLOWS = 256
UDP_IDLE = 60.0
MAX_LISTENERS = 2048
#: Seconds between two full passes of the forwarder while no node or pool changes.
FULL_PASS = 60.0
CONNECT_TIMEOUT = 10.0
CHUNK = 64 * 1024


@dataclass
class _Listener:
    sock: socket.socket
    port: int
    backend: tuple[str, int]
    udp: bool = False
    server: asyncio.AbstractServer | None = None
    front: _UdpFront | None = None
    task: asyncio.Task[None] | None = None
    conns: set[asyncio.Task[None]] = field(default_factory=set)


class _UdpBack(asyncio.DatagramProtocol):
    """One client's flow to the backend: replies go back to that client through the frontend socket."""

    def __init__(self, front: _UdpFront, client: tuple[str, int]) -> None:
        self.front = front
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        for data in self.pending:
            self.transport.sendto(data)
        self.pending.clear()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.last = time.monotonic()
        if self.front.transport is not None:
            self.front.transport.sendto(data, self.client)

    def send(self, data: bytes) -> None:
        self.last = time.monotonic()
        if self.transport is not None:
            self.transport.sendto(data)
        elif len(self.pending) < 64:
            self.pending.append(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _UdpFront(asyncio.DatagramProtocol):
    """A UDP frontend: each client address gets its own socket to the backend (a NAT flow), bounded in number
    and closed after UDP_IDLE seconds without traffic."""

    def __init__(self, backend: tuple[str, int], max_flows: int) -> None:
        self.backend = backend
        self.max_flows = max_flows
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[tuple[str, int], _UdpBack] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # (not a subclass under every loop)
        self._sweeper = asyncio.get_running_loop().call_later(UDP_IDLE / 2, self._sweep)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        flow = self.flows.get(addr)
        if flow is None:
            if len(self.flows) >= self.max_flows:
                return  # dropped, as a full NAT table drops
            flow = self.flows[addr] = _UdpBack(self, addr)
            asyncio.get_running_loop().create_task(self._open(flow, addr))
        flow.send(data)

    async def _open(self, flow: _UdpBack, addr: tuple[str, int]) -> None:
        try:
            await asyncio.get_running_loop().create_datagram_endpoint(lambda: flow, remote_addr=self.backend)
        except OSError:
            self.flows.pop(addr, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        for addr, flow in list(self.flows.items()):
            if now - flow.last > UDP_IDLE:
                flow.close()
                del self.flows[addr]
        self._sweeper = asyncio.get_running_loop().call_later(UDP_IDLE / 2, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for flow in self.flows.values():
            flow.close()
        self.flows.clear()
        if self.transport is not None:
            self.transport.close()


class Forwarder:
    def __init__(
        self,
        host: str,
        public_address: str,
        max_connections: int = MAX_CONNECTIONS,
        max_listeners: int = MAX_LISTENERS,
    ) -> None:
        self.host = host
        self.public_address = public_address
        self.max_connections = max_connections
        self.max_listeners = max_listeners
        self.active = 0
        self._listeners: dict[tuple[str, str], _Listener] = {}
        self._ids: set[str] = set()  # the nodes and pool ETags the last pass saw
        self._etags: frozenset[object] = frozenset()
        self._full_at = -FULL_PASS

    # --- the service's view -----------------------------------------------------------------------------

    def frontends(
        self, node_id: str, ordinal: int, address: str, rules: list[Rule]
    ) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        for name, protocol, backend, ports in rules:
            udp = protocol.lower() == "udp"
            port = self._ensure(node_id, name, (address, backend), ordinal, ports, udp)
            if port is not None:
                out[name] = (self.public_address, port)
        return out

    def _ensure(
        self,
        node_id: str,
        rule: str,
        backend: tuple[str, int],
        ordinal: int,
        ports: tuple[int, int] | None,
        udp: bool = False,
    ) -> int | None:
        key = (node_id, rule)
        have = self._listeners.get(key)
        if have is not None and have.backend == backend and have.udp == udp:
            return have.port
        if have is not None:
            self._close(key)
        if len(self._listeners) >= self.max_listeners:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        sock = self._bind(ordinal, ports, udp)
        if sock is None:
            return None
        lst = _Listener(sock, sock.getsockname()[1], backend, udp)
        self._listeners[key] = lst
        lst.task = loop.create_task(self._serve_udp(lst) if udp else self._serve(lst))
        return lst.port

    def _bind(self, ordinal: int, ports: tuple[int, int] | None, udp: bool = False) -> socket.socket | None:
        if ports is None:
            candidates = [0]
        else:
            start, end = ports
            first = start + ordinal if start + ordinal <= end else start
            candidates = [first, *(p for p in range(start, end + 1) if p != first)]
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        taken = {lst.port for lst in self._listeners.values() if lst.udp == udp}
        for port in candidates:
            if port and port in taken:
                continue
            sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
            try:
                if not udp:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.host, port))
                if not udp:
                    sock.listen(64)
                sock.setblocking(False)
                return sock
            except OSError as e:
                sock.close()
                if e.errno not in (errno.EADDRINUSE, errno.EACCES):
                    log.warning("cannot listen on %s:%d for a node endpoint: %s", self.host, port, e)
                    return None
        log.warning("no free frontend port in %s for a node endpoint", ports)
        return None

    # --- forwarding --------------------------------------------------------------------------------------

    async def _serve(self, lst: _Listener) -> None:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if self.active >= self.max_connections:
                writer.close()
                return
            self.active += 1
            if task is not None:
                lst.conns.add(task)
            try:
                await self._pipe(reader, writer, lst.backend)
            finally:
                self.active -= 1
                if task is not None:
                    lst.conns.discard(task)

        lst.server = await asyncio.start_server(on_connect, sock=lst.sock)

    async def _serve_udp(self, lst: _Listener) -> None:
        front = _UdpFront(lst.backend, MAX_UDP_FLOWS)
        lst.front = front
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: front, sock=lst.sock)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, backend: tuple[str, int]
    ) -> None:
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*backend), CONNECT_TIMEOUT)
        except (OSError, TimeoutError):
            writer.close()
            return

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(CHUNK):
                    dst.write(data)
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()
            except (OSError, ConnectionError):
                pass

        try:
            await asyncio.gather(copy(reader, up_w), copy(up_r, writer))
        finally:
            for w in (writer, up_w):
                w.close()

    # --- life cycle ----------------------------------------------------------------------------------------

    def _close(self, key: tuple[str, str]) -> None:
        lst = self._listeners.pop(key, None)
        if lst is None:
            return
        if lst.server is not None:
            lst.server.close()
        elif lst.front is not None and lst.front.transport is not None:
            lst.front.close()
        else:
            lst.sock.close()
        if lst.task is not None:
            lst.task.cancel()
        for t in list(lst.conns):
            t.cancel()

    def reconcile(self, store: SqlStore) -> None:
        """Open the endpoints of every node that has none yet; close those of nodes that are gone.

        A node's rules come from its pool and its address from its creation, so only nodes that appeared
        since the last pass are read with their bodies (decision 0188): an idle pool costs a read of ids,
        however many nodes it has. A pool that changed (its ETag), and every FULL_PASS seconds (to retry a
        frontend that could not be opened), bring a full pass.
        """
        n = schema.nodes
        with store.tx() as tx:
            ids = {r[0] for r in tx.conn.execute(select(n.c.id)).all()}
            etags = frozenset(tx.conn.execute(select(schema.pools.c.key, schema.pools.c.etag)).all())
            now = time.monotonic()
            full = etags != self._etags or now - self._full_at >= FULL_PASS
            new = sorted(ids if full else ids - self._ids)
            # a node gone since the last pass, or one whose frontend a request opened between two passes
            gone = (self._ids | {k[0] for k in self._listeners}) - ids
            if not full and not new and not gone:
                return
            pools = {p["key"]: p["body"] for p in tx.select(schema.pools, columns=["key", "body"])}
            nodes: list[dict[str, object]] = []
            for i in range(0, len(new), 500):
                part = new[i : i + 500]
                nodes += tx.select(n, n.c.id.in_(part), columns=["id", "pool_key", "ordinal", "body"])
        live: set[tuple[str, str]] = set()
        for row in nodes:
            pool = pools.get(str(row["pool_key"]))
            if pool is None:
                continue
            body = cast(dict[str, object], row["body"])
            rules = endpoint_rules(pool)
            self.frontends(
                str(row["id"]), int(str(row["ordinal"])), str(body.get("ipAddress", "127.0.0.1")), rules
            )
            live.update((str(row["id"]), r[0]) for r in rules)
        for key in [k for k in self._listeners if (k not in live if full else k[0] in gone)]:
            self._close(key)
        # only a pass that got this far counts as seen: one that failed is done again in full next time
        self._ids, self._etags = ids, etags
        if full:
            self._full_at = now

    async def run(self, store: SqlStore, interval: float = 2.0) -> None:
        try:
            while True:
                try:
                    self.reconcile(store)
                except Exception:  # keep forwarding; the next pass retries
                    log.exception("endpoint forwarder pass failed")
                await asyncio.sleep(interval)
        finally:
            for key in list(self._listeners):
                self._close(key)

    def close_all(self) -> None:
        for key in list(self._listeners):
            self._close(key)


def public_address(host: str, public_url: str | None) -> str:
    """The address clients use to reach the forwarder: the bound host unless it is a wildcard."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    if public_url:
        from urllib.parse import urlsplit

        name = urlsplit(public_url).hostname
        if name:
            with contextlib.suppress(OSError):
                return socket.gethostbyname(name)
            return name
    return "127.0.0.1"
