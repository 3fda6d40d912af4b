"""Store contract: the same behaviour from the SQL adapter on SQLite (embedded default) and PostgreSQL.

Every test runs once per backend against a freshly migrated store: a new SQLite file under tmp_path, or a new
PostgreSQL schema (selected through the connection's search_path) that is dropped afterwards.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from batchyard.models import odata
from batchyard.models.ids import key_of
from batchyard.service.listing import ListQuery, decode_token, encode_token, page_rows
from batchyard.store import schema
from batchyard.store.migrate import alembic_config
from batchyard.store.odata_sql import ColumnMap
from batchyard.store.sql import DuplicateKey, Row, SqlStore
from tests.conftest import PG_URL, require_pg

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

NOW = "2025-01-02T03:04:05.0000000Z"

BODY: dict[str, Any] = {
    "displayName": 'café ✓ 名前 🚀 — "quoted" \\ back\\slash\nnew line\ttab \u0000 nul',
    "nested": {"list": [1, -2, 3.5, None, True, False, {"deep": ["x", {"deeper": "é"}]}], "empty": {}},
    "emptyList": [],
    "big": 2**62,
    "null": None,
}


def pg_url_for_schema(name: str) -> str:
    """A PostgreSQL URL whose connections resolve unqualified tables in `name` (libpq `options`)."""
    return f"{PG_URL}?options=-csearch_path%3D{name}"


def _pg_exec(sql: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        s = SqlStore.for_data_dir(tmp_path)
        s.migrate()
        try:
            yield s
        finally:
            s.dispose()
        return
    require_pg()
    name = f"by_{uuid.uuid4().hex}"
    _pg_exec(f"CREATE SCHEMA {name}")
    try:
        s = SqlStore(pg_url_for_schema(name))
        try:
            s.migrate()
            yield s
        finally:
            s.dispose()
    finally:
        _pg_exec(f"DROP SCHEMA {name} CASCADE")


# --- row builders ------------------------------------------------------------------------------------------


def pool_row(pool_id: str, **kw: Any) -> Row:
    row: Row = {
        "key": key_of(pool_id),
        "id": pool_id,
        "state": "active",
        "alloc_state": "steady",
        "etag": "0x1",
        "last_modified": NOW,
        "creation_time": NOW,
        "body": {"id": pool_id, **BODY},
    }
    row.update(kw)
    return row


def job_row(job_id: str, pool_id: str = "pool", **kw: Any) -> Row:
    row: Row = {
        "key": key_of(job_id),
        "id": job_id,
        "pool_key": key_of(pool_id),
        "state": "active",
        "priority": 0,
        "seq": 1,
        "task_seq": 0,
        "etag": "0x1",
        "last_modified": NOW,
        "creation_time": NOW,
        "body": {"id": job_id, **BODY},
    }
    row.update(kw)
    return row


def task_row(job_key: str, task_id: str, seq: int = 1, **kw: Any) -> Row:
    row: Row = {
        "job_key": job_key,
        "key": key_of(task_id),
        "id": task_id,
        "seq": seq,
        "state": "active",
        "node_id": None,
        "slots": 1,
        "attempt": 0,
        "etag": "0x1",
        "last_modified": NOW,
        "creation_time": NOW,
        "body": {"id": task_id, "state": "active", **BODY},
    }
    row.update(kw)
    return row


def node_row(node_id: str, pool_key: str = "pool", **kw: Any) -> Row:
    row: Row = {
        "id": node_id,
        "pool_key": pool_key,
        "state": "idle",
        "ordinal": 0,
        "token": "t" * 64,
        "pid": 1234,
        "server_url": "http://127.0.0.1:1",
        "state_transition_time": NOW,
        "body": {"id": node_id, **BODY},
    }
    row.update(kw)
    return row


# (table, row factory, pk of the row, a column to update and its new value)
KINDS: dict[str, tuple[Any, Callable[[], Row], Callable[[Row], dict[str, Any]], str, Any]] = {
    "pools": (
        schema.pools,
        lambda: pool_row("Pool-1"),
        lambda r: {"key": r["key"]},
        "alloc_state",
        "resizing",
    ),
    "jobs": (schema.jobs, lambda: job_row("Job-1"), lambda r: {"key": r["key"]}, "priority", 500),
    "tasks": (
        schema.tasks,
        lambda: task_row("job-1", "Task-1"),
        lambda r: {"job_key": r["job_key"], "key": r["key"]},
        "node_id",
        "tvmps_x_d",
    ),
    "nodes": (schema.nodes, lambda: node_row("tvmps_abc_d"), lambda r: {"id": r["id"]}, "pid", None),
}


def _keys(rows: list[Row], col: str = "key") -> list[Any]:
    return [r[col] for r in rows]


def _project(got: Row | None, like: Row) -> Row | None:
    """`got` limited to the columns of `like` (later migrations add columns these tests do not set)."""
    return None if got is None else {k: got[k] for k in like}


# --- migrations ---------------------------------------------------------------------------------------------


def test_migrate_creates_every_table_and_is_idempotent(store: SqlStore) -> None:
    with store.tx() as tx:
        tx.insert(schema.pools, pool_row("keep"))
    store.migrate()  # the fixture already ran it once
    names = set(inspect(store.engine).get_table_names())
    assert set(schema.metadata.tables) <= names
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
    with store.tx() as tx:
        assert tx.exists(schema.pools, key="keep")
        for table in schema.metadata.tables.values():
            assert tx.count(table) == (1 if table is schema.pools else 0)


def test_schedule_job_keys_of_80_characters_fit_every_job_key_column(store: SqlStore) -> None:
    """A 64-character schedule id + ':job-<n>' (migration 0004_sched widens the columns on PostgreSQL)."""
    job_id = "s" * 64 + ":job-12345678901"
    assert len(job_id) == schema.JOB_KEY_LEN
    key = key_of(job_id)
    with store.tx() as tx:
        tx.insert(schema.jobs, job_row(job_id))
        tx.insert(schema.tasks, task_row(key, "t1"))
        tx.insert(schema.task_counts, {"job_key": key})
        tx.insert(schema.task_deps, {"job_key": key, "parent_key": "a", "child_key": "b"})
        tx.insert(schema.dep_ranges, {"job_key": key, "child_key": "b", "start": 1, "end": 2})
        tx.insert(schema.dep_satisfied, {"job_key": key, "num": 1})
        tx.insert(
            schema.job_schedules,
            {
                "key": "s" * 64,
                "id": "S" * 64,
                "state": "active",
                "next_run": NOW,
                "job_seq": 12345678901,
                "etag": "0x1",
                "last_modified": NOW,
                "creation_time": NOW,
                "body": {"id": "S" * 64, **BODY},
            },
        )
    with store.tx() as tx:
        assert tx.get(schema.jobs, key=key)["id"] == job_id  # type: ignore[index]
        row = tx.get(schema.job_schedules, key="s" * 64)
        assert (
            row is not None
            and row["body"]["displayName"] == BODY["displayName"]
            and row["job_seq"] == 12345678901
        )
        prefix = tx.select(schema.jobs, schema.jobs.c.key.startswith("s" * 64 + ":job-", autoescape=True))
        assert [r["id"] for r in prefix] == [job_id]


# --- single-row operations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_insert_get_exists_update_delete(store: SqlStore, kind: str) -> None:
    table, make, pk_of, col, new_value = KINDS[kind]
    row = make()
    pk = pk_of(row)
    with store.tx() as tx:
        assert tx.get(table, **pk) is None
        assert not tx.exists(table, **pk)
        tx.insert(table, row)
    with store.tx() as tx:
        assert _project(tx.get(table, **pk), row) == row
        assert tx.exists(table, **pk)
    new_body = {**row["body"], "added": {"ünïcode": ["✓", 1]}}
    with store.tx() as tx:
        assert tx.update(table, {col: new_value, "body": new_body}, **pk) == 1
        missing = {k: v + "-missing" for k, v in pk.items()}
        assert tx.update(table, {col: new_value}, **missing) == 0
    with store.tx() as tx:
        expected = {**row, col: new_value, "body": new_body}
        assert _project(tx.get(table, **pk), expected) == expected
    with store.tx() as tx:
        assert tx.delete(table, **pk) == 1
        assert tx.delete(table, **pk) == 0
    with store.tx() as tx:
        assert tx.get(table, **pk) is None
        assert not tx.exists(table, **pk)


def test_body_round_trips_exactly(store: SqlStore) -> None:
    body = {"id": "p", **BODY, "keys with spaces": {"a/b": "c'd", "": "empty key"}, "float": 0.1}
    with store.tx() as tx:
        tx.insert(schema.pools, pool_row("p", body=body))
    with store.tx() as tx:
        got = tx.get(schema.pools, key="p")
    assert got is not None
    assert got["body"] == body
    assert got["body"]["displayName"] == BODY["displayName"]
    assert got["body"]["big"] == 2**62 and isinstance(got["body"]["big"], int)


def test_duplicate_key_raises_and_leaves_transaction_usable(store: SqlStore) -> None:
    with store.tx() as tx:
        tx.insert(schema.pools, pool_row("p1", state="active"))
        with pytest.raises(DuplicateKey):
            tx.insert(schema.pools, pool_row("p1", state="deleting"))
        tx.insert(schema.pools, pool_row("p2"))
        assert tx.count(schema.pools) == 2
    with store.tx() as tx:
        p1 = tx.get(schema.pools, key="p1")
        assert p1 is not None and p1["state"] == "active"
        assert tx.exists(schema.pools, key="p2")


def test_duplicate_key_as_first_statement_then_commit(store: SqlStore) -> None:
    with store.tx() as tx:
        tx.insert(schema.jobs, job_row("j1"))
    with store.tx() as tx:
        with pytest.raises(DuplicateKey):
            tx.insert(schema.jobs, job_row("j1", priority=9))
        tx.insert(schema.jobs, job_row("j2"))
        tx.update(schema.jobs, {"priority": 7}, key="j1")
    with store.tx() as tx:
        assert [(r["key"], r["priority"]) for r in tx.select(schema.jobs, order_by=[schema.jobs.c.key])] == [
            ("j1", 7),
            ("j2", 0),
        ]


def test_task_primary_key_is_job_and_task(store: SqlStore) -> None:
    with store.tx() as tx:
        tx.insert(schema.tasks, task_row("job-a", "t1"))
        tx.insert(schema.tasks, task_row("job-b", "t1"))  # same task key in another job is fine
        with pytest.raises(DuplicateKey):
            tx.insert(schema.tasks, task_row("job-a", "t1", seq=2))
    with store.tx() as tx:
        assert tx.count(schema.tasks) == 2


def test_keys_are_case_sensitive_in_the_store_so_the_service_lowercases_ids(store: SqlStore) -> None:
    """The store compares keys exactly; case-insensitive id uniqueness comes from the service storing
    `key_of(id)` (the lowercased id) as the key and the case-preserved id beside it."""
    with store.tx() as tx:
        tx.insert(schema.pools, pool_row("x", key="MixedCase"))
        tx.insert(schema.pools, pool_row("x", key="mixedcase"))
    with store.tx() as tx:
        assert tx.count(schema.pools) == 2
        assert tx.get(schema.pools, key="MIXEDCASE") is None
    # the service's path: key = key_of(id), so ids differing only in case collide
    with store.tx() as tx:
        tx.insert(schema.jobs, job_row("MyJob"))
        with pytest.raises(DuplicateKey):
            tx.insert(schema.jobs, job_row("myjob"))
        assert tx.exists(schema.jobs, key=key_of("MYJOB"))
    with store.tx() as tx:
        got = tx.get(schema.jobs, key="myjob")
        assert got is not None and got["id"] == "MyJob"


# --- bulk operations ----------------------------------------------------------------------------------------


def _seed_tasks(store: SqlStore) -> None:
    with store.tx() as tx:
        tx.insert_many(
            schema.tasks,
            [task_row("j1", f"t{i:02d}", seq=i, state="active" if i % 2 else "running") for i in range(1, 11)]
            + [task_row("j2", f"t{i:02d}", seq=i) for i in range(1, 4)],
        )


def test_insert_many_and_select(store: SqlStore) -> None:
    t = schema.tasks
    with store.tx() as tx:
        tx.insert_many(t, [])  # no-op
    _seed_tasks(store)
    with store.tx() as tx:
        assert tx.count(t) == 13
        j1 = tx.select(t, t.c.job_key == "j1", order_by=[t.c.seq])
        assert _keys(j1) == [f"t{i:02d}" for i in range(1, 11)]
        first = task_row("j1", "t01", seq=1, state="active")
        assert _project(j1[0], first) == first
        top = tx.select(t, t.c.job_key == "j1", order_by=[t.c.seq.desc()], limit=3)
        assert _keys(top) == ["t10", "t09", "t08"]
        running = tx.select(
            t, (t.c.job_key == "j1") & (t.c.state == "running"), order_by=[t.c.key], columns=["key", "seq"]
        )
        assert running == [{"key": f"t{i:02d}", "seq": i} for i in (2, 4, 6, 8, 10)]
        assert tx.select(t, t.c.job_key == "nope") == []
        everything = tx.select(t, order_by=[t.c.job_key, t.c.key])
        assert [(r["job_key"], r["key"]) for r in everything][:2] == [("j1", "t01"), ("j1", "t02")]
        assert len(everything) == 13


def test_update_many(store: SqlStore) -> None:
    t = schema.tasks
    _seed_tasks(store)
    with store.tx() as tx:
        tx.update_many(t, ["job_key", "key"], [])  # no-op
        tx.update_many(
            t,
            ["job_key", "key"],
            [
                {
                    "job_key": "j1",
                    "key": f"t{i:02d}",
                    "state": "completed",
                    "attempt": i,
                    "body": {"n": i, "é": "✓"},
                }
                for i in (1, 2, 3)
            ],
        )
    with store.tx() as tx:
        rows = {r["key"]: r for r in tx.select(t, t.c.job_key == "j1")}
        for i in (1, 2, 3):
            r = rows[f"t{i:02d}"]
            assert (r["state"], r["attempt"], r["body"]) == ("completed", i, {"n": i, "é": "✓"})
        assert rows["t04"]["state"] == "running" and rows["t04"]["attempt"] == 0
        other = tx.get(t, job_key="j2", key="t01")
        assert other is not None and other["state"] == "active"


def test_delete_where_and_count(store: SqlStore) -> None:
    t = schema.tasks
    _seed_tasks(store)
    with store.tx() as tx:
        assert tx.count(t, t.c.job_key == "j1") == 10
        assert tx.count(t, (t.c.job_key == "j1") & (t.c.state == "active")) == 5
        assert tx.delete_where(t, (t.c.job_key == "j1") & (t.c.state == "running")) == 5
        assert tx.delete_where(t, t.c.job_key == "nope") == 0
    with store.tx() as tx:
        assert tx.count(t) == 8
        assert tx.count(t, t.c.job_key == "j1") == 5
        assert tx.delete_where(t, t.c.job_key == "j2") == 3
        assert tx.count(t) == 5


# --- counters -----------------------------------------------------------------------------------------------


def test_next_counter_starts_at_one_and_reserves_n(store: SqlStore) -> None:
    with store.tx() as tx:
        assert tx.next_counter("job_seq") == 1
        assert tx.next_counter("job_seq", 5) == 2  # reserves 2..6
        assert tx.next_counter("job_seq") == 7
        assert tx.next_counter("other", 3) == 1  # reserves 1..3
    with store.tx() as tx:
        assert tx.next_counter("other") == 4
        assert tx.next_counter("job_seq") == 8


def test_next_counter_reservations_never_overlap_across_concurrent_transactions(store: SqlStore) -> None:
    threads, per_thread = 6, 15
    got: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)
    with store.tx() as tx:
        tx.next_counter("c")  # the row exists; every later call takes the update path

    def work() -> None:
        try:
            start.wait(10)
            for _ in range(per_thread):
                with store.tx() as tx:
                    first = tx.next_counter("c", 2)
                with lock:
                    got.extend((first, first + 1))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert errors == []
    assert sorted(got) == list(range(2, 2 + 2 * threads * per_thread))


def test_add_counts_applies_incremental_deltas(store: SqlStore) -> None:
    tc = schema.task_counts
    with store.tx() as tx:
        tx.insert(tc, {"job_key": "j1"})
        tx.insert(tc, {"job_key": "j2"})
    with store.tx() as tx:
        tx.add_counts("j1", {"active": 3, "slots_active": 6})
        tx.add_counts("j1", {"active": -1, "running": 1, "slots_active": -2, "slots_running": 2, "failed": 0})
        tx.add_counts("j1", {})
    with store.tx() as tx:
        j1 = tx.get(tc, job_key="j1")
        j2 = tx.get(tc, job_key="j2")
    expected = {
        "job_key": "j1",
        "active": 2,
        "running": 1,
        "completed": 0,
        "succeeded": 0,
        "failed": 0,
        "slots_active": 4,
        "slots_running": 2,
        "slots_completed": 0,
        "slots_succeeded": 0,
        "slots_failed": 0,
    }
    assert _project(j1, expected) == expected
    assert j2 is not None and all(v == 0 for k, v in j2.items() if k != "job_key")


def test_add_counts_from_concurrent_transactions_all_land(store: SqlStore) -> None:
    threads, per_thread = 6, 20
    errors: list[BaseException] = []
    start = threading.Barrier(threads)
    with store.tx() as tx:
        tx.insert(schema.task_counts, {"job_key": "j"})

    def work() -> None:
        try:
            start.wait(10)
            for _ in range(per_thread):
                with store.tx() as tx:
                    tx.add_counts("j", {"completed": 1, "slots_completed": 2})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert errors == []
    with store.tx() as tx:
        row = tx.get(schema.task_counts, job_key="j")
    assert row is not None
    assert (row["completed"], row["slots_completed"]) == (threads * per_thread, 2 * threads * per_thread)


# --- transactions -------------------------------------------------------------------------------------------


class Boom(Exception):
    pass


def _snapshot(store: SqlStore) -> dict[str, list[Row]]:
    with store.tx() as tx:
        return {
            name: tx.select(table, order_by=list(table.primary_key.columns))
            for name, table in schema.metadata.tables.items()
        }


def _seed_everything(store: SqlStore) -> None:
    with store.tx() as tx:
        tx.insert(schema.pools, pool_row("p0"))
        tx.insert(schema.jobs, job_row("j0", "p0"))
        tx.insert(schema.task_counts, {"job_key": "j0"})
        tx.insert_many(schema.tasks, [task_row("j0", f"t{i}", seq=i) for i in range(3)])
        tx.insert(schema.nodes, node_row("n0", "p0"))
        tx.next_counter("job_seq")


def test_exception_rolls_back_every_write(store: SqlStore) -> None:
    _seed_everything(store)
    before = _snapshot(store)
    with pytest.raises(Boom), store.tx() as tx:
        tx.update(schema.jobs, {"state": "terminating"}, key="j0")
        tx.insert(schema.pools, pool_row("p1"))
        with pytest.raises(DuplicateKey):
            tx.insert(schema.pools, pool_row("p0"))
        tx.insert_many(schema.tasks, [task_row("j0", "new", seq=9)])
        tx.update_many(schema.tasks, ["job_key", "key"], [{"job_key": "j0", "key": "t1", "state": "running"}])
        tx.delete(schema.nodes, id="n0")
        tx.delete_where(schema.tasks, schema.tasks.c.key == "t2")
        tx.add_counts("j0", {"active": 5})
        assert tx.next_counter("job_seq") == 2
        assert tx.count(schema.pools) == 2  # visible inside the transaction
        raise Boom
    assert _snapshot(store) == before
    with store.tx() as tx:
        assert tx.next_counter("job_seq") == 2  # the rolled-back reservation was not consumed


def test_exception_after_insert_as_first_write_rolls_it_back(store: SqlStore) -> None:
    """The service's create path: read checks, then `insert` (a SAVEPOINT) is the first write."""
    with pytest.raises(Boom), store.tx() as tx:
        assert not tx.exists(schema.pools, key="p1")
        tx.insert(schema.pools, pool_row("p1"))
        tx.insert(schema.task_counts, {"job_key": "j1"})
        raise Boom
    with store.tx() as tx:
        assert tx.get(schema.pools, key="p1") is None
        assert tx.count(schema.task_counts) == 0
    # and the key stays free for the next attempt
    with store.tx() as tx:
        tx.insert(schema.pools, pool_row("p1"))
    with store.tx() as tx:
        assert tx.exists(schema.pools, key="p1")


