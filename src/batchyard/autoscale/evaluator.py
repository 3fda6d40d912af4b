"""Compiles a parsed formula into Python closures once, then evaluates it cheaply against plain inputs.

The caller supplies the clock, the pool's figures and each metric's sample history (`Inputs`); the result
(`Evaluation`) is the service's `$Name=value;…` text, the targets to apply, and an error if any.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from batchyard.autoscale.errors import EVALUATION_ERROR, SYNTAX_ERROR, Fault, FormulaError
from batchyard.autoscale.functions import FUNCTIONS, METHODS, TIME_INTERVALS, TIMESTAMP_MEMBERS, Context, Stop
from batchyard.autoscale.nodes import (
    Assign,
    Bare,
    Binary,
    Call,
    Expr,
    Formula,
    Member,
    Method,
    Name,
    Number,
    Pos,
    String,
    Ternary,
    Unary,
)
from batchyard.autoscale.parser import parse
from batchyard.autoscale.values import (
    EMPTY_SERIES,
    NODE_DEALLOCATION_OPTIONS,
    Interval,
    Metric,
    Option,
    Series,
    Timestamp,
    Value,
    format_value,
    type_name,
)

TARGET_DEDICATED = "$TargetDedicatedNodes"
TARGET_LOW_PRIORITY = "$TargetLowPriorityNodes"
NODE_DEALLOCATION = "$NodeDeallocationOption"
_ALIASES = {"$TargetDedicated": TARGET_DEDICATED, "$TargetLowPriority": TARGET_LOW_PRIORITY}
_TARGETS = (TARGET_DEDICATED, TARGET_LOW_PRIORITY, *_ALIASES)

# Read-only service variables. Pool figures also have a current value usable as a double
# (the docs' examples compute `$CurrentDedicatedNodes * 1.1`); the others are sample sets only.
POOL_FIGURES = (
    "$CurrentDedicatedNodes",
    "$CurrentLowPriorityNodes",
    "$PreemptedNodeCount",
    "$UsableNodeCount",
    "$TaskSlotsPerNode",
)
SAMPLE_SETS = (
    "$CPUPercent",
    "$WallClockSeconds",
    "$MemoryBytes",
    "$DiskBytes",
    "$DiskReadBytes",
    "$DiskWriteBytes",
    "$DiskReadOps",
    "$DiskWriteOps",
    "$NetworkInBytes",
    "$NetworkOutBytes",
    "$SampleNodeCount",
    "$ActiveTasks",
    "$RunningTasks",
    "$PendingTasks",
    "$SucceededTasks",
    "$FailedTasks",
)
# Older names still seen in formulas in the wild (doAzureParallel's MAX_CPU formula reads `$CurrentDedicated`).
READ_ONLY_ALIASES = {"$CurrentDedicated": "$CurrentDedicatedNodes"}
READ_ONLY = frozenset(POOL_FIGURES + SAMPLE_SETS)


@dataclass(frozen=True)
class Inputs:
    """Everything an evaluation reads: the clock, the pool's figures and the metrics' histories."""

    now: datetime
    target_dedicated: int = 0
    target_low_priority: int = 0
    current_dedicated: int = 0
    current_low_priority: int = 0
    preempted_nodes: int = 0
    usable_nodes: int = 0
    task_slots_per_node: int = 1
    metrics: Mapping[str, Series] = field(default_factory=dict)
    sample_period: timedelta = timedelta(seconds=30)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        unknown = set(self.metrics) - READ_ONLY
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; known: {sorted(READ_ONLY)}")
        if self.sample_period <= timedelta(0):
            raise ValueError("sample_period must be positive")

    @cached_property
    def ticks(self) -> tuple[int, int]:
        """`now` and `sample_period` in 100 ns ticks, computed once per Inputs."""
        return Timestamp.of(self.now).ticks, self.sample_period // timedelta(microseconds=1) * 10


@dataclass(frozen=True)
class Evaluation:
    """One run: `results` as the service prints it; targets are None when the run failed."""

    timestamp: datetime
    results: str
    error: FormulaError | None
    target_dedicated: int | None
    target_low_priority: int | None
    node_deallocation_option: str | None


class _Env:
    __slots__ = ("vars", "ctx", "inputs", "metrics", "assigned")

    def __init__(self, inputs: Inputs) -> None:
        self.inputs = inputs
        now, period = inputs.ticks
        self.ctx = Context(now, period, inputs.seed)
        td, tl = float(inputs.target_dedicated), float(inputs.target_low_priority)
        self.vars: dict[str, Value] = {
            TARGET_DEDICATED: td,
            TARGET_LOW_PRIORITY: tl,
            NODE_DEALLOCATION: Option("requeue"),
            "$TargetDedicated": td,
            "$TargetLowPriority": tl,
        }
        self.metrics: dict[str, Metric] = {}
        self.assigned: dict[str, Pos] = {}

    def metric(self, name: str) -> Metric:
        found = self.metrics.get(name)
        if found is None:
            i = self.inputs
            current: float | None = None
            if name in POOL_FIGURES:
                current = float(
                    {
                        "$CurrentDedicatedNodes": i.current_dedicated,
                        "$CurrentLowPriorityNodes": i.current_low_priority,
                        "$PreemptedNodeCount": i.preempted_nodes,
                        "$UsableNodeCount": i.usable_nodes,
                        "$TaskSlotsPerNode": i.task_slots_per_node,
                    }[name]
                )
            found = Metric(name, i.metrics.get(name, EMPTY_SERIES), current)
            self.metrics[name] = found
        return found


Code = Callable[[_Env], Value]


def _at(pos: Pos, fault: Fault) -> FormulaError:
    return FormulaError(fault.code, fault.detail, pos.line, pos.col)


def _scalar(value: Value) -> Value:
    """Pool figures read as their current value wherever a value (not a sample set) is needed."""
    if isinstance(value, Metric) and value.current is not None:
        return value.current
    return value


def _divide(a: float, b: float) -> float:
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _arith(op: str, x: float, y: float) -> float:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    return _divide(x, y)


def _binary(op: str, a: Value, b: Value) -> Value:
    """The operator table of the service's docs; any other pairing is a type error."""
    a, b = _scalar(a), _scalar(b)
    if op in ("+", "-", "*", "/"):
        if isinstance(a, float):
            if isinstance(b, float):
                return _arith(op, a, b)
            if isinstance(b, Interval) and op == "*":
                return Interval.checked(a * b.ticks)
        elif isinstance(a, tuple):
            if isinstance(b, float):
                return tuple(_arith(op, x, b) for x in a)
            if isinstance(b, tuple):
                if len(a) != len(b):
                    raise Fault(
                        f"Operator '{op}' needs doubleVecs of equal length, not {len(a)} and {len(b)}"
                    )
                return tuple(_arith(op, x, y) for x, y in zip(a, b, strict=True))
        elif isinstance(a, Interval):
            if isinstance(b, float) and op in ("*", "/"):
                if op == "/" and b == 0:
                    raise Fault("Division of a timeinterval by zero")
                return Interval.checked(a.ticks * b if op == "*" else a.ticks / b)
            if isinstance(b, Interval) and op in ("+", "-"):
                return Interval.checked(a.ticks + b.ticks if op == "+" else a.ticks - b.ticks)
            if isinstance(b, Timestamp) and op == "+":
                return Timestamp.checked(a.ticks + b.ticks)
        elif isinstance(a, Timestamp):
            if isinstance(b, Interval) and op == "+":
                return Timestamp.checked(a.ticks + b.ticks)
            if isinstance(b, Timestamp) and op == "-":
                return Interval.checked(a.ticks - b.ticks)
    elif op in ("<", "<=", ">", ">=", "==", "!="):
        if isinstance(a, Timestamp | Interval) and type(a) is type(b):
            return 1.0 if _compare(op, a.ticks, b.ticks) else 0.0
        if isinstance(a, float | str) and type(a) is type(b):
            return 1.0 if _compare(op, a, b) else 0.0
    raise Fault(f"Operator '{op}' is not defined for {_shown(a)} and {_shown(b)}")


