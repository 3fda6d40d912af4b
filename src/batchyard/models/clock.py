"""Time and ETag generation, injectable so the pure cores and tests control time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(dt: datetime) -> str:
    """ISO-8601 with exactly seven fractional digits and 'Z', as the service writes timestamps."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0Z"


def parse_time(text: str) -> datetime:
    """Parse the ISO forms clients send (Z or offset, up to 7 fractional digits)."""
    s = text.strip()
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1] + "+00:00"
    if "." in s:
        head, _, rest = s.partition(".")
        frac = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            frac += rest[i]
            i += 1
        s = head + "." + (frac[:6].ljust(6, "0")) + rest[i:]
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def format_http_date(dt: datetime) -> str:
    return format_datetime(dt.astimezone(UTC).replace(microsecond=0), usegmt=True)


def parse_http_date(text: str) -> datetime:
    dt = parsedate_to_datetime(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


class EtagSource:
    """ETags shaped like the service's (0x + 15 hex digits of a FILETIME tick), strictly increasing."""

    def __init__(self) -> None:
        self._last = 0

    def next(self, now: datetime | None = None) -> str:
        ticks = int(((now or utcnow()) - _FILETIME_EPOCH) / timedelta(microseconds=1)) * 10
        if ticks <= self._last:
            ticks = self._last + 1
        self._last = ticks
        return f"0x{ticks:015X}"


def monotonic() -> float:
    return time.monotonic()
