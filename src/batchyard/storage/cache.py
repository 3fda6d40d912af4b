"""A node's download cache: one fetch per blob version, a local copy per task.

Entries are keyed by the source URL *without its query* (so two tasks with different SAS tokens for the same
blob share it) and hold the ETag the server sent. Every use still sends one conditional request with the
caller's own credentials (``If-None-Match``): a 304 proves the caller may read the blob and that the cached
bytes are current, so a cache never lets a task read what its SAS does not allow. Each task gets its own copy
(a reflink where the file system can) rather than a hard link: a task that writes to or ``chmod``s its input
must not change the cached bytes another task receives.

Concurrency: one `asyncio.Lock` per key serialises fetches of the same blob in this process, and an ``flock`` on
``<key>.lock`` does the same across processes sharing the directory (e.g. several local nodes' agents on one
host), so N tasks asking at once cause one download and N-1 304s. Entries are published by atomic renames, so
nothing ever reads a partial entry.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from batchyard.storage.atomic import AtomicFile, copy_atomic, sweep_partials


@dataclass
class CacheStats:
    """Counters for tests and benchmarks: validated reuses, fetches, and body bytes fetched."""

    hits: int = 0
    misses: int = 0
    bytes_fetched: int = 0


@dataclass(frozen=True)
class CacheEntry:
    etag: str
    path: Path
    size: int


@dataclass
class DownloadCache:
    """The cache directory of one node (``<node root>/cache`` or any directory the agent owns)."""

    root: Path
    stats: CacheStats = field(default_factory=CacheStats)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(url_without_query: str) -> str:
        return hashlib.sha256(url_without_query.encode()).hexdigest()

    def _lock(self, key: str) -> asyncio.Lock:
        lk = self._locks.get(key)
        if lk is None:
            lk = self._locks[key] = asyncio.Lock()
        return lk

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        """Exclusive use of ``key``: an `asyncio.Lock` within this process, then an ``flock`` on
        ``<key>.lock`` against other processes sharing the directory (polled without blocking the loop)."""
        async with self._lock(key):
            fd = os.open(self.root / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                delay = 0.005
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(delay)  # another process is fetching this key
                        delay = min(delay * 2, 0.1)
                yield
            finally:
                os.close(fd)  # releases the flock

    def _index(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def lookup(self, key: str) -> CacheEntry | None:
        """The current entry, if its data file is intact (size as recorded)."""
        try:
            meta = json.loads(self._index(key).read_text())
            path = self.root / str(meta["file"])
            if path.stat().st_size != int(meta["size"]):
                return None
            return CacheEntry(str(meta["etag"]), path, int(meta["size"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def new_file(self, key: str, etag: str) -> AtomicFile:
        """A file to stream a fetched body into; `publish` it once complete."""
        digest = hashlib.sha256(etag.encode()).hexdigest()[:16]
        return AtomicFile(self.root / f"{key}-{digest}", 0o444)

    def publish(self, key: str, url: str, etag: str, data: AtomicFile) -> CacheEntry:
        """Make a completely written body the current entry of ``key`` and drop the replaced one."""
        old = self.lookup(key)
        data.commit()
        index = AtomicFile(self._index(key), 0o644)
        try:
            index.write(
                json.dumps({"url": url, "etag": etag, "file": data.target.name, "size": data.size}).encode()
            )
            index.commit()
        except BaseException:
            index.abort()
            raise
        if old is not None and old.path != data.target:
            try:
                os.unlink(old.path)
            except FileNotFoundError:
                pass
        return CacheEntry(etag, data.target, data.size)

    def open_entry(self, entry: CacheEntry) -> BinaryIO:
        """Open a cached body for `place` (under the key's lock: a later replacement cannot pull it away)."""
        src = open(entry.path, "rb")  # noqa: SIM115 - closed by place
        try:
            os.utime(self._index(self.key_of(entry)))  # marks the entry used, for prune
        except OSError:
            pass
        return src

    @staticmethod
    def place(src: BinaryIO, target: Path, mode: int) -> int:
        """Copy an opened cached body to ``target`` (atomically, with the task's file mode) and close it."""
        try:
            return copy_atomic(src, target, mode)
        finally:
            src.close()

    @staticmethod
    def key_of(entry: CacheEntry) -> str:
        return entry.path.name.rsplit("-", 1)[0]

    def size(self) -> int:
        """Bytes held by current entries."""
        return sum(e.size for _, e in self._entries())

    def _entries(self) -> list[tuple[float, CacheEntry]]:
        out = []
        for index in self.root.glob("*.json"):
            entry = self.lookup(index.stem)
            if entry is not None:
                try:
                    out.append((index.stat().st_mtime, entry))
                except OSError:
                    pass
        return out

    def prune(self, max_bytes: int) -> int:
        """Drop least recently used entries until at most ``max_bytes`` remain; returns bytes freed.

        Entries being fetched right now (their key's lock is held) are kept. Tasks keep their own copies, so
        dropping an entry only means the next task fetches it again.
        """
        sweep_partials(self.root, older_than=600)  # fetches of killed processes (live ones keep writing)
        entries = sorted(self._entries(), key=lambda t: t[0])
        total = sum(e.size for _, e in entries)
        freed = 0
        for _, entry in entries:
            if total - freed <= max_bytes:
                break
            key = self.key_of(entry)
            lk = self._locks.get(key)
            if lk is not None and lk.locked():
                continue
            for p in (self._index(key), entry.path, self.root / f"{key}.lock"):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
            freed += entry.size
        return freed
