"""The OData `$filter` dialect of Batch list operations: lexer, parser, per-operation validation, evaluator.

Pure on purpose: the API layer compiles a filter once (`compile_filter`), the store narrows its query with the
indexed part (`batchyard.store.odata_sql.split_sql`) and evaluates the rest on wire-shaped dicts (`evaluate`),
so both paths share one AST and one notion of what each operation allows.

Grammar (keywords case-insensitive; precedence ``not`` > ``and`` > ``or``)::

    expr    := and ("or" and)*
    and     := unary ("and" unary)*
    unary   := "not" unary | primary
    primary := "(" expr ")"
             | "startswith" "(" PROP "," STRING ")" [("eq" | "ne") BOOL]
             | PROP [OP literal]            -- a bare PROP means ``PROP eq true``
    literal := STRING | INT | BOOL | "null" | DATETIME
    OP      := eq | ne | gt | ge | lt | le

STRING is single-quoted with ``''`` as the escape for a quote; DATETIME is ``datetime'…'`` (or
``datetimeoffset'…'``) or a bare ISO-8601 timestamp (``2024-01-01T00:00:00Z``); PROP is a path such as
``executionInfo/exitCode``. Properties allowed per operation come from the table on
https://learn.microsoft.com/rest/api/batchservice/odata-filters-in-batch (see the spec constants below).

Semantics chosen to match a store (and Azure-Table-like services): a comparison against a missing property is
false for every operator (so ``executionInfo/exitCode ne 0`` skips tasks that have not run), except
``eq null``, which is true exactly when the property is missing or null.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeAlias

from batchyard.models.errors import BatchError, invalid_query_parameter

__all__ = [
    "ALL_OPS",
    "And",
    "CERTIFICATES",
    "Compare",
    "CompareOp",
    "DateTimeValue",
    "EQ_NE",
    "Expr",
    "FILES",
    "FilterSpec",
    "JOBS",
    "JOBS_FROM_SCHEDULE",
    "JOB_SCHEDULES",
    "Kind",
    "MAX_DEPTH",
    "NODES",
    "NODE_COUNTS",
    "Not",
    "Or",
    "POOLS",
    "PREP_RELEASE_STATUS",
    "PropSpec",
    "SUPPORTED_IMAGES",
    "Scalar",
    "StartsWith",
    "TASKS",
    "bind",
    "compile_filter",
    "conjuncts",
    "evaluate",
    "parse_datetime",
    "parse_filter",
    "to_odata",
    "validate",
]

PARAM: Final = "$filter"
MAX_DEPTH: Final = 64
"""Nesting limit for parentheses / ``not``: keeps the recursive descent far from Python's stack limit."""

_INT64_MAX: Final = 2**63 - 1

CompareOp: TypeAlias = Literal["eq", "ne", "gt", "ge", "lt", "le"]
Kind: TypeAlias = Literal["string", "int", "datetime", "enum", "bool"]

ALL_OPS: Final[frozenset[CompareOp]] = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
EQ_NE: Final[frozenset[CompareOp]] = frozenset({"eq", "ne"})
EQ: Final[frozenset[CompareOp]] = frozenset({"eq"})
_OPS_BY_NAME: Final[dict[str, CompareOp]] = {op: op for op in ("eq", "ne", "gt", "ge", "lt", "le")}


# --- values -----------------------------------------------------------------------------------------------


_DT_RE: Final = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
    r"(?:[Tt ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d+))?)?)?"
    r"(?P<tz>[Zz]|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)


