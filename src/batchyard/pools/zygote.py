"""The server's side of the agent zygote (decision 0200): local agents forked from one pre-imported process.

`batchyard.agent.zygote` is the zygote itself; this module starts it, sends it one request per agent over a
socket pair and reads the pid back. Every failure (it cannot start, it died, it does not answer in time) is
an `ZygoteUnavailable`: the local provider then starts that agent as a program, as without a zygote, and a
later spawn starts a new zygote. Nothing here waits without a deadline: the pool manager's worker thread calls it.
"""

from __future__ import annotations

import array
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

import psutil

log = logging.getLogger("batchyard.pools")

#: The zygote's module: its command line names it, and an agent's never does (`LocalProvider.alive`).
ZYGOTE_MODULE = "batchyard.agent.zygote"
#: Internal switch (tests, benchmarks): "0" starts every agent as a program.
ZYGOTE_ENV = "BATCHYARD_AGENT_ZYGOTE"
#: Seconds for the zygote to import the agent and say it is ready.
START_TIMEOUT = 30.0
#: Seconds for one request: the fork and the child's set-up (the zygote gives its child 10 s of them).
REQUEST_TIMEOUT = 15.0
#: After a zygote could not be started, agents start as programs for this many seconds before the next try.
RETRY_PAUSE = 30.0
#: Room kept for agent command lines longer than the first one (pool ids differ in length).
TITLE_SLACK = 512
_MAX_MSG = 1 << 20

#: pids of the zygotes this process runs: never an agent, whatever their command line looks like meanwhile
zygote_pids: set[int] = set()


def enabled() -> bool:
    return os.environ.get(ZYGOTE_ENV, "1") != "0"


class ZygoteUnavailable(Exception):
    """The zygote could not start this agent; the provider starts it as a program instead."""


class AgentZygote:
    """One zygote process, started on the first `spawn` (and again after it died)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._retry_at = 0.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def spawn(
        self,
        command: Sequence[str],
        argv: Sequence[str],
        env: Mapping[str, str],
        log_fd: int,
        base_env: Mapping[str, str],
    ) -> int:
        """Fork the agent ``command + argv`` with ``env`` and its output on ``log_fd``; its pid.

        ``command`` is how the agent would start as a program (its command line shows that); ``base_env`` is
        the zygote's environment, the agents' own without any node's token or configuration."""
        payload = json.dumps({"argv": list(argv), "env": dict(env)}).encode()
        if len(payload) > _MAX_MSG:
            raise ZygoteUnavailable("the request is too long")
        with self._lock:
            sock = self._running(len(os.fsencode("\0".join([*command, *argv]))) + TITLE_SLACK, base_env)
            try:
                sock.settimeout(REQUEST_TIMEOUT)
                sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [log_fd]))])
                data = sock.recv(_MAX_MSG)
            except OSError as e:  # a timeout too
                self._abandon(argv)
                raise ZygoteUnavailable(f"the agent zygote did not answer: {e!r}") from e
            if not data:
                self._abandon(argv)
                raise ZygoteUnavailable("the agent zygote exited")
            reply = json.loads(data)
            if "pid" not in reply:  # this agent only: the zygote itself is fine
                raise ZygoteUnavailable(str(reply.get("error")))
            return int(reply["pid"])

    def _running(self, room: int, base_env: Mapping[str, str]) -> socket.socket:
        """The zygote's socket, starting the zygote if none runs."""
        if self._proc is not None and self._sock is not None:
            if self._proc.poll() is None:
                return self._sock
            log.warning("the agent zygote exited (status %s); starting a new one", self._proc.returncode)
            self._drop()
        if time.monotonic() < self._retry_at:
            raise ZygoteUnavailable("the agent zygote could not start recently")
        try:
            return self._start(room, base_env)
        except (OSError, ValueError, ZygoteUnavailable) as e:
            self._retry_at = time.monotonic() + RETRY_PAUSE
            log.warning("agents start as programs: the agent zygote could not start: %s", e)
            self._drop()
            raise ZygoteUnavailable(str(e)) from e

    def _start(self, room: int, base_env: Mapping[str, str]) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            for s in (ours, theirs):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _MAX_MSG)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _MAX_MSG)
            # the last argument is room for the children's command lines (agent.zygote.set_cmdline)
            self._proc = subprocess.Popen(
                [sys.executable, "-S", "-m", ZYGOTE_MODULE, str(theirs.fileno()), " " * room],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # its stderr is the server's: a zygote that fails says why there
                pass_fds=(theirs.fileno(),),
                env=dict(base_env),
                start_new_session=True,  # a terminal's ^C is for the server; the zygote ends when it ends
                close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        zygote_pids.add(self._proc.pid)
        ours.settimeout(START_TIMEOUT)
        try:
            data = ours.recv(_MAX_MSG)
        except OSError as e:
            raise ZygoteUnavailable(f"no answer: {e!r}") from e
        reply = json.loads(data) if data else {"error": "it exited"}
        if "ready" not in reply:
            raise ZygoteUnavailable(str(reply.get("error")))
        log.info("agent zygote started (pid %d)", self._proc.pid)
        return ours

    def _abandon(self, argv: Sequence[str]) -> None:
        """A zygote that failed mid-request: a child it may have forked for it is killed (the provider starts
        that agent again as a program), then the zygote itself; its other children, the agents, live on."""
        proc = self._proc
        if proc is not None:
            log.warning(
                "the agent zygote (pid %d) failed a request; a new one starts on the next spawn", proc.pid
            )
            node = _node_of(argv)
            try:
                for child in psutil.Process(proc.pid).children():
                    try:
                        if node is not None and node in child.cmdline():
                            os.killpg(child.pid, signal.SIGKILL)
                    except (psutil.Error, OSError):
                        pass
            except psutil.Error:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # and children still in its process group (before setsid)
            except OSError:
                pass
        self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            if self._proc.poll() is None:
                try:
                    self._proc.wait(1)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            zygote_pids.discard(self._proc.pid)
            self._proc = None

    def close(self) -> None:
        """Stop the zygote (its end of the socket pair closes: it exits); the agents it started live on."""
        with self._lock:
            self._drop()


def _node_of(argv: Sequence[str]) -> str | None:
    args = list(argv)
    if "--node-id" in args and args.index("--node-id") + 1 < len(args):
        return args[args.index("--node-id") + 1]
    return None
