"""The node's start task: run once per agent start (join, reboot, reimage, respawn), retried here.

The agent asks the server for its boot's start task on its first syncs (`needStartTask`); the answer is the
pool's start task as it was when this boot was first seen, or none. It runs in ``startup`` (working directory
``startup/wd``, `stdout.txt`/`stderr.txt` in ``startup``) as its `userIdentity` says, with the start task's
environment (no `AZ_BATCH_JOB_ID`/`AZ_BATCH_TASK_ID`), after its resource files are downloaded into the working
directory. A non-zero exit is retried up to `maxTaskRetryCount` times (-1: without end); a failure before the
command runs (a resource file, an unknown user account, a missing program) is final at once. Each attempt's
start and the final end are reported as events; the server derives the node's state from them.

The running start task's pid is kept in ``<root>/.agent-starttask``: an agent killed during its start task
leaves the process behind (tasks have their own sessions), and the next agent of the node ends it before it
starts the start task again (decision 0110).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchyard.agent.layout import NodeLayout, TaskEnvInputs
from batchyard.agent.runner import USER_ERROR, FailureInfo, RunResult, RunSpec, TaskProcess
from batchyard.agent.spawner import Spawner
from batchyard.agent.staging import NodeStaging
from batchyard.agent.usage import Gone, create_time
from batchyard.models import identity

log = logging.getLogger("batchyard.agent")

STARTED = "startTaskStarted"
COMPLETED = "startTaskCompleted"
PID_FILE = ".agent-starttask"


def user_not_found(name: str) -> FailureInfo:
    return FailureInfo(
        USER_ERROR,
        "UserIdentityNotFound",
        f"The start task's userIdentity names user account '{name}', which the pool does not have.",
    )


def iso(dt: datetime) -> str:
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0Z"


@dataclass
class NodeInfo:
    """What the start task's environment says about the node."""

    account: str
    account_url: str
    pool_id: str
    node_id: str
    dedicated: bool
    user_accounts: tuple[dict[str, Any], ...] = ()


