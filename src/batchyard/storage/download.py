"""Resource-file downloads: every source kind, into one task directory, as a result rather than an exception.

`download_resource_files` places each `ResourceFile` under ``target_dir`` (the task working directory, or the
task directory for multi-instance common files) in order and stops at the first failure, which it returns as
the task's pre-processing `StagingFailure`. Sources:

* ``httpUrl``: any http(s) URL (a blob with a SAS, a public file) fetched with httpx; ``filePath`` names the file.
* ``storageContainerUrl`` (a SAS URL) and ``autoStorageContainerName`` (a container of the account's linked
  storage, reached with its connection string): the official ``azure-storage-blob`` async client lists the
  blobs under ``blobPrefix`` and downloads each to ``filePath/<blob name>`` (blob "directories" kept).
* ``file://`` (batchyard only): a file or a directory tree on the server's host, optionally confined to
  ``StagingOptions.local_roots``.

Every file is written atomically (`AtomicFile`) with the resource file's mode; blob names and ``filePath`` are
checked so nothing lands outside ``target_dir``. With a `DownloadCache` each blob/URL version is fetched once
per node (see `cache`).
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from batchyard.storage import failures as f
from batchyard.storage.atomic import AtomicFile, copy_atomic, is_temp_name
from batchyard.storage.cache import DownloadCache
from batchyard.storage.connections import Connections, new_http_client
from batchyard.storage.failures import StagingFailure
from batchyard.storage.paths import PathRefused, join_checked, safe_target
from batchyard.storage.spec import ResourceFile, SourceKind

_CHUNK = 1 << 20


@dataclass(frozen=True)
class StagingOptions:
    """How this node reaches storage; one instance per agent."""

    #: Connection string of the account's linked ("auto") storage, for ``autoStorageContainerName``.
    auto_storage_connection_string: str | None = None
    cache: DownloadCache | None = None
    #: Directories ``file://`` sources and destinations may use; ``None`` allows the whole host.
    local_roots: tuple[Path, ...] | None = None
    #: Seconds to connect, and seconds without progress on a read, before a request counts as timed out.
    timeout: float = 60.0
    #: Retries of a failed storage request (the SDK's and httpx's own retry logic).
    retries: int = 3
    #: Blobs of one container (or files of one output pattern) transferred at once.
    concurrency: int = 8
    #: Seconds all resource files of one call may take (``ResourceDownloadTimedOut``); ``None`` = no limit.
    deadline: float | None = None
    #: Shared connection pools (one per agent); ``None`` = connections per call.
    connections: Connections | None = None
    #: Output files pass this check (the task's own user could read them) or are skipped: the agent reads as
    #: root, and a task must not upload what only root may read (a symlink to ``/etc/shadow``). It is given
    #: the descriptor the upload then reads from, so the file cannot be swapped between check and upload.
    readable: Callable[[int], bool] | None = None


@dataclass(frozen=True)
class DownloadResult:
    """What a task's downloads did: files placed (relative to the target directory) or the failure."""

    files: tuple[str, ...]
    failure: StagingFailure | None
    bytes_fetched: int = 0
    cache_hits: int = 0

    @property
    def ok(self) -> bool:
        return self.failure is None


class Failed(Exception):
    """Internal: carries a `StagingFailure` out of nested code."""

    def __init__(self, failure: StagingFailure) -> None:
        super().__init__(failure.code)
        self.failure = failure


def strip_query(url: str) -> str:
    """The URL without its query (the SAS) and fragment: what logs and cache keys may show."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, p.path, "", ""))


def reason(e: BaseException) -> str:
    """A one-line reason for ``details`` and logs (never a URL with its SAS)."""
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def blob_failure(status: int | None, timed_out: bool = False) -> StagingFailure:
    """A failed blob/URL read (HTTP status, or none for a transport error) in the service's codes."""
    if status in (404, 410):
        return f.BLOB_NOT_FOUND
    if status in (401, 403):
        return f.BLOB_ACCESS_DENIED
    if status in (408, 504) or timed_out:
        return f.BLOB_DOWNLOAD_TIMED_OUT
    return f.BLOB_DOWNLOAD_MISC_ERROR


