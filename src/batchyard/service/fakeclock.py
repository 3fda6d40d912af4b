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

#: how long a read offset is trusted before the file is looked at again (seconds)
REFRESH = 0.02


class FileOffsetClock:
    """`ctx.clock` replacement: utcnow() + the offset in `path`; time never goes backwards."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = timedelta(0)
        self._mtime: int | None = None
        self._checked = -1.0
        self._last: datetime | None = None

    def offset(self) -> timedelta:
        t = monotonic()
        if t - self._checked >= REFRESH:
            self._checked = t
            try:
                st = os.stat(self.path)
            except OSError:
                self._mtime, self._offset = None, timedelta(0)
            else:
                if st.st_mtime_ns != self._mtime:
                    self._mtime = st.st_mtime_ns
                    self._offset = self._read()
        return self._offset

    def _read(self) -> timedelta:
        try:
            text = self.path.read_text().strip()
            return timedelta(seconds=float(text)) if text else timedelta(0)
        except (OSError, ValueError, OverflowError):
            log.warning("fake clock file %s does not hold a number of seconds; offset unchanged", self.path)
            return self._offset

    def __call__(self) -> datetime:
        now = utcnow() + self.offset()
        if self._last is not None and now < self._last:
            now = self._last
        self._last = now
        return now
