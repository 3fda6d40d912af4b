"""Translate a bound `$filter` AST (`batchyard.models.odata`) into SQLAlchemy Core conditions.

Only properties the caller maps to an indexed column are translated; `split_sql` pushes the translatable
conjuncts of a top-level AND into the query and hands back the rest for `odata.evaluate`, so every documented
property filters correctly while the indexed ones narrow the scan first.

Column conventions the caller must follow:

* Datetime properties map to columns holding Batch's canonical ISO form ``YYYY-MM-DDTHH:MM:SS.fffffffZ``
  (UTC, always 7 fraction digits). That form sorts lexicographically, so comparisons are plain string
  comparisons against the literal rendered the same way (`DateTimeValue.iso`).
* Case-insensitive properties (ids, enums) map to a `ColumnMap` with ``casefold=True``: the column holds the
  lowercased value (e.g. a lowercase key column for ``id``, the lowercase wire value for ``state``) and the
  literal is lowercased here, so the comparison stays sargable. A case-folding node on a plain column falls
  back to ``lower(column)`` (correct, but not index-assisted).
* Prefix-matched and range-compared text columns should use a binary collation (SQLite's default BINARY,
  PostgreSQL ``COLLATE "C"``), which is also Batch's ordinal ordering of ids.

NULL handling mirrors `evaluate`: a comparison with a NULL column is false, and under ``not`` each leaf is
made NULL-proof (``col IS NOT NULL AND …``) so ``not`` of "unknown" is true, exactly as in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import ColumnElement, and_, func, not_, or_

from batchyard.models.odata import And, Compare, DateTimeValue, Expr, Not, StartsWith, conjuncts

__all__ = ["ColumnMap", "Columns", "NotTranslatable", "split_sql", "to_sql", "translatable"]


@dataclass(frozen=True)
class ColumnMap:
    """A filterable column; ``casefold=True`` declares that it stores lowercased values (see module doc)."""

    column: ColumnElement[Any]
    casefold: bool = False


Columns: TypeAlias = Mapping[str, "ColumnElement[Any] | ColumnMap"]
"""Property path (wire spelling, as `odata.bind` normalises it) -> column."""


class NotTranslatable(ValueError):
    """`to_sql` met a property with no column; use `split_sql` to keep such parts in Python."""


_LIKE_ESCAPE = "\\"


def _entry(columns: Columns, prop: str) -> ColumnMap:
    found = columns.get(prop)
    if found is None:
        raise NotTranslatable(prop)
    return found if isinstance(found, ColumnMap) else ColumnMap(found)


def _text_target(cm: ColumnMap, value: str, casefold: bool) -> tuple[ColumnElement[Any], str]:
    """Column expression and literal for a string comparison, honouring case folding on either side."""
    if cm.casefold:
        return cm.column, value.lower()
    if casefold:
        return func.lower(cm.column), value.lower()
    return cm.column, value


def _prefix_upper(prefix: str) -> str | None:
    """Smallest string greater than every string starting with `prefix` (code-point order), if any."""
    while prefix:
        code = ord(prefix[-1])
        if code < 0x10FFFF:
            code += 1
            if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored; skip past them
                code = 0xE000
            return prefix[:-1] + chr(code)
        prefix = prefix[:-1]
    return None


def _compare(expr: Compare, columns: Columns) -> ColumnElement[bool]:
    cm = _entry(columns, expr.prop)
    value = expr.value
    if value is None:
        return cm.column.is_not(None) if expr.op == "ne" else cm.column.is_(None)
    col: ColumnElement[Any] = cm.column
    lit: object = value
    if isinstance(value, DateTimeValue):
        lit = value.iso
    elif isinstance(value, str):
        col, lit = _text_target(cm, value, expr.casefold)
    op = expr.op
    if op == "eq":
        return col == lit
    if op == "ne":
        return col != lit
    if op == "gt":
        return col > lit
    if op == "ge":
        return col >= lit
    if op == "lt":
        return col < lit
    return col <= lit


def _starts_with(expr: StartsWith, columns: Columns) -> ColumnElement[bool]:
    """LIKE 'prefix%' with %, _ and the escape char escaped, plus the equivalent [prefix, next) range.

    The LIKE keeps the match exact where the range alone could not be trusted (non-binary collations);
    the range makes it index-assisted where LIKE is not (SQLite only optimises LIKE on NOCASE columns)
    and case-sensitive where LIKE is not (SQLite's LIKE ignores ASCII case).
    """
    col, prefix = _text_target(_entry(columns, expr.prop), expr.prefix, expr.casefold)
    escaped = (
        prefix.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
        .replace("%", _LIKE_ESCAPE + "%")
        .replace("_", _LIKE_ESCAPE + "_")
    )
    conds: list[ColumnElement[bool]] = [col.like(escaped + "%", escape=_LIKE_ESCAPE)]
    if prefix:
        conds.append(col >= prefix)
        upper = _prefix_upper(prefix)
        if upper is not None:
            conds.append(col < upper)
    return and_(*conds)


def _sql(expr: Expr, columns: Columns, null_safe: bool) -> ColumnElement[bool]:
    if isinstance(expr, Compare | StartsWith):
        leaf = _compare(expr, columns) if isinstance(expr, Compare) else _starts_with(expr, columns)
        if null_safe and not (isinstance(expr, Compare) and expr.value is None):
            return and_(_entry(columns, expr.prop).column.is_not(None), leaf)
        return leaf
    if isinstance(expr, Not):
        return not_(_sql(expr.operand, columns, True))
    parts = [_sql(p, columns, null_safe) for p in expr.operands]
    return and_(*parts) if isinstance(expr, And) else or_(*parts)


def translatable(expr: Expr, columns: Columns) -> bool:
    """Whether every property `expr` mentions has a column."""
    if isinstance(expr, Compare | StartsWith):
        return expr.prop in columns
    if isinstance(expr, Not):
        return translatable(expr.operand, columns)
    return all(translatable(p, columns) for p in expr.operands)


def to_sql(expr: Expr, columns: Columns) -> ColumnElement[bool]:
    """The whole of `expr` as a WHERE condition; raises `NotTranslatable` if a property has no column."""
    return _sql(expr, columns, False)


def split_sql(expr: Expr, columns: Columns) -> tuple[ColumnElement[bool] | None, Expr | None]:
    """Split the top-level AND chain into (SQL condition, residual for `odata.evaluate`).

    Either side is None when empty. Rows matching the SQL part still need the residual; an OR that mentions
    any unmapped property stays wholly in the residual (it cannot narrow the query).
    """
    pushed: list[Expr] = []
    rest: list[Expr] = []
    for part in conjuncts(expr):
        (pushed if translatable(part, columns) else rest).append(part)
    condition = and_(*(_sql(p, columns, False) for p in pushed)) if pushed else None
    residual: Expr | None = None
    if rest:
        residual = rest[0] if len(rest) == 1 else And(tuple(rest))
    return condition, residual
