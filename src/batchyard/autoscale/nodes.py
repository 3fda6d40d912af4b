"""The syntax tree of a formula: statements of `variable = expression` (or a bare expression)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pos:
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class Number:
    value: float
    pos: Pos


@dataclass(frozen=True, slots=True)
class String:
    value: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Name:
    """A variable, constant or keyword; `name` is as written (with its `$` if any)."""

    name: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    operand: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Expr
    right: Expr
    pos: Pos  # the operator


@dataclass(frozen=True, slots=True)
class Ternary:
    cond: Expr
    then: Expr
    other: Expr
    pos: Pos  # the '?'


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Expr, ...]
    pos: Pos  # the '('


@dataclass(frozen=True, slots=True)
class Member:
    target: Expr
    name: str
    pos: Pos  # the member name


@dataclass(frozen=True, slots=True)
class Method:
    target: Expr
    name: str
    args: tuple[Expr, ...]
    pos: Pos  # the '('


Expr = Number | String | Name | Unary | Binary | Ternary | Call | Member | Method


@dataclass(frozen=True, slots=True)
class Assign:
    target: Name
    value: Expr
    pos: Pos  # the '='


@dataclass(frozen=True, slots=True)
class Bare:
    """A statement without assignment; it is evaluated (and may fail) but sets nothing."""

    value: Expr


Statement = Assign | Bare


@dataclass(frozen=True, slots=True)
class Formula:
    statements: tuple[Statement, ...]