@dataclass(frozen=True, order=True)
class DateTimeValue:
    """A UTC instant kept as ``YYYY-MM-DDTHH:MM:SS.fffffffZ`` (7 fraction digits, Batch's 100 ns ticks).

    A string rather than `datetime` because Python datetimes stop at microseconds and `eq` on a value copied
    from a response (``…10.1949711Z``) must still match; the fixed-width form also sorts lexicographically,
    which is what the SQL translation relies on.
    """

    iso: str

    def __str__(self) -> str:
        return self.iso

    def to_datetime(self) -> datetime:
        """The instant as an aware datetime (truncated to microseconds)."""
        return datetime.strptime(self.iso[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)

    @classmethod
    def from_datetime(cls, value: datetime) -> DateTimeValue:
        """Canonical form of a datetime; naive datetimes are taken as UTC."""
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return cls(value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond:06d}0Z")


def parse_datetime(text: str) -> DateTimeValue | None:
    """Parse an ISO-8601 timestamp (any fraction length, ``Z``/offset/none = UTC) or return None."""
    m = _DT_RE.fullmatch(text.strip())
    if m is None:
        return None
    try:
        base = datetime(
            int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"] or 0), int(m["mi"] or 0), int(m["s"] or 0)
        )
    except ValueError:
        return None
    tz = m["tz"]
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        try:
            base -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        except OverflowError:
            return None
    if not 1 <= base.year <= 9999:
        return None
    frac = ((m["f"] or "") + "0000000")[:7]
    return DateTimeValue(base.strftime("%Y-%m-%dT%H:%M:%S.") + frac + "Z")


Scalar: TypeAlias = str | int | bool | DateTimeValue | None
"""A filter literal: string, integer, boolean, datetime, or ``null``."""


# --- AST -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compare:
    """``prop op value``. `casefold` (set by `bind`): compare case-insensitively; `value` is lowercase."""

    prop: str
    op: CompareOp
    value: Scalar
    casefold: bool = False


@dataclass(frozen=True)
class StartsWith:
    """``startswith(prop, 'prefix')``; `casefold` as for `Compare`."""

    prop: str
    prefix: str
    casefold: bool = False


@dataclass(frozen=True)
class And:
    """N-ary conjunction (flattened, so long chains never nest deeply and split into SQL cleanly)."""

    operands: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    """N-ary disjunction (flattened)."""

    operands: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    """Negation."""

    operand: Expr


Expr: TypeAlias = Compare | StartsWith | And | Or | Not


def _and(parts: Iterable[Expr]) -> Expr:
    flat: list[Expr] = []
    for p in parts:
        flat.extend(p.operands if isinstance(p, And) else (p,))
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def _or(parts: Iterable[Expr]) -> Expr:
    flat: list[Expr] = []
    for p in parts:
        flat.extend(p.operands if isinstance(p, Or) else (p,))
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


def conjuncts(expr: Expr) -> tuple[Expr, ...]:
    """The top-level AND chain of `expr` (a single expression is a chain of one)."""
    return expr.operands if isinstance(expr, And) else (expr,)


# --- lexer -----------------------------------------------------------------------------------------------


TokKind: TypeAlias = Literal["(", ")", ",", "ident", "string", "int", "datetime", "eof"]


@dataclass(frozen=True)
class _Tok:
    kind: TokKind
    text: str  # source text (for messages)
    pos: int  # 0-based offset into the filter
    value: Scalar = None


_IDENT_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*")
_BARE_DT_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:\d{2})?", re.ASCII
)
_INT_RE: Final = re.compile(r"-?\d+", re.ASCII)
_DT_PREFIXES: Final = ("datetime", "datetimeoffset")


