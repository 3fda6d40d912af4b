"""Output-file uploads after the task process ends, as the service does them.

* `should_upload` decides from the exit code and ``uploadCondition`` (``None`` = the process never ran: nothing
  is uploaded, and no log files are written, as the docs say).
* Each ``filePattern`` is expanded with the task environment and matched (`glob.find_files`); a pattern without
  wildcards uploads one file to ``path`` (the full blob name, default the file name), a pattern with wildcards
  uploads each match to ``<path>/<path below the pattern's literal base>``.
* ``destination.container.containerUrl`` is a container SAS URL (official async blob client; ``uploadHeaders``
  become the blob's properties/metadata) or, batchyard only, ``file:///dir`` (an existing directory on the server's
  host; files written atomically).
* ``fileuploadout.txt`` (one line per file started/finished) and ``fileuploaderr.txt`` (one line per error) are
  written in the task directory on every attempt; URLs in them never carry the SAS.
* Every file is attempted; the first error is the task's ``fileUploadError`` `StagingFailure`. A blob upload
  commits whole or not at all (Put Blob, or Put Block List after the blocks), so a killed upload leaves no blob.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TextIO
from urllib.parse import urlsplit

from batchyard.storage import failures as f
from batchyard.storage.atomic import copy_atomic
from batchyard.storage.download import StagingOptions, local_path, reason, within_roots
from batchyard.storage.failures import StagingFailure
from batchyard.storage.glob import Matched, find_files
from batchyard.storage.paths import PathRefused, blob_path_segments, join_checked
from batchyard.storage.spec import OutputFile, UploadCondition

UPLOAD_LOG = "fileuploadout.txt"
UPLOAD_ERROR_LOG = "fileuploaderr.txt"


@dataclass(frozen=True)
class Opened(Matched):
    """A matched file opened once, checked and uploaded through the same descriptor (``None``: it could not be
    opened; the upload reports why)."""

    file: BinaryIO | None = None


def open_matched(
    files: Sequence[Matched], readable: Callable[[int], bool] | None, skipped: Callable[[Path, str], None]
) -> list[Opened]:
    """Open each match without blocking (a FIFO swapped in never hangs the agent); what is not a regular file
    or fails ``readable`` is skipped (reported through ``skipped``), the rest stays open for the upload."""
    out: list[Opened] = []
    for m in files:
        try:
            fd = os.open(m.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            out.append(Opened(m.path, m.relative, m.literal))
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                skipped(m.path, "not a regular file")
                os.close(fd)
                continue
            if readable is not None and not readable(fd):
                skipped(m.path, "the task's user may not read it")
                os.close(fd)
                continue
            os.set_blocking(fd, True)
            out.append(Opened(m.path, m.relative, m.literal, os.fdopen(fd, "rb")))
        except BaseException:
            os.close(fd)
            raise
    return out


def close_opened(files: Sequence[Opened]) -> None:
    for o in files:
        if o.file is not None:
            o.file.close()


def should_upload(condition: UploadCondition, exit_code: int | None) -> bool:
    """``tasksuccess`` = exit 0, ``taskfailure`` = non-zero, ``taskcompletion`` = any; never if it never ran."""
    if exit_code is None:
        return False
    if condition is UploadCondition.TASK_SUCCESS:
        return exit_code == 0
    if condition is UploadCondition.TASK_FAILURE:
        return exit_code != 0
    return True


def blob_name(output: OutputFile, matched: Matched) -> str:
    """The destination name of one matched file (pure)."""
    path = "/".join(blob_path_segments(output.path)) if output.path else ""
    if matched.literal:
        return path or matched.path.name
    return f"{path}/{matched.relative}" if path else matched.relative


@dataclass(frozen=True)
class UploadedFile:
    source: Path
    #: Blob URL without the SAS, or the host path for ``file://`` destinations.
    destination: str
    size: int


@dataclass(frozen=True)
class UploadResult:
    """``attempted`` is False when no output file's condition held (then no log files exist)."""

    attempted: bool
    uploaded: tuple[UploadedFile, ...]
    failure: StagingFailure | None

    @property
    def ok(self) -> bool:
        return self.failure is None


_FRESH = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _fresh(path: Path) -> TextIO:
    """A new log file: whatever the task left under the name (a symlink, a hard link) is replaced, not followed."""
    try:
        fd = os.open(path, _FRESH, 0o644)
    except FileExistsError:
        os.unlink(path)
        fd = os.open(path, _FRESH, 0o644)
    return open(fd, "w", encoding="utf-8")  # noqa: SIM115


