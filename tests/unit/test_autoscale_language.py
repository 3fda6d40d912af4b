"""Lexer and parser: comments, separators, precedence, and syntax errors with the service's positions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batchyard.autoscale import (
    MAX_LENGTH,
    MAX_STATEMENTS,
    SYNTAX_ERROR,
    TOO_LONG,
    FormulaError,
    Inputs,
    Series,
    compile_formula,
    evaluate,
)

NOW = datetime(2026, 12, 3, 9, 0, 0, tzinfo=UTC)


def run(formula: str) -> str:
    result = evaluate(formula, Inputs(now=NOW))
    assert result.error is None, result.error
    return result.results


def user(formula: str, name: str) -> str:
    """The printed value of one variable from the results text."""
    for part in run(formula).split(";"):
        key, _, value = part.partition("=")
        if key == name:
            return value
    raise AssertionError(f"{name} not in results")


def syntax_error(formula: str) -> FormulaError:
    with pytest.raises(FormulaError) as caught:
        compile_formula(formula)
    return caught.value


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("10 - 4 - 3", "3"),
        ("24 / 4 / 2", "3"),
        ("-2 * 3", "-6"),
        ("--2", "2"),
        ("!0 + 1", "2"),
        ("!(3 > 2)", "0"),
        ("1 + 2 < 4", "1"),
        ("1 < 2 == 1", "1"),
        ("2 > 1 && 0 || 1", "1"),
        ("0 || 1 && 0", "0"),
        ("1 ? 2 : 3 + 4", "2"),
        ("0 ? 2 : 0 ? 3 : 4", "4"),
        ("1 ? 0 ? 5 : 6 : 7", "6"),
        ("1 + 1 ? 10 : 20", "10"),
        ("3 - -3", "6"),
        (".5 + 1.25e1", "13"),
    ],
)
def test_precedence_is_c_like(expr: str, expected: str) -> None:
    assert user(f"$x = {expr}", "$x") == expected


def test_comments_line_breaks_and_empty_statements() -> None:
    formula = """// leading comment
    $a = 1; // trailing comment
    /* block
       comment */ $b = $a + 1;;
    ;
    c = 3 /* inline */ * 2;
    """
    assert run(formula).endswith("$a=1;$b=2;$c=6")


def test_user_variables_with_and_without_dollar_are_one_variable() -> None:
    assert run("x = 2; $x = x * 5; y = $x").endswith("$x=10;$y=10")


def test_statements_run_in_order_and_reassign() -> None:
    assert user("$t = 1; $t = $t + 1; $t = $t * 10", "$t") == "20"


def test_results_list_service_variables_then_user_variables_by_name() -> None:
    text = run("zeta = 1; Alpha = 2; $beta = 3; $TargetDedicatedNodes = 4")
    assert text == (
        "$TargetDedicatedNodes=4;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;$Alpha=2;$beta=3;$zeta=1"
    )


@pytest.mark.parametrize(
    ("formula", "line", "col", "fragment"),
    [
        ("$a = (1 + 2", 1, 12, "Expected ')'"),
        ("$a = 1 +", 1, 9, "Unexpected end of formula"),
        ("$a = 1\n$b = 2", 2, 1, "Expected ';'"),
        ("$a = 5 % 2", 1, 8, "Unexpected character '%'"),
        ("$a = 1;\n  $b = )", 2, 8, "Unexpected ')'"),
        ('$a = time("2020', 1, 11, "Unterminated string"),
        ("$a = 1 /* open", 1, 8, "Unterminated comment"),
        ("$a = foo(1)", 1, 6, "Unknown function 'foo'"),
        ("$a = $CPUPercent.GetSomething(1)", 1, 18, "Unknown method 'GetSomething'"),
        ("$a = time().century", 1, 13, "Unknown member 'century'"),
        ("$a = $CPUPercent.$x", 1, 18, "Expected a member or method name"),
        ("$a = 1 ? 2", 1, 11, "Expected ':'"),
        ("$ = 1", 1, 1, "Expected a variable name after '$'"),
        ("$a = $9", 1, 6, "Expected a variable name after '$'"),
        ("$a = 12abc", 1, 6, "Invalid number"),
        ("$a = max(1,)", 1, 12, "Unexpected ')'"),
        ("$CPUPercent = 1", 1, 1, "read-only variable $CPUPercent"),
        ("TimeInterval_Hour = 1", 1, 1, "constant TimeInterval_Hour"),
    ],
)
def test_syntax_errors_name_line_and_column(formula: str, line: int, col: int, fragment: str) -> None:
    error = syntax_error(formula)
    assert error.code == SYNTAX_ERROR
    assert error.message == "The specified auto-scaling formula has a syntax error."
    assert (error.line, error.col) == (line, col), error.located
    assert fragment in error.detail
    assert error.values == [("Message", f"Line {line}, Col {col}: {error.detail}")]


def test_a_syntax_error_through_evaluate_keeps_the_pool_targets_in_the_results() -> None:
    result = evaluate("$TargetDedicatedNodes = (", Inputs(now=NOW, target_dedicated=3, target_low_priority=1))
    assert result.error is not None and result.error.code == SYNTAX_ERROR
    assert (
        result.results == "$TargetDedicatedNodes=3;$TargetLowPriorityNodes=1;$NodeDeallocationOption=requeue"
    )
    assert result.target_dedicated is None


def test_formula_length_limit() -> None:
    body = "$a = 1;" + " " * (MAX_LENGTH - 7)
    assert len(body) == MAX_LENGTH
    compile_formula(body)
    error = syntax_error(body + " ")
    assert error.code == TOO_LONG
    assert "8193" in error.detail


def test_statement_limit() -> None:
    compile_formula(";".join(f"$v{i} = {i}" for i in range(MAX_STATEMENTS)))
    error = syntax_error(";".join(f"$v{i} = {i}" for i in range(MAX_STATEMENTS + 1)))
    assert error.code == SYNTAX_ERROR
    assert "at most 100 statements" in error.detail


def test_crlf_line_endings_count_lines() -> None:
    error = syntax_error("$a = 1;\r\n$b = 2;\r\n$c = )")
    assert (error.line, error.col) == (3, 6)


def test_method_and_function_names_ignore_case() -> None:
    assert user("$n = $CPUPercent.count() + $CPUPercent.Count() + MAX(1, 2)", "$n") == "2"


@pytest.mark.parametrize(
    ("formula", "fragment"),
    [
        ("$a = " + "(" * 4000 + "1" + ")" * 4000, "nested too deeply"),
        ("$a = " + "1+" * 4000 + "1", "too complex"),
        ("$a = " + "-" * 8000 + "1", "too complex"),
        ("$a = " + "max(" * 1500 + "1" + ")" * 1500, "nested too deeply"),
        ("$a = " + "1?" * 2000 + "1" + ":1" * 2000, "nested too deeply"),
        ("$a = time()" + ".hour" * 1600, "too complex"),
    ],
    ids=["parens", "sum", "negations", "calls", "ternaries", "members"],
)
def test_deep_formulas_are_refused_not_crashed(formula: str, fragment: str) -> None:
    assert len(formula) <= MAX_LENGTH
    error = syntax_error(formula)
    assert error.code == SYNTAX_ERROR
    assert fragment in error.detail


def test_moderately_deep_formulas_still_work() -> None:
    assert user("$a = " + "(" * 30 + "1" + ")" * 30, "$a") == "1"
    assert user("$a = " + "1+" * 100 + "1", "$a") == "101"
    assert user("$a = " + "max(" * 30 + "2" + ")" * 30, "$a") == "2"


def test_string_escapes() -> None:
    assert user('$s = "say \\"hi\\" \\\\ now"', "$s") == 'say "hi" \\ now'
    assert user('$s = "back\\slash"', "$s") == "back\\slash"


def test_a_user_variable_may_shadow_a_keyword() -> None:
    assert user("requeue = 5; $x = requeue + 1", "$x") == "6"
    assert user("$x = taskcompletion", "$x") == "taskcompletion"


def test_a_formula_from_the_wild_with_vector_sums() -> None:
    # A formula published on ddeutils' Azure Batch notes: GetSample(1) vectors added, then clamped.
    formula = """$NodeDeallocationOption = taskcompletion;
minNodes = 1;
maxNodes = 10;
activeTasks = $ActiveTasks.GetSample(1);
runningTasks = $RunningTasks.GetSample(1);
totalTasks = activeTasks + runningTasks;
nodes = min(max(minNodes, totalTasks), maxNodes);
$TargetDedicated = nodes;"""
    fresh = evaluate(formula, Inputs(now=NOW))
    assert fresh.error is None and fresh.target_dedicated == 1
    assert fresh.results.endswith("$totalTasks=[]")
    metrics = {"$ActiveTasks": Series.of([(NOW, 3.0)]), "$RunningTasks": Series.of([(NOW, 4.0)])}
    busy = evaluate(formula, Inputs(now=NOW, metrics=metrics))
    assert busy.target_dedicated == 7
    assert busy.results.endswith("$nodes=7;$runningTasks=[4];$totalTasks=[7]")
