"""Count agent syncs by watching the loopback interface (AF_PACKET, needs root), without touching the server.

Every sync is one HTTP request whose first TCP segment starts with ``POST /batchyard/agent/v1/sync``. On
``lo`` each packet is seen twice (once outgoing, once incoming), so only incoming copies are counted.
"""

from __future__ import annotations

import socket
import struct
import threading

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SYNC_PREFIX = b"POST /batchyard/agent/v1/sync"


class SyncCounter:
    """Counts sync requests sent to `port` on 127.0.0.1 while running; `count` is read at any time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.count = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, name="sync-counter", daemon=True)

    @staticmethod
    def available() -> str | None:
        """None if packet capture works here, else why not."""
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.close()
        except (OSError, AttributeError) as exc:
            return f"cannot open an AF_PACKET socket: {exc}"
        return None

    def start(self) -> SyncCounter:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        return self.count

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            if self._is_sync(data):
                self.count += 1

    def _is_sync(self, frame: bytes) -> bool:
        # loopback frames carry a 14-byte (all-zero) Ethernet header
        if len(frame) < 14 + 20 + 20 or struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            return False
        ip = 14
        ihl = (frame[ip] & 0x0F) * 4
        if frame[ip + 9] != 6:  # TCP
            return False
        tcp = ip + ihl
        dport = struct.unpack_from("!H", frame, tcp + 2)[0]
        if dport != self.port:
            return False
        off = (frame[tcp + 12] >> 4) * 4
        return frame[tcp + off : tcp + off + len(SYNC_PREFIX)] == SYNC_PREFIX