class Logs:
    def __init__(self, task_dir: Path) -> None:
        task_dir.mkdir(parents=True, exist_ok=True)
        self.out: TextIO = _fresh(task_dir / UPLOAD_LOG)
        self.err: TextIO = _fresh(task_dir / UPLOAD_ERROR_LOG)

    @staticmethod
    def _line(stream: TextIO, text: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        stream.write(f"{stamp} {text}\n")
        stream.flush()

    def info(self, text: str) -> None:
        self._line(self.out, text)

    def error(self, text: str) -> None:
        self._line(self.err, text)
        self._line(self.out, f"ERROR {text}")

    def close(self) -> None:
        self.out.close()
        self.err.close()


class Uploader:
    def __init__(self, options: StagingOptions, logs: Logs) -> None:
        self.options = options
        self.logs = logs
        self.uploaded: list[UploadedFile] = []
        self.failure: StagingFailure | None = None

    def fail(self, failure: StagingFailure, text: str) -> None:
        self.logs.error(f"{failure.code}: {text}")
        if self.failure is None:
            self.failure = failure

    async def to_container(self, output: OutputFile, files: list[Matched]) -> None:
        from batchyard.storage import azblob  # the Azure SDK costs ~1 s to import: only when needed

        await azblob.upload_to_container(self, output, files)

    async def to_directory(self, output: OutputFile, files: list[Matched]) -> None:
        root = local_path(output.container_url, self.options.local_roots)
        where = ("ContainerUrl", output.container_url)
        if root is None:
            self.fail(
                f.FILE_UPLOAD_ACCESS_DENIED.with_details(
                    where, ("Reason", "outside the allowed local roots")
                ),
                f"{output.container_url} is outside the allowed local roots",
            )
            return
        if not root.is_dir():
            self.fail(
                f.FILE_UPLOAD_CONTAINER_NOT_FOUND.with_details(where, ("Reason", "no such directory")),
                f"{root} is not a directory",
            )
            return
        for m in files:
            try:
                dest = join_checked(root, blob_name(output, m))
                self.logs.info(f"Uploading {m.path} to {dest}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not within_roots(dest.parent, self.options.local_roots):
                    raise PermissionError(f"{dest.parent} resolves outside the allowed local roots")
                src = m.file if isinstance(m, Opened) and m.file is not None else m.path
                size = await asyncio.to_thread(copy_atomic, src, dest, 0o644)
            except (OSError, PathRefused) as e:
                base = (
                    f.FILE_UPLOAD_ACCESS_DENIED
                    if isinstance(e, PermissionError)
                    else f.FILE_UPLOAD_MISC_ERROR
                )
                self.fail(
                    base.with_details(("FilePath", str(m.path)), ("Reason", reason(e))),
                    f"copying {m.path} into {root}: {reason(e)}",
                )
                continue
            self.logs.info(f"Uploaded {m.path} to {dest}")
            self.uploaded.append(UploadedFile(m.path, str(dest), size))


async def upload_output_files(
    outputs: Sequence[OutputFile],
    *,
    task_dir: Path,
    working_dir: Path,
    env: Mapping[str, str],
    exit_code: int | None,
    options: StagingOptions | None = None,
) -> UploadResult:
    """Upload the output files whose condition holds for ``exit_code``; never raises for storage errors."""
    selected = [o for o in outputs if should_upload(o.upload_condition, exit_code)]
    if not selected:
        return UploadResult(False, (), None)
    try:
        logs = Logs(task_dir)
    except OSError as e:
        failure = f.FILE_UPLOAD_MISC_ERROR
        return UploadResult(True, (), failure.with_details(("Reason", f"writing {UPLOAD_LOG}: {reason(e)}")))
    up = Uploader(options or StagingOptions(), logs)
    started = time.monotonic()
    try:
        for output in selected:
            found = await asyncio.to_thread(find_files, output.file_pattern, working_dir, env)
            files: list[Matched] = list(
                open_matched(found, up.options.readable, lambda p, why: logs.error(f"Skipped {p}: {why}"))
            )
            try:
                if not files:
                    logs.info(f"No files matched the pattern {output.file_pattern!r}")
                    continue
                if urlsplit(output.container_url).scheme.lower() == "file":
                    await up.to_directory(output, files)
                else:
                    await up.to_container(output, files)
            finally:
                close_opened([o for o in files if isinstance(o, Opened)])
        total = sum(u.size for u in up.uploaded)
        state = "failed" if up.failure else "succeeded"
        logs.info(
            f"Upload {state}: {len(up.uploaded)} file(s), {total} bytes in {time.monotonic() - started:.3f} s"
        )
    finally:
        logs.close()
    return UploadResult(True, tuple(up.uploaded), up.failure)