def list_failure(status: int | None, timed_out: bool = False) -> StagingFailure:
    """A failed container listing in the service's codes."""
    if status == 404:
        return f.RESOURCE_CONTAINER_NOT_FOUND
    if status in (401, 403):
        return f.RESOURCE_CONTAINER_ACCESS_DENIED
    if status in (408, 504) or timed_out:
        return f.RESOURCE_CONTAINER_LIST_TIMED_OUT
    return f.RESOURCE_CONTAINER_LIST_MISC_ERROR


def write_failure(e: OSError, creating: bool) -> StagingFailure:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f.DISK_FULL
    return f.RESOURCE_FILE_CREATE_FAILED if creating else f.RESOURCE_FILE_WRITE_FAILED


class Body(Protocol):
    etag: str | None

    def chunks(self) -> AsyncIterator[bytes]: ...


#: Opens a source, conditionally on an ETag; yields ``None`` for "not modified".
class Opener(Protocol):
    def __call__(self, if_none_match: str | None) -> AbstractAsyncContextManager[Body | None]: ...


@dataclass
class _HttpBody:
    resp: httpx.Response
    etag: str | None = None

    def __post_init__(self) -> None:
        self.etag = self.resp.headers.get("etag")

    def chunks(self) -> AsyncIterator[bytes]:
        return self.resp.aiter_bytes(_CHUNK)


def _http_opener(client: httpx.AsyncClient, url: str, detail: tuple[str, str]) -> Opener:
    @asynccontextmanager
    async def open_(if_none_match: str | None) -> AsyncIterator[Body | None]:
        headers = {"If-None-Match": if_none_match} if if_none_match else {}
        try:
            async with client.stream("GET", url, headers=headers) as resp:
                if resp.status_code == 304 and if_none_match:
                    yield None
                    return
                if resp.status_code >= 300:
                    raise Failed(
                        blob_failure(resp.status_code).with_details(
                            detail, ("Reason", f"{resp.status_code} {resp.reason_phrase}".strip())
                        )
                    )
                yield _HttpBody(resp)
        except httpx.HTTPError as e:
            timed_out = isinstance(e, httpx.TimeoutException)
            raise Failed(blob_failure(None, timed_out).with_details(detail, ("Reason", reason(e)))) from e

    return open_


