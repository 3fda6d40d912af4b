"""Recursive-descent parser with C-like precedence (the service documents none; see decision 0070).

Precedence, loosest first: `?:` (right-assoc) < `||` < `&&` < `== !=` < `< <= > >=` < `+ -` < `* /`
< unary `- !` < postfix `.member` / `.Method(...)` < primary.
"""

from __future__ import annotations

from batchyard.autoscale.errors import SYNTAX_ERROR, TOO_LONG, FormulaError
from batchyard.autoscale.functions import FUNCTIONS, TIMESTAMP_MEMBERS
from batchyard.autoscale.lexer import Kind, Token, tokenize
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
    Statement,
    String,
    Ternary,
    Unary,
)
from batchyard.autoscale.samples import METHODS

MAX_LENGTH = 8192
MAX_STATEMENTS = 100
# Bounds that keep parsing and the compiled closures far from Python's recursion limit (decision 0070).
MAX_NESTING = 40
MAX_DEPTH = 120

# Binding strength of the binary operators (higher binds tighter); all are left-associative.
_PRECEDENCE = {
    "||": 1,
    "&&": 2,
    "==": 3,
    "!=": 3,
    "<": 4,
    "<=": 4,
    ">": 4,
    ">=": 4,
    "+": 5,
    "-": 5,
    "*": 6,
    "/": 6,
}


def parse(src: str) -> Formula:
    """Parse a formula or raise FormulaError (syntax, too long, too many statements)."""
    if len(src) > MAX_LENGTH:
        raise FormulaError(
            TOO_LONG, f"The formula is {len(src)} characters long; at most {MAX_LENGTH} are allowed"
        )
    return _Parser(tokenize(src)).formula()


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.nesting = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind is not Kind.EOF:
            self.i += 1
        return tok

    def is_op(self, text: str) -> bool:
        tok = self.tokens[self.i]
        return tok.kind is Kind.OP and tok.text == text

    def fail(self, tok: Token, detail: str) -> FormulaError:
        return FormulaError(SYNTAX_ERROR, detail, tok.line, tok.col)

    def expect(self, text: str) -> Token:
        tok = self.peek()
        if tok.kind is Kind.OP and tok.text == text:
            return self.take()
        raise self.fail(tok, f"Expected '{text}' but found {tok.describe()}")

    def formula(self) -> Formula:
        statements: list[Statement] = []
        while True:
            while self.is_op(";"):
                self.take()
            tok = self.peek()
            if tok.kind is Kind.EOF:
                break
            if len(statements) == MAX_STATEMENTS:
                raise self.fail(tok, f"A formula may hold at most {MAX_STATEMENTS} statements")
            statements.append(self.statement())
            end = self.peek()
            if end.kind is not Kind.EOF and not self.is_op(";"):
                raise self.fail(end, f"Expected ';' but found {end.describe()}")
        return Formula(tuple(statements))

    def statement(self) -> Statement:
        tok = self.peek()
        nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else tok
        if tok.kind is Kind.NAME and nxt.kind is Kind.OP and nxt.text == "=":
            self.take()
            eq = self.take()
            value = self.checked(self.expression(), tok)
            return Assign(Name(tok.text, Pos(tok.line, tok.col)), value, Pos(eq.line, eq.col))
        return Bare(self.checked(self.expression(), tok))

    def checked(self, expr: Expr, tok: Token) -> Expr:
        if _depth(expr) > MAX_DEPTH:
            raise self.fail(tok, f"The statement is too complex (more than {MAX_DEPTH} levels of operations)")
        return expr

    def expression(self) -> Expr:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.fail(self.peek(), f"Expressions are nested too deeply (at most {MAX_NESTING} levels)")
        cond = self.binary(1)
        if self.is_op("?"):
            q = self.take()
            then = self.expression()
            self.expect(":")
            other = self.expression()
            cond = Ternary(cond, then, other, Pos(q.line, q.col))
        self.nesting -= 1
        return cond

    def binary(self, weakest: int) -> Expr:
        """Precedence climbing: operators at least as strong as `weakest`, grouped to the left."""
        left = self.unary()
        while True:
            tok = self.peek()
            strength = _PRECEDENCE.get(tok.text, 0) if tok.kind is Kind.OP else 0
            if strength < weakest or strength == 0:
                return left
            self.take()
            right = self.binary(strength + 1)
            left = Binary(tok.text, left, right, Pos(tok.line, tok.col))

    def unary(self) -> Expr:
        ops: list[Token] = []
        while (tok := self.peek()).kind is Kind.OP and tok.text in ("-", "!"):
            ops.append(self.take())
        expr = self.postfix(self.primary())
        for tok in reversed(ops):
            expr = Unary(tok.text, expr, Pos(tok.line, tok.col))
        return expr

    def postfix(self, expr: Expr) -> Expr:
        while self.is_op("."):
            self.take()
            tok = self.take()
            if tok.kind is not Kind.NAME or tok.text.startswith("$"):
                raise self.fail(tok, f"Expected a member or method name but found {tok.describe()}")
            if self.is_op("("):
                if tok.text.lower() not in METHODS:
                    raise self.fail(tok, f"Unknown method '{tok.text}'")
                paren, args = self.arguments()
                expr = Method(expr, tok.text, args, paren)
            else:
                if tok.text.lower() not in TIMESTAMP_MEMBERS:
                    raise self.fail(tok, f"Unknown member '{tok.text}'")
                expr = Member(expr, tok.text, Pos(tok.line, tok.col))
        return expr

    def arguments(self) -> tuple[Pos, tuple[Expr, ...]]:
        paren = self.expect("(")
        args: list[Expr] = []
        if not self.is_op(")"):
            args.append(self.expression())
            while self.is_op(","):
                self.take()
                args.append(self.expression())
        self.expect(")")
        return Pos(paren.line, paren.col), tuple(args)

    def primary(self) -> Expr:
        tok = self.take()
        pos = Pos(tok.line, tok.col)
        if tok.kind is Kind.NUMBER:
            return Number(tok.number, pos)
        if tok.kind is Kind.STRING:
            return String(tok.text, pos)
        if tok.kind is Kind.NAME:
            if self.is_op("(") and not tok.text.startswith("$"):
                if tok.text.lower() not in FUNCTIONS:
                    raise self.fail(tok, f"Unknown function '{tok.text}'")
                paren, args = self.arguments()
                return Call(tok.text.lower(), args, paren)
            return Name(tok.text, pos)
        if tok.kind is Kind.OP and tok.text == "(":
            inner = self.expression()
            self.expect(")")
            return inner
        raise self.fail(tok, f"Unexpected {tok.describe()}")


def _children(expr: Expr) -> tuple[Expr, ...]:
    if isinstance(expr, Unary):
        return (expr.operand,)
    if isinstance(expr, Binary):
        return (expr.left, expr.right)
    if isinstance(expr, Ternary):
        return (expr.cond, expr.then, expr.other)
    if isinstance(expr, Call):
        return expr.args
    if isinstance(expr, Member):
        return (expr.target,)
    if isinstance(expr, Method):
        return (expr.target, *expr.args)
    return ()


def _depth(root: Expr) -> int:
    """Tree depth, computed without recursion (the tree may be deep)."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in _children(node))
    return deepest