# --- keyset paging with $filter -----------------------------------------------------------------------------

PAGED_IDS = {
    # id -> state; keys are the lowercased ids. Chosen so ordinal (code point) order differs from
    # locale orders: '-' < digits < '_' < letters in code points.
    "A_1": "active",
    "a_2": "completed",
    "A_10": "active",
    "ab1": "active",
    "a1": "active",
    "a-1": "active",
    "A": "running",
    "b_1": "active",
    "Zeta": "completed",
    "a__x": "active",
}


def _task_columns() -> dict[str, ColumnMap]:
    t = schema.tasks
    return {"id": ColumnMap(t.c.key, casefold=True), "state": ColumnMap(t.c.state)}


def _seed_paged(store: SqlStore) -> None:
    rows = []
    for seq, (task_id, state) in enumerate(PAGED_IDS.items(), 1):
        body = {"id": task_id, "state": state}
        rows.append(task_row("job", task_id, seq=seq, state=state, body=body))
    rows += [task_row("other", "a_1", seq=99, body={"id": "a_1", "state": "active"})]
    with store.tx() as tx:
        tx.insert_many(schema.tasks, rows)


def _all_pages(
    store: SqlStore, flt: str | None, max_results: int
) -> tuple[list[list[str]], list[str | None]]:
    pages: list[list[str]] = []
    tokens: list[str | None] = []
    token: str | None = None
    while True:
        q = ListQuery(filter=flt, max_results=max_results, skiptoken=token)
        with store.tx() as tx:
            items, token = page_rows(
                tx,
                schema.tasks,
                "key",
                schema.tasks.c.job_key == "job",
                q,
                odata.TASKS,
                _task_columns(),
                lambda r: dict(r["body"]),
            )
        pages.append([i["id"] for i in items])
        tokens.append(token)
        if token is None:
            return pages, tokens
        assert len(pages) < 50, "paging does not terminate"


