"""The operator table of the service's docs over runtime values; any other pairing is a type error."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

from batchyard.autoscale.errors import Fault
from batchyard.autoscale.values import Interval, Metric, Timestamp, Value, type_name


def scalar(value: Value) -> Value:
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


def arith(op: str, x: float, y: float) -> float:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    return _divide(x, y)


def binary(op: str, a: Value, b: Value) -> Value:
    """The operator table of the service's docs; any other pairing is a type error."""
    a, b = scalar(a), scalar(b)
    if op in ("+", "-", "*", "/"):
        if isinstance(a, float):
            if isinstance(b, float):
                return arith(op, a, b)
            if isinstance(b, Interval) and op == "*":
                return Interval.checked(a * b.ticks)
        elif isinstance(a, tuple):
            if isinstance(b, float):
                return tuple(arith(op, x, b) for x in a)
            if isinstance(b, tuple):
                if len(a) != len(b):
                    raise Fault(
                        f"Operator '{op}' needs doubleVecs of equal length, not {len(a)} and {len(b)}"
                    )
                return tuple(arith(op, x, y) for x, y in zip(a, b, strict=True))
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
    raise Fault(f"Operator '{op}' is not defined for {shown(a)} and {shown(b)}")


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


def shown(value: Value) -> str:
    if isinstance(value, Metric):
        return f"sample set {value.name} (read it with GetSample)"
    return type_name(value)


def truth(value: Value, what: str) -> bool:
    value = scalar(value)
    if not isinstance(value, float):
        raise Fault(f"{what} needs a double but was given a {shown(value)}")
    return value != 0


COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
