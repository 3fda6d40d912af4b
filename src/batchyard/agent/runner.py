"""Run one task command line the way the Linux Batch node agent does, and report how it ended.

* No shell: the docs say command lines "don't run under a shell", so users write ``/bin/sh -c '…'``. The line
  is split with `shlex.split` (POSIX rules: quotes group and are removed, backslash escapes, no ``$VAR``
  expansion, globbing or redirection). That is the split a Linux user expects from the docs' own examples
  such as ``/bin/sh -c "printenv MY_VAR"``; the program is looked up on the task's ``PATH`` and, when
  relative, against the working directory.
* The child gets stdin from ``/dev/null``, stdout/stderr in ``<task dir>/stdout.txt`` and ``stderr.txt``
  (truncated per attempt, created even when empty), the task working directory as cwd (created if missing),
  only the environment it is given, no inherited descriptors, and its own session, so its process group is
  the whole task tree and can be signalled at once.
* Waiting uses a pidfd registered with the event loop (``loop.add_reader``): no thread and no polling per
  task, and it works on the stdlib loop and uvloop alike. `asyncio.create_subprocess_exec` was measured slower
  for many short tasks (2 CPUs, 3000 × ``/bin/true``, 64 at a time: ~1,000/s on the stdlib loop, where Python
  3.11 waits with one thread per child, and ~300/s on uvloop, against ~2,000/s here with half the CPU).
  Without ``os.pidfd_open`` (Linux < 5.3) the wait falls back to a worker thread.

Outcomes and what they report (``failureInfo`` codes and messages are the service's task error table):

* exit 0: no failure;
* non-zero exit: ``usererror``/``FailureExitCode`` "The task exited with an exit code representing a failure",
  with the details the service attaches (``Message``, ``AdditionalErrorCode``);
* program missing: ``usererror``/``CommandProgramNotFound`` "The specified command program is not found.",
  no exit code (the service leaves ``exitCode`` null when a task fails before running);
* program present but not startable (not executable, bad format, unparsable line): ``usererror``/
  ``CommandLaunchFailed`` "Failed to launch the specified command line.";
* task directory not creatable: ``servererror``/``DiskFull`` when the disk is full, else
  ``servererror``/``ResourceDirectoryCreateFailed``;
* ``max_wall_clock`` expired: the group gets SIGTERM, then SIGKILL after ``kill_grace``; ``TaskEnded`` with
  category ``servererror`` as "Error handling and detection in Azure Batch" (Constraint errors) documents
  for this case, and this project's message naming the time limit;
* `TaskProcess.kill`: same signals; ``usererror``/``TaskEnded`` "Task was ended by user request.".

Exit codes of processes ended by a signal follow the POSIX shell convention ``128 + signal number`` (143 for
SIGTERM, 137 for SIGKILL): the service only promises "an operating system-defined exit code" for tasks it
terminates (Windows nodes show ``0xC000013A``), and 128+n is what Linux users see from their shells. A task
that handles SIGTERM and exits by itself keeps its own exit code.

Processes left running by a task that ended on its own (``cmd &``) are not killed: start tasks commonly
launch daemons that way. After a timeout or a kill, everything still in the group gets SIGKILL before the
leader is reaped, so the group id cannot have been reused.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from batchyard.agent.spawner import Exit, LaunchError, Spawner

if TYPE_CHECKING:
    from batchyard.agent.containers import ContainerLaunch

USER_ERROR = "usererror"
SERVER_ERROR = "servererror"

#: Seconds between SIGTERM and SIGKILL when a task is ended.
DEFAULT_KILL_GRACE = 3.0

#: Longer limits than this (about 68 years, e.g. the service's "infinite" TimeSpan.MaxValue) mean no limit.
_NO_LIMIT_SECONDS = float(2**31)

# stdout.txt/stderr.txt are unlinked first and created afresh: the task directory may belong to the task
# user, who could have left a symlink or a hard link there for the agent to truncate.
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class RunSpec:
    """One attempt of a task: what to run, where, and for how long at most (``None`` = no limit)."""

    command_line: str
    env: Mapping[str, str]
    task_dir: Path
    working_dir: Path
    max_wall_clock: float | None
    kill_grace: float = DEFAULT_KILL_GRACE
    # The OS user to run as (``uid`` ``None``: the agent's own user). ``dir_gid`` is the node's group: the
    # task's directories get it so that the node's users can reach them, and nobody else.
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()
    dir_gid: int | None = None
    # a container task: the command runs in a container as this user (agent/containers.py, decision 0170)
    container: ContainerLaunch | None = None


@dataclass(frozen=True)
class FailureInfo:
    """The task's ``failureInfo``: category (``usererror``/``servererror``), code, message, details."""

    category: str
    code: str
    message: str
    details: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RunResult:
    """How an attempt ended; ``exit_code`` is ``None`` when the program never ran."""

    exit_code: int | None
    started_at: datetime
    ended_at: datetime
    failure: FailureInfo | None
    timed_out: bool
    killed: bool
    # resource usage of the task's process (from wait4), for the task and job statistics
    user_cpu: float = 0.0
    kernel_cpu: float = 0.0
    read_ops: int = 0
    write_ops: int = 0


