"""Task and node files.

Local nodes keep their directories under the server's data dir, so the server reads them directly;
remote (registered) agents will serve them over the agent protocol instead (see docs/decisions).
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from batchyard.models import errors, odata
from batchyard.models.clock import format_time
from batchyard.models.ids import key_of
from batchyard.service import tasks as task_ops
from batchyard.service.common import Body
from batchyard.service.context import Ctx
from batchyard.service.listing import ListQuery, page_items
from batchyard.store import schema
from batchyard.store.sql import Row, Tx


@dataclass(frozen=True)
class FileInfo:
    path: Path
    is_dir: bool
    size: int
    created: datetime
    modified: datetime
    mode: str
    content_type: str


def node_root(ctx: Ctx, node_id: str) -> Path:
    return ctx.data_dir / "nodes" / node_id


def task_dir_rel(job_id: str, task_id: str) -> str:
    return f"workitems/{job_id}/job-1/{task_id}"


def _stat(p: Path) -> FileInfo:
    st = p.stat()
    is_dir = stat.S_ISDIR(st.st_mode)
    ctype = "application/octet-stream"
    if not is_dir:
        guessed = mimetypes.guess_type(p.name)[0]
        ctype = guessed or ("text/plain" if p.suffix in (".txt", ".log") else "application/octet-stream")
    return FileInfo(
        p,
        is_dir,
        0 if is_dir else st.st_size,
        datetime.fromtimestamp(st.st_ctime, UTC),
        datetime.fromtimestamp(st.st_mtime, UTC),
        f"{st.st_mode:o}".rjust(7, "0")[-7:] if not is_dir else f"{st.st_mode:o}",
        ctype,
    )


def _safe_join(base: Path, rel: str) -> Path:
    rel = rel.replace("\\", "/").lstrip("/")
    p = (base / rel).resolve()
    b = base.resolve()
    if p != b and b not in p.parents:
        raise errors.file_not_found()
    return p


def _listing(base: Path, url_base: str, recursive: bool) -> list[Body]:
    out: list[Body] = []
    if not base.is_dir():
        return out
    if recursive:
        for dirpath, dirnames, filenames in os.walk(base):
            for name in sorted(dirnames) + sorted(filenames):
                out.append(_entry(Path(dirpath) / name, base, url_base))
    else:
        for p in sorted(base.iterdir()):
            out.append(_entry(p, base, url_base))
    return out


def _entry(p: Path, base: Path, url_base: str) -> Body:
    rel = p.relative_to(base).as_posix()
    try:
        info = _stat(p)
    except FileNotFoundError:
        return {"name": rel, "url": f"{url_base}/{rel}", "isDirectory": False}
    e: Body = {"name": rel, "url": f"{url_base}/{rel}", "isDirectory": info.is_dir}
    if not info.is_dir:
        e["properties"] = {
            "creationTime": format_time(info.created),
            "lastModified": format_time(info.modified),
            "contentLength": str(info.size),
            "contentType": info.content_type,
            "fileMode": info.mode,
        }
    return e


# --- task files --------------------------------------------------------------------------------------------


def _task_dir(ctx: Ctx, job_id: str, task_id: str) -> tuple[Path, Row]:
    with ctx.store.tx() as tx:
        job, row = task_ops.load(tx, job_id, task_id)
    node_id = row["body"].get("nodeInfo", {}).get("nodeId")
    if not node_id:
        raise errors.task_files_unavailable()
    d = node_root(ctx, node_id) / task_dir_rel(job["id"], row["id"])
    if not d.is_dir():
        raise (
            errors.task_files_cleaned_up() if row["state"] == "completed" else errors.task_files_unavailable()
        )
    return d, row


def list_task_files(
    ctx: Ctx, job_id: str, task_id: str, recursive: bool, q: ListQuery
) -> tuple[list[Body], str | None]:
    d, _ = _task_dir(ctx, job_id, task_id)
    items = _listing(d, f"/jobs/{job_id}/tasks/{task_id}/files", recursive)
    return page_items(items, q, odata.FILES)


def task_file(ctx: Ctx, job_id: str, task_id: str, path: str) -> FileInfo:
    d, _ = _task_dir(ctx, job_id, task_id)
    p = _safe_join(d, path)
    if not p.exists():
        raise errors.file_not_found()
    return _stat(p)


def delete_task_file(ctx: Ctx, job_id: str, task_id: str, path: str, recursive: bool) -> None:
    d, _ = _task_dir(ctx, job_id, task_id)
    _delete(_safe_join(d, path), recursive)


def _delete(p: Path, recursive: bool) -> None:
    if not p.exists():
        raise errors.file_not_found()
    if p.is_dir():
        if not recursive and any(p.iterdir()):
            raise errors.BatchError(
                409, "DirectoryNotEmpty", "The directory is not empty; use recursive=true."
            )
        shutil.rmtree(p)
    else:
        p.unlink()


# --- node files --------------------------------------------------------------------------------------------


def _node(ctx: Ctx, pool_id: str, node_id: str) -> Path:
    with ctx.store.tx() as tx:
        row = tx.get(schema.nodes, id=node_id)
        if row is None or row["pool_key"] != key_of(pool_id):
            if tx.get(schema.pools, key=key_of(pool_id)) is None:
                raise errors.pool_not_found()
            raise errors.node_not_found()
    return node_root(ctx, node_id)


def list_node_files(
    ctx: Ctx, pool_id: str, node_id: str, recursive: bool, q: ListQuery
) -> tuple[list[Body], str | None]:
    root = _node(ctx, pool_id, node_id)
    items = _listing(root, f"/pools/{pool_id}/nodes/{node_id}/files", recursive)
    items = [i for i in items if not i["name"].startswith(".agent")]
    return page_items(items, q, odata.FILES)


def node_file(ctx: Ctx, pool_id: str, node_id: str, path: str) -> FileInfo:
    p = _safe_join(_node(ctx, pool_id, node_id), path)
    if not p.exists():
        raise errors.file_not_found()
    return _stat(p)


def delete_node_file(ctx: Ctx, pool_id: str, node_id: str, path: str, recursive: bool) -> None:
    _delete(_safe_join(_node(ctx, pool_id, node_id), path), recursive)


def remove_task_files(ctx: Ctx, job_id: str, task_id: str, node_id: str | None) -> None:
    """A deleted task takes its directory with it."""
    if node_id:
        shutil.rmtree(node_root(ctx, node_id) / task_dir_rel(job_id, task_id), ignore_errors=True)


def remove_job_files(ctx: Ctx, tx: Tx, job: Row) -> None:
    """A deleted job takes its task directories with it on every node of its pool."""
    for n in tx.select(schema.nodes, schema.nodes.c.pool_key == job["pool_key"], columns=["id"]):
        shutil.rmtree(node_root(ctx, n["id"]) / "workitems" / job["id"], ignore_errors=True)