class StartTaskRunner:
    """The start task of one agent process (one boot)."""

    def __init__(
        self,
        boot: str,
        node: NodeInfo,
        layout: NodeLayout,
        files: NodeStaging,
        base: int | None,
        spawner_for: Callable[[identity.TaskUser], Spawner | None],
        emit: Callable[..., None],
    ) -> None:
        self.boot = boot
        self.ref = f"starttask:{boot}"
        self.node = node
        self.layout = layout
        self.files = files
        self.base = base
        self.spawner_for = spawner_for
        self.emit = emit
        # the pool's application package variables (agent.apppkg), set once the packages are installed
        self.pool_env: dict[str, str] = {}
        self.needed = True  # until the server has answered with this boot's start task (or none)
        self.proc: TaskProcess | None = None
        self.task: asyncio.Future[None] | None = None
        self.stopping = False
        self.serial = 0
        self.pid_file = Path(layout.root) / PID_FILE
        end_leftover(self.pid_file)

    def receive(self, answer: dict[str, Any]) -> None:
        """Take the server's answer (a sync reply) if it carries this boot's start task decision."""
        if not self.needed or "startTask" not in answer:
            return
        self.needed = False
        work = answer["startTask"]
        if isinstance(work, dict):
            self.task = asyncio.ensure_future(self._run(work))

    def _prepare(self, work: dict[str, Any]) -> tuple[RunSpec, identity.TaskUser | None]:
        self.serial += 1
        try:
            user: identity.TaskUser | None = identity.resolve(
                work.get("userIdentity"), self.node.user_accounts, self.base, self.serial
            )
        except identity.UnknownUser:
            user = None
        env = self.layout.task_env(
            TaskEnvInputs(
                account_name=self.node.account,
                account_url=self.node.account_url,
                pool_id=self.node.pool_id,
                node_id=self.node.node_id,
                node_is_dedicated=self.node.dedicated,
                job_id=None,
                task_id=None,
                environment=tuple((str(k), str(v)) for k, v in work.get("environment") or []),
                task_user=user.name if user is not None else None,
                task_user_identity=user.label if user is not None else "PoolNonAdmin",
            )
        )
        env.update(self.pool_env)
        if user is not None and user.uid is not None:
            env["USER"] = env["LOGNAME"] = user.name
        spec = RunSpec(
            command_line=str(work["commandLine"]),
            env=env,
            task_dir=self.layout.startup_dir,
            working_dir=self.layout.startup_working_dir,
            max_wall_clock=None,
            uid=user.uid if user is not None else None,
            gid=user.gid if user is not None else None,
            groups=user.extra_groups if user is not None else (),
            dir_gid=self.base,
        )
        return spec, user

    async def _attempt(self, work: dict[str, Any]) -> tuple[RunResult, bool]:
        """One attempt; the result and whether a failure may be retried (only a non-zero exit)."""
        spec, user = self._prepare(work)
        if user is None:
            name = str((work.get("userIdentity") or {}).get("username"))
            return await TaskProcess.failed(spec, user_not_found(name)).wait(), False
        failure = await self.files.download(spec, work)  # creates the directories even without files
        if failure is not None:
            return await TaskProcess.failed(spec, failure).wait(), False
        proc = await TaskProcess.start(spec, self.spawner_for(user))
        self.proc = proc
        self._remember(proc)
        try:
            result = await proc.wait()
        finally:
            self.proc = None
            with contextlib.suppress(OSError):
                self.pid_file.unlink()
        return result, result.exit_code is not None

    async def _run(self, work: dict[str, Any]) -> None:
        limit = int(work.get("maxTaskRetryCount", 0))
        retries = 0
        while not self.stopping:
            began = iso(datetime.now(UTC))  # the attempt starts with its downloads, as a task's does
            self.emit(type=STARTED, ref=self.ref, time=began, retryCount=retries)
            try:
                result, retriable = await self._attempt(work)
            except Exception:  # never leave the node waiting on a start task that cannot run
                log.exception("the start task could not be run")
                now = datetime.now(UTC)
                failure = FailureInfo(USER_ERROR, "CommandLaunchFailed", "Failed to launch the start task.")
                result, retriable = RunResult(None, now, now, failure, False, False), False
            if self.stopping:
                return  # the node is going away: nothing to report
            ok = result.failure is None and result.exit_code == 0
            if not ok and retriable and (limit == -1 or retries < limit):
                retries += 1
                continue
            ev: dict[str, Any] = {
                "type": COMPLETED,
                "ref": self.ref,
                "exitCode": result.exit_code,
                "startTime": began,
                "endTime": iso(result.ended_at),
                "retryCount": retries,
            }
            if result.failure is not None:
                f = result.failure
                ev["failureInfo"] = {"category": f.category, "code": f.code, "message": f.message}
                if f.details:
                    ev["failureInfo"]["details"] = [{"name": n, "value": v} for n, v in f.details]
            self.emit(**ev)
            return

    def _remember(self, proc: TaskProcess) -> None:
        """Note the running start task's pid and start time, for the next agent if this one is killed."""
        if proc.pid is None:
            return
        try:  # at once: an agent killed now must leave the record behind (no slow import before it)
            created = create_time(proc.pid)
            tmp = self.pid_file.with_name(PID_FILE + ".tmp")
            tmp.write_text(f"{proc.pid} {created!r}\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.pid_file)
        except (OSError, Gone, IndexError, ValueError):
            pass

    async def stop(self) -> None:
        """The agent stops: end the start task (its process group) and forget it."""
        self.stopping = True
        proc = self.proc
        if proc is not None:
            with contextlib.suppress(Exception):
                await proc.kill("the node is stopping")
        if self.task is not None:
            self.task.cancel()
        with contextlib.suppress(OSError):
            self.pid_file.unlink()


def end_leftover(pid_file: Path) -> None:
    """End the process group of a start task an earlier (killed) agent of this node left running."""
    try:
        text = pid_file.read_text()
        pid_text, created_text = text.split()
        pid, created = int(pid_text), float(created_text)
    except (OSError, ValueError):
        return
    try:
        if abs(create_time(pid) - created) < 0.01:
            os.killpg(pid, signal.SIGKILL)  # the task runs in its own session: its group is its pid
            log.info("ended the start task (pid %d) a previous agent of this node left running", pid)
    except (Gone, IndexError, ValueError, ProcessLookupError, PermissionError):
        pass
    with contextlib.suppress(OSError):
        pid_file.unlink()
