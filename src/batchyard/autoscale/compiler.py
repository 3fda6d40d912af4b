"""Turns the syntax tree into nested Python closures once, so each evaluation is only closure calls."""

from __future__ import annotations

from collections.abc import Callable

from batchyard.autoscale.errors import EVALUATION_ERROR, SYNTAX_ERROR, Fault, FormulaError
from batchyard.autoscale.functions import FUNCTIONS, TIME_INTERVALS, TIMESTAMP_MEMBERS
from batchyard.autoscale.inputs import NODE_DEALLOCATION, READ_ONLY, READ_ONLY_ALIASES, TARGETS, Env
from batchyard.autoscale.nodes import (
    Assign,
    Bare,
    Binary,
    Call,
    Expr,
    Member,
    Method,
    Name,
    Number,
    Pos,
    String,
    Ternary,
    Unary,
)
from batchyard.autoscale.operators import COMPARE, arith, binary, scalar, shown, truth
from batchyard.autoscale.samples import METHODS
from batchyard.autoscale.values import NODE_DEALLOCATION_OPTIONS, Interval, Metric, Option, Timestamp, Value

Code = Callable[[Env], Value]
Step = Callable[[Env], None]


def _at(pos: Pos, fault: Fault) -> FormulaError:
    return FormulaError(fault.code, fault.detail, pos.line, pos.col)


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
        return _compilebinary(node)
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

    def read(env: Env) -> Value:
        try:
            return env.vars[key]
        except KeyError:
            raise FormulaError(EVALUATION_ERROR, f"Undefined variable {name}", pos.line, pos.col) from None

    return read


def _compile_unary(node: Unary) -> Code:
    operand, op, pos = _compile(node.operand), node.op, node.pos

    def run(env: Env) -> Value:
        value = scalar(operand(env))
        if isinstance(value, float):
            return -value if op == "-" else (0.0 if value != 0 else 1.0)
        if isinstance(value, Interval) and op == "-":
            return Interval(-value.ticks)
        raise _at(pos, Fault(f"Operator '{op}' is not defined for {shown(value)}"))

    return run


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
            return binary(node.op, left, right)
        except Fault:
            return None  # left to fail at evaluation, with its position
    return None


def _compilebinary(node: Binary) -> Code:
    folded = _constant(node)
    if folded is not None:
        return lambda env: folded
    left, right, op, pos = _compile(node.left), _compile(node.right), node.op, node.pos
    compare = COMPARE.get(op)
    if op in ("&&", "||"):
        want = op == "||"

        def logic(env: Env) -> Value:
            try:
                if truth(left(env), f"Operator '{op}'") is want:
                    return 1.0 if want else 0.0
                return 1.0 if truth(right(env), f"Operator '{op}'") else 0.0
            except Fault as fault:
                raise _at(pos, fault) from None

        return logic

    def run(env: Env) -> Value:
        a, b = left(env), right(env)
        if type(a) is float and type(b) is float:  # the common case, without the table walk
            if compare is not None:
                return 1.0 if compare(a, b) else 0.0
            return arith(op, a, b)
        try:
            return binary(op, a, b)
        except Fault as fault:
            raise _at(pos, fault) from None
        except (ArithmeticError, ValueError) as exc:
            raise _at(pos, Fault(f"Arithmetic error in '{op}': {exc}")) from None

    return run


def _compile_ternary(node: Ternary) -> Code:
    cond, then, other, pos = _compile(node.cond), _compile(node.then), _compile(node.other), node.pos

    def run(env: Env) -> Value:
        try:
            chosen = truth(cond(env), "The condition of '?:'")
        except Fault as fault:
            raise _at(pos, fault) from None
        return then(env) if chosen else other(env)

    return run


def _compile_call(node: Call) -> Code:
    fn, args, pos = FUNCTIONS[node.name], tuple(_compile(a) for a in node.args), node.pos

    def run(env: Env) -> Value:
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

    def run(env: Env) -> Value:
        value = target(env)
        if not isinstance(value, Timestamp):
            raise _at(pos, Fault(f"Member '{name}' applies to a timestamp, not to a {shown(value)}"))
        return extract(value)

    return run


def _compile_method(node: Method) -> Code:
    target, pos = _compile(node.target), node.pos
    spelled, method = METHODS[node.name.lower()]
    args = tuple(_compile(a) for a in node.args)

    def run(env: Env) -> Value:
        metric = target(env)
        values = [a(env) for a in args]
        if not isinstance(metric, Metric):
            raise _at(
                pos,
                Fault(
                    f"Method '{spelled}' applies to a sample set such as $CPUPercent, not to a {shown(metric)}"
                ),
            )
        try:
            return method(metric, values, env.ctx)
        except Fault as fault:
            raise _at(pos, fault) from None
        except (ArithmeticError, ValueError) as exc:
            raise _at(pos, Fault(f"Arithmetic error in '{spelled}': {exc}")) from None

    return run


def compile_statement(statement: Assign | Bare) -> Step:
    if isinstance(statement, Bare):
        expr = _compile(statement.value)

        def bare(env: Env) -> None:
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
    if name in TARGETS:

        def set_target(env: Env) -> None:
            result = scalar(value(env))
            if not isinstance(result, float):
                raise fail(f"{name} must be a double but was given a {shown(result)}")
            env.vars[name] = result
            env.assigned[name] = pos

        return set_target
    if name == NODE_DEALLOCATION:

        def set_option(env: Env) -> None:
            result = value(env)
            if isinstance(result, str) and result in NODE_DEALLOCATION_OPTIONS:
                result = Option(result)
            if not isinstance(result, Option):
                raise fail(
                    f"{name} must be one of {', '.join(NODE_DEALLOCATION_OPTIONS)} but was given a {shown(result)}"
                )
            env.vars[name] = result

        return set_option
    key = name if name.startswith("$") else "$" + name

    def set_user(env: Env) -> None:
        env.vars[key] = scalar(value(env))

    return set_user
