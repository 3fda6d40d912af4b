"""The agent zygote: one process that has imported what an idle agent imports, and forks one agent per request.

An agent started as a new interpreter spends about 0.1 s of CPU on start-up and imports before it does anything;
a pool of a thousand local nodes then waits on that CPU (decision 0200). The local provider starts one zygote per
server instead (``python -S -m batchyard.agent.zygote FD PADDING``, with the agents' minimal environment and no
node's token) and asks it over a socket pair for each agent. A request carries the agent's arguments, its
environment and, as a passed descriptor, its log file; the zygote forks, and the child becomes what a fresh
``python -S -m batchyard.agent.main ARGS`` process would be before it runs `batchyard.agent.main.main`:

- its own session (``setsid``), stdin ``/dev/null``, stdout and stderr the log, no other inherited descriptor;
- the request's environment in place of the zygote's, the signal dispositions of a new interpreter;
- its command line (``/proc/PID/cmdline``, what ``ps`` shows) rewritten to the agent's own, in the room the
  ``PADDING`` argument keeps at the end of the zygote's: the local provider, the next server adopting it and
  ``batchyard stop-nodes`` recognise an agent by its command line, whichever way it was started.

The zygote answers with the child's pid once the child is in its session (or with the error). It ignores
``SIGCHLD``, so its children are reaped by the kernel and no zombie piles up; it never signals them, so agents
outlive it as they outlive the server; and it exits when the server's end of the socket pair closes.
"""

from __future__ import annotations

import array
import gc
import json
import os
import select
import signal
import socket
import sys
import traceback
from typing import Any

from batchyard.agent import lean

#: The longest request (arguments and environment); the server refuses to send more.
MAX_REQUEST = 1 << 20
#: Seconds a child may take to reach its session and command line before the zygote gives up on it.
CHILD_SETUP_TIMEOUT = 10.0


def preload() -> None:
    """Import what an idle agent imports (``tests/e2e/test_agent_zygote.py`` checks it loads no feature module)."""
    lean.hide_tls()  # as agent/main.py does when run as a program: asyncio without ssl
    import argparse  # noqa: F401
    import asyncio  # noqa: F401
    import concurrent.futures.thread  # noqa: F401 - asyncio's default executor (getaddrinfo), on the first connect
    import logging  # noqa: F401

    import h11  # noqa: F401

    import batchyard.agent.main  # noqa: F401
    import batchyard.agent.node  # noqa: F401


def arg_area() -> tuple[int, int]:
    """Where this process's command line lives in its memory (``/proc/self/stat`` fields 48 and 49)."""
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[45]), int(fields[46])


def set_cmdline(argv: list[str], area: tuple[int, int]) -> None:
    """Write ``argv`` over this process's command line, as ``setproctitle`` does: NUL-separated, the room
    left blank-padded at the end of the last argument so the kernel still reads the area as arguments."""
    start, end = area
    text = b"\0".join(os.fsencode(a) for a in argv)
    room = end - start - 1
    if len(text) > room:
        raise ValueError(f"the agent's command line needs {len(text)} bytes, the zygote keeps {room}")
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        mem.write(text + b" " * (room - len(text)) + b"\0")


def _receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    fds = array.array("i")
    msg, anc, _, _ = sock.recvmsg(MAX_REQUEST, socket.CMSG_LEN(4 * fds.itemsize))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if not msg:
        return None
    return json.loads(msg), list(fds)


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    sock.send(json.dumps(msg).encode())


def _error(exc: BaseException) -> dict[str, Any]:
    return {"error": f"{type(exc).__name__}: {exc}", "errno": getattr(exc, "errno", None)}


def serve(sock: socket.socket, area: tuple[int, int]) -> tuple[dict[str, Any], int, int] | None:
    """Answer requests until the server goes away (None). In a child: returns its request, its log descriptor
    and the descriptor to report its set-up on, with everything the zygote held closed."""
    _send(sock, {"ready": os.getpid()})
    while True:
        got = _receive(sock)
        if got is None:
            return None
        req, fds = got
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            _send(sock, {"error": "a request carries exactly one descriptor (the agent's log)"})
            continue
        rd, wr = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as e:
            os.close(rd)
            os.close(wr)
            os.close(fds[0])
            _send(sock, _error(e))
            continue
        if pid == 0:
            os.close(rd)
            sock.close()
            return req, fds[0], wr
        os.close(wr)
        os.close(fds[0])
        _send(sock, _await_child(pid, rd))


def _await_child(pid: int, rd: int) -> dict[str, Any]:
    """The child's pid once it reported its set-up done, or why it failed (it is gone then)."""
    try:
        ready, _, _ = select.select([rd], [], [], CHILD_SETUP_TIMEOUT)
        note = os.read(rd, 4096) if ready else b""
    finally:
        os.close(rd)
    if note == b"ok":
        return {"pid": pid}
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return {"error": note.decode(errors="replace") or "the agent did not start in time"}


def become_agent(req: dict[str, Any], log_fd: int, report: int, area: tuple[int, int]) -> None:
    """In the forked child: turn into the fresh agent process the request describes (see the module doc)."""
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        argv = [str(a) for a in req["argv"]]
        set_cmdline([sys.executable, "-S", "-m", "batchyard.agent.main", *argv], area)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in req["env"].items()})
        main_file = sys.modules["batchyard.agent.main"].__file__ or "batchyard/agent/main.py"
        sys.argv = [main_file, *argv]
        sys.orig_argv = [sys.executable, "-S", "-m", "batchyard.agent.main", *argv]
        if "random" in sys.modules:  # also done by random's own fork hook; nothing of the agent's uses it
            sys.modules["random"].seed()
    except BaseException as e:
        os.write(report, f"{type(e).__name__}: {e}".encode())
        os._exit(127)
    os.write(report, b"ok")
    os.closerange(3, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 65536)
    req.clear()  # the request's environment (the node's token) is the agent's os.environ now, and only there


def run_agent(argv: list[str]) -> int:
    """`batchyard.agent.main.main`, ending as the interpreter would end it: its exit status, a traceback on
    stderr for an uncaught exception, the ``atexit`` handlers (logging's flush) and the standard streams flushed."""
    from batchyard.agent import main

    code = 0
    try:
        main.main(argv)
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    return code


def zygote(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    try:
        area = arg_area()
        set_cmdline(
            sys.orig_argv, area
        )  # that a command line can be rewritten here at all (children need it)
        preload()
    except Exception as e:  # the server starts its agents as programs then
        _send(sock, _error(e))
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    gc.freeze()  # what is loaded now stays shared with the children: their collections do not touch it
    child = serve(sock, area)
    if child is None:
        return
    req, log_fd, report = child
    argv = [str(a) for a in req["argv"]]
    become_agent(req, log_fd, report, area)
    os._exit(run_agent(argv))


if __name__ == "__main__":
    zygote(int(sys.argv[1]))
