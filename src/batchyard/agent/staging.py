"""The node's side of data staging: resource files before a task's command line, output files after it.

Thin shell over `batchyard.storage`: one `DownloadCache` per node under ``<node root>/.batchyard-cache`` (an
internal name: the file routes never serve it, and when tasks run as other users it is root's, 0700), one set
of connections per agent, and the conversions from `StagingFailure` to the runner's `FailureInfo`. Downloads
run as the agent; what they place in the working directory is then given to the task user (decision 0010),
as are ``fileuploadout.txt`` / ``fileuploaderr.txt``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchyard.agent.lean import full_site
from batchyard.agent.runner import FailureInfo, RunSpec, give_to_task_user, make_dirs

if TYPE_CHECKING:  # imported on first use: a node that stages nothing never loads the storage SDK (0181)
    from batchyard.storage import DownloadCache, ResourceFile, SpecError, StagingFailure, StagingOptions

CACHE_DIR = ".batchyard-cache"
#: The node cache is pruned (least recently used first) to this size at start and every `PRUNE_EVERY` downloads.
CACHE_MAX_BYTES = 8 << 30
PRUNE_EVERY = 256


def failure_info(f: StagingFailure) -> FailureInfo:
    return FailureInfo(f.category, f.code, f.message, f.details)


def spec_failure(e: SpecError) -> FailureInfo:
    """A spec the API should have refused (stored before the check existed): the task fails, never runs."""
    return FailureInfo(
        "usererror",
        "ResourceFileCreateFailed" if "resource" in e.prop else "FileUploadMiscError",
        f"{e.prop}: {e.reason}",
    )


def _allows(st: os.stat_result, uid: int, gids: frozenset[int], bit: int) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in gids:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def user_can_read(path: Path, uid: int, gids: frozenset[int], node_root: Path) -> bool:
    """Could ``uid`` (with ``gids``) open ``path`` for reading? Symlinks resolved, every directory searched —
    below the node root only for files inside it (the task reaches those from its working directory, even when
    the directories above the node root are closed to it)."""
    try:
        real = Path(os.path.realpath(path))
        return _allows(os.stat(real), uid, gids, 4) and _dirs_searchable(real, uid, gids, node_root)
    except OSError:
        return False


def user_can_read_fd(fd: int, uid: int, gids: frozenset[int], node_root: Path) -> bool:
    """`user_can_read` for the file open on ``fd``: its mode is that of the very inode the upload reads (a
    file swapped for a symlink after the open changes nothing), its directories those of where it is now."""
    try:
        if not _allows(os.fstat(fd), uid, gids, 4):
            return False
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        return real.is_absolute() and _dirs_searchable(real, uid, gids, node_root)
    except OSError:
        return False


def _dirs_searchable(real: Path, uid: int, gids: frozenset[int], node_root: Path) -> bool:
    root = Path(os.path.realpath(node_root))
    parents = [d for d in real.parents if root in d.parents] if root in real.parents else list(real.parents)
    return all(_allows(os.stat(d), uid, gids, 1) for d in parents)


def needs_staging(work: dict[str, Any]) -> bool:
    return bool(
        work.get("resourceFiles") or work.get("outputFiles") or work.get("applicationPackageReferences")
    )


@dataclass
class NodeStaging:
    """Options and cache of one node; `StagingOptions` (with its connections) is made inside the loop."""

    root: Path
    auto_storage: str | None = None
    #: Directories ``file://`` URLs may name; empty: ``file://`` is refused.
    file_roots: tuple[Path, ...] = ()
    cache_max_bytes: int = CACHE_MAX_BYTES
    _opts: StagingOptions | None = field(default=None, repr=False)
    _since_prune: int = field(default=0, repr=False)

    _cache: DownloadCache | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # pruned when the agent starts; a node that never staged has no cache to prune
        if (self.root / CACHE_DIR).is_dir():
            _ = self.cache

    @property
    def cache(self) -> DownloadCache:
        """The node's download cache, pruned when first opened by this agent (and every `PRUNE_EVERY`)."""
        if self._cache is None:
            from batchyard.storage import DownloadCache

            cache_dir = self.root / CACHE_DIR
            cache_dir.mkdir(mode=0o700, exist_ok=True)
            os.chmod(cache_dir, 0o700)
            self._cache = DownloadCache(cache_dir)
            self._cache.prune(self.cache_max_bytes)
        return self._cache

    def options(self) -> StagingOptions:
        if self._opts is None:
            full_site()
            from batchyard.storage import Connections, StagingOptions

            self._opts = StagingOptions(
                auto_storage_connection_string=self.auto_storage,
                cache=self.cache,
                local_roots=self.file_roots,
                connections=Connections(),
            )
        return self._opts

    async def download(self, spec: RunSpec, work: dict[str, Any]) -> FailureInfo | None:
        """Place the attempt's resource files in its working directory; the failure, if any."""
        raw = work.get("resourceFiles")
        if raw is None or raw == []:  # the common case: no need to load the storage package's transfers
            files: list[ResourceFile] = []
        else:
            from batchyard.storage import SpecError, parse_resource_files

            try:
                files = parse_resource_files(raw)
            except SpecError as e:
                return spec_failure(e)
        bad = make_dirs(spec)
        if bad is not None:
            return bad
        from batchyard.storage.atomic import sweep_partials

        sweep_partials(spec.task_dir)  # a killed earlier attempt may have left hidden temporaries
        if not files:
            return None
        full_site()  # before the transfers' imports: they need site-packages' hooks and TLS
        from batchyard.storage import download_resource_files

        res = await download_resource_files(files, spec.working_dir, self.options())
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            self.cache.prune(self.cache_max_bytes)
        give_to_task_user(spec, spec.working_dir)
        return failure_info(res.failure) if res.failure is not None else None

    async def upload(self, spec: RunSpec, work: dict[str, Any], exit_code: int | None) -> FailureInfo | None:
        """Upload the output files whose condition holds; the failure, if any."""
        raw = work.get("outputFiles")
        if raw is None or raw == []:
            return None
        full_site()
        from batchyard.storage import (
            UPLOAD_ERROR_LOG,
            UPLOAD_LOG,
            SpecError,
            parse_output_files,
            upload_output_files,
        )

        try:
            outputs = parse_output_files(raw)
        except SpecError as e:
            return spec_failure(e)
        if not outputs:
            return None
        opts = self.options()
        if spec.uid not in (None, 0):
            assert spec.uid is not None
            uid, gids = spec.uid, frozenset({spec.gid if spec.gid is not None else spec.uid, *spec.groups})
            opts = replace(opts, readable=lambda fd: user_can_read_fd(fd, uid, gids, self.root))
        up = await upload_output_files(
            outputs,
            task_dir=spec.task_dir,
            working_dir=spec.working_dir,
            env=spec.env,
            exit_code=exit_code,
            options=opts,
        )
        for name in (UPLOAD_LOG, UPLOAD_ERROR_LOG):
            if (spec.task_dir / name).exists():
                give_to_task_user(spec, spec.task_dir / name)
        return failure_info(up.failure) if up.failure is not None else None

    async def aclose(self) -> None:
        if self._opts is not None and self._opts.connections is not None:
            await self._opts.connections.aclose()