def _compare(op: str, x: float | str | int, y: float | str | int) -> bool:
    if op == "<":
        return x < y  # type: ignore[operator]
    if op == "<=":
        return x <= y  # type: ignore[operator]
    if op == ">":
        return x > y  # type: ignore[operator]
    if op == ">=":
        return x >= y  # type: ignore[operator]
    if op == "==":
        return x == y
    return x != y


def _shown(value: Value) -> str:
    if isinstance(value, Metric):
        return f"sample set {value.name} (read it with GetSample)"
    return type_name(value)


def _truth(value: Value, what: str) -> bool:
    value = _scalar(value)
    if not isinstance(value, float):
        raise Fault(f"{what} needs a double but was given a {_shown(value)}")
    return value != 0


def _compile(node: Expr) -> Code:
    if isinstance(node, Number):
        number = node.value
        return lambda env: number
    if isinstance(node, String):
        text = node.value
        return lambda env: text
    if isinstance(node, Name):
        return _compile_name(node)
    if isinstance(node, Unary):
        return _compile_unary(node)
    if isinstance(node, Binary):
        return _compile_binary(node)
    if isinstance(node, Ternary):
        return _compile_ternary(node)
    if isinstance(node, Call):
        return _compile_call(node)
    if isinstance(node, Member):
        return _compile_member(node)
    return _compile_method(node)


