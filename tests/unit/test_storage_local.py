"""file:// resource files and output destinations (the batchyard-only extension) on the local file system."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from batchyard.storage import (
    UPLOAD_ERROR_LOG,
    UPLOAD_LOG,
    StagingOptions,
    download_resource_files,
    parse_output_file,
    parse_resource_file,
    upload_output_files,
)


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def test_file_url_file_and_directory(tmp_path: Path) -> None:
    src = tmp_path / "share"
    _tree(src, {"in/a.txt": b"a", "in/deep/b.txt": b"b", "other/c.txt": b"c", "top.bin": b"t"})
    wd = tmp_path / "task" / "wd"
    files = [
        parse_resource_file(
            {"httpUrl": f"file://{src}/top.bin", "filePath": "t/top.bin", "fileMode": "0600"}
        ),
        parse_resource_file(
            {"storageContainerUrl": f"file://{src}", "blobPrefix": "in/", "filePath": "inputs"}
        ),
        parse_resource_file({"storageContainerUrl": f"file://{src}"}),
    ]
    res = asyncio.run(download_resource_files(files, wd))
    assert res.ok, res.failure
    assert (wd / "t/top.bin").read_bytes() == b"t"
    assert stat.S_IMODE((wd / "t/top.bin").stat().st_mode) == 0o600
    # the blob prefix filters; the directory structure (prefix included) is kept under filePath
    assert (wd / "inputs/in/a.txt").read_bytes() == b"a"
    assert (wd / "inputs/in/deep/b.txt").read_bytes() == b"b"
    assert not (wd / "inputs/other").exists()
    assert {p.relative_to(wd).as_posix() for p in wd.rglob("*") if p.is_file()} >= {
        "in/a.txt",
        "in/deep/b.txt",
        "other/c.txt",
        "top.bin",
    }
    assert stat.S_IMODE((wd / "in/deep/b.txt").stat().st_mode) == 0o770


def test_file_url_failures(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    _tree(allowed, {"x.txt": b"x"})
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"s")
    opts = StagingOptions(local_roots=(allowed,))
    wd = tmp_path / "wd"

    def code(body: dict[str, object]) -> str | None:
        res = asyncio.run(download_resource_files([parse_resource_file(body)], wd, opts))
        return res.failure.code if res.failure else None

    assert code({"httpUrl": f"file://{allowed}/x.txt", "filePath": "x.txt"}) is None
    assert code({"httpUrl": f"file://{allowed}/nope.txt", "filePath": "n.txt"}) == "BlobNotFound"
    assert code({"httpUrl": f"file://{allowed}", "filePath": "d"}) == "BlobNotFound"  # a directory
    assert code({"httpUrl": f"file://{secret}", "filePath": "s.txt"}) == "BlobAccessDenied"
    assert code({"httpUrl": f"file://{allowed}/../secret.txt", "filePath": "s.txt"}) == "BlobAccessDenied"
    assert code({"storageContainerUrl": f"file://{allowed}/missing"}) == "ResourceContainerNotFound"
    assert code({"storageContainerUrl": f"file://{tmp_path}"}) == "ResourceContainerAccessDenied"
    # a symbolic link inside an allowed directory does not open the rest of the host
    (allowed / "link.txt").symlink_to(secret)
    assert code({"httpUrl": f"file://{allowed}/link.txt", "filePath": "s.txt"}) == "BlobAccessDenied"
    assert code({"storageContainerUrl": f"file://{allowed}"}) == "BlobAccessDenied"
    assert not (wd / "s.txt").exists()


def _of(pattern: str, url: str, path: str | None = None, condition: str = "taskcompletion") -> object:
    container: dict[str, object] = {"containerUrl": url}
    if path:
        container["path"] = path
    return parse_output_file(
        {
            "filePattern": pattern,
            "destination": {"container": container},
            "uploadOptions": {"uploadCondition": condition},
        }
    )


def test_upload_to_a_directory_with_logs(tmp_path: Path) -> None:
    task = tmp_path / "task"
    wd = task / "wd"
    _tree(
        task,
        {
            "stdout.txt": b"out",
            "stderr.txt": b"err",
            "wd/r/a.csv": b"1",
            "wd/r/s/b.csv": b"2",
            "wd/x.log": b"l",
        },
    )
    dest = tmp_path / "results"
    dest.mkdir()
    url = f"file://{dest}"
    outputs = [
        _of("../std*.txt", url, "mytask"),
        _of("r/**/*.csv", url, "csv"),
        _of("x.log", url, "logs/run.log"),
        _of("x.log", url),
        _of("*.never", url),
        _of("x.log", url, "failure-only", condition="taskfailure"),
    ]
    res = asyncio.run(upload_output_files(outputs, task_dir=task, working_dir=wd, env={}, exit_code=0))
    assert res.attempted and res.ok, res.failure
    names = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert names == [
        "csv/a.csv",
        "csv/s/b.csv",
        "logs/run.log",
        "mytask/stderr.txt",
        "mytask/stdout.txt",
        "x.log",
    ]
    assert (dest / "mytask/stdout.txt").read_bytes() == b"out"
    log = (task / UPLOAD_LOG).read_text()
    assert "Uploaded" in log and "No files matched the pattern '*.never'" in log
    assert (task / UPLOAD_ERROR_LOG).read_text() == ""
    assert len(res.uploaded) == 6


def test_upload_not_attempted_writes_no_logs(tmp_path: Path) -> None:
    task = tmp_path / "task"
    (task / "wd").mkdir(parents=True)
    outputs = [_of("*", f"file://{tmp_path}", condition="tasksuccess")]
    res = asyncio.run(
        upload_output_files(outputs, task_dir=task, working_dir=task / "wd", env={}, exit_code=3)
    )
    assert not res.attempted and res.ok
    assert not (task / UPLOAD_LOG).exists() and not (task / UPLOAD_ERROR_LOG).exists()
    res = asyncio.run(
        upload_output_files(outputs, task_dir=task, working_dir=task / "wd", env={}, exit_code=None)
    )
    assert not res.attempted


def test_upload_to_a_missing_directory_fails_but_others_still_upload(tmp_path: Path) -> None:
    task = tmp_path / "task"
    _tree(task, {"wd/a.txt": b"a"})
    good = tmp_path / "good"
    good.mkdir()
    outputs = [_of("a.txt", f"file://{tmp_path}/missing"), _of("a.txt", f"file://{good}")]
    res = asyncio.run(
        upload_output_files(outputs, task_dir=task, working_dir=task / "wd", env={}, exit_code=0)
    )
    assert res.failure is not None
    assert res.failure.code == "FileUploadContainerNotFound" and res.failure.kind.value == "fileUploadError"
    assert res.failure.category == "usererror"
    assert (good / "a.txt").read_bytes() == b"a"
    assert "FileUploadContainerNotFound" in (task / UPLOAD_ERROR_LOG).read_text()


def test_unwritable_task_dir_is_an_upload_failure_not_an_exception(tmp_path: Path) -> None:
    task = tmp_path / "task"
    _tree(task, {"wd/a.txt": b"a"})
    (task / UPLOAD_LOG).mkdir()  # the log cannot be opened as a file
    res = asyncio.run(
        upload_output_files(
            [_of("a.txt", f"file://{tmp_path}")], task_dir=task, working_dir=task / "wd", env={}, exit_code=0
        )
    )
    assert res.attempted and res.failure is not None and res.failure.code == "FileUploadMiscError"
