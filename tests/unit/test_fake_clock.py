"""The --fake-clock-file clock: real time plus the seconds in a file, never going backwards."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from batchyard.models.clock import utcnow
from batchyard.service import fakeclock
from batchyard.service.fakeclock import FileOffsetClock


def _write(path: Path, text: str, bump: int) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump))  # a distinct mtime even within one tick


def test_offset_from_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fakeclock, "REFRESH", 0.0)
    p = tmp_path / "clock"
    clock = FileOffsetClock(p)
    assert abs(clock() - utcnow()) < timedelta(seconds=5)  # no file: real time
    _write(p, "7200", 1)
    assert timedelta(hours=1, minutes=59) < clock() - utcnow() < timedelta(hours=2, minutes=1)
    _write(p, "not a number", 2)
    assert clock() - utcnow() > timedelta(hours=1, minutes=59)  # a bad file keeps the last offset
    before = clock()
    _write(p, "0", 3)
    assert clock() >= before  # time never goes backwards


def test_a_file_caught_mid_write_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer truncates, then writes; both steps can share one mtime tick. A read between them (an empty
    file) must not hide the offset written a moment later."""
    monkeypatch.setattr(fakeclock, "REFRESH", 0.0)
    p = tmp_path / "clock"
    p.write_text("")
    st = p.stat()
    clock = FileOffsetClock(p)
    assert abs(clock() - utcnow()) < timedelta(seconds=5)
    p.write_text("3600")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same mtime as the empty file's
    assert timedelta(minutes=59) < clock() - utcnow() < timedelta(minutes=61)
