"""OData `$filter`: parser, per-operation validation, evaluation on wire dicts, and SQL translation on SQLite.

The SQL cases run each filter both ways (SQLAlchemy Core against an in-memory table, and `evaluate` on the
equivalent wire dicts) and require the same ids, so the two execution paths cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, create_engine, select

from batchyard.models import odata
from batchyard.models.errors import BatchError
from batchyard.models.odata import (
    FILES,
    JOB_SCHEDULES,
    JOBS,
    JOBS_FROM_SCHEDULE,
    NODE_COUNTS,
    NODES,
    POOLS,
    PREP_RELEASE_STATUS,
    SUPPORTED_IMAGES,
    TASKS,
    And,
    Compare,
    DateTimeValue,
    Expr,
    FilterSpec,
    Not,
    Or,
    StartsWith,
    compile_filter,
    evaluate,
    parse_datetime,
    parse_filter,
    to_odata,
    validate,
)
from batchyard.store.odata_sql import ColumnMap, Columns, NotTranslatable, split_sql, to_sql

# --- parser ----------------------------------------------------------------------------------------------


def c(prop: str, op: odata.CompareOp, value: odata.Scalar) -> Compare:
    return Compare(prop, op, value)


def test_precedence_not_binds_tighter_than_and_tighter_than_or() -> None:
    assert parse_filter("a eq 1 or b eq 2 and not c eq 3") == Or(
        (c("a", "eq", 1), And((c("b", "eq", 2), Not(c("c", "eq", 3)))))
    )
    assert parse_filter("not a eq 1 and b eq 2") == And((Not(c("a", "eq", 1)), c("b", "eq", 2)))


def test_parentheses_override_precedence_and_chains_flatten() -> None:
    assert parse_filter("(a eq 1 or b eq 2) and c eq 3") == And(
        (Or((c("a", "eq", 1), c("b", "eq", 2))), c("c", "eq", 3))
    )
    assert parse_filter("a eq 1 and (b eq 2 and c eq 3) and d eq 4") == And(
        (c("a", "eq", 1), c("b", "eq", 2), c("c", "eq", 3), c("d", "eq", 4))
    )
    assert parse_filter("((a eq 1))") == c("a", "eq", 1)
    assert parse_filter("not (a eq 1 or b eq 2)") == Not(Or((c("a", "eq", 1), c("b", "eq", 2))))


def test_long_chains_are_flat_not_deep() -> None:
    expr = parse_filter(" or ".join(f"id eq 't{i}'" for i in range(2000)))
    assert isinstance(expr, Or) and len(expr.operands) == 2000
    assert evaluate(expr, {"id": "t1999"})


def test_string_escapes_and_all_literal_kinds() -> None:
    assert parse_filter("name eq 'it''s'") == c("name", "eq", "it's")
    assert parse_filter("name eq ''''") == c("name", "eq", "'")
    assert parse_filter("name eq ''") == c("name", "eq", "")
    assert parse_filter("executionInfo/exitCode ge -3") == c("executionInfo/exitCode", "ge", -3)
    assert parse_filter("enableAutoScale eq true") == c("enableAutoScale", "eq", True)
    assert parse_filter("x ne False") == c("x", "ne", False)
    assert parse_filter("x eq NULL") == c("x", "eq", None)
    assert parse_filter("enableAutoScale") == c("enableAutoScale", "eq", True)
    assert parse_filter("state eq'active'") == c("state", "eq", "active")


def test_keywords_are_case_insensitive_properties_keep_spelling() -> None:
    assert parse_filter("State EQ 'a' AND NOT Id Ne 'b' oR x Gt 1") == Or(
        (And((c("State", "eq", "a"), Not(c("Id", "ne", "b")))), c("x", "gt", 1))
    )
    assert parse_filter("StartsWith(id,'x')") == StartsWith("id", "x")


def test_datetime_literals_both_forms_and_full_precision() -> None:
    ref = DateTimeValue("2024-01-01T00:00:00.0000000Z")
    assert parse_filter("t gt datetime'2024-01-01T00:00:00Z'") == c("t", "gt", ref)
    assert parse_filter("t gt DateTime'2024-01-01T00:00:00Z'") == c("t", "gt", ref)
    assert parse_filter("t gt datetimeoffset'2024-01-01T01:00:00+01:00'") == c("t", "gt", ref)
    assert parse_filter("t gt 2024-01-01T00:00:00Z") == c("t", "gt", ref)
    assert parse_filter("t gt 2024-01-01") == c("t", "gt", ref)
    assert parse_filter("t eq 2024-01-01T00:00:00.1234567Z") == c(
        "t", "eq", DateTimeValue("2024-01-01T00:00:00.1234567Z")
    )
    # offsets are folded into UTC, crossing the date line
    assert parse_filter("t eq 2024-01-01T00:30:00-01:00") == c(
        "t", "eq", DateTimeValue("2024-01-01T01:30:00.0000000Z")
    )
    assert parse_filter("t eq 2024-01-01T00:30:00+01:00") == c(
        "t", "eq", DateTimeValue("2023-12-31T23:30:00.0000000Z")
    )


def test_parse_datetime_canonical_form() -> None:
    assert parse_datetime("2024-05-06T07:08:09.5Z") == DateTimeValue("2024-05-06T07:08:09.5000000Z")
    assert parse_datetime("2024-05-06T07:08:09.123456789Z") == DateTimeValue("2024-05-06T07:08:09.1234567Z")
    assert parse_datetime("2024-05-06T07:08:09") == DateTimeValue("2024-05-06T07:08:09.0000000Z")
    assert parse_datetime("2024-02-30T00:00:00Z") is None
    assert parse_datetime("yesterday") is None
    dt = DateTimeValue("2024-05-06T07:08:09.1234567Z").to_datetime()
    assert DateTimeValue.from_datetime(dt) == DateTimeValue("2024-05-06T07:08:09.1234560Z")


def test_startswith_forms() -> None:
    assert parse_filter("startswith(id,'batch_ade_')") == StartsWith("id", "batch_ade_")
    assert parse_filter("startswith( id , 'a' ) eq true") == StartsWith("id", "a")
    assert parse_filter("startswith(id,'a') eq false") == Not(StartsWith("id", "a"))
    assert parse_filter("startswith(id,'a') ne true") == Not(StartsWith("id", "a"))
    assert parse_filter("not startswith(id,'a') and state eq 'x'") == And(
        (Not(StartsWith("id", "a")), c("state", "eq", "x"))
    )


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("", 1, "the filter is empty"),
        ("   ", 1, "the filter is empty"),
        ("state eq", 9, "expected a literal value but found end of filter"),
        ("state = 'a'", 7, "unexpected character '='"),
        ("(state eq 'a'", 14, "expected ')'"),
        ("state eq 'a') ", 13, "expected 'and', 'or' or end of filter but found ')'"),
        ("state eq 'abc", 10, "unterminated string literal"),
        ("id startswith 'dev'", 4, "expected a comparison operator"),
        ("endswith(id,'x')", 1, "function 'endswith' is not supported"),
        ("startswith(id, 3)", 16, "expected a string literal"),
        ("startswith('x', id)", 12, "expected a property name"),
        ("x eq 1.5", 6, "only integer numeric literals"),
        ("x eq 99999999999999999999", 6, "out of range"),
        ("x eq active", 6, "expected a literal value but found 'active'"),
        ("x eq guid'00'", 6, "expected a literal value but found 'guid'"),
        ("x eq datetime'not a date'", 6, "invalid datetime literal"),
        ("x eq 2024-13-01T00:00:00Z", 6, "invalid datetime literal"),
        ("state eq 'a' and", 17, "expected a property name"),
        ("and eq 1", 1, "keyword 'and'"),
        ("state eq 'a' or or x eq 1", 17, "keyword 'or'"),
        ("startswith(id,'a') eq 1", 23, "expected true or false"),
        ("(" * 70 + "a eq 1" + ")" * 70, 65, "nested more than 64 levels"),
    ],
)
def test_syntax_errors_are_400_with_position(text: str, position: int, fragment: str) -> None:
    with pytest.raises(BatchError) as info:
        parse_filter(text)
    err = info.value
    assert (err.status, err.code) == (400, "InvalidQueryParameterValue")
    values = dict(err.values)
    assert values["QueryParameterName"] == "$filter"
    assert values["QueryParameterValue"] == text
    assert values["Reason"].startswith(f"Syntax error at position {position}: ")
    assert fragment in values["Reason"]


@pytest.mark.parametrize(
    "text",
    [
        "state eq 'active' and executionInfo/exitCode ne 0",
        "a eq 1 or b eq 2 and not c eq 3",
        "(a eq 1 or b eq 2) and not (c eq 'it''s' and d eq null)",
        "startswith(id,'ab_') or t ge datetime'2024-01-01T00:00:00.1234567Z'",
        "not startswith(name,'x') and flag eq false",
    ],
)
def test_to_odata_round_trips(text: str) -> None:
    expr = parse_filter(text)
    assert parse_filter(to_odata(expr)) == expr


# --- validation per spec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (POOLS, "startswith(id,'batch_ade_')"),
        (POOLS, "id eq 'azure-cli-test-paas'"),
        (POOLS, "state eq 'active' and allocationState eq 'steady' and enableAutoScale eq false"),
        (POOLS, "vmSize ne 'STANDARD_D2S_V3' or enableInterNodeCommunication"),
        (POOLS, "allocationStateTransitionTime lt 2024-01-01T00:00:00Z and creationTime ge 2023-01-01"),
        (
            JOBS,
            "executionInfo/poolId ge 'p' and startswith(executionInfo/poolId,'p') "
            "and lastModified le 2024-01-01",
        ),
        (JOBS_FROM_SCHEDULE, "state ne 'completed' and executionInfo/endTime eq null"),
        (JOB_SCHEDULES, "schedule/doNotRunUntil gt 2024-01-01 and schedule/doNotRunAfter lt 2025-01-01"),
        (TASKS, "executionInfo/exitCode ne 0 and state eq 'Completed'"),
        (TASKS, "executionInfo/result eq 'failure' or lastModifiedTime gt 2024-01-01"),
        (NODES, "startTaskInfo/state eq 'completed' and startTaskInfo/exitCode lt 0 and state ne 'idle'"),
        (NODE_COUNTS, "poolId eq 'p1'"),
        (FILES, "startswith(name,'wd/')"),
        (
            SUPPORTED_IMAGES,
            "osType eq 'linux' and verificationType ne 'unverified' and nodeAgentSKUId eq 'x'",
        ),
        (
            PREP_RELEASE_STATUS,
            "jobPreparationTaskExecutionInfo/exitCode ne 0 "
            "or jobReleaseTaskExecutionInfo/result eq 'failure'",
        ),
        (PREP_RELEASE_STATUS, "nodeId eq 'tvmps_1' and poolId ne 'p'"),
    ],
)
def test_documented_filters_validate(spec: FilterSpec, text: str) -> None:
    validate(parse_filter(text), spec)
    compile_filter(text, spec)


@pytest.mark.parametrize(
    ("spec", "text", "fragment"),
    [
        (
            POOLS,
            "displayName eq 'x'",
            "Property 'displayName' is not supported in a filter for the List pools",
        ),
        (JOBS_FROM_SCHEDULE, "id eq 'x'", "Property 'id' is not supported"),  # not in the documented table
        (POOLS, "state gt 'active'", "Operator 'gt' is not supported for property 'state'; allowed: eq, ne"),
        (
            POOLS,
            "allocationState ne 'steady'",
            "Operator 'ne' is not supported for property 'allocationState'",
        ),
        (NODES, "startTaskInfo/state ne 'running'", "allowed: eq"),
        (NODE_COUNTS, "poolId ne 'p'", "Operator 'ne' is not supported for property 'poolId'"),
        (FILES, "name eq 'stdout.txt'", "allowed: startswith"),
        (TASKS, "startswith(state,'a')", "Function 'startswith' is not supported for property 'state'"),
        (TASKS, "executionInfo/exitCode eq '1'", "must be compared with an integer value, not a string"),
        (TASKS, "creationTime gt 5", "must be compared with a datetime value, not an integer"),
        (TASKS, "creationTime gt 'soon'", "must be compared with a datetime value, not a string"),
        (TASKS, "id eq 5", "must be compared with a string value, not an integer"),
        (TASKS, "state eq true", "must be compared with a string value, not a boolean"),
        (POOLS, "enableAutoScale eq 'true'", "must be compared with a boolean (true or false) value"),
        (POOLS, "state", "must be compared with a string value, not a boolean"),
        (TASKS, "id lt null", "Operator 'lt' cannot be used with null"),
        (TASKS, "state eq 'active' and not (foo/bar eq 1)", "Property 'foo/bar' is not supported"),
    ],
)
def test_unsupported_filters_are_400_invalid_query_parameter(
    spec: FilterSpec, text: str, fragment: str
) -> None:
    with pytest.raises(BatchError) as info:
        compile_filter(text, spec)
    err = info.value
    assert (err.status, err.code) == (400, "InvalidQueryParameterValue")
    values = dict(err.values)
    assert values["QueryParameterName"] == "$filter"
    assert values["QueryParameterValue"] == text
    assert fragment in values["Reason"]


def test_validate_without_source_echoes_rendered_filter() -> None:
    with pytest.raises(BatchError) as info:
        validate(parse_filter("Foo  eq   1"), POOLS)
    assert dict(info.value.values)["QueryParameterValue"] == "Foo eq 1"


def test_bind_normalises_names_literals_and_case_folding() -> None:
    expr = compile_filter(
        "STATE eq 'Active' and ID ge 'AB' and startswith(Id,'AB_') "
        "and lastModifiedTime gt '2024-01-01T01:00:00+01:00'",
        TASKS,
    )
    assert expr == And(
        (
            Compare("state", "eq", "active", casefold=True),
            Compare("id", "ge", "ab", casefold=True),
            StartsWith("id", "ab_", casefold=True),
            Compare("lastModified", "gt", DateTimeValue("2024-01-01T00:00:00.0000000Z")),
        )
    )
    # file names are case-sensitive: the prefix is kept as written
    assert compile_filter("startswith(name,'Std')", FILES) == StartsWith("name", "Std")


def test_spec_tables_are_consistent() -> None:
    specs = [
        POOLS,
        JOBS,
        JOB_SCHEDULES,
        TASKS,
        NODES,
        FILES,
        NODE_COUNTS,
        SUPPORTED_IMAGES,
        JOBS_FROM_SCHEDULE,
    ]
    for spec in [*specs, PREP_RELEASE_STATUS, odata.CERTIFICATES]:
        assert spec.props
        for name, ps in spec.props.items():
            assert ps.ops <= odata.ALL_OPS
            assert ps.ops or ps.startswith, name
            assert not ps.startswith or ps.kind == "string", name
            assert spec.lookup(name.upper()) == (name, ps)
            if ps.kind == "enum":
                assert ps.folds
    assert TASKS.props["lastModifiedTime"].wire == "lastModified"


# --- evaluate on wire dicts ------------------------------------------------------------------------------

TASK_ITEMS: list[dict[str, Any]] = [
    {"id": "ab_1", "state": "active", "creationTime": "2024-01-01T00:00:00Z"},
    {
        "id": "AB_2",
        "state": "active",
        "creationTime": "2024-01-02T00:00:00Z",
        "executionInfo": {"exitCode": 1},
    },
    {
        "id": "abX3",
        "state": "completed",
        "creationTime": "2024-01-02T00:00:00.0000001Z",
        "executionInfo": {"exitCode": 0},
    },
    {
        "id": "ab%4",
        "state": "completed",
        "creationTime": "2024-01-03T12:00:00.5Z",
        "executionInfo": {"exitCode": 2},
    },
    {
        "id": "zz5",
        "state": "active",
        "creationTime": "2024-01-04T00:00:00.0000000Z",
        "executionInfo": {"exitCode": 0},
    },
    {
        "id": "zz6",
        "state": "running",
        "creationTime": "2024-01-05T00:00:00Z",
        "executionInfo": {"exitCode": 3},
    },
]


def matching(text: str, spec: FilterSpec, items: list[dict[str, Any]]) -> set[str]:
    expr = compile_filter(text, spec)
    return {str(i.get("id", i.get("name"))) for i in items if evaluate(expr, i)}


def test_evaluate_missing_property_compares_false_for_every_operator() -> None:
    item: dict[str, Any] = {"id": "t", "state": "active"}
    ops: tuple[odata.CompareOp, ...] = ("eq", "ne", "gt", "ge", "lt", "le")
    for op in ops:
        assert not evaluate(Compare("executionInfo/exitCode", op, 0), item)
    assert not evaluate(StartsWith("executionInfo/poolId", "p"), item)
    assert evaluate(Not(Compare("executionInfo/exitCode", "ne", 0)), item)
    assert evaluate(Compare("executionInfo/exitCode", "eq", None), item)
    assert evaluate(Compare("executionInfo/exitCode", "eq", None), {"executionInfo": {"exitCode": None}})
    assert not evaluate(Compare("executionInfo/exitCode", "ne", None), item)
    assert evaluate(Compare("executionInfo/exitCode", "ne", None), {"executionInfo": {"exitCode": 0}})


def test_evaluate_type_mismatch_is_false() -> None:
    assert not evaluate(Compare("x", "eq", 1), {"x": "1"})
    assert not evaluate(Compare("x", "eq", 1), {"x": True})
    assert not evaluate(Compare("x", "eq", True), {"x": 1})
    assert not evaluate(Compare("x", "eq", "a"), {"x": {"nested": "a"}})
    assert not evaluate(Compare("t", "gt", DateTimeValue("2024-01-01T00:00:00.0000000Z")), {"t": "garbage"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("state eq 'active' and executionInfo/exitCode ne 0", {"AB_2"}),
        ("state eq 'ACTIVE' and not (executionInfo/exitCode ne 0)", {"ab_1", "zz5"}),
        ("id eq 'Ab_1' or id eq 'ZZ6'", {"ab_1", "zz6"}),
        ("startswith(id,'AB_')", {"ab_1", "AB_2"}),
        ("creationTime gt 2024-01-02T00:00:00Z", {"abX3", "ab%4", "zz5", "zz6"}),
        ("creationTime eq datetime'2024-01-03T12:00:00.5000000Z'", {"ab%4"}),
        ("creationTime le '2024-01-02T01:00:00+01:00'", {"ab_1", "AB_2"}),
    ],
)
def test_evaluate_tasks(text: str, expected: set[str]) -> None:
    assert matching(text, TASKS, TASK_ITEMS) == expected


def test_evaluate_other_operations() -> None:
    pools: list[dict[str, Any]] = [
        {"id": "p1", "state": "active", "enableAutoScale": True, "vmSize": "standard_d2s_v3"},
        {"id": "p2", "state": "deleting", "enableAutoScale": False, "vmSize": "standard_a1"},
    ]
    assert matching("enableAutoScale", POOLS, pools) == {"p1"}
    assert matching("enableAutoScale eq false or vmSize eq 'STANDARD_D2s_v3'", POOLS, pools) == {"p1", "p2"}
    assert matching("state ne 'Active'", POOLS, pools) == {"p2"}
    nodes: list[dict[str, Any]] = [
        {
            "id": "n1",
            "state": "idle",
            "startTaskInfo": {"state": "completed", "exitCode": 0, "result": "success"},
        },
        {"id": "n2", "state": "starttaskfailed", "startTaskInfo": {"state": "completed", "exitCode": 1}},
        {"id": "n3", "state": "starting"},
    ]
    assert matching("startTaskInfo/exitCode ne 0", NODES, nodes) == {"n2"}
    assert matching("startTaskInfo/result eq 'Success'", NODES, nodes) == {"n1"}
    assert matching("state eq 'StartTaskFailed' or startTaskInfo/state eq null", NODES, nodes) == {"n2", "n3"}
    files: list[dict[str, Any]] = [{"name": n} for n in ("stdout.txt", "STDOUT.txt", "std_x", "wd/sub/a.txt")]
    assert matching("startswith(name,'std')", FILES, files) == {"stdout.txt", "std_x"}
    prep: list[dict[str, Any]] = [
        {
            "nodeId": "tvmps_a",
            "poolId": "P1",
            "jobPreparationTaskExecutionInfo": {"state": "completed", "exitCode": 7},
        },
        {"nodeId": "tvmps_b", "poolId": "p2", "jobPreparationTaskExecutionInfo": {"state": "running"}},
    ]
    expr = compile_filter(
        "poolId eq 'p1' and jobPreparationTaskExecutionInfo/exitCode gt 0", PREP_RELEASE_STATUS
    )
    assert [p["nodeId"] for p in prep if evaluate(expr, p)] == ["tvmps_a"]


# --- SQL translation on SQLite ---------------------------------------------------------------------------

metadata = MetaData()
tasks_table = Table(
    "tasks",
    metadata,
    Column("id_lc", String, primary_key=True),  # lowercased key: Batch ids are case-insensitive
    Column("id", String, nullable=False),
    Column("state", String, nullable=False),
    Column("exit_code", Integer, nullable=True),
    Column("creation_time", String, nullable=False),  # canonical 7-digit ISO
)
files_table = Table("files", metadata, Column("name", String, primary_key=True))

TASK_COLUMNS: Columns = {
    "id": ColumnMap(tasks_table.c.id_lc, casefold=True),
    "state": ColumnMap(tasks_table.c.state, casefold=True),
    "executionInfo/exitCode": tasks_table.c.exit_code,
    "creationTime": tasks_table.c.creation_time,
}
FILE_NAMES = [
    "stdout.txt",
    "stderr.txt",
    "STDOUT.txt",
    "std_x",
    "stdXx",
    "wd/sub/a.txt",
    "wd/sub2/b.txt",
    "wd%1",
]


@pytest.fixture(scope="module")
def conn() -> Iterator[Connection]:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as connection:
        for item in TASK_ITEMS:
            created = parse_datetime(item["creationTime"])
            assert created is not None
            connection.execute(
                tasks_table.insert().values(
                    id_lc=item["id"].lower(),
                    id=item["id"],
                    state=item["state"],
                    exit_code=item.get("executionInfo", {}).get("exitCode"),
                    creation_time=created.iso,
                )
            )
        connection.execute(files_table.insert(), [{"name": n} for n in FILE_NAMES])
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def sql_ids(conn: Connection, where: Any) -> set[str]:
    return set(conn.execute(select(tasks_table.c.id).where(where)).scalars())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("startswith(id,'ab_')", {"ab_1", "AB_2"}),  # '_' is literal, not a LIKE wildcard
        ("startswith(id,'AB%')", {"ab%4"}),  # '%' likewise
        ("startswith(id,'ab')", {"ab_1", "AB_2", "abX3", "ab%4"}),
        ("startswith(id,'')", {i["id"] for i in TASK_ITEMS}),
        ("not startswith(id,'ab')", {"zz5", "zz6"}),
        ("startswith(id,'ab') eq false and state ne 'running'", {"zz5"}),
        ("state eq 'active' and executionInfo/exitCode ne 0", {"AB_2"}),
        ("state eq 'Active' and not (executionInfo/exitCode ne 0)", {"ab_1", "zz5"}),
        ("not (state eq 'active' or executionInfo/exitCode gt 2)", {"abX3", "ab%4"}),
        ("executionInfo/exitCode eq null", {"ab_1"}),
        ("executionInfo/exitCode ne null and executionInfo/exitCode ge 2", {"ab%4", "zz6"}),
        (
            "creationTime ge datetime'2024-01-02T00:00:00Z' and creationTime lt 2024-01-03T00:00:00Z",
            {"AB_2", "abX3"},
        ),
        ("creationTime gt 2024-01-02T00:00:00Z", {"abX3", "ab%4", "zz5", "zz6"}),  # 100 ns matters
        ("creationTime eq '2024-01-03T13:00:00.5+01:00'", {"ab%4"}),
        ("id eq 'ZZ5' or id eq 'zz6'", {"zz5", "zz6"}),
        ("id gt 'AB_1' and id lt 'abz'", {"AB_2", "abX3"}),
    ],
)
def test_to_sql_matches_evaluate(conn: Connection, text: str, expected: set[str]) -> None:
    expr = compile_filter(text, TASKS)
    assert sql_ids(conn, to_sql(expr, TASK_COLUMNS)) == expected
    assert {i["id"] for i in TASK_ITEMS if evaluate(expr, i)} == expected


def test_casefold_node_on_plain_column_uses_lower(conn: Connection) -> None:
    expr = compile_filter("id eq 'ZZ5' or startswith(id,'AB_')", TASKS)
    assert sql_ids(conn, to_sql(expr, {"id": tasks_table.c.id})) == {"zz5", "ab_1", "AB_2"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "startswith(name,'std')",
            {"stdout.txt", "stderr.txt", "std_x", "stdXx"},
        ),  # SQLite LIKE ignores case
        ("startswith(name,'STD')", {"STDOUT.txt"}),
        ("startswith(name,'std_')", {"std_x"}),
        ("startswith(name,'wd/sub/')", {"wd/sub/a.txt"}),
        ("startswith(name,'wd%')", {"wd%1"}),
    ],
)
def test_startswith_is_case_sensitive_on_plain_columns(
    conn: Connection, text: str, expected: set[str]
) -> None:
    expr = compile_filter(text, FILES)
    got = set(
        conn.execute(select(files_table.c.name).where(to_sql(expr, {"name": files_table.c.name}))).scalars()
    )
    assert got == expected
    assert {n for n in FILE_NAMES if evaluate(expr, {"name": n})} == expected


def _plan(conn: Connection, stmt: Any) -> str:
    compiled = stmt.compile(conn)
    params = tuple(compiled.params[k] for k in compiled.positiontup)
    rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params).fetchall()
    return " | ".join(str(r[-1]) for r in rows)


def test_prefix_match_uses_the_index(conn: Connection) -> None:
    task_where = to_sql(compile_filter("startswith(id,'AB_')", TASKS), TASK_COLUMNS)
    plan = _plan(conn, select(tasks_table.c.id).where(task_where))
    assert "SEARCH" in plan and "INDEX" in plan, plan
    file_where = to_sql(compile_filter("startswith(name,'wd/')", FILES), {"name": files_table.c.name})
    plan = _plan(conn, select(files_table.c.name).where(file_where))
    assert "SEARCH" in plan and "INDEX" in plan, plan


def test_like_pattern_is_escaped_for_postgres_too() -> None:
    where = to_sql(StartsWith("name", "a_b%c\\"), {"name": files_table.c.name})
    compiled = where.compile(
        dialect=create_engine("postgresql+psycopg://u@localhost/db").dialect
    )  # no connect
    sql = str(compiled)
    assert "LIKE" in sql and "ESCAPE" in sql
    assert "a\\_b\\%c\\\\%" in compiled.params.values()


def test_prefix_upper_bound_edges() -> None:
    from batchyard.store.odata_sql import _prefix_upper

    assert _prefix_upper("ab") == "ac"
    assert _prefix_upper("a\U0010ffff") == "b"
    assert _prefix_upper("\ud7ff") == "\ue000"
    assert _prefix_upper("\U0010ffff") is None


def test_to_sql_rejects_unmapped_property() -> None:
    with pytest.raises(NotTranslatable):
        to_sql(compile_filter("state eq 'active' and executionInfo/result eq 'failure'", TASKS), TASK_COLUMNS)


def test_split_sql_pushes_indexed_conjuncts_and_keeps_the_rest(conn: Connection) -> None:
    columns: Columns = {k: v for k, v in TASK_COLUMNS.items() if k != "executionInfo/exitCode"}
    expr = compile_filter("state eq 'active' and executionInfo/exitCode ne 0 and startswith(id,'ab')", TASKS)
    where, residual = split_sql(expr, columns)
    assert where is not None
    assert residual == Compare("executionInfo/exitCode", "ne", 0)
    narrowed = sql_ids(conn, where)
    assert narrowed == {"ab_1", "AB_2"}
    by_id = {i["id"]: i for i in TASK_ITEMS}
    assert {i for i in narrowed if evaluate(residual, by_id[i])} == {"AB_2"}


def test_split_sql_edges() -> None:
    columns: Columns = {"state": ColumnMap(tasks_table.c.state, casefold=True)}
    mixed_or = compile_filter("state eq 'active' or executionInfo/exitCode eq 0", TASKS)
    assert split_sql(mixed_or, columns) == (None, mixed_or)
    where, residual = split_sql(compile_filter("state eq 'active'", TASKS), columns)
    assert where is not None and residual is None
    two_left: Expr = compile_filter("state eq 'active' and id eq 'a' and executionInfo/exitCode eq 0", TASKS)
    where, residual = split_sql(two_left, columns)
    assert where is not None
    assert residual == And(
        (Compare("id", "eq", "a", casefold=True), Compare("executionInfo/exitCode", "eq", 0))
    )


# --- fuzz: any text is a filter or a Batch error, never another exception ---------------------------------

_SPECS = (POOLS, JOBS, TASKS, NODES, FILES, NODE_COUNTS, SUPPORTED_IMAGES, JOB_SCHEDULES, PREP_RELEASE_STATUS)
_FILTER_WORDS = st.sampled_from(
    [
        "id",
        "state",
        "eq",
        "ne",
        "lt",
        "ge",
        "and",
        "or",
        "not",
        "true",
        "false",
        "null",
        "(",
        ")",
        ",",
        "'",
        "''",
        "'é☃'",
        "startswith",
        "datetime'",
        "2024-01-01T00:00:00Z",
        "-",
        "12",
        "²",
        "٣",
        "é",
        "executionInfo/exitCode",
        "NaN",
        " ",
        "\t",
        "\x00",
        "\u2028",
    ]
)
_FILTER_TEXT = st.one_of(st.text(max_size=60), st.lists(_FILTER_WORDS, max_size=12).map(" ".join))


def _batch_error_or_expr(text: str, spec: FilterSpec) -> Expr | None:
    try:
        return compile_filter(text, spec)
    except BatchError as e:
        assert e.status == 400 and e.code == "InvalidQueryParameterValue", e
        assert ("QueryParameterName", "$filter") in e.values
        return None


@pytest.mark.parametrize(
    "text", ["false ' NaN lt 'é☃' ne", "é", "id eq é", "²", "id eq ٣", "id eq 1²", "ⅷ", "id eq '٣' and é"]
)
def test_non_ascii_outside_strings_is_a_syntax_error(text: str) -> None:
    for spec in _SPECS:
        assert _batch_error_or_expr(text, spec) is None


def test_non_ascii_inside_a_string_literal_is_fine() -> None:
    assert compile_filter("id eq 'é☃'", JOBS) == Compare("id", "eq", "é☃", casefold=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_FILTER_TEXT, spec=st.sampled_from(_SPECS))
def test_fuzz_any_text_parses_or_is_a_batch_error(text: str, spec: FilterSpec) -> None:
    expr = _batch_error_or_expr(text, spec)
    try:
        parsed = parse_filter(text)
    except BatchError:
        assert expr is None
        return
    assert parse_filter(to_odata(parsed)) == parsed  # what parses renders back to the same filter
    if expr is not None:
        evaluate(expr, {})  # a bound filter evaluates on any item
