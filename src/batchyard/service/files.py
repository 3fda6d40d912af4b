"""Task and node files.

Local nodes keep their directories under the server's data dir, so the server reads them directly;
remote (registered) agents will serve them over the agent protocol instead (see docs/decisions).

Files are written by tasks, which may be hostile, so nothing here trusts a path (decision 0011):

* a path is walked one component at a time from the node root with ``O_NOFOLLOW`` directory descriptors,
  so no symlink is ever followed, whatever a task swaps in meanwhile;
* the last component is ``lstat``-ed and opened with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO or a leased file
  cannot block the open), then ``fstat``-ed: only regular files and directories are served, a regular file
  must have exactly one link (a hard link to a file elsewhere would otherwise be served) and belong to one
  of the node's users (the task users, or the agent's own user);
* every file-system call runs in a worker thread, never on the event loop; the store is read first, on the
  loop (decision 0001);
* names batchyard keeps in a node root (``.agent.log``) are neither listed, served nor deleted.
"""

from __future__ import annotations

import asyncio
import errno
import mimetypes
import os
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from batchyard.models import errors, identity, odata
from batchyard.models.clock import format_time
from batchyard.models.ids import key_of
from batchyard.service import tasks as task_ops
from batchyard.service.common import Body
from batchyard.service.context import Ctx
from batchyard.service.listing import ListQuery, page_items
from batchyard.store import schema
from batchyard.store.sql import Row, Tx

T = TypeVar("T")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NAME_MAX = 255
#: Bytes read per worker-thread call while streaming a file.
CHUNK = 256 * 1024


@dataclass(frozen=True)
class FileInfo:
    name: str
    is_dir: bool
    size: int
    created: datetime
    modified: datetime
    mode: str
    content_type: str


@dataclass
class OpenFile:
    """A checked file: its properties and an open descriptor (``None`` for a directory). Close it."""

    info: FileInfo
    fd: int | None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    async def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``, read in a worker thread."""
        assert self.fd is not None
        return await asyncio.to_thread(os.pread, self.fd, size, offset)


@dataclass(frozen=True)
class _Where:
    """Where a file operation starts: the node root, the path to it inside, and who may own files there."""

    root: Path
    prefix: tuple[str, ...]
    pool_accounts: tuple[dict[str, Any], ...]


def node_root(ctx: Ctx, node_id: str) -> Path:
    return ctx.data_dir / "nodes" / node_id


def task_dir_rel(job_id: str, task_id: str) -> str:
    return f"workitems/{job_id}/job-1/{task_id}"


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


# --- paths and checks (run in worker threads) --------------------------------------------------------------


def split_path(rel: str) -> tuple[str, ...]:
    """The components of a request's file path; bad paths are 400 ``InvalidUri``, never an OS error."""
    if "\x00" in rel:
        raise errors.invalid_uri()
    parts = tuple(p for p in rel.replace("\\", "/").split("/") if p not in ("", "."))
    for p in parts:
        if p == "..":
            raise errors.file_not_found()
        if len(p.encode("utf-8", "surrogateescape")) > _NAME_MAX:
            raise errors.invalid_uri()
    return parts


def _open_dir(parent: int | None, name: str | Path) -> int:
    return os.open(name, _DIR_FLAGS, dir_fd=parent)


def _walk_dirs(root: Path, parts: Iterable[str]) -> int:
    """A descriptor of the directory ``root/parts…``, following no symlink; ``FileNotFoundError`` if absent."""
    fd = _open_dir(None, root)
    try:
        for p in parts:
            nxt = _open_dir(fd, p)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _allowed_uids(root_st: os.stat_result, accounts: Iterable[dict[str, Any]]) -> set[int]:
    """Owners whose files a node's file routes serve: the agent's user and the node's task users."""
    allowed = {os.geteuid(), root_st.st_uid}
    if identity.slot_of_gid(root_st.st_gid) is not None:
        allowed.update(identity.node_uids(root_st.st_gid))
        allowed.add(0)  # admin tasks run as root
        allowed.update(identity.explicit_uids(list(accounts)))
    return allowed


def servable(st: os.stat_result, allowed: set[int]) -> bool:
    """Directories, and regular files with a single link owned by one of the node's users."""
    if stat.S_ISDIR(st.st_mode):
        return True
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid in allowed


