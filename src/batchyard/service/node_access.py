"""Remote login settings, the upload of a node's service logs, and node VM extensions."""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from batchyard.models import errors, odata
from batchyard.models.ids import key_of
from batchyard.models.resources import remote_port
from batchyard.service.common import Body
from batchyard.service.context import Ctx
from batchyard.service.files import node_root
from batchyard.service.listing import ListQuery, page_items
from batchyard.service.nodes import get_node
from batchyard.store import schema

#: The node agent's own logs in the node root (`pools.local` writes `.agent.log`); uploaded without the dot.
AGENT_LOG_PREFIX = ".agent.log"


def _pool(ctx: Ctx, pool_id: str) -> Body:
    with ctx.store.tx() as tx:
        row = tx.get(schema.pools, key=key_of(pool_id))
    if row is None:
        raise errors.pool_not_found()
    body: Body = row["body"]
    return body


def remote_login_settings(ctx: Ctx, pool_id: str, node_id: str) -> Body:
    """Where the node is reachable for SSH (RDP on Windows): its endpoint for the remote-access port, else its
    first inbound endpoint (the recorded Linux pool with a single NAT rule to 3389 answered that one)."""
    pool = _pool(ctx, pool_id)
    node = get_node(ctx, pool_id, node_id)
    endpoints = (node.get("endpointConfiguration") or {}).get("inboundEndpoints") or []
    if not endpoints:
        raise errors.operation_invalid_for_current_state("The node has no inbound endpoint")
    port = remote_port(pool)
    chosen = next((e for e in endpoints if e["backendPort"] == port and e["protocol"] == "tcp"), endpoints[0])
    return {"remoteLoginIPAddress": chosen["publicIPAddress"], "remoteLoginPort": chosen["frontendPort"]}


def _directory_tag(account: str) -> str:
    """The service prefixes the upload directory with `batch-<16 hex digits>` (recorded); derived here from
    the account name so that it stays the same across calls."""
    return "batch-" + hashlib.sha256(account.encode()).hexdigest()[:16].upper()


def _as_time(value: Any, prop: str) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        when = value
    else:
        try:
            when = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise errors.invalid_property_value(prop, value) from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def log_files(root: Path, start: datetime.datetime, end: datetime.datetime | None) -> list[tuple[str, Path]]:
    """The agent's log files written since `start` (whole files, as the service uploads them). A log file is
    appended to for the node's whole life, so every non-empty one overlaps any window that ends after it began."""
    out: list[tuple[str, Path]] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return out
    for e in sorted(entries, key=lambda e: e.name):
        if not e.name.startswith(AGENT_LOG_PREFIX) or not e.is_file(follow_symlinks=False):
            continue
        st = e.stat(follow_symlinks=False)
        modified = datetime.datetime.fromtimestamp(st.st_mtime, datetime.UTC)
        if modified < start:
            continue
        if end is not None and st.st_size == 0:
            continue
        out.append((e.name.lstrip("."), Path(e.path)))
    return out


async def upload_logs(ctx: Ctx, pool_id: str, node_id: str, spec: Body, request_id: str) -> Body:
    from batchyard.storage.logupload import LogUploadFailed, upload_logs

    url = str(spec.get("containerUrl", ""))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise errors.invalid_property_value("containerUrl", url, "The container URL must be an http(s) URL")
    if spec.get("identityReference"):
        raise errors.not_implemented("uploadbatchservicelogs identityReference (no managed identities here)")
    start = _as_time(spec.get("startTime"), "startTime")
    end = _as_time(spec["endTime"], "endTime") if spec.get("endTime") is not None else None
    if end is not None and end < start:
        raise errors.invalid_property_value(
            "endTime", spec["endTime"], "The end time is before the start time"
        )
    get_node(ctx, pool_id, node_id)  # 404 for an unknown pool or node
    directory = f"{_directory_tag(ctx.account)}/{pool_id}/{node_id}/{request_id}"
    files = log_files(node_root(ctx, node_id), start, end)
    try:
        n = await upload_logs(url, directory, files) if files else 0
    except LogUploadFailed as e:
        raise errors.invalid_property_value(
            "containerUrl", parts._replace(query="").geturl(), f"The node could not upload its logs: {e}"
        ) from None
    return {"virtualDirectoryName": directory, "numberOfFilesUploaded": n}


def list_extensions(ctx: Ctx, pool_id: str, node_id: str, q: ListQuery) -> tuple[list[Body], str | None]:
    """Pools here never have VM extensions (refused at pool create, decision 0062): every node lists none."""
    get_node(ctx, pool_id, node_id)
    return page_items([], q, odata.FilterSpec("List node extensions", {}))


def get_extension(ctx: Ctx, pool_id: str, node_id: str, name: str) -> NoReturn:
    """No node has extensions here: 404 for every name (after the pool's and node's own 404s)."""
    get_node(ctx, pool_id, node_id)
    raise errors.extension_not_found()
