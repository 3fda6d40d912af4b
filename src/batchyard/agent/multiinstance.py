"""Multi-instance tasks on a node: the instances, their coordination command, and the launcher service.

An instance (work with ``mpi`` and an instance ref ``<job>/<task>~<i>#<n>``) downloads the common resource
files into the task directory (``AZ_BATCH_TASK_SHARED_DIR``), runs the coordination command and, when it
returns 0, reports ``coordinated`` and holds its node (its slot, and whatever the command left running) until
the server takes it back; then everything started in its sessions is killed. Any other end is reported as
``completed`` and fails the gang on the server.

How mpirun starts processes on the other nodes (decision 0161): every node with an instance listens on its
own address at the master port. ``batchyard-rsh HOST CMD…`` (on the task's ``PATH``; Open MPI finds it
through ``OMPI_MCA_plm_rsh_agent``) connects there, presents the task's launcher token and the command; the
node's agent runs ``/bin/sh -c CMD`` as the instance's user with the instance's environment, relays its
output and exit code, kills it when the connection drops, and ends it with the instance. The launcher is
a bash script (bash's ``/dev/tcp``), so it runs as any task user whatever interpreter the agent uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from batchyard.agent.layout import MPI_SESSIONS_FILE
from batchyard.agent.runner import (
    TASK_ENDED_BY_USER,
    USER_ERROR,
    FailureInfo,
    RunResult,
    RunSpec,
    TaskProcess,
)
from batchyard.agent.spawner import Spawner
from batchyard.agent.staging import NodeStaging
from batchyard.models import identity, multiinstance

log = logging.getLogger("batchyard.agent.mpi")

LAUNCHER = "batchyard-rsh"
BIN_DIR = ".batchyard-bin"
SESSIONS_FILE = MPI_SESSIONS_FILE
KILL_GRACE = 1.0

LAUNCHER_SOURCE = r"""#!/bin/bash
# batchyard-rsh [ssh options] [user@]HOST COMMAND...
# Runs COMMAND on node HOST of this multi-instance task, as this task's user, with that node's task
# environment (the rsh agent Open MPI's mpirun uses on batchyard nodes; see OMPI_MCA_plm_rsh_agent).
while [[ $# -gt 0 && $1 == -* ]]; do
  case $1 in -l|-p|-i|-o|-F|-E|-c|-m) shift 2 ;; *) shift ;; esac
