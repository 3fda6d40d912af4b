"""Node directory layout and task environment, shaped like an Azure Batch Linux node.

Paths follow the documented layout ("Files and directories in Azure Batch", "Azure Batch runtime environment
variables"): ``$AZ_BATCH_NODE_ROOT_DIR/{applications,fsmounts,shared,startup,workitems}``, a job task under
``workitems/<job>/job-1/<task>`` with its working directory ``wd`` beside ``stdout.txt``/``stderr.txt``, and
the start task in ``startup`` with working directory ``startup/wd``. Jobs created by a job schedule use
``workitems/<schedule>/<job>`` on the real service; that variant is not modelled yet.

Environment variables set by `NodeLayout.task_env` (from the docs table unless noted):

* every task: ``AZ_BATCH_ACCOUNT_NAME``, ``AZ_BATCH_ACCOUNT_URL``, ``AZ_BATCH_POOL_ID``,
  ``AZ_BATCH_NODE_ID``, ``AZ_BATCH_NODE_IS_DEDICATED`` (``true``/``false``), ``AZ_BATCH_NODE_ROOT_DIR``,
  ``AZ_BATCH_NODE_SHARED_DIR``, ``AZ_BATCH_NODE_STARTUP_DIR``, ``AZ_BATCH_NODE_MOUNTS_DIR``,
  ``AZ_BATCH_TASK_DIR``, ``AZ_BATCH_TASK_WORKING_DIR``, ``AZ_BATCH_CERTIFICATES_DIR`` (``<task dir>/certs``,
  Linux only per the docs);
* ``AZ_BATCH_NODE_STARTUP_WORKING_DIR`` (``startup/wd``): added by node agent 1.7.14 (agent change log), not
  in the docs table; set for every task because it names a node-wide directory;
* ``AZ_BATCH_TASK_USER`` / ``AZ_BATCH_TASK_USER_IDENTITY``: not in the docs table but present in real Linux
  task environments (``_azbatch`` / ``PoolNonAdmin`` in published ``printenv`` dumps). Here the user is the
  OS account the agent runs tasks as;
* ``AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES``: documented for all tasks, set when the agent knows
  its disk-full threshold (``reserved_disk_space_bytes``);
* all tasks except the start task: ``AZ_BATCH_JOB_ID``, ``AZ_BATCH_TASK_ID``;
* all tasks except the start and job preparation tasks, when the job has a preparation task:
  ``AZ_BATCH_JOB_PREP_DIR``, ``AZ_BATCH_JOB_PREP_WORKING_DIR``.

The multi-instance set (``AZ_BATCH_HOST_LIST``, ``AZ_BATCH_NODE_LIST``, ``AZ_BATCH_MASTER_NODE``,
``AZ_BATCH_IS_CURRENT_NODE_MASTER``, ``AZ_BATCH_TASK_SHARED_DIR``, ``CCP_NODES``) comes with the work of
multi-instance tasks (``service.subtasks``, ``agent.multiinstance``). Not set yet: ``AZ_BATCH_APP_PACKAGE_*`` (only with application packages) and ``AZ_BATCH_AUTHENTICATION_TOKEN``
(retired by the service on 2024-09-30).

Order of precedence, lowest first: a few variables inherited from the agent (``LANG``, ``LC_ALL``, ``TZ``,
``TMPDIR``, ``USER``, ``LOGNAME``), ``PATH`` and ``HOME`` as a real Linux node sets them (``PATH`` = the
agent's ``PATH`` + shared dir + working dir, ``HOME`` = the working dir, both seen in real task dumps), then
the job's ``commonEnvironmentSettings``, then the task's ``environmentSettings``, then the ``AZ_BATCH_*``
variables, which belong to the service and cannot be overridden.
"""

from __future__ import annotations

import functools
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from batchyard.models import identity

#: Agent variables passed through to tasks (besides PATH, which is extended, and HOME, which is replaced).
INHERITED_VARIABLES: tuple[str, ...] = ("LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME")

#: The fallback PATH when the agent has none, as on a stock Linux node.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Where the agent records the sessions of its multi-instance tasks (agent.multiinstance kills a killed agent's).
MPI_SESSIONS_FILE = ".agent-mpi-sessions"

#: The job directory name under ``workitems/<job>`` for jobs not created by a job schedule.
JOB_DIR_NAME = "job-1"


def user_identity_label(scope: str = "pool", elevation_level: str = "nonadmin") -> str:
    """``AZ_BATCH_TASK_USER_IDENTITY`` for an auto-user, e.g. ``PoolNonAdmin`` for the defaults."""
    scope_part = "Task" if scope.lower() == "task" else "Pool"
    elevation_part = "Admin" if elevation_level.lower() == "admin" else "NonAdmin"
    return scope_part + elevation_part


