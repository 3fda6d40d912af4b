"""Node users as real accounts of this host (decision 0131): local nodes share the host, so a node user is a
host account made with the shadow tools (`useradd`, `usermod`, `chpasswd`, `userdel`).

Each account carries a marker in its GECOS field (`batchyard <data dir tag> <node id>`): an account of the same
name that is not this node's is a clash (409), and accounts of removed nodes (or left by a crash between
creating the account and recording it) are found again and deleted. Only root can do any of this; otherwise
the operations are refused with the reason. Calls block (subprocesses): run them in a worker thread.
"""

from __future__ import annotations

import asyncio
import datetime
import grp
import logging
import os
import pwd
import shutil
import stat
import subprocess
import threading
import zlib
from pathlib import Path

import psutil

from batchyard.models import errors

log = logging.getLogger("batchyard.pools")

_TOOLS = ("useradd", "usermod", "userdel", "chpasswd")
_ADMIN_GROUP = "sudo"
_TIMEOUT = 30.0
# one change of /etc/passwd at a time (the shadow tools lock it too, and fail rather than wait)
_lock = threading.Lock()


class HostAccounts:
    def __init__(self, data_dir: Path) -> None:
        self.tag = f"{zlib.crc32(str(data_dir.resolve()).encode()):08x}"

    def marker(self, node_id: str) -> str:
        return f"batchyard {self.tag} {node_id}"

    @staticmethod
    def unavailable() -> str | None:
        """Why node users cannot be made on this host, or None."""
        if os.geteuid() != 0:
            return (
                "node users are real accounts on this host: the batchyard server must run as root to create "
                "them (it runs as an unprivileged user)"
            )
        missing = [t for t in _TOOLS if shutil.which(t) is None]
        if missing:
            return f"node users need the shadow tools on this host; missing: {', '.join(missing)}"
        return None

    def _require(self) -> None:
        why = self.unavailable()
        if why is not None:
            raise errors.node_access_unavailable(why)

    @staticmethod
    def _gecos(name: str) -> str | None:
        try:
            return pwd.getpwnam(name).pw_gecos
        except KeyError:
            return None

    def create(
        self,
        node_id: str,
        name: str,
        *,
        is_admin: bool,
        expiry: datetime.datetime,
        password: str | None,
        ssh_key: str | None,
    ) -> None:
        self._require()
        if is_admin:
            try:
                grp.getgrnam(_ADMIN_GROUP)
            except KeyError:
                raise errors.node_access_unavailable(
                    f"isAdmin needs a '{_ADMIN_GROUP}' group on this host (an admin node user gets sudo)"
                ) from None
        with _lock:
            gecos = self._gecos(name)
            if gecos is not None and gecos != self.marker(node_id):
                raise errors.node_user_exists(
                    f"This host already has an account named {name} (another node's or the host's own): local "
                    "nodes share the host's accounts, so a node user name must be free on the host"
                )
            if gecos is None and _group_exists(name):
                raise errors.node_user_exists(
                    f"This host already has a group named {name}: a node user gets a group of its own name, so "
                    "the name must be free on the host"
                )
            if gecos is None:
                args = ["useradd", "-m", "-s", "/bin/bash", "-c", self.marker(node_id), "-e", _day(expiry)]
                if is_admin:
                    args += ["-G", _ADMIN_GROUP]
                _run([*args, name])
            self._apply(name, expiry, password, ssh_key)

    def replace(
        self, node_id: str, name: str, *, expiry: datetime.datetime, password: str | None, ssh_key: str | None
    ) -> None:
        """PUT replaces password, key and expiry; an omitted password or key is removed (as on the service)."""
        self._require()
        with _lock:
            if self._gecos(name) != self.marker(node_id):
                raise errors.node_user_not_found()
            self._apply(name, expiry, password, ssh_key)

    def delete(self, node_id: str, name: str) -> bool:
        """Delete the account if it is this node's; False if there was none."""
        self._require()
        with _lock:
            if self._gecos(name) != self.marker(node_id):
                return False
            _delete(name)
            return True

    def remove_node(self, node_id: str) -> int:
        """Delete every account of a node (it left its pool, or its pool was deleted)."""
        if self.unavailable() is not None:
            return 0
        mark = self.marker(node_id)
        with _lock:
            names = [p.pw_name for p in pwd.getpwall() if p.pw_gecos == mark]
            for name in names:
                _delete(name)
        return len(names)

    def sweep(self, recorded: dict[str, set[str]]) -> int:
        """After a start: delete this data dir's accounts that no node records (node gone, or a crash)."""
        if self.unavailable() is not None:
            return 0
        prefix = f"batchyard {self.tag} "
        with _lock:
            stale = [
                p.pw_name
                for p in pwd.getpwall()
                if p.pw_gecos.startswith(prefix)
                and p.pw_name not in recorded.get(p.pw_gecos[len(prefix) :], set())
            ]
            for name in stale:
                _delete(name)
        if stale:
            log.info(
                "deleted %d node user account(s) of nodes that are gone: %s", len(stale), ", ".join(stale)
            )
        return len(stale)

    def _apply(self, name: str, expiry: datetime.datetime, password: str | None, ssh_key: str | None) -> None:
        _run(["usermod", "-e", _day(expiry), name])
        if password is not None:
            _run(["chpasswd"], stdin=f"{name}:{password}\n")
        else:
            _run(["usermod", "-p", "*", name])  # no password login (and not '!', which also locks keys)
        try:
            _write_authorized_keys(name, ssh_key)
        except OSError as e:
            raise errors.node_access_unavailable(f"cannot write ~{name}/.ssh/authorized_keys: {e}") from None


