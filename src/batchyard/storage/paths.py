"""Where staged files may go: nothing is ever written outside the directory a task owns.

`filePath` and blob names come from users, so each one is split into segments and checked before any byte is
written: no absolute paths, no ``..``, no NUL. Empty and ``.`` segments are dropped (``a//b`` is ``a/b``, as a
blob name ``a//b`` would land on a Linux node). `safe_target` then re-checks the real location after the
directories are created, so a symlink planted in the working directory cannot redirect a download.
"""

from __future__ import annotations

import os
from pathlib import Path


class PathRefused(ValueError):
    """A user-given path that would leave its directory."""


def relative_segments(path: str) -> list[str]:
    """The checked segments of a relative path (``filePath``, a blob name below the target directory)."""
    if "\x00" in path:
        raise PathRefused("the path contains a NUL character")
    if path.startswith("/"):
        raise PathRefused("the path must be relative to the task working directory")
    segments = [s for s in path.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise PathRefused("the path must not contain '..' (it would leave the task working directory)")
    return segments


def check_relative_path(path: str) -> None:
    relative_segments(path)


def blob_path_segments(name: str) -> list[str]:
    """A blob name as relative path segments; leading slashes are part of the blob name, not a root."""
    return relative_segments(name.lstrip("/"))


def join_checked(root: Path, *parts: str) -> Path:
    """``root`` joined with each relative part after checking it (pure: no file system access)."""
    out = root
    for part in parts:
        for seg in relative_segments(part):
            out = out / seg
    return out


def safe_target(root: Path, target: Path) -> Path:
    """Create ``target``'s parent directories and make sure the real parent is still inside ``root``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(target.parent)
    if real_parent != real_root and not real_parent.startswith(real_root + os.sep):
        raise PathRefused(f"'{target}' resolves outside '{root}' (through a symbolic link)")
    return Path(real_parent) / target.name
