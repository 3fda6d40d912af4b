"""Application package archives: checked on upload (server) and again before unpacking (agent).

A package is a ``.zip`` (the only format the service accepts). Both sides refuse what could write outside the
folder it is unpacked into or exhaust the node: member names that are absolute or climb out with ``..`` (zip
slip), symbolic links, device files, more than `MAX_ENTRIES` members, more than `MAX_UNPACKED_BYTES` unpacked,
a damaged archive (CRC). Unpacking never follows a link and never writes outside a fresh directory the caller
made; file modes keep only the permission bits of the archive (no setuid/setgid/sticky).
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MAX_ENTRIES = 65_536
MAX_UNPACKED_BYTES = 16 << 30
_CHUNK = 1 << 20


class BadPackage(Exception):
    """The archive is not a package batchyard deploys; ``reason`` says why, in words a user can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Member:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]  # the safe relative path
    is_dir: bool
    mode: int  # permission bits (0 when the archive records none)


@dataclass(frozen=True)
class PackageSummary:
    entries: int
    unpacked_bytes: int


def _safe_parts(name: str) -> tuple[str, ...]:
    if "\x00" in name:
        raise BadPackage(f"The member name {name!r} contains a NUL character.")
    norm = name.replace("\\", "/")  # archives made on Windows may use backslashes
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        raise BadPackage(f"The member {name!r} has an absolute path.")
    parts = tuple(p for p in norm.split("/") if p not in ("", "."))
    if any(p == ".." for p in parts):
        raise BadPackage(f"The member {name!r} points outside the package folder ('..').")
    return parts


def members(zf: zipfile.ZipFile) -> list[Member]:
    """Every member with a safe path, or `BadPackage`."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise BadPackage(f"The archive has {len(infos)} members; at most {MAX_ENTRIES} are allowed.")
    out: list[Member] = []
    total = 0
    seen: dict[tuple[str, ...], bool] = {}
    for info in infos:
        parts = _safe_parts(info.filename)
        unix = info.external_attr >> 16 if info.create_system == 3 else 0
        is_dir = info.is_dir() or stat.S_ISDIR(unix)
        if stat.S_IFMT(unix) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: permission bits only, a file
            kind = "symbolic link" if stat.S_ISLNK(unix) else "special file"
            raise BadPackage(f"The member {info.filename!r} is a {kind}; only files and folders are allowed.")
        if not parts:
            if is_dir:
                continue
            raise BadPackage(f"The member {info.filename!r} has no file name.")
        if parts in seen or any(seen.get(parts[:i]) is False for i in range(1, len(parts))):
            raise BadPackage(f"The member {info.filename!r} collides with another member.")
        seen[parts] = is_dir
        total += info.file_size
        if total > MAX_UNPACKED_BYTES:
            raise BadPackage(f"The archive unpacks to more than {MAX_UNPACKED_BYTES} bytes.")
        out.append(Member(info, parts, is_dir, stat.S_IMODE(unix) & 0o777))
    return out


def check_package(path: Path) -> PackageSummary:
    """Read the whole archive once (CRCs included) and return its size, or raise `BadPackage`."""
    try:
        with zipfile.ZipFile(path) as zf:
            found = members(zf)
            for m in found:
                if m.is_dir:
                    continue
                with zf.open(m.info) as src:
                    while src.read(_CHUNK):
                        pass
    except BadPackage:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError) as e:
        raise BadPackage(f"The body is not a valid zip archive: {e}") from None
    except RuntimeError as e:  # encrypted members
        raise BadPackage(f"The archive cannot be read: {e}") from None
    return PackageSummary(len(found), sum(m.info.file_size for m in found))


def unpack(path: Path, dest: Path, own: Callable[[int, bool], None] | None = None) -> None:
    """Unpack ``path`` into the existing, empty directory ``dest`` made by the caller.

    Directories are made 0750 and files 0640 (0750 when the archive marks them executable) before ``own``
    (called with each new file descriptor and whether it is a directory) hands them to the node's group.
    """
    dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with zipfile.ZipFile(path) as zf:
            for m in members(zf):
                parent = _dirs(dest_fd, m.parts if m.is_dir else m.parts[:-1], own)
                try:
                    if not m.is_dir:
                        _write(zf, m, parent, own)
                finally:
                    if parent != dest_fd:
                        os.close(parent)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError) as e:
        raise BadPackage(f"The archive cannot be unpacked: {e}") from None
    finally:
        os.close(dest_fd)


def _dirs(root_fd: int, parts: tuple[str, ...], own: Callable[[int, bool], None] | None) -> int:
    fd = root_fd
    for p in parts:
        try:
            os.mkdir(p, 0o750, dir_fd=fd)
            made = True
        except FileExistsError:
            made = False
        nxt = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        if made and own is not None:
            own(nxt, True)
        if fd != root_fd:
            os.close(fd)
        fd = nxt
    return fd


def _write(zf: zipfile.ZipFile, m: Member, parent: int, own: Callable[[int, bool], None] | None) -> None:
    mode = 0o750 if m.mode & 0o100 else 0o640
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(m.parts[-1], flags, 0o600, dir_fd=parent)
    try:
        with zf.open(m.info) as src:
            while chunk := src.read(_CHUNK):
                _write_all(fd, chunk)
        os.fchmod(fd, mode)
        if own is not None:
            own(fd, False)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
