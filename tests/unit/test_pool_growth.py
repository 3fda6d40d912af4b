"""The pool manager's growth passes against a real SQLite store and a provider that starts nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from batchyard.pools.local import LocalProvider
from batchyard.pools.manager import PoolManager
from batchyard.pools.quota import Quotas
from batchyard.service import pools
from batchyard.service.context import Ctx
from batchyard.store import schema
from batchyard.store.sql import SqlStore
from tests.support.raw import pool_body


class NoProcesses(LocalProvider):
    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:1", "acct")
        self.spawned: list[str] = []

    def spawn(
        self, node_id: str, token: str, pool_id: str, root: Path, dedicated: bool, user_accounts: object = ()
    ) -> int:
        self.spawned.append(node_id)
        return 10_000_000 + len(self.spawned)  # never a real pid


def _manager(tmp_path: Path, quota: int = 500, batch: int = 2) -> tuple[Ctx, PoolManager, NoProcesses]:
    async def make() -> Ctx:  # the hub's events want a running loop
        return Ctx(store=store, data_dir=tmp_path, account="acct")

    store = SqlStore.for_data_dir(tmp_path)
    store.migrate()
    ctx = asyncio.run(make())
    prov = NoProcesses()
    return ctx, PoolManager(ctx, prov, quotas=Quotas(quota, 10), spawn_batch=batch), prov


def _pass(m: PoolManager) -> int:
    spawns = m.reconcile()
    m._record_spawns(m._spawn_all(spawns))
    return len(spawns)


def _state(ctx: Ctx, pool_id: str) -> tuple[str, int, list[str]]:
    with ctx.store.tx() as tx:
        row = tx.get(schema.pools, key=pool_id)
        assert row is not None
        n = len(tx.select(schema.nodes, schema.nodes.c.pool_key == pool_id))
    return row["body"]["allocationState"], n, [e["code"] for e in row["body"].get("resizeErrors", [])]


def test_a_pass_adds_at_most_a_batch_across_pools_and_no_pool_settles_early(tmp_path: Path) -> None:
    ctx, m, prov = _manager(tmp_path, batch=2)
    for p in ("a", "b", "c"):
        pools.create_pool(ctx, pool_body(p, 3))
    assert _pass(m) == 2
    # 'b' and 'c' got nothing this pass: they must still be resizing, not steady short of their target
    assert [_state(ctx, p)[0] for p in "abc"] == ["resizing"] * 3
    for _ in range(10):
        _pass(m)
    assert [_state(ctx, p) for p in "abc"] == [("steady", 3, [])] * 3
    assert len(prov.spawned) == 9


def test_growth_stops_at_the_quota_with_the_error(tmp_path: Path) -> None:
    ctx, m, _ = _manager(tmp_path, quota=10, batch=2)  # standard_d2s_v3: 2 cores, so 5 nodes
    pools.create_pool(ctx, pool_body("big", 1_000_000_000))
    passes = 0
    while _state(ctx, "big")[0] != "steady":
        assert _pass(m) <= 2
        passes += 1
        assert passes < 10
    assert _state(ctx, "big") == ("steady", 5, ["AccountCoreQuotaReached"])
