"""A test clock for a live server: real UTC time shifted by an offset that a test writes into a file.

Enabled only by `batchyard server --fake-clock-file PATH` (or BATCHYARD_FAKE_CLOCK_FILE); never by default.
The file holds the offset in seconds (e.g. `3600.5`); missing or empty means 0. Tests move time forward by
rewriting it, so schedules (and any other timer) can be driven without sleeping (decision 0081).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path

from batchyard.models.clock import monotonic, utcnow

log = logging.getLogger("batchyard.fakeclock")

#: how long a read offset is trusted before the file is looked at again (seconds): 0, so that a test that moves
#: the clock and then asks the server sees the new time at once (one stat per reading: testing only)
REFRESH = 0.0


class FileOffsetClock:
    """`ctx.clock` replacement: utcnow() + the offset in `path`; time never goes backwards."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = timedelta(0)
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file last read completely
        self._checked = -1.0
        self._last: datetime | None = None

    def offset(self) -> timedelta:
        t = monotonic()
        if t - self._checked >= REFRESH:
            self._checked = t
            try:
                st = os.stat(self.path)
            except OSError:
                self._seen, self._offset = None, timedelta(0)
            else:
                seen = (st.st_mtime_ns, st.st_size)
                if seen != self._seen:
                    offset = self._read()
                    if offset is not None:  # a file caught mid-write (empty) is read again next time
                        self._seen, self._offset = seen, offset
        return self._offset

    def _read(self) -> timedelta | None:
        """The file's offset; None when it is empty (being rewritten: a writer truncates, then writes, often
        within one tick of the file system's clock, so the mtime alone would not show the second step)."""
        try:
            text = self.path.read_text().strip()
            return timedelta(seconds=float(text)) if text else None
        except (OSError, ValueError, OverflowError):
            log.warning("fake clock file %s does not hold a number of seconds; offset unchanged", self.path)
            return self._offset

    def __call__(self) -> datetime:
        now = utcnow() + self.offset()
        if self._last is not None and now < self._last:
            now = self._last
        self._last = now
        return now