def _compile_name(node: Name) -> Code:
    name, pos = node.name, node.pos
    constant = TIME_INTERVALS.get(name)
    if constant is not None:
        return lambda env: constant
    if name in READ_ONLY or name in READ_ONLY_ALIASES:
        canonical = READ_ONLY_ALIASES.get(name, name)
        return lambda env: env.metric(canonical)
    key = name if name.startswith("$") else "$" + name
    if name in NODE_DEALLOCATION_OPTIONS:
        option = Option(name)
        return lambda env: env.vars.get(key, option)

    def read(env: _Env) -> Value:
        try:
            return env.vars[key]
        except KeyError:
            raise FormulaError(EVALUATION_ERROR, f"Undefined variable {name}", pos.line, pos.col) from None

    return read


def _compile_unary(node: Unary) -> Code:
    operand, op, pos = _compile(node.operand), node.op, node.pos

    def run(env: _Env) -> Value:
        value = _scalar(operand(env))
        if isinstance(value, float):
            return -value if op == "-" else (0.0 if value != 0 else 1.0)
        if isinstance(value, Interval) and op == "-":
            return Interval(-value.ticks)
        raise _at(pos, Fault(f"Operator '{op}' is not defined for {_shown(value)}"))

    return run


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def _constant(node: Expr) -> Value | None:
    """The value of a sub-expression built only from literals and TimeInterval constants, else None."""
    if isinstance(node, Number | String):
        return node.value
    if isinstance(node, Name):
        return TIME_INTERVALS.get(node.name)
    if isinstance(node, Binary) and node.op not in ("&&", "||"):
        left, right = _constant(node.left), _constant(node.right)
        if left is None or right is None:
            return None
        try:
            return _binary(node.op, left, right)
        except Fault:
            return None  # left to fail at evaluation, with its position
    return None