FAILURE_EXIT_CODE = FailureInfo(
    USER_ERROR,
    "FailureExitCode",
    "The task exited with an exit code representing a failure",
    (
        ("Message", "The task process exited with an unexpected exit code"),
        ("AdditionalErrorCode", "FailureExitCode"),
    ),
)
COMMAND_PROGRAM_NOT_FOUND = FailureInfo(
    USER_ERROR, "CommandProgramNotFound", "The specified command program is not found."
)
COMMAND_LAUNCH_FAILED = FailureInfo(
    USER_ERROR, "CommandLaunchFailed", "Failed to launch the specified command line."
)
TASK_ENDED_BY_USER = FailureInfo(USER_ERROR, "TaskEnded", "Task was ended by user request.")
TASK_ENDED_WALL_CLOCK = FailureInfo(
    SERVER_ERROR, "TaskEnded", "The task was ended because it exceeded its maximum wall clock time."
)
DISK_FULL = FailureInfo(
    SERVER_ERROR, "DiskFull", "There is not enough disk space on the node that was selected to run the task."
)
RESOURCE_DIRECTORY_CREATE_FAILED = FailureInfo(
    SERVER_ERROR,
    "ResourceDirectoryCreateFailed",
    "Failure encountered creating resource directory for the task.",
)

_devnull_fd: int | None = None


def _devnull() -> int:
    """One shared read-only ``/dev/null`` descriptor for every task's stdin."""
    global _devnull_fd
    if _devnull_fd is None:
        _devnull_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _devnull_fd


def _now() -> datetime:
    return datetime.now(UTC)


def exit_code_from_returncode(returncode: int) -> int:
    """Popen's negative ``-signal`` becomes the shell's ``128 + signal``."""
    return 128 - returncode if returncode < 0 else returncode


#: umask of task processes, as on a stock Linux node.
TASK_UMASK = 0o022


@functools.lru_cache(maxsize=256)
def split_command_line(command_line: str) -> tuple[str, ...]:
    """`shlex.split`, remembered: the tasks of a job often share their command line, and splitting is ~20 us."""
    return tuple(shlex.split(command_line))


