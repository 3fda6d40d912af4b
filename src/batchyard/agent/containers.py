"""Container tasks: run a task's command line inside a real container (Podman with runc), decision 0170.

The agent (root) runs ``podman run`` as the task's process: the container's stdout/stderr are the task's
``stdout.txt``/``stderr.txt``, its exit code the task's. Inside, the command runs as the task's uid/gid, with the
node root dir (or the chosen Batch data paths) bind-mounted at the same paths and the task's environment passed
by name. Images are pulled once per node lifetime (prefetch at join for ``containerImageNames``); registry
credentials reach podman in a 0600 auth file in a root-only directory, never on a command line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import itertools
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchyard.agent.runner import USER_ERROR, FailureInfo, RunSpec
from batchyard.models import containers as model

ENGINE = "podman"
RUNTIME = "runc"  # crun 1.8 refuses hybrid cgroup hosts (decision 0170)
PULL_TIMEOUT = 600.0
CONTROL_TIMEOUT = 30.0
LABEL = "batchyard.node"
# Host-only variables a container does not inherit: it has the image's own PATH/HOME/SHELL.
_HOST_ONLY = frozenset({"PATH", "HOME", "SHELL"})

CONTAINER_INVALID_IMAGE = ("ContainerInvalidImage", "One or more container images specified are invalid")
CONTAINER_INVALID_SETTINGS = (
    "ContainerInvalidSettings",
    "At least one value of specified task container settings is invalid",
)
CONTAINER_INVALID_REGISTRY = (
    "ContainerInvalidRegistry",
    "One or more container registries specified are invalid",
)
CONTAINER_MISC = ("ContainerMiscError", "An unexpected error occurred while setting up the container")


def _failure(kind: tuple[str, str], **details: str) -> FailureInfo:
    return FailureInfo(USER_ERROR, kind[0], kind[1], tuple(details.items()))


def engine_available() -> bool:
    return shutil.which(ENGINE) is not None and shutil.which(RUNTIME) is not None


def _loopback(server: str) -> bool:
    host = server.rsplit(":", 1)[0] if server.count(":") == 1 or server.startswith("[") else server
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _server(reg: Mapping[str, Any]) -> str:
    s = str(reg.get("registryServer") or "docker.io")
    return s.removeprefix("https://").removeprefix("http://").rstrip("/")


def _ulimits() -> list[str]:
    """Limits no higher than the agent's own: podman's defaults are above what some hosts allow (on this
    project's machines runc may not set ``nproc`` above ``kernel.pid_max`` either)."""
    out = []
    for name, res in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(res)[1]
        if name == "nproc":
            with contextlib.suppress(OSError, ValueError):
                pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
                hard = pid_max if hard == resource.RLIM_INFINITY else min(hard, pid_max)
        if hard != resource.RLIM_INFINITY:
            out.append(f"{name}={hard}:{hard}")
    return out


def _clip(text: str, limit: int = 1024) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Engine:
    """The node's container engine: image pulls (once per node lifetime) and container control."""

    node_id: str
    private_dir: Path  # root-only: auth files live here for the length of a pull
    registries: tuple[dict[str, Any], ...] = ()
    images: tuple[str, ...] = ()
    pulled: set[str] = field(default_factory=set)
    _serial: itertools.count[int] = field(default_factory=itertools.count)
    _pulls: dict[str, asyncio.Future[FailureInfo | None]] = field(default_factory=dict)

    @classmethod
    def for_pool(cls, node_id: str, root: Path, config_json: str | None) -> Engine | None:
        """The engine of a container pool (``None``: the pool has no containerConfiguration)."""
        if not config_json:
            return None
        cc = json.loads(config_json)
        return cls(
            node_id,
            root / ".containers",
            tuple(cc.get("containerRegistries") or ()),
            tuple(cc.get("containerImageNames") or ()),
        )

    def _base(self) -> list[str]:
        # no event log: nothing reads it, and writing it costs about a fifth of a short container's run
        return [
            ENGINE,
            "--log-level=error",
            "--events-backend=none",
            "--runtime",
            RUNTIME,
            "--cgroup-manager",
            "cgroupfs",
        ]

    async def _run(self, args: list[str], timeout: float) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return -1, f"timed out after {timeout:g}s"
        return proc.returncode or 0, err.decode(errors="replace")

    def _registry_for(self, image: str, task_registry: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        host = model.registry_host(image)
        if task_registry is not None and _server(task_registry) == host:
            return task_registry
        for reg in self.registries:
            if _server(reg) == host:
                return reg
        return task_registry

    async def pull(self, image: str, task_registry: Mapping[str, Any] | None = None) -> FailureInfo | None:
        """Pull ``image`` unless this node already did; concurrent pulls of one image share one attempt."""
        if image in self.pulled:
            return None
        pending = self._pulls.get(image)
        if pending is None:
            pending = asyncio.ensure_future(self._pull(image, task_registry))
            self._pulls[image] = pending
            pending.add_done_callback(lambda _f: self._pulls.pop(image, None))
        return await asyncio.shield(pending)

    async def _pull(self, image: str, task_registry: Mapping[str, Any] | None) -> FailureInfo | None:
        host = model.registry_host(image)
        if host == "localhost":  # the host's own images (podman import): nothing to pull from
            rc, err = await self._run([*self._base(), "image", "exists", image], CONTROL_TIMEOUT)
            if rc != 0:
                return _failure(
                    CONTAINER_INVALID_IMAGE, ContainerImage=image, Message=f"no such image: {image}"
                )
            self.pulled.add(image)
            return None
        args = [*self._base(), "pull", "--quiet"]
        if _loopback(host):
            args.append("--tls-verify=false")  # as Docker treats 127.0.0.0/8 registries as insecure
        reg = self._registry_for(image, task_registry)
        auth: Path | None = None
        try:
            if reg is not None and reg.get("username") is not None:
                auth = self._auth_file(host, str(reg["username"]), str(reg.get("password") or ""))
                args += ["--authfile", str(auth)]
            rc, err = await self._run([*args, image], PULL_TIMEOUT)
        finally:
            if auth is not None:
                with contextlib.suppress(OSError):
                    auth.unlink()
        if rc != 0:
            return _failure(
                CONTAINER_INVALID_IMAGE, ContainerImage=image, Message=_clip(err or "pull failed")
            )
        self.pulled.add(image)
        return None

    def _auth_file(self, server: str, user: str, password: str) -> Path:
        self.private_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.private_dir, 0o700)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        fd, name = tempfile.mkstemp(prefix="auth-", suffix=".json", dir=self.private_dir)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": {server: {"auth": token}}}, f)
        return Path(name)

    async def prefetch(self) -> list[FailureInfo]:
        """Pull the pool's ``containerImageNames`` (when the node joins); the failures, one per image."""
        await self.remove_stale()
        out = []
        for image in self.images:
            failure = await self.pull(model.fully_qualified(image))
            if failure is not None:
                out.append(failure)
        return out

    async def join(self, report: Callable[..., None]) -> None:
        """Node join: prefetch; each failed image becomes a node error (the node is then ``unusable``)."""
        for f in await self.prefetch():
            details = [{"name": n, "value": v} for n, v in f.details]
            info = {"category": f.category, "code": f.code, "message": f.message, "details": details}
            report(type="nodeError", ref="", failureInfo=info)

    async def remove_stale(self) -> None:
        """Containers a previous agent of this node left (it was killed): removed before anything runs."""
        proc = await asyncio.create_subprocess_exec(
            *self._base(),
            "ps",
            "-aq",
            "--filter",
            f"label={LABEL}={self.node_id}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        ids = out.decode().split()
        if ids:
            await self._run([*self._base(), "rm", "-f", "--time", "0", *ids], CONTROL_TIMEOUT)

    def launch(self, settings: Mapping[str, Any]) -> ContainerLaunch:
        name = f"byard-{re.sub(r'[^A-Za-z0-9_.-]', '_', self.node_id)}-{os.getpid()}-{next(self._serial)}"
        return ContainerLaunch(self, dict(settings), name)


@dataclass
class ContainerLaunch:
    """One task attempt in a container: its image check, its ``podman run`` line and its control."""

    engine: Engine | None
    settings: dict[str, Any]
    name: str
    refusal: FailureInfo | None = None
    options: tuple[str, ...] = ()
    image: str = ""  # fully qualified, set by `prepare`

    @classmethod
    def refused(cls, settings: Mapping[str, Any], failure: FailureInfo) -> ContainerLaunch:
        return cls(None, dict(settings), "", failure)

    async def prepare(self) -> FailureInfo | None:
        """Everything before the process starts: the pool allows containers, the image is on the node."""
        if self.refusal is not None:
            return self.refusal
        assert self.engine is not None
        try:
            self.options = model.parse_run_options(str(self.settings.get("containerRunOptions") or "")).args
        except model.RunOptionError as exc:  # accepted at add under older rules: refused here all the same
            return _failure(CONTAINER_INVALID_SETTINGS, Message=str(exc))
        if not engine_available():
            return _failure(
                CONTAINER_MISC, Message=f"the container engine ({ENGINE} with {RUNTIME}) is not installed"
            )
        self.image = model.fully_qualified(str(self.settings["imageName"]))
        return await self.engine.pull(self.image, self.settings.get("registry"))

    def argv(self, command: list[str], spec: RunSpec) -> tuple[list[str], dict[str, str]]:
        """The ``podman run`` argv and its environment (task variables are passed by name only)."""
        assert self.engine is not None
        s = self.settings
        args = [
            *self.engine._base(),
            "run",
            "--rm",
            "--name",
            self.name,
            "--label",
            f"{LABEL}={self.engine.node_id}",
        ]
        args += ["--network", "none", "--pull", "never", "--cidfile", str(self._cidfile())]
        args += [f"--ulimit={u}" for u in _ulimits()]
        if spec.uid is not None:
            args += ["--user", f"{spec.uid}:{spec.gid if spec.gid is not None else spec.uid}"]
            for g in spec.groups:
                args += ["--group-add", str(g)]
        if spec.uid not in (None, 0):
            # a non-admin task gains nothing in its container: no capabilities, no setuid escalation to the
            # container's root (which is the host's root: the engine runs rootful)
            args += ["--cap-drop=all", "--security-opt=no-new-privileges"]
        env = {k: v for k, v in spec.env.items() if k not in _HOST_ONLY}
        for k in env:
            args += ["--env", k]
        mounts = self._mounts(spec)
        for src, ro in mounts:
            args += [
                "--mount",
                f"type=bind,source={src},destination={src}" + (",readonly=true" if ro else ""),
            ]
        wd = str(spec.working_dir)
        if s.get("workingDirectory", "taskWorkingDirectory") == "taskWorkingDirectory" and any(
            wd == src or wd.startswith(src + "/") for src, _ in mounts
        ):  # a working dir that is not mounted in (bind mounts without `Task`) leaves the image's own
            args += ["--workdir", wd]
        args += self.options  # read in `prepare`
        args += ["--", self.image, *command]
        proc_env = dict(env)
        proc_env["PATH"] = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        return args, proc_env

    def _cidfile(self) -> Path:
        assert self.engine is not None
        self.engine.private_dir.mkdir(mode=0o700, exist_ok=True)
        return self.engine.private_dir / f"{self.name}.cid"

    def info(self) -> dict[str, str] | None:
        """``executionInfo.containerInfo`` once the container is gone: its id and ``exited`` (read once)."""
        if self.engine is None:
            return None
        path = self.engine.private_dir / f"{self.name}.cid"
        try:
            cid = path.read_text().strip()
            path.unlink()
        except OSError:
            return None
        return {"containerId": cid, "state": "exited"} if cid else None

    def _mounts(self, spec: RunSpec) -> list[tuple[str, bool]]:
        """Bind mounts (same path inside): the node root, or the chosen Batch data paths inside it.

        Paths come from the agent's own variables, and each must resolve inside the node root: a task's
        ``environmentSettings`` may name a variable the agent does not set here (``AZ_BATCH_JOB_PREP_DIR`` without
        a preparation task), and nothing outside the node's directory is ever mounted.
        """
        assert self.engine is not None
        root = str(self.engine.private_dir.parent)  # the agent's --root, as AZ_BATCH_NODE_ROOT_DIR says
        binds = self.settings.get("containerHostBatchBindMounts")
        if binds is None:  # Azure's Linux default: the whole node root dir
            return [(root, False)]
        real_root = os.path.realpath(root)
        env = spec.env
        paths = {
            "Shared": env.get("AZ_BATCH_NODE_SHARED_DIR"),
            "Startup": env.get("AZ_BATCH_NODE_STARTUP_DIR"),
            "VfsMounts": env.get("AZ_BATCH_NODE_MOUNTS_DIR"),
            "Task": str(spec.task_dir),
            "JobPrep": env.get("AZ_BATCH_JOB_PREP_DIR"),
            "Applications": f"{root}/applications",
        }
        out = []
        for b in binds:
            path = paths.get(str(b.get("source")))
            if not path or "," in path or not os.path.isdir(path):
                continue
            real = os.path.realpath(path)
            if real == real_root or real.startswith(real_root + os.sep):
                out.append((path, bool(b.get("isReadOnly", False))))
        return out

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the container's first process, now (spawned at once, so an agent that stops right
        after still delivers it; the run line reports the exit, the process is reaped by a later spawn)."""
        if self.engine is not None:
            with contextlib.suppress(OSError):
                subprocess.Popen(
                    [*self.engine._base(), "kill", "--signal", sig.name, self.name],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    close_fds=True,
                )

    def remove(self) -> None:
        """After a kill: make sure the container is gone even if ``podman run`` died before it could clean up."""
        if self.engine is not None:
            asyncio.ensure_future(
                self.engine._run(
                    [*self.engine._base(), "rm", "-f", "--time", "0", self.name], CONTROL_TIMEOUT
                )
            )


def launch_for(engine: Engine | None, settings: Mapping[str, Any] | None) -> ContainerLaunch | None:
    """The container of a task with ``containerSettings`` (``None``: a host task).

    On a pool without a containerConfiguration the task fails as the service fails it (decision 0170).
    """
    if not settings:
        return None
    if engine is None:
        return ContainerLaunch.refused(
            settings,
            _failure(
                CONTAINER_INVALID_SETTINGS,
                Message="The pool has no containerConfiguration: tasks with containerSettings cannot run on it",
            ),
        )
    return engine.launch(settings)
