"""The SQL store: one adapter for SQLite (embedded default) and PostgreSQL.

Every service operation runs inside one `Tx`; checks that must be atomic (ETag conditions, state
preconditions, id uniqueness) happen on rows read inside that transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from batchyard.store import schema

Row = dict[str, Any]
_log = logging.getLogger(__name__)

# rows a table must gain before its first ANALYZE on PostgreSQL (then half its size each time)
ANALYZE_MIN_ROWS = 5000

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class DuplicateKey(Exception):
    """An insert collided with an existing primary key."""


def normalise_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _row(m: Mapping[Any, Any]) -> Row:
    r = dict(m)
    if "body" in r and isinstance(r["body"], str):
        r["body"] = _decode(r["body"])
    return r


def json_text(body: Any) -> str:
    """A body as the JSON text a `body` column holds (for `Tx.insert_rows`)."""
    return _encode(body).decode()


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(v: Any) -> str:
    """One value in COPY's text format."""
    if v is None:
        return "\\N"
    if isinstance(v, str):
        return v.translate(_COPY_ESCAPES)
    return str(int(v))


def _prep(values: Mapping[str, Any]) -> dict[str, Any]:
    v = dict(values)
    if "body" in v and not isinstance(v["body"], str):
        v["body"] = json_text(v["body"])
    return v


# Statements of the hot paths are built once and executed with parameters: building a SQLAlchemy
# statement costs several times more than running it on SQLite.
_STATEMENTS: dict[tuple[Any, ...], Any] = {}


_RAW: dict[tuple[str, tuple[str, ...], str], str] = {}


