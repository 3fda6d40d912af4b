"""Node-time accounting survives a SIGKILLed server: core time comes from the store (the node's allocation time
and the spans the usage pass records), not from memory, so the figures after a restart continue the ones
before, and a pool deleted later keeps its time in the account's lifetime totals."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential

from batchyard.models.decode import parse_duration
from tests.support.batch import create_pool, wait_idle_nodes
from tests.support.live import FileClock, LiveServer, wait_for
from tests.support.raw import Raw

pytestmark = pytest.mark.slow
CORES = 2  # standard_d2s_v3


def _client(srv: LiveServer) -> BatchClient:
    return BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))


def _core_hours(c: BatchClient, pool_id: str) -> float:
    st = c.get_pool(pool_id, expand=["stats"]).pool_statistics
    assert st is not None and st.usage_statistics is not None
    return st.usage_statistics.dedicated_core_time.total_seconds() / 3600


def _lifetime_hours(raw: Raw) -> float:
    body = raw.json("/lifetimepoolstats", api_version="2022-10-01.16.0")
    return parse_duration(body["usageStats"]["dedicatedCoreTime"]).total_seconds() / 3600


def test_core_time_continues_across_a_sigkill(tmp_path: Path) -> None:
    clock = FileClock(tmp_path / "clock")
    srv = LiveServer(tmp_path / "data", extra_args=["--fake-clock-file", str(clock.path)]).start()
    try:
        c = _client(srv)
        create_pool(c, "up", nodes=1)
        wait_idle_nodes(c, "up", 1)
        clock.advance(timedelta(hours=1))
        before = _core_hours(c, "up")
        assert CORES * 1.0 <= before <= CORES * 1.0 + 0.05, before
        srv.kill()
        clock.advance(
            timedelta(hours=1)
        )  # an hour passes while the server is down; the node's agent lives on
        srv.start()
        c = _client(srv)
        after = _core_hours(c, "up")
        assert CORES * 2.0 <= after <= CORES * 2.0 + 0.05, after
        raw = Raw(srv)
        c.begin_delete_pool("up", polling_interval=0.2).result()
        # the node's span is ended by the usage pass; the two hours stay in the account's totals
        wait_for(lambda: _lifetime_hours(raw) >= CORES * 2.0 or None, 30, 0.3, "lifetime core time")
        clock.advance(timedelta(hours=1))
        srv.kill()
        srv.start()
        raw = Raw(srv)
        total = _lifetime_hours(raw)
        # the clock ran three hours; only the two the node existed count, nothing after the pool went
        assert CORES * 2.0 <= total <= CORES * 2.0 + 0.05, total
    finally:
        srv.stop()