def remove_node_users(accounts: HostAccounts, node_id: str) -> None:
    """Delete a node's accounts without blocking the event loop (in a worker thread when one runs)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        accounts.remove_node(node_id)
        return
    loop.run_in_executor(None, accounts.remove_node, node_id)


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _day(expiry: datetime.datetime) -> str:
    """Accounts expire on a day (Linux precision): the first day the account no longer works."""
    utc = expiry.astimezone(datetime.UTC)
    day = utc.date()
    if utc.time() != datetime.time(0, 0):
        day += datetime.timedelta(days=1)
    return day.isoformat()


def _run(args: list[str], stdin: str | None = None) -> None:
    try:
        p = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise errors.node_access_unavailable(f"{args[0]} failed: {e}") from None
    if p.returncode != 0:
        raise errors.node_access_unavailable(f"{args[0]} failed: {p.stderr.strip()[:300]}")


def _delete(name: str) -> None:
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return
    for proc in psutil.process_iter(["uids"]):  # its sessions and what they left running
        try:
            if proc.info["uids"] and proc.info["uids"].real == uid:
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    try:
        _run(["userdel", "-f", "-r", name])
    except errors.BatchError as e:
        log.warning("could not delete node user %s: %s", name, dict(e.values).get("Reason"))


def _write_authorized_keys(name: str, key: str | None) -> None:
    """`~/.ssh/authorized_keys` holds exactly the node user's key; written through directory descriptors
    without following links, because the home directory belongs to the user, not to root."""
    pw = pwd.getpwnam(name)
    home = os.open(pw.pw_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if key is None:
            try:
                ssh = os.open(".ssh", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=home)
            except (FileNotFoundError, NotADirectoryError):
                return
            try:
                os.unlink("authorized_keys", dir_fd=ssh)
            except FileNotFoundError:
                pass
            finally:
                os.close(ssh)
            return
        try:
            os.mkdir(".ssh", 0o700, dir_fd=home)
        except FileExistsError:
            pass
        ssh = os.open(".ssh", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=home)
        try:
            st = os.fstat(ssh)
            if not stat.S_ISDIR(st.st_mode):
                raise errors.node_access_unavailable(f"~{name}/.ssh is not a directory")
            os.fchown(ssh, pw.pw_uid, pw.pw_gid)
            os.fchmod(ssh, 0o700)
            tmp = f".authorized_keys.{os.getpid()}"
            try:
                os.unlink(tmp, dir_fd=ssh)  # left by a crash
            except FileNotFoundError:
                pass
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=ssh)
            try:
                os.write(fd, (key + "\n").encode())
                os.fchown(fd, pw.pw_uid, pw.pw_gid)
            finally:
                os.close(fd)
            os.rename(tmp, "authorized_keys", src_dir_fd=ssh, dst_dir_fd=ssh)
        finally:
            os.close(ssh)
    finally:
        os.close(home)
