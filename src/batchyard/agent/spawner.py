"""Start task processes as other OS users without forking the agent (decision 0010).

CPython starts a child with ``vfork`` unless it must change the user: then it forks the whole agent (about
40 MB), which costs several milliseconds per task (measured: 1.4 → 5.6 ms per ``/bin/true``). So a privileged
agent keeps small helper processes (``python -I -S``, a few MB), one per task identity in use, each running
as that user (it drops to it once started), so that it starts tasks with ``vfork`` and no user switch; task-scoped users (a new uid per
task) share one root helper that switches per launch. The agent sends each launch over a socket pair, with
the task's stdout/stderr descriptors; the helper starts the task (its own child), answers with the pid or the
launch error, reaps it and reports the exit status and resource usage. A helper that already runs as the
task user starts the task with ``posix_spawn`` (decision 0198: a third of Popen's own CPU per launch; the one
difference, glibc's two internal signals left ignored, no glibc program can see). A helper running as the task user is
in that user's trust domain already: it holds nothing the user's tasks cannot see. The agent still signals the task's process group itself (it is root). A group that was being
ended is cleared with SIGKILL by the helper before it reaps the leader, so the group id cannot be reused.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_MAX_MSG = 1 << 20

#: The helper: stdlib only, no site, so it stays small. ``argv[1]`` is its end of the socket pair.
HELPER_SOURCE = r"""
import array, errno, json, os, resource, selectors, signal, socket, subprocess, sys  # all imports before dropping to the user
sock = socket.socket(fileno=int(sys.argv[1]))
os.set_inheritable(sock.fileno(), False)  # passed to us inheritable: never to the tasks
if len(sys.argv) > 2:  # become the task user for good, after Python has loaded everything it needs
    uid, gid, *groups = (int(v) for v in sys.argv[2:])
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)
rd, wr = os.pipe()
os.set_blocking(wr, False)
signal.set_wakeup_fd(wr)
signal.signal(signal.SIGCHLD, lambda *a: None)
# A SIGTERM to the agent's process group must not end the helper before the agent has ended its tasks through
# it (a handler, not SIG_IGN: handlers are reset in the tasks at exec, an ignored signal would stay ignored).
signal.signal(signal.SIGTERM, lambda *a: None)
signal.signal(signal.SIGINT, lambda *a: None)
doomed = set()
procs = {}
env = {}
null = os.open(os.devnull, os.O_RDONLY)
def send(msg):
    sock.send(json.dumps(msg).encode())
def spawn(req, fds):
    # As Popen(cwd=, env=, umask=, start_new_session=True, close_fds=True) does, with posix_spawn (vfork and
    # exec, no Python in between): the program is searched in the task's PATH as Popen does, its errors carry
    # the program's name, and the signals Python ignores are reset for the task (Popen's restore_signals).
    argv = req["argv"]
    env = req["env"]
    prog = argv[0]
    try:
        os.fchdir(fds[2])  # everything else the helper opens is close-on-exec
    except OSError as exc:
        exc.filename = "/proc/self/fd/%d" % fds[2]
        raise
    os.umask(req["umask"])
    actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, fds[0], 1), (os.POSIX_SPAWN_DUP2, fds[1], 2)]
    paths = [prog] if os.path.dirname(prog) else [os.path.join(d, prog) for d in os.get_exec_path(env)]
    first = last = None
    for path in paths:
        try:
            return os.posix_spawn(path, argv, env, file_actions=actions, setsid=True, setsigmask=(),
                                  setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        except OSError as exc:
            last = exc.errno
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR) and first is None:
                first = exc.errno
    code = first or last or errno.ENOENT
    raise OSError(code, os.strerror(code), prog)
def reap():
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None:
            return
        pid = info.si_pid
        if pid in doomed:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            doomed.discard(pid)
        _, status, ru = os.wait4(pid, 0)
        p = procs.pop(pid, None)
        if p is not None:
            p.returncode = os.waitstatus_to_exitcode(status)
        send({"exit": pid, "code": os.waitstatus_to_exitcode(status), "utime": ru.ru_utime,
              "stime": ru.ru_stime, "inblock": ru.ru_inblock, "oublock": ru.ru_oublock})