def _ordinal(ids: list[str]) -> list[str]:
    return sorted(ids, key=key_of)


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (None, list(PAGED_IDS)),
        ("startswith(id,'a_')", ["A_1", "a_2", "A_10", "a__x"]),
        ("startswith(id,'A_1')", ["A_1", "A_10"]),
        ("state eq 'active'", [i for i, s in PAGED_IDS.items() if s == "active"]),
        ("startswith(id,'a_') and state eq 'active'", ["A_1", "A_10", "a__x"]),
        ("id eq 'ZETA'", ["Zeta"]),
        ("state eq 'active' and not startswith(id, 'a')", ["b_1"]),
    ],
)
@pytest.mark.parametrize("max_results", [1, 3, 1000])
def test_page_rows_filters_and_pages_in_ordinal_key_order(
    store: SqlStore, flt: str | None, expected: list[str], max_results: int
) -> None:
    _seed_paged(store)
    pages, tokens = _all_pages(store, flt, max_results)
    flat = [i for p in pages for i in p]
    assert flat == _ordinal(expected)
    assert all(len(p) <= max_results for p in pages)
    assert all(len(p) == max_results for p in pages[:-1])
    assert tokens[-1] is None
    for tok in tokens[:-1]:
        assert tok is not None and encode_token(decode_token(tok)) == tok