@dataclass(frozen=True)
class TaskEnvInputs:
    """What `NodeLayout.task_env` needs, as plain values so the agent stays free of wire models.

    ``job_id``/``task_id`` of ``None`` mean the pool's start task. ``job_prep_task_id`` is the id of the
    job's preparation task when it has one. Settings are (name, value) pairs in request order.
    """

    account_name: str
    account_url: str
    pool_id: str
    node_id: str
    node_is_dedicated: bool
    job_id: str | None
    task_id: str | None
    common_environment: tuple[tuple[str, str], ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    job_prep_task_id: str | None = None
    task_user: str | None = None
    task_user_identity: str = "PoolNonAdmin"
    reserved_disk_space_bytes: int | None = None


@functools.cache
def _current_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


class NodeLayout:
    """The directory tree of one node, rooted at ``$AZ_BATCH_NODE_ROOT_DIR``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        # Strings computed once: task_env runs for every task and pathlib joins are comparatively slow.
        self._root_s = str(self.root)
        self._shared_s = os.path.join(self._root_s, "shared")
        self._startup_s = os.path.join(self._root_s, "startup")
        self._startup_wd_s = os.path.join(self._startup_s, "wd")
        self._mounts_s = os.path.join(self._root_s, "fsmounts")
        self._workitems_s = os.path.join(self._root_s, "workitems")

    @property
    def shared_dir(self) -> Path:
        return self.root / "shared"

    @property
    def startup_dir(self) -> Path:
        return self.root / "startup"

    @property
    def startup_working_dir(self) -> Path:
        return self.root / "startup" / "wd"

    @property
    def applications_dir(self) -> Path:
        return self.root / "applications"

    @property
    def mounts_dir(self) -> Path:
        return self.root / "fsmounts"

    @property
    def workitems_dir(self) -> Path:
        return self.root / "workitems"

    def job_dir(self, job_id: str) -> Path:
        return Path(f"{self._workitems_s}/{job_id}/{JOB_DIR_NAME}")

    def task_dir(self, job_id: str, task_id: str) -> Path:
        """Holds ``stdout.txt``, ``stderr.txt`` and the working directory ``wd``."""
        return Path(self._task_dir_s(job_id, task_id))

    def working_dir(self, job_id: str, task_id: str) -> Path:
        return Path(self._task_dir_s(job_id, task_id) + "/wd")

    def _task_dir_s(self, job_id: str, task_id: str) -> str:
        return f"{self._workitems_s}/{job_id}/{JOB_DIR_NAME}/{task_id}"

    def ensure(self) -> None:
        """Create the node-level directories; task directories are made by the runner when a task starts."""
        for path in (
            self.shared_dir,
            self.startup_dir,
            self.applications_dir,
            self.mounts_dir,
            self.workitems_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)

    def secure(self) -> int | None:
        """Give the node's directories to the node's group; the node's uid base, or ``None`` if it has none.

        The root, ``startup``, ``applications``, ``fsmounts`` and ``workitems`` are root's and readable by the
        node's users only (0750); ``shared`` is writable by them, sticky (1770). Nothing is reachable by other
        nodes' users or anyone else. Files the agent keeps in the root (``.agent.log``) stay root's, 0600.
        """
        st = os.stat(self.root)
        if identity.slot_of_gid(st.st_gid) is None:
            return None
        gid = st.st_gid
        modes = {
            self.root: 0o750,
            self.shared_dir: 0o1770,
            self.startup_dir: 0o750,
            self.applications_dir: 0o750,
            self.mounts_dir: 0o750,
            self.workitems_dir: 0o750,
        }
        for path, mode in modes.items():
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchown(fd, 0, gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        for entry in os.scandir(self.root):
            if identity.is_internal(entry.name) and entry.is_file(follow_symlinks=False):
                os.chown(entry.path, 0, 0, follow_symlinks=False)
                os.chmod(entry.path, 0o600)
        return gid

    def task_env(self, inputs: TaskEnvInputs, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The full environment of a task process (see the module docstring for the rules)."""
        agent_env = os.environ if base_env is None else base_env
        if inputs.job_id is None or inputs.task_id is None:
            task_dir = self._startup_s
        else:
            task_dir = self._task_dir_s(inputs.job_id, inputs.task_id)
        wd = task_dir + "/wd"
        shared = self._shared_s

        env: dict[str, str] = {}
        for name in INHERITED_VARIABLES:
            value = agent_env.get(name)
            if value is not None:
                env[name] = value
        env["PATH"] = f"{agent_env.get('PATH') or DEFAULT_PATH}:{shared}:{wd}"
        env["HOME"] = wd
        for name, value in inputs.common_environment:
            env[name] = value
        for name, value in inputs.environment:
            env[name] = value

        env["AZ_BATCH_ACCOUNT_NAME"] = inputs.account_name
        env["AZ_BATCH_ACCOUNT_URL"] = inputs.account_url
        env["AZ_BATCH_POOL_ID"] = inputs.pool_id
        env["AZ_BATCH_NODE_ID"] = inputs.node_id
        env["AZ_BATCH_NODE_IS_DEDICATED"] = "true" if inputs.node_is_dedicated else "false"
        env["AZ_BATCH_NODE_ROOT_DIR"] = self._root_s
        env["AZ_BATCH_NODE_SHARED_DIR"] = shared
        env["AZ_BATCH_NODE_STARTUP_DIR"] = self._startup_s
        env["AZ_BATCH_NODE_STARTUP_WORKING_DIR"] = self._startup_wd_s
        env["AZ_BATCH_NODE_MOUNTS_DIR"] = self._mounts_s
        env["AZ_BATCH_TASK_DIR"] = task_dir
        env["AZ_BATCH_TASK_WORKING_DIR"] = wd
        env["AZ_BATCH_CERTIFICATES_DIR"] = task_dir + "/certs"
        env["AZ_BATCH_TASK_USER"] = inputs.task_user if inputs.task_user is not None else _current_user()
        env["AZ_BATCH_TASK_USER_IDENTITY"] = inputs.task_user_identity
        if inputs.reserved_disk_space_bytes is not None:
            env["AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES"] = str(inputs.reserved_disk_space_bytes)
        if inputs.job_id is not None and inputs.task_id is not None:
            env["AZ_BATCH_JOB_ID"] = inputs.job_id
            env["AZ_BATCH_TASK_ID"] = inputs.task_id
            prep = inputs.job_prep_task_id
            if prep is not None and prep != inputs.task_id:
                prep_dir = self._task_dir_s(inputs.job_id, prep)
                env["AZ_BATCH_JOB_PREP_DIR"] = prep_dir
                env["AZ_BATCH_JOB_PREP_WORKING_DIR"] = prep_dir + "/wd"
        return env
