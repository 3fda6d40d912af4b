"""Small SDK-level helpers shared by conformance and end-to-end tests."""

from __future__ import annotations

from typing import Any

from azure.batch import BatchClient
from azure.batch import models as m

from tests.support.live import wait_for

IMAGE = m.BatchVmImageReference(publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts")
SKU = "batch.node.ubuntu 22.04"


def create_pool(client: BatchClient, pool_id: str, nodes: int = 1, slots: int = 1, **kw: Any) -> None:
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=m.VirtualMachineConfiguration(
                image_reference=IMAGE, node_agent_sku_id=SKU
            ),
            target_dedicated_nodes=nodes,
            task_slots_per_node=slots,
            **kw,
        )
    )


def wait_idle_nodes(client: BatchClient, pool_id: str, count: int, timeout: float = 60) -> list[m.BatchNode]:
    def ready() -> list[m.BatchNode] | None:
        nodes = list(client.list_nodes(pool_id))
        ok = [n for n in nodes if n.state in ("idle", "running")]
        return nodes if len(nodes) == count and len(ok) == count else None

    return wait_for(ready, timeout, 0.1, f"{count} ready nodes in {pool_id}")


def wait_tasks_done(
    client: BatchClient, job_id: str, count: int | None = None, timeout: float = 60
) -> list[m.BatchTask]:
    def done() -> list[m.BatchTask] | None:
        ts = list(client.list_tasks(job_id))
        if count is not None and len(ts) != count:
            return None
        return ts if ts and all(t.state == "completed" for t in ts) else None

    return wait_for(done, timeout, 0.1, f"tasks of {job_id} to complete")


def wait_task_state(
    client: BatchClient, job_id: str, task_id: str, state: str, timeout: float = 60
) -> m.BatchTask:
    def reached() -> m.BatchTask | None:
        t = client.get_task(job_id, task_id)
        return t if t.state == state else None

    return wait_for(reached, timeout, 0.05, f"task {task_id} to be {state}")
