"""Upload a node's service logs to a container SAS URL (`uploadbatchservicelogs`, decision 0133)."""

from __future__ import annotations

from pathlib import Path

from azure.core.exceptions import AzureError
from azure.storage.blob.aio import ContainerClient

from batchyard.storage.download import reason, strip_query

#: Seconds to connect and to wait on a read: the operation answers synchronously, so it must fail quickly.
TIMEOUT = 20.0


class LogUploadFailed(Exception):
    """The container could not be written (unreachable, refused, not found); the message says why."""


async def upload_logs(container_url: str, directory: str, files: list[tuple[str, Path]]) -> int:
    """Upload `files` (blob name below `directory`, local path) as block blobs; returns how many were written."""
    done = 0
    try:
        async with ContainerClient.from_container_url(
            container_url, retry_total=1, connection_timeout=TIMEOUT, read_timeout=TIMEOUT
        ) as container:
            for name, path in files:
                with open(path, "rb") as data:
                    await container.upload_blob(f"{directory}/{name}", data, overwrite=True)
                done += 1
    except AzureError as e:
        raise LogUploadFailed(f"uploading to {strip_query(container_url)} failed: {reason(e)}") from None
    except (OSError, ValueError) as e:
        raise LogUploadFailed(f"uploading to {strip_query(container_url)} failed: {e}") from None
    return done