done
host=${1#*@}
[[ $# -gt 0 ]] && shift
if [[ -z $host || $# -eq 0 ]]; then echo "usage: batchyard-rsh HOST COMMAND..." >&2; exit 255; fi
if [[ -z $BATCHYARD_RSH_TOKEN ]]; then echo "batchyard-rsh: not inside a multi-instance task" >&2; exit 255; fi
if ! exec 3<>"/dev/tcp/$host/${BATCHYARD_RSH_PORT:-6000}"; then
  echo "batchyard-rsh: cannot reach node $host" >&2; exit 255
fi
printf '%s\n%s\0' "$BATCHYARD_RSH_TOKEN" "$*" >&3
IFS= read -r -d '' out <&3; status=$?
printf '%s' "$out"
[[ $status -eq 0 ]] || exit 255
IFS= read -r code <&3
exit "${code:-255}"
"""


class AgentSide(Protocol):
    """What an instance needs from its agent."""

    files: NodeStaging
    used_slots: int
    finished: dict[str, float]

    def _prepare(self, work: dict[str, Any]) -> tuple[RunSpec, identity.TaskUser | None]: ...
    def _spawner_for(self, user: identity.TaskUser) -> Spawner | None: ...
    def _event(self, **ev: Any) -> None: ...
    async def _pump(self) -> None: ...


def is_instance(work: dict[str, Any]) -> bool:
    return multiinstance.parse_instance_ref(str(work.get("ref", ""))) is not None


def _iso(dt: datetime) -> str:
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0Z"


def install_launcher(root: Path, gid: int | None) -> Path:
    """Write ``batchyard-rsh`` into the node (readable and runnable by the node's users only)."""
    bin_dir = root / BIN_DIR
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / LAUNCHER
    tmp = bin_dir / (LAUNCHER + ".tmp")
    tmp.write_text(LAUNCHER_SOURCE)
    if gid is not None:
        os.chown(bin_dir, 0, gid)
        os.chown(tmp, 0, gid)
        os.chmod(bin_dir, 0o750)
        os.chmod(tmp, 0o750)
    else:
        os.chmod(bin_dir, 0o755)
        os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return path


def decorate(spec: RunSpec, work: dict[str, Any], root: Path) -> RunSpec:
    """The environment every process of a multi-instance task gets on this node."""
    mpi = work.get("mpi") or {}
    env = dict(spec.env)
    bin_dir = str(root / BIN_DIR)
    env["AZ_BATCH_TASK_SHARED_DIR"] = str(spec.task_dir)
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    env["BATCHYARD_RSH_TOKEN"] = str(mpi.get("token", ""))
    env["BATCHYARD_RSH_PORT"] = str(mpi.get("port", multiinstance.MASTER_PORT))
    # Open MPI: start remote daemons with batchyard-rsh; the nodes' addresses are all on the loopback
    # interface, which Open MPI leaves out by default.
    defaults = {
        "OMPI_MCA_plm_rsh_agent": LAUNCHER,  # by name: daemons on other nodes pass it on (tree spawn)
        "PRTE_MCA_plm_ssh_agent": LAUNCHER,
        "OMPI_MCA_btl_tcp_if_include": "lo",
        "OMPI_MCA_oob_tcp_if_include": "lo",
    }
    for k, v in defaults.items():
        env.setdefault(k, v)
    return replace(spec, env=env)


def _sessions_of(sids: set[int], uid: int | None) -> list[int]:
    """Processes in any of these sessions (and owned by ``uid`` when given)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            fields = stat[stat.rindex(")") + 2 :].split()
            sid = int(fields[3])
            if sid not in sids:
                continue
            if uid is not None and os.stat(f"/proc/{name}").st_uid != uid:
                continue
        except (OSError, ValueError, IndexError):
            continue
        out.append(int(name))
    return out


def kill_sessions(sids: set[int], uid: int | None, sig: signal.Signals) -> int:
    n = 0
    for pid in _sessions_of(sids, uid):
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
            n += 1
    return n


@dataclass
class Instance:
    ref: str
    work: dict[str, Any]
    spec: RunSpec
    spawner: Spawner | None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    proc: TaskProcess | None = None
    result: RunResult | None = None
    sessions: set[int] = field(default_factory=set)
    coordinated: bool = False
    ending: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None

    @property
    def token(self) -> str:
        return str((self.work.get("mpi") or {}).get("token", ""))


class Instances:
    """This node's instances and its launcher service."""

    def __init__(self, agent: AgentSide, root: Path, gid: int | None) -> None:
        self.agent = agent
        self.root = root
        self.gid = gid
        self.by_ref: dict[str, Instance] = {}
        self.server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None
        self._kill_leftovers()

    # --- bookkeeping ---------------------------------------------------------------------------------

    def refs(self) -> list[str]:
        return list(self.by_ref)

    def _record(self) -> None:
        """Sessions to kill if this agent dies: a new agent of the node kills them first thing."""
        data = {r: [i.spec.uid, sorted(i.sessions)] for r, i in self.by_ref.items() if i.sessions}
        path = self.root / SESSIONS_FILE
        with contextlib.suppress(OSError):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, path)

    def _kill_leftovers(self) -> None:
        path = self.root / SESSIONS_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        for uid, sids in data.values():
            kill_sessions(set(sids), uid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            path.unlink()

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self, work: dict[str, Any]) -> None:
        ref = str(work["ref"])
        if ref in self.by_ref:
            return
        spec, user = self.agent._prepare(work)
        spawner = self.agent._spawner_for(user) if user is not None else None
        inst = Instance(ref, work, spec, spawner)
        self.by_ref[ref] = inst
        self.agent.used_slots += 1
        inst.runner = asyncio.ensure_future(self._run(inst, user))

    async def _run(self, inst: Instance, user: identity.TaskUser | None) -> None:
        agent = self.agent
        agent._event(type="started", ref=inst.ref, time=_iso(inst.started_at))
        try:
            await self._listen(inst)
            failure = None
            if inst.work.get("resourceFiles"):
                # common resource files go to the task directory, one above the working directory
                failure = await agent.files.download(
                    replace(inst.spec, working_dir=inst.spec.task_dir), inst.work
                )
            if user is None:
                inst.proc = TaskProcess.failed(inst.spec, _user_missing(inst.work))
            elif failure is not None:
                inst.proc = TaskProcess.failed(inst.spec, failure)
            else:
                inst.proc = await TaskProcess.start(inst.spec, inst.spawner)
                if inst.proc.pid is not None:
                    inst.sessions.add(inst.proc.pid)
                    self._record()
            inst.result = await inst.proc.wait()
            ok = inst.result.failure is None and inst.result.exit_code == 0
            if ok and not inst.ending:
                inst.coordinated = True
                agent._event(type="coordinated", ref=inst.ref, exitCode=0)
                await inst.ended.wait()
        except asyncio.CancelledError:
            pass
        finally:
            await self._finish(inst)

    async def _finish(self, inst: Instance) -> None:
        """End everything the instance started, then report how it ended."""
        await self._end_sessions(inst)
        self.by_ref.pop(inst.ref, None)
        self.agent.finished[inst.ref] = time.monotonic()  # never started again from a stale reply
        self._record()
        self.agent.used_slots -= 1
        res = inst.result
        ev: dict[str, Any] = {
            "type": "completed",
            "ref": inst.ref,
            "startTime": _iso(inst.started_at),
            "endTime": _iso(datetime.now(UTC)),
        }
        if inst.coordinated:
            ev["exitCode"] = 0
        else:
            failure = res.failure if res is not None else TASK_ENDED_BY_USER
            if inst.ending and res is not None and res.killed:
                failure = TASK_ENDED_BY_USER
            ev["exitCode"] = res.exit_code if res is not None else None
            if failure is not None:
                ev["failureInfo"] = {
                    "category": failure.category,
                    "code": failure.code,
                    "message": failure.message,
                }
        self.agent._event(**ev)
        if not self.by_ref:
            self._close_server()
        await self.agent._pump()

    async def kill(self, ref: str) -> None:
        inst = self.by_ref.get(ref)
        if inst is None or inst.ending:
            return
        inst.ending = True
        if inst.proc is not None and inst.result is None:
            await inst.proc.kill("the task's gang ended")
        inst.ended.set()
        if inst.proc is None and inst.runner is not None:
            inst.runner.cancel()

    async def shutdown(self) -> None:
        for ref in list(self.by_ref):
            await self.kill(ref)
        for inst in list(self.by_ref.values()):
            if inst.runner is not None:
                with contextlib.suppress(Exception):
                    await inst.runner

    async def _end_sessions(self, inst: Instance) -> None:
        if not inst.sessions:
            return
        uid = inst.spec.uid
        if kill_sessions(inst.sessions, uid, signal.SIGTERM):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + KILL_GRACE
            while loop.time() < deadline and _sessions_of(inst.sessions, uid):
                await asyncio.sleep(0.05)
            for _ in range(20):
                if not kill_sessions(inst.sessions, uid, signal.SIGKILL):
                    break
                await asyncio.sleep(0.05)

    # --- the launcher service ------------------------------------------------------------------------

    async def _listen(self, inst: Instance) -> None:
        mpi = inst.work.get("mpi") or {}
        want = (str(mpi.get("address", "127.0.0.1")), int(mpi.get("port", multiinstance.MASTER_PORT)))
        if self.server is not None and self.address == want:
            return
        self._close_server()
        install_launcher(self.root, self.gid)
        try:
            self.server = await asyncio.start_server(self._serve, want[0], want[1], reuse_address=True)
            self.address = want
        except OSError as e:
            log.error("cannot listen on %s:%s for batchyard-rsh: %s", want[0], want[1], e)

    def _close_server(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            self.address = None

    def _by_token(self, token: str) -> Instance | None:
        for inst in self.by_ref.values():
            if token and hmac.compare_digest(inst.token, token) and not inst.ending:
                return inst
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            token = (await asyncio.wait_for(reader.readline(), 10)).decode(errors="replace").strip()
            cmd = (await asyncio.wait_for(reader.readuntil(b"\0"), 10))[:-1].decode(errors="replace")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        inst = self._by_token(token)
        if inst is None:
            writer.write(b"batchyard-rsh: no such multi-instance task on this node\n\x00255\n")
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            return
        code = await self._run_remote(inst, cmd, reader, writer)
        writer.write(b"\x00" + f"{code}\n".encode())
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    async def _run_remote(
        self, inst: Instance, cmd: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> int:
        """``/bin/sh -c cmd`` as the instance's user; its output goes to the connection."""
        loop = asyncio.get_running_loop()
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        spec = inst.spec
        argv = ["/bin/sh", "-c", cmd]
        waiter: asyncio.Future[int]
        try:
            if inst.spawner is not None and spec.uid not in (None, 0):
                assert spec.uid is not None
                pid = await inst.spawner.launch(
                    argv,
                    spec.env,
                    str(spec.working_dir),
                    wfd,
                    wfd,
                    spec.uid,
                    spec.gid if spec.gid is not None else spec.uid,
                    spec.groups,
                    0o022,
                )
                exit_fut = inst.spawner.exit_of(pid)
                waiter = loop.create_future()

                def _done(f: asyncio.Future[Any]) -> None:
                    if not waiter.done():
                        rc = f.result().returncode if not f.cancelled() and f.exception() is None else -9
                        waiter.set_result(128 - rc if rc < 0 else rc)

                exit_fut.add_done_callback(_done)
            else:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=wfd,
                    stderr=wfd,
                    cwd=spec.working_dir,
                    env=dict(spec.env),
                    start_new_session=True,
                    close_fds=True,
                )
                pid = popen.pid

                async def _wait() -> int:
                    rc = await loop.run_in_executor(None, popen.wait)
                    return 128 - rc if rc < 0 else rc

                waiter = asyncio.ensure_future(_wait())
        except Exception as e:  # launch failure: like a shell that could not start the command
            os.close(wfd)
            os.close(rfd)
            writer.write(f"batchyard-rsh: cannot start the command: {e}\n".encode())
            return 127
        os.close(wfd)
        inst.sessions.add(pid)
        self._record()
        os.set_blocking(rfd, False)

        def _relay() -> None:
            try:
                data = os.read(rfd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(rfd)
                return
            writer.write(data.replace(b"\x00", b""))

        loop.add_reader(rfd, _relay)
        hangup = asyncio.ensure_future(reader.read())
        try:
            pending: set[asyncio.Future[Any]] = {waiter, hangup}
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():  # the launcher went away: end the command, as sshd does
                kill_sessions({pid}, spec.uid, signal.SIGKILL)
            code = await waiter
        finally:
            hangup.cancel()
            _relay()
            loop.remove_reader(rfd)
            os.close(rfd)
        return code


def _user_missing(work: dict[str, Any]) -> FailureInfo:
    name = str((work.get("userIdentity") or {}).get("username"))
    return FailureInfo(
        USER_ERROR,
        "UserIdentityNotFound",
        f"The task's userIdentity names user account '{name}', which the pool does not have.",
    )
