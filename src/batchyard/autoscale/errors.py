"""The one error type of the formula language, shaped like the service's `autoScaleRun.error`.

Every failure (lexing, parsing, evaluating, missing samples) is a `FormulaError` carrying the service's
code, its message, and a `Message` value `Line L, Col C: <detail>` pointing into the formula, so callers
never have to catch anything else.
"""

from __future__ import annotations

# Codes the service uses (REST error table, SDK constants, recordings of evaluateautoscale).
SYNTAX_ERROR = "AutoScalingFormulaSyntaxError"
TOO_LONG = "AutoScalingFormulaTooLong"
EVALUATION_ERROR = "AutoScalingFormulaEvaluationError"
INSUFFICIENT_SAMPLE_DATA = "InsufficientSampleData"

_MESSAGES = {
    SYNTAX_ERROR: "The specified auto-scaling formula has a syntax error.",
    TOO_LONG: "The specified auto-scaling formula exceeds lengths limit.",
    EVALUATION_ERROR: "Autoscale evaluation failed",
    INSUFFICIENT_SAMPLE_DATA: "Autoscale evaluation failed due to insufficient sample data",
}


class FormulaError(Exception):
    """A formula failure at a position; `values` is the service's name/value list."""

    def __init__(self, code: str, detail: str, line: int = 0, col: int = 0) -> None:
        self.code = code
        self.message = _MESSAGES[code]
        self.detail = detail
        self.line = line
        self.col = col
        super().__init__(f"{code}: {self.located}")

    @property
    def located(self) -> str:
        """The detail prefixed with its position, as the service prints it."""
        if self.line:
            return f"Line {self.line}, Col {self.col}: {self.detail}"
        return self.detail

    @property
    def values(self) -> list[tuple[str, str]]:
        """The `values` of `autoScaleRun.error` as (name, value) pairs."""
        return [("Message", self.located)]


class Fault(Exception):
    """Raised inside operators and functions; the caller adds the position and makes a FormulaError."""

    def __init__(self, detail: str, code: str = EVALUATION_ERROR) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
