"""A node provider for benchmarks and tests whose agents are simulated by another process (decision 0187).

`batchyard server --simulated-agents` (TESTING AND BENCHMARKS ONLY) starts no agent process. Its nodes are
real nodes of real pools: the pool manager, the store, leases, node operations and the agent protocol all
work as with local nodes. Only the process is missing: each node's spec (id, token, pool, handle) goes to a
simulator connected to the Unix socket `<data dir>/simagents.sock`, which speaks the real agent protocol over
HTTP for thousands of nodes from one process (`bench/simagents.py`).

Tokens never leave the server's user: the socket is created mode 0600 in the data directory, so only the
server's own user may connect, and nothing is written to a file or a command line. A simulator that connects
(or reconnects) is sent every live node first. Messages are JSON lines:

    server -> simulator  {"op": "hello", "server": URL}
                         {"op": "start", "nodeId", "token", "poolId", "handle", "dedicated"}
                         {"op": "stop", "nodeId", "handle"}      (stop and kill alike)
    simulator -> server  {"op": "exited", "nodeId", "handle"}    (an agent crash, e.g. to test respawns)

Handles are integers from 2**30 up: never a real pid (Linux pids stay below 2**22), so nothing that reads
/proc mistakes one for a process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchyard.pools.provider import Handle, NodeEvent, NodeSpec

log = logging.getLogger("batchyard.pools")

SOCKET_NAME = "simagents.sock"
FIRST_HANDLE = 1 << 30
#: Nodes a pool manager pass adds: starting a simulated agent costs one JSON line, not a process.
SPAWN_BATCH = 250
#: Seconds a send to a simulator may block before that simulator is dropped (it reconnects to resume).
SEND_TIMEOUT = 10.0


class SimulatedProvider:
    """Nodes whose agents run in a simulator process; it implements the NodeProvider contract (0100)."""

    def __init__(self, server_url: str, data_dir: Path) -> None:
        self.server_url = server_url
        self.path = data_dir / SOCKET_NAME
        self._lock = threading.Lock()
        self._live: dict[str, tuple[int, NodeSpec]] = {}  # node id -> (handle, spec)
        self._exited: list[tuple[Handle, str]] = []
        self._next = FIRST_HANDLE
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None

    # --- the simulators' socket ----------------------------------------------------------------------------

    def listen(self) -> None:
        """Open the socket (mode 0600) and accept simulators in a daemon thread."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            s.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        s.listen(8)
        self._listener = s
        threading.Thread(target=self._accept, name="simagents", daemon=True).start()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for c in self._conns:
                c.close()
            self._conns.clear()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            # sends give up after SEND_TIMEOUT (the kernel's send timeout); reads block in their own thread
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(SEND_TIMEOUT), 0))
            with self._lock:
                lines = [{"op": "hello", "server": self.server_url}]
                lines += [self._start_msg(h, sp) for h, sp in self._live.values()]
                if self._send_to(conn, lines):
                    self._conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), name="simagents-read", daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        """What a simulator says: agents that exited on their own."""
        conn_file = conn.makefile("rb")
        while True:
            try:
                line = conn_file.readline()
            except (OSError, ValueError):  # closed by the server
                break
            if not line:
                break
            try:
                msg = json.loads(line)
                node_id, handle = str(msg["nodeId"]), int(msg["handle"])
            except (ValueError, KeyError, TypeError):
                continue
            if msg.get("op") == "exited":
                with self._lock:
                    if self._live.get(node_id, (None,))[0] == handle:
                        del self._live[node_id]
                        self._exited.append((handle, node_id))
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
        conn.close()

    def _send(self, msg: dict[str, Any]) -> None:
        """To every connected simulator (called with the lock held)."""
        for c in list(self._conns):
            if not self._send_to(c, [msg]):
                self._conns.remove(c)
                c.close()

    @staticmethod
    def _send_to(conn: socket.socket, msgs: list[dict[str, Any]]) -> bool:
        try:
            conn.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in msgs))
            return True
        except OSError:
            log.warning("a simulator of node agents stopped reading; dropped (it may reconnect)")
            return False

    @staticmethod
    def _start_msg(handle: int, sp: NodeSpec) -> dict[str, Any]:
        return {
            "op": "start",
            "nodeId": sp.node_id,
            "token": sp.token,
            "poolId": sp.pool_id,
            "handle": handle,
            "dedicated": sp.dedicated,
        }

    # --- the NodeProvider contract -------------------------------------------------------------------------

    def create(self, specs: Sequence[NodeSpec]) -> list[int | OSError]:
        return [self.start(sp) for sp in specs]

    def start(self, spec: NodeSpec) -> int:
        with self._lock:
            self._next += 1
            handle = self._next
            self._live[spec.node_id] = (handle, spec)
            self._send(self._start_msg(handle, spec))
        return handle

    def alive(self, handle: Handle, node_id: str) -> bool:
        with self._lock:
            return handle is not None and self._live.get(node_id, (None,))[0] == handle

    def watch(self, handle: Handle, node_id: str) -> bool:
        return True  # exits are known here: a stop, a kill, or the simulator's word

    def exited(self) -> list[tuple[Handle, str]]:
        with self._lock:
            out, self._exited = self._exited, []
        return out

    def stop(self, handle: Handle, node_id: str) -> None:
        with self._lock:
            if handle is None or self._live.get(node_id, (None,))[0] != handle:
                return
            del self._live[node_id]
            self._exited.append((handle, node_id))
            self._send({"op": "stop", "nodeId": node_id, "handle": handle})

    def kill(self, handle: Handle, node_id: str) -> None:
        self.stop(handle, node_id)

    def wipe(self, node_id: str, root: Path) -> None:
        """A simulated node has no disk of its own."""

    def events(self) -> list[NodeEvent]:
        return []