def _info(name: str, st: os.stat_result) -> FileInfo:
    is_dir = stat.S_ISDIR(st.st_mode)
    ctype = "application/octet-stream"
    if not is_dir:
        guessed = mimetypes.guess_type(name)[0]
        suffix = os.path.splitext(name)[1]
        ctype = guessed or ("text/plain" if suffix in (".txt", ".log") else "application/octet-stream")
    return FileInfo(
        name,
        is_dir,
        0 if is_dir else st.st_size,
        datetime.fromtimestamp(st.st_ctime, UTC),
        datetime.fromtimestamp(st.st_mtime, UTC),
        f"{st.st_mode:o}".rjust(7, "0")[-7:] if not is_dir else f"{st.st_mode:o}",
        ctype,
    )


def _os_error(exc: OSError) -> errors.BatchError:
    if exc.errno == errno.ENAMETOOLONG:
        return errors.invalid_uri()
    if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
        return errors.operation_invalid_for_current_state("the file is in use on the node")
    return errors.file_not_found()


def _open_checked(where: _Where, parts: tuple[str, ...]) -> OpenFile:
    if not parts and not where.prefix:
        raise errors.file_not_found()
    full = where.prefix + parts
    if identity.is_internal(full[0]):
        raise errors.file_not_found()
    try:
        root_fd = _open_dir(None, where.root)
    except OSError:
        raise errors.file_not_found() from None
    dfd: int | None = None
    fd: int | None = None
    try:
        allowed = _allowed_uids(os.fstat(root_fd), where.pool_accounts)
        dfd = os.dup(root_fd)
        for p in full[:-1]:
            nxt = _open_dir(dfd, p)
            os.close(dfd)
            dfd = nxt
        name = full[-1]
        lst = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if not servable(lst, allowed):
            raise errors.file_not_found()
        fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
        st = os.fstat(fd)
        if not servable(st, allowed) or (st.st_dev, st.st_ino) != (lst.st_dev, lst.st_ino):
            raise errors.file_not_found()
        out = OpenFile(_info(name, st), fd)
        if out.info.is_dir:
            out.close()
        fd = None
        return out
    except OSError as exc:
        raise _os_error(exc) from None
    finally:
        for d in (root_fd, dfd, fd):
            if d is not None:
                os.close(d)


def _listing(where: _Where, url_base: str, recursive: bool, hide_internal: bool) -> list[Body] | None:
    """The entries under the start directory, or ``None`` when it does not exist."""
    try:
        root_fd = _open_dir(None, where.root)
    except OSError:
        return None
    try:
        allowed = _allowed_uids(os.fstat(root_fd), where.pool_accounts)
    finally:
        os.close(root_fd)
    try:
        base_fd = _walk_dirs(where.root, where.prefix)
    except OSError:
        return None
    out: list[Body] = []
    try:
        if recursive:
            # fwalk walks by descriptor and never follows symlinks, so no swap can lead it outside.
            for dirpath, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=base_fd):
                rel_dir = "" if dirpath == "." else dirpath[2:] + "/"
                if hide_internal and not rel_dir:
                    dirnames[:] = [d for d in dirnames if not identity.is_internal(d)]
                for name in sorted(dirnames) + sorted(filenames):
                    if hide_internal and not rel_dir and identity.is_internal(name):
                        continue
                    _add(out, dirfd, name, rel_dir + name, url_base, allowed)
        else:
            with os.scandir(base_fd) as it:
                names = sorted(e.name for e in it)
            for name in names:
                if hide_internal and identity.is_internal(name):
                    continue
                _add(out, base_fd, name, name, url_base, allowed)
    finally:
        os.close(base_fd)
    return out


def _add(out: list[Body], dirfd: int, name: str, rel: str, url_base: str, allowed: set[int]) -> None:
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError:
        return
    if not servable(st, allowed):
        return  # special files, symlinks, hard links and foreign files are never served, so never listed
    info = _info(name, st)
    e: Body = {"name": rel, "url": f"{url_base}/{rel}", "isDirectory": info.is_dir}
    if not info.is_dir:
        e["properties"] = {
            "creationTime": format_time(info.created),
            "lastModified": format_time(info.modified),
            "contentLength": str(info.size),
            "contentType": info.content_type,
            "fileMode": info.mode,
        }
    out.append(e)


def _delete(where: _Where, parts: tuple[str, ...], recursive: bool) -> None:
    full = where.prefix + parts
    if not parts or identity.is_internal(full[0]):
        raise errors.file_not_found()
    try:
        dfd = _walk_dirs(where.root, full[:-1])
    except OSError as exc:
        raise _os_error(exc) from None
    try:
        name = full[-1]
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            sub = _open_dir(dfd, name)
            try:
                with os.scandir(sub) as it:
                    empty = next(it, None) is None
            finally:
                os.close(sub)
            if not recursive and not empty:
                raise errors.BatchError(
                    409, "DirectoryNotEmpty", "The directory is not empty; use recursive=true."
                )
            shutil.rmtree(name, dir_fd=dfd)
        else:
            os.unlink(name, dir_fd=dfd)
    except OSError as exc:
        raise _os_error(exc) from None
    finally:
        os.close(dfd)