def test_page_rows_token_round_trip_is_stable_and_survives_writes(store: SqlStore) -> None:
    _seed_paged(store)
    cols = _task_columns()
    base = schema.tasks.c.job_key == "job"

    def page(token: str | None) -> tuple[list[str], str | None]:
        with store.tx() as tx:
            items, nxt = page_rows(
                tx,
                schema.tasks,
                "key",
                base,
                ListQuery(filter="state eq 'active'", max_results=2, skiptoken=token),
                odata.TASKS,
                cols,
                lambda r: dict(r["body"]),
            )
        return [i["id"] for i in items], nxt

    first, token = page(None)
    assert first == ["a-1", "a1"]
    assert token is not None and decode_token(token) == "a1"
    again, token_again = page(None)
    assert (again, token_again) == (first, token)
    second, token2 = page(token)
    assert second == ["A_1", "A_10"]
    assert page(token) == (second, token2)  # the same token gives the same page
    # rows inserted before the cursor do not shift later pages; rows after it appear in order
    with store.tx() as tx:
        tx.insert_many(
            schema.tasks,
            [
                task_row("job", "a0", seq=50, body={"id": "a0", "state": "active"}),
                task_row("job", "a_3", seq=51, body={"id": "a_3", "state": "active"}),
            ],
        )
    assert page(token)[0] == ["A_1", "A_10"]
    third, _ = page(token2)
    assert third == ["a_3", "a__x"]


def test_page_rows_residual_filter_is_evaluated_on_the_item(store: SqlStore) -> None:
    """Properties without a column stay in Python (`odata.evaluate`), and paging still fills pages."""
    t = schema.tasks
    rows = [
        task_row(
            "job",
            f"t{i:02d}",
            seq=i,
            state="completed",
            body={"id": f"t{i:02d}", "state": "completed", "executionInfo": {"exitCode": i % 3}},
        )
        for i in range(12)
    ]
    with store.tx() as tx:
        tx.insert_many(t, rows)
    got: list[str] = []
    token: str | None = None
    while True:
        with store.tx() as tx:
            items, token = page_rows(
                tx,
                t,
                "key",
                t.c.job_key == "job",
                ListQuery(
                    filter="executionInfo/exitCode eq 0 and state eq 'completed'",
                    max_results=2,
                    skiptoken=token,
                ),
                odata.TASKS,
                _task_columns(),
                lambda r: dict(r["body"]),
            )
        assert len(items) <= 2
        got += [i["id"] for i in items]
        if token is None:
            break
    assert got == [f"t{i:02d}" for i in range(12) if i % 3 == 0]
