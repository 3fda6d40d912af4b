"""The local node provider: each compute node is a `batchyard agent` process on this host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class LocalProvider:
    """Spawns and stops agent processes; each runs in its own session so the server can die without them."""

    def __init__(self, server_url: str, account: str, orphan_timeout: float = 600.0) -> None:
        self.server_url = server_url
        self.account = account
        self.orphan_timeout = orphan_timeout  # an agent without its server stops after this many seconds

    def spawn(self, node_id: str, token: str, pool_id: str, root: Path, dedicated: bool) -> int:
        root.mkdir(parents=True, exist_ok=True)
        log = open(root / ".agent.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "batchyard.agent.main",
                    "--server",
                    self.server_url,
                    "--node-id",
                    node_id,
                    "--pool-id",
                    pool_id,
                    "--root",
                    str(root),
                    "--account",
                    self.account,
                    "--dedicated" if dedicated else "--low-priority",
                    "--orphan-timeout",
                    f"{self.orphan_timeout:g}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "BATCHYARD_NODE_TOKEN": token},
                close_fds=True,
            )
        finally:
            log.close()
        return proc.pid

    @staticmethod
    def alive(pid: int | None, node_id: str) -> bool:
        """True if `pid` is still this node's agent (pids are reused, so check the command line)."""
        if not pid:
            return False
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, IndexError):
            return False
        if fields[0] == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            return False
        # A child of ours that has not exec'd the agent yet still shows our own command line.
        if node_id.encode() in cmd:
            return True
        return int(fields[1]) == os.getpid() and b"batchyard.agent.main" not in cmd

    @staticmethod
    def stop(pid: int | None, node_id: str) -> None:
        """Ask the agent to stop (it kills its tasks); its whole session is killed if it lingers."""
        if not pid or not LocalProvider.alive(pid, node_id):
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return

    @staticmethod
    def kill(pid: int | None, node_id: str) -> None:
        if not pid or not LocalProvider.alive(pid, node_id):
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