@dataclass
class Run:
    """One call's state: options, shared clients, counters."""

    opts: StagingOptions
    target_dir: Path
    placed: list[str] = field(default_factory=list)
    bytes_fetched: int = 0
    cache_hits: int = 0
    _http: httpx.AsyncClient | None = None

    def http(self) -> httpx.AsyncClient:
        if self.opts.connections is not None:
            return self.opts.connections.http()
        if self._http is None:
            self._http = new_http_client(self.opts.timeout, self.opts.retries)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def target(self, *parts: str, detail: tuple[str, str]) -> Path:
        """A checked destination below the target directory, its parents created."""
        try:
            path = join_checked(self.target_dir, *parts)
        except PathRefused as e:
            raise Failed(f.RESOURCE_FILE_CREATE_FAILED.with_details(detail, ("Reason", str(e)))) from None
        if path == self.target_dir:
            raise Failed(
                f.RESOURCE_FILE_CREATE_FAILED.with_details(detail, ("Reason", "the path names no file"))
            )
        try:
            return safe_target(self.target_dir, path)
        except PathRefused as e:
            raise Failed(f.RESOURCE_FILE_CREATE_FAILED.with_details(detail, ("Reason", str(e)))) from None
        except OSError as e:
            failure = f.DISK_FULL if e.errno == errno.ENOSPC else f.RESOURCE_DIRECTORY_CREATE_FAILED
            raise Failed(failure.with_details(detail, ("Reason", reason(e)))) from None

    def record(self, target: Path) -> None:
        self.placed.append(target.relative_to(os.path.realpath(self.target_dir)).as_posix())

    async def stream(self, body: Body, out: AtomicFile, detail: tuple[str, str]) -> None:
        try:
            async for chunk in body.chunks():
                out.write(chunk)
                self.bytes_fetched += len(chunk)
        except OSError as e:
            raise Failed(write_failure(e, creating=False).with_details(detail, ("Reason", reason(e)))) from e

    async def fetch(
        self, open_: Opener, cache_url: str | None, target: Path, mode: int, detail: tuple[str, str]
    ) -> None:
        """Fetch one source into ``target`` (through the cache when there is one)."""
        cache = self.opts.cache
        try:
            if cache is None or cache_url is None:
                await self._fetch_direct(open_, target, mode, detail)
            else:
                await self._fetch_cached(cache, open_, cache_url, target, mode, detail)
        except OSError as e:
            raise Failed(write_failure(e, creating=True).with_details(detail, ("Reason", reason(e)))) from e
        self.record(target)

    async def _fetch_direct(self, open_: Opener, target: Path, mode: int, detail: tuple[str, str]) -> None:
        async with open_(None) as body:
            assert body is not None
            out = AtomicFile(target, mode)
            try:
                await self.stream(body, out, detail)
                out.commit()
            except BaseException:
                out.abort()
                raise

    async def _fetch_cached(
        self, cache: DownloadCache, open_: Opener, url: str, target: Path, mode: int, detail: tuple[str, str]
    ) -> None:
        key = cache.key(url)
        async with cache.lock(key):
            entry = cache.lookup(key)
            async with open_(entry.etag if entry else None) as body:
                if body is None:
                    assert entry is not None
                    cache.stats.hits += 1
                    self.cache_hits += 1
                elif not body.etag:
                    out = AtomicFile(target, mode)
                    try:
                        await self.stream(body, out, detail)
                        out.commit()
                    except BaseException:
                        out.abort()
                        raise
                    return
                else:
                    before = self.bytes_fetched
                    data = cache.new_file(key, body.etag)
                    try:
                        await self.stream(body, data, detail)
                    except BaseException:
                        data.abort()
                        raise
                    entry = cache.publish(key, url, body.etag, data)
                    cache.stats.misses += 1
                    cache.stats.bytes_fetched += self.bytes_fetched - before
            src = cache.open_entry(entry)
        # copies run in parallel, outside the lock: the open file stays readable even if the entry is replaced
        await asyncio.to_thread(cache.place, src, target, mode)


def within_roots(path: Path, roots: tuple[Path, ...] | None) -> bool:
    """Is ``path`` (symbolic links resolved) inside one of ``roots``? ``None`` allows everything."""
    if roots is None:
        return True
    real = os.path.realpath(path)
    for root in roots:
        r = os.path.realpath(root)
        if real == r or real.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return False


def local_path(url: str, roots: tuple[Path, ...] | None) -> Path | None:
    """The host path a ``file://`` URL names, or ``None`` when outside the allowed roots."""
    path = Path(os.path.normpath(unquote(urlsplit(url).path)))
    return path if within_roots(path, roots) else None


async def _http_file(run: Run, rf: ResourceFile) -> None:
    assert rf.file_path is not None
    detail = ("FilePath", rf.file_path)
    url = rf.source
    if urlsplit(url).scheme.lower() == "file":
        src = local_path(url, run.opts.local_roots)
        if src is None:
            raise Failed(
                f.BLOB_ACCESS_DENIED.with_details(detail, ("Reason", "outside the allowed local roots"))
            )
        if not src.is_file():
            reason = "no such file" if not src.exists() else "not a regular file"
            raise Failed(f.BLOB_NOT_FOUND.with_details(detail, ("Reason", reason)))
        target = run.target(rf.file_path, detail=detail)
        await _copy_local(run, src, target, rf.file_mode, detail)
        return
    target = run.target(rf.file_path, detail=detail)
    await run.fetch(_http_opener(run.http(), url, detail), strip_query(url), target, rf.file_mode, detail)


