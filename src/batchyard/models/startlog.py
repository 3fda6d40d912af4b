"""The agent's start log: one line per task attempt it starts, written before the process starts.

An agent reports a start over HTTP a few milliseconds later; if it dies in between (or while the server is
down), the server would think a queued attempt never ran and rerun it without counting a requeue. The log in
the node root is the evidence that survives the agent: when a node is lost the server counts a requeue for
every attempt placed on it that the log shows as started. The log is rotated at `MAX_BYTES` (one previous
file kept), far more than the attempts a node has placed on it at once.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

LOG_NAME = ".agent.started"
MAX_BYTES = 1 << 20


class StartLog:
    """Append-only writer used by the agent (one `write` per start; no fsync: it must survive the agent,
    not the host)."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOG_NAME
        self._fd = -1
        self._size = 0

    def add(self, ref: str) -> None:
        if self._fd < 0 or self._size > MAX_BYTES:
            self._reopen()
        line = (ref + "\n").encode()
        with contextlib.suppress(OSError):  # a full disk must not stop the task; the count is best effort
            self._size += os.write(self._fd, line)

    def _reopen(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path.with_name(LOG_NAME + ".1"))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size


def started(root: Path) -> set[str]:
    """The attempt refs the node's agent has started (read by the server when the node is lost)."""
    out: set[str] = set()
    for name in (LOG_NAME + ".1", LOG_NAME):
        try:
            with open(root / name, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 2 * MAX_BYTES))
                data = f.read()
        except OSError:
            continue
        out.update(line.decode(errors="replace") for line in data.splitlines() if line)
    return out
