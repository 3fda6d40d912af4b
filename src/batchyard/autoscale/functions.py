"""Built-in functions and timestamp members, each checking its argument types; the TimeInterval constants."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone

from batchyard.autoscale.errors import Fault
from batchyard.autoscale.values import (
    TICKS_PER_SECOND,
    Interval,
    Metric,
    Timestamp,
    Value,
    format_double,
    type_name,
)


class Stop(Exception):
    """`stop()` ends the evaluation; the values set so far stand."""


class Context:
    """What functions read besides their arguments: the injected clock, random seed and sample period."""

    __slots__ = ("now", "period", "seed", "_rng")

    def __init__(self, now: int, period: int, seed: int | None) -> None:
        self.now = now
        self.period = period
        self.seed = seed
        self._rng: random.Random | None = None

    @property
    def rng(self) -> random.Random:
        """Made on first use: most formulas never call rand()."""
        if self._rng is None:
            self._rng = random.Random(self.seed)
        return self._rng


Function = Callable[[Sequence[Value], Context], Value]


def as_double(value: Value, where: str) -> float:
    if isinstance(value, float):
        return value
    if isinstance(value, Metric) and value.current is not None:
        return value.current
    raise Fault(f"{where} expects a double but was given a {described(value)}")


def described(value: Value) -> str:
    if isinstance(value, Metric):
        return f"sample set ({value.name}; read it with GetSample)"
    return type_name(value)


def _flatten(args: Sequence[Value], fn: str) -> list[float]:
    """A doubleVecList: doubles and doubleVecs in order, flattened to one vector."""
    out: list[float] = []
    for arg in args:
        if isinstance(arg, tuple):
            out.extend(arg)
        else:
            out.append(as_double(arg, f"Function '{fn}'"))
    return out


def _nonempty(args: Sequence[Value], fn: str) -> list[float]:
    xs = _flatten(args, fn)
    if not xs:
        raise Fault(f"Function '{fn}' needs at least one value")
    return xs


def _arity(args: Sequence[Value], fn: str, low: int, high: int) -> None:
    if not low <= len(args) <= high:
        want = str(low) if low == high else f"{low} to {high}"
        raise Fault(f"Function '{fn}' takes {want} argument(s) but was given {len(args)}")


def _log(base: float | None) -> Callable[[float], float]:
    def apply(x: float) -> float:
        if math.isnan(x) or x < 0:
            return math.nan
        if x == 0:
            return -math.inf
        return math.log(x) if base is None else math.log(x, base) if base != 10 else math.log10(x)

    return apply


def _elementwise(fn: str, op: Callable[[float], float]) -> Function:
    """`f(double)` → double; `f(doubleVecList)` (a vector or several values) → doubleVec."""

    def call(args: Sequence[Value], ctx: Context) -> Value:
        if not args:
            raise Fault(f"Function '{fn}' needs at least one value")
        if len(args) == 1 and not isinstance(args[0], tuple):
            return op(as_double(args[0], f"Function '{fn}'"))
        return tuple(op(x) for x in _flatten(args, fn))

    return call


def _total(xs: Sequence[float]) -> float:
    """An exact sum, or the plain float sum (±Infinity, NaN) where the exact one overflows."""
    try:
        return math.fsum(xs)
    except (OverflowError, ValueError):
        return sum(xs, 0.0)


def _avg(args: Sequence[Value], ctx: Context) -> Value:
    xs = _nonempty(args, "avg")
    return _total(xs) / len(xs)


def _len(args: Sequence[Value], ctx: Context) -> Value:
    return float(len(_flatten(args, "len")))


def _max(args: Sequence[Value], ctx: Context) -> Value:
    return max(_nonempty(args, "max"))


def _min(args: Sequence[Value], ctx: Context) -> Value:
    return min(_nonempty(args, "min"))


def _range(args: Sequence[Value], ctx: Context) -> Value:
    xs = _nonempty(args, "range")
    return max(xs) - min(xs)


def _norm(args: Sequence[Value], ctx: Context) -> Value:
    return math.sqrt(_total([x * x for x in _flatten(args, "norm")]))


def _sum(args: Sequence[Value], ctx: Context) -> Value:
    return _total(_flatten(args, "sum"))


def _std(args: Sequence[Value], ctx: Context) -> Value:
    """Sample standard deviation (n − 1); a single value has none, so 0."""
    xs = _nonempty(args, "std")
    if len(xs) < 2:
        return 0.0
    mean = _total(xs) / len(xs)
    variance = _total([(x - mean) * (x - mean) for x in xs]) / (len(xs) - 1)
    return math.sqrt(variance) if variance >= 0 else math.nan


def _percentile(args: Sequence[Value], ctx: Context) -> Value:
    """The nearest-rank element: the smallest value with at least p% of the vector at or below it."""
    _arity(args, "percentile", 2, 2)
    xs = sorted(_nonempty(args[:1], "percentile"))
    p = as_double(args[1], "Function 'percentile'")
    if not 0 <= p <= 100:
        raise Fault(
            f"Function 'percentile' expects a percentile between 0 and 100 but was given {format_double(p)}"
        )
    rank = max(1, math.ceil(p / 100 * len(xs)))
    return xs[rank - 1]


def _rand(args: Sequence[Value], ctx: Context) -> Value:
    _arity(args, "rand", 0, 0)
    return ctx.rng.random()


def _stop(args: Sequence[Value], ctx: Context) -> Value:
    _arity(args, "stop", 0, 0)
    raise Stop


def _val(args: Sequence[Value], ctx: Context) -> Value:
    _arity(args, "val", 2, 2)
    vec = args[0]
    if not isinstance(vec, tuple):
        raise Fault(f"Function 'val' expects a doubleVec but was given a {described(vec)}")
    i = as_double(args[1], "Function 'val'")
    if not math.isfinite(i) or not 0 <= int(i) < len(vec):
        raise Fault(f"Function 'val': index {format_double(i)} is outside the vector of length {len(vec)}")
    return vec[int(i)]


def _time(args: Sequence[Value], ctx: Context) -> Value:
    _arity(args, "time", 0, 1)
    if not args:
        return Timestamp(ctx.now)
    text = args[0]
    if not isinstance(text, str):
        raise Fault(f"Function 'time' expects a string but was given a {described(text)}")
    if text == "":
        return Timestamp(ctx.now)
    return Timestamp.of(parse_time(text))


_W3C = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?)?)?"
)
_RFC1123 = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{1,2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) "
    r"(\d{2}):(\d{2}):(\d{2}) (?:GMT|UTC|Z)"
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_time(text: str) -> datetime:
    """Parse the two documented formats, W3C-DTF (ISO 8601 profile) and RFC 1123; anything else fails."""
    try:
        m = _W3C.fullmatch(text)
        if m:
            year, month, day, hour, minute, sec, frac, zone = m.groups()
            tz = UTC
            if zone and zone != "Z":
                sign = -1 if zone[0] == "-" else 1
                tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
            micro = round(float(frac) * 1_000_000) if frac else 0
            moment = datetime(
                int(year),
                int(month or 1),
                int(day or 1),
                int(hour or 0),
                int(minute or 0),
                int(sec or 0),
                tzinfo=tz,
            ) + timedelta(microseconds=micro)
            return moment.astimezone(UTC)
        m = _RFC1123.fullmatch(text)
        if m:
            day, mon, year, hour, minute, sec = m.groups()
            return datetime(
                int(year), _MONTHS.index(mon) + 1, int(day), int(hour), int(minute), int(sec), tzinfo=UTC
            )
    except (ValueError, OverflowError):
        pass
    raise Fault(f"Function 'time' cannot read '{text}' as a W3C-DTF or RFC 1123 date and time")


def _rounding(fn: str, op: Callable[[float], float]) -> Function:
    def safe(x: float) -> float:
        return x if not math.isfinite(x) else float(op(x))

    return _elementwise(fn, safe)


FUNCTIONS: dict[str, Function] = {
    "avg": _avg,
    "len": _len,
    "lg": _elementwise("lg", _log(2)),
    "ln": _elementwise("ln", _log(None)),
    "log": _elementwise("log", _log(10)),
    "max": _max,
    "min": _min,
    "norm": _norm,
    "percentile": _percentile,
    "rand": _rand,
    "range": _range,
    "std": _std,
    "stop": _stop,
    "sum": _sum,
    "time": _time,
    "val": _val,
    # Not in the 2017–2022 docs, listed by the current page per third parties (decision 0070).
    "ceil": _rounding("ceil", math.ceil),
    "floor": _rounding("floor", math.floor),
    "round": _rounding("round", round),
}


def _member(extract: Callable[[datetime], int]) -> Callable[[Timestamp], float]:
    return lambda ts: float(extract(ts.moment()))


TIMESTAMP_MEMBERS: dict[str, Callable[[Timestamp], float]] = {
    "year": _member(lambda d: d.year),
    "month": _member(lambda d: d.month),
    "day": _member(lambda d: d.day),
    "weekday": _member(lambda d: d.isoweekday()),  # 1 = Monday … 7 = Sunday
    "hour": _member(lambda d: d.hour),
    "minute": _member(lambda d: d.minute),
    "second": _member(lambda d: d.second),
}

TIME_INTERVALS: dict[str, Interval] = {
    "TimeInterval_Zero": Interval(0),
    "TimeInterval_100ns": Interval(1),
    "TimeInterval_Microsecond": Interval(10),
    "TimeInterval_Millisecond": Interval(10_000),
    "TimeInterval_Second": Interval(TICKS_PER_SECOND),
    "TimeInterval_Minute": Interval(60 * TICKS_PER_SECOND),
    "TimeInterval_Hour": Interval(3600 * TICKS_PER_SECOND),
    "TimeInterval_Day": Interval(86400 * TICKS_PER_SECOND),
    "TimeInterval_Week": Interval(7 * 86400 * TICKS_PER_SECOND),
    "TimeInterval_Year": Interval(365 * 86400 * TICKS_PER_SECOND),
}