class _SyntaxError(Exception):
    def __init__(self, pos: int, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


def _describe(tok: _Tok) -> str:
    return "end of filter" if tok.kind == "eof" else f"'{tok.text}'"


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a '…' literal starting at the opening quote; return (value, offset after closing quote)."""
    i = start + 1
    out: list[str] = []
    while True:
        j = text.find("'", i)
        if j < 0:
            raise _SyntaxError(start, "unterminated string literal")
        out.append(text[i:j])
        if j + 1 < len(text) and text[j + 1] == "'":
            out.append("'")
            i = j + 2
            continue
        return "".join(out), j + 1


def _is_digit(c: str) -> bool:
    """ASCII digits only: `str.isdigit` is also true for '²' or '٣', which no literal accepts."""
    return "0" <= c <= "9"


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "(),":
            kind: TokKind = "(" if c == "(" else ")" if c == ")" else ","
            toks.append(_Tok(kind, c, i))
            i += 1
        elif c == "'":
            value, end = _read_quoted(text, i)
            toks.append(_Tok("string", text[i:end], i, value))
            i = end
        elif _is_digit(c) or (c == "-" and i + 1 < n and _is_digit(text[i + 1])):
            m = _BARE_DT_RE.match(text, i) if _is_digit(c) else None
            if m is not None:
                dt = parse_datetime(m.group())
                if dt is None:
                    raise _SyntaxError(i, f"invalid datetime literal '{m.group()}'")
                toks.append(_Tok("datetime", m.group(), i, dt))
                i = m.end()
                continue
            m = _INT_RE.match(text, i)
            if m is None:  # pragma: no cover - _is_digit guarantees a match
                raise _SyntaxError(i, f"unexpected character '{c}'")
            end = m.end()
            if end < n and (text[end] == "." or text[end].isalpha()):
                raise _SyntaxError(i, "only integer numeric literals are supported")
            number = int(m.group())
            if abs(number) > _INT64_MAX:
                raise _SyntaxError(i, f"integer literal '{m.group()}' is out of range")
            toks.append(_Tok("int", m.group(), i, number))
            i = end
        elif ("a" <= c <= "z") or ("A" <= c <= "Z") or c == "_":
            m = _IDENT_RE.match(text, i)
            if m is None:  # pragma: no cover - the first character always matches
                raise _SyntaxError(i, f"unexpected character '{c}'")
            word = m.group()
            end = m.end()
            if end < n and text[end] == "'" and word.lower() in _DT_PREFIXES:
                raw, end = _read_quoted(text, end)
                dt = parse_datetime(raw)
                if dt is None:
                    raise _SyntaxError(i, f"invalid datetime literal '{raw}'")
                toks.append(_Tok("datetime", text[i:end], i, dt))
            else:
                toks.append(_Tok("ident", word, i))
            i = end
        else:
            raise _SyntaxError(i, f"unexpected character '{c}'")
    toks.append(_Tok("eof", "", n))
    return toks


# --- parser ----------------------------------------------------------------------------------------------


_RESERVED: Final = frozenset(
    {"and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le", "true", "false", "null"}
)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def _kw(self, *words: str) -> bool:
        t = self.tok
        return t.kind == "ident" and t.text.lower() in words

    def _next(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def _expect(self, kind: TokKind, what: str) -> _Tok:
        if self.tok.kind != kind:
            raise _SyntaxError(self.tok.pos, f"expected {what} but found {_describe(self.tok)}")
        return self._next()

    def _enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _SyntaxError(pos, f"expression is nested more than {MAX_DEPTH} levels deep")

    def parse(self) -> Expr:
        if self.toks[0].kind == "eof":
            raise _SyntaxError(0, "the filter is empty")
        expr = self.or_expr()
        if self.toks[self.i].kind != "eof":
            raise _SyntaxError(
                self.tok.pos, f"expected 'and', 'or' or end of filter but found {_describe(self.tok)}"
            )
        return expr

    def or_expr(self) -> Expr:
        parts = [self.and_expr()]
        while self._kw("or"):
            self._next()
            parts.append(self.and_expr())
        return _or(parts)

    def and_expr(self) -> Expr:
        parts = [self.unary()]
        while self._kw("and"):
            self._next()
            parts.append(self.unary())
        return _and(parts)

    def unary(self) -> Expr:
        if self._kw("not"):
            self._enter(self._next().pos)
            inner = self.unary()
            self.depth -= 1
            return Not(inner)
        return self.primary()

    def primary(self) -> Expr:
        t = self.tok
        if t.kind == "(":
            self._enter(self._next().pos)
            inner = self.or_expr()
            self.depth -= 1
            self._expect(")", "')'")
            return inner
        if t.kind != "ident":
            raise _SyntaxError(
                t.pos, f"expected a property name, 'startswith(' , 'not' or '(' but found {_describe(t)}"
            )
        if self.toks[self.i + 1].kind == "(":
            return self.call()
        if t.text.lower() in _RESERVED:
            raise _SyntaxError(t.pos, f"expected a property name but found keyword '{t.text}'")
        self._next()
        op_tok = self.tok
        if op_tok.kind == "eof" or op_tok.kind == ")" or self._kw("and", "or"):
            return Compare(t.text, "eq", True)  # bare boolean property
        if op_tok.kind != "ident" or op_tok.text.lower() not in _OPS_BY_NAME:
            raise _SyntaxError(
                op_tok.pos,
                f"expected a comparison operator (eq, ne, gt, ge, lt, le) but found {_describe(op_tok)}",
            )
        self._next()
        return Compare(t.text, _OPS_BY_NAME[op_tok.text.lower()], self.literal())

    def literal(self) -> Scalar:
        t = self.tok
        if t.kind in ("string", "int", "datetime"):
            self._next()
            return t.value
        if self._kw("true", "false", "null"):
            self._next()
            word = t.text.lower()
            return None if word == "null" else word == "true"
        raise _SyntaxError(t.pos, f"expected a literal value but found {_describe(t)}")

    def call(self) -> Expr:
        name = self._next()
        if name.text.lower() != "startswith":
            raise _SyntaxError(name.pos, f"function '{name.text}' is not supported (only startswith)")
        self._next()  # '('
        prop = self._expect("ident", "a property name")
        if prop.text.lower() in _RESERVED:
            raise _SyntaxError(prop.pos, f"expected a property name but found keyword '{prop.text}'")
        self._expect(",", "','")
        prefix = self._expect("string", "a string literal")
        self._expect(")", "')'")
        expr: Expr = StartsWith(prop.text, str(prefix.value))
        if self._kw("eq", "ne"):  # OData v3 style: startswith(id,'x') eq true
            negate = self._next().text.lower() == "ne"
            b = self.tok
            if not self._kw("true", "false"):
                raise _SyntaxError(b.pos, f"expected true or false but found {_describe(b)}")
            self._next()
            if negate == (b.text.lower() == "true"):
                expr = Not(expr)
        return expr


def _syntax_error(text: str, err: _SyntaxError) -> BatchError:
    return invalid_query_parameter(PARAM, text, f"Syntax error at position {err.pos + 1}: {err.message}.")


def parse_filter(text: str) -> Expr:
    """Parse a `$filter` value; a syntax error is 400 InvalidQueryParameterValue naming the 1-based position.

    Empty or whitespace-only text is an error here: callers treat an absent/empty `$filter` as "no filter"
    before calling.
    """
    try:
        return _Parser(text).parse()
    except _SyntaxError as err:
        raise _syntax_error(text, err) from None


# --- unparse ---------------------------------------------------------------------------------------------


def _lit(value: Scalar) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, DateTimeValue):
        return f"datetime'{value.iso}'"
    return "'" + value.replace("'", "''") + "'"


def to_odata(expr: Expr) -> str:
    """Render an AST back to filter text (parseable; used in error values and logs)."""
    if isinstance(expr, Compare):
        return f"{expr.prop} {expr.op} {_lit(expr.value)}"
    if isinstance(expr, StartsWith):
        return f"startswith({expr.prop},{_lit(expr.prefix)})"
    if isinstance(expr, Not):
        return f"not ({to_odata(expr.operand)})"
    word = " and " if isinstance(expr, And) else " or "
    return word.join(f"({to_odata(p)})" if isinstance(p, And | Or) else to_odata(p) for p in expr.operands)


# --- per-operation specs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PropSpec:
    """How one property may be filtered: value kind, comparison operators, whether startswith is allowed.

    `casefold`: compare case-insensitively. Always true for "enum" (Batch accepts ``state eq 'Active'``);
    set for ids, which Batch treats as case-preserving but case-insensitive. `wire`: the property path in
    the resource JSON when the documented filter name differs from it (tasks document ``lastModifiedTime``).
    """

    kind: Kind
    ops: frozenset[CompareOp] = frozenset()
    startswith: bool = False
    casefold: bool = False
    wire: str | None = None

    @property
    def folds(self) -> bool:
        return self.casefold or self.kind == "enum"


@dataclass(frozen=True)
class FilterSpec:
    """The filterable properties of one list operation. Property names match case-insensitively."""

    operation: str
    props: Mapping[str, PropSpec]
    _by_lower: dict[str, tuple[str, PropSpec]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_lower", {k.lower(): (k, v) for k, v in self.props.items()})

    def lookup(self, prop: str) -> tuple[str, PropSpec] | None:
        """(canonical name, spec) for `prop`, or None when the operation cannot filter on it."""
        return self._by_lower.get(prop.lower())


_DT = PropSpec("datetime", ALL_OPS)
_INT = PropSpec("int", ALL_OPS)
_ID = PropSpec("string", ALL_OPS, startswith=True, casefold=True)
_STATE = PropSpec("enum", EQ_NE)
_ENUM_EQ = PropSpec("enum", EQ)
_RESULT = PropSpec("enum", EQ_NE)
_BOOL = PropSpec("bool", EQ_NE)

# Source: learn.microsoft.com/rest/api/batchservice/odata-filters-in-batch. Full table from the page's source
# markdown (MicrosoftDocs, 2018 revision, read through the public index); rows checked against the live
# 2024-01-29 revision where its text was available: "List node agent skus" became "List supported images"
# (+ verificationType, nodeAgentSKUId) and top-level `state` allows eq, ne (was eq). Rows the 2024 text did
# not show (pools, jobs, tasks, prep/release) keep the 2018 operators except that `state` change.

SUPPORTED_IMAGES: Final = FilterSpec(
    "List supported images",
    {
        "osType": PropSpec("enum", EQ_NE),
        "verificationType": PropSpec("enum", EQ_NE),
        "nodeAgentSKUId": PropSpec("string", EQ_NE),
    },
)

CERTIFICATES: Final = FilterSpec("List certificates", {"state": _STATE, "stateTransitionTime": _DT})

NODES: Final = FilterSpec(
    "List nodes in a pool",
    {
        "state": _STATE,
        "stateTransitionTime": _DT,
        "lastBootTime": _DT,
        "allocationTime": _DT,
        "startTaskInfo/state": _ENUM_EQ,
        "startTaskInfo/result": _RESULT,
        "startTaskInfo/exitCode": _INT,
        "startTaskInfo/startTime": _DT,
        "startTaskInfo/endTime": _DT,
    },
)

NODE_COUNTS: Final = FilterSpec("List pool node counts", {"poolId": PropSpec("string", EQ, casefold=True)})

FILES: Final = FilterSpec("List files", {"name": PropSpec("string", startswith=True)})
"""Both "List task files" and "List compute node files" (file names are case-sensitive paths)."""

JOBS_FROM_SCHEDULE: Final = FilterSpec(
    "List jobs in a job schedule",
    {
        "state": _STATE,
        "stateTransitionTime": _DT,
        "creationTime": _DT,
        "lastModified": _DT,
        "executionInfo/startTime": _DT,
        "executionInfo/endTime": _DT,
        "executionInfo/poolId": _ID,
    },
)

JOB_SCHEDULES: Final = FilterSpec(
    "List job schedules",
    {
        "id": _ID,
        "state": _STATE,
        "stateTransitionTime": _DT,
        "creationTime": _DT,
        "lastModified": _DT,
        "executionInfo/endTime": _DT,
        "schedule/doNotRunUntil": _DT,
        "schedule/doNotRunAfter": _DT,
    },
)

JOBS: Final = FilterSpec(
    "List jobs",
    {
        "id": _ID,
        "state": _STATE,
        "stateTransitionTime": _DT,
        "creationTime": _DT,
        "lastModified": _DT,
        "executionInfo/startTime": _DT,
        "executionInfo/endTime": _DT,
        "executionInfo/poolId": _ID,
    },
)

POOLS: Final = FilterSpec(
    "List pools",
    {
        "id": _ID,
        "state": _STATE,
        "stateTransitionTime": _DT,
        "allocationState": _ENUM_EQ,
        "allocationStateTransitionTime": _DT,
        "creationTime": _DT,
        "enableAutoScale": _BOOL,
        "lastModified": _DT,
        "vmSize": PropSpec("string", EQ_NE, casefold=True),  # Azure VM size names are case-insensitive
        "enableInterNodeCommunication": _BOOL,
    },
)


def _task_info(prefix: str) -> dict[str, PropSpec]:
    return {
        f"{prefix}/state": _ENUM_EQ,
        f"{prefix}/startTime": _DT,
        f"{prefix}/endTime": _DT,
        f"{prefix}/exitCode": _INT,
        f"{prefix}/result": _RESULT,
    }


PREP_RELEASE_STATUS: Final = FilterSpec(
    "List job preparation and release status",
    {
        "poolId": PropSpec("string", EQ_NE, casefold=True),
        "nodeId": PropSpec("string", EQ_NE, casefold=True),
        **_task_info("jobPreparationTaskExecutionInfo"),
        **_task_info("jobReleaseTaskExecutionInfo"),
    },
)

TASKS: Final = FilterSpec(
    "List tasks",
    {
        "id": _ID,
        "state": _STATE,
        "stateTransitionTime": _DT,
        "creationTime": _DT,
        "lastModified": _DT,
        # the docs table names it lastModifiedTime; the task JSON property is lastModified
        "lastModifiedTime": PropSpec("datetime", ALL_OPS, wire="lastModified"),
        "executionInfo/startTime": _DT,
        "executionInfo/endTime": _DT,
        "executionInfo/exitCode": _INT,
        "executionInfo/result": _RESULT,
    },
)


# --- validation / binding --------------------------------------------------------------------------------


class _Invalid(Exception):
    pass


_KIND_NAMES: Final[dict[Kind, str]] = {
    "string": "a string",
    "enum": "a string",
    "int": "an integer",
    "datetime": "a datetime",
    "bool": "a boolean (true or false)",
}


def _lit_name(value: Scalar) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, DateTimeValue):
        return "a datetime"
    return "a string"


def _coerce(name: str, ps: PropSpec, value: Scalar) -> Scalar:
    kind = ps.kind
    if value is None:
        return None
    if kind in ("string", "enum") and isinstance(value, str):
        return value.lower() if ps.folds else value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "datetime":
        if isinstance(value, DateTimeValue):
            return value
        if isinstance(value, str) and (dt := parse_datetime(value)) is not None:
            return dt
    raise _Invalid(
        f"Property '{name}' must be compared with {_KIND_NAMES[kind]} value, not {_lit_name(value)}"
    )


def _ops_text(ops: Iterable[str]) -> str:
    order = ["eq", "ne", "gt", "ge", "lt", "le", "startswith"]
    listed = sorted(ops, key=order.index)
    return ", ".join(listed) if listed else "none"


def _resolve(expr: Compare | StartsWith, spec: FilterSpec) -> tuple[str, PropSpec]:
    found = spec.lookup(expr.prop)
    if found is None:
        raise _Invalid(
            f"Property '{expr.prop}' is not supported in a filter for the {spec.operation} operation; "
            f"supported properties: {', '.join(spec.props)}"
        )
    name, ps = found
    return ps.wire or name, ps


def _allowed(ps: PropSpec) -> str:
    return _ops_text([*ps.ops, *(["startswith"] if ps.startswith else [])])


def _bind(expr: Expr, spec: FilterSpec) -> Expr:
    if isinstance(expr, Compare):
        name, ps = _resolve(expr, spec)
        if expr.op not in ps.ops:
            raise _Invalid(
                f"Operator '{expr.op}' is not supported for property '{expr.prop}'; allowed: {_allowed(ps)}"
            )
        if expr.value is None and expr.op not in EQ_NE:
            raise _Invalid(f"Operator '{expr.op}' cannot be used with null")
        return Compare(name, expr.op, _coerce(expr.prop, ps, expr.value), casefold=ps.folds)
    if isinstance(expr, StartsWith):
        name, ps = _resolve(expr, spec)
        if not ps.startswith:
            raise _Invalid(
                f"Function 'startswith' is not supported for property '{expr.prop}'; allowed: {_allowed(ps)}"
            )
        return StartsWith(name, expr.prefix.lower() if ps.folds else expr.prefix, casefold=ps.folds)
    if isinstance(expr, Not):
        return Not(_bind(expr.operand, spec))
    parts = [_bind(p, spec) for p in expr.operands]
    return _and(parts) if isinstance(expr, And) else _or(parts)


def bind(expr: Expr, spec: FilterSpec, *, source: str | None = None) -> Expr:
    """Validate `expr` against `spec` and return it normalised for evaluation and SQL translation.

    Normalising means: property names in the spec's (wire) spelling, literals coerced to the property's kind
    (a quoted ISO string becomes a datetime), case-insensitive properties lowercased and flagged `casefold`.
    Errors are 400 InvalidQueryParameterValue for `$filter`; `source` is echoed as the value (default: the
    expression re-rendered).
    """
    try:
        return _bind(expr, spec)
    except _Invalid as err:
        raise invalid_query_parameter(
            PARAM, to_odata(expr) if source is None else source, f"{err}."
        ) from None


def validate(expr: Expr, spec: FilterSpec, *, source: str | None = None) -> None:
    """Raise 400 InvalidQueryParameterValue if `spec`'s operation cannot run `expr`."""
    bind(expr, spec, source=source)


def compile_filter(text: str, spec: FilterSpec) -> Expr:
    """Parse + validate + normalise a `$filter` value for one operation (the API layer's entry point)."""
    return bind(parse_filter(text), spec, source=text)


# --- evaluation ------------------------------------------------------------------------------------------


class _Missing:
    pass


_MISSING: Final = _Missing()

_CMP: Final[dict[CompareOp, Callable[[Any, Any], bool]]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def _lookup(item: Mapping[str, Any], path: str) -> object:
    cur: object = item
    for part in path.split("/"):
        if not isinstance(cur, Mapping) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _actual(raw: object, value: Scalar, casefold: bool) -> object:
    """Bring an item's raw JSON value into the literal's domain, or return _MISSING when incomparable."""
    if isinstance(value, bool):
        return raw if isinstance(raw, bool) else _MISSING
    if isinstance(value, int):
        return raw if isinstance(raw, int) and not isinstance(raw, bool) else _MISSING
    if isinstance(value, DateTimeValue):
        if isinstance(raw, datetime):
            return DateTimeValue.from_datetime(raw)
        return (parse_datetime(raw) or _MISSING) if isinstance(raw, str) else _MISSING
    if isinstance(raw, str):
        return raw.lower() if casefold else raw
    return _MISSING


def evaluate(expr: Expr, item: Mapping[str, Any]) -> bool:
    """Evaluate against a wire-shaped resource dict (camelCase keys, nested dicts for '/').

    Missing or type-mismatched properties compare false (``eq null`` aside); datetimes in the item may be
    ISO strings with any fraction length or datetime objects.
    """
    if isinstance(expr, Compare):
        raw = _lookup(item, expr.prop)
        if expr.value is None:
            present = raw is not _MISSING and raw is not None
            return present if expr.op == "ne" else not present
        actual = _actual(raw, expr.value, expr.casefold)
        if actual is _MISSING:
            return False
        value = expr.value.lower() if expr.casefold and isinstance(expr.value, str) else expr.value
        return _CMP[expr.op](actual, value)
    if isinstance(expr, StartsWith):
        raw = _lookup(item, expr.prop)
        if not isinstance(raw, str):
            return False
        if expr.casefold:
            return raw.lower().startswith(expr.prefix.lower())
        return raw.startswith(expr.prefix)
    if isinstance(expr, Not):
        return not evaluate(expr.operand, item)
    if isinstance(expr, And):
        return all(evaluate(p, item) for p in expr.operands)
    return any(evaluate(p, item) for p in expr.operands)
