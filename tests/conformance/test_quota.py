"""Account core quotas bound pools as on Azure: the pool is created, grows to the quota, and says why it
stopped in `resizeErrors`; the API keeps answering while a pool grows; a restart carries on correctly."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential

from tests.support.batch import IMAGE, SKU, wait_idle_nodes
from tests.support.live import LiveServer, kill_agents, wait_for
from tests.support.raw import Raw, pool_body

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quota_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(
        tmp_path_factory.mktemp("quota"),
        extra_args=["--dedicated-core-quota", "4", "--low-priority-core-quota", "3"],
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


def _client(srv: LiveServer) -> BatchClient:
    return BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))


def _steady(c: BatchClient, pool_id: str, timeout: float = 60) -> m.BatchPool:
    return wait_for(
        lambda: (p := c.get_pool(pool_id)).allocation_state == "steady" and p,
        timeout,
        0.1,
        f"{pool_id} steady",
    )


def _pool(pool_id: str, vm_size: str, dedicated: int = 0, low: int = 0) -> m.BatchPoolCreateOptions:
    return m.BatchPoolCreateOptions(
        id=pool_id,
        vm_size=vm_size,
        virtual_machine_configuration=m.VirtualMachineConfiguration(
            image_reference=IMAGE, node_agent_sku_id=SKU
        ),
        target_dedicated_nodes=dedicated,
        target_low_priority_nodes=low,
    )


def test_a_huge_target_stops_at_the_core_quota(quota_live: LiveServer) -> None:
    c = _client(quota_live)
    raw = Raw(quota_live)
    t0 = time.monotonic()
    resp = raw.post("/pools", pool_body("huge", 1_000_000_000))
    assert resp.status_code == 201
    assert time.monotonic() - t0 < 2
    pool = _steady(c, "huge")
    # standard_d2s_v3 has 2 cores: 2 nodes fit in 4 dedicated cores
    assert pool.target_dedicated_nodes == 1_000_000_000
    assert pool.current_dedicated_nodes == 2
    (err,) = pool.resize_errors
    assert err.code == "AccountCoreQuotaReached"
    assert "dedicated core quota" in err.message
    assert {v.name: v.value for v in err.error_values}["CoreQuota"] == "4"
    wait_idle_nodes(c, "huge", 2)

    # the quota is the account's: another dedicated pool gets no node at all
    c.create_pool(_pool("more", "standard_a1", dedicated=1))
    more = _steady(c, "more")
    assert more.current_dedicated_nodes == 0
    assert [e.code for e in more.resize_errors] == ["AccountCoreQuotaReached"]

    # a resize within the quota replaces the errors of the last one
    c.begin_resize_pool(
        "huge", m.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=0.2
    ).result()
    pool = _steady(c, "huge")
    assert pool.current_dedicated_nodes == 1 and not pool.resize_errors
    c.begin_resize_pool(
        "more", m.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=0.2
    ).result()
    more = _steady(c, "more")
    assert more.current_dedicated_nodes == 1 and not more.resize_errors
    for p in ("huge", "more"):
        c.begin_delete_pool(p, polling_interval=0.2)


def test_low_priority_nodes_have_their_own_quota(quota_live: LiveServer) -> None:
    c = _client(quota_live)
    c.create_pool(_pool("spot", "standard_a1", low=5))
    pool = _steady(c, "spot")
    assert pool.current_low_priority_nodes == 3 and pool.current_dedicated_nodes == 0
    (err,) = pool.resize_errors
    assert err.code == "AccountLowPriorityCoreQuotaReached"
    c.begin_delete_pool("spot", polling_interval=0.2)


def test_growth_is_paced_and_survives_a_restart(tmp_path: Path) -> None:
    """Agents are started a few at a time, off the event loop; a server killed mid-growth finishes the
    job after a restart with exactly the target number of nodes, each with one agent."""
    data = tmp_path / "data"
    srv = LiveServer(data).start()
    try:
        c = _client(srv)
        raw = Raw(srv)
        assert raw.post("/pools", pool_body("grow", 12)).status_code == 201
        worst = 0.0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            n = len(raw.json("/pools/grow/nodes")["value"])
            worst = max(worst, time.monotonic() - t0)
            if n >= 8:
                break
        assert worst < 1.0, worst
        srv.kill(signal.SIGKILL)
        srv = LiveServer(data, port=srv.port).start()
        c = _client(srv)
        nodes = wait_idle_nodes(c, "grow", 12, timeout=120)
        assert len({n.id for n in nodes}) == 12
        pool = _steady(c, "grow")
        assert pool.current_dedicated_nodes == 12 and not pool.resize_errors
        # one agent per node: an agent started just before the kill and never recorded is replaced and stops
        ids = sorted(n.id for n in nodes)
        wait_for(lambda: sorted(_agent_nodes(data)) == ids, 30, what="one agent per node")
    finally:
        srv.stop()
        kill_agents(data)


def _agent_nodes(data_dir: Path) -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"batchyard.agent.main" in cmd and any(str(data_dir).encode() in x for x in cmd) and state != "Z":
            out.append(cmd[cmd.index(b"--node-id") + 1].decode())
    return out