def _compile_binary(node: Binary) -> Code:
    folded = _constant(node)
    if folded is not None:
        return lambda env: folded
    left, right, op, pos = _compile(node.left), _compile(node.right), node.op, node.pos
    compare = _COMPARE.get(op)
    if op in ("&&", "||"):
        want = op == "||"

        def logic(env: _Env) -> Value:
            try:
                if _truth(left(env), f"Operator '{op}'") is want:
                    return 1.0 if want else 0.0
                return 1.0 if _truth(right(env), f"Operator '{op}'") else 0.0
            except Fault as fault:
                raise _at(pos, fault) from None

        return logic

    def run(env: _Env) -> Value:
        a, b = left(env), right(env)
        if type(a) is float and type(b) is float:  # the common case, without the table walk
            if compare is not None:
                return 1.0 if compare(a, b) else 0.0
            return _arith(op, a, b)
        try:
            return _binary(op, a, b)
        except Fault as fault:
            raise _at(pos, fault) from None
        except (ArithmeticError, ValueError) as exc:
            raise _at(pos, Fault(f"Arithmetic error in '{op}': {exc}")) from None

    return run


def _compile_ternary(node: Ternary) -> Code:
    cond, then, other, pos = _compile(node.cond), _compile(node.then), _compile(node.other), node.pos

    def run(env: _Env) -> Value:
        try:
            chosen = _truth(cond(env), "The condition of '?:'")
        except Fault as fault:
            raise _at(pos, fault) from None
        return then(env) if chosen else other(env)

    return run


def _compile_call(node: Call) -> Code:
    fn, args, pos = FUNCTIONS[node.name], tuple(_compile(a) for a in node.args), node.pos

    def run(env: _Env) -> Value:
        values = [a(env) for a in args]
        try:
            return fn(values, env.ctx)
        except Fault as fault:
            raise _at(pos, fault) from None
        except (ArithmeticError, ValueError) as exc:  # a safety net: numeric edge cases stay formula errors
            raise _at(pos, Fault(f"Arithmetic error in '{node.name}': {exc}")) from None

    return run


def _compile_member(node: Member) -> Code:
    target, name, pos = _compile(node.target), node.name, node.pos
    extract = TIMESTAMP_MEMBERS[name.lower()]

    def run(env: _Env) -> Value:
        value = target(env)
        if not isinstance(value, Timestamp):
            raise _at(pos, Fault(f"Member '{name}' applies to a timestamp, not to a {_shown(value)}"))
        return extract(value)

    return run


def _compile_method(node: Method) -> Code:
    target, pos = _compile(node.target), node.pos
    spelled, method = METHODS[node.name.lower()]
    args = tuple(_compile(a) for a in node.args)

    def run(env: _Env) -> Value:
        metric = target(env)
        values = [a(env) for a in args]
        if not isinstance(metric, Metric):
            raise _at(
                pos,
                Fault(
                    f"Method '{spelled}' applies to a sample set such as $CPUPercent, not to a {_shown(metric)}"
                ),
            )
        try:
            return method(metric, values, env.ctx)
        except Fault as fault:
            raise _at(pos, fault) from None
        except (ArithmeticError, ValueError) as exc:
            raise _at(pos, Fault(f"Arithmetic error in '{spelled}': {exc}")) from None

    return run


Step = Callable[[_Env], None]


def _compile_statement(statement: Assign | Bare) -> Step:
    if isinstance(statement, Bare):
        expr = _compile(statement.value)

        def bare(env: _Env) -> None:
            expr(env)

        return bare
    target, value, pos = statement.target, _compile(statement.value), statement.target.pos
    name = target.name

    def fail(detail: str) -> FormulaError:
        return FormulaError(EVALUATION_ERROR, detail, pos.line, pos.col)

    if name in TIME_INTERVALS:
        raise FormulaError(SYNTAX_ERROR, f"Cannot assign to the constant {name}", pos.line, pos.col)
    if name in READ_ONLY or name in READ_ONLY_ALIASES:
        raise FormulaError(SYNTAX_ERROR, f"Cannot assign to the read-only variable {name}", pos.line, pos.col)
    if name in _TARGETS:

        def set_target(env: _Env) -> None:
            result = _scalar(value(env))
            if not isinstance(result, float):
                raise fail(f"{name} must be a double but was given a {_shown(result)}")
            env.vars[name] = result
            env.assigned[name] = pos

        return set_target
    if name == NODE_DEALLOCATION:

        def set_option(env: _Env) -> None:
            result = value(env)
            if isinstance(result, str) and result in NODE_DEALLOCATION_OPTIONS:
                result = Option(result)
            if not isinstance(result, Option):
                raise fail(
                    f"{name} must be one of {', '.join(NODE_DEALLOCATION_OPTIONS)} but was given a {_shown(result)}"
                )
            env.vars[name] = result

        return set_option
    key = name if name.startswith("$") else "$" + name

    def set_user(env: _Env) -> None:
        env.vars[key] = _scalar(value(env))

    return set_user


