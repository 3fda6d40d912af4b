"""The methods of sample sets (`$CPUPercent.GetSample(…)` …): windows over a metric's history.

A window is (now − start, now − end]; its possible samples are its length over the sample period, and a
`samplePercent` argument fails the evaluation (InsufficientSampleData) when fewer are present.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from batchyard.autoscale.errors import INSUFFICIENT_SAMPLE_DATA, Fault
from batchyard.autoscale.functions import Context, as_double, described
from batchyard.autoscale.values import Interval, Metric, Timestamp, Value, format_double


def _point(value: Value, ctx: Context, method: str) -> int:
    """A window edge: a timeinterval looks back from now, a timestamp is absolute."""
    if isinstance(value, Interval):
        return ctx.now - value.ticks
    if isinstance(value, Timestamp):
        return value.ticks
    raise Fault(f"Method '{method}' expects a timeinterval or timestamp but was given a {described(value)}")


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
        count = as_double(first, "Method 'GetSample'")
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
        wanted = as_double(last, "Method 'GetSample' (samplePercent)")
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