def _cached(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _STATEMENTS[key] = build()
    return stmt


_IN_SIZES = (1, 2, 4, 8, 16, 32, 64)


def _task_rows_stmt(cols: tuple[str, ...] | None, n: int) -> Callable[[], Any]:
    def build() -> Any:
        t = schema.tasks
        keys: list[Any] = [bindparam(f"k{i}") for i in range(n)]
        stmt = select(*(t.c[c] for c in cols)) if cols else select(t)
        return stmt.where(and_(t.c.job_key == bindparam("job"), t.c.key.in_(keys)))

    return build


class _Compiled:
    """A hot statement compiled once per dialect and run on the DB-API cursor.

    SQLAlchemy's per-execution work (cache key, parameter construction, result proxies) cost more than
    SQLite's own execution of these short statements; the schema has no types that need its bind or result
    processing (text and integers only), so the driver's values are the values.
    """

    __slots__ = ("fixed", "order", "text")

    def __init__(self, stmt: Any, dialect: Any) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.text = str(compiled)
        self.order: tuple[str, ...] | None = tuple(compiled.positiontup) if compiled.positional else None
        # literals of the statement (``state == "active"``) are bind parameters with their value
        self.fixed = {k: v for k, v in compiled.params.items() if v is not None}

    def params(self, values: Mapping[str, Any]) -> Any:
        if self.fixed:
            values = {**self.fixed, **values}
        return values if self.order is None else tuple(values[k] for k in self.order)


_COMPILED: dict[tuple[Any, ...], _Compiled] = {}


def _pk_params(table: Table, pk: Mapping[str, Any]) -> ColumnElement[bool]:
    return and_(*(table.c[k] == bindparam("pk_" + k) for k in pk))


def _pk_values(pk: Mapping[str, Any]) -> dict[str, Any]:
    return {"pk_" + k: v for k, v in pk.items()}


def _update_stmt(table: Table, pk_names: tuple[str, ...], cols: tuple[str, ...]) -> Any:
    return _cached(
        ("update", table.name, pk_names, cols),
        lambda: (
            update(table)
            .where(and_(*(table.c[k] == bindparam("pk_" + k) for k in pk_names)))
            .values({c: bindparam("v_" + c) for c in cols})
        ),
    )


def _select_stmt(
    table: Table,
    columns: Sequence[str] | None,
    where: ColumnElement[bool] | None,
    order_by: Sequence[Any],
    limit: int | None,
) -> Any:
    stmt = select(*(table.c[c] for c in columns)) if columns else select(table)
    if where is not None:
        stmt = stmt.where(where)
    if order_by:
        stmt = stmt.order_by(*order_by)
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt


class Tx:
    """Operations available inside one transaction."""

    def __init__(self, conn: Connection, grew: Callable[[str, int], None] | None = None) -> None:
        self.conn = conn
        self._grew = grew
        self._cursor: Any = None

    def _compiled(self, key: tuple[Any, ...], build: Callable[[], Any]) -> _Compiled:
        full = (self.conn.dialect.name, *key)
        c = _COMPILED.get(full)
        if c is None:
            c = _COMPILED[full] = _Compiled(_cached(key, build), self.conn.dialect)
        return c

    def _cur(self) -> Any:
        """The transaction's own DB-API cursor (one, reused within the transaction)."""
        if self._cursor is None:
            self._cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        return self._cursor

    def _raw(self, c: _Compiled, values: Mapping[str, Any]) -> Any:
        cur = self._cur()
        cur.execute(c.text, c.params(values))
        return cur

    def _raw_rows(self, c: _Compiled, values: Mapping[str, Any]) -> list[Row]:
        cur = self._raw(c, values)
        names = [d[0] for d in cur.description]
        out = []
        for t in cur.fetchall():
            r = dict(zip(names, t, strict=True))
            body = r.get("body")
            if isinstance(body, str):
                r["body"] = _decode(body)
            out.append(r)
        return out

    def get(self, table: Table, **pk: Any) -> Row | None:
        c = self._compiled(("get", table.name, tuple(pk)), lambda: select(table).where(_pk_params(table, pk)))
        rows = self._raw_rows(c, _pk_values(pk))
        return rows[0] if rows else None

    def get_for_update(self, table: Table, **pk: Any) -> Row | None:
        """Read a row that this transaction will write (row lock on PostgreSQL; SQLite locks on BEGIN)."""
        stmt = _cached(
            ("get_fu", table.name, tuple(pk)),
            lambda: select(table).where(_pk_params(table, pk)).with_for_update(),
        )
        r = self.conn.execute(stmt, _pk_values(pk)).mappings().first()
        return None if r is None else _row(r)

    def exists(self, table: Table, **pk: Any) -> bool:
        stmt = _cached(
            ("exists", table.name, tuple(pk)),
            lambda: select(table.c[next(iter(pk))]).where(_pk_params(table, pk)),
        )
        return self.conn.execute(stmt, _pk_values(pk)).first() is not None

    def insert(self, table: Table, values: Mapping[str, Any]) -> None:
        try:
            with self.conn.begin_nested():
                self.conn.execute(insert(table).values(_prep(values)))
        except IntegrityError as exc:
            raise DuplicateKey(str(exc.orig)) from exc

    def insert_many(self, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self.conn.execute(insert(table), [_prep(r) for r in rows])

    def insert_rows(self, table: Table, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> None:
        """Insert tuples in `columns` order with one prebuilt driver statement (the bulk task add).

        A `body` column must already be JSON text. Skips SQLAlchemy's per-row parameter processing, which
        cost more than SQLite's own insert; PostgreSQL receives the rows as one pipelined executemany."""
        if not rows:
            return
        if self.conn.dialect.name == "postgresql":
            # COPY: one message for all rows; an executemany is a pipelined statement per row, ~3x the CPU
            cols = ", ".join(f'"{c}"' for c in columns)
            cur = self.conn.connection.cursor()
            try:
                with cur.copy(f"COPY {table.name} ({cols}) FROM STDIN") as cp:
                    cp.write("".join("\t".join(map(_copy_field, r)) + "\n" for r in rows))
            except Exception as exc:
                if type(exc).__name__ == "UniqueViolation":
                    raise DuplicateKey(str(exc)) from exc
                raise
            finally:
                cur.close()
            if self._grew is not None:
                self._grew(table.name, len(rows))
            return
        mark = "?" if self.conn.dialect.paramstyle == "qmark" else "%s"
        sql = _RAW.get((table.name, columns, mark))
        if sql is None:
            cols = ", ".join(f'"{c}"' for c in columns)
            sql = f"INSERT INTO {table.name} ({cols}) VALUES ({', '.join([mark] * len(columns))})"
            _RAW[(table.name, columns, mark)] = sql
        try:
            self.conn.exec_driver_sql(sql, list(rows))
        except IntegrityError as exc:
            raise DuplicateKey(str(exc.orig)) from exc
        if self._grew is not None:
            self._grew(table.name, len(rows))

    def update(self, table: Table, values: Mapping[str, Any], **pk: Any) -> int:
        cols = tuple(values)
        params = _pk_values(pk)
        p = _prep(values)
        params.update({"v_" + c: p[c] for c in cols})
        pks = tuple(pk)
        c = self._compiled(("update", table.name, pks, cols), lambda: _update_stmt(table, pks, cols))
        return int(self._raw(c, params).rowcount)

    def update_many(self, table: Table, pk_names: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
        """Update several rows, each keyed by its own pk values (one executemany)."""
        if not rows:
            return
        cols = tuple(k for k in rows[0] if k not in pk_names)
        pks = tuple(pk_names)
        sql = self._compiled(("update", table.name, pks, cols), lambda: _update_stmt(table, pks, cols))
        params = []
        for r in rows:
            p = _prep(r)
            d = {"pk_" + k: p[k] for k in pk_names}
            d.update({"v_" + c: p[c] for c in cols})
            params.append(sql.params(d))
        self._cur().executemany(sql.text, params)

    def delete(self, table: Table, **pk: Any) -> int:
        stmt = _cached(("delete", table.name, tuple(pk)), lambda: delete(table).where(_pk_params(table, pk)))
        return int(self.conn.execute(stmt, _pk_values(pk)).rowcount)

    def delete_where(self, table: Table, where: ColumnElement[bool]) -> int:
        return int(self.conn.execute(delete(table).where(where)).rowcount)

    def select(
        self,
        table: Table,
        where: ColumnElement[bool] | None = None,
        order_by: Sequence[Any] = (),
        limit: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> list[Row]:
        stmt = _select_stmt(table, columns, where, order_by, limit)
        return [_row(r) for r in self.conn.execute(stmt).mappings()]

    def select_prepared(self, name: str, build: Callable[[], Any], params: Mapping[str, Any]) -> list[Row]:
        """Run a hot-path SELECT built once (``build`` takes no arguments; values go in as bind parameters,
        none of them expanding)."""
        return self._raw_rows(self._compiled(("prepared", name), build), params)

    def select_tuples(
        self,
        table: Table,
        columns: Sequence[str],
        where: ColumnElement[bool] | None = None,
        order_by: Sequence[Any] = (),
        limit: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """Like `select`, as plain tuples in `columns` order with `body` left as JSON text (list pages served
        without a decode and re-encode)."""
        stmt = _select_stmt(table, columns, where, order_by, limit)
        return [tuple(r) for r in self.conn.execute(stmt)]

    def existing_task_keys(self, job_key: str, keys: Sequence[str]) -> set[str]:
        """Which of these task keys the job already has (the collection add's check)."""
        return {r["key"] for r in self.task_rows(job_key, keys, ("key",))}

    def task_rows(self, job_key: str, keys: Sequence[str], columns: Sequence[str] | None = None) -> list[Row]:
        """The job's tasks among these keys, on prebuilt statements: the keys go in chunks of at most 64,
        each padded to a power of two by repeating its last key, so a few statement shapes serve any count."""
        cols = tuple(columns) if columns else None
        out: list[Row] = []
        for i in range(0, len(keys), _IN_SIZES[-1]):
            chunk = list(keys[i : i + _IN_SIZES[-1]])
            size = next(n for n in _IN_SIZES if n >= len(chunk))
            chunk += [chunk[-1]] * (size - len(chunk))
            params: dict[str, Any] = {"job": job_key}
            params.update({f"k{j}": k for j, k in enumerate(chunk)})
            sql = self._compiled(("task_rows", cols, size), _task_rows_stmt(cols, size))
            out += self._raw_rows(sql, params)
        return out

    def count(self, table: Table, where: ColumnElement[bool] | None = None) -> int:
        stmt = select(func.count()).select_from(table)
        if where is not None:
            stmt = stmt.where(where)
        return int(self.conn.execute(stmt).scalar_one())

    def sums(self, table: Table, columns: Sequence[str]) -> dict[str, int]:
        """Column totals over the whole table (0 for an empty one)."""
        stmt = select(*(func.coalesce(func.sum(table.c[c]), 0).label(c) for c in columns))
        return {k: int(v) for k, v in self.conn.execute(stmt).one()._mapping.items()}

    def next_counter(self, name: str, n: int = 1) -> int:
        """Reserve n values of a named counter; returns the first."""
        c = schema.counters
        stmt = update(c).where(c.c.name == name).values(value=c.c.value + n).returning(c.c.value)
        new = self.conn.execute(stmt).scalar()
        if new is None:
            try:
                self.insert(c, {"name": name, "value": n})
                return 1
            except DuplicateKey:  # a concurrent first reservation created the row
                new = self.conn.execute(stmt).scalar_one()
        return int(new) - n + 1

    def add_counts(self, job_key: str, deltas: Mapping[str, int]) -> None:
        """Apply task-count deltas incrementally (never recounted by scanning)."""
        keys = tuple(sorted(k for k, v in deltas.items() if v))
        if not keys:
            return
        t = schema.task_counts
        stmt = _cached(
            ("counts", keys),
            lambda: (
                update(t)
                .where(t.c.job_key == bindparam("pk_job_key"))
                .values({k: t.c[k] + bindparam("d_" + k) for k in keys})
            ),
        )
        params: dict[str, Any] = {"pk_job_key": job_key}
        params.update({"d_" + k: deltas[k] for k in keys})
        self._raw(self._compiled(("counts", keys), lambda: stmt), params)


class SqlStore:
    """Owns the engine; `tx()` opens one transaction."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.dialect = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(self.url, **kwargs)
        self._local = threading.local()
        self._held: list[Connection] = []  # every thread's connection, closed by dispose()
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._grown: dict[str, int] = {}
        self._analyzed: dict[str, int] = {}
        self._analyzing: set[str] = set()
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SqlStore:
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{data_dir / 'batchyard.db'}")

    def migrate(self) -> None:
        from batchyard.store.migrate import upgrade

        upgrade(self.engine)

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        """One transaction, on this thread's own connection (checking a connection out of the pool and back
        for every transaction cost as much as a small transaction itself)."""
        grew = self._grew if self.dialect == "postgresql" else None
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated or conn.in_transaction():
            if conn is not None and conn.in_transaction():  # a transaction inside another: its own connection
                with self.engine.begin() as other:
                    yield Tx(other, grew)
                return
            conn = self._local.conn = self.engine.connect()
            with self._lock:
                self._held.append(conn)
        try:
            with conn.begin():
                yield Tx(conn, grew)
        except DBAPIError:
            self._drop(conn)  # the connection may be broken (a database restart): the next one is fresh
            raise

    def _drop(self, conn: Connection) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            if conn in self._held:
                self._held.remove(conn)
        conn.close()

    def _grew(self, table: str, n: int) -> None:
        """Count bulk-inserted rows; once a table has grown by half since its last ANALYZE, refresh its
        planner statistics in a background thread. Autovacuum analyzes at most once a minute: a job filling
        at 10,000 tasks/s would be planned for hours with the statistics of an empty table (a sort of every
        row of the job for a list page, a scan of the job for each collection's duplicate check)."""
        with self._stats_lock:
            grown = self._grown[table] = self._grown.get(table, 0) + n
            if table in self._analyzing or grown < max(ANALYZE_MIN_ROWS, self._analyzed.get(table, 0) // 2):
                return
            self._analyzing.add(table)
        threading.Thread(target=self._analyze, args=(table,), name=f"analyze-{table}", daemon=True).start()

    def _analyze(self, table: str) -> None:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql(f"ANALYZE {table}")
                conn.commit()
                rows = conn.exec_driver_sql(
                    "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", (table,)
                ).scalar()
        except Exception:  # statistics are an optimisation: a failed ANALYZE is retried on more growth
            _log.warning("ANALYZE %s failed", table, exc_info=True)
            rows = None
        with self._stats_lock:
            self._analyzing.discard(table)
            if rows is not None:
                self._analyzed[table] = max(int(rows), 0)
                self._grown[table] = 0

    def dispose(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for conn in held:
            with suppress(Exception):
                conn.close()
        self._local = threading.local()
        self.engine.dispose()


def _sqlite_begin(conn: Connection) -> None:
    conn.connection.dbapi_connection.execute(BEGIN_SQL)  # type: ignore[union-attr]


BEGIN_SQL = "BEGIN IMMEDIATE"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # pysqlite must not BEGIN/COMMIT behind SQLAlchemy's back
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()