async def _copy_local(run: Run, src: Path, target: Path, mode: int, detail: tuple[str, str]) -> None:
    try:
        run.bytes_fetched += await asyncio.to_thread(copy_atomic, src, target, mode)
    except PermissionError as e:
        raise Failed(f.BLOB_ACCESS_DENIED.with_details(detail, ("Reason", reason(e)))) from e
    except OSError as e:
        raise Failed(write_failure(e, creating=True).with_details(detail, ("Reason", reason(e)))) from e
    run.record(target)


def _local_tree(root: Path, prefix: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel.startswith(prefix) and not is_temp_name(name):
                out.append(rel)
    return out


async def _container(run: Run, rf: ResourceFile) -> None:
    base = rf.file_path or ""
    detail_key = "ContainerUrl" if rf.kind is SourceKind.STORAGE_CONTAINER_URL else "AutoStorageContainerName"
    cdetail = (detail_key, strip_query(rf.source) if detail_key == "ContainerUrl" else rf.source)
    if rf.kind is SourceKind.STORAGE_CONTAINER_URL and urlsplit(rf.source).scheme.lower() == "file":
        root = local_path(rf.source, run.opts.local_roots)
        if root is None:
            raise Failed(
                f.RESOURCE_CONTAINER_ACCESS_DENIED.with_details(
                    cdetail, ("Reason", "outside the allowed local roots")
                )
            )
        if not root.is_dir():
            raise Failed(
                f.RESOURCE_CONTAINER_NOT_FOUND.with_details(cdetail, ("Reason", "no such directory"))
            )
        try:
            names = await asyncio.to_thread(_local_tree, root, rf.blob_prefix or "")
        except PermissionError as e:
            raise Failed(
                f.RESOURCE_CONTAINER_ACCESS_DENIED.with_details(cdetail, ("Reason", reason(e)))
            ) from e
        for name in names:
            detail = ("FilePath", f"{base}/{name}" if base else name)
            if not within_roots(
                root / name, run.opts.local_roots
            ):  # a symbolic link pointing out of the roots
                raise Failed(
                    f.BLOB_ACCESS_DENIED.with_details(detail, ("Reason", "outside the allowed local roots"))
                )
            await _copy_local(run, root / name, run.target(base, name, detail=detail), rf.file_mode, detail)
        return
    from batchyard.storage import azblob  # the Azure SDK costs ~1 s to import: only when a task needs it

    await azblob.download_container(run, rf, cdetail)


def first_failed(eg: BaseExceptionGroup[BaseException]) -> Failed | None:
    for e in eg.exceptions:
        if isinstance(e, Failed):
            return e
        if isinstance(e, BaseExceptionGroup):
            inner = first_failed(e)
            if inner is not None:
                return inner
    return None


async def download_resource_files(
    files: Sequence[ResourceFile], target_dir: Path, options: StagingOptions | None = None
) -> DownloadResult:
    """Download ``files`` into ``target_dir`` in order; the first failure ends the run and is returned.

    Never raises for a storage or file-system problem; cancellation propagates (partial files are removed).
    """
    run = Run(options or StagingOptions(), target_dir)
    try:
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            failure = f.DISK_FULL if e.errno == errno.ENOSPC else f.RESOURCE_DIRECTORY_CREATE_FAILED
            raise Failed(failure.with_details(("Reason", reason(e)))) from e
        try:
            async with asyncio.timeout(run.opts.deadline):
                for rf in files:
                    if rf.kind is SourceKind.HTTP_URL:
                        await _http_file(run, rf)
                    else:
                        await _container(run, rf)
        except TimeoutError:
            raise Failed(
                f.RESOURCE_DOWNLOAD_TIMED_OUT.with_details(
                    ("Reason", f"the task's resource files took longer than {run.opts.deadline:g} s")
                )
            ) from None
    except Failed as e:
        return DownloadResult(tuple(run.placed), e.failure, run.bytes_fetched, run.cache_hits)
    finally:
        await run.close()
    return DownloadResult(tuple(run.placed), None, run.bytes_fetched, run.cache_hits)
