"""A resize stopped before the pool manager acted ends with the service's ResizeStopped errors.

Driven through the real service functions, store (SQLite) and pool manager; the stop lands before the manager's
pass, so no agent is ever spawned.
"""

from __future__ import annotations

from pathlib import Path

from batchyard.pools.local import LocalProvider
from batchyard.pools.manager import PoolManager
from batchyard.service import pools
from batchyard.service.context import NO_CONDITIONS, Ctx
from batchyard.store.sql import SqlStore

SPEC = {
    "id": "ResizePool",
    "vmSize": "STANDARD_D1_v2",
    "virtualMachineConfiguration": {
        "imageReference": {
            "publisher": "MicrosoftWindowsServer",
            "offer": "WindowsServer",
            "sku": "2019-datacenter-smalldisk",
        },
        "nodeAgentSKUId": "batch.node.windows amd64",
    },
    "targetDedicatedNodes": 0,
}


def _ctx(tmp_path: Path) -> tuple[Ctx, PoolManager]:
    store = SqlStore.for_data_dir(tmp_path)
    store.migrate()
    ctx = Ctx(store=store, data_dir=tmp_path, account="devbatchaccount1")
    return ctx, PoolManager(ctx, LocalProvider("http://127.0.0.1:9", "devbatchaccount1"))


def test_stopped_grow_reports_resize_stopped_and_resize_clears_it(tmp_path: Path) -> None:
    ctx, manager = _ctx(tmp_path)
    pools.create_pool(ctx, dict(SPEC))
    manager.reconcile()
    assert pools.get_pool(ctx, "ResizePool")["allocationState"] == "steady"

    pools.resize_pool(ctx, "ResizePool", {"targetDedicatedNodes": 1, "resizeTimeout": "PT10M"}, NO_CONDITIONS)
    pools.stop_resize(ctx, "ResizePool", NO_CONDITIONS)
    assert "resizeErrors" not in pools.get_pool(ctx, "ResizePool")  # not while stopping (as recorded)
    manager.reconcile()
    pool = pools.get_pool(ctx, "ResizePool")
    assert pool["allocationState"] == "steady"
    assert (pool["targetDedicatedNodes"], pool["currentDedicatedNodes"]) == (1, 0)
    assert pool["resizeErrors"] == [
        {
            "code": "ResizeStopped",
            "message": "Desired number of dedicated nodes could not be allocated due to a stop resize operation",
        }
    ]

    pools.resize_pool(ctx, "ResizePool", {"targetDedicatedNodes": 0}, NO_CONDITIONS)
    assert "resizeErrors" not in pools.get_pool(ctx, "ResizePool")  # a new resize starts clean
    manager.reconcile()
    assert "resizeErrors" not in pools.get_pool(ctx, "ResizePool")
