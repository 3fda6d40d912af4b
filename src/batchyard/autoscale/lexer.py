"""Tokens of the formula language with 1-based line and column, as the service reports positions."""

from __future__ import annotations

import enum
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


_TWO = {"<=", ">=", "==", "!=", "&&", "||"}
_ONE = set("+-*/!<>=?:(),.;")
_NAME_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _NAME_START | set("0123456789")
_DIGITS = set("0123456789")


def tokenize(src: str) -> list[Token]:
    """Split a formula into tokens; comments (`//…`, `/*…*/`) and whitespace are dropped."""
    out: list[Token] = []
    i, n, line, start = 0, len(src), 1, 0  # `start` is the index where the current line begins

    def fail(detail: str, at: int) -> FormulaError:
        return FormulaError(SYNTAX_ERROR, detail, line, at - start + 1)

    while i < n:
        c = src[i]
        if c == "\n":
            i += 1
            line, start = line + 1, i
            continue
        if c in " \t\r\f\v":
            i += 1
            continue
        if src.startswith("//", i):
            while i < n and src[i] != "\n":
                i += 1
            continue
        if src.startswith("/*", i):
            end = src.find("*/", i + 2)
            if end < 0:
                raise fail("Unterminated comment", i)
            for j in range(i, end):
                if src[j] == "\n":
                    line, start = line + 1, j + 1
            i = end + 2
            continue
        col = i - start + 1
        if c in _DIGITS or (c == "." and i + 1 < n and src[i + 1] in _DIGITS):
            j = i
            while j < n and src[j] in _DIGITS:
                j += 1
            if j < n and src[j] == ".":
                j += 1
                while j < n and src[j] in _DIGITS:
                    j += 1
            if j < n and src[j] in "eE":
                k = j + 1
                if k < n and src[k] in "+-":
                    k += 1
                if k < n and src[k] in _DIGITS:
                    while k < n and src[k] in _DIGITS:
                        k += 1
                    j = k
            text = src[i:j]
            if j < n and src[j] in _NAME_CHARS:
                raise fail(f"Invalid number '{text}{src[j]}'", i)
            out.append(Token(Kind.NUMBER, text, line, col, float(text)))
            i = j
            continue
        if c == "$" or c in _NAME_START:
            j = i + 1
            while j < n and src[j] in _NAME_CHARS:
                j += 1
            if c == "$" and j == i + 1:
                raise fail("Expected a variable name after '$'", i)
            out.append(Token(Kind.NAME, src[i:j], line, col))
            i = j
            continue
        if c == '"':
            j, chars = i + 1, []
            while True:
                if j >= n or src[j] == "\n":
                    raise fail("Unterminated string", i)
                if src[j] == "\\" and j + 1 < n and src[j + 1] in '"\\':
                    chars.append(src[j + 1])
                    j += 2
                    continue
                if src[j] == '"':
                    break
                chars.append(src[j])
                j += 1
            out.append(Token(Kind.STRING, "".join(chars), line, col))
            i = j + 1
            continue
        two = src[i : i + 2]
        if two in _TWO:
            out.append(Token(Kind.OP, two, line, col))
            i += 2
            continue
        if c in _ONE:
            out.append(Token(Kind.OP, c, line, col))
            i += 1
            continue
        raise fail(f"Unexpected character '{c}'", i)
    out.append(Token(Kind.EOF, "", line, n - start + 1))
    return out
