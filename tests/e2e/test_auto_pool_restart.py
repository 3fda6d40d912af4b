"""Auto pools survive a SIGKILLed server: the job and its pool commit together (a failure in between leaves
neither), a kill right after the job create keeps both, and a kill during the pool's deletion still ends with
the pool and its agents gone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models import _models as private_models
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ResourceNotFoundError

from batchyard.service import autopools, jobs, pools
from batchyard.service.context import Ctx
from batchyard.store import schema
from batchyard.store.sql import SqlStore
from tests.e2e.test_restart import _agent_pids
from tests.support.batch import IMAGE, SKU, wait_idle_nodes, wait_tasks_done
from tests.support.live import LiveServer, wait_for

pytestmark = pytest.mark.slow


def _client(srv: LiveServer) -> BatchClient:
    return BatchClient(endpoint=srv.endpoint, credential=AzureNamedKeyCredential(srv.account, srv.key))


def _spec(nodes: int) -> m.BatchPoolInfo:
    return m.BatchPoolInfo(
        auto_pool_specification=m.BatchAutoPoolSpecification(
            auto_pool_id_prefix="rs",
            pool_lifetime_option="job",
            pool=m.BatchPoolSpecification(
                vm_size="standard_d2s_v3",
                virtual_machine_configuration=m.VirtualMachineConfiguration(
                    image_reference=IMAGE, node_agent_sku_id=SKU
                ),
                target_dedicated_nodes=nodes,
            ),
        )
    )


def _gone(c: BatchClient, pool_id: str) -> bool | None:
    try:
        c.get_pool(pool_id)
    except ResourceNotFoundError:
        return True
    return None


def test_sigkill_keeps_the_pair_and_finishes_the_deletion(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = LiveServer(data).start()
    try:
        c = _client(srv)
        c.create_job(m.BatchJobCreateOptions(id="rj", pool_info=_spec(2)))
        srv.kill()  # right after the create answered: job and pool were committed together
        srv.start()
        c = _client(srv)
        pool_id = c.get_job("rj").execution_info.pool_id  # type: ignore[union-attr]
        assert pool_id and c.get_pool(pool_id).target_dedicated_nodes == 2
        nodes = wait_idle_nodes(c, pool_id, 2, timeout=90)
        c.create_tasks(
            "rj", [m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true") for i in range(4)]
        )
        wait_tasks_done(c, "rj", 4, timeout=90)
        assert set(_agent_pids(data)) == {n.id for n in nodes}
        opts = private_models.BatchJobTerminateOptions(termination_reason="done")
        c.begin_terminate_job("rj", opts, polling_interval=0.1).result()  # type: ignore[arg-type]
        # killed while the pool is being deleted (or just before its housekeeping pass notices the job ended)
        time.sleep(0.3)  # the kill's timing is the point of the test, not a wait
        srv.kill()
        srv.start()
        c = _client(srv)
        wait_for(lambda: _gone(c, pool_id), 60, 0.2, "the auto pool deleted after the restart")
        wait_for(lambda: not _agent_pids(data) or None, 30, 0.2, "the pool's agents stopped")
        assert c.get_job("rj").state == "completed"
    finally:
        srv.stop()


def test_a_failed_pool_insert_rolls_back_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the pool insert fails after the job's checks; neither the job nor a pool remains."""
    store = SqlStore.for_data_dir(tmp_path)
    store.migrate()
    ctx = Ctx(store=store, data_dir=tmp_path, account="a")
    spec = {
        "id": "j",
        "poolInfo": {
            "autoPoolSpecification": {
                "poolLifetimeOption": "job",
                "pool": {
                    "vmSize": "standard_d2s_v3",
                    "virtualMachineConfiguration": {
                        "imageReference": {
                            "publisher": "canonical",
                            "offer": "0001-com-ubuntu-server-jammy",
                            "sku": "22_04-lts",
                        },
                        "nodeAgentSKUId": SKU,
                    },
                },
            }
        },
    }

    def failing_insert(*a: object, **kw: object) -> object:
        raise RuntimeError("disk full")

    monkeypatch.setattr(pools, "insert_pool", failing_insert)
    with pytest.raises(RuntimeError):
        jobs.create_job(ctx, dict(spec))
    with store.tx() as tx:
        assert not tx.exists(schema.jobs, key="j")
        assert tx.count(schema.pools) == 0
    monkeypatch.undo()
    jobs.create_job(ctx, dict(spec))
    with store.tx() as tx:
        job = tx.get(schema.jobs, key="j")
        assert job is not None and tx.count(schema.pools) == 1
        assert tx.exists(schema.pools, key=job["pool_key"])
    # the owner gone (e.g. a kill after the job's delete committed): the next pass deletes its pool
    with store.tx() as tx:
        tx.delete(schema.jobs, key="j")
    assert autopools.tick(ctx) == 1
    assert autopools.tick(ctx) == 0
    with store.tx() as tx:
        assert [r["state"] for r in tx.select(schema.pools)] == ["deleting"]
    store.dispose()