def _make_dirs(spec: RunSpec) -> None:
    """Create the task and working directories, in the fewest system calls for the usual new-task case.

    With a task user, new job directories are the node's (root, node group, 0750) and the task's own
    directories belong to the task user.
    """
    task_dir, working_dir = spec.task_dir, spec.working_dir
    fresh = True  # both directories made here, now
    try:
        os.mkdir(task_dir)
    except FileExistsError:
        fresh = False
    except FileNotFoundError:
        job_dir = task_dir.parent
        os.makedirs(job_dir, exist_ok=True)
        if spec.dir_gid is not None:
            for d in (job_dir.parent, job_dir):
                os.chown(d, 0, spec.dir_gid)
                os.chmod(d, 0o750)
        os.makedirs(task_dir, exist_ok=True)
    try:
        os.mkdir(working_dir)
    except FileExistsError:
        fresh = False
    except FileNotFoundError:
        os.makedirs(working_dir, exist_ok=True)
    if spec.uid is None or spec.dir_gid is None:
        return
    if fresh:
        # The agent's own new directories, in a job directory no task may write to: nothing can have been put
        # in their place, so they are given away by path (four system calls instead of ten), inner one first.
        for d in (working_dir, task_dir):
            os.chown(d, spec.uid, spec.dir_gid, follow_symlinks=False)
            os.chmod(d, 0o750)
    else:
        for d in (task_dir, working_dir):
            # by descriptor, never following a symlink a task may have put there
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                owner = os.fstat(fd).st_uid
                if owner not in (spec.uid, 0) and d is working_dir:
                    _chown_tree(d, spec.uid, spec.dir_gid)  # a retry under another task-scoped user
                os.fchown(fd, spec.uid, spec.dir_gid)
                os.fchmod(fd, 0o750)
            finally:
                os.close(fd)


def _create(path: str) -> int:
    try:
        return os.open(path, _WRITE_FLAGS, 0o644)
    except FileExistsError:
        os.unlink(path)
        return os.open(path, _WRITE_FLAGS, 0o644)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    for _, dirs, names, dfd in os.fwalk(top):
        for n in dirs + names:
            try:
                os.chown(n, uid, gid, dir_fd=dfd, follow_symlinks=False)
            except OSError:
                pass


def _launch_failure(exc: BaseException, program: str, path: str | None = None) -> FailureInfo:
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)) and exc.filename in (None, program):
        return COMMAND_PROGRAM_NOT_FOUND
    # A PATH search remembers EACCES from a directory the task user may not search (e.g. the agent's own
    # tool directories) and reports it even when the program exists nowhere on PATH: that is "not found".
    import shutil  # on a failed start only: shutil loads the bz2/lzma modules

    if isinstance(exc, PermissionError) and "/" not in program and shutil.which(program, path=path) is None:
        return COMMAND_PROGRAM_NOT_FOUND
    return COMMAND_LAUNCH_FAILED


