"""Any input string yields a result or a FormulaError: never another exception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchyard.autoscale import FormulaError, Inputs, Series, compile_formula, evaluate

NOW = datetime(2026, 12, 3, 9, 0, 0, tzinfo=UTC)
INPUTS = Inputs(
    now=NOW,
    target_dedicated=2,
    current_dedicated=2,
    metrics={
        "$CPUPercent": Series.of((NOW - timedelta(seconds=30 * i), 0.5) for i in range(40)),
        "$PendingTasks": Series.of((NOW - timedelta(seconds=30 * i), float(i % 7)) for i in range(10)),
    },
    seed=1,
)

# Pieces of real formulas so generated text reaches deep into the parser and evaluator, not only the lexer.
PIECES = [
    "$TargetDedicatedNodes", "$TargetLowPriorityNodes", "$NodeDeallocationOption", "$TargetDedicated", "x", "$y",
    "$CPUPercent", "$PendingTasks", "$CurrentDedicatedNodes", "$ActiveTasks", ".GetSample(", ".GetSamplePercent(",
    ".GetSamplePeriod()", ".Count()", ".HistoryBeginTime()", ".hour", ".weekday", "time()", 'time("2016-10-13")',
    "TimeInterval_Minute", "TimeInterval_Second", "TimeInterval_Zero", "avg(", "len(", "lg(", "ln(", "log(", "max(",
    "min(", "norm(", "percentile(", "rand()", "range(", "std(", "stop()", "sum(", "val(", "ceil(", "floor(", "round(",
    "requeue", "taskcompletion", "0", "1", "2.5", "1e308", "-", "+", "*", "/", "!", "<", "<=", "==", "!=", ">", ">=",
    "&&", "||", "?", ":", "(", ")", ",", ";", "=", " ", "\n", "//c\n", "/*c*/", '"s"', "%", "[", "$", ".", "9e9",
]  # fmt: skip


def check(text: str) -> None:
    result = evaluate(text, INPUTS)
    assert isinstance(result.results, str)
    assert result.results.startswith("$TargetDedicatedNodes=")
    if result.error is None:
        assert result.target_dedicated is not None and result.target_dedicated >= 0
        assert result.target_low_priority is not None and result.target_low_priority >= 0
    else:
        assert isinstance(result.error, FormulaError)
        assert result.error.values[0][0] == "Message"
    try:
        compile_formula(text)
    except FormulaError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_any_text(text: str) -> None:
    check(text)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_formula_like_text(pieces: list[str]) -> None:
    check("".join(pieces))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["$a", "$TargetDedicatedNodes", "$NodeDeallocationOption", "b"]),
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=25),
)
def test_assignments(target: str, pieces: list[str]) -> None:
    check(f"{target} = {''.join(pieces)};")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    st.lists(
        st.sampled_from(["(", "-", "!", "max(", "1", "+", "?", ":", ")", ".hour", "time()"]), max_size=3000
    )
)
def test_long_and_deep_text(pieces: list[str]) -> None:
    check("$a = " + "".join(pieces))


NUMBER = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"({x!r})"),
    st.sampled_from(["(1e308*10)", "(-1e308*10)", "(0/0)", "0", "lg(0, 1e308)", "$CPUPercent.GetSample(3)"]),
)
FUNCTION = st.sampled_from(
    ["avg", "len", "lg", "ln", "log", "max", "min", "norm", "range", "std", "sum", "ceil", "floor", "round"]
)


@settings(max_examples=800, deadline=None)
@given(FUNCTION, st.lists(NUMBER, min_size=0, max_size=5), st.sampled_from(["+", "-", "*", "/", "<", "=="]))
def test_functions_on_extreme_numbers(fn: str, args: list[str], op: str) -> None:
    check(f"$a = {fn}({', '.join(args)}); $b = $a {op} {args[0] if args else '1'}; $TargetDedicatedNodes = 1")


@settings(max_examples=300, deadline=None)
@given(st.lists(NUMBER, min_size=2, max_size=2), st.sampled_from(["percentile", "val"]))
def test_vector_index_functions_on_extreme_numbers(args: list[str], fn: str) -> None:
    check(f"$a = {fn}(lg({args[0]}, 2, 4), {args[1]})")
