"""Application packages on the node: deployed into ``$AZ_BATCH_NODE_ROOT_DIR/applications`` and named to tasks
through ``AZ_BATCH_APP_PACKAGE_*`` variables, as on an Azure Batch Linux node (decision 0151).

* Pool packages are installed when the agent starts (`Packages.join`: a node joining, rebooted or reimaged is
  an agent start) before its first sync, so no task reaches the node before them; a package that cannot be
  installed makes the node ``unusable`` with an ``ApplicationPackageError`` node error, until a restart.
* Task packages are installed just before the task runs (`Packages.for_task`); a failure completes the task
  with an ``ApplicationPackageError`` pre-processing failure (never retried).
* A version is unpacked once per node into ``<appId><version><yyyy-mm-dd-HH-MM of its activation>`` (the
  folder name real nodes show) and reused while its content hash is unchanged.
* The zips come from the server over HTTP with the node's token (``/batchyard/agent/v1/packages``): the agent
  never reads the server's data directory, so nodes on other hosts work the same way. Each zip is checked
  again (hash, names, sizes) before it is unpacked into a fresh directory renamed into place when complete.

Variables: ``AZ_BATCH_APP_PACKAGE_<appId>_<version>`` with ``.``, ``-`` and ``#`` mapped to ``_``, set both
case-preserved and upper-cased; when the reference named no version (the default version),
``AZ_BATCH_APP_PACKAGE_<appId>`` as well. Tasks see the pool's packages' variables and their own.
`Packages.pool_env` is what a start task adds to its environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from batchyard.agent.runner import USER_ERROR, FailureInfo
from batchyard.agent.wire import Client, WireError

log = logging.getLogger("batchyard.agent.apppkg")

ENV_PREFIX = "AZ_BATCH_APP_PACKAGE_"
PACKAGES_PATH = "/batchyard/agent/v1/packages"
NOT_FOUND = "The specified application package does not exist."
DOWNLOAD_FAILED = "Resource download failed"
_MAP = re.compile(r"[.\-#]")


def _part(text: str) -> str:
    return _MAP.sub("_", text)


def folder_name(app_id: str, version: str, activated: str) -> str:
    """``blender`` + ``2.7`` + ``2019-01-15-09-19``: how a real node names an unpacked version."""
    try:
        when = datetime.fromisoformat(activated.replace("Z", "")[:26])
        stamp = when.strftime("%Y-%m-%d-%H-%M")
    except ValueError:
        stamp = ""
    return f"{app_id}{version}{stamp}"


@dataclass(frozen=True)
class Deployed:
    application_id: str
    version: str
    defaulted: bool
    path: Path


def package_env(deployed: Iterable[Deployed]) -> dict[str, str]:
    """The ``AZ_BATCH_APP_PACKAGE_*`` variables of the given packages."""
    env: dict[str, str] = {}
    for d in deployed:
        app = _part(d.application_id)
        names = [f"{app}_{_part(d.version)}"]
        if d.defaulted:
            names.append(app)
        for n in names:
            env[ENV_PREFIX + n] = str(d.path)
            env[ENV_PREFIX + n.upper()] = str(d.path)
    return env


class PackageError(Exception):
    def __init__(self, reference: str, reason: str) -> None:
        super().__init__(f"{reference}: {reason}")
        self.reference = reference
        self.reason = reason


def _label(ref: dict[str, Any]) -> str:
    app, ver = str(ref.get("applicationId", "")), ref.get("version")
    return f"{app}:{ver}" if ver else app


def node_error(err: PackageError) -> dict[str, Any]:
    """The node's ``errors[]`` entry for a pool package it could not install (shape seen on real nodes)."""
    return {
        "code": "ApplicationPackageError",
        "message": "One or more application packages specified for the pool are invalid",
        "errorDetails": [
            {"name": "ApplicationPackageReference", "value": err.reference},
            {"name": "Message", "value": err.reason},
        ],
    }


def task_failure(err: PackageError) -> FailureInfo:
    """A task whose package cannot be deployed: a pre-processing error, like a resource file's."""
    return FailureInfo(
        USER_ERROR,
        "ApplicationPackageError",
        "One or more application packages specified for the task are invalid",
        (("ApplicationPackageReference", err.reference), ("Message", err.reason)),
    )


