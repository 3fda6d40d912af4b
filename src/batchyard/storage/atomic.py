"""Files appear under their final name only when complete.

Bytes go to a hidden temporary name in the target's own directory (same file system, so the final `os.rename`
is atomic); an error or a cancellation removes it, and a process killed mid-write leaves only the hidden
temporary, never a half file under the name a task reads.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import BinaryIO

_PARTIAL = ".partial"


def temp_name(target: Path) -> Path:
    stem = target.name[:200]
    return target.with_name(f".{stem}.{secrets.token_hex(4)}{_PARTIAL}")


_TEMP = re.compile(r"^\..+\.[0-9a-f]{8}\.partial$", re.DOTALL)


def is_temp_name(name: str) -> bool:
    return _TEMP.match(name) is not None


def sweep_partials(root: Path, older_than: float = 0.0) -> int:
    """Remove the temporaries a killed process left under ``root`` (not modified for ``older_than`` seconds).

    For the agent before a retry reuses a task's directories; returns how many were removed.
    """
    removed = 0
    cutoff = time.time() - older_than
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if is_temp_name(name):
                p = Path(dirpath, name)
                try:
                    if older_than <= 0 or p.lstat().st_mtime < cutoff:
                        p.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass
    return removed


class AtomicFile:
    """A write-only file that becomes ``target`` on `commit` and vanishes on `abort`."""

    def __init__(self, target: Path, mode: int = 0o644) -> None:
        self.target = target
        self.mode = mode
        self.tmp = temp_name(target)
        self.size = 0
        self._fd: int | None = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)

    def write(self, data: bytes | memoryview) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.size += len(data)

    def commit(self) -> None:
        assert self._fd is not None
        fd, self._fd = self._fd, None
        try:
            os.fchmod(fd, self.mode)
        finally:
            os.close(fd)
        os.rename(self.tmp, self.target)

    def abort(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def copy_atomic(source: Path | BinaryIO, target: Path, mode: int) -> int:
    """Copy ``source`` (a path or a file open for reading at offset 0) to ``target`` atomically."""
    tmp = temp_name(target)
    try:
        if isinstance(source, Path):
            with open(source, "rb") as src:
                _clone_or_copy(src, tmp)
        else:
            _clone_or_copy(source, tmp)
        os.chmod(tmp, mode)
        os.rename(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target.stat().st_size


def _clone_or_copy(src: BinaryIO, dest: Path) -> None:
    """A copy-on-write clone when the file system supports it (btrfs, xfs), else a kernel-side copy."""
    with open(dest, "xb") as dst:
        try:
            import fcntl

            ficlone = 0x40049409
            fcntl.ioctl(dst.fileno(), ficlone, src.fileno())
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.EBADF):
                raise
        try:
            while os.sendfile(dst.fileno(), src.fileno(), None, 1 << 24) > 0:
                pass
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            shutil.copyfileobj(src, dst, 1 << 20)