sel = selectors.DefaultSelector()
sel.register(sock, selectors.EVENT_READ)
sel.register(rd, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj == rd:
            os.read(rd, 4096)
            reap()
            continue
        fds = array.array("i")
        msg, anc, _, _ = sock.recvmsg(1 << 20, socket.CMSG_LEN(3 * fds.itemsize), socket.MSG_CMSG_CLOEXEC)
        if not msg:  # the agent is gone: its node is gone, so are the tasks it started here
            for pid in procs:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            raise SystemExit(0)
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        req = json.loads(msg)
        if "doom" in req:
            doomed.add(req["doom"])
            continue
        if "env" in req:  # the environment whole, or what changed since the previous launch
            env = req["env"]
        else:
            env.update(req["envset"])
            for k in req["envdrop"]:
                env.pop(k, None)
        req["env"] = env
        try:
            # cwd through the agent's descriptor: works where the user cannot search the path's parents
            if "uid" in req:  # a root helper switches user per task (CPython then forks instead of vforking)
                p = subprocess.Popen(req["argv"], stdin=null, stdout=fds[0], stderr=fds[1],
                                     cwd="/proc/self/fd/%d" % fds[2],
                                     env=req["env"], close_fds=True, start_new_session=True, umask=req["umask"],
                                     user=req["uid"], group=req["gid"], extra_groups=req["groups"])
                pid = p.pid
            else:  # already the task's user: posix_spawn, a fraction of Popen's own CPU per launch
                p = None
                pid = spawn(req, fds)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            send({"id": req["id"], "error": type(exc).__name__, "errno": getattr(exc, "errno", None),
                  "filename": getattr(exc, "filename", None)})
        else:
            procs[pid] = p
            send({"id": req["id"], "pid": pid})
        finally:
            for fd in fds:
                os.close(fd)
        reap()
"""


@dataclass(frozen=True)
class Exit:
    """How a helper's child ended: exit code (negative = signal, as Popen) and resource usage."""

    returncode: int
    user_cpu: float
    kernel_cpu: float
    read_ops: int
    write_ops: int


class LaunchError(Exception):
    """The helper could not start the program; mirrors the OSError Popen raised there."""

    def __init__(self, kind: str, err: int | None, filename: str | None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.errno = err
        self.filename = filename

    def as_os_error(self) -> BaseException:
        cls: type[BaseException] = {
            "FileNotFoundError": FileNotFoundError,
            "NotADirectoryError": NotADirectoryError,
            "PermissionError": PermissionError,
        }.get(self.kind, OSError)
        if issubclass(cls, OSError):
            return cls(self.errno or 0, self.kind, self.filename)
        return cls(self.kind)


class Spawner:
    """The agent's side of a helper. Create it inside the running event loop.

    ``Spawner(uid, gid, groups)`` runs the helper as that user, so its launches need no user switch and use
    ``vfork``; ``Spawner()`` runs it as root and switches per launch (for task-scoped users, one per task).
    """

    def __init__(self, uid: int | None = None, gid: int | None = None, groups: Sequence[int] = ()) -> None:
        self.uid = uid
        # The helper starts as root (Python may live where the task user cannot read) and drops to the user.
        ident = [] if uid is None else [str(uid), str(uid if gid is None else gid), *(str(g) for g in groups)]
        self._loop = asyncio.get_running_loop()
        # SEQPACKET keeps each request (and its descriptors) one record.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _MAX_MSG)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _MAX_MSG)
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", HELPER_SOURCE, str(theirs.fileno()), *ident],
            stdin=subprocess.DEVNULL,
            pass_fds=(theirs.fileno(),),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            cwd="/",
        )
        theirs.close()
        self._sock = ours
        self._serial = 0
        self._env: dict[str, str] = {}  # the environment of the helper's last launch
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[Exit]] = {}
        self._early: dict[int, Exit] = {}
        ours.setblocking(False)
        self._loop.add_reader(ours.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        while True:
            try:
                data = self._sock.recv(_MAX_MSG)
            except BlockingIOError:
                return
            if not data:
                self._loop.remove_reader(self._sock.fileno())
                err = RuntimeError("the task launcher helper exited")
                futs: list[asyncio.Future[Any]] = [*self._pending.values(), *self._exits.values()]
                for fut in futs:
                    if not fut.done():
                        fut.set_exception(err)
                return
            self._handle(json.loads(data))

    def _handle(self, msg: dict[str, Any]) -> None:
        if "exit" in msg:
            ex = Exit(int(msg["code"]), msg["utime"], msg["stime"], msg["inblock"], msg["oublock"])
            fut = self._exits.pop(int(msg["exit"]), None)
            if fut is not None and not fut.done():
                fut.set_result(ex)
            else:
                self._early[int(msg["exit"])] = ex
            return
        pending = self._pending.pop(int(msg["id"]), None)
        if pending is None or pending.done():
            return
        if "pid" in msg:
            pending.set_result(int(msg["pid"]))
        else:
            pending.set_exception(LaunchError(msg["error"], msg.get("errno"), msg.get("filename")))

    async def launch(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str,
        out_fd: int,
        err_fd: int,
        uid: int,
        gid: int,
        groups: Sequence[int],
        umask: int,
    ) -> int:
        """Start ``argv`` as ``uid``/``gid`` in its own session; the pid, or `LaunchError`."""
        self._serial += 1
        rid = self._serial
        fut: asyncio.Future[int] = self._loop.create_future()
        self._pending[rid] = fut
        req: dict[str, Any] = {"id": rid, "argv": list(argv), "cwd": cwd, "umask": umask}
        # Tasks of a job differ in a few variables only: the helper keeps the last environment and gets what changed.
        last = self._env
        changed = {k: v for k, v in env.items() if last.get(k) != v}
        if len(changed) > len(env) // 2:
            req["env"] = dict(env)
        else:
            req["envset"] = changed
            req["envdrop"] = [k for k in last if k not in env]
        if self.uid is None:
            req.update(uid=uid, gid=gid, groups=list(groups))
        wd_fd = os.open(cwd, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self._send(req, (out_fd, err_fd, wd_fd))
        finally:
            os.close(wd_fd)
        self._env = dict(env)  # what the helper now holds
        return await fut

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def doom(self, pid: int) -> None:
        """The task's group is being ended: SIGKILL what is left of it before its leader is reaped."""
        self._send({"doom": pid}, ())

    def exit_of(self, pid: int) -> asyncio.Future[Exit]:
        fut: asyncio.Future[Exit] = self._loop.create_future()
        early = self._early.pop(pid, None)
        if early is not None:
            fut.set_result(early)
        else:
            self._exits[pid] = fut
        return fut

    def _send(self, req: dict[str, Any], fds: Sequence[int]) -> None:
        payload = json.dumps(req).encode()
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
        try:  # the 1 MiB send buffer nearly always has room: no switch to blocking (two ioctls) per launch
            self._sock.sendmsg([payload], anc)
            return
        except BlockingIOError:
            pass
        self._sock.setblocking(True)
        try:
            self._sock.sendmsg([payload], anc)
        finally:
            self._sock.setblocking(False)

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
