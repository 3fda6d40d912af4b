"""Pool statistics and usage through the official SDK: `$expand=stats` on pool reads (usage and resource figures
the nodes' agents really measured), `GET /poolusagemetrics` (half-hour intervals, driven by the fake clock) and
`GET /lifetimepoolstats` of the older api-versions. Shapes: reference semantics/node-lifecycle.md §10."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential

from tests.support.batch import create_pool, wait_idle_nodes, wait_tasks_done
from tests.support.live import FileClock as Clock
from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error

OLD = "2022-10-01.16.0"
CORES = 2  # standard_d2s_v3


@pytest.fixture(scope="module")
def clock(tmp_path_factory: pytest.TempPathFactory) -> Clock:
    return Clock(tmp_path_factory.mktemp("clock") / "offset")


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, clock: Clock, monkeypatch_module: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    monkeypatch_module.setenv("BATCHYARD_STATS_INTERVAL", "0.3")  # agents sample often (default 10 s)
    s = LiveServer(tmp_path_factory.mktemp("srv"), extra_args=["--fake-clock-file", str(clock.path)]).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def c(srv: LiveServer) -> BatchClient:
    return BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))


@pytest.fixture(scope="module")
def raw(srv: LiveServer) -> Raw:
    return Raw(srv)


BURN = (
    "/bin/sh -c 'head -c 40000000 /dev/urandom > big.bin; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done'"
)


def test_expand_stats_reports_what_the_nodes_used(c: BatchClient, clock: Clock) -> None:
    create_pool(c, "stp", nodes=1)
    wait_idle_nodes(c, "stp", 1)
    plain = c.get_pool("stp")
    assert plain.pool_statistics is None  # only with $expand=stats
    c.create_job(m.BatchJobCreateOptions(id="stj", pool_info=m.BatchPoolInfo(pool_id="stp")))
    c.create_tasks("stj", [m.BatchTaskCreateOptions(id="burn", command_line=BURN)])
    wait_tasks_done(c, "stj", 1, timeout=120)
    clock.advance(timedelta(minutes=10))  # ten minutes of one node's two cores

    def measured() -> m.BatchPoolStatistics | None:
        st = c.get_pool("stp", expand=["stats"]).pool_statistics
        assert st is not None and st.resource_statistics is not None and st.usage_statistics is not None
        rs = st.resource_statistics
        if rs.avg_cpu_percentage > 0 and rs.peak_disk_gib >= 0.03 and rs.disk_write_gib >= 0.03:
            return st
        return None

    st = wait_for(measured, 60, 0.3, "resource figures of the burn task")
    assert st.usage_statistics is not None and st.resource_statistics is not None
    core_time = st.usage_statistics.dedicated_core_time
    assert timedelta(minutes=10 * CORES) <= core_time <= timedelta(minutes=10 * CORES + 10), core_time
    rs = st.resource_statistics
    assert 0 < rs.avg_cpu_percentage <= 100
    assert 0 < rs.avg_memory_gib <= rs.peak_memory_gib < 64
    assert rs.peak_disk_gib >= 0.03  # the 40 MB file in the task's directory
    assert st.start_time == plain.creation_time and st.url.endswith("/pools/stp")
    listed = [p for p in c.list_pools(expand=["stats"]) if p.id == "stp"]
    assert listed[0].pool_statistics is not None and listed[0].pool_statistics.usage_statistics is not None


def test_usage_metrics_per_half_hour(c: BatchClient, clock: Clock, srv: LiveServer) -> None:
    create_pool(c, "ump", nodes=1)
    wait_idle_nodes(c, "ump", 1)
    created = c.get_pool("ump").creation_time
    assert created is not None
    clock.advance(timedelta(hours=2))
    start, end = created - timedelta(hours=1), created + timedelta(hours=3)
    rows = [u for u in c.list_pool_usage_metrics(start_time=start, end_time=end) if u.pool_id == "ump"]
    assert rows, "usage intervals of the pool"
    for u in rows:
        assert u.end_time - u.start_time == timedelta(minutes=30)
        assert u.start_time.minute in (0, 30) and u.start_time.second == 0
        assert u.vm_size == "standard_d2s_v3"
        assert 0 < u.total_core_hours <= 0.5 * CORES + 1e-9
    total = sum(u.total_core_hours for u in rows)
    # the node has been there ~2 hours of the fake clock; the newest, unfinished interval is not reported yet
    assert 2 * CORES - 0.5 * CORES - 0.1 <= total <= 2 * CORES + 0.1, total
    filtered = list(c.list_pool_usage_metrics(start_time=start, end_time=end, filter="poolId eq 'ump'"))
    assert {u.pool_id for u in filtered} == {"ump"} and len(filtered) == len(rows)
    paged = list(
        c.list_pool_usage_metrics(start_time=start, end_time=end, filter="poolId eq 'ump'", max_results=1)
    )
    assert len(paged) == len(rows)  # one per page, the SDK follows odata.nextLink
    # no window: only the last interval that has ended
    last = list(c.list_pool_usage_metrics(filter="poolId eq 'ump'"))
    assert len(last) == 1 and last[0].end_time == max(u.end_time for u in rows)


def test_lifetime_pool_stats_keep_deleted_pools(
    c: BatchClient, raw: Raw, clock: Clock, srv: LiveServer
) -> None:
    before: dict[str, Any] = raw.json("/lifetimepoolstats", api_version=OLD)
    assert before["url"] == f"{srv.endpoint}/lifetimepoolstats"
    assert set(before) >= {"url", "startTime", "lastUpdateTime", "usageStats", "resourceStats"}
    create_pool(c, "lfp", nodes=1)
    wait_idle_nodes(c, "lfp", 1)
    clock.advance(timedelta(minutes=30))
    c.begin_delete_pool("lfp", polling_interval=0.2).result()

    # the usage pass ends the gone node's span within a few seconds; its half hour stays in the totals
    def grew() -> dict[str, Any] | None:
        after: dict[str, Any] = raw.json("/lifetimepoolstats", api_version=OLD)
        d0 = _hours(before["usageStats"]["dedicatedCoreTime"])
        d1 = _hours(after["usageStats"]["dedicatedCoreTime"])
        return after if d1 - d0 >= 0.5 * CORES else None

    after = wait_for(grew, 30, 0.3, "the deleted pool's core time in the lifetime totals")
    assert after["startTime"] == before["startTime"]
    again: dict[str, Any] = raw.json("/lifetimepoolstats", api_version=OLD)
    assert _hours(again["usageStats"]["dedicatedCoreTime"]) >= _hours(
        after["usageStats"]["dedicatedCoreTime"]
    )


def _hours(iso: str) -> float:
    from batchyard.models.decode import parse_duration

    return parse_duration(iso).total_seconds() / 3600


@pytest.mark.parametrize(
    ("query", "code", "name"),
    [
        ({"starttime": "yesterday"}, "InvalidQueryParameterValue", "starttime"),
        ({"endtime": "2020-13-01T00:00:00Z"}, "InvalidQueryParameterValue", "endtime"),
        ({"$filter": "poolId eq"}, "InvalidQueryParameterValue", "$filter"),
        ({"$filter": "state eq 'active'"}, "InvalidQueryParameterValue", "$filter"),
        ({"maxresults": "0"}, "OutOfRangeQueryParameterValue", "maxresults"),
        ({"$skiptoken": "!!"}, "InvalidQueryParameterValue", "$skiptoken"),
    ],
)
def test_usage_metrics_bad_queries(raw: Raw, query: dict[str, str], code: str, name: str) -> None:
    r = raw.get("/poolusagemetrics", params=query)
    assert_error(r, 400, code, QueryParameterName=name)


def test_expand_and_lifetime_bad_input(raw: Raw) -> None:
    assert_error(raw.get("/pools/stp", params={"$expand": "nodes"}), 400, "InvalidQueryParameterValue")
    assert_error(raw.get("/pools", params={"$expand": "stats,bogus"}), 400, "InvalidQueryParameterValue")
    assert_error(raw.get("/lifetimepoolstats", api_version="2024-07-01.20.0"), 400, "InvalidUri")
    assert_error(raw.post("/poolusagemetrics", {}), 405, "UnsupportedHttpVerb")
