"""Every type, operator and built-in function, and the type errors the operator table implies."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from batchyard.autoscale import EVALUATION_ERROR, FormulaError, Inputs, evaluate

NOW = datetime(2016, 10, 13, 19, 18, 47, 805000, tzinfo=UTC)  # a Thursday


def value(expr: str, **pool: int) -> str:
    result = evaluate(f"$x = {expr}", Inputs(now=NOW, **pool))  # type: ignore[arg-type]
    assert result.error is None, result.error
    return result.results.split("$x=")[1]


def failure(formula: str) -> FormulaError:
    result = evaluate(formula, Inputs(now=NOW))
    assert result.error is not None, result.results
    assert result.target_dedicated is None
    return result.error


# ---- doubles and their printed form ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "printed"),
    [
        ("1.1 * 3", "3.3"),
        ("10 / 4", "2.5"),
        ("1 / 3", "0.333333333333333"),
        ("1000000 * 1000000000", "1E+15"),
        ("0.00001", "1E-05"),
        ("0.0001", "0.0001"),
        ("1 / 0", "Infinity"),
        ("-1 / 0", "-Infinity"),
        ("0 / 0", "NaN"),
        ("-0", "0"),
        ("123456789012345678", "1.23456789012346E+17"),
    ],
)
def test_doubles_print_like_the_service(expr: str, printed: str) -> None:
    assert value(expr) == printed


# ---- functions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "printed"),
    [
        ("avg(1, 2, 3, 6)", "3"),
        ("avg($CPUPercent.GetSample(0), 4)", "4"),
        ("len(1, 2, 3)", "3"),
        ("len($CPUPercent.GetSample(0))", "0"),
        ("lg(8)", "3"),
        ("ln(1)", "0"),
        ("log(1000)", "3"),
        ("log(0)", "-Infinity"),
        ("log(-1)", "NaN"),
        ("max(3, 9, 2)", "9"),
        ("min(3, 9, 2)", "2"),
        ("norm(3, 4)", "5"),
        ("range(3, 9, 2)", "7"),
        ("std(2, 4, 4, 4, 5, 5, 7, 9)", "2.1380899352994"),
        ("std(5)", "0"),
        ("sum(1, 2, 3.5)", "6.5"),
        ("percentile(lg(1, 2, 4, 8, 16), 50)", "2"),
        ("percentile(lg(1, 2, 4, 8, 16), 0)", "0"),
        ("percentile(lg(1, 2, 4, 8, 16), 100)", "4"),
        ("percentile(lg(1, 2, 4, 8, 16), 90)", "4"),
        ("val(lg(1, 2, 4), 2)", "2"),
        ("val(lg(1, 2, 4), 0.9)", "0"),
        ("ceil(1.2)", "2"),
        ("floor(-1.2)", "-2"),
        ("round(2.5)", "2"),
        ("round(3.5)", "4"),
        ("time().year", "2016"),
        ("time().month", "10"),
        ("time().day", "13"),
        ("time().weekday", "4"),
        ("time().hour", "19"),
        ("time().minute", "18"),
        ("time().second", "47"),
        ('time("").hour', "19"),
        ('time("2016-10-16T01:02:03Z").weekday', "7"),
        ('time("2016-10-16T23:30:00-02:00").day', "17"),
        ('time("2016-10-16").hour', "0"),
        ('time("2016").month', "1"),
        ('time("Thu, 13 Oct 2016 19:18:47 GMT").second', "47"),
    ],
)
def test_functions(expr: str, printed: str) -> None:
    assert value(expr) == printed


def test_vector_forms_of_the_logarithms() -> None:
    assert value("lg(1, 2, 4)") == "[0,1,2]"
    assert value("log(lg(2, 1024))") == "[0,1]"
    assert value("ln(lg(4, 4))") == "[0.693147180559945,0.693147180559945]"
    assert value("ln(lg(4))") == "0.693147180559945"


def test_doublevec_lists_flatten_before_the_call() -> None:
    # The docs: with v = [1,2,3], avg(v, 7) is avg(1,2,3,7).
    assert value("avg(lg(2, 4, 8), 7)") == "3.25"
    assert value("max(0, lg(2, 4, 8))") == "3"


def test_time_prints_iso_with_milliseconds_and_parses_fractions() -> None:
    assert value("time()") == "2016-10-13T19:18:47.805Z"
    assert value('time("2016-10-13T19:18:47.8056Z")') == "2016-10-13T19:18:47.805Z"


def test_rand_is_uniform_and_follows_the_injected_seed() -> None:
    def draw(seed: int) -> str:
        result = evaluate("$a = rand(); $b = rand()", Inputs(now=NOW, seed=seed))
        assert result.error is None
        return result.results

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    values = [float(p.split("=")[1]) for p in draw(1).split(";")[3:]]
    assert all(0 <= v < 1 for v in values)


def test_stop_ends_the_evaluation_keeping_what_was_set() -> None:
    result = evaluate(
        "$TargetDedicatedNodes = 4; stop(); $TargetDedicatedNodes = 9; $after = 1", Inputs(now=NOW)
    )
    assert result.error is None
    assert result.target_dedicated == 4
    assert "$after" not in result.results


def test_stop_in_an_untaken_branch_does_nothing() -> None:
    result = evaluate("$a = 0 ? stop() : 1; $TargetDedicatedNodes = 2", Inputs(now=NOW))
    assert result.target_dedicated == 2


# ---- timestamps and timeintervals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "printed"),
    [
        ("TimeInterval_Zero", "00:00:00"),
        ("TimeInterval_100ns", "00:00:00.0000001"),
        ("TimeInterval_Microsecond", "00:00:00.0000010"),
        ("TimeInterval_Millisecond", "00:00:00.0010000"),
        ("TimeInterval_Second * 90", "00:01:30"),
        ("TimeInterval_Minute * 10", "00:10:00"),
        ("TimeInterval_Hour / 4", "00:15:00"),
        ("TimeInterval_Day + TimeInterval_Hour", "1.01:00:00"),
        ("TimeInterval_Week - TimeInterval_Day", "6.00:00:00"),
        ("TimeInterval_Year", "365.00:00:00"),
        ("-TimeInterval_Minute", "-00:01:00"),
        ("2 * TimeInterval_Minute", "00:02:00"),
        ('time("2016-10-13T20:00:00Z") - time("2016-10-13T19:00:00Z")', "01:00:00"),
        ("time() + (-6 * TimeInterval_Hour)", "2016-10-13T13:18:47.805Z"),
        ("TimeInterval_Day + time()", "2016-10-14T19:18:47.805Z"),
        ("TimeInterval_Minute > TimeInterval_Second", "1"),
        ('time("2016-01-01") < time()', "1"),
        ("time() == time()", "1"),
        ('"abc" < "abd"', "1"),
        ('"abc" == "abc"', "1"),
        ('"b" != "a"', "1"),
        ('"text"', "text"),
    ],
)
def test_timestamps_intervals_strings(expr: str, printed: str) -> None:
    assert value(expr) == printed


def test_doublevec_operators() -> None:
    assert value("lg(2, 4) + 1") == "[2,3]"
    assert value("lg(2, 4) - 1") == "[0,1]"
    assert value("lg(2, 4) * 3") == "[3,6]"
    assert value("lg(2, 4) / 2") == "[0.5,1]"
    assert value("lg(2, 4) + lg(8, 16)") == "[4,6]"
    assert value("lg(2, 4) * lg(8, 16)") == "[3,8]"


def test_pool_figures_read_as_doubles() -> None:
    pool = {"current_dedicated": 10, "current_low_priority": 3, "preempted_nodes": 2, "usable_nodes": 8}
    assert value("$CurrentDedicatedNodes * 1.1", **pool) == "11"
    assert value("$CurrentLowPriorityNodes + $PreemptedNodeCount + $UsableNodeCount", **pool) == "13"
    assert value("$TaskSlotsPerNode", task_slots_per_node=4) == "4"
    assert value("$CurrentDedicatedNodes", **pool) == "10"


# ---- type errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("formula", "col", "fragment"),
    [
        ("$x = time() + 1", 13, "Operator '+' is not defined for timestamp and double"),
        ("$x = time() - TimeInterval_Hour", 13, "Operator '-' is not defined for timestamp and timeinterval"),
        ("$x = time() + time()", 13, "Operator '+' is not defined for timestamp and timestamp"),
        ("$x = 1 + TimeInterval_Second", 8, "double and timeinterval"),
        ("$x = TimeInterval_Second * TimeInterval_Second", 26, "timeinterval and timeinterval"),
        ("$x = TimeInterval_Second + 1", 26, "timeinterval and double"),
        ("$x = 1 + lg(1, 2)", 8, "double and doubleVec"),
        ("$x = lg(1, 2) + lg(1, 2, 3)", 15, "equal length"),
        ('$x = "a" + "b"', 10, "string and string"),
        ('$x = "a" < 1', 10, "string and double"),
        ("$x = lg(1, 2) < 1", 15, "doubleVec and double"),
        ("$x = TimeInterval_Second < 1", 26, "timeinterval and double"),
        ("$x = time() && 1", 13, "Operator '&&' needs a double but was given a timestamp"),
        ("$x = 0 || TimeInterval_Second", 8, "Operator '||' needs a double"),
        ("$x = -time()", 6, "Operator '-' is not defined for timestamp"),
        ("$x = !TimeInterval_Second", 6, "Operator '!' is not defined for timeinterval"),
        ("$x = -lg(1, 2)", 6, "Operator '-' is not defined for doubleVec"),
        ("$x = time() ? 1 : 2", 13, "The condition of '?:' needs a double"),
        ("$x = $CPUPercent + 1", 18, "sample set $CPUPercent (read it with GetSample)"),
        (
            "$x = avg($PendingTasks)",
            9,
            "Function 'avg' expects a double but was given a sample set ($PendingTasks",
        ),
        ("$x = avg(time())", 9, "Function 'avg' expects a double but was given a timestamp"),
        ("$x = avg()", 9, "needs at least one value"),
        ("$x = max($CPUPercent.GetSample(0))", 9, "Function 'max' needs at least one value"),
        ("$x = percentile(lg(2, 4), 101)", 16, "between 0 and 100"),
        ("$x = percentile(lg(2, 4))", 16, "takes 2 argument(s) but was given 1"),
        ("$x = val(3, 0)", 9, "Function 'val' expects a doubleVec but was given a double"),
        ("$x = val(lg(2, 4), 2)", 9, "index 2 is outside the vector of length 2"),
        ("$x = val(lg(2, 4), -1)", 9, "outside the vector"),
        ("$x = rand(1)", 10, "takes 0 argument(s)"),
        ("$x = stop(1)", 10, "takes 0 argument(s)"),
        ("$x = time(1)", 10, "Function 'time' expects a string but was given a double"),
        ('$x = time("2016-13-01")', 10, "cannot read '2016-13-01'"),
        ('$x = time("2023-04-14T10:00:00.000000000+0000Z")', 10, "W3C-DTF or RFC 1123"),
        ("$x = time(), 2", 12, "Expected ';'"),
        ("$x = (1).hour", 10, "Member 'hour' applies to a timestamp, not to a double"),
        ("$x = (1).GetSample(1)", 19, "Method 'GetSample' applies to a sample set"),
        ("$x = undefinedThing + 1", 6, "Undefined variable undefinedThing"),
        (
            "$TargetDedicatedNodes = time()",
            1,
            "$TargetDedicatedNodes must be a double but was given a timestamp",
        ),
        ("$TargetLowPriorityNodes = lg(1, 2)", 1, "must be a double but was given a doubleVec"),
        ("$NodeDeallocationOption = 1", 1, "must be one of requeue, terminate, taskcompletion, retaineddata"),
        ('$NodeDeallocationOption = "later"', 1, "must be one of"),
        (
            "$TargetDedicatedNodes = -1",
            1,
            "$TargetDedicatedNodes must be a number of nodes (0 or more) but is -1",
        ),
        ("$TargetLowPriorityNodes = 1 / 0", 1, "but is Infinity"),
        ("$TargetDedicatedNodes = 0 / 0", 1, "but is NaN"),
        ("$x = TimeInterval_Year * 1e300", 24, "out of range"),
        ("$x = time() + TimeInterval_Year * 10000", 13, "The timestamp is out of range"),
        ("$x = TimeInterval_Second / 0", 26, "by zero"),
    ],
)
def test_evaluation_errors(formula: str, col: int, fragment: str) -> None:
    error = failure(formula)
    assert error.code == EVALUATION_ERROR or "Expected ';'" in fragment, error
    assert fragment in error.detail, error.detail
    assert error.col == col, error.located
    assert error.values[0][1].startswith(f"Line 1, Col {col}: ")


def test_an_evaluation_error_keeps_the_values_set_before_it() -> None:
    result = evaluate(
        "$TargetDedicatedNodes = 5; $a = 1; $b = time() + 1; $c = 2", Inputs(now=NOW, target_dedicated=2)
    )
    assert result.error is not None
    assert result.error.message == "Autoscale evaluation failed"
    assert (
        result.results
        == "$TargetDedicatedNodes=5;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;$a=1"
    )


def test_a_bare_undefined_variable_is_an_evaluation_error_with_the_pool_targets() -> None:
    # The JS SDK's recorded test: "$something_useless" → AutoScalingFormulaEvaluationError, results unchanged.
    result = evaluate("$something_useless", Inputs(now=NOW, target_dedicated=2))
    assert result.error is not None and result.error.code == "AutoScalingFormulaEvaluationError"
    assert (
        result.results == "$TargetDedicatedNodes=2;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue"
    )


# ---- read-write service variables --------------------------------------------------------------------


def test_targets_start_at_the_pool_targets_and_fractions_truncate() -> None:
    result = evaluate(
        "$TargetDedicatedNodes = $TargetDedicatedNodes / 2 + 0.9; $TargetLowPriorityNodes = 2.9",
        Inputs(now=NOW, target_dedicated=5, target_low_priority=1),
    )
    assert (result.target_dedicated, result.target_low_priority) == (3, 2)
    assert result.results.startswith("$TargetDedicatedNodes=3.4;$TargetLowPriorityNodes=2.9;")


def test_aliases_and_the_full_name_wins() -> None:
    only_alias = evaluate("$TargetDedicated = 4; $TargetLowPriority = 6", Inputs(now=NOW))
    assert (only_alias.target_dedicated, only_alias.target_low_priority) == (4, 6)
    assert (
        only_alias.results
        == "$TargetDedicatedNodes=4;$TargetLowPriorityNodes=6;$NodeDeallocationOption=requeue"
    )
    both = evaluate("$TargetDedicatedNodes = 1; $TargetDedicated = 9", Inputs(now=NOW))
    assert both.target_dedicated == 1


@pytest.mark.parametrize("option", ["requeue", "terminate", "taskcompletion", "retaineddata"])
def test_node_deallocation_option_keywords(option: str) -> None:
    result = evaluate(f"$NodeDeallocationOption = {option}", Inputs(now=NOW))
    assert result.node_deallocation_option == option
    assert f"$NodeDeallocationOption={option}" in result.results


def test_node_deallocation_option_defaults_to_requeue_and_takes_a_ternary() -> None:
    assert evaluate("$a = 1", Inputs(now=NOW)).node_deallocation_option == "requeue"
    result = evaluate("$NodeDeallocationOption = 0 ? requeue : taskcompletion", Inputs(now=NOW))
    assert result.node_deallocation_option == "taskcompletion"


def test_keywords_in_arithmetic_are_type_errors() -> None:
    assert "nodeDeallocationOption" in failure("$x = requeue + 1").detail


def test_inputs_refuse_a_naive_clock() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Inputs(now=datetime(2026, 1, 1))


def test_inputs_refuse_unknown_metrics() -> None:
    with pytest.raises(ValueError, match="unknown metrics"):
        Inputs(now=NOW, metrics={"$Bogus": None})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("expr", "printed"),
    [
        ("sum(1e308, 1e308)", "Infinity"),
        ("avg(1e308, 1e308)", "Infinity"),
        ("sum(1e308 * 10, -1e308 * 10)", "NaN"),
        ("std(1e200, -1e200)", "Infinity"),
        ("norm(1e200, 1e200)", "Infinity"),
        ("lg(1e308 * 10)", "Infinity"),
        ("round(1e308 * 10)", "Infinity"),
        ("lg(2, 4) * 1e308 * 1e308", "[Infinity,Infinity]"),
    ],
)
def test_overflow_gives_ieee_values_not_crashes(expr: str, printed: str) -> None:
    assert value(expr) == printed


def test_math_helpers_are_finite_for_large_vectors() -> None:
    assert math.isclose(float(value("avg(lg(" + ", ".join(["2"] * 50) + "))")), 1.0)