@dataclass
class Packages:
    """One node's deployed packages. ``gid``: the node's group (decision 0010), given the unpacked files."""

    client: Client
    node_id: str
    token: str
    apps_dir: Path
    gid: int | None = None
    pool_deployed: list[Deployed] = field(default_factory=list)
    #: The pool packages' variables: every task on the node gets them (a start task should add them too).
    pool_env: dict[str, str] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"x-batchyard-node-token": self.token, "x-batchyard-node-id": self.node_id}

    # --- the start-up hook

    async def join(self, give_up: Callable[[], bool] = lambda: False) -> list[dict[str, Any]]:
        """Install the pool's packages; the node errors to report ([] when all are installed)."""
        delay = 0.2
        while True:
            try:
                resp = await self.client.get(PACKAGES_PATH, headers=self.headers)
                if resp.status_code == 200:
                    break
                log.warning("pool packages: the server answered %s", resp.status_code)
                if resp.status_code in (401, 403, 404):
                    return []  # the node is gone: the first sync finds out and stops the agent
            except WireError as exc:
                log.info("pool packages: server unreachable: %s", exc)
            if give_up():
                return []
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        data = resp.json()
        errors = [node_error(PackageError(_label(e), NOT_FOUND)) for e in data.get("errors") or []]
        deployed: list[Deployed] = []
        for pkg in data.get("packages") or []:
            try:
                deployed.append(await self.deploy(pkg))
            except PackageError as e:
                errors.append(node_error(e))
        self.pool_deployed = deployed
        self.pool_env = package_env(deployed)
        return errors

    # --- tasks

    async def for_task(self, refs: list[dict[str, Any]]) -> tuple[dict[str, str], FailureInfo | None]:
        """Install a task's packages: their variables, or the failure."""
        deployed = []
        try:
            for ref in refs:
                deployed.append(await self.deploy(await self._resolve(ref)))
        except PackageError as e:
            return {}, task_failure(e)
        return package_env(deployed), None

    async def _resolve(self, ref: dict[str, Any]) -> dict[str, Any]:
        app = str(ref.get("applicationId", ""))
        low = app.lower()
        if app.startswith("/") and "/applications/" in low:  # an ARM resource id names the application last
            app = app[low.rindex("/applications/") + len("/applications/") :].strip("/")
        params = {"version": str(ref["version"])} if ref.get("version") else {}
        try:
            resp = await self.client.get(
                f"{PACKAGES_PATH}/{quote(app, safe='')}", params=params, headers=self.headers
            )
        except WireError as exc:
            raise PackageError(_label(ref), f"{DOWNLOAD_FAILED}: {exc}") from None
        if resp.status_code == 404:
            raise PackageError(_label(ref), NOT_FOUND)
        if resp.status_code != 200:
            raise PackageError(_label(ref), f"{DOWNLOAD_FAILED} (HTTP {resp.status_code})")
        out: dict[str, Any] = resp.json()
        return out

    # --- one version

    async def deploy(self, pkg: dict[str, Any]) -> Deployed:
        """Unpack one resolved version (once per node and content), returning where it is."""
        app, version = str(pkg["applicationId"]), str(pkg["version"])
        label = f"{app}:{version}"
        name = folder_name(app, version, str(pkg.get("activated", "")))
        if "/" in name or name in (".", "..") or name.startswith("."):
            raise PackageError(label, "The package's folder name is not valid.")
        target = self.apps_dir / name
        marker = self.apps_dir / f".{name}.sha256"
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if target.is_dir() and _read(marker) == pkg["sha256"]:
                return Deployed(app, version, bool(pkg.get("defaulted")), target)
            token = os.urandom(4).hex()
            zip_path = self.apps_dir / f".{name}.{token}.partial"
            unpacking = self.apps_dir / f".{name}.{token}.unpacking"
            try:
                await self._download(app, version, str(pkg["sha256"]), zip_path, label)
                await asyncio.to_thread(self._unpack, zip_path, unpacking, label)
                _replace_dir(unpacking, target)
                marker.write_text(str(pkg["sha256"]))
            finally:
                with contextlib.suppress(OSError):
                    zip_path.unlink()  # the zip is removed once unpacked, as agent 1.9.9 does
                _rmtree(unpacking)
        return Deployed(app, version, bool(pkg.get("defaulted")), target)

    async def _download(self, app: str, version: str, sha: str, dest: Path, label: str) -> None:
        url = f"{PACKAGES_PATH}/{quote(app, safe='')}/{quote(version, safe='')}/content"
        import hashlib  # OpenSSL: only on a node that installs packages (decision 0182)

        digest = hashlib.sha256()
        try:
            resp = await self.client.stream(url, headers=self.headers, timeout=60.0, read_timeout=300.0)
            try:
                if resp.status_code == 404:
                    raise PackageError(label, NOT_FOUND)
                if resp.status_code != 200:
                    raise PackageError(label, f"{DOWNLOAD_FAILED} (HTTP {resp.status_code})")
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                try:
                    async for chunk in resp.chunks():
                        digest.update(chunk)
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
            finally:
                await resp.aclose()
        except WireError as exc:
            raise PackageError(label, f"{DOWNLOAD_FAILED}: {exc}") from None
        except OSError as exc:
            raise PackageError(label, f"{DOWNLOAD_FAILED}: {exc.strerror}") from None
        if digest.hexdigest() != sha:
            raise PackageError(label, f"{DOWNLOAD_FAILED}: the content does not match its hash")

    def _unpack(self, zip_path: Path, dest: Path, label: str) -> None:
        gid = self.gid

        def own(fd: int, is_dir: bool) -> None:
            if gid is not None:
                os.fchown(fd, 0, gid)

        from batchyard.storage.packages import BadPackage, unpack  # zipfile: only on a node with packages

        try:  # the hash matched what the server checked; unpacking checks names, types and CRCs again
            os.mkdir(dest, 0o750)
            fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchmod(fd, 0o750)
                own(fd, True)
            finally:
                os.close(fd)
            unpack(zip_path, dest, own)
        except BadPackage as e:
            raise PackageError(label, e.reason) from None
        except OSError as e:
            raise PackageError(label, f"The package could not be unpacked: {e.strerror}") from None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _replace_dir(new: Path, target: Path) -> None:
    """Move a complete unpacked folder into place (an outdated one with the same name is removed)."""
    if target.exists():
        old = target.with_name(f".{target.name}.{os.urandom(4).hex()}.old")
        os.rename(target, old)
        _rmtree(old)
    os.rename(new, target)


def _rmtree(path: Path) -> None:
    import shutil  # loads bz2/lzma: only on a node that installs packages

    shutil.rmtree(path, ignore_errors=True)
