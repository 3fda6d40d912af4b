"""A node directory is deleted only once nothing is mounted inside it: a share mounted under `fsmounts` is
detached first, so deleting the node never deletes into the share (storage.mountpoints, used by the pool
manager before it removes a node's directory and by the agent before and after mounting)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from batchyard.agent.mounts import mount_all
from batchyard.storage.mountpoints import mounted_under, unmount_below


def _bind(src: Path, target: Path) -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("these tests mount: they run as root")
        pytest.skip("needs root to mount")
    target.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(src), str(target)], check=True)


def test_unmount_below_detaches_before_a_delete(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "precious.txt").write_text("keep")
    root = tmp_path / "node"
    target = root / "fsmounts" / "data"
    _bind(share, target)
    try:
        assert (target / "precious.txt").read_text() == "keep"
        assert mounted_under(root) == [target]
        assert unmount_below(root) == []
        shutil.rmtree(root)
        assert (share / "precious.txt").read_text() == "keep"  # the share is untouched
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


def test_a_failed_mount_leaves_none_behind(tmp_path: Path) -> None:
    """The node has all of its mounts or none: a later entry failing detaches the earlier ones."""
    share = tmp_path / "share"
    share.mkdir()
    root = tmp_path / "node"
    stale = root / "fsmounts" / "stale"
    _bind(share, stale)  # left by an earlier agent of the node: detached before mounting again
    entries = [
        {
            "nfsMountConfiguration": {
                "source": "127.0.0.1:/none",
                "relativeMountPath": "n",
                "mountOptions": "-o timeo=5,retrans=0,soft",
            }
        }
    ]
    errors = mount_all(entries, root)
    assert errors and errors[0]["code"] == "MountConfigurationError"
    assert mounted_under(root) == []


def test_paths_outside_the_mounts_dir_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "node"
    (root / "fsmounts").mkdir(parents=True)
    (root / "fsmounts" / "link").symlink_to(tmp_path)  # a link planted to leave the directory
    errors = mount_all([{"nfsMountConfiguration": {"source": "h:/x", "relativeMountPath": "link/x"}}], root)
    details = {d["name"]: d["value"] for d in errors[0]["errorDetails"]}
    assert "leaves" in details["Reason"]
