"""The local node provider: each compute node is a `batchyard agent` process on this host, forked from the agent
zygote (decision 0200, `pools.zygote`) or, without one, started as a program.

Agents get a minimal environment (their own node token, never the account key). When the server runs as
root, each node gets its own block of task uids (decision 0010): the node root is created group-owned by
the block's base, which is how the agent and the file routes find it, and the data dir is closed to
everyone but root except for the path down to the node roots.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil

from batchyard.models import identity
from batchyard.pools import zygote
from batchyard.pools.provider import NodeEvent, NodeSpec
from batchyard.storage.mountpoints import unmount_below

log = logging.getLogger("batchyard.pools")

#: Variables an agent inherits from the server; everything else (account key, database URL…) stays behind.
AGENT_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "HOME")
#: how often agents sample the resources they use (agent.usage)
AGENT_TUNING_ENV = ("BATCHYARD_STATS_INTERVAL",)


def agent_path() -> str:
    """``PYTHONPATH`` for an agent started with ``python -S`` (decision 0182): the directories holding batchyard
    and the one package an idle agent imports (h11), then the server's own ``PYTHONPATH``. The agent runs the
    ``site`` start-up itself before anything that needs other packages (agent.lean)."""
    import h11

    import batchyard

    dirs: list[str] = []
    for mod in (batchyard, h11):
        d = str(Path(mod.__file__ or ".").resolve().parent.parent)
        if d not in dirs:
            dirs.append(d)
    dirs += [d for d in os.environ.get("PYTHONPATH", "").split(os.pathsep) if d and d not in dirs]
    return os.pathsep.join(dirs)


def agent_command() -> list[str]:
    """How an agent starts: this interpreter, without ``site`` (its ``.pth`` hooks are not the agent's)."""
    return [sys.executable, "-S", "-m", "batchyard.agent.main"]


def base_agent_env() -> dict[str, str]:
    """What every agent's environment holds (and the agent zygote's, decision 0200): no node's token."""
    env = {k: os.environ[k] for k in (*AGENT_ENV, *AGENT_TUNING_ENV) if k in os.environ}
    env["PYTHONPATH"] = agent_path()
    return env


def agent_env(
    token: str, accounts: Iterable[dict[str, Any]] = (), auto_storage: str | None = None
) -> dict[str, str]:
    env = base_agent_env()
    env["BATCHYARD_NODE_TOKEN"] = token
    if auto_storage:
        env["BATCHYARD_AUTO_STORAGE"] = auto_storage
    public = [{k: v for k, v in a.items() if k != "password"} for a in accounts]
    for a in public:
        linux = a.get("linuxUserConfiguration")
        if isinstance(linux, dict):
            a["linuxUserConfiguration"] = {k: v for k, v in linux.items() if k != "sshPrivateKey"}
    if public:
        env["BATCHYARD_USER_ACCOUNTS"] = json.dumps(public)
    return env


def privileged() -> bool:
    """Tasks run as separate users only when the server may switch users (it runs as root)."""
    return os.geteuid() == 0


def harden_data_dir(nodes_dir: Path) -> None:
    """Only root reads the data dir; node users may only pass through it to their own node root."""
    data_dir = nodes_dir.parent
    os.umask(0o077)  # files the server creates later (WAL, locks) are its own
    for entry in os.scandir(data_dir):
        if entry.name == nodes_dir.name:
            continue
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
            if not entry.is_symlink():
                os.chmod(entry.path, mode & 0o7700)
        except OSError:
            pass
    os.chmod(data_dir, 0o711)
    os.chmod(nodes_dir, 0o711)


def unreachable_ancestor(data_dir: Path) -> Path | None:
    """The first directory above ``data_dir`` that task users cannot pass through (no ``o+x``), if any.

    Tasks are told absolute paths ($AZ_BATCH_NODE_SHARED_DIR…); under such a directory they can use only
    their working directory (their current directory) and relative paths.
    """
    for parent in data_dir.resolve().parents:
        try:
            if not os.stat(parent).st_mode & 0o001:
                return parent
        except OSError:
            return parent
    return None


_warned: set[Path] = set()


_used_slots: dict[Path, set[int]] = {}


def _free_slot(nodes_dir: Path) -> int:
    """A node uid block no node root in ``nodes_dir`` has; the node roots are scanned once per process."""
    used = _used_slots.get(nodes_dir)
    if used is None:
        used = set()
        for entry in os.scandir(nodes_dir):
            try:
                slot = identity.slot_of_gid(entry.stat(follow_symlinks=False).st_gid)
            except OSError:
                continue
            if slot is not None:
                used.add(slot)
        _used_slots[nodes_dir] = used
    # Start from a point that depends on the data dir, so two servers on one host rarely meet.
    start = zlib.crc32(str(nodes_dir.resolve()).encode()) % identity.MAX_SLOTS
    for i in range(identity.MAX_SLOTS):
        slot = (start + i) % identity.MAX_SLOTS
        if slot not in used:
            used.add(slot)
            return slot
    raise RuntimeError("no free node uid block")


def prepare_root(root: Path) -> None:
    """Create the node root; when privileged, give it its node group (kept across respawns)."""
    root.mkdir(parents=True, exist_ok=True)
    if not privileged():
        return
    harden_data_dir(root.parent)
    data_dir = root.parent.parent
    blocked = unreachable_ancestor(data_dir)
    if blocked is not None and data_dir not in _warned:
        _warned.add(data_dir)
        log.warning(
            "tasks run as other users but cannot pass through %s (not searchable by others): they will not "
            "reach their node's directories by absolute path; use a --data-dir below world-searchable "
            "directories, e.g. /var/lib/batchyard",
            blocked,
        )
    st = os.stat(root, follow_symlinks=False)
    if identity.slot_of_gid(st.st_gid) is None:
        os.chown(root, 0, identity.base_of_slot(_free_slot(root.parent)))
    os.chmod(root, 0o750)


class LocalProvider:
    """Spawns and stops agent processes; each runs in its own session so the server can die without them.

    The first `NodeProvider` (decision 0100): a node is an agent process on this host, its disk a directory.
    """

    def __init__(
        self,
        server_url: str,
        account: str,
        orphan_timeout: float = 600.0,
        auto_storage: str | None = None,
        file_url_roots: tuple[Path, ...] = (),
    ) -> None:
        self.server_url = server_url
        self.account = account
        # data staging: the linked storage's connection string goes to agents in their environment (never on
        # their command line, which every local user can read); tasks never see it (see agent.staging)
        self.auto_storage = auto_storage
        self.file_url_roots = file_url_roots
        self.orphan_timeout = orphan_timeout  # an agent without its server stops after this many seconds
        self.exits = ExitWatch()  # which agents exited, without reading /proc for each (decision 0185)
        # agents forked from one pre-imported process rather than started as programs (decision 0200)
        self.zygote = zygote.AgentZygote() if zygote.enabled() else None

    def spawn(
        self,
        node_id: str,
        token: str,
        pool_id: str,
        root: Path,
        dedicated: bool,
        user_accounts: Iterable[dict[str, Any]] = (),
        container: dict[str, Any] | None = None,
    ) -> int:
        prepare_root(root)
        env = agent_env(token, user_accounts, self.auto_storage)
        if container:  # with registry credentials: in the agent's environment, never on a command line
            env["BATCHYARD_CONTAINER_CONFIG"] = json.dumps(container)
        args = [
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
            *(arg for r in self.file_url_roots for arg in ("--file-url-root", str(r))),
        ]
        fd = os.open(root / ".agent.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            if self.zygote is not None:
                try:
                    return self.zygote.spawn(agent_command(), args, env, fd, base_agent_env())
                except zygote.ZygoteUnavailable as e:
                    log.debug("node %s: its agent starts as a program (%s)", node_id, e)
            proc = subprocess.Popen(
                [*agent_command(), *args],
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                close_fds=True,
            )
        finally:
            os.close(fd)
        return proc.pid

    # --- the NodeProvider contract -------------------------------------------------------------------------

    def create(self, specs: Sequence[NodeSpec]) -> list[int | OSError]:
        out: list[int | OSError] = []
        for sp in specs:
            try:
                out.append(self.start(sp))
            except OSError as e:
                out.append(e)
        return out

    def start(self, spec: NodeSpec) -> int:
        return self.spawn(
            spec.node_id,
            spec.token,
            spec.pool_id,
            spec.root,
            spec.dedicated,
            spec.user_accounts,
            **({"container": spec.container} if spec.container else {}),  # only container pools pass it
        )

    def wipe(self, node_id: str, root: Path) -> None:
        """Empty the node's directory but keep it (and so its node group, decision 0010). A file system of the
        pool's mountConfiguration still mounted inside is detached first; if one stays, nothing is deleted."""
        if unmount_below(root):
            return
        try:
            entries = list(os.scandir(root))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass

    def events(self) -> list[NodeEvent]:
        """A host process is never preempted by an engine: preemption here is injected by the server."""
        return []

    def watch(self, handle: int | None, node_id: str) -> bool:
        return handle is not None and self.exits.add(handle, node_id)

    def exited(self) -> list[tuple[int | None, str]]:
        return list(self.exits.exited())

    @staticmethod
    def alive(pid: int | None, node_id: str) -> bool:
        """True if `pid` is still this node's agent (pids are reused, so check the command line)."""
        if not pid:
            return False
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                status = proc.status()
                ppid = proc.ppid()
                cmd = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            _reap(pid)
            return False
        if status == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return False
        # An agent forked by the zygote shows the same command line (decision 0200).
        if node_id in cmd:
            return True
        # A child of ours that has not exec'd the agent yet still shows our own command line; the zygote is
        # a child of ours too, and never an agent.
        if pid in zygote.zygote_pids or zygote.ZYGOTE_MODULE in cmd:
            return False
        return ppid == os.getpid() and "batchyard.agent.main" not in cmd

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
        _reap(pid)


class ExitWatch:
    """A pidfd per agent, all in one poll(2) set: the agents that exited are found with one system call
    however many run, and a pidfd names one process, so a reused pid is never mistaken for the agent.

    Works for the server's own children and for agents adopted after a restart alike (pidfd_open takes any
    pid). `add` is called from the pool manager's worker thread as well as from the event loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._poll = select.poll()
        self._fds: dict[int, tuple[int, str]] = {}  # pidfd -> (pid, node id)
        self._of_node: dict[str, int] = {}  # node id -> its agent's pidfd

    def add(self, pid: int, node_id: str) -> bool:
        """Watch `pid`, the agent of `node_id` (replacing the node's earlier agent); False if not possible."""
        try:
            fd = os.pidfd_open(pid)
        except (OSError, AttributeError):  # gone already, or a kernel before 5.3
            return False
        with self._lock:
            old = self._of_node.pop(node_id, None)
            if old is not None:
                self._drop(old)
            self._fds[fd] = (pid, node_id)
            self._of_node[node_id] = fd
            self._poll.register(fd, select.POLLIN)
        return True

    def exited(self) -> list[tuple[int, str]]:
        """The watched agents that exited since the last call (each reported once)."""
        with self._lock:
            ready = self._poll.poll(0)
            gone = [self._drop(fd) for fd, _ in ready]
        for pid, _ in gone:
            _reap(pid)  # our child's exit status, if it is ours (no zombie is left behind)
        return gone

    def __len__(self) -> int:
        return len(self._fds)

    def _drop(self, fd: int) -> tuple[int, str]:
        pid, node_id = self._fds.pop(fd)
        if self._of_node.get(node_id) == fd:
            del self._of_node[node_id]
        self._poll.unregister(fd)
        os.close(fd)
        return pid, node_id


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
