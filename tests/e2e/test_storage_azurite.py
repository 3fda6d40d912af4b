"""batchyard.storage against a real Azurite: every container source, SAS permissions, cache, uploads."""

from __future__ import annotations

import asyncio
import stat
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from batchyard.storage import (
    UPLOAD_ERROR_LOG,
    UPLOAD_LOG,
    DownloadCache,
    DownloadResult,
    OutputFile,
    StagingOptions,
    UploadResult,
    download_resource_files,
    parse_output_file,
    parse_resource_file,
    upload_output_files,
)
from tests.support.azurite import Azurite, azurite_server  # noqa: F401 - provides the azurite fixture

pytestmark = pytest.mark.slow

EXPIRED = timedelta(minutes=-1)


@pytest.fixture
def container(azurite: Azurite) -> str:
    name = f"c{uuid.uuid4().hex[:12]}"
    azurite.create_container(name)
    return name


def opts(azurite: Azurite, **kw: object) -> StagingOptions:
    return StagingOptions(
        auto_storage_connection_string=azurite.connection_string,
        timeout=10.0,
        retries=0,
        **kw,  # type: ignore[arg-type]
    )


def download(azurite: Azurite, wd: Path, *bodies: dict[str, object], **kw: object) -> DownloadResult:
    files = [parse_resource_file(b) for b in bodies]
    return asyncio.run(download_resource_files(files, wd, opts(azurite, **kw)))


def upload(
    azurite: Azurite, task: Path, outputs: list[OutputFile], exit_code: int | None = 0
) -> UploadResult:
    return asyncio.run(
        upload_output_files(
            outputs,
            task_dir=task,
            working_dir=task / "wd",
            env={},
            exit_code=exit_code,
            options=opts(azurite),
        )
    )


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


NESTED = {
    "inputs/a.txt": b"a",
    "inputs/sub/b.txt": b"b",
    "inputs/sub/deeper/c.bin": bytes(range(256)) * 64,
    "inputsX.txt": b"partial-name match",
    "other/d.txt": b"d",
}


