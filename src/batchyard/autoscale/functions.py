"""Built-in functions, sample-set methods and timestamp members, each checking its argument types."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone

from batchyard.autoscale.errors import INSUFFICIENT_SAMPLE_DATA, Fault
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


def _double(value: Value, where: str) -> float:
    if isinstance(value, float):
        return value
    if isinstance(value, Metric) and value.current is not None:
        return value.current
    raise Fault(f"{where} expects a double but was given a {_shown(value)}")


def _shown(value: Value) -> str:
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
            out.append(_double(arg, f"Function '{fn}'"))
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
            return op(_double(args[0], f"Function '{fn}'"))
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
    p = _double(args[1], "Function 'percentile'")
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
        raise Fault(f"Function 'val' expects a doubleVec but was given a {_shown(vec)}")
    i = _double(args[1], "Function 'val'")
    if not math.isfinite(i) or not 0 <= int(i) < len(vec):
        raise Fault(f"Function 'val': index {format_double(i)} is outside the vector of length {len(vec)}")
    return vec[int(i)]


def _time(args: Sequence[Value], ctx: Context) -> Value:
    _arity(args, "time", 0, 1)
    if not args:
        return Timestamp(ctx.now)
    text = args[0]
    if not isinstance(text, str):
        raise Fault(f"Function 'time' expects a string but was given a {_shown(text)}")
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


# ---- sample-set methods ------------------------------------------------------------------------------


def _point(value: Value, ctx: Context, method: str) -> int:
    """A window edge: a timeinterval looks back from now, a timestamp is absolute."""
    if isinstance(value, Interval):
        return ctx.now - value.ticks
    if isinstance(value, Timestamp):
        return value.ticks
    raise Fault(f"Method '{method}' expects a timeinterval or timestamp but was given a {_shown(value)}")


def _window(
    metric: Metric, args: Sequence[Value], ctx: Context, method: str
) -> tuple[tuple[float, ...], float]:
    """The samples of a window and the percentage of the possible samples that are present."""
    lo = _point(args[0], ctx, method)
    hi = _point(args[1], ctx, method) if len(args) > 1 else ctx.now
    lo, hi = min(lo, hi), max(lo, hi)
    got = metric.series.window(lo, hi)
    possible = max(1, (hi - lo) // ctx.period)
    return got, min(100.0, 100.0 * len(got) / possible)


def _get_sample(metric: Metric, args: Sequence[Value], ctx: Context) -> Value:
    if not 1 <= len(args) <= 3:
        raise Fault(f"Method 'GetSample' takes 1 to 3 arguments but was given {len(args)}")
    first = args[0]
    if len(args) == 1 and not isinstance(first, Interval | Timestamp):
        count = _double(first, "Method 'GetSample'")
        if not math.isfinite(count) or count < 0:
            raise Fault(
                f"Method 'GetSample' expects a sample count of 0 or more but was given {format_double(count)}"
            )
        n = int(count)
        values = metric.series.values
        return values[len(values) - n :] if n else ()
    edges: Sequence[Value] = args
    wanted = 0.0
    last = args[-1]
    if len(args) == 3 or (len(args) == 2 and not isinstance(last, Interval | Timestamp)):
        wanted = _double(last, "Method 'GetSample' (samplePercent)")
        if not 0 <= wanted <= 100:
            raise Fault(
                f"Method 'GetSample' expects a samplePercent between 0 and 100 but was given {format_double(wanted)}"
            )
        edges = args[:-1]
    got, percent = _window(metric, edges, ctx, "GetSample")
    if percent < wanted:
        raise Fault(
            f"Insufficient data from data set: {metric.name} wanted {format_double(wanted)}%, received {int(percent)}%",
            INSUFFICIENT_SAMPLE_DATA,
        )
    return got


def _get_sample_percent(metric: Metric, args: Sequence[Value], ctx: Context) -> Value:
    if not 1 <= len(args) <= 2:
        raise Fault(f"Method 'GetSamplePercent' takes 1 or 2 arguments but was given {len(args)}")
    return _window(metric, args, ctx, "GetSamplePercent")[1]


def _get_sample_period(metric: Metric, args: Sequence[Value], ctx: Context) -> Value:
    if args:
        raise Fault("Method 'GetSamplePeriod' takes no arguments")
    return Interval(ctx.period)


def _count(metric: Metric, args: Sequence[Value], ctx: Context) -> Value:
    if args:
        raise Fault("Method 'Count' takes no arguments")
    return float(len(metric.series.times))


def _history_begin_time(metric: Metric, args: Sequence[Value], ctx: Context) -> Value:
    if args:
        raise Fault("Method 'HistoryBeginTime' takes no arguments")
    if not metric.series.times:
        raise Fault(
            f"Insufficient data from data set: {metric.name} has no samples", INSUFFICIENT_SAMPLE_DATA
        )
    return Timestamp(metric.series.times[0])


MethodFn = Callable[[Metric, Sequence[Value], Context], Value]

# Keyed by lower-case name: the service's spelling is `GetSample`, formulas in the wild also write `count`.
METHODS: dict[str, tuple[str, MethodFn]] = {
    "getsample": ("GetSample", _get_sample),
    "getsamplepercent": ("GetSamplePercent", _get_sample_percent),
    "getsampleperiod": ("GetSamplePeriod", _get_sample_period),
    "count": ("Count", _count),
    "historybegintime": ("HistoryBeginTime", _history_begin_time),
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
