"""Mount points below a directory, and detaching them: a node directory is never deleted while a file system
of its pool's mountConfiguration is still mounted inside it (deleting would reach into the share)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

#: Seconds one umount may take.
UMOUNT_TIMEOUT = 30.0


def mounted_under(path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest first (from /proc/self/mounts; none where it is unreadable)."""
    base = os.path.realpath(path)
    found: list[Path] = []
    try:
        text = Path("/proc/self/mounts").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        point = parts[1].replace("\\040", " ")
        if point == base or point.startswith(base + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(str(p)), reverse=True)


def unmount_below(path: Path) -> list[Path]:
    """Lazily detach every mount at or below `path`; returns the mount points still attached afterwards."""
    for point in mounted_under(path):
        try:
            subprocess.run(
                ["umount", "-l", str(point)], capture_output=True, timeout=UMOUNT_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
    return mounted_under(path)