def test_container_sas_with_prefix_keeps_the_directory_structure(
    azurite: Azurite, container: str, tmp_path: Path
) -> None:
    for name, data in NESTED.items():
        azurite.put_blob(container, name, data)
    url = azurite.container_sas_url(container, "rl")
    res = download(
        azurite,
        tmp_path / "wd",
        {"storageContainerUrl": url, "blobPrefix": "inputs/", "filePath": "in", "fileMode": "0640"},
        {"storageContainerUrl": url, "blobPrefix": "inputs"},
    )
    assert res.ok, res.failure
    got = files_under(tmp_path / "wd")
    assert got == {
        "in/inputs/a.txt": b"a",
        "in/inputs/sub/b.txt": b"b",
        "in/inputs/sub/deeper/c.bin": NESTED["inputs/sub/deeper/c.bin"],
        # a prefix is a partial name, not only a directory
        "inputs/a.txt": b"a",
        "inputs/sub/b.txt": b"b",
        "inputs/sub/deeper/c.bin": NESTED["inputs/sub/deeper/c.bin"],
        "inputsX.txt": b"partial-name match",
    }
    assert stat.S_IMODE((tmp_path / "wd/in/inputs/sub/b.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "wd/inputsX.txt").stat().st_mode) == 0o770


def test_whole_container_and_auto_storage(azurite: Azurite, container: str, tmp_path: Path) -> None:
    for name, data in NESTED.items():
        azurite.put_blob(container, name, data)
    res = download(
        azurite,
        tmp_path / "wd",
        {"storageContainerUrl": azurite.container_sas_url(container, "rl"), "filePath": "all"},
        {"autoStorageContainerName": container, "blobPrefix": "other/"},
    )
    assert res.ok, res.failure
    got = files_under(tmp_path / "wd")
    assert {k[len("all/") :]: v for k, v in got.items() if k.startswith("all/")} == NESTED
    assert got["other/d.txt"] == b"d"


def test_http_url_with_a_blob_sas(azurite: Azurite, container: str, tmp_path: Path) -> None:
    azurite.put_blob(container, "dir/in put.txt", b"spaces in names")
    url = azurite.blob_sas_url(container, "dir/in put.txt", "r")
    res = download(azurite, tmp_path / "wd", {"httpUrl": url, "filePath": "x/in.txt"})
    assert res.ok, res.failure
    assert (tmp_path / "wd/x/in.txt").read_bytes() == b"spaces in names"


@pytest.mark.parametrize(
    ("kind", "permission", "expiry", "code"),
    [
        ("container", "r", timedelta(hours=1), "ResourceContainerAccessDenied"),  # no list permission
        ("container", "l", timedelta(hours=1), "BlobAccessDenied"),  # can list, cannot read
        ("container", "rl", EXPIRED, "ResourceContainerAccessDenied"),
        ("blob", "r", EXPIRED, "BlobAccessDenied"),
        ("blob", "w", timedelta(hours=1), "BlobAccessDenied"),
    ],
)
def test_sas_without_permission_or_expired(
    azurite: Azurite, container: str, tmp_path: Path, kind: str, permission: str, expiry: timedelta, code: str
) -> None:
    azurite.put_blob(container, "f.txt", b"f")
    if kind == "container":
        body: dict[str, object] = {
            "storageContainerUrl": azurite.container_sas_url(container, permission, expiry)
        }
    else:
        body = {"httpUrl": azurite.blob_sas_url(container, "f.txt", permission, expiry), "filePath": "f.txt"}
    res = download(azurite, tmp_path / "wd", body)
    assert res.failure is not None and res.failure.code == code, res.failure
    assert res.failure.category == "usererror"
    assert not (tmp_path / "wd/f.txt").exists()
    # the SAS signature never appears in what is reported
    assert all("sig=" not in v for _, v in res.failure.details)


def test_missing_container_and_blob(azurite: Azurite, container: str, tmp_path: Path) -> None:
    missing = f"m{uuid.uuid4().hex[:12]}"
    res = download(azurite, tmp_path / "a", {"storageContainerUrl": azurite.container_sas_url(missing)})
    assert res.failure is not None and res.failure.code == "ResourceContainerNotFound"
    res = download(azurite, tmp_path / "b", {"autoStorageContainerName": missing})
    assert res.failure is not None and res.failure.code == "ResourceContainerNotFound"
    url = azurite.blob_sas_url(container, "no-such-blob.txt")
    res = download(azurite, tmp_path / "c", {"httpUrl": url, "filePath": "n.txt"})
    assert res.failure is not None and res.failure.code == "BlobNotFound"
    assert ("FilePath", "n.txt") in res.failure.details


def test_auto_storage_not_configured(tmp_path: Path) -> None:
    res = asyncio.run(
        download_resource_files(
            [parse_resource_file({"autoStorageContainerName": "inputs"})], tmp_path / "wd", StagingOptions()
        )
    )
    assert res.failure is not None and res.failure.code == "ResourceContainerNotFound"
    assert any("auto-storage" in v for _, v in res.failure.details)


def test_empty_prefix_match_downloads_nothing(azurite: Azurite, container: str, tmp_path: Path) -> None:
    azurite.put_blob(container, "a.txt", b"a")
    res = download(
        azurite,
        tmp_path / "wd",
        {"storageContainerUrl": azurite.container_sas_url(container), "blobPrefix": "zzz"},
    )
    assert res.ok and res.files == ()


def test_blob_names_stay_inside_the_directory(azurite: Azurite, container: str, tmp_path: Path) -> None:
    """Storage refuses '..' segments in blob names (the pure path tests cover a store that would not); odd
    but legal names (double slashes, a leading slash, dots) land below the target directory."""
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError):
        azurite.put_blob(container, "ok/../../escape.txt", b"evil")
    for name in ("a//b.txt", "/lead.txt", "dir/", "sp ace/%41.txt"):
        azurite.put_blob(container, name, name.encode())
    wd = tmp_path / "task" / "wd"
    res = download(azurite, wd, {"storageContainerUrl": azurite.container_sas_url(container)})
    assert res.ok, res.failure
    assert sorted(res.files) == ["a/b.txt", "lead.txt", "sp ace/%41.txt"]  # "dir/" is a directory marker
    assert (wd / "sp ace/%41.txt").read_bytes() == b"sp ace/%41.txt"
    assert all((wd / f).resolve().is_relative_to(wd.resolve()) for f in res.files)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        f"task/wd/{f}" for f in res.files
    )


