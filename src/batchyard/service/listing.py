"""Keyset paging shared by every list operation: the SQL narrows, a residual filter finishes."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table, and_

from batchyard.models import errors
from batchyard.models.odata import Expr, FilterSpec, compile_filter, evaluate
from batchyard.store.sql import Row, Tx

MAX_RESULTS = 1000
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class ListQuery:
    filter: str | None = None
    select: list[str] | None = None
    expand: list[str] | None = None
    max_results: int = MAX_RESULTS
    skiptoken: str | None = None


def encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    if not token or not _TOKEN_RE.match(token):
        raise errors.invalid_query_parameter("$skiptoken", token, "The continuation token is not valid")
    try:
        pad = "=" * (-len(token) % 4)
        return base64.urlsafe_b64decode(token + pad).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.invalid_query_parameter(
            "$skiptoken", token, "The continuation token is not valid"
        ) from exc


def parse_filter(q: ListQuery, spec: FilterSpec) -> Expr | None:
    if not q.filter:
        return None
    return compile_filter(q.filter, spec)


def _page_query(
    q: ListQuery, spec: FilterSpec, columns: Mapping[str, Any]
) -> tuple[ColumnElement[bool] | None, Any, str | None, int]:
    """A list request's SQL part of its filter, the part left to evaluate on items, the key to start after
    and the page size."""
    from batchyard.store.odata_sql import split_sql

    expr = parse_filter(q, spec)
    sql_part, residual = split_sql(expr, columns) if expr is not None else (None, None)
    after = decode_token(q.skiptoken) if q.skiptoken else None
    return sql_part, residual, after, max(1, min(q.max_results, MAX_RESULTS))


def page_rows(
    tx: Tx,
    table: Table,
    key_col: str,
    base: ColumnElement[bool] | None,
    q: ListQuery,
    spec: FilterSpec,
    columns: Mapping[str, Any],
    to_item: Callable[[Row], dict[str, Any]],
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of items in key order; returns the items and the next skiptoken (or None)."""
    sql_part, residual, after, limit = _page_query(q, spec, columns)
    out: list[dict[str, Any]] = []
    keys: list[str] = []
    kc = table.c[key_col]
    while True:
        clauses = [c for c in (base, sql_part) if c is not None]
        if after is not None:
            clauses.append(kc > after)
        where = and_(*clauses) if clauses else None
        batch = tx.select(table, where, order_by=[kc], limit=limit + 1)
        for r in batch:
            after = r[key_col]
            item = to_item(r)
            if residual is None or evaluate(residual, item):
                out.append(item)
                keys.append(r[key_col])
                if len(out) > limit:
                    return out[:limit], encode_token(keys[limit - 1])
        if len(batch) <= limit:
            return out, None


def page_texts(
    tx: Tx,
    table: Table,
    key_col: str,
    base: ColumnElement[bool] | None,
    q: ListQuery,
    spec: FilterSpec,
    columns: Mapping[str, Any],
) -> tuple[list[tuple[str, str]], str | None] | None:
    """`page_rows` as (id, stored body JSON) pairs, when the filter is all SQL; None when part of it must be
    evaluated on decoded bodies (the caller then uses `page_rows`)."""
    sql_part, residual, after, limit = _page_query(q, spec, columns)
    if residual is not None:
        return None
    kc = table.c[key_col]
    clauses = [c for c in (base, sql_part) if c is not None]
    if after is not None:
        clauses.append(kc > after)
    where = and_(*clauses) if clauses else None
    rows = tx.select_tuples(table, (key_col, "id", "body"), where, order_by=[kc], limit=limit + 1)
    if len(rows) > limit:
        return [(r[1], r[2]) for r in rows[:limit]], encode_token(rows[limit - 1][0])
    return [(r[1], r[2]) for r in rows], None


def page_items(
    items: list[dict[str, Any]], q: ListQuery, spec: FilterSpec
) -> tuple[list[dict[str, Any]], str | None]:
    """Paging for lists held in memory (files, images): sorted by their sort key 'id' or 'name'."""
    expr = parse_filter(q, spec)
    if expr is not None:
        items = [i for i in items if evaluate(expr, i)]
    after = decode_token(q.skiptoken) if q.skiptoken else None
    limit = max(1, min(q.max_results, MAX_RESULTS))

    def k(i: Mapping[str, Any]) -> str:
        return str(i.get("name", i.get("id", i.get("poolId", ""))))

    items = sorted(items, key=k)
    if after is not None:
        items = [i for i in items if k(i) > after]
    if len(items) > limit:
        return items[:limit], encode_token(k(items[limit - 1]))
    return items, None
