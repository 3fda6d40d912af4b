"""Runtime values of the six types and their textual form in `autoScaleRun.results`.

double is a Python float (booleans are 0/1), doubleVec a tuple of floats, string a str; timestamps and
timeintervals count 100 ns ticks (the resolution of `TimeInterval_100ns`) in small frozen classes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from batchyard.autoscale.errors import Fault

TICKS_PER_SECOND = 10_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# .NET DateTime range (years 1..9999) and TimeSpan range, which the service's values live in.
_MIN_TICKS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1) * 10
_MAX_TICKS = (
    (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1) * 10
)
_MAX_SPAN = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Timestamp:
    ticks: int  # since 1970-01-01T00:00:00Z

    @staticmethod
    def of(moment: datetime) -> Timestamp:
        if moment.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware (UTC)")
        return Timestamp((moment - _EPOCH) // timedelta(microseconds=1) * 10)

    @staticmethod
    def checked(ticks: int) -> Timestamp:
        if not _MIN_TICKS <= ticks <= _MAX_TICKS:
            raise Fault("The timestamp is out of range")
        return Timestamp(ticks)

    def moment(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.ticks // 10)


@dataclass(frozen=True, slots=True)
class Interval:
    ticks: int

    @staticmethod
    def checked(ticks: float) -> Interval:
        if not math.isfinite(ticks) or abs(ticks) > _MAX_SPAN:
            raise Fault("The timeinterval is out of range")
        return Interval(round(ticks))


@dataclass(frozen=True, slots=True)
class Option:
    """A `$NodeDeallocationOption` keyword value."""

    name: str


NODE_DEALLOCATION_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")


@dataclass(frozen=True, slots=True)
class Series:
    """One metric's history: sample times (ticks, ascending) and values, as the sampler supplies them."""

    times: tuple[int, ...]
    values: tuple[float, ...]

    @staticmethod
    def of(samples: Iterable[tuple[datetime, float]]) -> Series:
        pairs = sorted((Timestamp.of(t).ticks, float(v)) for t, v in samples)
        return Series(tuple(t for t, _ in pairs), tuple(v for _, v in pairs))

    def window(self, lo: int, hi: int) -> tuple[float, ...]:
        """Values of the samples taken in (lo, hi]."""
        a = bisect.bisect_right(self.times, lo)
        b = bisect.bisect_right(self.times, hi)
        return self.values[a:b]


EMPTY_SERIES = Series((), ())


@dataclass(frozen=True, slots=True)
class Metric:
    """A read-only service variable: a sample set, and for pool figures also a current value."""

    name: str
    series: Series
    current: float | None


Value = float | tuple[float, ...] | str | Timestamp | Interval | Option | Metric


def type_name(value: Value) -> str:
    if isinstance(value, float):
        return "double"
    if isinstance(value, tuple):
        return "doubleVec"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Timestamp):
        return "timestamp"
    if isinstance(value, Interval):
        return "timeinterval"
    if isinstance(value, Option):
        return "nodeDeallocationOption"
    return "sample set"


def format_double(x: float) -> str:
    """A double as .NET prints it with 15 significant digits (`G15`), e.g. 3.3, 1E+15, 1E-05."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.15g}".replace("e", "E")


def format_interval(ticks: int) -> str:
    """A timeinterval as .NET's TimeSpan prints it: [-][d.]hh:mm:ss[.fffffff]."""
    sign = "-" if ticks < 0 else ""
    ticks = abs(ticks)
    seconds, frac = divmod(ticks, TICKS_PER_SECOND)
    minutes, sec = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    text = f"{sign}{f'{days}.' if days else ''}{hour:02d}:{minute:02d}:{sec:02d}"
    return f"{text}.{frac:07d}" if frac else text


def format_timestamp(ticks: int) -> str:
    """A timestamp as the service prints it in results: ISO 8601 UTC with milliseconds."""
    moment = Timestamp(ticks).moment()
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_value(value: Value) -> str:
    if isinstance(value, float):
        return format_double(value)
    if isinstance(value, tuple):
        return "[" + ",".join(format_double(x) for x in value) + "]"
    if isinstance(value, str):
        return value
    if isinstance(value, Timestamp):
        return format_timestamp(value.ticks)
    if isinstance(value, Interval):
        return format_interval(value.ticks)
    if isinstance(value, Option):
        return value.name
    return value.name
