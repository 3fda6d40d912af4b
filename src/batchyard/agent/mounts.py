"""Mounting a pool's `mountConfiguration` on this node (decision 0142).

Each entry is mounted under `<node root>/fsmounts/<relativeMountPath>` (AZ_BATCH_NODE_MOUNTS_DIR) with the
host's own tools: `mount -t nfs` (nfs-common), `mount -t cifs` (cifs-utils) for CIFS and Azure Files, and
`blobfuse2` (or the older `blobfuse`) for Azure Blob containers. Credentials go to files readable only by the
agent, never onto a command line. Whatever stops a mount (a missing tool, no privilege, bad credentials, an
unreachable server, a timeout) is reported as a node error; a node never claims a mount it does not have.
Everything here blocks: the agent runs it in a worker thread before its node takes work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from batchyard.models.mounts import relative_path
from batchyard.storage.mountpoints import unmount_below

log = logging.getLogger("batchyard.agent.mounts")

#: Seconds one mount command may take (an unreachable NFS server otherwise retries for minutes).
MOUNT_TIMEOUT = 30.0
ERROR_CODE = "MountConfigurationError"
ERROR_MESSAGE = "The node could not mount a file system of the pool's mount configuration"


@dataclass(frozen=True)
class MountFailure(Exception):
    relative_path: str
    kind: str
    reason: str

    def error(self) -> dict[str, Any]:
        """The node error the server shows in the node's `errors`."""
        return {
            "code": ERROR_CODE,
            "message": ERROR_MESSAGE,
            "errorDetails": [
                {"name": "RelativeMountPath", "value": self.relative_path},
                {"name": "MountType", "value": self.kind},
                {"name": "Reason", "value": self.reason[:1000]},
            ],
        }


def mounts_dir(root: Path) -> Path:
    return root / "fsmounts"


def unmount_all(root: Path) -> None:
    """Detach every mount below the node's mounts directory (a stale one from an earlier agent, or at exit)."""
    unmount_below(mounts_dir(root))


def _run(cmd: list[str], rel: str, kind: str, env: dict[str, str] | None = None) -> None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=MOUNT_TIMEOUT, check=False, env=env)
    except subprocess.TimeoutExpired:
        raise MountFailure(
            rel, kind, f"The mount did not complete within {MOUNT_TIMEOUT:.0f} seconds"
        ) from None
    except OSError as e:
        raise MountFailure(rel, kind, f"{cmd[0]}: {e.strerror}") from None
    if p.returncode != 0:
        out = (p.stderr or p.stdout or "").strip() or f"exit code {p.returncode}"
        raise MountFailure(rel, kind, f"{Path(cmd[0]).name} failed: {out}")


def _need(tool: str, rel: str, kind: str, package: str) -> str:
    import shutil  # loaded only on a node with a mountConfiguration

    found = shutil.which(tool) or shutil.which(tool, path="/sbin:/usr/sbin:/usr/local/sbin")
    if found is None:
        raise MountFailure(rel, kind, f"{tool} is not installed on this host (Debian package {package})")
    return found


def _privileged(rel: str, kind: str) -> None:
    if os.geteuid() != 0:
        raise MountFailure(rel, kind, "Mounting needs root: this node's agent runs unprivileged")