# --- task files --------------------------------------------------------------------------------------------


def _pool_accounts(tx: Tx, node_id: str) -> tuple[dict[str, Any], ...]:
    node = tx.get(schema.nodes, id=node_id)
    if node is None:
        return ()
    pool = tx.get(schema.pools, key=node["pool_key"])
    return tuple(pool["body"].get("userAccounts") or []) if pool is not None else ()


def _task_where(ctx: Ctx, job_id: str, task_id: str) -> tuple[_Where, Row]:
    with ctx.store.tx() as tx:
        job, row = task_ops.load(tx, job_id, task_id)
        node_id = row["body"].get("nodeInfo", {}).get("nodeId")
        if not node_id:
            raise errors.task_files_unavailable()
        accounts = _pool_accounts(tx, node_id)
    prefix = tuple(task_dir_rel(job["id"], row["id"]).split("/"))
    return _Where(node_root(ctx, node_id), prefix, accounts), row


def _task_dir_exists(where: _Where) -> bool:
    try:
        os.close(_walk_dirs(where.root, where.prefix))
    except OSError:
        return False
    return True


async def _checked_task_where(ctx: Ctx, job_id: str, task_id: str) -> _Where:
    where, row = _task_where(ctx, job_id, task_id)
    if not await _off_loop(_task_dir_exists, where):
        raise (
            errors.task_files_cleaned_up() if row["state"] == "completed" else errors.task_files_unavailable()
        )
    return where


async def list_task_files(
    ctx: Ctx, job_id: str, task_id: str, recursive: bool, q: ListQuery
) -> tuple[list[Body], str | None]:
    where = await _checked_task_where(ctx, job_id, task_id)
    items = await _off_loop(_listing, where, f"/jobs/{job_id}/tasks/{task_id}/files", recursive, False)
    return page_items(items or [], q, odata.FILES)


async def task_file(ctx: Ctx, job_id: str, task_id: str, path: str) -> OpenFile:
    parts = split_path(path)
    where = await _checked_task_where(ctx, job_id, task_id)
    return await _off_loop(_open_checked, where, parts)


async def delete_task_file(ctx: Ctx, job_id: str, task_id: str, path: str, recursive: bool) -> None:
    parts = split_path(path)
    where = await _checked_task_where(ctx, job_id, task_id)
    await _off_loop(_delete, where, parts, recursive)


# --- node files --------------------------------------------------------------------------------------------


def _node_where(ctx: Ctx, pool_id: str, node_id: str) -> _Where:
    with ctx.store.tx() as tx:
        row = tx.get(schema.nodes, id=node_id)
        if row is None or row["pool_key"] != key_of(pool_id):
            if tx.get(schema.pools, key=key_of(pool_id)) is None:
                raise errors.pool_not_found()
            raise errors.node_not_found()
        accounts = _pool_accounts(tx, node_id)
    return _Where(node_root(ctx, node_id), (), accounts)


async def list_node_files(
    ctx: Ctx, pool_id: str, node_id: str, recursive: bool, q: ListQuery
) -> tuple[list[Body], str | None]:
    where = _node_where(ctx, pool_id, node_id)
    items = await _off_loop(_listing, where, f"/pools/{pool_id}/nodes/{node_id}/files", recursive, True)
    return page_items(items or [], q, odata.FILES)


async def node_file(ctx: Ctx, pool_id: str, node_id: str, path: str) -> OpenFile:
    parts = split_path(path)
    return await _off_loop(_open_checked, _node_where(ctx, pool_id, node_id), parts)


async def delete_node_file(ctx: Ctx, pool_id: str, node_id: str, path: str, recursive: bool) -> None:
    parts = split_path(path)
    await _off_loop(_delete, _node_where(ctx, pool_id, node_id), parts, recursive)


def remove_task_files(ctx: Ctx, job_id: str, task_id: str, node_id: str | None) -> None:
    """A deleted task takes its directory with it."""
    if node_id:
        shutil.rmtree(node_root(ctx, node_id) / task_dir_rel(job_id, task_id), ignore_errors=True)


def remove_job_files(ctx: Ctx, tx: Tx, job: Row) -> None:
    """A deleted job takes its task directories with it on every node of its pool."""
    for n in tx.select(schema.nodes, schema.nodes.c.pool_key == job["pool_key"], columns=["id"]):
        shutil.rmtree(node_root(ctx, n["id"]) / "workitems" / job["id"], ignore_errors=True)
