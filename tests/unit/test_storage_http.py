"""httpUrl resource files against a real local HTTP server: success, 404, 403, refused, cancel, cache."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchyard.storage import (
    DownloadCache,
    ResourceFile,
    StagingOptions,
    download_resource_files,
    parse_resource_file,
    sweep_partials,
)
from tests.support.azurite import free_port
from tests.support.httpserver import FileServer

FAST = StagingOptions(timeout=5.0, retries=0)


@pytest.fixture
def server() -> Iterator[FileServer]:
    s = FileServer().start()
    try:
        yield s
    finally:
        s.stop()


def rf(url: str, path: str, mode: str | None = None) -> ResourceFile:
    body: dict[str, object] = {"httpUrl": url, "filePath": path}
    if mode:
        body["fileMode"] = mode
    return parse_resource_file(body)


def test_http_download_lands_with_its_mode(server: FileServer, tmp_path: Path) -> None:
    url = server.put("in.txt", b"hello world")
    wd = tmp_path / "wd"
    res = asyncio.run(
        download_resource_files(
            [rf(url + "?sv=1&sig=abc", "data/in.txt"), rf(url, "x.txt", "0640")], wd, FAST
        )
    )
    assert res.ok, res.failure
    assert res.files == ("data/in.txt", "x.txt")
    assert (wd / "data/in.txt").read_bytes() == b"hello world"
    assert stat.S_IMODE((wd / "data/in.txt").stat().st_mode) == 0o770  # the Linux default
    assert stat.S_IMODE((wd / "x.txt").stat().st_mode) == 0o640
    assert sorted(os.listdir(wd)) == ["data", "x.txt"]  # no temporary left behind


@pytest.mark.parametrize(
    ("route", "code", "category"),
    [
        ("/files/missing.bin", "BlobNotFound", "usererror"),
        ("/status/404", "BlobNotFound", "usererror"),
        ("/status/403", "BlobAccessDenied", "usererror"),
        ("/status/401", "BlobAccessDenied", "usererror"),
        ("/status/500", "BlobDownloadMiscError", "servererror"),
    ],
)
def test_http_errors_map_to_the_service_codes(
    server: FileServer, tmp_path: Path, route: str, code: str, category: str
) -> None:
    wd = tmp_path / "wd"
    res = asyncio.run(download_resource_files([rf(server.url + route, "f.bin")], wd, FAST))
    assert res.failure is not None
    assert (res.failure.code, res.failure.category) == (code, category)
    assert res.failure.kind.value == "preProcessingError"
    assert ("FilePath", "f.bin") in res.failure.details
    assert not (wd / "f.bin").exists()


def test_connection_refused_is_a_misc_download_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/nothing-listens-here"
    res = asyncio.run(download_resource_files([rf(url, "f.bin")], tmp_path / "wd", FAST))
    assert res.failure is not None and res.failure.code == "BlobDownloadMiscError"
    assert any(name == "Reason" and "Connect" in value for name, value in res.failure.details)


def test_first_failure_stops_and_keeps_what_was_placed(server: FileServer, tmp_path: Path) -> None:
    good = server.put("a.txt", b"a")
    wd = tmp_path / "wd"
    res = asyncio.run(
        download_resource_files(
            [rf(good, "a.txt"), rf(server.url + "/status/404", "b.txt"), rf(good, "c.txt")], wd, FAST
        )
    )
    assert res.failure is not None and res.failure.code == "BlobNotFound"
    assert res.files == ("a.txt",)
    assert not (wd / "c.txt").exists()


def test_cancelled_download_leaves_no_file(server: FileServer, tmp_path: Path) -> None:
    """A download that stalls mid-body and is then cancelled (the task killed): nothing under the final name."""
    server.put("big.bin", os.urandom(256 * 1024))
    wd = tmp_path / "wd"

    async def scenario() -> None:
        task = asyncio.create_task(
            download_resource_files([rf(server.url + "/stall/big.bin", "big.bin")], wd, FAST)
        )
        deadline = asyncio.get_running_loop().time() + 10
        while not server.stalled.is_set():
            assert asyncio.get_running_loop().time() < deadline, "the server never sent the first half"
            await asyncio.sleep(0.01)
        # the first half has been written to the temporary file by now (or is in flight)
        while not any(p.name.endswith(".partial") for p in wd.iterdir()) if wd.exists() else True:
            assert asyncio.get_running_loop().time() < deadline, "no temporary file appeared"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert list(wd.iterdir()) == []


def test_stalled_download_times_out(server: FileServer, tmp_path: Path) -> None:
    server.put("slow.bin", b"x" * 10000)
    wd = tmp_path / "wd"
    res = asyncio.run(
        download_resource_files(
            [rf(server.url + "/stall/slow.bin", "slow.bin")], wd, StagingOptions(timeout=0.5, retries=0)
        )
    )
    assert res.failure is not None and res.failure.code == "BlobDownloadTimedOut"
    assert list(wd.iterdir()) == []


def test_cache_fetches_the_bytes_once_for_many_tasks(server: FileServer, tmp_path: Path) -> None:
    data = os.urandom(512 * 1024)
    url = server.put("shared.bin", data)
    cache = DownloadCache(tmp_path / "cache")
    opts = StagingOptions(cache=cache, timeout=5.0, retries=0)

    async def many() -> list[bool]:
        # ten tasks at once, each with its own SAS-like query, then five more one after another
        first = await asyncio.gather(
            *(
                download_resource_files(
                    [rf(f"{url}?sig={i}", "in/shared.bin")], tmp_path / f"t{i}" / "wd", opts
                )
                for i in range(10)
            )
        )
        later = [
            await download_resource_files([rf(url, "shared.bin", "0600")], tmp_path / f"u{i}" / "wd", opts)
            for i in range(5)
        ]
        return [r.ok for r in [*first, *later]]

    assert all(asyncio.run(many()))
    assert server.body_bytes("/files/shared.bin") == len(data)  # the body crossed the network once
    assert server.count("/files/shared.bin", 200) == 1
    assert server.count("/files/shared.bin", 304) == 14  # every other task validated its copy
    assert (cache.stats.misses, cache.stats.hits) == (1, 14)
    for i in range(10):
        assert (tmp_path / f"t{i}/wd/in/shared.bin").read_bytes() == data
    copy = tmp_path / "u0/wd/shared.bin"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    # a task that overwrites its input does not change what the next task gets
    copy.write_bytes(b"clobbered")
    res = asyncio.run(download_resource_files([rf(url, "again.bin")], tmp_path / "v" / "wd", opts))
    assert res.ok and (tmp_path / "v/wd/again.bin").read_bytes() == data


def test_cache_refetches_a_changed_source(server: FileServer, tmp_path: Path) -> None:
    url = server.put("v.txt", b"version 1")
    opts = StagingOptions(cache=DownloadCache(tmp_path / "cache"), timeout=5.0, retries=0)
    asyncio.run(download_resource_files([rf(url, "v.txt")], tmp_path / "a", opts))
    server.put("v.txt", b"version 2")
    asyncio.run(download_resource_files([rf(url, "v.txt")], tmp_path / "b", opts))
    assert (tmp_path / "b/v.txt").read_bytes() == b"version 2"
    assert server.count("/files/v.txt", 200) == 2
    # the replaced version's data file was dropped from the cache
    assert len([p for p in (tmp_path / "cache").iterdir() if p.suffix not in (".json", ".lock")]) == 1


def test_cache_does_not_serve_a_denied_caller(server: FileServer, tmp_path: Path) -> None:
    """A cached blob still needs the caller's own access: the validation request's 403 wins."""
    url = server.put("secret.bin", b"s")
    opts = StagingOptions(cache=DownloadCache(tmp_path / "cache"), timeout=5.0, retries=0)
    assert asyncio.run(download_resource_files([rf(url, "s.bin")], tmp_path / "a", opts)).ok
    del server.files["secret.bin"]
    res = asyncio.run(download_resource_files([rf(url, "s.bin")], tmp_path / "b", opts))
    assert res.failure is not None and res.failure.code == "BlobNotFound"


def test_symlink_in_the_working_dir_cannot_redirect_a_download(server: FileServer, tmp_path: Path) -> None:
    url = server.put("x.txt", b"x")
    wd = tmp_path / "wd"
    outside = tmp_path / "outside"
    outside.mkdir()
    wd.mkdir()
    (wd / "link").symlink_to(outside)
    res = asyncio.run(download_resource_files([rf(url, "link/x.txt")], wd, FAST))
    assert res.failure is not None and res.failure.code == "ResourceFileCreateFailed"
    assert list(outside.iterdir()) == []


def test_killed_download_leaves_no_file_under_the_final_name(server: FileServer, tmp_path: Path) -> None:
    """SIGKILL of the downloading process (an agent killed mid-download): at most a hidden temporary remains."""
    import signal
    import subprocess
    import sys
    import time

    server.put("big.bin", os.urandom(256 * 1024))
    wd = tmp_path / "wd"
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from batchyard.storage import download_resource_files, parse_resource_file\n"
        "rf = parse_resource_file({'httpUrl': sys.argv[1], 'filePath': 'big.bin'})\n"
        "asyncio.run(download_resource_files([rf], Path(sys.argv[2])))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script, server.url + "/stall/big.bin", str(wd)], env=env)
    try:
        deadline = time.monotonic() + 30
        while not (wd.exists() and any(p.name.endswith(".partial") for p in wd.iterdir())):
            assert proc.poll() is None, "the downloader exited early"
            assert time.monotonic() < deadline, "no temporary file appeared"
            server.stalled.wait(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (wd / "big.bin").exists()
    assert [p.name for p in wd.iterdir() if not p.name.startswith(".")] == []
    # the agent sweeps the hidden temporary before a retry reuses the directory; user files stay
    (wd / ".keep.partial").write_text("a user's file")
    assert sweep_partials(wd) == 1
    assert [p.name for p in wd.iterdir()] == [".keep.partial"]


def test_cache_prune_drops_least_recently_used(server: FileServer, tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path / "cache")
    opts = StagingOptions(cache=cache, timeout=5.0, retries=0)
    urls = [server.put(f"{n}.bin", bytes([i]) * 1000) for i, n in enumerate("abc")]

    def get(url: str, where: str) -> None:
        assert asyncio.run(download_resource_files([rf(url, "f.bin")], tmp_path / where, opts)).ok

    for i, url in enumerate(urls):
        get(url, f"first{i}")
    os.utime(tmp_path / "cache" / f"{DownloadCache.key(urls[0])}.json", (1, 1))  # 'a' used long ago
    assert cache.size() == 3000
    assert cache.prune(2500) == 1000
    assert cache.size() == 2000
    get(urls[0], "again")  # 'a' is fetched again, 'b' and 'c' still come from the cache
    get(urls[1], "again-b")
    assert server.count("/files/a.bin", 200) == 2
    assert server.count("/files/b.bin", 200) == 1


def test_caches_sharing_a_directory_fetch_once(server: FileServer, tmp_path: Path) -> None:
    """Two agents (two DownloadCache objects, each with its own flock descriptors) on one cache directory."""
    data = os.urandom(256 * 1024)
    url = server.put("both.bin", data)
    a = StagingOptions(cache=DownloadCache(tmp_path / "cache"), timeout=5.0, retries=0)
    b = StagingOptions(cache=DownloadCache(tmp_path / "cache"), timeout=5.0, retries=0)

    async def both() -> list[bool]:
        results = await asyncio.gather(
            *(
                download_resource_files([rf(url, "x.bin")], tmp_path / f"t{i}", a if i % 2 else b)
                for i in range(8)
            )
        )
        return [r.ok for r in results]

    assert all(asyncio.run(both()))
    assert server.count("/files/both.bin", 200) == 1
    assert server.body_bytes("/files/both.bin") == len(data)
    assert all((tmp_path / f"t{i}/x.bin").read_bytes() == data for i in range(8))


def test_download_deadline(server: FileServer, tmp_path: Path) -> None:
    """A download that keeps the connection open past the task's deadline: ResourceDownloadTimedOut, no file."""
    server.put("slow2.bin", b"y" * 10000)
    wd = tmp_path / "wd"
    res = asyncio.run(
        download_resource_files(
            [rf(server.url + "/stall/slow2.bin", "slow.bin")],
            wd,
            StagingOptions(timeout=30.0, retries=0, deadline=0.5),
        )
    )
    assert res.failure is not None and res.failure.code == "ResourceDownloadTimedOut"
    assert res.failure.category == "servererror"
    assert list(wd.iterdir()) == []