def test_cache_fetches_a_shared_blob_once(azurite: Azurite, container: str, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    azurite.put_blob(container, "shared/model.bin", data)
    cache = DownloadCache(tmp_path / "cache")
    o = opts(azurite, cache=cache)
    n = 8

    async def tasks() -> list[DownloadResult]:
        firsts = await asyncio.gather(
            *(
                download_resource_files(
                    [
                        parse_resource_file(
                            # each task has its own SAS, as users generate them per task
                            {
                                "storageContainerUrl": azurite.container_sas_url(container),
                                "blobPrefix": "shared/",
                            }
                        )
                    ],
                    tmp_path / f"t{i}" / "wd",
                    o,
                )
                for i in range(n)
            )
        )
        http = await download_resource_files(
            [
                parse_resource_file(
                    {"httpUrl": azurite.blob_sas_url(container, "shared/model.bin"), "filePath": "m.bin"}
                )
            ],
            tmp_path / "h" / "wd",
            o,
        )
        return [*firsts, http]

    results = asyncio.run(tasks())
    assert all(r.ok for r in results), [r.failure for r in results]
    for i in range(n):
        assert (tmp_path / f"t{i}/wd/shared/model.bin").read_bytes() == data
    assert (tmp_path / "h/wd/m.bin").read_bytes() == data
    served = azurite.wait_log_entries("GET", f"/{container}/shared/model.bin", n + 1)
    body_bytes = sum(b for status, b in served if status in (200, 206))
    assert body_bytes == len(data)  # fetched from storage once
    assert sorted(s for s, _ in served).count(304) == n  # the other n tasks validated with If-None-Match
    assert sum(r.bytes_fetched for r in results) == len(data)
    assert sum(r.cache_hits for r in results) == n


def _of(
    pattern: str, url: str, path: str | None = None, headers: list[dict[str, str]] | None = None
) -> OutputFile:
    c: dict[str, object] = {"containerUrl": url}
    if path is not None:
        c["path"] = path
    if headers:
        c["uploadHeaders"] = headers
    return parse_output_file(
        {
            "filePattern": pattern,
            "destination": {"container": c},
            "uploadOptions": {"uploadCondition": "taskcompletion"},
        }
    )


def _task(tmp_path: Path) -> Path:
    task = tmp_path / "task"
    for name, data in {
        "stdout.txt": b"out",
        "stderr.txt": b"err",
        "wd/result.json": b"{}",
        "wd/frames/f1.png": b"1",
        "wd/frames/sub/f2.png": b"2",
        "wd/frames/.tmp.png": b"hidden",
    }.items():
        p = task / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return task


def test_upload_patterns_with_path_prefixes(azurite: Azurite, container: str, tmp_path: Path) -> None:
    task = _task(tmp_path)
    url = azurite.container_sas_url(container, "w")  # the docs' write-only SAS
    outputs = [
        _of("../std*.txt", url, "mytask"),
        _of("frames/**/*.png", url, "job1/frames"),
        _of(
            "result.json",
            url,
            "job1/output/result.json",
            [{"name": "Content-Type", "value": "application/json"}],
        ),
        _of("result.json", url),
    ]
    res = upload(azurite, task, outputs)
    assert res.attempted and res.ok, res.failure
    assert azurite.blob_names(container) == [
        "job1/frames/f1.png",
        "job1/frames/sub/f2.png",
        "job1/output/result.json",
        "mytask/stderr.txt",
        "mytask/stdout.txt",
        "result.json",
    ]
    assert azurite.read_blob(container, "mytask/stdout.txt") == b"out"
    props = azurite.service().get_blob_client(container, "job1/output/result.json").get_blob_properties()
    assert props.content_settings.content_type == "application/json"
    log = (task / UPLOAD_LOG).read_text()
    assert log.count("Uploaded ") == 6 and "sig=" not in log
    assert (task / UPLOAD_ERROR_LOG).read_text() == ""
    assert all("sig=" not in u.destination for u in res.uploaded)


@pytest.mark.parametrize(
    ("permission", "expiry", "missing", "code"),
    [
        ("r", timedelta(hours=1), False, "FileUploadAccessDenied"),  # no write permission
        ("w", EXPIRED, False, "FileUploadAccessDenied"),
        ("w", timedelta(hours=1), True, "FileUploadContainerNotFound"),
    ],
)
def test_upload_failures(
    azurite: Azurite,
    container: str,
    tmp_path: Path,
    permission: str,
    expiry: timedelta,
    missing: bool,
    code: str,
) -> None:
    task = _task(tmp_path)
    name = f"m{uuid.uuid4().hex[:12]}" if missing else container
    res = upload(azurite, task, [_of("result.json", azurite.container_sas_url(name, permission, expiry))])
    assert res.attempted and res.failure is not None
    assert (res.failure.code, res.failure.category, res.failure.kind.value) == (
        code,
        "usererror",
        "fileUploadError",
    )
    assert res.uploaded == ()
    err = (task / UPLOAD_ERROR_LOG).read_text()
    assert code in err and "sig=" not in err
    if not missing:
        assert azurite.blob_names(container) == []


def test_upload_killed_mid_body_leaves_no_blob(azurite: Azurite, container: str, tmp_path: Path) -> None:
    """The uploading process is SIGKILLed while the blob body is half sent: storage holds no blob under the name."""
    import os
    import signal
    import subprocess
    import sys

    from tests.support.httpserver import StallingProxy

    task = _task(tmp_path)
    (task / "wd/big.bin").write_bytes(os.urandom(2 << 20))
    proxy = StallingProxy(azurite.port, limit=1 << 20).start()
    url = azurite.container_sas_url(container, "w").replace(f":{azurite.port}/", f":{proxy.port}/")
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from batchyard.storage import StagingOptions, parse_output_file, upload_output_files\n"
        "of = parse_output_file({'filePattern': 'big.bin', 'destination': {'container': {'containerUrl': sys.argv[1],"
        " 'path': 'out/big.bin'}}, 'uploadOptions': {'uploadCondition': 'taskcompletion'}})\n"
        "t = Path(sys.argv[2])\n"
        "asyncio.run(upload_output_files([of], task_dir=t, working_dir=t / 'wd', env={}, exit_code=0,"
        " options=StagingOptions(retries=0, timeout=60)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script, url, str(task)], env=env)
    try:
        assert proxy.stalled.wait(60), "the upload never reached the proxy"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proxy.stop()
    assert azurite.blob_names(container) == []
    log = (task / UPLOAD_LOG).read_text()
    assert "Uploading" in log and "Uploaded" not in log


def test_shared_connections_serve_many_calls(azurite: Azurite, container: str, tmp_path: Path) -> None:
    """One `Connections` for an agent's lifetime: downloads and uploads of many tasks reuse its pools."""
    from batchyard.storage import Connections

    for i in range(3):
        azurite.put_blob(container, f"in/{i}.txt", str(i).encode())
    out = f"o{uuid.uuid4().hex[:12]}"
    azurite.create_container(out)

    async def agent() -> None:
        conns = Connections(timeout=10.0, retries=0)
        o = opts(azurite, connections=conns)
        try:
            for i in range(3):
                wd = tmp_path / f"t{i}" / "wd"
                res = await download_resource_files(
                    [
                        parse_resource_file(
                            {
                                "storageContainerUrl": azurite.container_sas_url(container),
                                "blobPrefix": f"in/{i}",
                            }
                        ),
                        parse_resource_file(
                            {"httpUrl": azurite.blob_sas_url(container, f"in/{i}.txt"), "filePath": "h.txt"}
                        ),
                    ],
                    wd,
                    o,
                )
                assert res.ok, res.failure
                (wd / "r.txt").write_text(f"result {i}")
                up = await upload_output_files(
                    [_of("r.txt", azurite.container_sas_url(out, "w"), f"t{i}/r.txt")],
                    task_dir=wd.parent,
                    working_dir=wd,
                    env={},
                    exit_code=0,
                    options=o,
                )
                assert up.ok, up.failure
        finally:
            await conns.aclose()

    asyncio.run(agent())
    assert azurite.blob_names(out) == ["t0/r.txt", "t1/r.txt", "t2/r.txt"]
    assert (tmp_path / "t2/wd/in/2.txt").read_bytes() == b"2" and (
        tmp_path / "t2/wd/h.txt"
    ).read_bytes() == b"2"