class TaskProcess:
    """One running (or already failed) task attempt; `wait` gives its `RunResult`."""

    pid: int | None

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.pid = None
        self.kill_reason: str | None = None
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[RunResult] = self._loop.create_future()
        self._popen: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._started_at = _now()
        self._timed_out = False
        self._killed = False
        self._deadline: asyncio.TimerHandle | None = None
        self._force: asyncio.TimerHandle | None = None
        self._thread_wait: asyncio.Task[None] | None = None
        self._spawner: Spawner | None = None

    @classmethod
    async def start(cls, spec: RunSpec, spawner: Spawner | None = None) -> TaskProcess:
        """Start the command; launch problems come back from `wait` as a failed `RunResult`, never raised."""
        proc = cls(spec)
        await proc._spawn(spawner)
        return proc

    @classmethod
    def failed(cls, spec: RunSpec, failure: FailureInfo) -> TaskProcess:
        """An attempt that fails before anything is started."""
        proc = cls(spec)
        proc._finish_early(failure)
        return proc

    def _open_outputs(self) -> tuple[int, int] | None:
        spec = self.spec
        out_fd = err_fd = -1
        try:
            _make_dirs(spec)
            task_dir = os.fspath(spec.task_dir)  # plain strings: no Path objects per launch
            out_fd = _create(task_dir + "/stdout.txt")
            err_fd = _create(task_dir + "/stderr.txt")
            if spec.uid is not None:
                for fd in (out_fd, err_fd):
                    os.fchown(fd, spec.uid, spec.gid if spec.gid is not None else -1)
        except OSError as exc:
            for fd in (out_fd, err_fd):
                if fd >= 0:
                    os.close(fd)
            self._finish_early(DISK_FULL if exc.errno == errno.ENOSPC else RESOURCE_DIRECTORY_CREATE_FAILED)
            return None
        return out_fd, err_fd

    async def _spawn(self, spawner: Spawner | None) -> None:
        spec = self.spec
        fds = self._open_outputs()
        if fds is None:
            return
        out_fd, err_fd = fds
        try:
            try:
                argv = list(split_command_line(spec.command_line))
            except ValueError:
                self._finish_early(COMMAND_LAUNCH_FAILED)
                return
            if not argv and spec.container is None:
                self._finish_early(COMMAND_LAUNCH_FAILED)
                return
            self._started_at = _now()
            env = spec.env
            if spec.container is not None:
                failure = await spec.container.prepare()  # the image is pulled while the task is running
                if failure is not None:
                    self._finish_early(failure)
                    return
                argv, env = spec.container.argv(argv, spec)  # podman (as root) runs it as the task user
            if spec.uid is not None and spec.uid != 0 and spec.container is None:
                if spawner is None:
                    self._finish_early(COMMAND_LAUNCH_FAILED)
                    return
                self._spawner = spawner
                try:
                    self.pid = await spawner.launch(
                        argv,
                        spec.env,
                        str(spec.working_dir),
                        out_fd,
                        err_fd,
                        spec.uid,
                        spec.gid if spec.gid is not None else spec.uid,
                        spec.groups,
                        TASK_UMASK,
                    )
                except LaunchError as exc:
                    self._finish_early(_launch_failure(exc.as_os_error(), argv[0], spec.env.get("PATH")))
                    return
                except (RuntimeError, OSError):  # the helper is gone; the agent starts a new one next time
                    self._finish_early(COMMAND_LAUNCH_FAILED)
                    return
            else:
                try:
                    self._popen = subprocess.Popen(
                        argv,
                        stdin=_devnull(),
                        stdout=out_fd,
                        stderr=err_fd,
                        cwd=spec.working_dir,
                        env=env,
                        close_fds=True,
                        start_new_session=True,
                        umask=TASK_UMASK,
                    )
                except (OSError, ValueError, subprocess.SubprocessError) as exc:
                    self._finish_early(_launch_failure(exc, argv[0], spec.env.get("PATH")))
                    return
                self.pid = self._popen.pid
        finally:
            os.close(out_fd)
            os.close(err_fd)

        assert self.pid is not None
        limit = spec.max_wall_clock
        if limit is not None and limit < _NO_LIMIT_SECONDS:
            self._deadline = self._loop.call_later(max(limit, 0.0), self._expire)
        if self._spawner is not None:
            self._spawner.exit_of(self.pid).add_done_callback(self._on_helper_exit)
            return
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._thread_wait = self._loop.create_task(self._wait_in_thread())
            return
        self._loop.add_reader(self._pidfd, self._on_exit)

    def _finish_early(self, failure: FailureInfo) -> None:
        now = _now()
        self._done.set_result(RunResult(None, now, now, failure, False, False))

    async def _wait_in_thread(self) -> None:
        """Fallback for kernels without pidfd: one blocking wait in the default executor.

        The thread reaps the leader, so the final SIGKILL of stragglers after a timeout or kill is sent to a
        group id that is no longer pinned by a zombie; acceptable for this rare path.
        """
        assert self._popen is not None
        await self._loop.run_in_executor(None, self._popen.wait)
        self._on_exit()

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.pid is None:
            return
        if self.spec.container is not None:
            if not self._done.done():
                self.spec.container.signal(sig)  # the container's processes are not in the group
            if sig != signal.SIGKILL:
                return  # `podman run` waits for the container's own exit code
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _terminate(self) -> None:
        """SIGTERM the group now, SIGKILL it after the grace period if the leader is still there."""
        if self._done.done() or self._force is not None:
            return
        if self._spawner is not None and self.pid is not None:
            self._spawner.doom(self.pid)
        self._signal_group(signal.SIGTERM)
        self._force = self._loop.call_later(
            max(self.spec.kill_grace, 0.0), self._signal_group, signal.SIGKILL
        )

    def _expire(self) -> None:
        self._deadline = None
        if self._done.done() or self._killed:
            return
        self._timed_out = True
        self._terminate()

    def _on_exit(self) -> None:
        assert self._popen is not None
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._timed_out or self._killed:
            # The leader is a zombie until reaped, so the group id is still ours: clear out stragglers.
            self._signal_group(signal.SIGKILL)
            if self.spec.container is not None:
                self.spec.container.remove()
        usage = None
        if self._popen.returncode is None:
            try:
                _, status, usage = os.wait4(self._popen.pid, 0)
                self._popen.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                pass
        returncode = self._popen.wait()
        self._finish(
            returncode,
            usage.ru_utime if usage else 0.0,
            usage.ru_stime if usage else 0.0,
            usage.ru_inblock if usage else 0,
            usage.ru_oublock if usage else 0,
        )

    def _on_helper_exit(self, fut: asyncio.Future[Exit]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._finish(-signal.SIGKILL, 0.0, 0.0, 0, 0)
            return
        ex = fut.result()
        self._finish(ex.returncode, ex.user_cpu, ex.kernel_cpu, ex.read_ops, ex.write_ops)

    def _finish(
        self, returncode: int, user_cpu: float, kernel_cpu: float, read_ops: int, write_ops: int
    ) -> None:
        ended_at = _now()
        for handle in (self._deadline, self._force):
            if handle is not None:
                handle.cancel()
        self._deadline = self._force = None
        exit_code = exit_code_from_returncode(returncode)
        if self._timed_out:
            failure: FailureInfo | None = TASK_ENDED_WALL_CLOCK
        elif self._killed:
            failure = TASK_ENDED_BY_USER
        elif exit_code != 0:
            failure = FAILURE_EXIT_CODE
        else:
            failure = None
        if not self._done.done():
            self._done.set_result(
                RunResult(
                    exit_code,
                    self._started_at,
                    ended_at,
                    failure,
                    self._timed_out,
                    self._killed,
                    user_cpu,
                    kernel_cpu,
                    read_ops,
                    write_ops,
                )
            )

    async def wait(self) -> RunResult:
        """The attempt's result once it has ended; cancelling the caller leaves the task running."""
        return await asyncio.shield(self._done)

    async def kill(self, reason: str) -> None:
        """End the whole process group (SIGTERM, SIGKILL after the grace) and wait until it is gone."""
        if self._done.done():
            return
        if not self._timed_out:
            self._killed = True
            self.kill_reason = reason
        self._terminate()
        await self.wait()


def make_dirs(spec: RunSpec) -> FailureInfo | None:
    """Create the attempt's directories before its resource files land there; the failure if that fails."""
    try:
        _make_dirs(spec)
    except OSError as exc:
        return DISK_FULL if exc.errno == errno.ENOSPC else RESOURCE_DIRECTORY_CREATE_FAILED
    return None


def give_to_task_user(spec: RunSpec, top: Path) -> None:
    """Files the agent placed for a task (resource files, upload logs) become the task user's."""
    if spec.uid is None or spec.uid == 0 or spec.dir_gid is None:
        return
    if top.is_dir() and not top.is_symlink():
        _chown_tree(top, spec.uid, spec.dir_gid)
    else:
        try:
            os.chown(top, spec.uid, spec.dir_gid, follow_symlinks=False)
        except OSError:
            pass
