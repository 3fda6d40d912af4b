"""Runs a compiled formula against plain inputs and renders the service's result.

The caller supplies the clock, the pool's figures and each metric's sample history (`Inputs`); the result
(`Evaluation`) is the service's `$Name=value;…` text, the targets to apply, and an error if any.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from batchyard.autoscale.compiler import compile_statement
from batchyard.autoscale.errors import EVALUATION_ERROR, FormulaError
from batchyard.autoscale.functions import Stop
from batchyard.autoscale.inputs import (
    NODE_DEALLOCATION,
    TARGET_DEDICATED,
    TARGET_LOW_PRIORITY,
    TARGETS,
    Env,
    Inputs,
)
from batchyard.autoscale.nodes import Formula, Pos
from batchyard.autoscale.parser import parse
from batchyard.autoscale.values import Option, Value, format_value


@dataclass(frozen=True)
class Evaluation:
    """One run: `results` as the service prints it; targets are None when the run failed."""

    timestamp: datetime
    results: str
    error: FormulaError | None
    target_dedicated: int | None
    target_low_priority: int | None
    node_deallocation_option: str | None


class Program:
    """A formula compiled once; `evaluate` runs it against fresh inputs and never raises FormulaError."""

    __slots__ = ("source", "_steps")

    def __init__(self, formula: Formula, source: str = "") -> None:
        self.source = source
        self._steps = tuple(compile_statement(s) for s in formula.statements)

    def evaluate(self, inputs: Inputs) -> Evaluation:
        env = Env(inputs)
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


def _target(env: Env, full: str, alias: str) -> tuple[float, FormulaError | None]:
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
        (n for n in variables if n not in TARGETS and n != NODE_DEALLOCATION), key=lambda n: (n.lower(), n)
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
        env = Env(inputs)
        return Evaluation(inputs.now, _results(env.vars), failure, None, None, None)
    return program.evaluate(inputs)
