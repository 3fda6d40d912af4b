"""Tokens of the formula language with 1-based line and column, as the service reports positions."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from batchyard.autoscale.errors import SYNTAX_ERROR, FormulaError


class Kind(enum.Enum):
    NUMBER = "number"
    STRING = "string"
    NAME = "name"
    OP = "op"
    EOF = "end of formula"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str
    line: int
    col: int
    number: float = 0.0

    def describe(self) -> str:
        return "end of formula" if self.kind is Kind.EOF else f"'{self.text}'"


_TOKEN = re.compile(
    r"""(?P<nl>\n)
    |(?P<ws>[ \t\r\f\v]+)
    |(?P<line>//[^\n]*)
    |(?P<block>/\*.*?\*/)
    |(?P<open>/\*)
    |(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<name>\$?[A-Za-z_][A-Za-z0-9_]*)
    |(?P<str>"(?:[^"\\\n]|\\["\\]|\\(?!["\\]))*")
    |(?P<op><=|>=|==|!=|&&|\|\||[-+*/!<>=?:(),.;])""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPE = re.compile(r'\\(["\\])')
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789")


def tokenize(src: str) -> list[Token]:
    """Split a formula into tokens; comments (`//…`, `/*…*/`) and whitespace are dropped."""
    out: list[Token] = []
    i, n, line, start = 0, len(src), 1, 0  # `start` is the index where the current line begins
    match = _TOKEN.match
    while i < n:
        m = match(src, i)
        if m is None:
            c = src[i]
            col = i - start + 1
            if c == "$":
                raise FormulaError(SYNTAX_ERROR, "Expected a variable name after '$'", line, col)
            if c == '"':
                raise FormulaError(SYNTAX_ERROR, "Unterminated string", line, col)
            raise FormulaError(SYNTAX_ERROR, f"Unexpected character '{c}'", line, col)
        kind, j = m.lastgroup, m.end()
        if kind == "open":
            raise FormulaError(SYNTAX_ERROR, "Unterminated comment", line, i - start + 1)
        if kind == "nl":
            line, start = line + 1, j
        elif kind == "block":
            breaks = src.count("\n", i, j)
            if breaks:
                line, start = line + breaks, src.rindex("\n", i, j) + 1
        elif kind == "num":
            text = m.group()
            if j < n and src[j] in _NAME_CHARS:
                raise FormulaError(SYNTAX_ERROR, f"Invalid number '{text}{src[j]}'", line, i - start + 1)
            out.append(Token(Kind.NUMBER, text, line, i - start + 1, float(text)))
        elif kind == "name":
            out.append(Token(Kind.NAME, m.group(), line, i - start + 1))
        elif kind == "str":
            out.append(Token(Kind.STRING, _ESCAPE.sub(r"\1", m.group()[1:-1]), line, i - start + 1))
        elif kind == "op":
            out.append(Token(Kind.OP, m.group(), line, i - start + 1))
        i = j
    out.append(Token(Kind.EOF, "", line, n - start + 1))
    return out
