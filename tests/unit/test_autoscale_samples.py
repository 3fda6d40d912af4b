"""Sample windows: GetSample by count / look-back / range / timestamps, the sample-percent rule and its
error, GetSamplePercent, GetSamplePeriod, Count and HistoryBeginTime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batchyard.autoscale import INSUFFICIENT_SAMPLE_DATA, Evaluation, Inputs, Series, evaluate

NOW = datetime(2026, 12, 3, 9, 0, 0, tzinfo=UTC)


def history(values: list[float], newest_age: timedelta = timedelta(0), period: int = 30) -> Series:
    """Samples every `period` seconds, the last `newest_age` before NOW, oldest first."""
    n = len(values)
    return Series.of(
        (NOW - newest_age - timedelta(seconds=period * (n - 1 - i)), v) for i, v in enumerate(values)
    )


def run(
    formula: str, metric: str = "$CPUPercent", series: Series | None = None, **extra: object
) -> Evaluation:
    metrics = {metric: series} if series is not None else {}
    return evaluate(formula, Inputs(now=NOW, metrics=metrics, **extra))  # type: ignore[arg-type]


def var(result: Evaluation, name: str) -> str:
    assert result.error is None, result.error
    return dict(p.split("=", 1) for p in result.results.split(";"))[name]


def test_a_full_ten_minute_window_holds_twenty_samples() -> None:
    # Samples at now-9:30 … now: 20 in (now-10min, now].
    series = history([float(i) for i in range(40)])
    result = run("$v = $CPUPercent.GetSample(TimeInterval_Minute * 10)", series=series)
    assert var(result, "$v") == "[" + ",".join(str(i) for i in range(20, 40)) + "]"
    assert (
        var(run("$p = $CPUPercent.GetSamplePercent(TimeInterval_Minute * 10)", series=series), "$p") == "100"
    )


def test_the_docs_case_eighteen_of_twenty_fails_at_95_and_passes_at_80() -> None:
    # "If the last minute of history was not available, only 18 samples would be returned."
    series = history([50.0] * 30, newest_age=timedelta(minutes=1))
    got = run("$v = len($CPUPercent.GetSample(TimeInterval_Minute * 10))", series=series)
    assert var(got, "$v") == "18"
    assert (
        var(run("$p = $CPUPercent.GetSamplePercent(TimeInterval_Minute * 10)", series=series), "$p") == "90"
    )
    assert (
        var(run("$v = avg($CPUPercent.GetSample(TimeInterval_Minute * 10, 80))", series=series), "$v") == "50"
    )
    failed = run(
        "$TargetDedicatedNodes = 3;\n$v = $CPUPercent.GetSample(TimeInterval_Minute * 10, 95)", series=series
    )
    assert failed.error is not None
    assert failed.error.code == INSUFFICIENT_SAMPLE_DATA
    assert failed.error.message == "Autoscale evaluation failed due to insufficient sample data"
    assert failed.error.values == [
        ("Message", "Line 2, Col 27: Insufficient data from data set: $CPUPercent wanted 95%, received 90%")
    ]
    assert failed.target_dedicated is None  # the pool stays as it is
    assert failed.results.startswith("$TargetDedicatedNodes=3;")


def test_a_new_pool_without_history_fails_a_required_percentage_like_the_service() -> None:
    # batch-shipyard#138: "Line 9, Col 43: Insufficient data from data set: $PendingTasks wanted 70%, received 0%"
    lines = [f"v{i} = {i}" for i in range(1, 9)] + ["samplevecavg = avg($PendingTasks.GetSample(sli, 70))"]
    formula = "sli = TimeInterval_Second * 60;\n" + ";\n".join(lines[1:]) + ";\n$TargetDedicatedNodes = 1"
    result = run(formula)
    assert result.error is not None and result.error.code == INSUFFICIENT_SAMPLE_DATA
    assert (
        result.error.located
        == "Line 9, Col 43: Insufficient data from data set: $PendingTasks wanted 70%, received 0%"
    )


def test_get_sample_by_count_returns_the_newest_however_old() -> None:
    series = history([1.0, 2.0, 3.0], newest_age=timedelta(hours=5))
    assert var(run("$v = $CPUPercent.GetSample(1)", series=series), "$v") == "[3]"
    assert var(run("$v = $CPUPercent.GetSample(2)", series=series), "$v") == "[2,3]"
    assert var(run("$v = $CPUPercent.GetSample(10)", series=series), "$v") == "[1,2,3]"
    assert var(run("$v = $CPUPercent.GetSample(0)", series=series), "$v") == "[]"
    assert var(run("$v = val($CPUPercent.GetSample(1), 0)", series=series), "$v") == "3"
    assert var(run("$v = $CPUPercent.GetSample(1)"), "$v") == "[]"


def test_a_start_and_end_window_excludes_newer_and_older_samples() -> None:
    # Samples at ages 0, 30 s, …, 9.5 min with value = age in seconds.
    series = Series.of((NOW - timedelta(seconds=30 * i), 30.0 * i) for i in range(20))
    got = run("$v = $CPUPercent.GetSample(1 * TimeInterval_Minute, 3 * TimeInterval_Minute)", series=series)
    assert var(got, "$v") == "[150,120,90,60]"  # ages in (60 s, 180 s], oldest first
    # either order of the edges names the same window
    same = run("$v = $CPUPercent.GetSample(3 * TimeInterval_Minute, 1 * TimeInterval_Minute)", series=series)
    assert var(same, "$v") == var(got, "$v")
    percent = run(
        "$p = $CPUPercent.GetSamplePercent(TimeInterval_Minute * 1, TimeInterval_Minute * 3)", series=series
    )
    assert var(percent, "$p") == "100"


def test_window_values_are_oldest_first() -> None:
    series = history([1.0, 2.0, 3.0, 4.0])
    assert var(run("$v = $CPUPercent.GetSample(TimeInterval_Minute * 2)", series=series), "$v") == "[1,2,3,4]"


def test_the_percentage_counts_possible_samples_of_the_window() -> None:
    series = history([7.0] * 3)  # 3 of the 6 possible in 3 minutes
    result = run("$v = $CPUPercent.GetSample(180 * TimeInterval_Second, 50)", series=series)
    assert var(result, "$v") == "[7,7,7]"
    failed = run("$v = $CPUPercent.GetSample(180 * TimeInterval_Second, 51)", series=series)
    assert failed.error is not None
    assert failed.error.detail.endswith("wanted 51%, received 50%")
    third = run("$p = $CPUPercent.GetSamplePercent(180 * TimeInterval_Second)", series=history([7.0] * 2))
    assert var(third, "$p") == "33.3333333333333"


def test_a_start_and_end_window_with_a_percentage() -> None:
    series = history([1.0] * 3)  # ages 0, 30 s, 60 s: one of the two possible in (60 s, 120 s]
    ok = run(
        "$v = $CPUPercent.GetSample(60 * TimeInterval_Second, 120 * TimeInterval_Second, 50)", series=series
    )
    assert var(ok, "$v") == "[1]"
    failed = run(
        "$v = $CPUPercent.GetSample(60 * TimeInterval_Second, 120 * TimeInterval_Second, 75)", series=series
    )
    assert failed.error is not None and failed.error.detail.endswith("wanted 75%, received 50%")


def test_timestamps_are_absolute_window_edges() -> None:
    series = history([1.0, 2.0, 3.0, 4.0])  # at NOW-90s, -60s, -30s, NOW
    since = run('$v = $CPUPercent.GetSample(time("2026-12-03T08:59:15Z"))', series=series)
    assert var(since, "$v") == "[3,4]"
    between = run(
        '$v = $CPUPercent.GetSample(time("2026-12-03T08:58:00Z"), time() + (-45 * TimeInterval_Second))',
        series=series,
    )
    assert var(between, "$v") == "[1,2]"
    mixed = run(
        '$v = $CPUPercent.GetSample(time("2026-12-03T08:58:00Z"), TimeInterval_Minute)', series=series
    )
    assert var(mixed, "$v") == "[1,2]"


def test_sample_period_count_and_history_begin_time() -> None:
    series = history([1.0, 2.0, 3.0], newest_age=timedelta(minutes=2))
    assert var(run("$v = $CPUPercent.GetSamplePeriod()", series=series), "$v") == "00:00:30"
    five = run("$v = $CPUPercent.GetSamplePeriod()", series=series, sample_period=timedelta(minutes=5))
    assert var(five, "$v") == "00:05:00"
    assert var(run("$v = $CPUPercent.Count()", series=series), "$v") == "3"
    assert var(run("$v = $CPUPercent.HistoryBeginTime()", series=series), "$v") == "2026-12-03T08:57:00.000Z"
    assert var(run("$v = time() - $CPUPercent.HistoryBeginTime()", series=series), "$v") == "00:03:00"
    empty = run("$v = $CPUPercent.HistoryBeginTime()")
    assert empty.error is not None and empty.error.code == INSUFFICIENT_SAMPLE_DATA


def test_a_longer_sample_period_changes_the_possible_count() -> None:
    series = history([1.0, 1.0], period=300)  # NOW-5min, NOW
    result = run(
        "$p = $CPUPercent.GetSamplePercent(TimeInterval_Minute * 10)",
        series=series,
        sample_period=timedelta(minutes=5),
    )
    assert var(result, "$p") == "100"


def test_every_read_only_variable_is_a_sample_set() -> None:
    from batchyard.autoscale import READ_ONLY

    for name in sorted(READ_ONLY):
        series = history([2.0, 4.0])
        result = run(f"$v = avg({name}.GetSample(TimeInterval_Minute))", metric=name, series=series)
        assert var(result, "$v") == "3", name


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        ("GetSample()", "takes 1 to 3 arguments but was given 0"),
        ("GetSample(1, 2, 3, 4)", "takes 1 to 3 arguments"),
        ('GetSample("x")', "expects a double but was given a string"),
        ("GetSample(-1)", "a sample count of 0 or more"),
        ("GetSample(TimeInterval_Minute, 101)", "samplePercent between 0 and 100"),
        ("GetSample(TimeInterval_Minute, -1)", "samplePercent between 0 and 100"),
        ("GetSample(1, TimeInterval_Minute)", "expects a timeinterval or timestamp but was given a double"),
        ("GetSample(TimeInterval_Minute, TimeInterval_Second, time())", "samplePercent) expects a double"),
        ("GetSamplePercent()", "takes 1 or 2 arguments"),
        ("GetSamplePercent(5)", "expects a timeinterval or timestamp"),
        ("GetSamplePeriod(1)", "takes no arguments"),
        ("Count(1)", "takes no arguments"),
        ("HistoryBeginTime(1)", "takes no arguments"),
    ],
)
def test_method_argument_errors(call: str, fragment: str) -> None:
    result = run(f"$v = $CPUPercent.{call}", series=history([1.0]))
    assert result.error is not None
    assert fragment in result.error.detail, result.error.detail
    assert result.error.col == len("$v = $CPUPercent.") + call.index("(") + 1