def _secret_file(private: Path, text: str) -> Path:
    import tempfile  # loaded only on a node with a mountConfiguration

    fd, name = tempfile.mkstemp(dir=private, prefix="cred-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(name, 0o600)
    return Path(name)


def _options(*parts: str | None) -> list[str]:
    """One `-o a,b` from option strings written either as `a,b` or as `-o a,b` (the service's examples)."""
    clean = []
    for p in parts:
        text = (p or "").strip()
        if text.startswith("-o"):
            text = text[2:].strip()
        if text:
            clean.append(text)
    return ["-o", ",".join(clean)] if clean else []


def _cifs(
    source: str,
    target: Path,
    user: str,
    password: str,
    options: str | None,
    private: Path,
    rel: str,
    kind: str,
) -> None:
    _privileged(rel, kind)
    _need("mount.cifs", rel, kind, "cifs-utils")
    creds = _secret_file(private, f"username={user}\npassword={password}\n")
    try:
        _run(
            ["mount", "-t", "cifs", source, str(target), *_options(f"credentials={creds}", options)],
            rel,
            kind,
        )
    finally:
        creds.unlink(missing_ok=True)


def _blobfuse(conf: dict[str, Any], target: Path, private: Path, rel: str, kind: str) -> None:
    import shutil  # loaded only on a node with a mountConfiguration

    _privileged(rel, kind)
    tool = shutil.which("blobfuse2") or shutil.which("blobfuse")
    if tool is None:
        raise MountFailure(rel, kind, "blobfuse2 is not installed on this host (Microsoft package blobfuse2)")
    account, container = str(conf["accountName"]), str(conf["containerName"])
    if Path(tool).name == "blobfuse2":
        auth = (
            f"    mode: sas\n    sas: {conf['sasKey']}\n"
            if conf.get("sasKey")
            else f"    mode: key\n    account-key: {conf.get('accountKey', '')}\n"
        )
        cache = private / f"cache-{abs(hash(rel))}"
        cache.mkdir(mode=0o700, exist_ok=True)
        config = _secret_file(
            private,
            "components:\n  - libfuse\n  - file_cache\n  - attr_cache\n  - azstorage\n"
            f"file_cache:\n  path: {cache}\n"
            f"azstorage:\n  type: block\n  account-name: {account}\n  container: {container}\n{auth}",
        )
        cmd = [
            tool,
            "mount",
            str(target),
            f"--config-file={config}",
            *str(conf.get("blobfuseOptions") or "").split(),
        ]
    else:
        key = (
            f"accountKey {conf['accountKey']}\n"
            if conf.get("accountKey")
            else f"sasToken {conf.get('sasKey', '')}\n"
        )
        config = _secret_file(private, f"accountName {account}\ncontainerName {container}\n{key}")
        cmd = [tool, str(target), f"--config-file={config}", *str(conf.get("blobfuseOptions") or "").split()]
    try:
        _run(cmd, rel, kind)
    finally:
        config.unlink(missing_ok=True)


def mount_one(entry: dict[str, Any], root: Path) -> None:
    """Mount one entry; raises MountFailure saying why it could not."""
    kind, conf = next(iter(entry.items()))
    rel = relative_path(str(conf.get("relativeMountPath", "")))
    base = mounts_dir(root)
    target = base / rel
    if not rel or not os.path.realpath(target).startswith(os.path.realpath(base) + "/"):
        raise MountFailure(rel, kind, "The mount path leaves the node's mounts directory")
    target.mkdir(parents=True, exist_ok=True)
    private = root / "volatile" / "mounts"
    private.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(private, 0o700)
    if kind == "nfsMountConfiguration":
        _privileged(rel, kind)
        _need("mount.nfs", rel, kind, "nfs-common")
        _run(
            ["mount", "-t", "nfs", str(conf["source"]), str(target), *_options(conf.get("mountOptions"))],
            rel,
            kind,
        )
    elif kind == "cifsMountConfiguration":
        _cifs(
            str(conf["source"]),
            target,
            str(conf["username"]),
            str(conf["password"]),
            conf.get("mountOptions"),
            private,
            rel,
            kind,
        )
    elif kind == "azureFileShareConfiguration":
        url = urlparse(str(conf["azureFileUrl"]))
        source = f"//{url.hostname}{url.path}"
        opts = ",".join(
            x for x in ("vers=3.0,dir_mode=0777,file_mode=0777,serverino", conf.get("mountOptions")) if x
        )
        _cifs(source, target, str(conf["accountName"]), str(conf["accountKey"]), opts, private, rel, kind)
    elif kind == "azureBlobFileSystemConfiguration":
        _blobfuse(conf, target, private, rel, kind)
    else:
        raise MountFailure(rel, kind, "Unknown file system type")
    if not os.path.ismount(target):
        raise MountFailure(rel, kind, "The mount command succeeded but nothing is mounted there")


def mount_all(entries: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """Mount every entry (after detaching stale mounts); returns the node errors, empty when all are mounted.
    On a failure the mounts made so far are detached again: the node has all of them or none."""
    unmount_all(root)
    mounts_dir(root).mkdir(parents=True, exist_ok=True)
    for entry in entries:
        try:
            mount_one(entry, root)
        except MountFailure as f:
            unmount_all(root)
            return [f.error()]
        except (OSError, KeyError, ValueError) as e:  # a malformed entry or a file system refusal
            unmount_all(root)
            kind = next(iter(entry), "")
            rel = str((entry.get(kind) or {}).get("relativeMountPath", ""))
            return [MountFailure(rel, kind, str(e)).error()]
    return []


class NodeMounts:
    """The agent's side of the mount exchange with the server (service.nodemounts).

    Until it knows its pool's configuration the agent says `unknown` on its syncs; the server holds the node in
    `starting` and replies with the configuration; the agent mounts in a worker thread (`pending`) and then
    reports `ok` (and stops sending the field) or `failed` with the node errors (the node becomes unusable).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = "unknown"
        self.errors: list[dict[str, Any]] = []
        self._work: asyncio.Task[None] | None = None

    def report(self) -> dict[str, Any] | None:
        """The `mounts` field of the next sync body (None once mounted)."""
        if self.state == "ok":
            return None
        return {"state": self.state, "errors": self.errors}

    def receive(self, reply: dict[str, Any], send: Callable[[], Awaitable[object]]) -> None:
        """A sync reply: start mounting when it carries the configuration."""
        entries = reply.get("mountConfiguration")
        if self.state != "unknown" or not isinstance(entries, list):
            return
        if not entries:
            self.state = "ok"
            return
        self.state = "pending"
        self._work = asyncio.ensure_future(self._mount(entries, send))

    async def _mount(self, entries: list[dict[str, Any]], send: Callable[[], Awaitable[object]]) -> None:
        self.errors = await asyncio.to_thread(mount_all, entries, self.root)
        self.state = "failed" if self.errors else "ok"
        if self.errors:
            log.error("mounts failed: %s", self.errors[0]["errorDetails"])
        await send()

    async def close(self) -> None:
        if self._work is not None:
            self._work.cancel()
        await asyncio.to_thread(unmount_all, self.root)
