"""The Azure Batch autoscale formula language: lexer, parser, evaluator. Pure: no I/O, no store, no clock.

Callers pass the clock, pool figures and metric histories as `Inputs`; `evaluate` returns the service's
`$Name=value;…` results, the targets, and a `FormulaError` (code, message, values) when the run failed.

    program = compile_formula(text)          # FormulaError → refuse the request (400)
    run = program.evaluate(Inputs(now=clock(), target_dedicated=2, current_dedicated=2,
                                  metrics={"$PendingTasks": Series.of(samples)}))
    run.results, run.error, run.target_dedicated, run.node_deallocation_option
"""

from batchyard.autoscale.errors import (
    EVALUATION_ERROR,
    INSUFFICIENT_SAMPLE_DATA,
    SYNTAX_ERROR,
    TOO_LONG,
    FormulaError,
)
from batchyard.autoscale.evaluator import Evaluation, Program, compile_formula, evaluate
from batchyard.autoscale.inputs import POOL_FIGURES, READ_ONLY, SAMPLE_SETS, Inputs
from batchyard.autoscale.parser import MAX_LENGTH, MAX_STATEMENTS, parse
from batchyard.autoscale.values import Series

__all__ = [
    "EVALUATION_ERROR",
    "INSUFFICIENT_SAMPLE_DATA",
    "MAX_LENGTH",
    "MAX_STATEMENTS",
    "POOL_FIGURES",
    "READ_ONLY",
    "SAMPLE_SETS",
    "SYNTAX_ERROR",
    "TOO_LONG",
    "Evaluation",
    "FormulaError",
    "Inputs",
    "Program",
    "Series",
    "compile_formula",
    "evaluate",
    "parse",
]