class Program:
    """A formula compiled once; `evaluate` runs it against fresh inputs and never raises FormulaError."""

    __slots__ = ("source", "_steps")

    def __init__(self, formula: Formula, source: str = "") -> None:
        self.source = source
        self._steps = tuple(_compile_statement(s) for s in formula.statements)

    def evaluate(self, inputs: Inputs) -> Evaluation:
        env = _Env(inputs)
        error: FormulaError | None = None
        try:
            for step in self._steps:
                step(env)
        except Stop:
            pass
        except FormulaError as failure:
            error = failure
        if error is None:
            dedicated, error = _target(env, TARGET_DEDICATED, "$TargetDedicated")
            low, error2 = _target(env, TARGET_LOW_PRIORITY, "$TargetLowPriority")
            env.vars[TARGET_DEDICATED], env.vars[TARGET_LOW_PRIORITY] = dedicated, low
            error = error or error2
        results = _results(env.vars)
        if error is not None:
            return Evaluation(inputs.now, results, error, None, None, None)
        option = env.vars[NODE_DEALLOCATION]
        assert isinstance(option, Option)
        return Evaluation(
            inputs.now,
            results,
            None,
            int(env.vars[TARGET_DEDICATED]),  # type: ignore[arg-type]
            int(env.vars[TARGET_LOW_PRIORITY]),  # type: ignore[arg-type]
            option.name,
        )


def _target(env: _Env, full: str, alias: str) -> tuple[float, FormulaError | None]:
    """The full name wins over its alias when a formula sets both; the value must be a usable count."""
    name = full if full in env.assigned or alias not in env.assigned else alias
    value = env.vars[name]
    assert isinstance(value, float)
    if math.isfinite(value) and value >= 0:
        return value, None
    pos = env.assigned.get(name, Pos(0, 0))
    return value, FormulaError(
        EVALUATION_ERROR,
        f"{full} must be a number of nodes (0 or more) but is {format_value(value)}",
        pos.line,
        pos.col,
    )


def _results(variables: Mapping[str, Value]) -> str:
    """`$TargetDedicatedNodes=…;$TargetLowPriorityNodes=…;$NodeDeallocationOption=…` then user variables by name."""
    parts = [
        f"{n}={format_value(variables[n])}"
        for n in (TARGET_DEDICATED, TARGET_LOW_PRIORITY, NODE_DEALLOCATION)
    ]
    users = sorted(
        (n for n in variables if n not in _TARGETS and n != NODE_DEALLOCATION), key=lambda n: (n.lower(), n)
    )
    parts.extend(f"{n}={format_value(variables[n])}" for n in users)
    return ";".join(parts)


def compile_formula(source: str) -> Program:
    """Parse and compile, raising FormulaError for a formula the service would refuse outright."""
    return Program(parse(source), source)


def evaluate(source: str, inputs: Inputs) -> Evaluation:
    """Parse, compile and run; a formula that does not parse yields an Evaluation carrying the error."""
    try:
        program = compile_formula(source)
    except FormulaError as failure:
        env = _Env(inputs)
        return Evaluation(inputs.now, _results(env.vars), failure, None, None, None)
    return program.evaluate(inputs)
