"""The Azure Blob half of staging, on the official ``azure-storage-blob`` async client.

Kept apart because importing the SDK costs about a second of CPU: `download` and `upload` import this module
only when a task actually names a container, so an agent whose tasks stage nothing (or only ``httpUrl`` and
``file://``) never pays for it. The same code talks to Azure Storage and to Azurite.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceNotModifiedError,
    ServiceRequestTimeoutError,
    ServiceResponseTimeoutError,
)
from azure.storage.blob import ContentSettings, StandardBlobTier
from azure.storage.blob.aio import BlobClient, BlobServiceClient, ContainerClient

from batchyard.storage import failures as f
from batchyard.storage.download import (
    Body,
    Failed,
    Opener,
    Run,
    StagingOptions,
    blob_failure,
    first_failed,
    list_failure,
    strip_query,
)
from batchyard.storage.download import reason as _plain_reason
from batchyard.storage.failures import StagingFailure
from batchyard.storage.paths import PathRefused, blob_path_segments
from batchyard.storage.spec import OutputFile, ResourceFile, SourceKind

if TYPE_CHECKING:
    from batchyard.storage.glob import Matched
    from batchyard.storage.upload import Uploader


def status_of(e: BaseException) -> tuple[int | None, bool]:
    """``(HTTP status or None, timed out?)`` of an SDK error."""
    status = e.status_code if isinstance(e, HttpResponseError) else None
    return status, isinstance(e, (ServiceRequestTimeoutError, ServiceResponseTimeoutError))


def reason(e: BaseException) -> str:
    if isinstance(e, HttpResponseError):
        code = getattr(e, "error_code", None) or (e.reason or "")
        return f"{e.status_code} {code}".strip()
    return _plain_reason(e)


def _failure(table: Any, e: BaseException, *details: tuple[str, str]) -> Failed:
    failure: StagingFailure = table(*status_of(e))
    return Failed(failure.with_details(*details, ("Reason", reason(e))))


def _client_kwargs(o: StagingOptions) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "retry_total": o.retries,
        "connection_timeout": o.timeout,
        "read_timeout": o.timeout,
    }
    if o.connections is not None:
        kw["transport"] = o.connections.blob_transport()
    return kw


@dataclass
class _SdkBody:
    downloader: Any
    etag: str | None = None

    def __post_init__(self) -> None:
        self.etag = getattr(getattr(self.downloader, "properties", None), "etag", None)

    def chunks(self) -> AsyncIterator[bytes]:
        it: AsyncIterator[bytes] = self.downloader.chunks()
        return it


def _blob_opener(blob: BlobClient, detail: tuple[str, str]) -> Opener:
    @asynccontextmanager
    async def open_(if_none_match: str | None) -> AsyncIterator[Body | None]:
        try:
            if if_none_match:
                downloader = await blob.download_blob(
                    etag=if_none_match, match_condition=MatchConditions.IfModified
                )
            else:
                downloader = await blob.download_blob()
        except ResourceNotModifiedError:
            downloader = None
        except HttpResponseError as e:
            # the storage client reports a 304 as a "condition not met" error rather than the azure-core type
            if e.status_code != 304 or not if_none_match:
                raise _failure(blob_failure, e, detail) from e
            downloader = None
        except AzureError as e:
            raise _failure(blob_failure, e, detail) from e
        if downloader is None:
            yield None
            return
        try:
            yield _SdkBody(downloader)
        except AzureError as e:
            raise _failure(blob_failure, e, detail) from e

    return open_


async def download_container(run: Run, rf: ResourceFile, cdetail: tuple[str, str]) -> None:
    """Every blob under ``blobPrefix`` of a SAS container URL or an auto-storage container."""
    o = run.opts
    kwargs = _client_kwargs(o)
    if rf.kind is SourceKind.AUTO_STORAGE_CONTAINER_NAME:
        if not o.auto_storage_connection_string:
            raise Failed(
                f.RESOURCE_CONTAINER_NOT_FOUND.with_details(
                    cdetail, ("Reason", "no auto-storage account is configured on this batchyard server")
                )
            )
        try:
            service = BlobServiceClient.from_connection_string(o.auto_storage_connection_string, **kwargs)
        except ValueError as e:
            raise Failed(
                f.RESOURCE_CONTAINER_ACCESS_DENIED.with_details(cdetail, ("Reason", reason(e)))
            ) from e
        async with service:
            await _download_container(run, service.get_container_client(rf.source), rf, cdetail)
    else:
        async with ContainerClient.from_container_url(rf.source, **kwargs) as container:
            await _download_container(run, container, rf, cdetail)


async def _download_container(
    run: Run, container: ContainerClient, rf: ResourceFile, cdetail: tuple[str, str]
) -> None:
    base = rf.file_path or ""
    blobs: list[str] = []
    try:
        async for props in container.list_blobs(name_starts_with=rf.blob_prefix):
            name = str(props.name)
            if not name.endswith("/"):  # a "directory" marker blob holds no file
                blobs.append(name)
    except AzureError as e:
        raise _failure(list_failure, e, cdetail) from e
    targets: list[tuple[str, Path, tuple[str, str]]] = []
    for name in blobs:
        try:
            rel = "/".join(blob_path_segments(name))
        except PathRefused as e:
            detail = ("BlobName", name)
            raise Failed(f.RESOURCE_FILE_CREATE_FAILED.with_details(detail, ("Reason", str(e)))) from None
        detail = ("FilePath", f"{base}/{rel}" if base else rel)
        targets.append((name, run.target(base, rel, detail=detail), detail))
    sem = asyncio.Semaphore(max(1, run.opts.concurrency))

    async def one(name: str, target: Path, detail: tuple[str, str]) -> None:
        async with sem:
            blob = container.get_blob_client(name)
            await run.fetch(_blob_opener(blob, detail), strip_query(blob.url), target, rf.file_mode, detail)

    try:
        async with asyncio.TaskGroup() as tg:
            for name, target, detail in targets:
                tg.create_task(one(name, target, detail))
    except BaseExceptionGroup as eg:
        first = first_failed(eg)
        if first is None:
            raise
        raise first from None


# --- uploads -------------------------------------------------------------------------------------------------


def upload_failure(e: BaseException) -> StagingFailure:
    status, timed_out = status_of(e)
    if status == 404:
        return f.FILE_UPLOAD_CONTAINER_NOT_FOUND
    if status in (401, 403):
        return f.FILE_UPLOAD_ACCESS_DENIED
    if status in (409, 412):
        return f.FILE_UPLOAD_CONFLICT
    if status in (408, 504) or timed_out:
        return f.FILE_UPLOAD_TIMED_OUT
    return f.FILE_UPLOAD_MISC_ERROR


_SETTINGS = {
    "content-type": "content_type",
    "x-ms-blob-content-type": "content_type",
    "content-encoding": "content_encoding",
    "x-ms-blob-content-encoding": "content_encoding",
    "content-language": "content_language",
    "x-ms-blob-content-language": "content_language",
    "content-disposition": "content_disposition",
    "x-ms-blob-content-disposition": "content_disposition",
    "cache-control": "cache_control",
    "x-ms-blob-cache-control": "cache_control",
}


def upload_kwargs(headers: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> dict[str, Any]:
    """``uploadHeaders`` (any Put Blob header, names case-insensitive) as blob client arguments."""
    settings: dict[str, str] = {}
    metadata: dict[str, str] = {}
    raw: dict[str, str] = {}
    out: dict[str, Any] = {}
    for name, value in headers:
        low = name.lower()
        if low in _SETTINGS:
            settings[_SETTINGS[low]] = value
        elif low.startswith("x-ms-meta-"):
            metadata[name[len("x-ms-meta-") :]] = value
        elif low == "x-ms-access-tier" and value.upper() in StandardBlobTier.__members__:
            out["standard_blob_tier"] = StandardBlobTier[value.upper()]
        else:
            raw[name] = value
    if settings:
        out["content_settings"] = ContentSettings(**settings)  # type: ignore[arg-type]
    if metadata:
        out["metadata"] = metadata
    if raw:
        out["headers"] = raw
    return out


async def upload_to_container(up: Uploader, output: OutputFile, files: list[Matched]) -> None:
    """Upload matched files as block blobs (overwriting; ``StagingOptions.concurrency`` at once), logging each
    one; errors are recorded, not raised."""
    from batchyard.storage.upload import Opened, UploadedFile, blob_name

    o = up.options
    url = strip_query(output.container_url)
    kwargs = upload_kwargs(output.upload_headers)
    sem = asyncio.Semaphore(max(1, o.concurrency))

    async def one(container: ContainerClient, m: Matched) -> None:
        name = blob_name(output, m)
        dest = f"{url}/{name}"
        async with sem:
            started = time.monotonic()
            try:
                held = m.file if isinstance(m, Opened) else None
                with held if held is not None else open(m.path, "rb") as data:
                    size = os.fstat(data.fileno()).st_size
                    up.logs.info(f"Uploading {m.path} to {dest} ({size} bytes)")
                    await container.upload_blob(name, data, length=size, overwrite=True, **kwargs)
            except AzureError as e:
                failure = upload_failure(e).with_details(("FilePath", str(m.path)), ("Reason", reason(e)))
                up.fail(failure, f"uploading {m.path} to {dest}: {reason(e)}")
                return
            except OSError as e:
                failure = f.FILE_UPLOAD_MISC_ERROR.with_details(
                    ("FilePath", str(m.path)), ("Reason", reason(e))
                )
                up.fail(failure, f"reading {m.path}: {reason(e)}")
                return
            up.logs.info(f"Uploaded {m.path} to {dest} in {time.monotonic() - started:.3f} s")
            up.uploaded.append(UploadedFile(m.path, dest, size))

    async with ContainerClient.from_container_url(output.container_url, **_client_kwargs(o)) as container:
        await asyncio.gather(*(one(container, m) for m in files))
