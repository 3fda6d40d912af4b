"""Package archives (storage.packages) and the node's naming of deployed packages (agent.apppkg)."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from batchyard.agent.apppkg import Deployed, folder_name, package_env
from batchyard.storage.packages import BadPackage, check_package, unpack


def write_zip(path: Path, *members: tuple[str, bytes, int]) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            zf.writestr(info, data)
    path.write_bytes(buf.getvalue())
    return path


def test_unpack_keeps_structure_and_only_permission_bits(tmp_path: Path) -> None:
    z = write_zip(
        tmp_path / "p.zip",
        ("bin/", b"", stat.S_IFDIR | 0o755),
        ("bin/tool", b"#!/bin/sh\n", stat.S_IFREG | 0o4755),  # setuid in the archive: dropped
        ("share/data.txt", b"d", stat.S_IFREG | 0o666),
        ("./top.txt", b"t", 0),  # no unix attributes (made on Windows)
    )
    assert check_package(z).entries == 4
    dest = tmp_path / "out"
    dest.mkdir()
    unpack(z, dest)
    assert (dest / "bin" / "tool").read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE(os.stat(dest / "bin" / "tool").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(dest / "share" / "data.txt").st_mode) == 0o640
    assert (dest / "top.txt").read_bytes() == b"t"


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/abs/x", "..\\x", "C:/x"])
def test_escaping_names_are_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    z = write_zip(
        tmp_path / "p.zip", ("ok.txt", b"1", stat.S_IFREG | 0o644), (name, b"2", stat.S_IFREG | 0o644)
    )
    with pytest.raises(BadPackage):
        check_package(z)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(BadPackage):
        unpack(z, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "x").exists()


def test_unpack_never_follows_a_link_planted_in_the_destination(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    z = write_zip(tmp_path / "p.zip", ("sub/f.txt", b"x", stat.S_IFREG | 0o644))
    with pytest.raises(OSError):
        unpack(z, dest)
    assert list(outside.iterdir()) == []


def test_folder_names_and_variables() -> None:
    assert folder_name("blender", "2.7", "2019-01-15T09:19:30.1234567Z") == "blender2.72019-01-15-09-19"
    d = Deployed("Flamenco-Worker", "2.2.1", True, Path("/n/applications/x"))
    env = package_env([d])
    assert env == {
        "AZ_BATCH_APP_PACKAGE_Flamenco_Worker_2_2_1": "/n/applications/x",
        "AZ_BATCH_APP_PACKAGE_FLAMENCO_WORKER_2_2_1": "/n/applications/x",
        "AZ_BATCH_APP_PACKAGE_Flamenco_Worker": "/n/applications/x",
        "AZ_BATCH_APP_PACKAGE_FLAMENCO_WORKER": "/n/applications/x",
    }
    pinned = package_env([Deployed("ffmpeg", "4.1#x", False, Path("/p"))])
    assert set(pinned) == {"AZ_BATCH_APP_PACKAGE_ffmpeg_4_1_x", "AZ_BATCH_APP_PACKAGE_FFMPEG_4_1_X"}


def test_uploads_check_and_read_the_file_they_opened(tmp_path: Path) -> None:
    from batchyard.agent.staging import user_can_read_fd
    from batchyard.storage.glob import Matched
    from batchyard.storage.upload import close_opened, open_matched

    good = tmp_path / "good.txt"
    good.write_bytes(b"ok")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    secret = tmp_path / "secret"
    secret.write_bytes(b"root only")
    os.chmod(secret, 0o600)
    other = 1_999_999_999 if os.getuid() != 1_999_999_999 else 1
    skipped: list[tuple[str, str]] = []
    out = open_matched(
        [Matched(p, p.name, True) for p in (good, fifo, secret, tmp_path / "gone")],
        lambda fd: os.fstat(fd).st_mode & 0o004 != 0 or user_can_read_fd(fd, other, frozenset(), tmp_path),
        lambda p, why: skipped.append((p.name, why)),
    )
    good.unlink()
    good.symlink_to(secret)  # swapped after the check: the upload still reads what was checked
    try:
        assert [o.path.name for o in out] == ["good.txt", "gone"]
        assert out[0].file is not None and out[0].file.read() == b"ok"
        assert out[1].file is None  # could not be opened: the upload reports it
        assert skipped == [("pipe", "not a regular file"), ("secret", "the task's user may not read it")]
    finally:
        close_opened(out)
