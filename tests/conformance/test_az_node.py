"""`az batch node reboot` and friends (azure-cli 2.91.0, api-version 2024-02-01.19.0) against a live server: the
node goes `rebooting` and comes back `idle`, and the wrong-state answer is the service's 409."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.test_az_tutorial import Az, az  # noqa: F401 - the az fixture
from tests.support.live import wait_for

pytestmark = pytest.mark.az


def _node(az: Az, pool_id: str) -> dict[str, Any]:  # noqa: F811
    nodes = az.json("batch", "node", "list", "--pool-id", pool_id)
    return nodes[0] if len(nodes) == 1 and nodes[0]["state"] == "idle" else {}


def test_az_node_reboot(az: Az, uid: str) -> None:  # noqa: F811
    pool_id = f"aznode-{uid}"
    az.silent(
        "batch",
        "pool",
        "create",
        "--id",
        pool_id,
        "--vm-size",
        "standard_d2s_v3",
        "--image",
        "canonical:0001-com-ubuntu-server-jammy:22_04-lts",
        "--node-agent-sku-id",
        "batch.node.ubuntu 22.04",
        "--target-dedicated-nodes",
        "1",
    )
    node = wait_for(lambda: _node(az, pool_id), 60, 0.5, "an idle node")
    node_id = node["id"]
    az.run(
        "batch",
        "node",
        "reboot",
        "--pool-id",
        pool_id,
        "--node-id",
        node_id,
        "--node-reboot-option",
        "requeue",
    )
    shown = az.json("batch", "node", "show", "--pool-id", pool_id, "--node-id", node_id)
    assert shown["state"] in ("idle", "starting", "rebooting")
    back = wait_for(lambda: _node(az, pool_id), 60, 0.5, "the node back")
    assert back["id"] == node_id and back["lastBootTime"] > node["lastBootTime"]
    # scheduling off and on
    az.run("batch", "node", "scheduling", "disable", "--pool-id", pool_id, "--node-id", node_id)
    shown = az.json("batch", "node", "show", "--pool-id", pool_id, "--node-id", node_id)
    assert shown["schedulingState"] == "disabled" and shown["state"] == "offline"
    p = az.run("batch", "node", "scheduling", "disable", "--pool-id", pool_id, "--node-id", node_id, rc=1)
    assert "NodeAlreadyInTargetSchedulingState" in p.stderr, p.stderr
    az.run("batch", "node", "scheduling", "enable", "--pool-id", pool_id, "--node-id", node_id)
    # a bad option is refused by the server, naming the property
    p = az.run(
        "batch",
        "node",
        "reboot",
        "--pool-id",
        pool_id,
        "--node-id",
        node_id,
        "--node-reboot-option",
        "never",
        rc=1,
    )
    assert "nodeRebootOption" in p.stderr or "never" in p.stderr, p.stderr
    az.silent("batch", "pool", "delete", "--pool-id", pool_id, "--yes")
